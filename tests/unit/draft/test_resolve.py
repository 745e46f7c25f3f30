"""The resolver: from whatever draft.path names to the directory SGLang should load."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from automodel_spec.draft.resolve import looks_like_local_path, resolve_draft, weight_files
from automodel_spec.errors import CheckpointError


def _consolidated(ckpt):
    return (ckpt / "model" / "consolidated").resolve()


# --- run directories and LATEST ------------------------------------------------------------------


def test_run_dir_follows_latest_symlink_even_when_not_newest(make_run, tmp_path):
    run = tmp_path / "run"
    old = make_run(run, step=100)
    make_run(run, step=200)  # LATEST -> epoch_0_step_200
    (run / "LATEST").unlink()
    os.symlink(old.name, run / "LATEST")  # the user rolled LATEST back

    r = resolve_draft(str(run))

    assert r.kind == "hf" and r.is_local
    assert r.model_dir == _consolidated(old)
    assert r.checkpoint_dir == old.resolve()
    assert r.meta_path == old.resolve() / "eagle_meta.pt"
    assert any("LATEST" in n and old.name in n for n in r.notes)


def test_latest_as_text_file(make_run, tmp_path):
    run = tmp_path / "run"
    first = make_run(run, step=100)
    make_run(run, step=200)
    (run / "LATEST").unlink()
    (run / "LATEST").write_text(first.name + "\n")

    r = resolve_draft(str(run))

    assert r.model_dir == _consolidated(first)
    assert r.checkpoint_dir == first.resolve()


def test_run_dir_without_latest_takes_newest_numerically_and_says_so(make_run, tmp_path):
    run = tmp_path / "run"
    make_run(run, epoch=0, step=99)
    make_run(run, epoch=0, step=100)  # lexically "100" < "99": must compare numbers
    newest = make_run(run, epoch=1, step=150)
    (run / "LATEST").unlink()

    r = resolve_draft(str(run))

    assert r.checkpoint_dir == newest.resolve()
    assert any("no LATEST" in n and newest.name in n for n in r.notes)


def test_run_dir_without_latest_numeric_step_order(make_run, tmp_path):
    run = tmp_path / "run"
    make_run(run, step=99)
    newest = make_run(run, step=100)
    (run / "LATEST").unlink()
    assert resolve_draft(str(run)).checkpoint_dir == newest.resolve()


def test_dangling_latest_symlink_is_a_clear_error(make_run, tmp_path):
    run = tmp_path / "run"
    ckpt = make_run(run, step=100)
    (run / "LATEST").unlink()
    os.symlink("epoch_0_step_300", run / "LATEST")

    with pytest.raises(CheckpointError) as exc:
        resolve_draft(str(run))
    msg = str(exc.value)
    assert "LATEST" in msg and "epoch_0_step_300" in msg and "does not exist" in msg
    assert ckpt.name in msg  # tells the user what they can point at instead


def test_latest_text_naming_missing_checkpoint_is_an_error(make_run, tmp_path):
    run = tmp_path / "run"
    make_run(run)
    (run / "LATEST").unlink()
    (run / "LATEST").write_text("epoch_9_step_9\n")
    with pytest.raises(CheckpointError, match="epoch_9_step_9"):
        resolve_draft(str(run))


def test_training_output_dir_is_followed_into_its_checkpoints_dir(make_run, tmp_path):
    """Automodel's recipes save to <output_dir>/checkpoints/ with LATEST there."""
    out = tmp_path / "outputs" / "eagle3"
    ckpt = make_run(out / "checkpoints", step=100)
    r = resolve_draft(str(out))
    assert r.checkpoint_dir == ckpt.resolve()
    assert any("checkpoints/" in n for n in r.notes) and any("LATEST" in n for n in r.notes)


def test_automodel_latest_txt_fallback(make_run, tmp_path):
    run = tmp_path / "run"
    first = make_run(run, step=100)
    make_run(run, step=200)
    (run / "LATEST").unlink()
    (run / "LATEST.txt").write_text(first.name)  # what Automodel writes where symlinks fail
    assert resolve_draft(str(run)).checkpoint_dir == first.resolve()


def test_latest_on_an_incomplete_save_falls_back_to_the_newest_complete_one(make_run, tmp_path):
    run = tmp_path / "run"
    whole = make_run(run, step=100)
    cut = make_run(run, step=200)  # LATEST -> step 200
    (cut / ".incomplete").touch()
    r = resolve_draft(str(run))
    assert r.checkpoint_dir == whole.resolve()
    assert any(".incomplete" in n and cut.name in n for n in r.notes)


def test_only_incomplete_checkpoints_is_an_error(make_run, tmp_path):
    run = tmp_path / "run"
    (make_run(run, step=100) / ".incomplete").touch()
    with pytest.raises(CheckpointError, match="every checkpoint .* is marked .incomplete"):
        resolve_draft(str(run))


def test_an_incomplete_checkpoint_named_directly_is_refused(make_run, tmp_path):
    ckpt = make_run(tmp_path / "run", step=100)
    (ckpt / ".incomplete").touch()
    with pytest.raises(CheckpointError, match="save was cut off"):
        resolve_draft(str(ckpt))


# --- pointing inside a checkpoint --------------------------------------------------------------------


@pytest.mark.parametrize("sub", ["", "model", "model/consolidated"])
def test_epoch_dir_model_and_consolidated_resolve_alike(eagle3_ckpt, sub):
    r = resolve_draft(str(eagle3_ckpt / sub) if sub else str(eagle3_ckpt))
    assert r.kind == "hf"
    assert r.model_dir == _consolidated(eagle3_ckpt)
    assert r.checkpoint_dir == eagle3_ckpt.resolve()
    assert r.meta_path == eagle3_ckpt.resolve() / "eagle_meta.pt"


@pytest.mark.parametrize("rel", ["model/consolidated/config.json", "model/consolidated/model.safetensors",
                                 "eagle_meta.pt"])
def test_file_path_inside_checkpoint_resolves_to_its_directory(eagle3_ckpt, rel):
    r = resolve_draft(str(eagle3_ckpt / rel))
    assert r.model_dir == _consolidated(eagle3_ckpt)
    assert r.checkpoint_dir == eagle3_ckpt.resolve()


def test_weights_only_in_model_dir(make_run):
    ckpt = make_run(consolidated=False)
    assert not (ckpt / "model" / "consolidated").exists()
    for p in (ckpt.parent, ckpt, ckpt / "model"):
        r = resolve_draft(str(p))
        assert r.model_dir == (ckpt / "model").resolve()
        assert r.checkpoint_dir == ckpt.resolve()
        assert r.meta_path == ckpt.resolve() / "eagle_meta.pt"


def test_both_model_and_consolidated_prefers_consolidated(eagle3_ckpt, kit):
    kit.write_hf_dir(eagle3_ckpt / "model", kit.eagle3_config(), kit.eagle3_tensors(seed=5))
    r = resolve_draft(str(eagle3_ckpt))
    assert r.model_dir == _consolidated(eagle3_ckpt)
    assert any("consolidated" in n and "both" in n for n in r.notes)


def test_training_shards_only_is_an_error_naming_what_was_found(eagle3_ckpt):
    shutil.rmtree(eagle3_ckpt / "model" / "consolidated")
    with pytest.raises(CheckpointError) as exc:
        resolve_draft(str(eagle3_ckpt.parent))
    msg = str(exc.value)
    assert "__0_0.distcp" in msg and ".hf_metadata/" in msg
    assert "consolidated" in msg and "Training shards" in msg


def test_consolidated_without_weights_is_not_silently_skipped(eagle3_ckpt):
    (eagle3_ckpt / "model" / "consolidated" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no servable weights"):
        resolve_draft(str(eagle3_ckpt))


def test_checkpoint_without_model_dir_is_an_error(eagle3_ckpt):
    shutil.rmtree(eagle3_ckpt / "model")
    with pytest.raises(CheckpointError, match="no model/ directory"):
        resolve_draft(str(eagle3_ckpt))


@pytest.mark.parametrize("meta_name", ["eagle_meta.pt", "eagle3_meta.pt"])
def test_meta_file_found_under_either_name(make_run, meta_name):
    ckpt = make_run(meta_name=meta_name)
    r = resolve_draft(str(ckpt.parent))
    assert r.meta_path == ckpt.resolve() / meta_name


def test_meta_missing_is_none(eagle3_ckpt):
    (eagle3_ckpt / "eagle_meta.pt").unlink()
    assert resolve_draft(str(eagle3_ckpt)).meta_path is None


def test_renamed_checkpoint_dir_is_still_a_checkpoint(eagle3_ckpt, tmp_path):
    best = tmp_path / "best"
    shutil.copytree(eagle3_ckpt, best)
    r = resolve_draft(str(best))
    assert r.model_dir == _consolidated(best) and r.checkpoint_dir == best.resolve()
    assert r.meta_path == best.resolve() / "eagle_meta.pt"


@pytest.mark.parametrize("name", ["final", "best"])
def test_copied_checkpoint_without_meta_resolves_by_its_model_dir(eagle3_ckpt, tmp_path, name):
    """Automodel keeps d2t/t2d in the weights, so a copy without eagle_meta.pt is still a checkpoint."""
    copy = tmp_path / name
    shutil.copytree(eagle3_ckpt, copy)
    (copy / "eagle_meta.pt").unlink()
    for path in (copy, copy / "model"):
        r = resolve_draft(str(path))
        assert r.model_dir == _consolidated(copy) and r.checkpoint_dir == copy.resolve(), path
        assert r.meta_path is None


def test_meta_file_above_a_plain_hf_draft_is_not_used(tmp_path, kit):
    """A meta file two levels up belongs to some other run; d2t must not be rebuilt from it."""
    torch.save({"selected_token_ids": kit.selected_ids()}, tmp_path / "eagle_meta.pt")
    d = kit.write_hf_dir(tmp_path / "drafts" / "mine", kit.eagle3_config(), kit.eagle3_tensors())
    r = resolve_draft(str(d))
    assert r.model_dir == d.resolve() and r.meta_path is None and r.checkpoint_dir is None


def test_relative_and_home_paths(eagle3_ckpt, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    for p in ("run", "./run/", "~/run", "run/LATEST"):
        assert resolve_draft(p).model_dir == _consolidated(eagle3_ckpt), p


# --- sharded safetensors ---------------------------------------------------------------------------------


def test_sharded_safetensors_via_index(tmp_path, kit):
    d = kit.write_hf_dir(tmp_path / "hf", kit.eagle3_config(), kit.eagle3_tensors(), shard_bytes=20_000)
    index = json.loads((d / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and not (d / "model.safetensors").exists()

    r = resolve_draft(str(d))

    assert r.kind == "hf" and r.model_dir == d.resolve()
    assert weight_files(r.model_dir) == [d.resolve() / s for s in shards]
    assert list(r.weight_files) == weight_files(r.model_dir)
    # what decides the export, listed once: config, every shard, the index itself
    assert r.source_files == (d.resolve() / "config.json", *r.weight_files, d.resolve() / "model.safetensors.index.json")


def test_source_files_hold_meta_and_the_recipe_beside_the_checkpoint(eagle3_ckpt):
    (eagle3_ckpt / "config.yaml").write_text("model:\n  aux_layer_ids: [1, 2, 3]\n")
    r = resolve_draft(str(eagle3_ckpt))
    ckpt, model = eagle3_ckpt.resolve(), _consolidated(eagle3_ckpt)
    assert r.source_files == (model / "config.json", model / "model.safetensors", ckpt / "eagle_meta.pt",
                              ckpt / "config.yaml")


def test_legacy_and_hub_source_files(tmp_path, kit):
    d = tmp_path / "legacy"
    d.mkdir()
    torch.save(kit.eagle3_tensors(), d / "draft_model.pt")
    (d / "config.json").write_text(json.dumps(kit.eagle3_config()))
    assert resolve_draft(str(d)).source_files == (d.resolve() / "config.json", d.resolve() / "draft_model.pt")
    assert resolve_draft("org/name").source_files == ()


def test_index_naming_a_missing_shard_is_an_error(tmp_path, kit):
    d = kit.write_hf_dir(tmp_path / "hf", kit.eagle3_config(), kit.eagle3_tensors(), shard_bytes=20_000)
    gone = sorted(set(json.loads((d / "model.safetensors.index.json").read_text())["weight_map"].values()))[-1]
    (d / gone).unlink()
    with pytest.raises(CheckpointError, match=gone):
        resolve_draft(str(d))


def test_index_without_weight_map_is_an_error(tmp_path, kit):
    d = kit.write_hf_dir(tmp_path / "hf", kit.eagle3_config(), kit.eagle3_tensors())
    (d / "model.safetensors.index.json").write_text('{"metadata": {}}')
    with pytest.raises(CheckpointError, match="weight_map"):
        resolve_draft(str(d))


# --- legacy and plain HF directories ---------------------------------------------------------------------


def test_legacy_dir_with_draft_model_pt(tmp_path, kit):
    d = tmp_path / "legacy"
    d.mkdir()
    torch.save(kit.eagle3_tensors(), d / "draft_model.pt")
    (d / "config.json").write_text(json.dumps(kit.eagle3_config()))
    torch.save({"global_step": 1, "epoch": 0}, d / "eagle3_meta.pt")

    r = resolve_draft(str(d))

    assert r.kind == "legacy"
    assert r.model_dir == d.resolve()
    assert r.checkpoint_dir is None
    assert r.meta_path == d.resolve() / "eagle3_meta.pt"


def test_legacy_file_path_resolves_to_its_directory(tmp_path, kit):
    d = tmp_path / "legacy"
    d.mkdir()
    torch.save(kit.eagle3_tensors(), d / "draft_model.pt")
    (d / "config.json").write_text(json.dumps(kit.eagle3_config()))
    r = resolve_draft(str(d / "draft_model.pt"))
    assert r.kind == "legacy" and r.model_dir == d.resolve()


def test_directory_without_config_is_an_error_listing_contents(tmp_path):
    d = tmp_path / "odd"
    d.mkdir()
    (d / "weights.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError) as exc:
        resolve_draft(str(d))
    assert "config.json" in str(exc.value) and "weights.bin" in str(exc.value)


def test_config_without_weights_is_an_error(tmp_path, kit):
    d = tmp_path / "cfgonly"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(kit.eagle3_config()))
    with pytest.raises(CheckpointError, match="draft_model.pt"):
        resolve_draft(str(d))


# --- hub ids and local-looking paths -------------------------------------------------------------------


@pytest.mark.parametrize("hub_id", ["org/name", "meta-llama/Llama-3.1-8B-Instruct", "yuhuili/EAGLE3-LLaMA3.1-Instruct-8B"])
def test_hub_id_passed_through_with_revision(hub_id, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = resolve_draft(hub_id, revision="abc123")
    assert r.kind == "hub" and not r.is_local
    assert r.hub_id == hub_id and r.revision == "abc123"
    assert r.model_dir is None and r.meta_path is None
    assert any("hub id" in n for n in r.notes)


def test_existing_local_dir_wins_over_hub_id(tmp_path, monkeypatch, kit):
    monkeypatch.chdir(tmp_path)
    kit.write_hf_dir(tmp_path / "org" / "name", kit.eagle3_config(), kit.eagle3_tensors())
    r = resolve_draft("org/name")
    assert r.kind == "hf" and r.model_dir == (tmp_path / "org" / "name").resolve()


@pytest.mark.parametrize("path", ["./x", "../x", "/x/y", "~/x", "a/b/c", "justaname", "org/"])
def test_local_looking_missing_paths_are_errors_not_hub_ids(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_draft(path)


@pytest.mark.parametrize("value,local", [("./x", True), ("/x/y", True), ("~/x", True), ("a/b/c", True),
                                         ("org/name", False)])
def test_looks_like_local_path(value, local):
    assert looks_like_local_path(value) is local


# --- SpecForge training checkpoints ---------------------------------------------------------------------

SPECFORGE = Path(__file__).resolve().parents[2] / "fixtures" / "producers" / "specforge"


def test_specforge_run_follows_latest_and_takes_the_config_given():
    config = SPECFORGE / "inputs" / "draft_config.json"
    r = resolve_draft(str(SPECFORGE / "training_run"), config=str(config))
    assert r.kind == "specforge" and r.model_dir.name == "tiny-eagle3-step4"
    assert r.config_file == config.resolve()
    assert any("tiny-eagle3-latest" in n for n in r.notes)


def test_specforge_checkpoint_without_its_config_says_how_to_give_it(monkeypatch):
    from automodel_spec.draft import specforge_checkpoint

    monkeypatch.setattr(specforge_checkpoint, "_recorded_config", lambda step: Path("/gone/draft_config.json"))
    with pytest.raises(CheckpointError) as exc:
        resolve_draft(str(SPECFORGE / "training_run" / "tiny-eagle3-step2"))
    msg = str(exc.value)
    assert "/gone/draft_config.json" in msg and "draft.config=" in msg and "specforge export" in msg


def test_missing_draft_config_file_is_named():
    with pytest.raises(CheckpointError, match="draft.config=/nope.json does not exist"):
        resolve_draft(str(SPECFORGE / "training_run"), config="/nope.json")


def test_draft_config_for_a_draft_that_has_one_is_refused(eagle3_ckpt):
    with pytest.raises(CheckpointError, match="has its own config.json"):
        resolve_draft(str(eagle3_ckpt), config=str(SPECFORGE / "inputs" / "draft_config.json"))
