"""Reading draft weights and EAGLE metadata: safe unpickling, clear errors on damaged files."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from automodel_spec.draft.resolve import resolve_draft
from automodel_spec.draft.weights import load_draft_weights, load_eagle_meta
from automodel_spec.errors import CheckpointError

CANARY_ENV = "AUTOMODEL_SPEC_TEST_CANARY"


def _touch(path: str) -> str:
    """Called by unpickling a ``Canary``: proves the unsafe loader ran code from the file."""
    Path(path).write_text("unpickled")
    return path


class Canary:
    """A custom Python object whose unpickling has a visible side effect."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (_touch, (self.path,))


class TrainingArgs:
    """A plain custom class, as training scripts pickle beside the state dict."""

    def __init__(self):
        self.lr = 1e-4


def _legacy_dir(tmp_path: Path, obj, config: dict) -> Path:
    d = tmp_path / "legacy"
    d.mkdir(exist_ok=True)
    torch.save(obj, d / "draft_model.pt")
    (d / "config.json").write_text(json.dumps(config))
    return d


def _load(d: Path, allow_unsafe_pickle: bool = False) -> dict:
    """The weights of the draft in ``d``, found as the pipeline finds them."""
    return load_draft_weights(resolve_draft(str(d)), allow_unsafe_pickle)


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


# --- legacy draft_model.pt ------------------------------------------------------------------------------


def test_legacy_state_dict_loads_with_weights_only(tmp_path, kit, monkeypatch):
    sd = kit.eagle3_tensors()
    d = _legacy_dir(tmp_path, sd, kit.eagle3_config())
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    r = resolve_draft(str(d))
    got = load_draft_weights(r)

    assert calls == [True]
    _assert_same(got, sd)


def test_legacy_wrapped_state_dict_is_unwrapped(tmp_path, kit):
    sd = kit.eagle3_tensors()
    d = _legacy_dir(tmp_path, {"state_dict": sd}, kit.eagle3_config())
    _assert_same(_load(d), sd)


def test_custom_object_refused_without_running_it_and_loaded_when_allowed(tmp_path, kit, caplog):
    canary = tmp_path / "canary.txt"
    sd = kit.eagle3_tensors()
    d = _legacy_dir(tmp_path, {"state_dict": sd, "extra": Canary(str(canary))}, kit.eagle3_config())

    with pytest.raises(CheckpointError) as exc:
        _load(d)
    assert "draft.allow_unsafe_pickle" in str(exc.value)
    assert "weights_only=True" in str(exc.value)
    assert not canary.exists(), "the refused file's code must not have run"

    got = _load(d, allow_unsafe_pickle=True)
    _assert_same(got, sd)
    assert canary.read_text() == "unpickled"
    warned = [r for r in caplog.records if "allow_unsafe_pickle" in r.getMessage()]
    assert warned and warned[0].levelno == logging.WARNING and warned[0].name == "automodel_spec.draft.weights"


@pytest.mark.parametrize("extra", [TrainingArgs(), argparse.Namespace(lr=1e-4)], ids=["custom-class", "namespace"])
def test_training_checkpoint_with_python_objects(tmp_path, kit, extra):
    sd = kit.eagle3_tensors()
    d = _legacy_dir(tmp_path, {"state_dict": sd, "args": extra}, kit.eagle3_config())
    with pytest.raises(CheckpointError, match="allow_unsafe_pickle"):
        _load(d)
    _assert_same(_load(d, allow_unsafe_pickle=True), sd)


@pytest.mark.parametrize(
    "obj,what",
    [
        (torch.zeros(3), "Tensor"),
        ([torch.zeros(3), torch.ones(2)], "list"),
        ({"fc.weight": torch.zeros(2, 2), "global_step": 3}, "dict"),
        ({"state_dict": {"fc.weight": torch.zeros(2), "step": 1}}, "dict"),
    ],
    ids=["tensor", "list", "dict-with-int", "wrapped-with-int"],
)
def test_non_state_dict_refused(tmp_path, kit, obj, what):
    d = _legacy_dir(tmp_path, obj, kit.eagle3_config())
    with pytest.raises(CheckpointError, match="is not a state dict") as exc:
        _load(d)
    assert what in str(exc.value)


def test_non_state_dict_refused_even_when_unsafe_allowed(tmp_path, kit):
    d = _legacy_dir(tmp_path, {"model": TrainingArgs()}, kit.eagle3_config())
    with pytest.raises(CheckpointError, match="is not a state dict"):
        _load(d, allow_unsafe_pickle=True)


@pytest.mark.parametrize("damage", ["text", "empty", "truncated"])
@pytest.mark.parametrize("allow", [False, True])
def test_damaged_legacy_file_is_a_checkpoint_error(tmp_path, kit, damage, allow):
    d = _legacy_dir(tmp_path, kit.eagle3_tensors(), kit.eagle3_config())
    f = d / "draft_model.pt"
    data = {"text": b"this is not a pickle", "empty": b"", "truncated": f.read_bytes()[:2000]}[damage]
    f.write_bytes(data)
    with pytest.raises(CheckpointError, match="draft_model.pt"):
        _load(d, allow_unsafe_pickle=allow)


# --- safetensors --------------------------------------------------------------------------------------


def test_safetensors_roundtrip_from_run(eagle3_ckpt, kit):
    r = resolve_draft(str(eagle3_ckpt))
    _assert_same(load_draft_weights(r), kit.eagle3_tensors())


def test_sharded_safetensors_load_all_shards(tmp_path, kit):
    sd = kit.eagle3_tensors()
    d = kit.write_hf_dir(tmp_path / "hf", kit.eagle3_config(), sd, shard_bytes=20_000)
    assert (d / "model.safetensors.index.json").is_file()
    _assert_same(_load(d), sd)


def test_repeated_tensor_across_shards_refused(tmp_path, kit):
    d = tmp_path / "hf"
    d.mkdir()
    save_file({"a": torch.zeros(2), "b": torch.ones(2)}, str(d / "s1.safetensors"))
    save_file({"b": torch.ones(2) * 2}, str(d / "s2.safetensors"))
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "s1.safetensors",
                                                                               "b": "s2.safetensors"}}))
    (d / "config.json").write_text(json.dumps(kit.eagle3_config()))
    with pytest.raises(CheckpointError, match="repeats"):
        _load(d)


def test_corrupt_safetensors_is_a_checkpoint_error(eagle3_ckpt):
    f = eagle3_ckpt / "model" / "consolidated" / "model.safetensors"
    f.write_bytes(b"\x00garbage" * 10)
    r = resolve_draft(str(eagle3_ckpt))
    with pytest.raises(CheckpointError, match="damaged") as exc:
        load_draft_weights(r)
    assert str(f.name) in str(exc.value)


def test_truncated_safetensors_is_a_checkpoint_error(eagle3_ckpt):
    f = eagle3_ckpt / "model" / "consolidated" / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    r = resolve_draft(str(eagle3_ckpt))
    with pytest.raises(CheckpointError):
        load_draft_weights(r)


# --- eagle_meta.pt -------------------------------------------------------------------------------------------


def test_meta_none_when_absent():
    assert load_eagle_meta(None) is None


def test_meta_loads_selected_ids(eagle3_ckpt, kit):
    meta = load_eagle_meta(eagle3_ckpt / "eagle_meta.pt")
    assert meta["global_step"] == 100 and meta["epoch"] == 0
    assert torch.equal(meta["selected_token_ids"], kit.selected_ids())
    assert meta["selected_token_mask"].dtype == torch.bool
    assert int(meta["selected_token_mask"].sum()) == kit.DRAFT_VOCAB


def test_meta_with_python_object_refused_without_running_it(tmp_path):
    canary = tmp_path / "canary.txt"
    p = tmp_path / "eagle_meta.pt"
    torch.save({"global_step": 1, "x": Canary(str(canary))}, p)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_eagle_meta(p)
    assert not canary.exists()


def test_meta_that_is_not_a_dict_refused(tmp_path):
    p = tmp_path / "eagle_meta.pt"
    torch.save(torch.arange(4), p)
    with pytest.raises(CheckpointError, match="should hold a dict"):
        load_eagle_meta(p)


@pytest.mark.parametrize("data", [b"", b"not a pickle at all"], ids=["empty", "text"])
def test_damaged_meta_is_a_checkpoint_error(tmp_path, data):
    p = tmp_path / "eagle_meta.pt"
    p.write_bytes(data)  # e.g. a save interrupted before anything was written
    with pytest.raises(CheckpointError, match="eagle_meta.pt"):
        load_eagle_meta(p)
