"""Every option of every config group composes through Hydra's API into a typed ServeConfig."""

from __future__ import annotations

import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException, HydraException
from omegaconf import OmegaConf, open_dict

from automodel_spec.config.rules import target_path, validate
from automodel_spec.config.schema import (
    DEMO_TARGET,
    AlgorithmConfig,
    BenchConfig,
    DraftConfig,
    Mode,
    ServeConfig,
    SGLangConfig,
)
from automodel_spec.errors import ConfigError
from automodel_spec.hydra.glue import register_configs

CONF = Path(__file__).resolve().parents[2] / "conf"
EXPECTED = {
    "algorithm": {"EAGLE3", "EAGLE", "NEXTN", "STANDALONE", "none"},
    "draft": {"demo", "trained", "automodel", "legacy", "hub"},
    "sglang": {"default", "latency", "throughput", "triton", "triton_bench"},
    "bench": {"default"},
}
# draft options whose path is mandatory (???), and a value that satisfies it
DRAFT_PATHS = {"trained": "/runs/eagle3", "automodel": "/runs/eagle3", "legacy": "/drafts/legacy", "hub": "org/draft"}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@contextmanager
def composer(conf_dir: Path = CONF, config_name: str = "serve", **kwargs):
    register_configs()
    GlobalHydra.instance().clear()  # whatever an earlier test left initialized
    with initialize_config_dir(config_dir=str(conf_dir), version_base=None):
        yield lambda *overrides: compose(config_name, overrides=list(overrides), **kwargs)


def to_serve_config(*overrides: str) -> ServeConfig:
    with composer() as make:
        cfg = OmegaConf.to_object(make(*overrides))
    assert isinstance(cfg, ServeConfig)
    return cfg


def draft_choice(*overrides: str) -> str:
    """The draft preset Hydra composed (the presets carry no label of their own)."""
    with composer(return_hydra_config=True) as make:
        return make(*overrides).hydra.runtime.choices.draft


def test_every_expected_option_exists():
    for group, expected in EXPECTED.items():
        assert expected <= set(options(group)), f"{group}: {sorted(expected - set(options(group)))} missing"


def test_defaults_compose_to_the_demo():
    cfg = to_serve_config()
    assert cfg.algorithm == AlgorithmConfig()
    assert cfg.draft.path == "builtin:demo" and draft_choice() == "demo"
    assert cfg.target.path is None and target_path(cfg) == DEMO_TARGET  # it comes with the demo draft
    assert cfg.sglang.host == "127.0.0.1" and cfg.sglang.port == 30000
    assert cfg.mode is Mode.serve and cfg.print_only is False


@pytest.mark.parametrize("option", options("algorithm"))
def test_algorithm_options(option):
    cfg = to_serve_config(f"algorithm={option}")
    assert isinstance(cfg.algorithm, AlgorithmConfig)
    assert cfg.algorithm.name == (None if option == "none" else option)
    if option in ("EAGLE", "EAGLE3"):
        assert cfg.algorithm.architecture.startswith("LlamaForCausalLMEagle") and cfg.algorithm.needs_draft
    if option in ("NEXTN", "none"):
        assert cfg.algorithm.needs_draft is False
    assert cfg.algorithm.uses_token_map is (option == "EAGLE")


@pytest.mark.parametrize("option", options("draft"))
def test_draft_options(option):
    extra = [f"draft.path={DRAFT_PATHS[option]}"] if option in DRAFT_PATHS else []
    cfg = to_serve_config(f"draft={option}", *extra)
    assert isinstance(cfg.draft, DraftConfig)
    assert draft_choice(f"draft={option}", *extra) == option
    assert cfg.draft.path == DRAFT_PATHS.get(option, "builtin:demo")
    assert cfg.draft.allow_unsafe_pickle is False


@pytest.mark.parametrize("recipe", ["serve", "export"])
def test_draft_automodel_is_another_name_for_draft_trained(recipe):
    overrides = ["draft.path=/runs/eagle3", "draft.aux_layer_ids=[1,2]", "draft.config=/runs/draft.json"]
    with composer(config_name=recipe) as make:
        assert make("draft=automodel", *overrides) == make("draft=trained", *overrides)
        assert make("draft=automodel") == make("draft=trained")


@pytest.mark.parametrize("option", sorted(DRAFT_PATHS))
def test_a_draft_of_your_own_leaves_the_target_unset(option):
    cfg = to_serve_config(f"draft={option}", f"draft.path={DRAFT_PATHS[option]}")
    assert cfg.target.path is None and target_path(cfg) is None
    validate(cfg, need_target=False)  # an export needs no target
    with pytest.raises(ConfigError, match="target.path is unset: .* set target.path="):
        validate(cfg)  # serving does


@pytest.mark.parametrize("overrides", [[], ["draft=automodel", "draft.path=/runs/eagle3", "algorithm=EAGLE"]])
def test_export_composes_the_serve_config_with_its_own_help(overrides):
    with composer() as make:
        serve = make(*overrides)
    with composer(config_name="export") as make:
        export = make(*overrides)
    assert export == serve  # same job config, same schema
    for name in ("serve", "export"):
        with composer(config_name=name, return_hydra_config=True) as make:
            assert make(*overrides).hydra.help.app_name == f"{name}.py"


@pytest.mark.parametrize("option", sorted(DRAFT_PATHS))
def test_draft_options_without_a_path_are_refused(option):
    # The presets leave ``path: null`` (a ``???`` would not replace the schema's default on merge),
    # so the rule is enforced by validate(), which names the key to set.
    cfg = to_serve_config(f"draft={option}", "target.path=/models/target")
    assert cfg.draft.path is None
    with pytest.raises(ConfigError, match="needs a drafter: set draft.path="):
        validate(cfg)


@pytest.mark.parametrize("option", options("sglang"))
def test_sglang_options(option):
    cfg = to_serve_config(f"sglang={option}")
    assert isinstance(cfg.sglang, SGLangConfig)
    assert isinstance(cfg.sglang.extra_args, list)
    if option in ("triton", "triton_bench"):
        assert cfg.sglang.port == 0 and cfg.sglang.attention_backend == "triton"
    if option == "triton_bench":  # triton's settings, graphs for the benchmark's batch sizes only
        assert cfg.sglang.disable_prefill_cuda_graph and cfg.sglang.extra_args == []
        assert cfg.sglang.cuda_graph_bs == [1, 8, 32] and cfg.sglang.cuda_graph_max_bs is None
        assert cfg.sglang.max_running_requests == 32
    if option in ("latency", "throughput"):
        assert cfg.sglang.max_running_requests is not None and cfg.sglang.cuda_graph_max_bs is not None


@pytest.mark.parametrize("option", options("bench"))
def test_bench_options(option):
    cfg = to_serve_config(f"bench={option}", "mode=bench")
    assert isinstance(cfg.bench, BenchConfig)
    assert cfg.mode is Mode.bench
    assert cfg.bench.concurrency and all(isinstance(c, int) for c in cfg.bench.concurrency)
    assert cfg.bench.temperature and all(isinstance(t, float) for t in cfg.bench.temperature)


def test_bench_temperature_is_a_list_and_a_scalar_fails_at_compose():
    cfg = to_serve_config("mode=bench", "bench.temperature=[0,5.5]")
    assert cfg.bench.temperature == [0.0, 5.5]
    with pytest.raises(Exception, match="bench.temperature"):
        to_serve_config("mode=bench", "bench.temperature=0.7")


def test_every_algorithm_composes_with_every_draft():
    with composer(return_hydra_config=True) as make:
        for algorithm in options("algorithm"):
            for draft in options("draft"):
                extra = [f"draft.path={DRAFT_PATHS[draft]}"] if draft in DRAFT_PATHS else []
                composed = make(f"algorithm={algorithm}", f"draft={draft}", *extra)
                assert composed.hydra.runtime.choices.draft == draft
                with open_dict(composed):
                    del composed["hydra"]
                cfg = OmegaConf.to_object(composed)
                assert isinstance(cfg, ServeConfig)
                assert cfg.draft.path == DRAFT_PATHS.get(draft, "builtin:demo")
                assert cfg.algorithm.name == (None if algorithm == "none" else algorithm)


@pytest.mark.parametrize("override", [
    "sglang.tp_sizee=2", "spec.num_stepz=3", "draft.pathh=/x", "target.revison=main", "print_onlyy=true",
])
def test_typo_in_a_key_raises_at_compose_time(override):
    with composer() as make:
        with pytest.raises(ConfigCompositionException):
            make(override)


@pytest.mark.parametrize("override", ["sglang.tp_size=abc", "sglang.port=x", "print_only=maybe", "mode=train"])
def test_wrong_type_raises_at_compose_time(override):
    with composer() as make:
        with pytest.raises(ConfigCompositionException):
            make(override)


def test_unknown_option_raises_at_compose_time():
    with composer() as make:
        with pytest.raises(HydraException):
            make("algorithm=EAGLE4")


def test_typo_in_a_yaml_option_raises_at_compose_time(tmp_path):
    """The YAML options extend the schema: a misspelt key in a preset file fails too."""
    conf = shutil.copytree(CONF, tmp_path / "conf")
    (conf / "sglang" / "typo.yaml").write_text("defaults:\n  - /schema/sglang@_here_\ncuda_graph_max_bss: 8\n")
    with composer(conf) as make:
        make("sglang=default")  # the copy itself composes
        with pytest.raises(ConfigCompositionException):
            make("sglang=typo")


def test_no_bench_setting_names_a_sweep_points_directory():
    # every bench.* setting is shared by a sweep's points; the sweep presets' exclude_keys take them
    # from the schema (hydra.glue's resolver), so a new bench field needs no second list
    import dataclasses

    from automodel_spec.config.schema import SLOConfig

    overrides = ["+sweep=grid", "spec.num_steps=3", "spec.topk=2", "sglang.attention_backend=fa3", "sglang.port=0",
                 "bench.concurrency=[1,8]", "bench.long_prompts=skip", "bench.slo.itl_s=0.1", "bench.name=x"]
    with composer(return_hydra_config=True) as make:
        cfg = make(*overrides)
    excluded = set(cfg.hydra.job.config.override_dirname.exclude_keys)
    assert {f"bench.{f.name}" for f in dataclasses.fields(BenchConfig)} <= excluded
    assert {f"bench.slo.{f.name}" for f in dataclasses.fields(SLOConfig)} <= excluded
    assert {"mode", "sglang.port", "+sweep", "draft.path"} <= excluded  # the YAML's own keys kept
    assert cfg.hydra.job.override_dirname == "sglang.attention_backend=fa3,spec.num_steps=3,spec.topk=2"


@pytest.mark.parametrize("name,where", [("llama8b", "sweeps/llama8b"), ("llama8b/grid", "sweeps/llama8b/grid")])
def test_a_sweep_is_written_below_sweeps_by_its_name(name, where):
    with composer(return_hydra_config=True) as make:
        assert make("+sweep=grid", f"bench.name={name}").hydra.sweep.dir == where


@pytest.mark.parametrize("name", ["..", "../..", "a/../..", "/etc", "a//b", "."])
def test_a_sweep_name_that_leads_out_of_sweeps_is_refused_by_name(name):
    with composer(return_hydra_config=True) as make:
        cfg = make("+sweep=grid", f"bench.name='{name}'")
        with pytest.raises(Exception, match=re.escape(f"bench.name={name!r} must name a directory inside sweeps/")):
            str(cfg.hydra.sweep.dir)
