"""Build the ``python -m sglang.launch_server`` argv (pure: no I/O)."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from automodel_spec.config.schema import AlgorithmConfig, SGLangConfig, SpecConfig
from automodel_spec.config.sglang_options import OPTIONS, UnsupportedSetting, option_problems, spelling
from automodel_spec.errors import ConfigError

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
    """The full argv of the server, spelt for SGLang ``release``: one flag per row of ``sglang_options.OPTIONS``.

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
    values = launch_values(target, sglang, algorithm, spec, draft, port=port, target_revision=target_revision)
    for option in OPTIONS:  # the table's order is the argv's
        value = None if option.key in NOT_PASSED else values[option.key]
        flag = spelling(option.key, release) if _passed(value) else None  # an unset key needs no flag
        if flag is None:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            argv.extend([flag, *(str(v) for v in value)])
        else:
            argv.extend([flag, str(value)])
    argv += list(sglang.extra_args)
    return argv


# Keys of ``sglang_options.OPTIONS`` the builder does not pass, each with why (none today): a key of the
# table is either given a value by ``launch_values`` or named here, so a flag added to the table is
# never silently left out of the command (tests/unit/serve/test_command.py).
NOT_PASSED: dict[str, str] = {}


def _passed(value) -> bool:
    """Whether a value becomes a flag: ``None`` leaves SGLang's default and ``False`` an unset switch."""
    return value is not None and value is not False


def launch_values(
    target: str | None,
    sglang: SGLangConfig,
    algorithm: AlgorithmConfig,
    spec: SpecConfig,
    draft: DraftArgs | None,
    *,
    port: int | None = None,
    target_revision: str | None = None,
) -> dict[str, object]:
    """The value passed for each key of ``sglang_options.OPTIONS`` (``None`` or ``False``: nothing passed).

    An ``sglang.*`` key takes the field of the same name unless a rule below says otherwise, so a
    pass-through setting needs only its row in the table. Arguments as ``build_launch_command``'s.
    """
    speculative = algorithm.name is not None
    with_draft = speculative and draft is not None
    multi_node = sglang.nnodes != 1
    values: dict[str, object] = {
        o.key: getattr(sglang, o.key.removeprefix("sglang.")) for o in OPTIONS if o.key.startswith("sglang.")
    }
    values.update({
        "target.path": target,
        "target.revision": target_revision or None,
        "sglang.port": port if port is not None else sglang.port,
        "sglang.tp_size": sglang.tp_size if sglang.tp_size != 1 else None,  # 1 is SGLang's default
        "sglang.cuda_graph_bs": sglang.cuda_graph_bs or None,  # an empty list would be a flag without values
        # the node settings mean something only with several nodes
        "sglang.nnodes": sglang.nnodes if multi_node else None,
        "sglang.node_rank": sglang.node_rank if multi_node else None,
        "sglang.dist_init_addr": sglang.dist_init_addr if multi_node else None,
        "algorithm": algorithm.name,
        "draft.path": draft.path if with_draft else None,
        "draft.revision": draft.revision if with_draft else None,
        "draft.token_map": draft.token_map if with_draft and algorithm.uses_token_map else None,
        # without speculation, spec.* is refused by config.rules; it is never passed
        "spec.num_steps": spec.num_steps if speculative else None,
        "spec.topk": spec.topk if speculative else None,
        "spec.num_draft_tokens": spec.num_draft_tokens if speculative else None,
        "spec.adaptive": speculative and spec.adaptive,
        "spec.adaptive_config": str(Path(spec.adaptive_config).expanduser().resolve())
        if speculative and spec.adaptive and spec.adaptive_config else None,
    })
    return values


def release_errors(sglang: SGLangConfig, algorithm: AlgorithmConfig, spec: SpecConfig, release: str) -> list[str]:
    """The settings SGLang ``release`` cannot take, each named with the release (empty: it takes them all)."""
    values = launch_values(None, sglang, algorithm, spec, None)
    errors = []
    for option in OPTIONS:
        if option.key in NOT_PASSED or not _passed(values[option.key]):
            continue
        try:
            spelling(option.key, release)
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
