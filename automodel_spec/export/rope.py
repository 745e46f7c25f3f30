"""Rope settings of a Llama-style config, as every SGLang release in our range reads them.

transformers 5 (which NeMo Automodel 0.7.0 pins) writes only ``rope_parameters`` (with ``rope_theta``
inside it). SGLang 0.5.17 reads ``rope_parameters`` first, but older releases read only the legacy
``rope_theta`` / ``rope_scaling`` fields and fall back to a base of 10000 without a word. An export
therefore carries both forms, and both must say the same.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_THETA = 10000.0  # what SGLang's Llama uses when a config names no rope base
_DEFAULT_TYPES = (None, "default")


@dataclass(frozen=True)
class Rope:
    """The rope a config asks for: base and scaling (``None`` for plain rope)."""

    theta: float
    scaling: dict | None

    def describe(self) -> str:
        kind = (self.scaling or {}).get("rope_type") or (self.scaling or {}).get("type") or "default"
        return f"rope_theta={self.theta:g}, {kind} scaling" + (f" {_params(self.scaling)}" if self.scaling else "")


def read_rope(config: dict) -> tuple[Rope, list[str]]:
    """The rope ``config`` asks for, and any disagreement between its two forms.

    Returns:
        ``(rope, conflicts)``: ``rope`` from ``rope_parameters`` when present (what transformers 5 and
        SGLang 0.5.17 read), else from the legacy fields; ``conflicts`` names each legacy value that
        says otherwise (a config whose rope depends on the reader's version).
    """
    params = config.get("rope_parameters")
    legacy = Rope(_theta(config.get("rope_theta")), _scaling(config.get("rope_scaling")))
    if not isinstance(params, dict):
        return legacy, []
    new = Rope(_theta(params.get("rope_theta", config.get("rope_theta"))),
               _scaling({k: v for k, v in params.items() if k != "rope_theta"}))
    conflicts = []
    if config.get("rope_theta") is not None and legacy.theta != new.theta:
        conflicts.append(f"rope_theta={legacy.theta:g} but rope_parameters.rope_theta={new.theta:g}")
    if config.get("rope_scaling") is not None and legacy.scaling != new.scaling:
        conflicts.append(f"rope_scaling={config.get('rope_scaling')} but rope_parameters={params}")
    return new, conflicts


def write_both_forms(cfg: dict, rope: Rope, notes: list[str]) -> None:
    """Make ``cfg`` state ``rope`` in the legacy fields and in ``rope_parameters`` alike."""
    added = []
    if cfg.get("rope_theta") != rope.theta:
        cfg["rope_theta"] = rope.theta
        added.append("rope_theta")
    if rope.scaling is not None and cfg.get("rope_scaling") != rope.scaling:
        cfg["rope_scaling"] = dict(rope.scaling)
        added.append("rope_scaling")
    params = {**(rope.scaling or {"rope_type": "default"}), "rope_theta": rope.theta}
    if "rope_parameters" in cfg and cfg["rope_parameters"] != params:
        cfg["rope_parameters"] = params
        added.append("rope_parameters")
    if added:
        notes.append(f"{' and '.join(added)} written from the config's rope ({rope.describe()}): SGLang "
                     "releases before 0.5.17 read only the legacy fields and would otherwise use rope_theta=10000")


def _theta(value) -> float:
    return DEFAULT_THETA if value is None else float(value)


def _scaling(value) -> dict | None:
    """Scaling parameters under one spelling (``type`` is the pre-4.45 name of ``rope_type``)."""
    if not isinstance(value, dict):
        return None
    out = {("rope_type" if k == "type" else k): v for k, v in value.items()}
    if out.get("rope_type") in _DEFAULT_TYPES and set(out) <= {"rope_type"}:
        return None
    for k, v in out.items():
        if k != "rope_type" and v is not None and not isinstance(v, (int, float, list)):
            raise ValueError(f"rope scaling {k}={v!r} is not a number")
    return out


def _params(scaling: dict) -> str:
    return "(" + ", ".join(f"{k}={v}" for k, v in sorted(scaling.items()) if k not in ("rope_type", "type")) + ")"
