"""The ``hydra/sweeper: predict`` config (registered when Hydra scans its plugins)."""

# No ``from __future__ import annotations`` here: Hydra executes plugin modules outside sys.modules while
# it scans them, and dataclasses cannot resolve string annotations there; OmegaConf needs the real types.
from dataclasses import dataclass, field
from typing import Any  # noqa: UP035

from hydra.core.config_store import ConfigStore


@dataclass
class PredictSweeperConf:
    """Options of the predict sweeper (``automodel_spec.predict.driver.PredictOptions``).

    ``params`` holds the grid: ``spec.num_steps`` and ``spec.topk`` as comma-separated values (the
    command line may override them the same way); every other override is shared by all points.
    ``also`` lists extra points, each one string of space-separated overrides.
    """

    _target_: str = "hydra_plugins.automodel_spec_predict_sweeper.predict_sweeper.PredictSweeper"
    params: dict[str, str] = field(default_factory=dict)
    per_topk: bool = False
    confirm: int = 1
    min_gain: float = 0.0
    max_gpu_s: Any = None
    also: list[str] = field(default_factory=list)
    measure_adaptive: bool = False


ConfigStore.instance().store(group="hydra/sweeper", name="predict", node=PredictSweeperConf,
                             provider="automodel_spec")
