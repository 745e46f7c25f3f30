"""Everything Hydra needs from the library (with ``recipe_runtime``, the only modules that import Hydra).

The recipes call ``register_configs()`` before ``@hydra.main``: it hands the schemas of ``config`` to
Hydra's ConfigStore and registers the OmegaConf resolvers that ``conf/`` uses; ``typed_config`` turns the
composed config into the typed one, every key checked. ``conf/serve.yaml`` names ``RedactCallback``,
``JobCodesCallback`` and ``RunDirCallback``, the sweep presets ``SweepSummaryCallback``, as Hydra
callbacks. ``recipe_runtime`` runs the recipes on top of it. The rest of the library takes plain
dataclasses and arguments and never imports Hydra or OmegaConf.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from automodel_spec.config.schema import (
    AlgorithmConfig,
    BenchConfig,
    DraftConfig,
    ServeConfig,
    SGLangConfig,
    SLOConfig,
)
from automodel_spec.errors import ConfigError
from automodel_spec.hydra.job_codes import start_sweep
from automodel_spec.hydra.multirun_start import checked_sweep_dir
from automodel_spec.io.redact import install_log_filter, mask_file, secrets_of
from automodel_spec.serve.gpu_pool import parallel_jobs

log = logging.getLogger(__name__)


def _unless_print_only(print_only: bool, value):
    """Hydra output settings: ``value`` normally, '.'/None/'/dev/null' under print_only (write nothing)."""
    if not print_only:
        return value
    if value == ".hydra":
        return None
    if isinstance(value, str) and value.endswith(".log"):
        return "/dev/null"
    return "."


_SCRATCH: list[str] = []
# the print_only sweep dir, for the launcher's worker processes (+launcher=parallel), which resolve the sweep
# dir again: in a temporary directory of their own, their jobs' exit codes were never read, and a print_only
# sweep whose every point was refused exited 0
SCRATCH_ENV = "AUTOMODEL_SPEC_PRINT_ONLY_SWEEP_DIR"


def _scratch_unless_print_only(print_only: bool, value: str) -> str:
    """A multirun's sweep dir: ``value`` normally; under print_only a temporary directory that is
    removed when the process that made it exits (Hydra's sweeper writes multirun.yaml into the sweep dir),
    the same one in the processes it starts."""
    if not print_only:
        return value
    if not _SCRATCH:
        inherited = os.environ.get(SCRATCH_ENV)
        if inherited and os.path.isdir(inherited):
            return inherited
        _SCRATCH.append(tempfile.mkdtemp(prefix="automodel_spec-print_only-"))
        atexit.register(shutil.rmtree, _SCRATCH[0], True)
        os.environ[SCRATCH_ENV] = _SCRATCH[0]
    return _SCRATCH[0]


def _sweep_name(name) -> str:
    """``bench.name`` as the directory below ``sweeps/`` that a sweep writes into (``llama8b``, or
    ``llama8b/grid``), never one outside it: ``..`` would put the sweep's points, ``multirun.yaml`` and summary
    files into the working directory or above it, over files of the same names there.

    Raises:
        ConfigError: an empty name, an absolute path, a part that is empty, ``.`` or ``..``, or a NUL.
    """
    text = str(name)
    parts = text.replace("\\", "/").split("/")
    if text.startswith(("/", "~")) or "\0" in text or any(part in ("", ".", "..") for part in parts):
        raise ConfigError(f"bench.name={text!r} must name a directory inside sweeps/ (a name such as "
                          "bench.name=llama8b-grid, or names joined by /), not a path out of it: sweeps live in "
                          "sweeps/NAME of the working directory; run from another directory to put them elsewhere.")
    return text


def _point_dir(override_dirname: str) -> str:
    """A sweep point's directory name from its overrides (stable across re-runs, so sweeps resume)."""
    name = override_dirname.replace("/", "_").replace("+", "") or "default"
    if len(name) > 150:
        name = name[:130] + "-" + hashlib.blake2b(name.encode(), digest_size=6).hexdigest()
    return name


def _with_bench_settings(keys) -> list[str]:
    """A sweep's ``override_dirname.exclude_keys``: ``keys`` and every ``bench.*`` setting.

    Every bench setting is shared by a sweep's points, so none names a point's directory; derived from
    ``BenchConfig`` (and ``SLOConfig``), a bench field added there is left out of the names without
    being listed again in ``conf/hydra/bench_sweep.yaml``. Whether it is part of what a point measures
    is ``bench.job``'s to say (``BENCH_MEASURED`` ...).
    """
    import dataclasses

    bench = [f"bench.{f.name}" for f in dataclasses.fields(BenchConfig)]
    slo = [f"bench.slo.{f.name}" for f in dataclasses.fields(SLOConfig)]
    return [*(str(k) for k in keys), "bench", *bench, *slo]


_RESOLVERS = {
    "automodel_spec.with_bench_settings": _with_bench_settings,
    "automodel_spec.unless_print_only": _unless_print_only,
    "automodel_spec.scratch_unless_print_only": _scratch_unless_print_only,
    "automodel_spec.point_dir": _point_dir,
    "automodel_spec.sweep_name": _sweep_name,
    "automodel_spec.parallel_jobs": parallel_jobs,
}


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore (the YAML options extend these), and the resolvers.

    ``automodel_spec.unless_print_only`` and ``scratch_unless_print_only`` keep Hydra from creating
    output directories and log files when ``print_only=true``; ``point_dir`` names a sweep point's
    directory. Safe to call more than once.
    """
    for name, resolver in _RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
    cs = ConfigStore.instance()
    cs.store(name="serve_schema", node=ServeConfig)
    # In a group of their own, which no option names: stored in the group they type (``algorithm``),
    # a schema would be a choice (``algorithm=algorithm_schema`` composed the bare defaults). The
    # options extend them with ``- /schema/algorithm@_here_``.
    for group, node in (("algorithm", AlgorithmConfig), ("draft", DraftConfig), ("sglang", SGLangConfig),
                        ("bench", BenchConfig)):
        cs.store(group=SCHEMA_GROUP, name=group, node=node)


SCHEMA_GROUP = "schema"


def typed_config(dcfg) -> ServeConfig:
    """The composed config as the typed ``ServeConfig``, every key checked against the schema first.

    Hydra refuses a misspelt key (``sglang.tp_sizee=4``) while composing, but the ``+key=value`` form
    that its own message suggests adds the key to the structured config, and ``OmegaConf.to_object``
    then drops it without a word: ``+sglang.tp_sizee=4`` ran with tp_size 1. So every key is checked
    here, the same way for both forms.

    Raises:
        ConfigError: naming each unknown key and the closest valid one.
    """
    unknown = _unknown_keys(dcfg)
    if unknown:
        raise ConfigError([f"{key} is not a setting{hint}: a '+' adds a key to the config, but nothing reads "
                           "this one, so its value would be ignored." for key, hint in unknown])
    return OmegaConf.to_object(dcfg)


def _unknown_keys(node, prefix: str = "") -> list[tuple[str, str]]:
    """``(key, " (did you mean X?)")`` for each key of ``node`` its schema does not have, nested sections too."""
    import dataclasses
    import difflib

    schema = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(schema):
        return []
    names = [f.name for f in dataclasses.fields(schema)]
    found = []
    for key, value in node.items_ex(resolve=False):  # unresolved: ${oc.env:...} need not be set to be checked
        path = f"{prefix}{key}"
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            found.append((path, f" (did you mean {prefix}{close[0]}?)" if close else
                          f" ({prefix.rstrip('.') or 'the top level'} has: {', '.join(names)})"))
        elif OmegaConf.is_dict(value):
            found += _unknown_keys(value, f"{path}.")
    return found


class SweepSummaryCallback(Callback):
    """Hydra callback: at the end of a multirun, summarize the sweep directory (Hydra's ``Callback``
    does nothing at the other hooks)."""

    def __init__(self, plots: bool = True):
        self.plots = plots

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if config.get("print_only") or not sweep_dir.is_dir():
            return
        secrets = secrets_of(config)
        mask_file(sweep_dir / "multirun.yaml", secrets)  # also without the redact callback of conf/serve.yaml
        # imported here, at a sweep's end: the summary imports numpy and the predictor (~0.05 s of CPU), which
        # every other run of a recipe (a single point, an export, print_only, --help) never uses
        from automodel_spec.sweep.summary import other_setup_warning, write_summary

        try:
            summary = write_summary(sweep_dir, plots=self.plots, secrets=secrets)
        except OSError as exc:  # the points' results are there; only the summary could not be written
            log.error("error: cannot write the summary of %s: %s (%s); summarize it again with python -m "
                      "automodel_spec.sweep %s", sweep_dir, exc.strerror or exc, exc.filename or sweep_dir, sweep_dir)
            return
        log.info("%s", (sweep_dir / "summary.md").read_text())
        log.info("[sweep] summary: %s, %s, %s%s", sweep_dir / "summary.csv", sweep_dir / "summary.md",
                 sweep_dir / "best_override.txt", "".join(f", {p}" for p in summary["images"]))
        if warning := other_setup_warning(summary["rows"]):
            log.warning("%s", warning)


class JobCodesCallback(Callback):
    """Hydra callback (``conf/serve.yaml``): when a multirun starts, end it if it cannot start
    (``multirun_start.checked_sweep_dir``: the first callback to read the sweep directory, before the sweeper
    makes it), else clear the exit codes an earlier one left in its sweep directory and note the directory
    (``job_codes.start_sweep``), so that the recipe's exit code counts this sweep's jobs, wherever the
    launcher ran them."""

    def on_multirun_start(self, config, **kwargs) -> None:
        start_sweep(checked_sweep_dir(config))


class RedactCallback(Callback):
    """Hydra callback: masks ``sglang.api_key`` in log lines, in each job's ``.hydra/`` files and in the
    sweep's ``multirun.yaml``.

    Hydra writes a job's ``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml`` just before
    ``on_job_start`` (sweep points and single runs alike): a literal key is masked there at once.
    A job re-run from them needs the key again; ``${oc.env:...}`` is kept as it is (it holds no key).
    """

    def on_run_start(self, config, **kwargs) -> None:
        install_log_filter(secrets_of(config))

    def on_multirun_start(self, config, **kwargs) -> None:
        install_log_filter(secrets_of(config))  # before the launcher logs each job's overrides

    def on_job_start(self, config, **kwargs) -> None:
        secrets = secrets_of(config)
        install_log_filter(secrets)  # a launcher may run the job in a process of its own
        self._mask_multirun_yaml(config, secrets)  # the sweeper wrote it before the first job
        job_files = _job_config_dir(config)
        if job_files is not None and secrets:
            for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
                mask_file(job_files / name, secrets)

    def on_multirun_end(self, config, **kwargs) -> None:
        self._mask_multirun_yaml(config, secrets_of(config))

    @staticmethod
    def _mask_multirun_yaml(config, secrets: list[str]) -> None:
        sweep_dir = _sweep_dir(config)
        if sweep_dir:
            mask_file(Path(str(sweep_dir)) / "multirun.yaml", secrets)


def _job_config_dir(config) -> Path | None:
    """The job's ``.hydra/`` directory (``hydra.runtime.output_dir / hydra.output_subdir``), if it has one."""
    try:
        out, sub = (OmegaConf.select(config, k, default=None) for k in ("hydra.runtime.output_dir",
                                                                         "hydra.output_subdir"))
    except Exception:  # an interpolation that cannot be resolved here
        return None
    return Path(str(out)) / str(sub) if out and sub else None


class RunDirCallback(Callback):
    """Hydra callback (``conf/serve.yaml``): note which directories a single run's output directory will
    create, so that a run that fails before writing anything of its own takes them away again
    (``discard_unused_run_dir``) rather than leaving ``outputs/DATE/TIME`` with Hydra's files alone."""

    def on_run_start(self, config, **kwargs) -> None:
        _RUN_DIR.clear()
        _RUN_LOG[:] = [f"{_select(config, 'hydra.job.name')}.log"]
        run_dir = _select(config, "hydra.run.dir")
        if run_dir and not _select(config, "print_only"):
            run_dir = Path(str(run_dir)).absolute()
            new = [p for p in (run_dir, *run_dir.parents) if not os.path.lexists(p)]
            if new:  # the run directory itself, and each parent it creates: outermost last
                _RUN_DIR.extend(new)


_RUN_DIR: list[Path] = []
_RUN_LOG: list[str] = []  # the job log's name
# what a run directory holds when the run wrote nothing of its own: Hydra's files and the job's log
_HYDRA_FILES = {"config.yaml", "hydra.yaml", "overrides.yaml"}


def discard_unused_run_dir() -> bool:
    """Remove the single run's output directory (and the parents it created) when it holds nothing but
    Hydra's ``.hydra/`` files and the job log: a run that failed (or was stopped) before it wrote
    anything (a refused draft, a config rule). Everything it said was on the console. ``True`` if removed.

    Recorded by ``RunDirCallback`` as the run started, so it works after Hydra has unwound too.
    """
    if not _RUN_DIR:
        return False
    run_dir, log_name = _RUN_DIR[0], _RUN_LOG[0]
    try:
        entries = {p.name for p in run_dir.iterdir()}
        hydra = {p.name for p in (run_dir / ".hydra").iterdir()} if (run_dir / ".hydra").is_dir() else set()
    except OSError:
        return False
    if not entries <= {".hydra", log_name} or not hydra <= _HYDRA_FILES:
        return False  # something of ours (server.log, metrics.json) or of the user: keep it all
    _close_file_logs(run_dir)  # the job log is closed (and never reopened) before its file goes
    shutil.rmtree(run_dir, ignore_errors=True)
    for parent in _RUN_DIR[1:]:
        try:
            parent.rmdir()  # only while empty: another run's directory beside it stays
        except OSError:
            break
    return not run_dir.exists()


def _close_file_logs(directory: Path) -> None:
    """Close and detach every logging file handler writing under ``directory``."""
    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values()
                                     if isinstance(v, logging.Logger))]
    for logger in loggers:
        for handler in list(logger.handlers):
            if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).is_relative_to(directory):
                logger.removeHandler(handler)
                handler.close()


def _select(config, key: str):
    try:
        return OmegaConf.select(config, key, default=None)
    except Exception:  # an interpolation that cannot be resolved here
        return None


def _sweep_dir(config) -> str | None:
    """``hydra.sweep.dir`` of a composed config, ``None`` when it has none or it cannot be resolved."""
    try:
        return OmegaConf.select(config, "hydra.sweep.dir", default=None)
    except Exception:  # an interpolation that cannot be resolved here
        return None
