"""Human-readable summaries of a prepared run (for print_only and the start of a serve)."""

from __future__ import annotations

from pathlib import Path

from automodel_spec.command import format_command
from automodel_spec.config import ServeConfig
from automodel_spec.prepare import PreparedRun


def format_notes(run: PreparedRun) -> str:
    lines = [f"target: {run.target}"]
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


def format_plan(cfg: ServeConfig, run: PreparedRun, argv: list[str] | None, out_dir: Path, *, wrote: bool) -> str:
    """What will run: paths, notes and (for print_only) the exact command."""
    head = "[automodel-spec] print_only: nothing was written" if not wrote else "[automodel-spec] prepared"
    lines = [head, format_notes(run)]
    if argv is not None:
        if cfg.sglang.port == 0:
            lines.append("  - sglang.port=0: a free port is picked at launch (shown here as 0)")
        lines += ["command:", "  " + format_command(argv)]
        lines.append("logs would go to: the Hydra output directory (outputs/DATE/TIME, or multirun/... per job)")
    else:
        lines.append(f"logs: {out_dir}")
    return "\n".join(lines)
