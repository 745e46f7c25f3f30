"""``PredictSweeper``: Hydra's side of ``automodel_spec.predict.driver.run_predict_sweep``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
GRID_KEYS = ("spec.num_steps", "spec.topk")


class PredictSweeper(Sweeper):
    """Launches the measurement points, then the confirmations, through the configured launcher."""

    def __init__(self, params: dict[str, str] | None = None, per_topk: bool = False, confirm: int = 1,
                 min_gain: float = 0.0, max_gpu_s: float | None = None, also: list[str] | None = None,
                 measure_adaptive: bool = False) -> None:
        self.params = dict(params or {})
        self.options = dict(per_topk=per_topk, confirm=confirm, min_gain=min_gain, max_gpu_s=max_gpu_s,
                            also=[str(a).split() for a in (also or [])], measure_adaptive=measure_adaptive)
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context: HydraContext | None = None
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                 task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        from automodel_spec.config.schema import SpecConfig
        from automodel_spec.errors import ConfigError
        from automodel_spec.hydra.multirun_start import end_multirun
        from automodel_spec.predict.driver import PredictOptions, option_errors, run_predict_sweep
        from automodel_spec.predict.points import grid_points
        from automodel_spec.sweep.summary import baseline_gpu_seconds

        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        grid: dict[str, list[int]] = {}
        common: list[str] = []
        problems = []
        for o in overrides:
            key = o.get_key_element()
            if key in GRID_KEYS:
                values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
                try:
                    grid[key] = [int(v) for v in values]
                except ValueError:
                    problems.append(f"{key}={','.join(values)}: the predict sweep takes whole numbers here.")
            elif o.is_sweep_override():
                problems.append(f"{o.input_line}: the predict sweep sweeps {' and '.join(GRID_KEYS)} only; give "
                                "other keys one value (run another sweep for another value).")
            else:
                common.append(o.input_line)
        missing = [k for k in GRID_KEYS if k not in grid]
        if missing:
            problems.append(f"the predict sweep needs a grid: set {', '.join(f'{k}=a,b,...' for k in missing)}.")
        options = PredictOptions(**self.options)
        problems += option_errors(options)
        if problems:  # before the sweep's directory is made; an exception here would be Hydra's traceback
            end_multirun(ConfigError(problems))
        max_tokens = int(self.config.spec.get("max_draft_tokens", SpecConfig.max_draft_tokens))
        points = grid_points(grid["spec.num_steps"], grid["spec.topk"], max_tokens)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        print_only = bool(self.config.get("print_only"))
        if print_only:  # show the first batch's commands; nothing is measured, so nothing can be predicted
            options = PredictOptions(per_topk=options.per_topk, confirm=0)
        returns: list = []

        def launch(jobs: list[list[str]]):
            rets = self.launcher.launch([common + job for job in jobs], initial_job_idx=self.job_idx)
            self.job_idx += len(rets)
            returns.append(rets)
            return [_result_of(r) for r in rets]

        outcome = run_predict_sweep(points, options, launch, None if print_only else sweep_dir,
                                    baseline_s=lambda: baseline_gpu_seconds(sweep_dir))
        log.info("predict sweep: measured first %s; confirmed %s; %.0f GPU seconds",
                 [p.label for p in outcome.first], [c.point.label for c in outcome.confirmations],
                 outcome.gpu_seconds)
        for line in outcome.skipped:
            log.warning("predict sweep: skipped %s", line)
        return returns


def _result_of(ret):
    """The ``PointResult`` a job wrote (``None`` when it wrote none: print_only, a job that died early)."""
    from automodel_spec.bench.result import METRICS, ResultSchemaError, read_point

    try:
        out = ret.cfg.get("output_dir") if ret.cfg is not None else None
        out = out or ret.hydra_cfg.hydra.runtime.output_dir
        return read_point(Path(str(out)).expanduser() / METRICS)
    except (ResultSchemaError, AttributeError, TypeError):
        return None
