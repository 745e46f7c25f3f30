"""A sweep's points as rows: one per point and level, read from each point's ``metrics.json``."""

from __future__ import annotations

import json
from pathlib import Path

COLUMNS = ["point", "status", "num_steps", "topk", "num_draft_tokens", "temperature", "concurrency",
           "output_tok_per_s", "baseline_tok_per_s", "speedup", "accept_length", "accept_length_sem",
           "server_accept_length", "request_tok_per_s", "request_tok_per_s_sem",
           "acceptance_rate", "latency_p50_s", "latency_p90_s", "tpot_s", "eff_num_steps", "eff_topk",
           "eff_num_draft_tokens", "boot_s", "gpu_seconds", "gpu", "other_gpu_processes", "reason"]


def collect_rows(sweep_dir: Path) -> list[dict]:
    """One row per point and level (temperature x concurrency); one row per invalid or failed point."""
    rows = []
    for path in sorted(Path(sweep_dir).rglob("metrics.json")):
        if "baseline" in path.relative_to(sweep_dir).parts:
            continue
        try:
            m = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        spec = m.get("spec") or {}
        eff = m.get("effective") or {}
        base = {"point": str(path.parent.relative_to(sweep_dir)), "status": m.get("status"),
                "num_steps": spec.get("num_steps"), "topk": spec.get("topk"),
                "num_draft_tokens": spec.get("num_draft_tokens"),
                "eff_num_steps": eff.get("speculative_num_steps"), "eff_topk": eff.get("speculative_eagle_topk"),
                "eff_num_draft_tokens": eff.get("speculative_num_draft_tokens"), "boot_s": m.get("boot_s"),
                "gpu_seconds": m.get("gpu_seconds"), "gpu": "; ".join(m.get("gpu") or []) or None,
                "other_gpu_processes": "; ".join(m.get("other_gpu_processes") or []) or None,
                "reason": m.get("reason") or m.get("error")}
        if m.get("status") != "ok":
            rows.append(base)
            continue
        for lv in (m.get("levels") or {}).values():
            rows.append({**base, **{k: lv.get(k) for k in COLUMNS if k in lv}})
    return rows


def level_of(row: dict) -> tuple[float, int]:
    """A row's ``(temperature, concurrency)`` level."""
    return (row["temperature"], row["concurrency"])


def level_name(level: tuple[float, int]) -> str:
    """``temperature T, concurrency C``: how tables, titles and best lines name a level."""
    return f"temperature {level[0]:g}, concurrency {level[1]}"


def override_line(row: dict) -> str:
    """The best setting as overrides for recipes/serve.py (the values the server actually used)."""
    steps = row.get("eff_num_steps") or row.get("num_steps")
    topk = row.get("eff_topk") or row.get("topk")
    tokens = row.get("eff_num_draft_tokens") or row.get("num_draft_tokens")
    if steps is None:
        return "(no speculative setting: SGLang chose it)"
    return f"spec.num_steps={steps} spec.topk={topk} spec.num_draft_tokens={tokens}"
