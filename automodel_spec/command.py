"""Build the ``python -m sglang.launch_server`` argv (pure: no I/O)."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from automodel_spec.config import AlgorithmConfig, SGLangConfig, SpecConfig
from automodel_spec.errors import ConfigError
from automodel_spec.sglang_options import UnsupportedSetting, option_problems, spelling

_REDACTED = "***"


@dataclass(frozen=True)
class DraftArgs:
    """What the server needs to know about the draft."""

    path: str
    revision: str | None = None
    token_map: str | None = None


def build_launch_command(
    target: str,
    sglang: SGLangConfig,
    algorithm: AlgorithmConfig,
    spec: SpecConfig,
    draft: DraftArgs | None,
    *,
    release: str,
    port: int | None = None,
    target_revision: str | None = None,
) -> list[str]:
    """The full argv of the server, spelt for SGLang ``release`` (``sglang_options`` has each flag).

    Args:
        target: ``--model-path``.
        sglang: server arguments; ``None`` fields are left to SGLang.
        algorithm: the speculative algorithm; ``algorithm.name is None`` serves without speculation.
        spec: steps / topk / draft tokens (all or none), draft tokens derived (``PreparedRun.spec``).
        draft: the prepared draft; required when ``algorithm.needs_draft``.
        release: the known SGLang release to build for (``sglang_options.applicable_release``).
        port: the port actually used (when ``sglang.port`` is 0 and one was picked).
        target_revision: hub revision of the target.

    Raises:
        ConfigError: a setting ``release`` cannot take (``release_errors``).
    """
    errors = release_errors(sglang, algorithm, spec, release)
    if errors:
        raise ConfigError(errors)
    argv = [sglang.python or sys.executable, "-m", "sglang.launch_server"]

    def opt(key: str, value) -> None:
        flag = spelling(key, release)
        if flag is None or value is None or value is False:
            return
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            argv.extend([flag, *(str(v) for v in value)])
        else:
            argv.extend([flag, str(value)])

    opt("target.path", target)
    opt("target.revision", target_revision or None)
    opt("sglang.host", sglang.host)
    opt("sglang.port", port if port is not None else sglang.port)
    opt("sglang.tp_size", sglang.tp_size if sglang.tp_size != 1 else None)
    for key in ("dtype", "mem_fraction_static", "attention_backend", "cuda_graph_max_bs"):
        opt(f"sglang.{key}", getattr(sglang, key))
    opt("sglang.cuda_graph_bs", sglang.cuda_graph_bs or None)
    for key in ("max_running_requests", "context_length", "log_level", "api_key"):
        opt(f"sglang.{key}", getattr(sglang, key))
    if sglang.nnodes != 1:
        opt("sglang.nnodes", sglang.nnodes)
        opt("sglang.node_rank", sglang.node_rank)
        opt("sglang.dist_init_addr", sglang.dist_init_addr)
    for key in _SWITCHES:
        opt(f"sglang.{key}", getattr(sglang, key))
    if algorithm.name is not None:
        opt("algorithm", algorithm.name)
        if draft is not None:
            opt("draft.path", draft.path)
            opt("draft.revision", draft.revision)
            if algorithm.uses_token_map:
                opt("draft.token_map", draft.token_map)
        opt("spec.num_steps", spec.num_steps)
        opt("spec.topk", spec.topk)
        opt("spec.num_draft_tokens", spec.num_draft_tokens)
        if spec.adaptive:
            opt("spec.adaptive", True)
            if spec.adaptive_config:
                opt("spec.adaptive_config", str(Path(spec.adaptive_config).expanduser().resolve()))
    argv += list(sglang.extra_args)
    return argv


_SWITCHES = ("disable_cuda_graph", "disable_prefill_cuda_graph", "skip_tokenizer_init", "trust_remote_code")


def release_errors(sglang: SGLangConfig, algorithm: AlgorithmConfig, spec: SpecConfig, release: str) -> list[str]:
    """The settings SGLang ``release`` cannot take, each named with the release (empty: it takes them all)."""
    used = [f"sglang.{key}" for key in ("cuda_graph_max_bs", "cuda_graph_bs") if getattr(sglang, key)]
    used += [f"sglang.{key}" for key in _SWITCHES if getattr(sglang, key)]
    if algorithm.name is not None and spec.adaptive:
        used += ["spec.adaptive"] + (["spec.adaptive_config"] if spec.adaptive_config else [])
    errors = []
    for key in used:
        try:
            spelling(key, release)
        except UnsupportedSetting as exc:
            errors.append(str(exc))
    return errors


def extra_args_warnings(sglang: SGLangConfig, release: str) -> list[str]:
    """The flags of ``sglang.extra_args`` that SGLang ``release``'s recorded parser would refuse.

    Warnings, not refusals: extra arguments are passed verbatim, and a flag SGLang registers only in
    some environments may be missing from the record.
    """
    return [f"WARNING: sglang.extra_args: {problem}. Drop it, or set sglang.release to the release that will serve."
            for problem in option_problems(list(sglang.extra_args), release)]


def redact(argv: list[str]) -> list[str]:
    """The argv with secrets (``--api-key``) masked, for printing and logs."""
    out = list(argv)
    for i, a in enumerate(out):
        if a == "--api-key" and i + 1 < len(out):
            out[i + 1] = _REDACTED
        elif a.startswith("--api-key="):
            out[i] = "--api-key=" + _REDACTED
    return out


def format_command(argv: list[str]) -> str:
    """A copy-pasteable shell line (secrets masked)."""
    return shlex.join(redact(argv))
