"""scripts/fixtures/fixture_manifest.py, the generators' shared manifest code, reproduces what the
committed producer manifests record: a rebuild with it lists the same files the same way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import load_script

REPO = Path(__file__).resolve().parents[2]
PRODUCERS = REPO / "tests" / "fixtures" / "producers"
# speculators' generator marks this file as nondeterministic (scripts/fixtures/speculators_fixtures.py)
SPECULATORS_UNSTABLE = {"train_command.txt": "speculators writes the wall-clock time ('# Timestamp:') into it"}


fm = load_script(REPO / "scripts" / "fixtures" / "fixture_manifest.py")  # by path, as the generators load it


def _manifest(producer: str) -> dict:
    return json.loads((PRODUCERS / producer / fm.MANIFEST).read_text())


@pytest.mark.parametrize("producer", ["automodel", "specforge", "speculators"])
def test_listing_every_fixture_gives_the_committed_rows(producer):
    manifest = _manifest(producer)
    unstable = SPECULATORS_UNSTABLE if producer == "speculators" else None
    dirs = [(fx["path"], fx["files"]) for fx in manifest["fixtures"]]
    if "files" in manifest.get("inputs", {}):
        dirs.append((manifest["inputs"]["path"], manifest["inputs"]["files"]))
    for rel, committed in dirs:
        assert fm.list_files(PRODUCERS / producer / rel, nondeterministic=unstable) == committed, rel


def test_the_listing_leaves_the_manifest_out_and_keeps_symlinks(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.bin").write_bytes(b"abc")
    (tmp_path / fm.MANIFEST).write_text("{}")
    (tmp_path / "LATEST").symlink_to("sub")
    assert fm.list_files(tmp_path) == [
        {"path": "LATEST", "symlink_to": "sub"},
        {"path": "sub/a.bin", "bytes": 3,
         "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
    ]


@pytest.mark.parametrize("producer, fixture", [("specforge", "sglang_export"), ("speculators", "converted_from_eagle3")])
def test_safetensors_facts_are_the_committed_ones(producer, fixture):
    fx = next(f for f in _manifest(producer)["fixtures"] if f["path"] == fixture)
    weights = PRODUCERS / producer / fixture / "model.safetensors"
    assert fm.safetensors_facts(weights) == fx["facts"]["weights"]


def test_write_manifest_keeps_each_layout(tmp_path):
    fm.write_manifest(tmp_path, {"b": 1, "a": [1]})
    assert (tmp_path / fm.MANIFEST).read_text() == '{\n  "a": [\n    1\n  ],\n  "b": 1\n}\n'
    fm.write_manifest(tmp_path, {"b": 1, "a": 2}, indent=1, sort_keys=False)
    assert (tmp_path / fm.MANIFEST).read_text() == '{\n "b": 1,\n "a": 2\n}\n'
