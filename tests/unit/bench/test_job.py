"""What identifies a benchmark point (resume), what a sweeper reads from it, and its console line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from automodel_spec.bench.job import (
    baseline_key,
    gpu_seconds,
    measurement_context,
    objective,
    one_line,
    point_key,
    read_complete,
)
from automodel_spec.bench.point import BenchPoint
from automodel_spec.bench.result import LevelResult, PointResult, level_key
from automodel_spec.config.schema import (
    AlgorithmConfig,
    BenchConfig,
    Objective,
    SGLangConfig,
    SLOConfig,
    SpecConfig,
)
from automodel_spec.export.exporter import ExportResult
from automodel_spec.prepare import PreparedRun
from automodel_spec.serve.command import DraftArgs

RUN = PreparedRun(target="/models/target")


def cfg(**spec) -> BenchPoint:
    return BenchPoint(algorithm=AlgorithmConfig(), spec=SpecConfig(**spec), sglang=SGLangConfig(),
                      bench=BenchConfig(concurrency=[1, 4]))


def with_sglang(c: BenchPoint, **kw) -> BenchPoint:
    return replace(c, sglang=replace(c.sglang, **kw))


def with_bench(c: BenchPoint, **kw) -> BenchPoint:
    return replace(c, bench=replace(c.bench, **kw))


def test_the_key_ignores_what_does_not_change_the_measurement():
    base = cfg(num_steps=3, topk=1)
    same = [with_sglang(base, port=31234), with_sglang(base, api_key="sk-x"),
            with_sglang(base, ready_timeout_s=3600.0, stop_timeout_s=5.0),
            with_bench(base, request_timeout_s=30.0, name="other", objective_concurrency=4),
            with_bench(base, reference=True, expected_accept_length=3.0),  # checks of it, not part of it
            with_bench(base, long_prompts="refuse")]
    assert {point_key(c, RUN) for c in same} == {point_key(base, RUN)}


@pytest.mark.parametrize("change", [
    lambda c: cfg(num_steps=3, topk=2),
    lambda c: with_bench(c, concurrency=[1]),
    lambda c: with_bench(c, max_new_tokens=64),
    lambda c: with_bench(c, temperature=[1.0]),
    lambda c: with_bench(c, num_prompts=8),
    lambda c: with_bench(c, long_prompts="skip"),  # other prompts are measured
    lambda c: with_sglang(c, python="/other/venv/bin/python"),
    lambda c: with_sglang(c, attention_backend="fa3"),
])
def test_the_key_changes_with_the_measurement(change):
    base = cfg(num_steps=3, topk=1)
    assert point_key(change(base), RUN) != point_key(base, RUN)
    assert point_key(base, PreparedRun(target="/models/other")) != point_key(base, RUN)


def test_the_key_changes_with_what_the_target_and_the_draft_hold():
    """A pair retrained at the same paths is another measurement (the export's path is fixed by
    draft.export_dir, or the draft is a hub id at another revision)."""
    base = cfg(num_steps=3, topk=1)
    draft = DraftArgs(path="/exports/d")
    run = PreparedRun(target="/models/target", target_content="t1", draft=draft,
                      export=ExportResult(path=Path("/exports/d"), key="d1"))
    keys = {point_key(base, r) for r in (
        run, replace(run, target_content="t2"), replace(run, export=replace(run.export, key="d2")),
        replace(run, target_revision="v2"), replace(run, draft=replace(draft, revision="v2")))}
    assert len(keys) == 5
    assert baseline_key(base, run) != baseline_key(base, replace(run, target_content="t2"))
    assert baseline_key(base, run) == baseline_key(base, replace(run, export=replace(run.export, key="d2")))


def test_the_key_holds_what_else_decides_it_prompts_card_and_sglang_release():
    """A sweep resumed on another machine reuses what a card of its own model measured (models, not UUIDs), and
    nothing of another model, of another SGLang release or of a prompts file edited since; without nvidia-smi
    or SGLang the key is what it was."""
    base = cfg(num_steps=3, topk=1)
    h100, h200 = {"cards": ["NVIDIA H100 80GB HBM3"]}, {"cards": ["NVIDIA H200"]}
    keys = {point_key(base, RUN, context) for context in (
        h100, h200, {**h100, "sglang": "0.5.17"}, {**h100, "sglang": "0.5.20"}, {**h100, "prompts_content": "p2"},
        None)}
    assert len(keys) == 6
    assert point_key(base, RUN, {"cards": None, "sglang": None}) == point_key(base, RUN)
    assert baseline_key(base, RUN, h100) != baseline_key(base, RUN, h200)


def test_the_measurement_context_names_the_prompts_content_the_models_of_the_cards_and_the_release(
        tmp_path, monkeypatch):
    from automodel_spec.io import nvidia_smi

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a"}\n')
    monkeypatch.setattr(nvidia_smi, "query", lambda fields: [["NVIDIA H100 80GB HBM3", "GPU-a"],
                                                            ["NVIDIA H100 80GB HBM3", "GPU-b"]])
    bench = BenchConfig(prompts=str(prompts))
    first = measurement_context(bench, "0.5.17")
    assert first["cards"] == ["NVIDIA H100 80GB HBM3"] and first["sglang"] == "0.5.17"
    prompts.write_text('{"prompt": "b"}\n')  # the same path, edited
    assert measurement_context(bench, "0.5.17")["prompts_content"] != first["prompts_content"]
    assert measurement_context(BenchConfig(), None)["prompts_content"]  # the built-in set's file too
    monkeypatch.setattr(nvidia_smi, "query", lambda fields: None)  # no nvidia-smi, a prompts file gone
    assert measurement_context(BenchConfig(prompts=str(tmp_path / "gone.jsonl")), None) == {}


def test_the_baseline_key_is_shared_by_every_speculative_setting():
    a, b = cfg(num_steps=3, topk=1), cfg(num_steps=5, topk=4, num_draft_tokens=12)
    assert baseline_key(a, RUN) == baseline_key(b, RUN) != point_key(a, RUN)
    assert baseline_key(with_bench(a, temperature=[1.0]), RUN) != baseline_key(a, RUN)


def test_read_complete_accepts_finished_points_of_the_same_key(tmp_path):
    path = tmp_path / "metrics.json"
    assert read_complete(path, "k") is None  # missing
    path.write_text("{ half")
    assert read_complete(path, "k") is None
    for status, done in (("ok", True), ("invalid", True), ("failed", False)):
        path.write_text(json.dumps({"schema": 3, "key": "k", "status": status}))
        assert (read_complete(path, "k") is not None) is done
        assert read_complete(path, "other") is None
    path.write_text(json.dumps({"schema": 3, "key": "k", "status": "ok", "renamed_key": 1}))
    assert read_complete(path, "k") is None  # not a result this version reads: measured again


def test_level_keys():
    assert level_key(0.0, 1) == "T0_c1" and level_key(5.5, 32) == "T5.5_c32"
    assert level_key(0.0, 0, request_rate=2.5) == "T0_r2.5" and level_key(1.0, 4, request_rate=8.0) == "T1_r8_c4"
    assert level_key(0.0, 8, phase=2) == "T0_p2_c8" and level_key(0.0, 0, request_rate=2.0, phase=3) == "T0_p3_r2"
    assert level_key(0.0, 0, phase=0) == "T0_phased"


def test_the_goodput_objective_counts_only_a_level_within_the_goals():
    met = LevelResult(0.0, 1, output_tok_per_s=10.0, goodput_rps=3.0, slo_met=True)
    missed = LevelResult(0.0, 4, output_tok_per_s=30.0, goodput_rps=9.0, slo_met=False)
    result = PointResult(status="ok", levels={met.key: met, missed.key: missed})
    bench = BenchConfig(concurrency=[1, 4], objective=Objective.goodput)
    assert objective(result, bench) == 3.0
    assert objective(result, replace(bench, objective_concurrency=4)) == 0.0  # missed the goals
    assert objective(result, replace(bench, objective=Objective.tok_per_s, objective_concurrency=4)) == 30.0


def test_the_objective_and_goals_settings_are_kept_apart_in_the_key():
    point = BenchPoint(AlgorithmConfig(), SpecConfig(num_steps=3, topk=1), SGLangConfig(), BenchConfig())
    run = PreparedRun(target="/t")
    ranked = replace(point, bench=replace(point.bench, objective=Objective.goodput))
    assert point_key(ranked, run) == point_key(point, run)  # what a sweep ranks by measures nothing
    goals = replace(point, bench=replace(point.bench, slo=SLOConfig(itl_s=0.04)))
    assert point_key(goals, run) != point_key(point, run)  # goodput and goals met are computed when measured


def test_objective_is_tokens_per_second_at_the_chosen_level():
    result = PointResult(status="ok", levels={lv.key: lv for lv in (
        LevelResult(0.0, 1, output_tok_per_s=10.0), LevelResult(0.0, 4, output_tok_per_s=30.0),
        LevelResult(5.0, 1, output_tok_per_s=7.0), LevelResult(5.0, 4, output_tok_per_s=20.0))})
    bench = BenchConfig(concurrency=[1, 4], temperature=[0.0, 5.0])
    assert objective(result, bench) == 10.0  # the first of each list
    assert objective(result, replace(bench, objective_concurrency=4)) == 30.0
    assert objective(result, replace(bench, objective_temperature=5.0)) == 7.0
    assert objective(result, replace(bench, objective_concurrency=4, objective_temperature=5.0)) == 20.0
    assert objective(PointResult(status="failed"), bench) == 0.0
    assert objective(PointResult(status="invalid"), bench) == 0.0


def test_one_line():
    ok = PointResult(status="ok", boot_s=12.4, levels={
        "T0_c1": LevelResult(0.0, 1, output_tok_per_s=100.0, speedup=1.5, accept_length=3.25),
        "T0.5_c4": LevelResult(0.5, 4, output_tok_per_s=300.0)})
    assert one_line("p", ok) == ("[bench] p: boot 12s; T=0 c=1: 100.0 tok/s x1.50 accept 3.25; "
                                 "T=0.5 c=4: 300.0 tok/s")
    assert one_line("p", PointResult(status="invalid", reason="too many tokens")) == \
        "[bench] p: invalid: too many tokens"
    assert one_line("p", PointResult(status="failed", error="x" * 700)) == "[bench] p: failed: " + "x" * 600
    # a server's last lines after the first line are kept whole: they say why it ended
    assert one_line("p", PointResult(status="failed", error="died\nlast 1\nlast 2")) == \
        "[bench] p: failed: died\nlast 1\nlast 2"


def test_a_point_is_charged_its_gpus_time_divided_among_the_servers_sharing_them():
    assert gpu_seconds(cfg(), 100.0) == 100.0
    assert gpu_seconds(with_bench(with_sglang(cfg(), tp_size=2), servers_per_gpu=4), 100.0) == 50.0


def test_sharing_a_gpu_is_not_part_of_what_a_point_measures():
    assert point_key(cfg(), RUN) == point_key(with_bench(cfg(), servers_per_gpu=4), RUN)


def test_an_unreadable_result_is_measured_again_and_what_is_not_a_file_is_kept_aside(tmp_path, caplog):
    from automodel_spec.bench.job import set_aside

    path = tmp_path / "metrics.json"
    path.mkdir()
    (path / "inside").write_text("kept")
    assert read_complete(path, "k") is None
    assert not path.exists() and (tmp_path / "metrics.json.unreadable-1" / "inside").read_text() == "kept"
    assert "is unreadable (is a directory, not a benchmark result file): the point is measured again; what was " \
           "there is kept as metrics.json.unreadable-1" in caplog.text
    path.write_text("{")  # a file: replaced by the next result, not moved
    assert read_complete(path, "k") is None and path.is_file()
    assert set_aside(path) is None and set_aside(tmp_path / "missing") is None
    path.unlink()
    path.mkdir()
    assert set_aside(path) == tmp_path / "metrics.json.unreadable-2"


def test_every_bench_setting_is_placed_in_the_key():
    # a new bench.* field must be classified for point_key: else resuming a sweep would measure its
    # points again, or reuse a point measured with another setting (that no bench setting names a point's
    # directory is derived from the same fields: tests/cli/test_compose.py)
    from dataclasses import fields

    from automodel_spec.bench.job import BENCH_BLANKED, BENCH_DROPPED, BENCH_MEASURED

    placed = [*BENCH_MEASURED, *BENCH_BLANKED, *BENCH_DROPPED]
    assert sorted(placed) == sorted(f.name for f in fields(BenchConfig)), "place each bench field in one of the three"
