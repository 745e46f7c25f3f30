"""Sweep summary from hand-written ``metrics.json`` trees: table, skipped points, best setting, heat maps."""

from __future__ import annotations

import csv
import json
import logging
import shutil
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from automodel_spec.bench.result import SCHEMA_VERSION, split_server_settings
from automodel_spec.hydra.glue import SweepSummaryCallback
from automodel_spec.sweep.__main__ import main
from automodel_spec.sweep.rows import COLUMNS, collect_rows, override_line, read_rows
from automodel_spec.sweep.summary import write_summary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def level(tok_s: float, base: float | None, accept: float | None = 3.0, p50: float = 0.2, *,
          c: int = 1, t: float = 0.0) -> dict:
    return {"temperature": t, "concurrency": c, "requests": 4, "failed_requests": 0, "output_tokens": 64, "wall_s": 64 / tok_s,
            "output_tok_per_s": tok_s, "latency_p50_s": p50, "latency_p90_s": p50 * 1.5, "tpot_s": p50 / 16,
            "accept_length": accept, "acceptance_rate": None, "server_accept_length": accept,
            "baseline_tok_per_s": base, "speedup": tok_s / base if base else None}


def write_point(root: Path, name: str, status: str = "ok", *, steps=3, topk=1, tokens=4,
                levels: list[dict] | None = None, effective: dict | None = None, **extra) -> Path:
    """A point's ``metrics.json``; ``effective``: the ``/server_info`` settings, split as the job splits them."""
    d = root / name
    d.mkdir(parents=True)
    data = {"schema": SCHEMA_VERSION, "key": "k-" + name, "status": status,
            "requested": {"num_steps": steps, "topk": topk, "num_draft_tokens": tokens},
            "algorithm": "EAGLE3", "bench": {"temperature": [0.0], "concurrency": [1, 4]}, **extra}
    if status == "ok":
        info = effective if effective is not None else {
            "speculative_algorithm": "EAGLE3", "speculative_num_steps": steps,
            "speculative_eagle_topk": topk, "speculative_num_draft_tokens": tokens}
        data["effective"], data["server_settings"] = split_server_settings(info)
        data.update(levels={f"T{lv['temperature']:g}_c{lv['concurrency']}": lv for lv in levels or []}, boot_s=12.5,
                    gpu_seconds=40.0)
    (d / "metrics.json").write_text(json.dumps(data))
    return d


@pytest.fixture
def tree(tmp_path) -> Path:
    """A sweep: two measured points, one invalid, one failed, the shared baseline and some noise."""
    root = tmp_path / "sweeps" / "s"
    write_point(root, "spec.num_steps=3,spec.topk=1",
                levels=[level(150.0, 100.0, accept=3.5), level(420.0, 400.0, accept=3.5, c=4)])
    # SGLang changed the requested 8 draft tokens to 6: the effective value is what to reuse.
    write_point(root, "spec.num_draft_tokens=8,spec.num_steps=5,spec.topk=4", steps=5, topk=4, tokens=8,
                levels=[level(180.0, 100.0, accept=4.5), level(380.0, 400.0, accept=4.5, c=4)],
                effective={"speculative_num_steps": 5, "speculative_eagle_topk": 4,
                           "speculative_num_draft_tokens": 6, "avg_spec_accept_length": 4.5})
    write_point(root, "spec.num_draft_tokens=9,spec.num_steps=1,spec.topk=1", "invalid", steps=1, topk=1,
                tokens=9, key=None, reason="spec.topk=1 with spec.num_steps=1 means a chain of 2 tokens")
    write_point(root, "spec.num_steps=7,spec.topk=8", "failed", steps=7, topk=8, tokens=16,
                error="the server exited with code 3 during startup: CUDA out of memory")
    write_point(root / "baseline", "0123456789abcdef", steps=None, topk=None, tokens=None,
                levels=[level(100.0, None, accept=None), level(400.0, None, accept=None, c=4)])
    (root / "baseline" / "0123456789abcdef.lock").write_text("")
    (root / "broken").mkdir()
    (root / "broken" / "metrics.json").write_text("{ half written")
    (root / "no-metrics-yet").mkdir()
    return root


def md_table(md: str, conc: int, temp: float = 0.0) -> list[list[str]]:
    """The table rows under the heading of one level, as lists of cells."""
    lines = md.splitlines()
    start = lines.index(f"## temperature {temp:g}, concurrency {conc}")
    rows = []
    for line in lines[start + 4:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_one_row_per_point_and_concurrency_plus_one_per_skipped_point(tree):
    rows = collect_rows(tree)
    ok = [r for r in rows if r["status"] == "ok"]
    assert sorted((r["point"], r["concurrency"]) for r in ok) == [
        ("spec.num_draft_tokens=8,spec.num_steps=5,spec.topk=4", 1),
        ("spec.num_draft_tokens=8,spec.num_steps=5,spec.topk=4", 4),
        ("spec.num_steps=3,spec.topk=1", 1), ("spec.num_steps=3,spec.topk=1", 4)]
    r = next(r for r in ok if r["requested_num_steps"] == 5 and r["concurrency"] == 1)
    assert (r["requested_num_draft_tokens"], r["effective_num_draft_tokens"]) == (8, 6)
    assert r["output_tok_per_s"] == 180.0 and r["speedup"] == pytest.approx(1.8)
    assert r["accept_length"] == 4.5 and r["boot_s"] == 12.5 and r["temperature"] == 0.0
    skipped = {r["point"]: r for r in rows if r["status"] in ("invalid", "failed")}
    assert set(skipped) == {"spec.num_draft_tokens=9,spec.num_steps=1,spec.topk=1", "spec.num_steps=7,spec.topk=8"}
    assert all(r.get("concurrency") is None for r in skipped.values())
    assert "chain of 2 tokens" in skipped["spec.num_draft_tokens=9,spec.num_steps=1,spec.topk=1"]["reason"]
    assert "CUDA out of memory" in skipped["spec.num_steps=7,spec.topk=8"]["reason"]


def test_the_baseline_is_not_a_point_and_an_unreadable_file_is_named(tree):
    rows = collect_rows(tree)
    points = {r["point"] for r in rows}
    assert not any("baseline" in p for p in points) and "no-metrics-yet" not in points
    (broken,) = [r for r in rows if r["point"] == "broken"]
    assert broken["status"] == "unreadable" and "broken/metrics.json: is not valid JSON" in broken["reason"]


def test_summary_files(tree):
    summary = write_summary(tree, plots=False)
    assert summary["images"] == [] and not list(tree.glob("heatmap_*.png"))
    with open(tree / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == COLUMNS
    assert len(rows) == 7  # 2 points x 2 levels + invalid + failed + unreadable
    assert {r["status"] for r in rows} == {"ok", "invalid", "failed", "unreadable"}
    failed = next(r for r in rows if r["status"] == "failed")
    assert failed["concurrency"] == "" and "CUDA out of memory" in failed["reason"]

    md = (tree / "summary.md").read_text()
    assert "## Skipped or failed points" in md
    assert ("- spec.num_draft_tokens=9,spec.num_steps=1,spec.topk=1: invalid: spec.topk=1 with "
            "spec.num_steps=1 means a chain of 2 tokens") in md
    assert "- spec.num_steps=7,spec.topk=8: failed: the server exited with code 3" in md
    assert "## temperature 0, concurrency 1" in md and "## temperature 0, concurrency 4" in md


def test_summary_states_what_the_sweep_cost(tree):
    # two measured points (40 s each), a failed one (no time recorded), the baseline (40 s);
    # the invalid point never started a server
    write_summary(tree, plots=False)
    md = (tree / "summary.md").read_text()
    assert ("3 point(s) ran a server: 1.3 GPU minutes, 27 s a point on average, plus 0.7 for the shared "
            "baseline; 2.0 GPU minutes in all") in md


def test_table_is_sorted_by_speedup_and_shows_effective_values(tree):
    write_summary(tree, plots=False)
    md = (tree / "summary.md").read_text()
    c1, c4 = md_table(md, 1), md_table(md, 4)
    # columns: steps | topk | draft tokens | tok/s | baseline tok/s | speedup | accept length
    #          | speedup / accept | p50 s
    assert [row[5] for row in c1] == ["1.80", "1.50"]
    assert [row[5] for row in c4] == ["1.05", "0.95"]
    assert [row[7] for row in c1] == ["0.40", "0.43"]  # 1.8 / 4.5 and 1.5 / 3.5
    assert c1[0][:3] == ["5", "4", "6"]  # the draft tokens the server used, not the 8 asked for
    assert c4[0][:3] == ["3", "1", "4"]


def test_table_order_follows_speedup_not_raw_throughput(tmp_path):
    # Points measured against different baselines (one was re-measured): the faster point in
    # tokens/s is the smaller speedup.
    root = tmp_path / "sw"
    write_point(root, "a", levels=[level(150.0, 100.0)])
    write_point(root, "b", steps=5, tokens=6, levels=[level(120.0, 60.0)])
    write_summary(root, plots=False)
    rows = md_table((root / "summary.md").read_text(), 1)
    assert [(row[0], row[5]) for row in rows] == [("5", "2.00"), ("3", "1.50")]


def test_each_temperature_is_its_own_level(tmp_path):
    root = tmp_path / "sw"
    write_point(root, "a", levels=[level(300.0, 100.0, accept=4.0), level(120.0, 100.0, accept=1.5, t=5.0)])
    write_point(root, "b", steps=5, tokens=6,
                levels=[level(400.0, 100.0, accept=6.0), level(90.0, 100.0, accept=1.2, t=5.0)])
    summary = write_summary(root, plots=False)
    assert {lv: b["point"] for lv, b in summary["best"].items()} == {(0.0, 1): "b", (5.0, 1): "a"}
    md = (root / "summary.md").read_text()
    assert [row[0] for row in md_table(md, 1, 5.0)] == ["3", "5"]
    assert (root / "best_override.txt").read_text().splitlines() == [
        "temperature 0, concurrency 1: spec.num_steps=5 spec.topk=1 spec.num_draft_tokens=6  # 400.0 tok/s, x4.00",
        "temperature 5, concurrency 1: spec.num_steps=3 spec.topk=1 spec.num_draft_tokens=4  # 120.0 tok/s, x1.20"]


def test_speedup_against_accept_length_is_plotted_when_temperature_varies(tmp_path):
    pytest.importorskip("matplotlib")
    root = tmp_path / "sw"
    write_point(root, "a", levels=[level(300.0, 100.0, accept=4.0), level(120.0, 100.0, accept=1.5, t=5.0),
                                   level(900.0, 400.0, accept=4.0, c=4), level(300.0, 400.0, accept=1.5, c=4, t=5.0)])
    names = sorted(p.name for p in write_summary(root, plots=True)["images"])
    assert names == ["heatmap_T0_c1.png", "heatmap_T0_c4.png", "heatmap_T5_c1.png", "heatmap_T5_c4.png",
                     "speedup_vs_accept_c1.png", "speedup_vs_accept_c4.png"]
    assert (root / "speedup_vs_accept_c1.png").read_bytes().startswith(PNG_MAGIC)


def test_points_measured_beside_other_gpu_processes_are_flagged(tmp_path):
    root = tmp_path / "sw"
    write_point(root, "a", levels=[level(300.0, 100.0)], other_gpu_processes=["4242, python3, 48000 MiB"])
    write_point(root, "b", levels=[level(200.0, 100.0)], other_gpu_processes=[])
    rows = write_summary(root, plots=False)["rows"]
    assert {r["point"]: r["other_gpu_processes"] for r in rows} == {"a": "4242, python3, 48000 MiB", "b": None}
    md = (root / "summary.md").read_text()
    assert "## Measured while other processes used the GPU" in md and "- a: 4242, python3, 48000 MiB" in md
    assert "- b:" not in md


def test_accept_length_is_shown_with_its_standard_error(tmp_path):
    root = tmp_path / "sw"
    write_point(root, "a", levels=[{**level(300.0, 100.0, accept=4.41), "accept_length_sem": 0.2149}])
    write_summary(root, plots=False)
    (row,) = md_table((root / "summary.md").read_text(), 1)
    assert row[6] == "4.41 ± 0.21"
    with open(root / "summary.csv", newline="") as fh:
        assert next(csv.DictReader(fh))["accept_length_sem"] == "0.2149"


def test_a_point_sglang_chose_is_marked_auto(tmp_path):
    root = tmp_path / "sw"
    write_point(root, "spec.num_steps=null,spec.topk=null", steps=None, topk=None, tokens=None,
                levels=[level(300.0, 100.0)], effective={"speculative_num_steps": 5, "speculative_eagle_topk": 4,
                                                         "speculative_num_draft_tokens": 8})
    write_summary(root, plots=False)
    (row,) = md_table((root / "summary.md").read_text(), 1)
    assert row[:3] == ["5 (auto)", "4", "8"]
    assert "spec.num_steps=5 spec.topk=4 spec.num_draft_tokens=8" in (root / "best_override.txt").read_text()


def test_a_server_setting_the_sweep_varied_gets_a_column_and_joins_the_best_override(tmp_path):
    """Two attention backends in one sweep: without the column their rows of one setting read the same, and
    the best override would serve the winner's steps on whichever backend the user has configured."""
    root = tmp_path / "sw"
    for backend, tok_s in (("triton", 430.0), ("flashinfer", 400.0)):
        write_point(root, f"sglang.attention_backend={backend},spec.num_steps=3,spec.topk=1",
                    levels=[level(tok_s, 160.0)], effective={
                        "speculative_algorithm": "EAGLE3", "speculative_num_steps": 3, "speculative_eagle_topk": 1,
                        "speculative_num_draft_tokens": 4, "attention_backend": backend, "tp_size": 1})
    write_summary(root, plots=False)
    md = (root / "summary.md").read_text()
    assert "| attention_backend | steps | topk |" in md and "| tp_size |" not in md  # only what differs
    assert [row[:2] for row in md_table(md, 1)] == [["triton", "3"], ["flashinfer", "3"]]
    assert (root / "best_override.txt").read_text().startswith(
        "temperature 0, concurrency 1: spec.num_steps=3 spec.topk=1 spec.num_draft_tokens=4 "
        "sglang.attention_backend=triton  # 430.0 tok/s")
    assert read_rows(root / "summary.csv")[0]["attention_backend"] in ("triton", "flashinfer")
    preset = (root / "presets" / "spec_preset" / "c1.yaml").read_text()  # what a user deploys
    assert "# the winner at concurrency 1: 3/1/4, triton" in preset and "sglang:\n  attention_backend: triton\n" in preset
    assert "--speculative-num-draft-tokens 4 --attention-backend triton" in (root / "presets" / "sglang_flags.txt").read_text()


def test_when_nothing_beats_the_baseline_the_best_is_no_speculation(tmp_path):
    root = tmp_path / "sw"
    write_point(root, "a", levels=[level(300.0, 100.0), level(80.0, 100.0, t=7.0)])
    write_point(root, "b", steps=5, tokens=6, levels=[level(250.0, 100.0), level(70.0, 100.0, t=7.0)])
    write_summary(root, plots=False)
    assert (root / "best_override.txt").read_text().splitlines() == [
        "temperature 0, concurrency 1: spec.num_steps=3 spec.topk=1 spec.num_draft_tokens=4  # 300.0 tok/s, x3.00",
        "temperature 7, concurrency 1: algorithm=none  # no setting beat no speculation (100.0 tok/s); "
        "best was spec.num_steps=3 spec.topk=1 spec.num_draft_tokens=4 at x0.800"]
    assert ("Best at temperature 7, concurrency 1: `algorithm=none`: no setting beat no speculation"
            in (root / "summary.md").read_text())


def test_a_loss_by_a_hair_does_not_read_as_one(tmp_path):
    root = tmp_path / "sw"
    write_point(root, "a", levels=[level(99.96, 100.0)])
    write_summary(root, plots=False)
    assert (root / "best_override.txt").read_text().endswith("at x0.999\n")


def test_no_speedup_plot_for_a_single_temperature(tree):
    pytest.importorskip("matplotlib")
    summary = write_summary(tree, plots=True)
    assert not any(p.name.startswith("speedup_vs_accept") for p in summary["images"])


def test_best_override_uses_the_server_reported_values(tree):
    summary = write_summary(tree, plots=False)
    assert summary["best"][(0.0, 1)]["point"] == "spec.num_draft_tokens=8,spec.num_steps=5,spec.topk=4"
    assert summary["best"][(0.0, 4)]["point"] == "spec.num_steps=3,spec.topk=1"
    lines = (tree / "best_override.txt").read_text().splitlines()
    assert lines == [
        "temperature 0, concurrency 1: spec.num_steps=5 spec.topk=4 spec.num_draft_tokens=6  # 180.0 tok/s, x1.80",
        "temperature 0, concurrency 4: spec.num_steps=3 spec.topk=1 spec.num_draft_tokens=4  # 420.0 tok/s, x1.05"]
    md = (tree / "summary.md").read_text()
    assert "Best at temperature 0, concurrency 1: `spec.num_steps=5 spec.topk=4 spec.num_draft_tokens=6`" in md


def test_override_line_falls_back_to_the_requested_values():
    assert override_line({"requested_num_steps": 2, "requested_topk": 1, "requested_num_draft_tokens": 3}) == \
        "spec.num_steps=2 spec.topk=1 spec.num_draft_tokens=3"
    assert override_line({"requested_num_steps": None, "effective_num_steps": None}) == \
        "(no speculative setting: SGLang chose it)"
    assert override_line({"requested_num_steps": None, "effective_num_steps": 3, "effective_topk": 1,
                          "effective_num_draft_tokens": 4}) == "spec.num_steps=3 spec.topk=1 spec.num_draft_tokens=4"
    assert override_line({"requested_adaptive": True, "requested_adaptive_config": "/a.json",
                          "effective_num_steps": 7, "effective_topk": 1, "effective_num_draft_tokens": 8}) == \
        "spec.num_steps=7 spec.topk=1 spec.num_draft_tokens=8 spec.adaptive=true spec.adaptive_config=/a.json"


def test_heat_maps_are_written_per_level(tree):
    pytest.importorskip("matplotlib")
    summary = write_summary(tree, plots=True)
    assert sorted(p.name for p in summary["images"]) == ["heatmap_T0_c1.png", "heatmap_T0_c4.png"]
    for p in summary["images"]:
        data = p.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_no_heat_maps_without_matplotlib(tree, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    summary = write_summary(tree, plots=True)
    assert summary["images"] == [] and not list(tree.glob("heatmap_*.png"))
    assert [r.levelno for r in caplog.records if "matplotlib is not installed" in r.getMessage()] == [logging.WARNING]
    assert (tree / "summary.md").is_file()  # the rest of the summary is still written


def test_cli_summarizes_a_sweep_dir(tree, capsys):
    assert main([str(tree)]) == 0
    out = capsys.readouterr().out
    assert "# Sweep summary:" in out and "## Skipped or failed points" in out
    assert (tree / "summary.csv").is_file() and (tree / "best_override.txt").is_file()


def test_cli_exit_codes_for_bad_input(tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    assert main([str(tmp_path / "missing")]) == 2
    assert main([str(tmp_path / "file.txt")]) == 2
    assert main([]) == 2
    assert main([str(tmp_path), str(tmp_path)]) == 2
    assert "usage: python -m automodel_spec.sweep SWEEP_DIR" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 1  # a directory without points: nothing to summarize


def test_cli_writes_nothing_into_a_directory_that_is_no_sweep(tmp_path, capsys):
    """Another tool's run directory (its own metrics.json files and summary.md, no Hydra multirun.yaml), or the
    parent of many: refused by name, and nothing in it is written or overwritten."""
    runs = tmp_path / "runs"
    for name in ("eval-a", "eval-b"):
        (runs / name).mkdir(parents=True)
        (runs / name / "metrics.json").write_text(json.dumps({"accuracy": 0.91, "step": 400}))
    (runs / "summary.md").write_text("the user's own notes")
    before = sorted(str(p.relative_to(runs)) for p in runs.rglob("*"))
    assert main([str(runs)]) == 1
    err = capsys.readouterr().err
    assert f"error: {runs} is not a sweep directory: it has no multirun.yaml" in err
    assert "point eval-a is unreadable" in err and "were not written there" in err
    assert sorted(str(p.relative_to(runs)) for p in runs.rglob("*")) == before
    assert (runs / "summary.md").read_text() == "the user's own notes"


def test_cli_reads_the_points_right_below_the_sweep_dir_only(tree, capsys):
    """A sweep copied without its multirun.yaml still summarizes (its points are this tool's); a metrics.json
    deeper down (a sweep kept inside another, a backup) is not one of its points."""
    assert not (tree / "multirun.yaml").exists()
    nested = tree / "old-copy"
    shutil.copytree(tree / "spec.num_steps=3,spec.topk=1", nested / "spec.num_steps=3,spec.topk=1")
    assert main([str(tree)]) == 0
    capsys.readouterr()
    points = {row["point"] for row in csv.DictReader((tree / "summary.csv").open())}
    assert "spec.num_steps=3,spec.topk=1" in points and not any(p.startswith("old-copy") for p in points)


def test_cli_as_a_module(tree, tmp_path):
    import subprocess

    ok = subprocess.run([sys.executable, "-m", "automodel_spec.sweep", str(tree)], capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "Best at temperature 0, concurrency 1" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "automodel_spec.sweep", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "usage:" in bad.stderr


def test_hydra_callback_summarizes_at_the_end_of_a_multirun(tree, caplog):
    caplog.set_level(logging.INFO, logger="automodel_spec")
    cb = SweepSummaryCallback(plots=False)
    cfg = OmegaConf.create({"print_only": False, "hydra": {"sweep": {"dir": str(tree)}}})
    for hook in (cb.on_run_start, cb.on_run_end, cb.on_multirun_start):
        hook(cfg)
    cb.on_job_start(cfg, task_function=None)  # as Hydra calls them
    cb.on_job_end(cfg, job_return=None)
    assert not (tree / "summary.md").exists()  # only the end of the multirun summarizes
    cb.on_multirun_end(cfg)
    assert (tree / "summary.md").is_file() and (tree / "best_override.txt").is_file()
    assert "[sweep] summary:" in caplog.text and "# Sweep summary:" in caplog.text


def test_hydra_callback_writes_nothing_without_a_sweep_dir_or_under_print_only(tmp_path):
    cb = SweepSummaryCallback()
    cb.on_multirun_end(OmegaConf.create({"print_only": False, "hydra": {"sweep": {"dir": str(tmp_path / "no")}}}))
    assert not (tmp_path / "no").exists()
    write_point(tmp_path / "s", "p", levels=[level(100.0, 50.0)])
    cb.on_multirun_end(OmegaConf.create({"print_only": True, "hydra": {"sweep": {"dir": str(tmp_path / "s")}}}))
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["p"]


def test_summaries_mask_a_literal_api_key(tmp_path, capsys, caplog):
    """A sweep named before keys were left out of point names, and an error that quotes the key."""
    caplog.set_level(logging.INFO, logger="automodel_spec")
    key = "sk-secret-123456"
    root = tmp_path / "s"
    write_point(root, f"sglang.api_key={key},spec.num_steps=3,spec.topk=1", levels=[level(150.0, 100.0)])
    write_point(root, "spec.num_steps=7,spec.topk=8", "failed", steps=7, topk=8, tokens=16,
                error=f"server exited: --api-key {key} refused")
    (root / "multirun.yaml").write_text(f"sglang:\n  api_key: {key}\nhydra:\n  overrides:\n"
                                        f"    task:\n    - sglang.api_key={key}\n")
    cfg = OmegaConf.create({"print_only": False, "sglang": {"api_key": key},
                            "hydra": {"sweep": {"dir": str(root)}}})
    SweepSummaryCallback(plots=False).on_multirun_end(cfg)
    for name in ("summary.csv", "summary.md", "best_override.txt", "multirun.yaml"):
        assert key not in (root / name).read_text(), name
    assert "api_key=***" in (root / "summary.csv").read_text()
    assert OmegaConf.load(root / "multirun.yaml").sglang.api_key == "***"  # still valid YAML
    assert "[sweep] summary:" in caplog.text and key not in caplog.text and key not in capsys.readouterr().out


def test_a_point_that_finished_before_the_shared_baseline_gets_its_speedup_in_the_summary(tmp_path):
    root = tmp_path / "sweeps" / "s"
    # the job ran on another GPU while the baseline was measured: no speedup in its own metrics.json;
    # the sweep directory has since moved, so the recorded baseline path is stale
    write_point(root, "spec.num_steps=3,spec.topk=1", levels=[level(150.0, None)],
                baseline_dir=str(tmp_path / "elsewhere" / "baseline" / "b1"))
    write_point(root, "spec.num_steps=5,spec.topk=1", steps=5, levels=[level(90.0, None)])  # no baseline wanted
    rows = {r["point"]: r for r in collect_rows(root)}
    assert rows["spec.num_steps=3,spec.topk=1"]["speedup"] is None  # the baseline is not there yet
    base = write_point(root / "baseline", "b1", levels=[level(100.0, None)])
    assert base.name == "b1"
    rows = {r["point"]: r for r in collect_rows(root)}
    assert rows["spec.num_steps=3,spec.topk=1"]["baseline_tok_per_s"] == 100.0
    assert rows["spec.num_steps=3,spec.topk=1"]["speedup"] == pytest.approx(1.5)
    assert rows["spec.num_steps=5,spec.topk=1"]["speedup"] is None
    assert len(rows) == 2  # the baseline is not a point


def test_points_of_another_pair_prompts_card_or_sglang_than_the_newest_point_are_listed_not_ranked(tmp_path, capsys):
    """A sweep re-run after the target was retrained in place (or on another draft, prompts edited in place,
    another machine's card or after an SGLang upgrade) re-measures the points it runs; those it does not run still hold the old numbers,
    which must not win a level or a preset."""
    root = tmp_path / "sweeps" / "s"
    new = {"target": "/m/t", "target_content": "new-weights", "draft": "/x/d1", "draft_content": "d1",
           "gpu": ["NVIDIA H200, GPU-aaa"], "sglang_installed": "0.5.20", "prompts_content": "p-new"}
    write_point(root, "spec.num_steps=1,spec.topk=1", steps=1, tokens=2, levels=[level(120.0, 100.0)],
                started="2026-12-07T10:00:00", **new)
    write_point(root, "spec.num_steps=3,spec.topk=1", levels=[level(300.0, 100.0)], started="2026-12-06T09:00:00",
                **{**new, "target_content": "old-weights"})  # the old target: fastest, but of another pair
    write_point(root, "spec.num_steps=5,spec.topk=1", steps=5, tokens=6, levels=[level(250.0, 100.0)],
                started="2026-12-06T09:05:00", **{**new, "draft": "/x/d0", "draft_content": "d0"})
    write_point(root, "moved", steps=7, tokens=8, levels=[level(110.0, 100.0)], started="2026-12-07T09:00:00",
                **{**new, "target": "/elsewhere/t"})  # the same weights at another path: the same pair
    write_point(root, "spec.num_steps=2,spec.topk=1", steps=2, tokens=3, levels=[level(280.0, 100.0)],
                started="2026-12-06T08:00:00", **{**new, "gpu": ["NVIDIA H100 80GB HBM3, GPU-bbb"]})
    write_point(root, "another_h200", steps=4, tokens=5, levels=[level(115.0, 100.0)], started="2026-12-07T08:00:00",
                **{**new, "gpu": ["NVIDIA H200, GPU-ccc"]})  # another card of the same model: alike
    write_point(root, "spec.num_steps=6,spec.topk=1", steps=6, tokens=7, levels=[level(290.0, 100.0)],
                started="2026-12-06T07:00:00", **{**new, "sglang_installed": "0.5.17"})
    write_point(root, "spec.num_steps=8,spec.topk=1", steps=8, tokens=9, levels=[level(295.0, 100.0)],
                started="2026-12-06T06:00:00", **{**new, "prompts_content": "p-old"})
    rows = {r["point"]: r for r in collect_rows(root)}
    assert rows["spec.num_steps=1,spec.topk=1"]["status"] == rows["moved"]["status"] == "ok"
    assert rows["another_h200"]["status"] == "ok"
    old, other = rows["spec.num_steps=3,spec.topk=1"], rows["spec.num_steps=5,spec.topk=1"]
    card = rows["spec.num_steps=2,spec.topk=1"]
    release = rows["spec.num_steps=6,spec.topk=1"]
    edited = rows["spec.num_steps=8,spec.topk=1"]
    assert old["status"] == other["status"] == card["status"] == release["status"] == edited["status"] == "other_setup"
    assert edited["reason"].split("): ")[1].startswith("prompts (built-in) holding p-old, not p-new;"), edited["reason"]
    assert release["reason"].split("): ")[1].startswith("SGLang 0.5.17, not 0.5.20;"), release["reason"]
    assert release["sglang_installed"] == "0.5.17" and card["gpu"] == "NVIDIA H100 80GB HBM3, GPU-bbb"
    assert card["reason"].split("): ")[1].startswith("card NVIDIA H100 80GB HBM3, not NVIDIA H200;"), card["reason"]
    assert "newest point (spec.num_steps=1,spec.topk=1): target /m/t holding old-weight, not new-weight" in old["reason"]
    assert "draft /x/d0 holding d0, not d1" in other["reason"] and "target" not in other["reason"].split(":")[1]
    summary = write_summary(root, plots=False)
    assert summary["best"][(0.0, 1)]["point"] == "spec.num_steps=1,spec.topk=1"  # not the old pair's 300 tok/s
    # (nor the H100's 280, SGLang 0.5.17's 290 or the old prompts' 295)
    csv_rows = {r["point"]: r for r in read_rows(root / "summary.csv")}  # each point's release, in the table too
    assert csv_rows["spec.num_steps=6,spec.topk=1"]["sglang_installed"] == "0.5.17"
    md = (root / "summary.md").read_text()
    assert md.count("- spec.num_steps=3,spec.topk=1: other_setup: measured on another pair, prompts, card or SGLang") == 1
    assert "give another bench.name to keep both" in md
    assert main([str(root)]) == 0  # python -m automodel_spec.sweep: said once more, at the end
    assert ("WARNING: 5 point(s) hold the numbers of another target, draft, prompts, card or SGLang than this sweep's "
            "newest point and are not ranked (spec.num_steps=2,spec.topk=1, spec.num_steps=3,spec.topk=1, "
            "spec.num_steps=5,spec.topk=1, spec.num_steps=6,spec.topk=1, ...; why: summary.md)") in capsys.readouterr().err
