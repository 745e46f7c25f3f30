"""``python -m automodel_spec.sweep SWEEP_DIR``: summarize a sweep directory by hand."""

from __future__ import annotations

import sys
from pathlib import Path

from automodel_spec.sweep.summary import write_summary


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_dir():
        print("usage: python -m automodel_spec.sweep SWEEP_DIR", file=sys.stderr)
        return 2
    summary = write_summary(Path(args[0]))
    print((Path(args[0]) / "summary.md").read_text())
    return 0 if summary["rows"] else 1


if __name__ == "__main__":
    sys.exit(main())
