"""A multirun checked before it starts: its sweep directory, its sweeper's and launcher's counts.

Hydra's sweeper makes the sweep directory and its launcher starts the points only after the callbacks'
``on_multirun_start`` (``glue.JobCodesCallback``), which asks here first. What is refused here would
otherwise end in a traceback from Hydra or a plugin (a file where the directory goes, joblib's
``n_jobs == 0``, Optuna with no trial, submitit without Slurm), or write where it must not (a
``bench.name`` that leads out of ``sweeps/``, ``glue``'s ``automodel_spec.sweep_name`` resolver).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import NoReturn

from omegaconf.errors import InterpolationResolutionError

from automodel_spec.errors import ConfigError, SpecError
from automodel_spec.io.path_lookup import directory_problem


def checked_sweep_dir(config) -> Path:
    """The multirun's sweep directory, once it and the sweeper's and launcher's settings can start; else the
    multirun ends with every problem named (``end_multirun``)."""
    try:
        sweep_dir = Path(str(config.hydra.sweep.dir))
    except InterpolationResolutionError as exc:  # a resolver's refusal, said as ours
        cause = _spec_error_in(exc)
        if cause is None:
            raise
        end_multirun(cause)
    problems = _optuna_errors(config) + _launcher_errors(config)
    if problem := directory_problem(sweep_dir):
        problems.append(f"the sweep's directory {sweep_dir} cannot be created: {problem}. Move that out of the way, "
                        "or give another bench.name.")
    if problems:
        end_multirun(ConfigError(problems))
    return sweep_dir


def _optuna_errors(config) -> list[str]:
    """The Optuna sweeper's counts (``+sweep=optuna``), which it takes as given: with no trial it ends in
    Optuna's own traceback ("No trials are completed yet")."""
    sweeper = config.hydra.sweeper
    if "optuna" not in str(sweeper.get("_target_", "")).lower():
        return []
    return [f"hydra.sweeper.{key}={sweeper.get(key)} must be a whole number >= 1 ({what})."
            for key, what in (("n_trials", "the settings Optuna tries"), ("n_jobs", "trials launched at once"))
            if not isinstance(sweeper.get(key), int) or sweeper.get(key) < 1]


def _launcher_errors(config) -> list[str]:
    """What the launcher (``+launcher=parallel`` or ``slurm``) cannot start with, which it would say in a
    traceback of its own: joblib's ``n_jobs == 0 in Parallel has no meaning``, submitit's ``Could not detect
    "srun", are you indeed on a slurm cluster?``."""
    launcher = config.hydra.launcher
    target = str(launcher.get("_target_", "")).lower()
    if "joblib" in target:
        n_jobs = launcher.get("n_jobs")
        if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
            return [f"hydra.launcher.n_jobs={n_jobs} must be a whole number >= 1 (the points run at once; by default "
                    "the GPUs x bench.servers_per_gpu / sglang.tp_size): a parallel sweep counts servers, not CPUs."]
    if "submitit" in target and "local" not in target and shutil.which("srun") is None:
        return ["+launcher=slurm submits each point as a Slurm job, and srun (Slurm's command) is not on this "
                "machine's PATH: run the sweep on a Slurm login node, or without +launcher=slurm (print_only=true "
                "then shows each point's command here)."]
    return []


def end_multirun(error: SpecError) -> NoReturn:
    """End a multirun on ``error`` as a recipe ends on it: ``error: ...`` and its exit code. Raised from a
    callback or a sweeper, the error itself would become a warning that Hydra goes on past (a callback), or a
    traceback (a sweeper); ``SystemExit`` passes through both."""
    print(f"error: {error}", file=sys.stderr, flush=True)
    raise SystemExit(error.exit_code)


def _spec_error_in(exc: BaseException) -> SpecError | None:
    """The error of ours that OmegaConf wrapped (once or more) while resolving an interpolation, if any."""
    seen = exc
    while seen is not None and not isinstance(seen, SpecError):
        seen = seen.__cause__ or seen.__context__
    return seen
