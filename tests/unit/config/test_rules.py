"""The run's rules between fields (``config.rules``: ``validate``, ``target_path``, ``phase_load``); the
speculative setting's own rules are in test_spec_rules.py, composing with Hydra in tests/cli/test_compose.py."""

from __future__ import annotations

import pytest

from automodel_spec.config.rules import phase_load, target_path, validate
from automodel_spec.config.schema import (
    DEMO_DRAFT,
    DEMO_TARGET,
    AlgorithmConfig,
    BenchConfig,
    DraftConfig,
    Mode,
    Objective,
    ServeConfig,
    SGLangConfig,
    SLOConfig,
    SpecConfig,
    TargetConfig,
)
from automodel_spec.errors import ConfigError

NONE = AlgorithmConfig(name=None, architecture=None, needs_draft=False, uses_token_map=False)
NEXTN = AlgorithmConfig(name="NEXTN", architecture=None, needs_draft=False, uses_token_map=False)


def _cfg(**kw) -> ServeConfig:
    kw.setdefault("draft", DraftConfig(path="/runs/eagle3"))
    kw.setdefault("target", TargetConfig(path="/models/target"))
    return ServeConfig(**kw)


def _problems(cfg: ServeConfig) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        validate(cfg)
    assert exc.value.problems and str(exc.value).count("\n  - ") == len(exc.value.problems)
    return exc.value.problems


# --- validate --------------------------------------------------------------------------------------------


def test_valid_config_passes():
    validate(_cfg(spec=SpecConfig(3, 1, 4)))
    validate(_cfg(algorithm=NONE, draft=DraftConfig()))
    validate(_cfg(algorithm=NEXTN, draft=DraftConfig()))


def test_spec_rules_applied_by_validate():
    assert any("spec.num_draft_tokens=4" in p for p in _problems(_cfg(spec=SpecConfig(3, 1, 6))))


def test_spec_with_algorithm_none_refused():
    probs = _problems(_cfg(algorithm=NONE, draft=DraftConfig(), spec=SpecConfig(3, 1, 4)))
    assert len(probs) == 1 and "algorithm=none" in probs[0]


def test_algorithm_needing_a_draft_without_one():
    probs = _problems(_cfg(draft=DraftConfig(path=None)))
    assert len(probs) == 1 and "algorithm=EAGLE3 needs a drafter" in probs[0] and "draft.path" in probs[0]


def test_target_required():
    probs = _problems(_cfg(target=TargetConfig(path=None)))
    assert len(probs) == 1 and "target.path is unset" in probs[0]
    assert "set target.path=MODEL_DIR_OR_HUB_ID" in probs[0] and "draft.path=/runs/eagle3" in probs[0]


def test_target_required_without_a_draft_too():
    probs = _problems(_cfg(algorithm=NONE, draft=DraftConfig(), target=TargetConfig(path=None)))
    assert probs == ["target.path is unset: set target.path=MODEL_DIR_OR_HUB_ID."]


def test_an_export_needs_no_target():
    validate(_cfg(target=TargetConfig(path=None)), need_target=False)
    # ... but the other rules still hold
    probs = _problems(_cfg(target=TargetConfig(path=None), draft=DraftConfig(path=None)))
    assert len(probs) == 2 and "needs a drafter" in probs[0] and "target.path is unset" in probs[1]
    with pytest.raises(ConfigError, match="needs a drafter"):
        validate(_cfg(target=TargetConfig(path=None), draft=DraftConfig(path=None)), need_target=False)


@pytest.mark.parametrize(
    "draft,target,expected",
    [
        (DEMO_DRAFT, None, DEMO_TARGET),  # the default: the demo pair
        (DEMO_DRAFT, "/models/target", "/models/target"),
        ("/runs/eagle3", None, None),  # the demo target never comes with a draft of your own
        ("/runs/eagle3", DEMO_TARGET, DEMO_TARGET),
        (None, None, None),
    ],
)
def test_target_path_is_the_demo_target_with_the_demo_draft_only(draft, target, expected):
    assert target_path(_cfg(draft=DraftConfig(path=draft), target=TargetConfig(path=target))) == expected


@pytest.mark.parametrize(
    "draft,target,fix",
    [(DEMO_DRAFT, "/models/target", "set draft.path=RUN_DIR"),
     ("/runs/eagle3", DEMO_TARGET, "set target.path=MODEL_DIR_OR_HUB_ID")],
)
@pytest.mark.parametrize("need_target", [True, False])
def test_demo_pair_goes_together_and_the_message_names_the_key_to_set(draft, target, fix, need_target):
    cfg = _cfg(draft=DraftConfig(path=draft), target=TargetConfig(path=target))
    with pytest.raises(ConfigError) as exc:
        validate(cfg, need_target=need_target)
    probs = exc.value.problems
    assert len(probs) == 1 and "built-in demo" in probs[0] and fix in probs[0]
    given = "draft.path" if fix.startswith("set target") else "target.path"  # the key the user did set
    assert f"set {given}" not in probs[0]


@pytest.mark.parametrize("target", [DEMO_TARGET, None])
def test_demo_pair_together_is_fine(target):
    validate(_cfg(draft=DraftConfig(path=DEMO_DRAFT), target=TargetConfig(path=target)))


def test_demo_target_alone_without_speculation_is_fine():
    validate(_cfg(algorithm=NONE, draft=DraftConfig(), target=TargetConfig(path=DEMO_TARGET)))


@pytest.mark.parametrize(
    "sglang,needle",
    [
        (SGLangConfig(tp_size=0), "sglang.tp_size=0"),
        (SGLangConfig(port=70000), "sglang.port=70000"),
        (SGLangConfig(port=-1), "sglang.port=-1"),
        (SGLangConfig(mem_fraction_static=1.0), "mem_fraction_static=1.0"),
        (SGLangConfig(mem_fraction_static=0.0), "mem_fraction_static=0.0"),
        (SGLangConfig(ready_timeout_s=0), "ready_timeout_s=0"),
    ],
)
def test_sglang_rules(sglang, needle):
    probs = _problems(_cfg(sglang=sglang))
    assert len(probs) == 1 and needle in probs[0]


def test_port_zero_picks_a_free_port():
    validate(_cfg(sglang=SGLangConfig(port=0)))


def test_negative_aux_layer_ids_refused():
    probs = _problems(_cfg(draft=DraftConfig(path="/runs/eagle3", aux_layer_ids=[1, -3, 5])))
    assert len(probs) == 1 and "aux_layer_ids" in probs[0]


@pytest.mark.parametrize(
    "bench,needle",
    [
        (BenchConfig(num_prompts=0), "bench.num_prompts=0"),
        (BenchConfig(concurrency=[]), "bench.concurrency=[]"),
        (BenchConfig(concurrency=[1, 0]), "bench.concurrency=[1, 0]"),
        (BenchConfig(max_new_tokens=0), "bench.max_new_tokens=0"),
        (BenchConfig(temperature=[0.0, -0.1]), "bench.temperature=[0.0, -0.1]"),
        (BenchConfig(temperature=[]), "bench.temperature=[] needs one or more"),
        (BenchConfig(temperature=[0.0], objective_temperature=1.0), "bench.objective_temperature=1.0 is not one of"),
        (BenchConfig(request_rate=[2.0, -1.0]), "bench.request_rate=[2.0, -1.0] needs one or more rates"),
        (BenchConfig(request_rate=[]), "bench.request_rate=[] needs one or more rates"),
        (BenchConfig(request_rate=[2.0], duration_s=0.0), "bench.duration_s=0.0 must be > 0"),
        (BenchConfig(request_rate=[2.0], max_concurrency=0), "bench.max_concurrency=0 must lie in 1..4096"),
        (BenchConfig(phases=[]), "bench.phases=[] has no phase"),
        (BenchConfig(phases=["c1", "c8x"]), "phase 'c8x' is not c<N>"),
        (BenchConfig(phases=["r0"]), "phase 'r0' is not c<N>"),
        (BenchConfig(phases=["c1"], request_rate=[1.0]), "bench.phases and bench.request_rate=[1.0] are both set"),
        (BenchConfig(slo=SLOConfig(itl_s=-0.04)), "bench.slo.itl_s=-0.04 must be a finite number of seconds > 0"),
        (BenchConfig(objective=Objective.goodput), "bench.objective=goodput ranks by the requests/s served within"),
        (BenchConfig(gpu_pool=["0", "0"]), "bench.gpu_pool=['0', '0'] must list GPUs as CUDA_VISIBLE_DEVICES"),
        (BenchConfig(gpu_pool=["-1"]), "a negative index hides every GPU from the server"),
    ],
)
def test_bench_rules_in_bench_mode_only(bench, needle):
    probs = _problems(_cfg(mode=Mode.bench, bench=bench))
    assert len(probs) == 1 and needle in probs[0]
    validate(_cfg(mode=Mode.serve, bench=bench))  # serving ignores the bench section


@pytest.mark.parametrize(
    "bench,sglang,said,unsaid",
    [  # each value's own rule (a range, a list it must be one of, another setting) would name it a second time
        (BenchConfig(request_rate=[float("inf")]), SGLangConfig(), "bench.request_rate=[inf] is not a finite number",
         "needs one or more rates"),
        (BenchConfig(temperature=[0.0], objective_temperature=float("nan")), SGLangConfig(),
         "bench.objective_temperature=nan is not a finite number", "is not one of"),
        (BenchConfig(concurrency=[2**40]), SGLangConfig(), "bench.concurrency=[1099511627776] is beyond", "4096"),
        (BenchConfig(), SGLangConfig(mem_fraction_static=float("nan")),
         "sglang.mem_fraction_static=nan is not a finite number", "between 0 and 1"),
        (BenchConfig(), SGLangConfig(nnodes=2**40), "sglang.nnodes=1099511627776 is beyond", "dist_init_addr"),
    ],
)
def test_a_value_that_is_no_usable_number_is_said_once(bench, sglang, said, unsaid):
    probs = _problems(_cfg(mode=Mode.bench, bench=bench, sglang=sglang))
    assert len(probs) == 1 and said in probs[0] and unsaid not in probs[0], probs


def test_only_the_setting_named_whole_is_passed_over():
    # sglang.nnodes=1099511627776 is no usable number; a rule naming sglang.node_rank=1 (a prefix of neither
    # its key nor its value) is still said
    probs = _problems(_cfg(mode=Mode.bench, sglang=SGLangConfig(nnodes=2**40, node_rank=1)))
    assert any(p.startswith("sglang.nnodes=1099511627776 is beyond") for p in probs)
    assert any("mode=bench with sglang.node_rank=1:" in p for p in probs), probs


def test_servers_on_one_gpu_are_bounded_by_the_memory_each_needs():
    probs = _problems(_cfg(mode=Mode.bench, bench=BenchConfig(servers_per_gpu=1000),
                           sglang=SGLangConfig(mem_fraction_static=0.0005)))
    assert len(probs) == 1 and "bench.servers_per_gpu=1000 would leave each server under 1%" in probs[0]
    assert "at most 88" in probs[0] and "=0.0 or lower" not in probs[0]
    validate(_cfg(mode=Mode.bench, bench=BenchConfig(servers_per_gpu=88), sglang=SGLangConfig(mem_fraction_static=0.01)))


def test_a_check_against_more_than_its_steps_can_accept_is_refused():
    cfg = _cfg(mode=Mode.check, spec=SpecConfig(3, 1, 4), bench=BenchConfig(expected_accept_length=4.5))
    probs = _problems(cfg)
    assert len(probs) == 1 and "bench.expected_accept_length=4.5 is above 4, the most spec.num_steps=3" in probs[0]
    validate(_cfg(mode=Mode.check, spec=SpecConfig(3, 1, 4), bench=BenchConfig(expected_accept_length=4.0)))
    # a benchmark (a sweep's points) holds it per point: a short chain under it is measured, and fails its verdict
    validate(_cfg(mode=Mode.bench, spec=SpecConfig(3, 1, 4), bench=BenchConfig(expected_accept_length=4.5)))


def test_load_settings_that_are_fine():
    validate(_cfg(mode=Mode.bench, bench=BenchConfig(request_rate=[0.5, 4.0], duration_s=30.0, max_concurrency=8,
                                                     slo=SLOConfig(ttft_s=0.2, itl_s=0.04),
                                                     objective=Objective.goodput)))
    validate(_cfg(mode=Mode.bench, bench=BenchConfig(phases=["c1", "C8", "r2.5", "c1"])))


@pytest.mark.parametrize("text,load", [("c8", ("concurrency", 8)), ("r2.5", ("rate", 2.5)), (" R4 ", ("rate", 4.0))])
def test_phase_loads_are_read(text, load):
    assert phase_load(text) == load


def test_several_errors_reported_together():
    cfg = _cfg(
        draft=DraftConfig(path=None),
        target=TargetConfig(path=None),
        spec=SpecConfig(num_steps=3, topk=1, num_draft_tokens=9),
        sglang=SGLangConfig(tp_size=0, port=99999),
    )
    with pytest.raises(ConfigError) as exc:
        validate(cfg)
    probs = exc.value.problems
    assert len(probs) == 5
    joined = "\n".join(probs)
    for needle in ("spec.num_draft_tokens=4", "needs a drafter", "target.path is unset", "tp_size=0", "port=99999"):
        assert needle in joined
    assert "(5 problem(s))" in str(exc.value)
