"""Sweep plots: heat maps over steps x topk and speedup against accept length (needs matplotlib)."""

from __future__ import annotations

import logging
from pathlib import Path

from automodel_spec.sweep.rows import is_auto, is_closed_loop, level_name, level_of, override_line, setting_of

log = logging.getLogger(__name__)


def write_heatmaps(sweep_dir: Path, rows: list[dict], levels: list[tuple]) -> list[Path]:
    """tokens/s and accept length over steps x topk, one PNG per level (needs matplotlib): ``heatmap_T<t>_c<n>.png``,
    ``heatmap_T<t>_r<rate>[_c<n>].png`` for an open-loop level."""
    plt = _pyplot()
    if plt is None:
        return []
    out = []
    for lv in levels:
        temp, c, rate = (*lv, 0.0)[:3]
        ok = [r for r in rows if r["status"] == "ok" and level_of(r) == lv and not is_auto(r)
              and not r.get("requested_adaptive")]
        if not ok:
            continue
        steps = sorted({setting_of(r)[0] for r in ok})
        topks = sorted({setting_of(r)[1] for r in ok})
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, key, title in ((axes[0], "output_tok_per_s", "output tokens/s"),
                               (axes[1], "accept_length", "accept length")):
            grid = [[None] * len(steps) for _ in topks]
            for r in ok:  # best over the other swept values (draft tokens)
                i, j = topks.index(setting_of(r)[1]), steps.index(setting_of(r)[0])
                v = r.get(key)
                if v is not None and (grid[i][j] is None or v > grid[i][j]):
                    grid[i][j] = v
            data = [[float("nan") if v is None else v for v in row] for row in grid]
            im = ax.imshow(data, origin="lower", aspect="auto", cmap="viridis")
            ax.set_xticks(range(len(steps)), [str(s) for s in steps])
            ax.set_yticks(range(len(topks)), [str(t) for t in topks])
            ax.set_xlabel("num_steps")
            ax.set_ylabel("topk")
            ax.set_title(f"{title} ({level_name(lv)})")
            for i, row in enumerate(grid):
                for j, v in enumerate(row):
                    if v is not None:
                        ax.text(j, i, f"{v:.1f}" if v >= 10 else f"{v:.2f}", ha="center", va="center",
                                color="white", fontsize=8)
            fig.colorbar(im, ax=ax)
        load = f"r{rate:g}" + (f"_c{c}" if c else "") if rate else f"c{c}"
        out.append(_save_figure(plt, fig, sweep_dir / f"heatmap_T{temp:g}_{load}.png"))
    return out


def write_speedup_plot(sweep_dir: Path, rows: list[dict]) -> list[Path]:
    """Speedup against accept length, one line per setting over the temperatures, per concurrency.

    Only drawn when the sweep measured more than one temperature (the accept-length knob).
    """
    ok = [r for r in rows if r["status"] == "ok" and r.get("speedup") and r.get("accept_length") and is_closed_loop(r)]
    if len({r["temperature"] for r in ok}) < 2:
        return []
    plt = _pyplot()
    if plt is None:
        return []
    out = []
    # colour by steps, marker by topk: a grid's lines stay tellable apart past ten settings
    fixed = [r for r in ok if not is_auto(r) and not r.get("requested_adaptive")]
    steps = sorted({setting_of(r)[0] for r in fixed})
    colours = plt.get_cmap("viridis")
    topks = sorted({setting_of(r)[1] for r in fixed})
    markers = {k: "osD^v<>p*h"[i % 10] for i, k in enumerate(topks)}
    for c in sorted({r["concurrency"] for r in ok}):
        fig, ax = plt.subplots(figsize=(9, 4.8))
        points = sorted({r["point"] for r in ok if r["concurrency"] == c})
        top = 1.0
        for point in points:
            pts = sorted((r["accept_length"], r["speedup"]) for r in ok if r["point"] == point and r["concurrency"] == c)
            r0 = next(r for r in ok if r["point"] == point)
            label = override_line(r0).replace("spec.", "") if setting_of(r0)[0] is not None else point
            if r0.get("requested_adaptive"):
                style = {"color": "red", "linestyle": "--", "marker": "+"}
                label += " (SGLang's adaptive mode)"
            elif is_auto(r0):
                style = {"color": "black", "linestyle": "--", "marker": "x"}
                label += " (SGLang's choice)"
            else:
                shade = steps.index(setting_of(r0)[0]) / max(1, len(steps) - 1)
                style = {"color": colours(0.9 * shade), "marker": markers.get(setting_of(r0)[1], "o")}
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label, **style)
            top = max(top, max(p[0] for p in pts))
        ax.plot([1, top], [1, top], color="grey", linestyle=":", label="speedup = accept length")
        ax.plot([1, top], [0.75, 0.75 * top], color="grey", linestyle="-.", label="speedup = 0.75 x accept length")
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xlabel("accept length (tokens per verify step)")
        ax.set_ylabel("speedup over no speculation")
        ax.set_title(f"speedup vs accept length (concurrency {c})")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        out.append(_save_figure(plt, fig, sweep_dir / f"speedup_vs_accept_c{c}.png"))
    return out


def write_predicted_plot(sweep_dir: Path, rows: list[dict]) -> list[Path]:
    """Predicted against measured tokens/s of a predict sweep's measured points, one colour per level."""
    pts = [r for r in rows if r["status"] == "ok" and r.get("predicted_tok_per_s") and r.get("output_tok_per_s")]
    if not pts:
        return []
    plt = _pyplot()
    if plt is None:
        return []
    fig, ax = plt.subplots(figsize=(7.5, 6))
    levels = sorted({level_of(r) for r in pts})
    colours = plt.get_cmap("tab10")
    for i, lv in enumerate(levels):
        for role, marker in (("measured first", "o"), ("confirmed", "*"), (None, "s")):
            mine = [r for r in pts if level_of(r) == lv and r.get("role") == role]
            if mine:
                ax.scatter([r["predicted_tok_per_s"] for r in mine], [r["output_tok_per_s"] for r in mine],
                           color=colours(i % 10), marker=marker, s=60 if marker == "*" else 30,
                           label=f"{level_name(lv)}, {role or 'other'}")
    hi = max(max(r["predicted_tok_per_s"], r["output_tok_per_s"]) for r in pts) * 1.05
    ax.plot([0, hi], [0, hi], color="grey", linestyle=":", label="measured = predicted")
    ax.set_xlabel("predicted tokens/s")
    ax.set_ylabel("measured tokens/s")
    ax.set_title("predict sweep: predicted vs measured")
    ax.legend(fontsize=6, loc="upper left")
    return [_save_figure(plt, fig, sweep_dir / "predicted_vs_measured.png")]


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("[sweep] matplotlib is not installed: no plots (pip install matplotlib)")
        return None
    return plt


def _save_figure(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
