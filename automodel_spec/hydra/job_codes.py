"""A sweep's exit code from its jobs' exit codes, wherever the jobs ran.

Hydra's basic launcher runs every job in the recipe's own process, but the joblib launcher runs
them in worker processes and the submitit launcher in other processes or on other machines: an
exit code kept in memory never reaches the process that ends the sweep. So each job writes its
code into the sweep directory (``.job_codes/<job number>.json``), which every launcher shares
(submitit keeps its own files there too); the recipe's process clears them when the sweep starts
(``start_sweep``, from ``hydra.glue.JobCodesCallback``) and reads them when it ends.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from automodel_spec.io.atomic_write import write_json_atomically

CODES_DIR = ".job_codes"
_last_sweep: dict[str, Path] = {}


def start_sweep(sweep_dir: Path) -> None:
    """In the recipe's process, as a sweep starts: forget the codes an earlier sweep left in
    ``sweep_dir`` (a re-run counts its own jobs only), and remember the directory for
    ``last_sweep_exit_code``."""
    codes = Path(sweep_dir) / CODES_DIR
    if codes.is_symlink() or codes.is_file():  # not the directory this module writes: ours to replace
        codes.unlink()
    shutil.rmtree(codes, ignore_errors=True)
    _last_sweep["dir"] = Path(sweep_dir)


def record_job_code(sweep_dir: Path, job_num: int, code: int) -> None:
    """Write job ``job_num``'s exit code (write-then-rename: a reader never sees half a file)."""
    folder = Path(sweep_dir) / CODES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomically(folder / f"{job_num}.json", {"job": job_num, "code": int(code)})


def read_job_codes(sweep_dir: Path) -> list[int]:
    """The exit codes the sweep's jobs recorded, in job order."""
    found = []
    for path in (Path(sweep_dir) / CODES_DIR).glob("*.json"):
        if not path.is_file():  # a fifo would block the sweep's end
            continue
        try:
            data = json.loads(path.read_text())
            found.append((int(data["job"]), int(data["code"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return [code for _, code in sorted(found)]


def sweep_exit_code(codes: list[int]) -> int:
    """0 unless every job failed, then their common code (mixed causes: 1).

    A sweep where some points failed succeeded as a sweep (the failures are recorded, a re-run retries
    them); one where every point failed measured nothing, which is not a success.
    """
    if not codes or not all(codes):
        return 0
    distinct = set(codes)
    return distinct.pop() if len(distinct) == 1 else 1


def last_sweep_exit_code() -> int:
    """The exit code of the sweep this process ran last (0 when it ran none)."""
    sweep_dir = _last_sweep.get("dir")
    return sweep_exit_code(read_job_codes(sweep_dir)) if sweep_dir is not None else 0
