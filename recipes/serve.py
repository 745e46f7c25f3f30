"""Serve an EAGLE / EAGLE-3 drafter with SGLang.

    python recipes/serve.py algorithm=EAGLE3 draft=trained draft.path=RUN_DIR target.path=MODEL
    python recipes/serve.py print_only=true ...      # the exact command and paths; writes nothing
    python recipes/serve.py mode=bench ...           # benchmark one point (see README)
    python recipes/serve.py mode=check ...           # served as trained? reference vs a short served run

With no arguments it serves the built-in demo pair (built locally on first use).
"""

from __future__ import annotations

from pathlib import Path

from automodel_spec.bench.job import BenchPoint, objective, record_if_invalid, run_benchmark_job, workload
from automodel_spec.bench.served_checks import check_point, check_report
from automodel_spec.bench.workload import load_prompts
from automodel_spec.config.rules import config_warnings
from automodel_spec.config.schema import Mode, ServeConfig
from automodel_spec.errors import ConfigError, MissingDependencyError
from automodel_spec.hydra.glue import register_configs
from automodel_spec.hydra.recipe_runtime import (
    in_multirun,
    job_output_dir,
    main_entry,
    recipe_main,
    run_job,
    say,
    sweep_dir,
)
from automodel_spec.io.path_lookup import directory_problem, path_problem
from automodel_spec.launch import (
    check_release_serves,
    check_sglang_installed,
    launch_command,
    release_warnings,
    required_sglang,
    serve_foreground,
    sglang_release,
)
from automodel_spec.prepare import prepare_run
from automodel_spec.report import format_plan

register_configs()


def output_dir(cfg: ServeConfig) -> Path:
    """This job's directory: ``output_dir``, else Hydra's (checked first: ``~nosuchuser`` cannot expand, a
    file cannot hold the server's log)."""
    problem = path_problem(cfg.output_dir) if cfg.output_dir else None
    if problem:
        raise ConfigError(f"output_dir={cfg.output_dir}: {problem}")
    out = (Path(cfg.output_dir) if cfg.output_dir else job_output_dir()).expanduser()
    problem = directory_problem(out) if cfg.output_dir else None
    if problem:
        raise ConfigError(f"output_dir={cfg.output_dir} cannot hold this run's logs and results: {problem}. "
                          "Give a directory (it is created when missing).")
    return out


def serve(cfg: ServeConfig) -> int | tuple[int, float]:
    out_dir = output_dir(cfg)
    point = BenchPoint(cfg.algorithm, cfg.spec, cfg.sglang, cfg.bench) if cfg.mode != Mode.serve else None
    if cfg.mode == Mode.check:
        point = check_point(point)
    if point is not None and not cfg.print_only and record_if_invalid(point, out_dir):
        return (0, 0.0) if in_multirun() else 1  # recorded as skipped: a sweep goes on
    if point is not None and not (point.bench.prompts and path_problem(point.bench.prompts)):
        try:  # a bad prompts file refused now, not after the export and the server
            load_prompts(point.bench.prompts)
        except MissingDependencyError:
            if not cfg.print_only:  # print_only needs no optional package (as without SGLang)
                raise
    run = prepare_run(cfg, dry_run=cfg.print_only, identify_target=point is not None)  # results keyed on its files
    if point is not None and point.bench.long_prompts == "refuse":
        try:  # a prompt longer than the target's context refused before any server starts
            workload(point, run)
        except MissingDependencyError:
            if not cfg.print_only:
                raise
    for warning in config_warnings(cfg):
        say(warning, err=True)
    if cfg.print_only:
        release = sglang_release(cfg.sglang)
        check_release_serves(release, *required_sglang(cfg.algorithm, run))
        for warning in release_warnings(cfg.sglang, release):
            say(warning, err=True)
        argv = launch_command(cfg.sglang, cfg.algorithm, run, release=release)
        say(format_plan(cfg.algorithm, cfg.sglang, run, argv, out_dir, wrote=False, release=release))
        return 0
    say(format_plan(cfg.algorithm, cfg.sglang, run, None, out_dir, wrote=True))
    if point is not None:
        # a missing SGLang is the same cause in every mode: exit 2, not a point recorded as failed (1)
        installed = check_sglang_installed(cfg.sglang, *required_sglang(cfg.algorithm, run)).installed
        shared = sweep_dir() if in_multirun() else out_dir
        result = run_benchmark_job(point, run, out_dir, shared_dir=shared, sglang_installed=installed)
        if cfg.mode == Mode.check:
            code, text = check_report(result)
            say(text, err=bool(code))
            return code
        code = 0 if result.status in ("ok", "invalid") else 1
        return (code, objective(result, cfg.bench)) if in_multirun() else code
    return serve_foreground(cfg.sglang, cfg.algorithm, run, out_dir)


@recipe_main(config_path="../conf", config_name="serve")
def main(dcfg) -> int | float:
    return run_job(serve, dcfg)


if __name__ == "__main__":
    main_entry(main)
