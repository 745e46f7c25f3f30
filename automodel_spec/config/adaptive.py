"""SGLang's adaptive speculative mode (``--speculative-adaptive``): its config file, read and written.

In adaptive mode SGLang changes the number of draft steps at run time (chains only: topk 1), per
batch size. Its config is a JSON object whose integer-string keys are batch sizes, each with
``candidate_steps`` (step counts it may switch among; 0 means no speculation at that batch size)
and optional tuning knobs (``ema_alpha``, ``update_interval``, ``warmup_batches``,
``up_hysteresis``, ``down_hysteresis``, ``ceiling_coeff``); a batch is routed to the largest key
not above its CUDA-graph-padded size. With one candidate per key the steps are fixed per batch
size: that is how ``write_adaptive_config`` encodes "this many steps at this load".

Versions (read in SGLang's wheels; docs/prediction.md): the flags exist from 0.5.11, whose config
was one flat object; the per-batch-size format is 0.5.13's; a candidate of 0 steps, 0.5.14's.
"""

from __future__ import annotations

import json
from pathlib import Path

from automodel_spec.errors import ConfigError
from automodel_spec.io.atomic_write import write_json_atomically

MIN_SGLANG_ADAPTIVE = "0.5.11"
MIN_SGLANG_PER_BATCH_CONFIG = "0.5.13"
MIN_SGLANG_ZERO_STEPS = "0.5.14"
# SGLang's candidates when no config is given (0.5.13+: DEFAULT_ADAPTIVE_CONFIG, keyed by batch size)
DEFAULT_CANDIDATE_STEPS = [0, 1, 3, 7]
# 0.5.15 to 0.5.18 size the logits buffer their CUDA graphs share for the starting steps only; adaptive
# mode then captures graphs for its larger candidates and the server dies at startup ("shared logits
# buffer holds 128 rows but caller needs 256", SGLang 0.5.17 on an H100, 2026-12-06). 0.5.19 sizes it
# for every candidate (model_runner.max_decode_logits_rows, read in each release's wheel).
SHARED_BUFFER_SIZED_FOR_START = ("0.5.15", "0.5.18")  # first and last release that do
KNOBS = ("ema_alpha", "update_interval", "warmup_batches", "up_hysteresis", "down_hysteresis", "ceiling_coeff")


def read_adaptive_config(path: str) -> dict[int, list[int]]:
    """Candidate steps per batch size from an adaptive config file, checked as SGLang 0.5.17 checks it.

    Raises:
        ConfigError: a missing or unreadable file, not a JSON object, no batch-size key, a key whose
            ``candidate_steps`` is not a non-empty list of integers >= 0, or the flat 0.5.11 format.
    """
    where = f"spec.adaptive_config={path}"
    p = Path(path).expanduser()
    try:
        cfg = json.loads(p.read_text())
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it ({exc.strerror or exc}); give the path of a JSON file.") from exc
    except ValueError as exc:
        raise ConfigError(f"{where} is not JSON: {exc}") from exc
    if not isinstance(cfg, dict):
        raise ConfigError(f"{where}: must hold a JSON object keyed by batch size, e.g. "
                          '{"1": {"candidate_steps": [1, 3, 7]}}.')
    slots = {k: v for k, v in cfg.items() if isinstance(k, str) and k.isdigit()}
    if not slots:
        flat = " (this is the flat format of SGLang 0.5.11-0.5.12; 0.5.13+ keys it by batch size)" \
            if "candidate_steps" in cfg else ""
        raise ConfigError(f"{where}: no batch-size key{flat}: give e.g. "
                          '{"1": {"candidate_steps": [7]}, "8": {"candidate_steps": [1]}}.')
    out = {}
    for key, entry in sorted(slots.items(), key=lambda kv: int(kv[0])):
        steps = entry.get("candidate_steps") if isinstance(entry, dict) else None
        if not isinstance(steps, list) or not steps or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in steps):
            raise ConfigError(f"{where}: batch size {key}: candidate_steps must be a non-empty list of integers "
                              f">= 0, got {steps!r}.")
        out[int(key)] = sorted(set(steps))
    return out


def candidate_steps(config: dict[int, list[int]]) -> list[int]:
    """Every step count the server may switch to (it builds a runtime state for each)."""
    return sorted({s for steps in config.values() for s in steps})


def startup_crash(start_steps: int | None, config: dict[int, list[int]] | None, release: str,
                  cuda_graphs: bool) -> str | None:
    """Why SGLang ``release`` would die at startup in adaptive mode with these steps, or ``None``.

    Args:
        start_steps: ``spec.num_steps`` (``None``: SGLang's own start, below its largest candidate).
        config: the adaptive config's candidates (``None``: SGLang's defaults).
        release: the SGLang release the command is built for.
        cuda_graphs: whether the server captures decode CUDA graphs (``sglang.disable_cuda_graph`` off).
    """
    from packaging.version import Version

    first, last = SHARED_BUFFER_SIZED_FOR_START
    if not cuda_graphs or not Version(first) <= Version(Version(release).base_version) <= Version(last):
        return None
    largest = max(candidate_steps(config) if config else DEFAULT_CANDIDATE_STEPS)
    if start_steps is not None and start_steps >= largest:
        return None
    start = f"spec.num_steps={start_steps}" if start_steps is not None else "SGLang's own starting steps"
    return (f"spec.adaptive=true with {start} would die at startup on SGLang {release}: releases {first} to "
            f"{last} size the CUDA graphs' shared logits buffer for the starting steps, and the {largest}-step "
            "candidate needs more (AssertionError: shared logits buffer holds ... rows but caller needs ...). "
            f"Start at the largest candidate (spec.num_steps={largest}), or use a later SGLang.")


def required_sglang(adaptive: bool, config: dict[int, list[int]] | None) -> str | None:
    """The oldest SGLang that runs this adaptive setting as written, or ``None`` when not adaptive."""
    if not adaptive:
        return None
    if config is None:
        return MIN_SGLANG_ADAPTIVE
    return MIN_SGLANG_ZERO_STEPS if 0 in candidate_steps(config) else MIN_SGLANG_PER_BATCH_CONFIG


def write_adaptive_config(path: Path, steps_by_batch: dict[int, int], **knobs) -> Path:
    """Write a config that fixes the steps per batch size (one candidate each); returns ``path``.

    Args:
        path: where to write the JSON file.
        steps_by_batch: steps at each batch size (0: no speculation there); the smallest key
            should be 1, since smaller batches route to the smallest key.
        knobs: SGLang's tuning knobs, written at the top level (every batch size inherits them).
    """
    unknown = sorted(set(knobs) - set(KNOBS))
    if unknown:
        raise ValueError(f"unknown adaptive knob(s): {', '.join(unknown)}")
    data = {**knobs, **{str(bs): {"candidate_steps": [int(s)]} for bs, s in sorted(steps_by_batch.items())}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(path, data)
    return path
