"""The exporter: a servable copy beside (never over) the user's checkpoint, atomic and reusable."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors import safe_open

from automodel_spec.draft.resolve import resolve_draft
from automodel_spec.errors import CheckpointError
from automodel_spec.export.exporter import (
    MANIFEST,
    TOKEN_MAP,
    ExportWriteError,
    export_key,
    planned_export_dir,
)
from automodel_spec.export.sealed_dir import STALE_TEMP_S, WRITER
from automodel_spec.io.file_digest import file_digest, file_stamp
from automodel_spec.prepare import prepare_export

EAGLE3 = "LlamaForCausalLMEagle3"


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def _mtimes(d: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in d.iterdir()} | {".": d.stat().st_mtime_ns}


def _exports(cache: Path) -> list[str]:
    """Export directories (and any leftover temp dir), not the lock files kept beside them."""
    return sorted(p.name for p in (cache / "exports").iterdir() if not p.name.endswith(".lock"))


def test_export_writes_servable_files(eagle3_ckpt, cache, kit):
    r = resolve_draft(str(eagle3_ckpt.parent))
    res = prepare_export(r, EAGLE3, cache_dir=cache)

    assert not res.reused
    assert res.path.parent == cache / "exports" and res.path.name.startswith(EAGLE3 + "-")
    assert sorted(p.name for p in res.path.iterdir()) == sorted(["config.json", "model.safetensors", MANIFEST])
    assert res.token_map is None

    cfg = json.loads((res.path / "config.json").read_text())
    assert cfg == res.config
    assert cfg["architectures"] == [EAGLE3] and cfg["num_hidden_layers"] == 1
    with safe_open(str(res.path / "model.safetensors"), "pt") as f:
        names = set(f.keys())
        assert f.metadata() == {"format": "pt"}
        d2t = f.get_tensor("d2t")
    layer = {f"midlayer.{p}.weight" for p in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
        "mlp.up_proj", "mlp.down_proj", "input_layernorm", "hidden_norm", "post_attention_layernorm")}
    assert names == layer | {"fc.weight", "norm.weight", "lm_head.weight", "d2t", "t2d"}
    assert torch.equal(d2t + torch.arange(kit.DRAFT_VOCAB), kit.selected_ids())

    manifest = json.loads((res.path / MANIFEST).read_text())
    assert manifest["key"] == export_key(r, EAGLE3, None)
    assert manifest["source"] == str(r.model_dir) and manifest["meta"] == str(r.meta_path)
    assert manifest["architecture"] == EAGLE3 and manifest["notes"] == res.notes
    assert manifest["min_sglang"] == res.min_sglang == "0.5.9"


def test_export_roundtrips_through_the_resolver(eagle3_ckpt, cache):
    """The export is itself a plain HF directory that the resolver (and SGLang) accepts as is."""
    res = prepare_export(resolve_draft(str(eagle3_ckpt)), EAGLE3, cache_dir=cache)
    again = resolve_draft(str(res.path))
    assert again.kind == "hf" and again.model_dir == res.path.resolve()


def test_users_checkpoint_is_untouched(eagle3_ckpt, cache, kit):
    run = eagle3_ckpt.parent
    before = kit.tree_digest(run)
    prepare_export(resolve_draft(str(run)), EAGLE3, cache_dir=cache, aux_layer_ids=[2, 4, 6])
    assert kit.tree_digest(run) == before


def test_second_export_reuses_and_rewrites_nothing(eagle3_ckpt, cache):
    r = resolve_draft(str(eagle3_ckpt.parent))
    first = prepare_export(r, EAGLE3, cache_dir=cache)
    stamps = _mtimes(first.path)
    time.sleep(0.01)

    second = prepare_export(resolve_draft(str(eagle3_ckpt)), EAGLE3, cache_dir=cache)

    assert second.reused
    assert second.path == first.path and second.config == first.config and second.notes == first.notes
    assert _mtimes(first.path) == stamps
    assert _exports(cache) == [first.path.name]


def test_different_aux_override_gives_a_different_export(eagle3_ckpt, cache):
    r = resolve_draft(str(eagle3_ckpt))
    a = prepare_export(r, EAGLE3, cache_dir=cache)
    b = prepare_export(r, EAGLE3, cache_dir=cache, aux_layer_ids=[2, 4, 6])
    assert a.path != b.path and not b.reused
    assert "eagle_config" not in a.config
    assert b.config["eagle_config"]["eagle_aux_hidden_state_layer_ids"] == [2, 4, 6]
    assert json.loads((a.path / "config.json").read_text()) == a.config  # a untouched by b
    assert len(_exports(cache)) == 2


def test_changed_checkpoint_gives_a_different_export(make_run, cache, tmp_path, kit):
    a = prepare_export(resolve_draft(str(make_run(tmp_path / "a"))), EAGLE3, cache_dir=cache)
    b = prepare_export(resolve_draft(str(make_run(tmp_path / "b", tensors=kit.eagle3_tensors(seed=1)))), EAGLE3,
                     cache_dir=cache)
    assert a.path != b.path


def test_dry_run_writes_nothing(eagle3_ckpt, cache, tmp_path, kit):
    before = kit.tree_digest(tmp_path)
    r = resolve_draft(str(eagle3_ckpt))

    dry = prepare_export(r, EAGLE3, cache_dir=cache, dry_run=True)

    assert not cache.exists()
    assert kit.tree_digest(tmp_path) == before
    assert dry.config["architectures"] == [EAGLE3] and dry.notes
    real = prepare_export(r, EAGLE3, cache_dir=cache)
    assert real.path == dry.path and real.config == dry.config and not real.reused


def test_dry_run_with_export_dir_creates_nothing(eagle3_ckpt, cache, tmp_path):
    out = tmp_path / "out" / "draft"
    res = prepare_export(resolve_draft(str(eagle3_ckpt)), EAGLE3, cache_dir=cache, export_dir=str(out), dry_run=True)
    assert res.path == out.resolve()
    assert not (tmp_path / "out").exists() and not cache.exists()


def test_dry_run_still_refuses_a_broken_draft(make_run, cache, kit):
    src = kit.eagle3_tensors()
    del src["model.norm.weight"]
    with pytest.raises(CheckpointError, match="norm.weight"):
        prepare_export(resolve_draft(str(make_run(tensors=src))), EAGLE3, cache_dir=cache, dry_run=True)
    assert not cache.exists()


def test_broken_draft_leaves_no_export(make_run, cache, kit):
    src = kit.eagle3_tensors()
    del src["model.norm.weight"]
    with pytest.raises(CheckpointError):
        prepare_export(resolve_draft(str(make_run(tensors=src))), EAGLE3, cache_dir=cache)
    assert not (cache / "exports").exists() or _exports(cache) == []


def test_explicit_export_dir(eagle3_ckpt, cache, tmp_path):
    out = tmp_path / "mine"
    res = prepare_export(resolve_draft(str(eagle3_ckpt)), EAGLE3, cache_dir=cache, export_dir=str(out))
    assert res.path == out.resolve() and (out / "model.safetensors").is_file()
    assert not (cache / "exports").exists()
    assert prepare_export(resolve_draft(str(eagle3_ckpt)), EAGLE3, cache_dir=cache, export_dir=str(out)).reused


def test_explicit_empty_export_dir_is_used(eagle3_ckpt, cache, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    res = prepare_export(resolve_draft(str(eagle3_ckpt)), EAGLE3, cache_dir=cache, export_dir=str(out))
    assert (res.path / MANIFEST).is_file() and res.path == out.resolve()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_export_dir_with_foreign_files_refused(eagle3_ckpt, cache, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not an export of this project"):
        prepare_export(resolve_draft(str(eagle3_ckpt)), EAGLE3, cache_dir=cache, export_dir=str(out))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"


def test_export_dir_holding_another_export_refused(make_run, eagle3_ckpt, cache, tmp_path, kit):
    out = tmp_path / "shared_out"
    prepare_export(resolve_draft(str(eagle3_ckpt)), EAGLE3, cache_dir=cache, export_dir=str(out))
    stamps = _mtimes(out)
    other = make_run(tmp_path / "other", tensors=kit.eagle3_tensors(seed=3))
    with pytest.raises(CheckpointError, match="different draft or options"):
        prepare_export(resolve_draft(str(other)), EAGLE3, cache_dir=cache, export_dir=str(out))
    assert _mtimes(out) == stamps


def test_failure_mid_write_leaves_nothing_behind(eagle3_ckpt, cache, monkeypatch):
    r = resolve_draft(str(eagle3_ckpt))

    def boom(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(ExportWriteError, match=r"cannot write the export under .*exports: Input/output error"):
        prepare_export(r, EAGLE3, cache_dir=cache)
    assert _exports(cache) == []  # neither the final dir nor a .tmp- dir

    monkeypatch.undo()
    res = prepare_export(r, EAGLE3, cache_dir=cache)
    assert not res.reused and _exports(cache) == [res.path.name]


def test_failure_after_weights_written_leaves_nothing_behind(eagle3_ckpt, cache, monkeypatch):
    """The manifest is written last; a failure while writing it must not leave a half export."""
    import automodel_spec.export.exporter as export_mod

    real_dumps = json.dumps

    def failing_dumps(obj, *args, **kwargs):
        if isinstance(obj, dict) and "key" in obj:
            raise KeyboardInterrupt  # even a Ctrl-C cleans up
        return real_dumps(obj, *args, **kwargs)

    monkeypatch.setattr(export_mod.json, "dumps", failing_dumps)
    with pytest.raises(KeyboardInterrupt):
        prepare_export(resolve_draft(str(eagle3_ckpt)), EAGLE3, cache_dir=cache)
    assert _exports(cache) == []


def test_eagle_export_writes_token_map(eagle_ckpt, cache, kit):
    res = prepare_export(resolve_draft(str(eagle_ckpt)), kit.EAGLE_ARCH, cache_dir=cache)
    assert res.token_map == res.path / TOKEN_MAP
    ids = torch.load(res.token_map, weights_only=True)
    assert ids.dtype == torch.int64 and ids.dim() == 1 and torch.equal(ids, kit.selected_ids())
    assert res.config["hot_vocab_size"] == kit.DRAFT_VOCAB
    with safe_open(str(res.path / "model.safetensors"), "pt") as f:
        assert "fc.bias" in set(f.keys()) and not any(k.startswith("model.") for k in f.keys())
    again = prepare_export(resolve_draft(str(eagle_ckpt)), kit.EAGLE_ARCH, cache_dir=cache)
    assert again.reused and again.token_map == res.token_map


def test_legacy_export(tmp_path, cache, kit):
    d = tmp_path / "legacy"
    d.mkdir()
    torch.save(kit.eagle3_tensors(), d / "draft_model.pt")
    (d / "config.json").write_text(json.dumps(kit.eagle3_config()))
    torch.save({"selected_token_ids": kit.selected_ids()}, d / "eagle3_meta.pt")
    res = prepare_export(resolve_draft(str(d)), EAGLE3, cache_dir=cache)
    assert (res.path / "model.safetensors").is_file() and not (res.path / "draft_model.pt").exists()
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "draft_model.pt", "eagle3_meta.pt"]


def test_cache_dir_from_environment(eagle3_ckpt, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOMODEL_SPEC_CACHE", str(tmp_path / "envcache"))
    res = prepare_export(resolve_draft(str(eagle3_ckpt)), EAGLE3)
    assert res.path.parent == tmp_path / "envcache" / "exports"


def test_planned_dir_matches_export(eagle3_ckpt, cache):
    r = resolve_draft(str(eagle3_ckpt))
    planned, key = planned_export_dir(r, EAGLE3, None, None, cache)
    assert prepare_export(r, EAGLE3, cache_dir=cache).path == planned
    assert planned.name.endswith(key)


_CONCURRENT = textwrap.dedent("""
    import json, pathlib, sys, time
    import automodel_spec.prepare as prep
    from automodel_spec.draft.resolve import resolve_draft

    draft, cache, ready, go = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]), pathlib.Path(sys.argv[4])
    real_plan = prep.plan_export

    def slow_plan(*args, **kwargs):  # widen the window in which the other job could interfere
        time.sleep(0.5)
        return real_plan(*args, **kwargs)

    prep.plan_export = slow_plan
    resolved = resolve_draft(draft)
    ready.write_text("ready")
    deadline = time.time() + 60
    while not go.exists() and time.time() < deadline:
        time.sleep(0.005)
    res = prep.prepare_export(resolved, "LlamaForCausalLMEagle3", cache_dir=cache)
    print(json.dumps({"path": str(res.path), "reused": res.reused}))
""")


def test_concurrent_exports_make_one_complete_directory(eagle3_ckpt, cache, tmp_path):
    go = tmp_path / "go"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = []
    for i in range(2):
        ready = tmp_path / f"ready{i}"
        procs.append((ready, subprocess.Popen(
            [sys.executable, "-c", _CONCURRENT, str(eagle3_ckpt.parent), str(cache), str(ready), str(go)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)))
    try:
        deadline = time.time() + 60
        while not all(ready.exists() for ready, _ in procs):
            assert time.time() < deadline, "workers did not start"
            assert all(p.poll() is None for _, p in procs), [p.communicate() for _, p in procs]
            time.sleep(0.01)
        go.write_text("go")
        results = []
        for _, p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for _, p in procs:
            if p.poll() is None:
                p.kill()

    assert results[0]["path"] == results[1]["path"]
    assert sorted(r["reused"] for r in results) == [False, True]  # one wrote, the other waited and reused
    final = Path(results[0]["path"])
    assert _exports(cache) == [final.name]  # no temporary directories left behind
    assert sorted(p.name for p in final.iterdir()) == sorted(["config.json", "model.safetensors", MANIFEST])
    assert json.loads((final / MANIFEST).read_text())["key"]
    with safe_open(str(final / "model.safetensors"), "pt") as f:
        assert "fc.weight" in set(f.keys())


def test_export_dir_that_is_a_file_refused(eagle3_ckpt, cache, tmp_path):
    out = tmp_path / "draft.safetensors"
    out.write_bytes(b"user data")
    with pytest.raises(CheckpointError, match="not an export of this project"):
        prepare_export(resolve_draft(str(eagle3_ckpt)), EAGLE3, cache_dir=cache, export_dir=str(out))
    assert out.read_bytes() == b"user data"


def test_draft_that_does_not_fit_its_target_is_refused_before_anything_is_written(eagle3_ckpt, cache, kit):
    from automodel_spec.demo.synthetic import llama_config

    before = kit.tree_digest(eagle3_ckpt)
    target = llama_config(kit.SHAPE, hidden_size=2 * kit.SHAPE.hidden_size)
    with pytest.raises(CheckpointError, match="hidden_size=128"):
        prepare_export(resolve_draft(str(eagle3_ckpt)), EAGLE3, cache_dir=cache, target_config=target)
    assert not (cache / "exports").exists() or _exports(cache) == []
    assert kit.tree_digest(eagle3_ckpt) == before


def test_serving_dtype_is_part_of_the_key(eagle3_ckpt, cache):
    r = resolve_draft(str(eagle3_ckpt))
    bf16 = prepare_export(r, EAGLE3, cache_dir=cache, serving_dtype=("bfloat16", "test"))
    fp16 = prepare_export(r, EAGLE3, cache_dir=cache, serving_dtype=("float16", "test"))
    assert bf16.path != fp16.path
    assert bf16.config["torch_dtype"] == "bfloat16" and fp16.config["torch_dtype"] == "float16"
    with safe_open(str(fp16.path / "model.safetensors"), "pt") as f:
        assert f.get_tensor("fc.weight").dtype == torch.float16


# --- cache integrity: a manifest of sizes and digests, checked on reuse --------------------------------


def test_manifest_records_each_file_size_digest_and_stamp(eagle3_ckpt, cache):
    res = prepare_export(resolve_draft(str(eagle3_ckpt)), EAGLE3, cache_dir=cache)
    files = json.loads((res.path / MANIFEST).read_text())["files"]
    assert sorted(files) == ["config.json", "model.safetensors"]
    for name, rec in files.items():
        f = res.path / name
        assert rec["size"] == f.stat().st_size and rec["digest"] == file_digest(f)
        assert rec["stamp"] == file_stamp(f)  # untouched since it was written: reuse reads no byte of it


@pytest.mark.parametrize(("damage", "expected"), [
    (lambda f: f.write_bytes(f.read_bytes()[:-100]), "model.safetensors changed since it was written"),
    (lambda f: f.unlink(), "model.safetensors was deleted since it was written"),
    (lambda f: f.write_bytes(bytes(f.stat().st_size)), "model.safetensors changed since it was written"),
], ids=["truncated", "deleted", "same-size-rewrite"])
def test_damaged_weights_are_rebuilt_and_the_note_says_so(eagle3_ckpt, cache, damage, expected):
    r = resolve_draft(str(eagle3_ckpt))
    first = prepare_export(r, EAGLE3, cache_dir=cache)
    good = (first.path / "model.safetensors").read_bytes()
    damage(first.path / "model.safetensors")

    again = prepare_export(r, EAGLE3, cache_dir=cache)

    assert not again.reused and again.path == first.path
    assert again.notes[0].startswith(f"rebuilt: {expected}"), again.notes
    assert (again.path / "model.safetensors").read_bytes() == good
    assert _exports(cache) == [first.path.name]  # the damaged copy is gone, no temp dir left
    assert prepare_export(r, EAGLE3, cache_dir=cache).reused


def test_edited_config_is_rebuilt(eagle3_ckpt, cache):
    r = resolve_draft(str(eagle3_ckpt))
    first = prepare_export(r, EAGLE3, cache_dir=cache)
    cfg = first.path / "config.json"
    cfg.write_text(cfg.read_text().replace('"num_hidden_layers": 1', '"num_hidden_layers": 9'))
    again = prepare_export(r, EAGLE3, cache_dir=cache)
    assert again.notes[0].startswith("rebuilt: config.json changed since it was written")
    assert again.config["num_hidden_layers"] == 1


def test_touched_but_identical_files_are_reused_after_one_digest(eagle3_ckpt, cache):
    """A copied or restored cache (new stat, same bytes) is checked by digest once, then by stat."""
    r = resolve_draft(str(eagle3_ckpt))
    first = prepare_export(r, EAGLE3, cache_dir=cache)
    weights = first.path / "model.safetensors"
    os.utime(weights, ns=(1, 1))
    assert prepare_export(r, EAGLE3, cache_dir=cache).reused
    assert prepare_export(r, EAGLE3, cache_dir=cache).reused


@pytest.mark.parametrize("content", ["{ half", "[1, 2]", None], ids=["not-json", "not-object", "missing"])
def test_damaged_cache_manifest_is_rebuilt_without_blaming_export_dir(eagle3_ckpt, cache, content):
    r = resolve_draft(str(eagle3_ckpt))
    first = prepare_export(r, EAGLE3, cache_dir=cache)
    if content is None:
        (first.path / MANIFEST).unlink()
    else:
        (first.path / MANIFEST).write_text(content)

    again = prepare_export(r, EAGLE3, cache_dir=cache)

    assert not again.reused and "export_dir" not in " ".join(again.notes)
    assert again.notes[0].startswith(f"rebuilt: its manifest {MANIFEST} ")
    assert prepare_export(r, EAGLE3, cache_dir=cache).reused


def test_manifest_without_digests_from_an_older_version_is_rebuilt(eagle3_ckpt, cache):
    r = resolve_draft(str(eagle3_ckpt))
    first = prepare_export(r, EAGLE3, cache_dir=cache)
    manifest = json.loads((first.path / MANIFEST).read_text())
    del manifest["files"]
    (first.path / MANIFEST).write_text(json.dumps(manifest))
    again = prepare_export(r, EAGLE3, cache_dir=cache)
    assert again.notes[0] == ("rebuilt: its manifest lists no file sizes and digests (written by an older "
                              "automodel-spec)")


def test_damaged_export_in_export_dir_is_rebuilt_but_user_files_never_touched(eagle3_ckpt, cache, tmp_path):
    r = resolve_draft(str(eagle3_ckpt))
    out = tmp_path / "out"
    prepare_export(r, EAGLE3, cache_dir=cache, export_dir=str(out))
    (out / "model.safetensors").write_bytes(b"x")
    again = prepare_export(r, EAGLE3, cache_dir=cache, export_dir=str(out))
    assert again.notes[0].startswith("rebuilt: model.safetensors changed")

    (out / MANIFEST).write_text("{ half")
    (out / "notes.txt").write_text("the user's")  # not a file an export holds: refuse, delete nothing
    with pytest.raises(CheckpointError, match="not an export of this project"):
        prepare_export(r, EAGLE3, cache_dir=cache, export_dir=str(out))
    assert (out / "notes.txt").read_text() == "the user's"


def test_dry_run_says_a_damaged_export_would_be_rebuilt(eagle3_ckpt, cache):
    r = resolve_draft(str(eagle3_ckpt))
    first = prepare_export(r, EAGLE3, cache_dir=cache)
    (first.path / "model.safetensors").unlink()
    dry = prepare_export(r, EAGLE3, cache_dir=cache, dry_run=True)
    assert dry.notes[0] == "would be rebuilt: model.safetensors was deleted since it was written"
    assert not (first.path / "model.safetensors").exists()  # still writes nothing


# --- leftovers of killed exports ---------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _leftover(cache: Path, name: str, pid: int | None, age_s: float = 0.0) -> Path:
    d = cache / "exports" / (f".{name}.tmp-{pid}-abcd1234" if pid is not None else f".{name}.tmp-abcd1234")
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(bytes(1000))
    if age_s:
        os.utime(d, (time.time() - age_s, time.time() - age_s))
    return d


def test_temp_dirs_of_dead_writers_are_removed_by_the_next_run(eagle3_ckpt, cache):
    dead = _leftover(cache, "LlamaForCausalLMEagle3-0123", _dead_pid())
    live = _leftover(cache, "LlamaForCausalLMEagle3-4567", os.getpid())  # a writer still at work
    legacy_new = _leftover(cache, "LlamaForCausalLMEagle3-89ab", None)  # no pid: only age tells
    legacy_old = _leftover(cache, "LlamaForCausalLMEagle3-cdef", None, age_s=STALE_TEMP_S + 60)

    res = prepare_export(resolve_draft(str(eagle3_ckpt)), EAGLE3, cache_dir=cache)

    assert not dead.exists() and not legacy_old.exists()
    assert live.exists() and legacy_new.exists()
    assert any(n.startswith("removed 2 unfinished export(s) left by interrupted runs") for n in res.notes)


def test_a_reused_export_still_clears_dead_temp_dirs(eagle3_ckpt, cache):
    r = resolve_draft(str(eagle3_ckpt))
    prepare_export(r, EAGLE3, cache_dir=cache)
    dead = _leftover(cache, "LlamaForCausalLMEagle3-0123", _dead_pid())
    res = prepare_export(r, EAGLE3, cache_dir=cache)
    assert res.reused and not dead.exists()


def test_temp_dir_of_a_reused_pid_is_removed(eagle3_ckpt, cache):
    """The pid is alive, but it is another process than the writer (its start time differs)."""
    d = _leftover(cache, "LlamaForCausalLMEagle3-0123", os.getpid())
    (d / WRITER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "start": -1}))
    prepare_export(resolve_draft(str(eagle3_ckpt)), EAGLE3, cache_dir=cache)
    assert not d.exists()


def test_temp_dir_of_a_writer_on_another_host_is_kept_until_stale(eagle3_ckpt, cache):
    d = _leftover(cache, "LlamaForCausalLMEagle3-0123", _dead_pid())
    (d / WRITER).write_text(json.dumps({"pid": 1, "host": "another-host.invalid", "start": 1}))
    prepare_export(resolve_draft(str(eagle3_ckpt)), EAGLE3, cache_dir=cache)
    assert d.exists()


def test_files_that_only_look_like_temp_dirs_are_left_alone(eagle3_ckpt, cache):
    other = cache / "exports" / ".notes.tmp-backup"
    other.mkdir(parents=True)
    (other / "keep").write_text("x")
    os.utime(other, (1, 1))
    prepare_export(resolve_draft(str(eagle3_ckpt)), EAGLE3, cache_dir=cache)
    assert (other / "keep").exists()


# --- where the export cannot be written ------------------------------------------------------------


def test_unwritable_cache_fails_naming_the_directory(eagle3_ckpt, tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache should be")
    with pytest.raises(ExportWriteError, match=rf"cannot write the export under {blocker}.*set cache_dir=DIR"):
        prepare_export(resolve_draft(str(eagle3_ckpt)), EAGLE3, cache_dir=blocker)


def test_export_dir_works_with_an_unwritable_cache(eagle3_ckpt, tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache should be")
    out = tmp_path / "out" / "eagle3"
    r = resolve_draft(str(eagle3_ckpt))

    res = prepare_export(r, EAGLE3, cache_dir=blocker, export_dir=str(out))

    assert not res.reused and (out / MANIFEST).is_file()
    assert any("the export lock is kept beside the export" in n for n in res.notes)
    assert (out.parent / ".eagle3.lock").exists()
    assert prepare_export(r, EAGLE3, cache_dir=blocker, export_dir=str(out)).reused


def test_dry_run_says_when_the_cache_cannot_be_written(eagle3_ckpt, tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("")
    dry = prepare_export(resolve_draft(str(eagle3_ckpt)), EAGLE3, cache_dir=blocker, dry_run=True)
    assert any(n.startswith(f"the export cache cannot be written ({blocker} is not a directory): a real run "
                            "would fail here") for n in dry.notes), dry.notes


def test_full_disk_names_the_directory_and_the_fix(eagle3_ckpt, cache, monkeypatch):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", no_space)
    with pytest.raises(ExportWriteError, match=r"no space left on the device holding .*exports while writing "
                                               r"the export \(the export needs about \d+ MB\): free space"):
        prepare_export(resolve_draft(str(eagle3_ckpt)), EAGLE3, cache_dir=cache)
    assert _exports(cache) == []
