"""Everything Hydra needs from the library, in the one library module that imports Hydra.

The recipes call ``register_configs()`` before ``@hydra.main``: it hands the schemas of ``config`` to
Hydra's ConfigStore and registers the OmegaConf resolvers that ``conf/`` uses. ``conf/serve.yaml``
names ``RedactCallback`` and ``JobCodesCallback``, the sweep presets ``SweepSummaryCallback``, as Hydra
callbacks. The rest of the library takes plain dataclasses and arguments and never imports Hydra or
OmegaConf.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import shutil
import tempfile
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from automodel_spec.config import AlgorithmConfig, BenchConfig, DraftConfig, ServeConfig, SGLangConfig
from automodel_spec.gpu_pool import parallel_jobs
from automodel_spec.job_codes import start_sweep
from automodel_spec.redact import install_log_filter, mask_file, secrets_of
from automodel_spec.sweep.summary import write_summary

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


def _scratch_unless_print_only(print_only: bool, value: str) -> str:
    """A multirun's sweep dir: ``value`` normally; under print_only a temporary directory that is
    removed when the process exits (Hydra's sweeper writes multirun.yaml into the sweep dir)."""
    if not print_only:
        return value
    if not _SCRATCH:
        _SCRATCH.append(tempfile.mkdtemp(prefix="automodel_spec-print_only-"))
        atexit.register(shutil.rmtree, _SCRATCH[0], True)
    return _SCRATCH[0]


def _point_dir(override_dirname: str) -> str:
    """A sweep point's directory name from its overrides (stable across re-runs, so sweeps resume)."""
    name = override_dirname.replace("/", "_").replace("+", "") or "default"
    if len(name) > 150:
        name = name[:130] + "-" + hashlib.blake2b(name.encode(), digest_size=6).hexdigest()
    return name


_RESOLVERS = {
    "automodel_spec.unless_print_only": _unless_print_only,
    "automodel_spec.scratch_unless_print_only": _scratch_unless_print_only,
    "automodel_spec.point_dir": _point_dir,
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
    cs.store(group="algorithm", name="algorithm_schema", node=AlgorithmConfig)
    cs.store(group="draft", name="draft_schema", node=DraftConfig)
    cs.store(group="sglang", name="sglang_schema", node=SGLangConfig)
    cs.store(group="bench", name="bench_schema", node=BenchConfig)


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
        summary = write_summary(sweep_dir, plots=self.plots, secrets=secrets)
        log.info("%s", (sweep_dir / "summary.md").read_text())
        log.info("[sweep] summary: %s, %s, %s%s", sweep_dir / "summary.csv", sweep_dir / "summary.md",
                 sweep_dir / "best_override.txt", "".join(f", {p}" for p in summary["images"]))


class JobCodesCallback(Callback):
    """Hydra callback (``conf/serve.yaml``): when a multirun starts, clear the exit codes an earlier
    one left in its sweep directory and note the directory (``job_codes.start_sweep``), so that the
    recipe's exit code counts this sweep's jobs, wherever the launcher ran them."""

    def on_multirun_start(self, config, **kwargs) -> None:
        start_sweep(Path(str(config.hydra.sweep.dir)))


class RedactCallback(Callback):
    """Hydra callback: masks ``sglang.api_key`` in log lines and in the sweep's ``multirun.yaml``."""

    def on_run_start(self, config, **kwargs) -> None:
        install_log_filter(secrets_of(config))

    def on_multirun_start(self, config, **kwargs) -> None:
        install_log_filter(secrets_of(config))  # before the launcher logs each job's overrides

    def on_job_start(self, config, **kwargs) -> None:
        secrets = secrets_of(config)
        install_log_filter(secrets)  # a launcher may run the job in a process of its own
        self._mask_multirun_yaml(config, secrets)  # the sweeper wrote it before the first job

    def on_multirun_end(self, config, **kwargs) -> None:
        self._mask_multirun_yaml(config, secrets_of(config))

    @staticmethod
    def _mask_multirun_yaml(config, secrets: list[str]) -> None:
        sweep_dir = _sweep_dir(config)
        if sweep_dir:
            mask_file(Path(str(sweep_dir)) / "multirun.yaml", secrets)


def _sweep_dir(config) -> str | None:
    """``hydra.sweep.dir`` of a composed config, ``None`` when it has none or it cannot be resolved."""
    try:
        return OmegaConf.select(config, "hydra.sweep.dir", default=None)
    except Exception:  # an interpolation that cannot be resolved here
        return None
