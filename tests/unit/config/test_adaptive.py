"""SGLang's adaptive mode as a setting: its config file, its rules, the flags and the version it needs."""

from __future__ import annotations

import json

import pytest

from automodel_spec.config.adaptive import (
    read_adaptive_config,
    required_sglang,
    startup_crash,
    write_adaptive_config,
)
from automodel_spec.config.rules import validate
from automodel_spec.config.schema import (
    AlgorithmConfig,
    DraftConfig,
    ServeConfig,
    SGLangConfig,
    SpecConfig,
    TargetConfig,
)
from automodel_spec.config.spec_rules import resolve_spec, spec_errors
from automodel_spec.errors import ConfigError
from automodel_spec.launch import required_sglang as run_requirement
from automodel_spec.prepare import PreparedRun
from automodel_spec.serve.command import build_launch_command


def cfg(tmp_path, **spec) -> ServeConfig:
    return ServeConfig(draft=DraftConfig(path=str(tmp_path)), target=TargetConfig(path="/m"), spec=SpecConfig(**spec))


def test_written_config_reads_back_and_fixes_steps_per_batch_size(tmp_path):
    path = write_adaptive_config(tmp_path / "a.json", {1: 7, 8: 1}, warmup_batches=10)
    assert json.loads(path.read_text()) == {"warmup_batches": 10, "1": {"candidate_steps": [7]},
                                            "8": {"candidate_steps": [1]}}
    assert read_adaptive_config(str(path)) == {1: [7], 8: [1]}
    with pytest.raises(ValueError, match="unknown adaptive knob"):
        write_adaptive_config(tmp_path / "b.json", {1: 3}, speed=2)


@pytest.mark.parametrize("content, message", [
    ("{", "is not JSON"),
    ("[1]", "must hold a JSON object keyed by batch size"),
    ('{"candidate_steps": [1, 3]}', "flat format of SGLang 0.5.11-0.5.12"),
    ('{"1": {"candidate_steps": []}}', "batch size 1: candidate_steps must be a non-empty list"),
    ('{"1": {"candidate_steps": [1, -1]}}', "integers >= 0"),
])
def test_bad_configs_are_refused_with_the_reason(tmp_path, content, message):
    (tmp_path / "c.json").write_text(content)
    with pytest.raises(ConfigError, match=message):
        read_adaptive_config(str(tmp_path / "c.json"))
    with pytest.raises(ConfigError, match="cannot read it"):
        read_adaptive_config(str(tmp_path / "missing.json"))


def test_rules_of_adaptive_mode(tmp_path):
    assert spec_errors(SpecConfig(adaptive=True)) == []
    assert spec_errors(SpecConfig(adaptive=True, num_steps=3)) == []
    assert "chains only (topk 1)" in spec_errors(SpecConfig(adaptive=True, num_steps=3, topk=4))[0]
    assert "means 4 draft tokens" in spec_errors(SpecConfig(adaptive=True, num_steps=3, num_draft_tokens=8))[0]
    assert "spec.adaptive is false" in spec_errors(SpecConfig(adaptive_config="/x.json"))[0]
    path = write_adaptive_config(tmp_path / "a.json", {1: 7, 8: 1})
    validate(cfg(tmp_path, adaptive=True, adaptive_config=str(path), num_steps=7))
    with pytest.raises(ConfigError, match=r"spec.num_steps=3 is not one of the candidate steps \[1, 7\]"):
        validate(cfg(tmp_path, adaptive=True, adaptive_config=str(path), num_steps=3))
    with pytest.raises(ConfigError, match="works with algorithm=EAGLE or EAGLE3 only"):
        validate(ServeConfig(algorithm=AlgorithmConfig(name="NEXTN", architecture=None, needs_draft=False),
                             target=TargetConfig(path="/m"), spec=SpecConfig(adaptive=True)))
    with pytest.raises(ConfigError, match="algorithm=none serves without speculation"):
        validate(ServeConfig(algorithm=AlgorithmConfig(name=None, architecture=None, needs_draft=False),
                             target=TargetConfig(path="/m"), spec=SpecConfig(adaptive=True)))


def test_flags_and_the_sglang_version_it_needs(tmp_path):
    path = write_adaptive_config(tmp_path / "a.json", {1: 7, 8: 0})
    spec = SpecConfig(adaptive=True, adaptive_config=str(path), num_steps=7)
    argv = build_launch_command("/m", SGLangConfig(), AlgorithmConfig(), resolve_spec(spec), None, release="0.5.17")
    assert argv[argv.index("--speculative-num-steps"):] == [
        "--speculative-num-steps", "7", "--speculative-eagle-topk", "1", "--speculative-num-draft-tokens", "8",
        "--speculative-adaptive", "--speculative-adaptive-config", str(path.resolve())]
    assert required_sglang(False, None) is None
    assert required_sglang(True, None) == "0.5.11"
    assert required_sglang(True, {1: [7], 8: [1]}) == "0.5.13"
    assert required_sglang(True, {1: [7], 8: [0]}) == "0.5.14"  # no speculation at batch 8
    c = cfg(tmp_path, **vars(spec))
    version, needs = run_requirement(c.algorithm, PreparedRun(target="/m", spec=resolve_spec(c.spec)))
    assert version == "0.5.14" and needs.startswith("spec.adaptive with spec.adaptive_config=")


def test_a_start_below_the_largest_candidate_is_refused_where_sglang_would_die_at_startup():
    # 0.5.15-0.5.18 size the CUDA graphs' shared logits buffer for the starting steps (read in each wheel)
    problem = startup_crash(3, None, "0.5.17", cuda_graphs=True)
    assert problem.startswith("spec.adaptive=true with spec.num_steps=3 would die at startup on SGLang 0.5.17")
    assert "Start at the largest candidate (spec.num_steps=7)" in problem
    assert "SGLang's own starting steps" in startup_crash(None, None, "0.5.15", cuda_graphs=True)
    assert "spec.num_steps=3)" in startup_crash(1, {1: [1, 3], 8: [0]}, "0.5.18", cuda_graphs=True)
    assert startup_crash(7, None, "0.5.17", cuda_graphs=True) is None  # the buffer fits every candidate
    assert startup_crash(3, {1: [1, 3]}, "0.5.16", cuda_graphs=True) is None
    assert startup_crash(3, None, "0.5.17", cuda_graphs=False) is None  # no graphs, no shared buffer
    assert startup_crash(3, None, "0.5.14", cuda_graphs=True) is None  # before the shared buffer
    assert startup_crash(3, None, "0.5.19", cuda_graphs=True) is None  # sized for every candidate
    assert startup_crash(3, None, "0.5.17.post1", cuda_graphs=True) is not None
