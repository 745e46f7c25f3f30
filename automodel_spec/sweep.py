"""Sweep summary: collect every point's ``metrics.json`` into a table, heat maps and the best setting.

``SweepSummaryCallback`` is a Hydra callback (``on_multirun_end``) by duck typing, so this module
does not import Hydra; ``python -m automodel_spec.sweep DIR`` summarizes a sweep directory by hand
(e.g. after a sweep that ran over several GPU leases).
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Iterable
from pathlib import Path

from automodel_spec.redact import mask, mask_file, secrets_of

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
    return (row["temperature"], row["concurrency"])


def best_row(rows: list[dict], level: tuple[float, int] | None = None) -> dict | None:
    """The fastest point (tokens/s), at one (temperature, concurrency) level or over all."""
    ok = [r for r in rows if r["status"] == "ok" and r.get("output_tok_per_s")
          and (level is None or level_of(r) == level)]
    return max(ok, key=lambda r: r["output_tok_per_s"]) if ok else None


def override_line(row: dict) -> str:
    """The best setting as overrides for recipes/serve.py (the values the server actually used)."""
    steps = row.get("eff_num_steps") or row.get("num_steps")
    topk = row.get("eff_topk") or row.get("topk")
    tokens = row.get("eff_num_draft_tokens") or row.get("num_draft_tokens")
    if steps is None:
        return "(no speculative setting: SGLang chose it)"
    return f"spec.num_steps={steps} spec.topk={topk} spec.num_draft_tokens={tokens}"


def write_summary(sweep_dir: Path, plots: bool = True, secrets: Iterable[str] = ()) -> dict:
    """Write summary.csv, summary.md, best_override.txt and heat maps into ``sweep_dir``.

    Args:
        sweep_dir: the sweep directory (one sub-directory per point).
        plots: draw the heat maps and speedup plots (needs matplotlib).
        secrets: literal API keys; masked wherever a point's name or error would show them (a sweep
            written before keys were left out of point names, an error quoting the command).
    """
    sweep_dir = Path(sweep_dir)
    rows = [_masked_row(r, list(secrets)) for r in collect_rows(sweep_dir)]
    with open(sweep_dir / "summary.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    levels = sorted({level_of(r) for r in rows if r.get("concurrency") is not None})
    best = {lv: best_row(rows, lv) for lv in levels}
    md = [f"# Sweep summary: {sweep_dir}", ""]
    for lv in levels:
        ok = sorted((r for r in rows if r["status"] == "ok" and level_of(r) == lv),
                    key=lambda r: -(r.get("speedup") or r.get("output_tok_per_s") or 0))
        md += [f"## {_level_name(lv)}", "",
               "| steps | topk | draft tokens | tok/s | baseline tok/s | speedup | accept length "
               "| speedup / accept | p50 s |",
               "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        md += [f"| {_f(r['eff_num_steps'] or r['num_steps'])}{_auto(r)} | {_f(r['eff_topk'] or r['topk'])} | "
               f"{_f(r['eff_num_draft_tokens'] or r['num_draft_tokens'])} | "
               f"{_f(r.get('output_tok_per_s'))} | {_f(r.get('baseline_tok_per_s'))} | {_f(r.get('speedup'))} | "
               f"{_pm(r.get('accept_length'), r.get('accept_length_sem'))} | "
               f"{_f(_ratio(r.get('speedup'), r.get('accept_length')))} | "
               f"{_f(r.get('latency_p50_s'), 3)} |" for r in ok]
        if best[lv]:
            md += ["", f"Best at {_level_name(lv)}: {_best_text(best[lv])}"]
        md.append("")
    skipped = [r for r in rows if r["status"] != "ok"]
    if skipped:
        md += ["## Skipped or failed points", ""] + [f"- {r['point']}: {r['status']}: {r['reason']}" for r in skipped]
    md += _cost_lines(sweep_dir, rows)
    shared = sorted({r["point"]: r["other_gpu_processes"] for r in rows if r.get("other_gpu_processes")}.items())
    if shared:
        md += ["", "## Measured while other processes used the GPU (numbers may be off)", ""]
        md += [f"- {point}: {procs}" for point, procs in shared]
    (sweep_dir / "summary.md").write_text("\n".join(md) + "\n")
    lines = [f"{_level_name(lv)}: {_best_line(b)}" for lv, b in best.items() if b]
    (sweep_dir / "best_override.txt").write_text("\n".join(lines) + "\n")
    images = write_heatmaps(sweep_dir, rows, levels) + write_speedup_plot(sweep_dir, rows) if plots else []
    return {"rows": rows, "best": best, "images": images, "skipped": skipped}


def _masked_row(row: dict, secrets: list[str]) -> dict:
    return {k: mask(v, secrets) if isinstance(v, str) else v for k, v in row.items()}


def baseline_gpu_seconds(sweep_dir: Path) -> float:
    """The server seconds of the sweep's shared no-speculation baseline (0 when there is none)."""
    total = 0.0
    for path in Path(sweep_dir).glob("baseline/*/metrics.json"):
        try:
            total += json.loads(path.read_text()).get("gpu_seconds") or 0.0
        except (OSError, ValueError):
            continue
    return total


def _cost_lines(sweep_dir: Path, rows: list[dict]) -> list[str]:
    per_point = {r["point"]: r.get("gpu_seconds") or 0.0 for r in rows if r["status"] != "invalid"}
    if not per_point:
        return []
    points_s, n, baseline_s = sum(per_point.values()), len(per_point), baseline_gpu_seconds(sweep_dir)
    return ["## Cost", "",
            f"{n} point(s) ran a server: {points_s / 60:.1f} GPU minutes, {points_s / n:.0f} s a point on "
            f"average, plus {baseline_s / 60:.1f} for the shared baseline; {(points_s + baseline_s) / 60:.1f} "
            "GPU minutes in all (server start to stop, as `gpu_seconds` in each metrics.json).", ""]


def write_heatmaps(sweep_dir: Path, rows: list[dict], levels: list[tuple[float, int]]) -> list[Path]:
    """tokens/s and accept length over steps x topk, one PNG per level (needs matplotlib)."""
    plt = _pyplot()
    if plt is None:
        return []
    out = []
    for lv in levels:
        temp, c = lv
        ok = [r for r in rows if r["status"] == "ok" and level_of(r) == lv and r.get("num_steps")]
        if not ok:
            continue
        steps = sorted({r["num_steps"] for r in ok})
        topks = sorted({r["topk"] for r in ok})
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, key, title in ((axes[0], "output_tok_per_s", "output tokens/s"),
                               (axes[1], "accept_length", "accept length")):
            grid = [[None] * len(steps) for _ in topks]
            for r in ok:  # best over the other swept values (draft tokens)
                i, j = topks.index(r["topk"]), steps.index(r["num_steps"])
                v = r.get(key)
                if v is not None and (grid[i][j] is None or v > grid[i][j]):
                    grid[i][j] = v
            data = [[float("nan") if v is None else v for v in row] for row in grid]
            im = ax.imshow(data, origin="lower", aspect="auto", cmap="viridis")
            ax.set_xticks(range(len(steps)), [str(s) for s in steps])
            ax.set_yticks(range(len(topks)), [str(t) for t in topks])
            ax.set_xlabel("num_steps")
            ax.set_ylabel("topk")
            ax.set_title(f"{title} ({_level_name(lv)})")
            for i, row in enumerate(grid):
                for j, v in enumerate(row):
                    if v is not None:
                        ax.text(j, i, f"{v:.1f}" if v >= 10 else f"{v:.2f}", ha="center", va="center",
                                color="white", fontsize=8)
            fig.colorbar(im, ax=ax)
        out.append(_save_figure(plt, fig, sweep_dir / f"heatmap_T{temp:g}_c{c}.png"))
    return out


def write_speedup_plot(sweep_dir: Path, rows: list[dict]) -> list[Path]:
    """Speedup against accept length, one line per setting over the temperatures, per concurrency.

    Only drawn when the sweep measured more than one temperature (the accept-length knob).
    """
    ok = [r for r in rows if r["status"] == "ok" and r.get("speedup") and r.get("accept_length")]
    if len({r["temperature"] for r in ok}) < 2:
        return []
    plt = _pyplot()
    if plt is None:
        return []
    out = []
    # colour by steps, marker by topk: a grid's lines stay tellable apart past ten settings
    steps = sorted({r["num_steps"] for r in ok if r.get("num_steps") is not None})
    colours = plt.get_cmap("viridis")
    topks = sorted({r["topk"] for r in ok if r.get("topk") is not None})
    markers = {k: "osD^v<>p*h"[i % 10] for i, k in enumerate(topks)}
    for c in sorted({r["concurrency"] for r in ok}):
        fig, ax = plt.subplots(figsize=(9, 4.8))
        points = sorted({r["point"] for r in ok if r["concurrency"] == c})
        top = 1.0
        for point in points:
            pts = sorted((r["accept_length"], r["speedup"]) for r in ok if r["point"] == point and r["concurrency"] == c)
            r0 = next(r for r in ok if r["point"] == point)
            label = override_line(r0).replace("spec.", "") if r0.get("eff_num_steps") else point
            if r0.get("num_steps") is None:
                style = {"color": "black", "linestyle": "--", "marker": "x"}
                label += " (SGLang's choice)"
            else:
                shade = steps.index(r0["num_steps"]) / max(1, len(steps) - 1)
                style = {"color": colours(0.9 * shade), "marker": markers.get(r0["topk"], "o")}
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


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[sweep] matplotlib is not installed: no plots (pip install matplotlib)", file=sys.stderr)
        return None
    return plt


def _save_figure(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _level_name(level: tuple[float, int]) -> str:
    return f"temperature {level[0]:g}, concurrency {level[1]}"


def _loses(row: dict) -> bool:
    """No speculative setting beat the no-speculation baseline at this level."""
    return row.get("speedup") is not None and row["speedup"] < 1.0


def _below_one(speedup: float) -> str:
    """A speedup under 1 that never rounds up to read as 1 (0.9996 -> 0.999)."""
    return f"{math.floor(speedup * 1000) / 1000:.3f}"


def _best_text(row: dict) -> str:
    if _loses(row):
        return (f"`algorithm=none`: no setting beat no speculation (the best, `{override_line(row)}`, "
                f"reached x{_below_one(row['speedup'])})")
    return f"`{override_line(row)}`"


def _best_line(row: dict) -> str:
    """One line of best_override.txt: the overrides, then what they measured."""
    if _loses(row):
        return (f"algorithm=none  # no setting beat no speculation ({row['baseline_tok_per_s']:.1f} tok/s); "
                f"best was {override_line(row)} at x{_below_one(row['speedup'])}")
    return (f"{override_line(row)}  # {row['output_tok_per_s']:.1f} tok/s"
            + (f", x{row['speedup']:.2f}" if row.get("speedup") else ""))


def _auto(row: dict) -> str:
    """Marks a point whose setting SGLang chose (none was given)."""
    return " (auto)" if row.get("num_steps") is None and row.get("eff_num_steps") is not None else ""


def _pm(value, err) -> str:
    """``value ± standard error`` (the error only where there is one)."""
    return _f(value) + (f" ± {err:.2f}" if value is not None and err is not None else "")


def _ratio(a, b):
    return a / b if a and b else None


def _f(v, nd: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


class SweepSummaryCallback:
    """Hydra callback: at the end of a multirun, summarize the sweep directory."""

    def __init__(self, plots: bool = True):
        self.plots = plots

    # Hydra calls every hook; only the end of a multirun matters here.
    def on_run_start(self, config, **kwargs) -> None: ...
    def on_run_end(self, config, **kwargs) -> None: ...
    def on_multirun_start(self, config, **kwargs) -> None: ...
    def on_job_start(self, config, **kwargs) -> None: ...
    def on_job_end(self, config, job_return, **kwargs) -> None: ...
    def on_compose_config(self, config, config_name, overrides) -> None: ...

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if config.get("print_only") or not sweep_dir.is_dir():
            return
        secrets = secrets_of(config)
        mask_file(sweep_dir / "multirun.yaml", secrets)  # also without the redact callback of conf/serve.yaml
        summary = write_summary(sweep_dir, plots=self.plots, secrets=secrets)
        print((sweep_dir / "summary.md").read_text())
        print(f"[sweep] summary: {sweep_dir / 'summary.csv'}, {sweep_dir / 'summary.md'}, "
              f"{sweep_dir / 'best_override.txt'}" + "".join(f", {p}" for p in summary["images"]))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_dir():
        print("usage: python -m automodel_spec.sweep SWEEP_DIR", file=sys.stderr)
        return 2
    summary = write_summary(Path(args[0]))
    print((Path(args[0]) / "summary.md").read_text())
    return 0 if summary["rows"] else 1


if __name__ == "__main__":
    sys.exit(main())
