"""``prepare_run``: which target is served, when one is needed, and '~' in every path read from the config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from automodel_spec.bench.workload import load_prompts
from automodel_spec.config.schema import (
    AlgorithmConfig,
    BenchConfig,
    DraftConfig,
    ServeConfig,
    SpecConfig,
    TargetConfig,
)
from automodel_spec.demo import synthetic
from automodel_spec.demo.pair import demo_pair
from automodel_spec.errors import ConfigError
from automodel_spec.prepare import prepare_run

NONE = AlgorithmConfig(name=None, architecture=None, needs_draft=False, uses_token_map=False)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """``tmp_path`` as HOME, and an empty working directory (nothing may land in a literal '~/')."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("AUTOMODEL_SPEC_CACHE", raising=False)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path


@pytest.fixture
def target(home, kit) -> Path:
    return synthetic.write_target(home / "models" / "target", kit.SHAPE, tokenizer=False)


def test_tilde_is_expanded_in_every_path_read_from_the_config(home, target, eagle3_ckpt):
    assert eagle3_ckpt == home / "run" / "epoch_0_step_100"
    (home / "prompts.jsonl").write_text(json.dumps({"prompt": "hello"}) + "\n")
    cfg = ServeConfig(draft=DraftConfig(path="~/run", export_dir="~/exports/mine"),
                      target=TargetConfig(path="~/models/target"), cache_dir="~/cache",
                      bench=BenchConfig(prompts="~/prompts.jsonl"))
    run = prepare_run(cfg)
    assert run.target == str(target)  # what SGLang gets as --model-path: no shell expands '~' on the way
    assert run.export.path == home / "exports" / "mine" and (run.export.path / "config.json").is_file()
    assert run.draft.path == str(home / "exports" / "mine")
    assert (home / "cache").is_dir()  # digests and locks
    assert any("draft checked against the target's config.json" in n for n in run.notes)
    assert [p.text for p in load_prompts(cfg.bench.prompts)] == ["hello"]
    assert list((home / "cwd").iterdir()) == []


def test_an_export_needs_no_target(home, eagle3_ckpt):
    cfg = ServeConfig(draft=DraftConfig(path=str(eagle3_ckpt)), cache_dir=str(home / "cache"))
    with pytest.raises(ConfigError, match="target.path is unset"):
        prepare_run(cfg, dry_run=True)
    run = prepare_run(cfg, need_target=False)
    assert run.target is None and run.export is not None and (run.export.path / "config.json").is_file()
    assert "no target.path given: draft/target compatibility not checked" in run.notes
    assert not (home / "cache" / "demo").exists()


def test_the_demo_pair_is_used_only_for_the_demo(home, target):
    # algorithm=none with the default draft (the demo's) and a target of your own: that target, no demo
    cfg = ServeConfig(algorithm=NONE, draft=DraftConfig(path="builtin:demo"),
                      target=TargetConfig(path=str(target)), cache_dir=str(home / "cache"))
    run = prepare_run(cfg, dry_run=True)
    assert run.target == str(target) and run.draft is None and not run.pending
    # unset target with the demo draft: the demo pair (not built under dry_run)
    cfg = ServeConfig(draft=DraftConfig(path="builtin:demo"), cache_dir=str(home / "cache"))
    run = prepare_run(cfg, dry_run=True)
    assert run.target == str(demo_pair(home / "cache", cfg.algorithm.architecture).target) and run.pending
    assert not (home / "cache").exists()


@pytest.mark.parametrize("given,asked", [(SpecConfig(3, 1), SpecConfig(3, 1, 4)), (SpecConfig(3, 4), SpecConfig(3, 4, 13)),
                                         (SpecConfig(), SpecConfig())])
def test_the_run_carries_the_setting_the_server_is_asked_for(home, given, asked):
    # resolved once here, even when print_only stops before the demo pair exists; the config is left as given
    cfg = ServeConfig(draft=DraftConfig(path="builtin:demo"), cache_dir=str(home / "cache"), spec=given)
    run = prepare_run(cfg, dry_run=True)
    assert run.spec == asked and run.pending
    assert cfg.spec.num_draft_tokens is None
