"""The speculative setting's rules: the draft tokens it implies, and what SGLang would reject.

``resolve_spec`` derives the draft tokens SGLang is asked for (``prepare.prepare_run`` computes it once
per run, ``PreparedRun.spec``); ``point_errors`` is why a setting is invalid, for ``config.rules.validate``
and for a sweep that records the point as skipped.
"""

from __future__ import annotations

from dataclasses import replace

from automodel_spec.config.schema import AlgorithmConfig, SpecConfig
from automodel_spec.errors import ConfigError


def draft_tokens(num_steps: int, topk: int, max_draft_tokens: int = SpecConfig.max_draft_tokens) -> int:
    """The draft tokens SGLang is asked for when only steps and topk are given.

    A chain verifies every drafted token (``steps + 1``); a tree the full tree (``steps * topk + 1``),
    capped at ``max_draft_tokens`` but never below the chain's. The one rule: ``resolve_spec`` and the
    predict sweep's grid (``predict.points.grid_points``) both derive their points through it.

    Args:
        num_steps: draft steps.
        topk: branches per step.
        max_draft_tokens: the cap for trees (``spec.max_draft_tokens``; its default is the config's).
    """
    if topk == 1:
        return num_steps + 1
    return min(num_steps * topk + 1, max(max_draft_tokens, num_steps + 1))


def resolve_spec(spec: SpecConfig) -> SpecConfig:
    """``spec`` with ``num_draft_tokens`` derived when steps and topk are given without it.

    In adaptive mode topk is 1 and draft tokens ``steps + 1`` (SGLang sets them so).
    """
    if spec.adaptive and spec.num_steps is not None and spec.topk in (None, 1):
        return replace(spec, topk=1, num_draft_tokens=spec.num_draft_tokens or spec.num_steps + 1)
    if spec.num_steps is None or spec.topk is None or spec.num_draft_tokens is not None:
        return spec
    return replace(spec, num_draft_tokens=draft_tokens(spec.num_steps, spec.topk, spec.max_draft_tokens))


# Upper bounds of the speculative knobs. A drafted token is accepted only when every one before it was,
# so the accepted length grows ever slower with steps: published EAGLE-3 settings use at most 8 steps,
# SGLang picks 5 for Llama targets, and our grids find nothing past 7. Each step costs one more draft
# forward pass per verify round, and the verify pass runs the target over every draft token of every
# request (its attention mask grows with their square). The bounds are 8x past anything measured: a
# larger value is a typo (10^20 would be printed, passed on, and fail inside SGLang), never a setting.
SPEC_BOUNDS = {"num_steps": 64, "topk": 64, "num_draft_tokens": 256, "max_draft_tokens": 256}
_SPEC_WHY = ("more steps, branches or draft tokens than any setting that pays off (the accepted length stops "
             "growing after a few; published EAGLE-3 settings use at most 8 steps): a typo?")


def _spec_bound_errors(spec: SpecConfig) -> list[str]:
    return [f"spec.{name}={value} is above {bound}, {_SPEC_WHY}" for name, bound in SPEC_BOUNDS.items()
            if isinstance(value := getattr(spec, name), int) and value > bound]


def spec_errors(spec: SpecConfig) -> list[str]:
    """Rules SGLang applies to steps / topk / draft tokens, as messages (empty when valid)."""
    bounds = _spec_bound_errors(spec)
    if bounds:  # derived values (draft tokens from steps) would only repeat them
        return bounds
    if spec.adaptive or spec.adaptive_config is not None:
        return _adaptive_errors(spec)
    spec = resolve_spec(spec)
    values = {"num_steps": spec.num_steps, "topk": spec.topk, "num_draft_tokens": spec.num_draft_tokens}
    given = {k: v for k, v in values.items() if v is not None}
    if not given:
        return []
    errors = []
    if len(given) != 3:
        missing = ", ".join(f"spec.{k}" for k in values if k not in given)
        errors.append(
            f"spec.num_steps, spec.topk and spec.num_draft_tokens go together; {missing} "
            "is unset. Give steps and topk (draft tokens optional), or none to let SGLang choose."
        )
        return errors
    steps, topk, tokens = spec.num_steps, spec.topk, spec.num_draft_tokens
    for name, value in given.items():
        if value < 1:
            errors.append(f"spec.{name}={value} must be >= 1.")
    if errors:
        return errors
    if topk == 1 and tokens != steps + 1:
        errors.append(
            f"spec.topk=1 with spec.num_steps={steps} means a chain of {steps + 1} tokens: "
            f"set spec.num_draft_tokens={steps + 1} (got {tokens}; SGLang would override it)."
        )
    elif steps * topk + 1 < tokens:
        errors.append(
            f"spec.num_draft_tokens={tokens} is more than the tree can hold: "
            f"num_steps*topk+1 = {steps}*{topk}+1 = {steps * topk + 1}. Lower it or raise steps/topk."
        )
    return errors


def _adaptive_errors(spec: SpecConfig) -> list[str]:
    """Rules of SGLang's adaptive mode (SGLang would fall back to static steps with only a warning)."""
    if not spec.adaptive:
        return [f"spec.adaptive_config={spec.adaptive_config} is set but spec.adaptive is false: add "
                "spec.adaptive=true, or drop spec.adaptive_config."]
    errors = []
    if spec.topk not in (None, 1):
        errors.append(f"spec.adaptive=true runs chains only (topk 1) in SGLang, but spec.topk={spec.topk}: SGLang "
                      "would turn adaptive mode off with only a warning. Set spec.topk=1 or drop spec.adaptive.")
    if spec.num_steps is not None and spec.num_steps < 1:
        errors.append(f"spec.num_steps={spec.num_steps} must be >= 1.")
    elif spec.num_steps is not None and spec.num_draft_tokens not in (None, spec.num_steps + 1):
        errors.append(f"spec.adaptive=true with spec.num_steps={spec.num_steps} means {spec.num_steps + 1} draft "
                      f"tokens (SGLang sets steps + 1); got spec.num_draft_tokens={spec.num_draft_tokens}.")
    if spec.num_steps is None and spec.num_draft_tokens is not None:
        errors.append("spec.num_draft_tokens without spec.num_steps: in adaptive mode give the starting steps "
                      "(or neither: SGLang starts from the middle candidate).")
    return errors


def adaptive_config_errors(spec: SpecConfig) -> list[str]:
    """The adaptive config file's problems (read from disk), and starting steps outside its candidates."""
    if not spec.adaptive or spec.adaptive_config is None:
        return []
    from automodel_spec.config.adaptive import candidate_steps, read_adaptive_config

    try:
        config = read_adaptive_config(spec.adaptive_config)
    except ConfigError as exc:
        return exc.problems
    steps = candidate_steps(config)
    if spec.num_steps is not None and spec.num_steps not in steps:
        return [f"spec.num_steps={spec.num_steps} is not one of the candidate steps {steps} of "
                f"spec.adaptive_config={spec.adaptive_config}: SGLang would refuse to start. Pick one of them."]
    return []


def point_errors(algorithm: AlgorithmConfig, spec: SpecConfig) -> list[str]:
    """Why a speculative setting is invalid (a sweep point SGLang would reject); empty when it is valid.

    The one owner of the rule: ``config.rules.validate`` refuses such a run, a benchmark sweep records the point as
    skipped (``bench.job.record_if_invalid``) and goes on.
    """
    return spec_errors(spec) if algorithm.name is not None else []
