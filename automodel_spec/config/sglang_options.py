"""SGLang's server options: the flag of each config key in every known release, and what each release takes.

One owner for the launcher's flags: ``command.build_launch_command`` spells each setting as
``spelling`` says for the release it builds for, and ``MANAGED_FLAGS`` (the flags
``sglang.extra_args`` may not set again, ``config.rules.managed_extra_args``) is derived from the same table. What each release accepts
is recorded in ``data/sglang_options.json`` by ``scripts/analysis/record_sglang_options.py``, which runs each
release's own argument parser on the CPU; ``tests/unit/config/test_sglang_options.py`` checks this table
against it release by release.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from packaging.version import InvalidVersion, Version

DATA = Path(__file__).resolve().parents[1] / "data" / "sglang_options.json"


@cache
def _data() -> dict:
    return json.loads(DATA.read_text())["releases"]


def known_releases() -> list[str]:
    """The releases whose options are recorded, oldest first."""
    return sorted(_data(), key=Version)


# The oldest SGLang release this tool builds commands for and exports drafts for: the first one whose
# options are recorded. One owner: the spellings, the export's ``min_sglang`` default, the install hint
# and the launcher's fallback read it here, so supporting an older release is recording it.
OLDEST_RELEASE: str = known_releases()[0]
# what to install where SGLang is missing (the launch refuses to start without it)
SGLANG_INSTALL_HINT = f'pip install "sglang[all]>={OLDEST_RELEASE}"  (on the GPU machine that will serve)'


@dataclass(frozen=True)
class Spelling:
    """How one setting is passed in the releases ``since`` <= release < ``until``.

    ``flag=None``: nothing is passed there, because the setting is already what those releases do.
    """

    flag: str | None
    since: str = OLDEST_RELEASE
    until: str | None = None

    def covers(self, release: str) -> bool:
        return Version(self.since) <= Version(release) and (self.until is None or Version(release) < Version(self.until))


@dataclass(frozen=True)
class Option:
    """A config key the launcher passes to SGLang, its spellings by release and SGLang's other names for it."""

    key: str
    spellings: tuple[Spelling, ...]
    aliases: tuple[str, ...] = ()
    set_by: str | None = None  # what a user sets instead, when not ``key`` itself


def _one(key: str, flag: str, *aliases: str, since: str = OLDEST_RELEASE, set_by: str | None = None) -> Option:
    return Option(key, (Spelling(flag, since),), aliases, set_by)


# In the order the command passes them (``command.build_launch_command`` walks the table).
OPTIONS: tuple[Option, ...] = (
    _one("target.path", "--model-path", "--model"),
    _one("target.revision", "--revision"),
    _one("sglang.host", "--host"),
    _one("sglang.port", "--port"),
    _one("sglang.tp_size", "--tp-size", "--tensor-parallel-size"),
    _one("sglang.dtype", "--dtype"),
    _one("sglang.mem_fraction_static", "--mem-fraction-static"),
    _one("sglang.attention_backend", "--attention-backend"),
    # 0.5.14 split CUDA graphs into decode and prefill; the old flag became an alias of the decode one
    # (same dest, same meaning: it always set the decode graphs' batch sizes), and 0.5.20 removed it
    Option("sglang.cuda_graph_max_bs", (Spelling("--cuda-graph-max-bs", until="0.5.14"),
                                        Spelling("--cuda-graph-max-bs-decode", since="0.5.14")),
           ("--cuda-graph-max-bs", "--cuda-graph-max-bs-decode")),
    Option("sglang.cuda_graph_bs", (Spelling("--cuda-graph-bs", until="0.5.14"),
                                    Spelling("--cuda-graph-bs-decode", since="0.5.14")),
           ("--cuda-graph-bs", "--cuda-graph-bs-decode")),
    _one("sglang.max_running_requests", "--max-running-requests"),
    _one("sglang.context_length", "--context-length"),
    _one("sglang.log_level", "--log-level"),
    _one("sglang.api_key", "--api-key"),
    _one("sglang.nnodes", "--nnodes"),
    _one("sglang.node_rank", "--node-rank"),
    _one("sglang.dist_init_addr", "--dist-init-addr"),
    _one("sglang.disable_cuda_graph", "--disable-cuda-graph"),
    # the prefill-phase (piecewise) CUDA graph: off unless enabled in 0.5.9, on by default from 0.5.10
    Option("sglang.disable_prefill_cuda_graph", (Spelling(None, until="0.5.10"),
                                                 Spelling("--disable-piecewise-cuda-graph", "0.5.10", "0.5.14"),
                                                 Spelling("--disable-prefill-cuda-graph", since="0.5.14")),
           ("--disable-piecewise-cuda-graph", "--disable-prefill-cuda-graph")),
    _one("sglang.skip_tokenizer_init", "--skip-tokenizer-init"),
    _one("sglang.trust_remote_code", "--trust-remote-code"),
    _one("algorithm", "--speculative-algorithm", set_by="algorithm=EAGLE3|EAGLE|NEXTN|STANDALONE|none"),
    _one("draft.path", "--speculative-draft-model-path", "--speculative-draft-model"),
    _one("draft.revision", "--speculative-draft-model-revision"),
    _one("draft.token_map", "--speculative-token-map", set_by="draft.path (the token map is written with the export)"),
    _one("spec.num_steps", "--speculative-num-steps"),
    _one("spec.topk", "--speculative-eagle-topk"),
    _one("spec.num_draft_tokens", "--speculative-num-draft-tokens"),
    _one("spec.adaptive", "--speculative-adaptive", since="0.5.11"),
    _one("spec.adaptive_config", "--speculative-adaptive-config", since="0.5.11"),
)
_BY_KEY = {o.key: o for o in OPTIONS}

# Flags the launcher sets from a config key: given again in sglang.extra_args, SGLang would take the
# last one while we check, health-poll and report the first (e.g. --port: the wrong port is polled).
MANAGED_FLAGS: dict[str, str] = {
    flag: o.set_by or o.key for o in OPTIONS for flag in (*(s.flag for s in o.spellings if s.flag), *o.aliases)
}


# /server_info (/get_server_info before 0.5.12): what a running server reports, ServerArgs' fields and the
# scheduler's start-up facts. The keys this tool reads, named once: launch.effective_settings keeps
# INFO_KEYS, and the bench (its result, the KV check, the reference's verify rules) and the sweep's rows
# read them by these names.
INFO_ALGORITHM = "speculative_algorithm"
INFO_NUM_STEPS = "speculative_num_steps"
INFO_TOPK = "speculative_eagle_topk"
INFO_NUM_DRAFT_TOKENS = "speculative_num_draft_tokens"
# the speculative setting the server uses -> bench.result.SpecSettings' field
INFO_SPEC = {INFO_NUM_STEPS: "num_steps", INFO_TOPK: "topk", INFO_NUM_DRAFT_TOKENS: "num_draft_tokens",
             "speculative_adaptive": "adaptive", "speculative_adaptive_config": "adaptive_config"}
# server settings a sweep may vary beside the speculative one -> the config key that asks for them
INFO_SERVER_SETTINGS = {"attention_backend": "sglang.attention_backend", "tp_size": "sglang.tp_size",
                        "max_running_requests": "sglang.max_running_requests"}
INFO_KV_TOKENS = "max_total_num_tokens"  # the KV cache's size in tokens (bench/capacity.py)
# how the verify accepts draft tokens at temperature > 0 (bench/served_checks.py)
INFO_THRESHOLD_SINGLE = "speculative_accept_threshold_single"
INFO_THRESHOLD_ACC = "speculative_accept_threshold_acc"
INFO_REJECTION_SAMPLING = "speculative_use_rejection_sampling"
# cuda_graph_max_bs: the name until 0.5.13; cuda_graph_max_bs_decode from 0.5.14 (the same setting)
INFO_KEYS: tuple[str, ...] = (
    INFO_ALGORITHM, INFO_NUM_STEPS, INFO_TOPK, INFO_NUM_DRAFT_TOKENS, "speculative_draft_model_path",
    *INFO_SERVER_SETTINGS, "mem_fraction_static", "cuda_graph_max_bs", "cuda_graph_max_bs_decode",
    *(k for k in INFO_SPEC if k not in (INFO_NUM_STEPS, INFO_TOPK, INFO_NUM_DRAFT_TOKENS)), INFO_KV_TOKENS,
    INFO_THRESHOLD_SINGLE, INFO_THRESHOLD_ACC, INFO_REJECTION_SAMPLING,
)
# the server's running average accept length, in /server_info's internal_states[0]
INFO_ACCEPT_LENGTH = "avg_spec_accept_length"


class UnsupportedSetting(ValueError):
    """A setting the release being built for has no flag for."""


def spelling(key: str, release: str) -> str | None:
    """The flag that passes ``key`` to SGLang ``release`` (``None``: nothing to pass there).

    Raises:
        UnsupportedSetting: that release cannot take the setting (the message names both).
    """
    option = _BY_KEY[key]
    for s in option.spellings:
        if s.covers(release):
            return s.flag
    first = min(Version(s.since) for s in option.spellings)
    raise UnsupportedSetting(f"{key} needs SGLang >= {first}; the command is built for SGLang {release}, which has "
                             f"no flag for it. Upgrade SGLang, set sglang.release to the release that will serve, "
                             f"or drop {key}.")


@cache
def release_options(release: str) -> frozenset[str]:
    """Every option string ``release``'s parser accepts (the recorded ones)."""
    releases = known_releases()
    options: set[str] = set()
    for r in releases[: releases.index(release) + 1]:
        entry = _data()[r]
        options = set(entry["options"]) if "options" in entry else (options | set(entry["added"])) - set(entry["removed"])
    return frozenset(options)


def release_facts(release: str) -> dict:
    """What ``release`` answers (endpoints, histogram names, counter resets), as recorded."""
    return {k: v for k, v in _data()[release].items() if k not in ("options", "added", "removed")}


def applicable_release(version: str) -> tuple[str, bool]:
    """The known release whose options ``version`` has, and whether ``version`` is newer than every known one.

    ``0.5.17.post1`` -> ``0.5.17``; an unknown ``0.5.30`` -> the newest known. Raises ``ValueError`` for
    something that is not a version or is older than the oldest known release.
    """
    try:
        wanted = Version(str(version))
    except InvalidVersion:
        raise ValueError(f"{version!r} is not a release number (e.g. 0.5.23)") from None
    base = Version(wanted.base_version)
    releases = known_releases()
    if base < Version(releases[0]):
        raise ValueError(f"SGLang {version} is older than {releases[0]}, the oldest release this tool builds "
                         f"commands for ({releases[0]} .. {releases[-1]})")
    fits = [r for r in releases if Version(r) <= base]
    return fits[-1], base > Version(releases[-1])


def option_problems(args: list[str], release: str) -> list[str]:
    """Options in ``args`` that ``release``'s parser would refuse: unknown, or an ambiguous prefix.

    argparse takes a unique prefix of an option as that option, so a flag that no longer exists but
    begins two that do (``--cuda-graph-max-bs`` in 0.5.20+) is an error, not a typo quietly accepted.
    """
    options = release_options(release)
    problems = []
    for arg in args:
        if not arg.startswith("--") or arg == "--":
            continue
        flag = arg.split("=", 1)[0]
        if flag in options:
            continue
        matches = sorted(o for o in options if o.startswith(flag))
        if len(matches) > 1:
            problems.append(f"{flag} is not an option of SGLang {release} and is an ambiguous prefix of "
                            f"{', '.join(matches[:4])}{' ...' if len(matches) > 4 else ''}: the server would exit")
        elif not matches:
            problems.append(f"{flag} is not an option of SGLang {release}: the server would exit")
    return problems
