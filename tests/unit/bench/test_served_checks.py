"""The lossless check (outputs against the baseline's) and what fails ``mode=check``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from automodel_spec.bench.result import LevelResult, PointResult, ReferenceSummary, read_point, write_point
from automodel_spec.bench.served_checks import (
    add_lossless,
    check_failures,
    check_report,
    first_difference,
    read_outputs,
)


def _records(path: Path, outputs: dict[tuple[int, int], list[int]], temperature: float = 0.0) -> Path:
    with open(path, "w") as fh:
        for (conc, i), ids in outputs.items():
            fh.write(json.dumps({"i": i, "concurrency": conc, "temperature": temperature, "ok": True,
                                 "output_ids": ids}) + "\n")
    return path


def _result(*levels: tuple[float, int]) -> PointResult:
    r = PointResult(status="ok")
    for t, c in levels:
        lv = LevelResult(temperature=t, concurrency=c)
        r.levels[lv.key] = lv
    return r


def test_first_difference():
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 9, 3]) == 1
    assert first_difference([1, 2], [1, 2, 3]) == 2  # a shorter output differs where it ends


def test_lossless_counts_identical_outputs_and_the_first_difference_per_level(tmp_path):
    base = _records(tmp_path / "base.jsonl", {(1, 0): [1, 2, 3, 4], (1, 1): [5, 6, 7, 8], (4, 0): [1, 2, 3, 4],
                                              (4, 1): [5, 6, 7, 8]})
    mine = _records(tmp_path / "mine.jsonl", {(1, 0): [1, 2, 3, 4], (1, 1): [5, 6, 7, 8], (4, 0): [1, 2, 9, 4],
                                              (4, 1): [5, 6, 7, 0]})
    r = _result((0.0, 1), (0.0, 4))
    add_lossless(r, mine, base)
    c1, c4 = r.level(0.0, 1), r.level(0.0, 4)
    assert (c1.lossless_compared, c1.lossless_identical, c1.lossless_first_difference) == (2, 2, None)
    assert (c4.lossless_compared, c4.lossless_identical, c4.lossless_first_difference) == (2, 0, 2)
    assert check_failures(r)[0].startswith("no reference")


def test_sampled_levels_are_not_compared(tmp_path):
    base = _records(tmp_path / "base.jsonl", {(1, 0): [1, 2]}, temperature=0.7)
    mine = _records(tmp_path / "mine.jsonl", {(1, 0): [3, 4]}, temperature=0.7)
    r = _result((0.7, 1))
    add_lossless(r, mine, base)
    assert r.level(0.7, 1).lossless_compared == 0


def test_check_fails_on_a_verdict_and_reports_outputs_that_differ(tmp_path):
    r = _result((0.0, 1))
    r.reference = ReferenceSummary(status="ok", accept_length=3.0)
    lv = r.level(0.0, 1)
    lv.served_as_trained, lv.reference_verdict = True, "served as trained (served 3.00, reference 3.00)"
    lv.lossless_compared = lv.lossless_identical = 4
    assert check_report(r) == (0, "check passed: served as trained (served 3.00, reference 3.00); outputs "
                                  "identical to the no-speculation baseline's 4/4")
    lv.lossless_identical, lv.lossless_first_difference = 3, 17
    code, text = check_report(r)  # near-ties kernels of other shapes resolve differently: reported only
    assert code == 0 and "identical to the no-speculation baseline's 3/4 (first difference at token 17" in text
    lv.lossless_identical, lv.served_as_trained, lv.reference_verdict = 4, False, "served accept length 1.00 is ..."
    assert check_failures(r) == ["T=0 c=1: served accept length 1.00 is ..."]


def test_the_new_fields_round_trip_through_metrics_json(tmp_path):
    r = _result((0.0, 1))
    r.reference = ReferenceSummary(status="ok", accept_length=3.5, histogram=[1, 2, 3], problems=["x"],
                                   aux_layers=[2, 4, 5])
    r.level(0.0, 1).reference_accept_length, r.level(0.0, 1).lossless_first_difference = 3.5, 7
    write_point(tmp_path / "metrics.json", r)
    back = read_point(tmp_path / "metrics.json")
    assert back.reference == r.reference and back.level(0.0, 1) == r.level(0.0, 1)


def test_summary_shows_served_vs_reference_and_warns():
    from automodel_spec.sweep.summary import served_lines

    rows = [{"point": "a", "status": "ok", "temperature": 0.0, "concurrency": 1, "accept_length": 3.9,
             "reference_accept_length": 4.0, "served_as_trained": True, "lossless_compared": 4,
             "lossless_identical": 4, "lossless_first_difference": None},
            {"point": "b", "status": "ok", "temperature": 0.0, "concurrency": 8, "accept_length": 1.2,
             "reference_accept_length": 4.0, "served_as_trained": False, "reference_verdict": "served 1.20 ...",
             "lossless_compared": 16, "lossless_identical": 15, "lossless_first_difference": 90}]
    text = "\n".join(served_lines(rows))
    assert "| a | 0 | 1 | 3.90 | 4.00 | - | served as trained | - | 4/4 | - |" in text
    assert "| b | 0 | 8 | 1.20 | 4.00 | - | **NOT served as trained** | - | 15/16 | 90 |" in text
    assert "WARNING b T=0 c=8: served 1.20 ..." in text
    assert "WARNING b T=0 c=8: 1 output(s) differ from the baseline's, first at token 90: kernels of other" in text
    sampled = {**rows[0], "temperature": 0.7, "lossless_compared": 0, "reference_kind": "interval",
               "reference_interval": [3.1, 4.6], "served_as_trained": False, "reference_verdict": "below ...",
               "depths_as_trained": False, "depth_verdict": "per depth ... depth 2"}
    text = "\n".join(served_lines([sampled]))
    assert "| a | 0.7 | 1 | 3.90 | 4.00 [3.10, 4.60] | interval | **NOT served as trained** | **short** | - | - |" in text
    assert "WARNING a T=0.7 c=1: below ..." in text and "WARNING a T=0.7 c=1: per depth ... depth 2" in text


def test_points_of_one_draft_and_step_count_share_one_reference(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from automodel_spec.bench import reference, served_checks
    from automodel_spec.bench.result import SpecSettings
    from automodel_spec.bench.served_checks import _cached_reference
    from automodel_spec.bench.workload import Prompt

    calls = []

    def fake_compute(run, prompts, setting, max_new_tokens, gpu_pool, share=1, sampling=None):
        steps, topk = setting.num_steps, setting.topk
        calls.append((steps, topk, setting.num_draft_tokens))
        return reference.ReferenceResult(
            algorithm="EAGLE3", num_steps=steps, topk=topk, problems=[], aux_layers=[2, 4, 5], device="cpu",
            dtype="float32", seconds=1.0,
            prompts=[reference.PromptReference(prompt_id=p.id, output_ids=[1] * 9, rounds=3, histogram=[0, 1, 2])
                     for p in prompts])

    monkeypatch.setattr(served_checks, "_compute_in_subprocess", fake_compute)
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "config.json").write_text("{}")
    run = SimpleNamespace(target=str(tmp_path / "target"), target_content="t1",
                          export=SimpleNamespace(path=tmp_path / "export", key="d1"))
    prompts = [Prompt(id="a", category="k", text="hi")]
    first = _cached_reference(tmp_path / "ref", run, prompts, SpecSettings(num_steps=2, topk=1), 9)
    again = _cached_reference(tmp_path / "ref", run, prompts, SpecSettings(num_steps=2, topk=4), 9)
    other = _cached_reference(tmp_path / "ref", run, prompts, SpecSettings(num_steps=3, topk=1), 9)
    tree = _cached_reference(tmp_path / "ref", run, prompts, SpecSettings(num_steps=2, topk=4, num_draft_tokens=8), 9)
    # a tree of unknown size shares its chain (a bound); a tree of known size is computed as the tree
    assert calls == [(2, 1, None), (3, 1, None), (2, 4, 8)]
    assert again.accept_length == first.accept_length == 3.0 and again.topk == 4 and again.kind == "bound"
    assert other.num_steps == 3 and tree.topk == 4
    # the same paths holding other weights (a target retrained in place, an export_dir rewritten): computed again
    for changed in (SimpleNamespace(**{**vars(run), "target_content": "t2"}),
                    SimpleNamespace(**{**vars(run), "export": SimpleNamespace(path=tmp_path / "export", key="d2")})):
        _cached_reference(tmp_path / "ref", changed, prompts, SpecSettings(num_steps=2, topk=1), 9)
    assert calls[3:] == [(2, 1, None), (2, 1, None)]


def test_without_transformers_the_reference_says_how_to_install_it_and_exits_2(monkeypatch, capsys, tmp_path):
    import sys

    from automodel_spec.bench.reference import main

    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    code = main(["--target", str(tmp_path), "--draft", str(tmp_path), "--num-steps", "3", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and 'pip install "automodel-spec[reference]"' in err and "Traceback" not in err


def test_a_reference_that_cannot_run_is_an_error_naming_why(tmp_path):
    from types import SimpleNamespace

    import pytest

    from automodel_spec.bench.result import SpecSettings
    from automodel_spec.bench.served_checks import _compute_in_subprocess
    from automodel_spec.bench.workload import Prompt
    from automodel_spec.errors import SpecError

    run = SimpleNamespace(target=str(tmp_path / "no-target"), export=SimpleNamespace(path=tmp_path / "no-export"))
    with pytest.raises(SpecError, match=r"the reference exited 1: error: target .*no-target: no config.json there"):
        _compute_in_subprocess(run, [Prompt(id="a", category="k", input_ids=(1, 2))], SpecSettings(num_steps=2, topk=1),
                               8, None)


def _auto_reference_plan(tmp_path, monkeypatch, torch_version: str) -> tuple[str | None, list[str]]:
    """``reference_plan`` with ``bench.reference`` auto on a host whose nvidia-smi lists a GPU, the
    installed torch reporting ``torch_version``; returns its answer and whether it imported torch."""
    from types import SimpleNamespace

    from automodel_spec.bench import served_checks
    from automodel_spec.bench.result import SpecSettings
    from automodel_spec.demo import synthetic

    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "config.json").write_text(json.dumps(synthetic.llama_config(synthetic.TINY)))
    monkeypatch.setattr(served_checks, "_nvidia_device", lambda: True)
    monkeypatch.setattr(served_checks.importlib.metadata, "version",
                        lambda name: torch_version if name == "torch" else "0")
    find_spec = served_checks.importlib.util.find_spec
    monkeypatch.setattr(served_checks.importlib.util, "find_spec",  # transformers installed, or not: the same
                        lambda name, *a: SimpleNamespace() if name == "transformers" else find_spec(name, *a))
    imported = []

    def import_torch():
        imported.append("torch")
        return SimpleNamespace(cuda=SimpleNamespace(is_available=lambda: False))

    monkeypatch.setattr(served_checks, "import_torch", import_torch)
    cfg = SimpleNamespace(algorithm=SimpleNamespace(name="EAGLE3"),
                          bench=SimpleNamespace(reference=None, temperature=[0.0], max_new_tokens=16))
    run = SimpleNamespace(target=str(tmp_path / "target"), export=SimpleNamespace(path=tmp_path / "export"))
    result = SimpleNamespace(setting=SpecSettings(num_steps=3, topk=1))
    return served_checks.reference_plan(cfg, run, result, 4), imported


def test_auto_reference_on_a_cpu_build_of_torch_says_no_cuda_without_importing_it(tmp_path, monkeypatch):
    why, imported = _auto_reference_plan(tmp_path, monkeypatch, "2.13.0+cpu")
    assert why.startswith("bench.reference auto: no CUDA GPU here") and imported == []


def test_auto_reference_asks_a_cuda_build_of_torch_for_its_gpu(tmp_path, monkeypatch):
    why, imported = _auto_reference_plan(tmp_path, monkeypatch, "2.11.0")
    assert why.startswith("bench.reference auto: no CUDA GPU here") and imported == ["torch"]


def test_check_serves_the_draft_alone_not_a_load():
    from automodel_spec.bench.point import BenchPoint
    from automodel_spec.bench.served_checks import check_point
    from automodel_spec.config.schema import AlgorithmConfig, BenchConfig, SGLangConfig, SpecConfig

    loaded = BenchPoint(AlgorithmConfig(), SpecConfig(num_steps=3, topk=1), SGLangConfig(),
                        BenchConfig(concurrency=[8], request_rate=[4.0], temperature=[1.0]))
    bench = check_point(loaded).bench
    # greedy (the lossless check) and each configured temperature, one request at a time, no rate, no phases
    assert (bench.concurrency, bench.temperature, bench.request_rate, bench.phases) == ([1], [0.0, 1.0], None, None)
    assert check_point(BenchPoint(AlgorithmConfig(), SpecConfig(), SGLangConfig(),
                                  BenchConfig(phases=["c1", "c8"]))).bench.phases is None


def test_lossless_keeps_phases_and_rates_apart_from_the_concurrencies(tmp_path):
    def write(path, rows):
        path.write_text("".join(json.dumps({"ok": True, "temperature": 0.0, "output_ids": ids, **r}) + "\n"
                                for r, ids in rows))
        return path

    same, other = [1, 2, 3], [1, 9, 3]
    closed, rate = {"concurrency": 1, "i": 0}, {"concurrency": 1, "i": 0, "request_rate": 4.0}
    p1, p2 = {"concurrency": 1, "i": 0, "phase": 1}, {"concurrency": 1, "i": 0, "phase": 2}
    base = write(tmp_path / "base.jsonl", [(closed, same), (rate, same), (p1, same), (p2, same)])
    mine = write(tmp_path / "mine.jsonl", [(closed, same), (rate, other), (p1, same), (p2, other)])
    levels = [LevelResult(0.0, 1), LevelResult(0.0, 1, request_rate=4.0), LevelResult(0.0, 1, phase=1),
              LevelResult(0.0, 1, phase=2), LevelResult(0.0, 0, phase=0)]
    r = PointResult(status="ok", levels={lv.key: lv for lv in levels})
    add_lossless(r, mine, base)
    got = {k: (lv.lossless_compared, lv.lossless_identical) for k, lv in r.levels.items()}
    # the same prompt index at one concurrency in four levels: each compared with its own level's baseline
    assert got == {"T0_c1": (1, 1), "T0_r4_c1": (1, 0), "T0_p1_c1": (1, 1), "T0_p2_c1": (1, 0),
                   "T0_phased": (2, 1)}


def test_records_of_another_shape_give_nothing_rather_than_a_traceback(tmp_path):
    records = tmp_path / "records.jsonl"
    records.write_text("\n".join([
        json.dumps({"ok": True, "concurrency": 1, "i": 0, "temperature": 0.0, "output_ids": [1, 2]}),
        json.dumps([1, 2]), json.dumps({"ok": True, "output_ids": [3]}), json.dumps({"ok": True, "i": "x",
                                                                                     "concurrency": 1, "output_ids": []}),
        "{not json", "\udcff"]), errors="surrogateescape")
    assert read_outputs(records) == {(0.0, 1, None, None, 0): [1, 2]}
    assert read_outputs(tmp_path) == {} and read_outputs(tmp_path / "missing") == {}


def test_the_reference_follows_the_setting_and_thresholds_the_server_reports(tmp_path, monkeypatch):
    """SGLang's own choice (nothing requested, 5/4/8 read back) and its accept thresholds go to the
    reference; each temperature gets its own computation, its kind and its verdict."""
    from types import SimpleNamespace

    from automodel_spec.bench import reference, served_checks
    from automodel_spec.bench.result import SpecSettings
    from automodel_spec.bench.served_checks import add_reference
    from automodel_spec.bench.workload import Prompt

    calls = []

    def fake_compute(run, prompts, setting, max_new_tokens, gpu_pool, share=1, sampling=None):
        calls.append((setting.num_steps, setting.topk, setting.num_draft_tokens, sampling.temperature,
                      sampling.threshold_single, sampling.threshold_acc, sampling.rejection))
        sampled = sampling.temperature > 0
        return reference.ReferenceResult(
            algorithm="EAGLE3", num_steps=5, topk=4, num_draft_tokens=8, temperature=sampling.temperature,
            problems=[], aux_layers=[2, 4, 5], device="cpu", dtype="float32", seconds=1.0,
            samples=4 if sampled else 1,
            prompts=[reference.PromptReference(prompt_id=p.id, output_ids=[1] * 12,
                                               rounds=sum(r) if sampled else 3,
                                               histogram=[0, 0, 0, 0, 0, 12] if sampled else [0, 0, 0, 3, 0, 0],
                                               sample_rounds=r if sampled else None)
                     for p, r in zip(prompts, [[3, 4, 3, 4], [4, 4, 5, 3]], strict=False)])

    monkeypatch.setattr(served_checks, "_compute_in_subprocess", fake_compute)
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "config.json").write_text("{}")
    run = SimpleNamespace(target=str(tmp_path / "target"), export=SimpleNamespace(path=tmp_path / "export"))
    bench = SimpleNamespace(reference=True, temperature=[0.0, 1.0], concurrency=[1], num_prompts=2, seed=0,
                            max_new_tokens=12, gpu_pool=None, servers_per_gpu=1, expected_accept_length=None)
    cfg = SimpleNamespace(bench=bench, algorithm=SimpleNamespace(name="EAGLE3"))
    result = _result((0.0, 1), (1.0, 1))
    result.requested = SpecSettings()
    result.effective = SpecSettings(num_steps=5, topk=4, num_draft_tokens=8)
    result.server_settings = {"speculative_accept_threshold_single": 0.7, "speculative_accept_threshold_acc": 0.9}
    result.level(0.0, 1).accept_length, result.level(1.0, 1).accept_length = 4.0, 1.0
    result.level(0.0, 1).accept_histogram = [0, 0, 0, 3, 0, 0]
    pool = [Prompt(id="a", category="k", text="hi"), Prompt(id="b", category="k", text="ho")]
    add_reference(cfg, run, result, pool)
    assert calls == [(5, 4, 8, 0.0, 0.7, 0.9, False), (5, 4, 8, 1.0, 0.7, 0.9, False)]
    greedy, sampled = result.level(0.0, 1), result.level(1.0, 1)
    assert greedy.reference_kind == "exact" and greedy.served_as_trained and greedy.depths_as_trained
    assert greedy.histogram_distance == 0.0
    assert sampled.reference_kind == "interval" and sampled.reference_interval is not None
    assert sampled.served_as_trained is False and "below the reference interval" in sampled.reference_verdict
    assert check_failures(result) == [f"T=1 c=1: {sampled.reference_verdict}"]
    assert set(result.reference.by_temperature) == {"0", "1"} and result.reference.kind == "exact"


def test_the_depth_verdict_catches_later_positions_an_average_hides():
    from automodel_spec.bench.accept_depths import depth_verdict, histogram_distance, survival

    reference = [100, 300, 600]  # rounds by drafts accepted: 0, 1, 2
    assert survival(reference) == [0.9, 0.6]
    assert depth_verdict(list(reference), reference) == (True, "every depth within sampling error of the "
                                                                "reference (distance 0.00)")
    # the first position served as trained, the second mostly lost: fails at depth 2 only
    ok, text = depth_verdict([100, 700, 200], reference)
    assert not ok and "depth 2: 0.20 of rounds served vs 0.60 reference" in text and "depth 1" not in text
    assert histogram_distance([100, 700, 200], reference) == pytest.approx(0.4)
    # three rounds served say little: within three standard errors of the reference's shares
    assert depth_verdict([1, 1, 1], reference)[0] is True
    assert depth_verdict(None, reference) == (None, None)


def test_a_greedy_chain_is_also_held_against_what_training_measured(tmp_path, monkeypatch):
    """The real pair's Automodel run records its chain survival per depth; a reference far below it at
    depth 2 is a warning on the level (not a failure: training measured other data)."""
    from types import SimpleNamespace

    from automodel_spec.bench import reference, served_checks
    from automodel_spec.bench.result import SpecSettings
    from automodel_spec.bench.served_checks import add_reference
    from automodel_spec.bench.workload import Prompt

    def fake_compute(run, prompts, setting, max_new_tokens, gpu_pool, share=1, sampling=None):
        return reference.ReferenceResult(
            algorithm="EAGLE3", num_steps=2, topk=1, num_draft_tokens=3, problems=[], aux_layers=[], device="cpu",
            dtype="float32", seconds=1.0,
            prompts=[reference.PromptReference(prompt_id=p.id, output_ids=[1] * 10, rounds=5, histogram=[1, 3, 1])
                     for p in prompts])

    monkeypatch.setattr(served_checks, "_compute_in_subprocess", fake_compute)
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "config.json").write_text("{}")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "automodel_train.json").write_text(json.dumps({"chain_survival_per_depth": [0.85, 0.7]}))
    run = SimpleNamespace(target=str(tmp_path / "target"), export=SimpleNamespace(path=tmp_path / "export"),
                          draft=SimpleNamespace(path=str(tmp_path / "run")))
    bench = SimpleNamespace(reference=True, temperature=[0.0], concurrency=[1], num_prompts=1, seed=0,
                            max_new_tokens=10, gpu_pool=None, servers_per_gpu=1, expected_accept_length=None)
    result = _result((0.0, 1))
    result.requested = SpecSettings(num_steps=2, topk=1, num_draft_tokens=3)
    result.level(0.0, 1).accept_length = 2.0
    add_reference(SimpleNamespace(bench=bench, algorithm=SimpleNamespace(name="EAGLE3")), run, result,
                  [Prompt(id="a", category="k", text="hi")])
    lv = result.level(0.0, 1)
    assert lv.trained_survival == [0.85, 0.7] and lv.trained_depths_ok is False
    assert "depth 2: 0.20 reference vs 0.70 in training" in lv.trained_depth_verdict and "depth 1" not in lv.trained_depth_verdict
    assert lv.served_as_trained is True and check_failures(result) == []  # a warning, not a failure


@pytest.mark.parametrize("free_gib, weights_gib, prompts, workers", [
    (80, 0.25, 16, 4),   # a small pair on a free card: as many as REFERENCE_WORKERS
    (80, 0.25, 2, 2),    # never more than the prompts
    (40, 14.0, 16, 1),   # an 8B-shaped target in float32 (28 GB) twice would not fit
    (80, 14.0, 16, 2),   # ... on a free 80 GB card twice does
    (None, 0.25, 16, 1),  # free memory unknown
    (80, None, 16, 1),   # weights unknown (a hub id)
])
def test_reference_workers_fit_the_gpus_free_memory(monkeypatch, free_gib, weights_gib, prompts, workers):
    from automodel_spec.bench import placement, served_checks

    monkeypatch.setattr(served_checks.nvidia_smi, "free_mib", lambda gpus: None if free_gib is None else free_gib * 1024)
    monkeypatch.setattr(placement, "weights_bytes", lambda run: None if weights_gib is None else int(weights_gib * 2**30))
    assert served_checks.reference_workers(object(), ["0"], prompts) == workers
