"""Human-readable summaries of a prepared run (for print_only and the start of a serve)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from automodel_spec.config.schema import AlgorithmConfig, SGLangConfig, SpecConfig
from automodel_spec.config.sglang_options import OLDEST_RELEASE
from automodel_spec.prepare import PreparedRun
from automodel_spec.serve.command import format_command

if TYPE_CHECKING:
    from automodel_spec.launch import SGLangRelease


def format_notes(run: PreparedRun) -> str:
    lines = [f"target: {run.target if run.target is not None else 'none (target.path unset)'}"]
    if run.draft is not None:
        lines.append(f"draft:  {run.draft.path}" + (f" (revision {run.draft.revision})" if run.draft.revision else ""))
    if run.export is not None:
        state = "reused from an earlier run" if run.export.reused else "new"
        lines.append(f"export: {state}; loads on SGLang >= {run.export.min_sglang}")
    if run.draft is not None and run.draft.token_map:
        lines.append(f"token map: {run.draft.token_map}")
    for note in run.notes + (run.export.notes if run.export else []):
        lines.append(f"  - {note}")
    for item in run.pending:
        lines.append(f"  ! {item}")
    return "\n".join(lines)


def describe_spec(spec: SpecConfig) -> str:
    """The steps / topk / draft tokens the server is asked for (``PreparedRun.spec``), or who chooses them."""
    if spec.adaptive:
        start = f"starting at {spec.num_steps} steps" if spec.num_steps is not None else \
            "starting at the middle candidate"
        source = f"the candidates of {spec.adaptive_config}" if spec.adaptive_config else "SGLang's default candidates"
        return f"SGLang's adaptive mode: a chain (topk 1) whose steps change at run time among {source}, {start}"
    if spec.num_steps is None:
        return (f"left to SGLang (its releases {OLDEST_RELEASE} to 0.5.23 pick 5/4/8 steps/topk/draft tokens for Llama "
                "targets); the values it takes are read back from the server once it is up and printed")
    return f"{spec.num_steps} steps / topk {spec.topk} / {spec.num_draft_tokens} draft tokens (as given)"


def format_plan(algorithm: AlgorithmConfig, sglang: SGLangConfig, run: PreparedRun, argv: list[str] | None,
                out_dir: Path, *, wrote: bool, release: SGLangRelease | None = None) -> str:
    """What will run: paths, notes and (for print_only) the exact command and the SGLang release it is for.

    ``release``: the SGLang release the command was built for, shown above it.
    """
    head = "[automodel-spec] print_only: nothing was written" if not wrote else "[automodel-spec] prepared"
    lines = [head, format_notes(run)]
    if algorithm.name is not None:
        lines.append(f"speculative setting: {describe_spec(run.spec)}")
    if argv is not None:
        if sglang.port == 0:
            lines.append("  - sglang.port=0: a free port is picked at launch (shown here as 0)")
        if release is not None:
            lines.append(release.describe())
        lines += ["command:", "  " + format_command(argv)]
        lines.append("logs would go to: the Hydra output directory (outputs/DATE/TIME, or multirun/... per job)")
    else:
        lines.append(f"logs: {out_dir}")
    return "\n".join(lines)
