"""Build the ``python -m sglang.launch_server`` argv (pure: no I/O)."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from automodel_spec.config import AlgorithmConfig, SGLangConfig, SpecConfig, resolve_spec

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
    port: int | None = None,
    target_revision: str | None = None,
) -> list[str]:
    """The full argv of the server.

    Args:
        target: ``--model-path``.
        sglang: server arguments; ``None`` fields are left to SGLang.
        algorithm: the speculative algorithm; ``algorithm.name is None`` serves without speculation.
        spec: steps / topk / draft tokens (all or none).
        draft: the prepared draft; required when ``algorithm.needs_draft``.
        port: the port actually used (when ``sglang.port`` is 0 and one was picked).
        target_revision: hub revision of the target.
    """
    argv = [sglang.python or sys.executable, "-m", "sglang.launch_server", "--model-path", target]
    if target_revision:
        argv += ["--revision", target_revision]
    argv += ["--host", sglang.host, "--port", str(port if port is not None else sglang.port)]
    _opt(argv, "--tp-size", sglang.tp_size if sglang.tp_size != 1 else None)
    _opt(argv, "--dtype", sglang.dtype)
    _opt(argv, "--mem-fraction-static", sglang.mem_fraction_static)
    _opt(argv, "--attention-backend", sglang.attention_backend)
    _opt(argv, "--cuda-graph-max-bs", sglang.cuda_graph_max_bs)
    if sglang.cuda_graph_bs:
        argv += ["--cuda-graph-bs", *(str(b) for b in sglang.cuda_graph_bs)]
    _opt(argv, "--max-running-requests", sglang.max_running_requests)
    _opt(argv, "--context-length", sglang.context_length)
    _opt(argv, "--log-level", sglang.log_level)
    _opt(argv, "--api-key", sglang.api_key)
    if sglang.nnodes != 1:
        argv += ["--nnodes", str(sglang.nnodes), "--node-rank", str(sglang.node_rank)]
        _opt(argv, "--dist-init-addr", sglang.dist_init_addr)
    for flag, on in (("--disable-cuda-graph", sglang.disable_cuda_graph),
                     ("--skip-tokenizer-init", sglang.skip_tokenizer_init),
                     ("--trust-remote-code", sglang.trust_remote_code)):
        if on:
            argv.append(flag)
    if algorithm.name is not None:
        spec = resolve_spec(spec)
        argv += ["--speculative-algorithm", algorithm.name]
        if draft is not None:
            argv += ["--speculative-draft-model-path", draft.path]
            _opt(argv, "--speculative-draft-model-revision", draft.revision)
            if algorithm.uses_token_map:
                _opt(argv, "--speculative-token-map", draft.token_map)
        _opt(argv, "--speculative-num-steps", spec.num_steps)
        _opt(argv, "--speculative-eagle-topk", spec.topk)
        _opt(argv, "--speculative-num-draft-tokens", spec.num_draft_tokens)
        if spec.adaptive:
            argv.append("--speculative-adaptive")
            if spec.adaptive_config:
                argv += ["--speculative-adaptive-config", str(Path(spec.adaptive_config).expanduser().resolve())]
    argv += list(sglang.extra_args)
    return argv


def _opt(argv: list[str], flag: str, value) -> None:
    if value is not None:
        argv += [flag, str(value)]


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
