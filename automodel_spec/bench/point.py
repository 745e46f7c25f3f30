"""What one benchmark point measures: the configuration's sections the benchmark uses, nothing else."""

from __future__ import annotations

from dataclasses import dataclass, replace

from automodel_spec.config.schema import AlgorithmConfig, BenchConfig, SGLangConfig, SpecConfig

NO_SPECULATION = AlgorithmConfig(name=None, architecture=None, needs_draft=False)


@dataclass(frozen=True)
class BenchPoint:
    """A benchmark point's settings.

    Attributes:
        algorithm: the speculative algorithm (``name=None``: the no-speculation baseline).
        spec: steps / topk / draft tokens as configured: the point's identity (``bench.job.point_key``) and
            validity; the server is asked for ``PreparedRun.spec``, resolved from it.
        sglang: the server's settings.
        bench: the workload.
    """

    algorithm: AlgorithmConfig
    spec: SpecConfig
    sglang: SGLangConfig
    bench: BenchConfig


def baseline_of(point: BenchPoint) -> BenchPoint:
    """The same point without speculation (same target, server settings and workload)."""
    return replace(point, algorithm=NO_SPECULATION, spec=SpecConfig())
