"""scripts/gpu/real_pair/break_draft.py: each variant breaks exactly what it names in a copy of an export,
and leaves the export itself as it was (the GPU table of docs/benchmarks.md serves these variants).

The script's ``main`` runs in this process (as the recipes' jobs do in ``helpers.run_recipe``): a process of
its own would import torch again for each variant (~1.4 s of CPU), where this worker has it already. One
refusal runs as a user runs it, in a process of its own, for the command line and its exit code.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import load_script
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu" / "real_pair" / "break_draft.py"


@pytest.fixture
def export(tmp_path) -> tuple[Path, Path]:
    target = tmp_path / "target"
    target.mkdir()
    (target / "config.json").write_text(json.dumps({"num_hidden_layers": 12, "hidden_size": 8}))
    draft = tmp_path / "export"
    draft.mkdir()
    (draft / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLMEagle3"],
                                                   "num_hidden_layers": 1, "draft_vocab_size": 4}))
    save_file({"d2t": torch.arange(4), "midlayer.mlp.up_proj.weight": torch.ones(2, 2),
               "lm_head.weight": torch.tensor([[1.0, -2.0], [0.5, 3.0]])}, str(draft / "model.safetensors"))
    (draft / "automodel_spec_export.json").write_text("{}")
    return draft, target


def _digests(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


break_draft = load_script(SCRIPT)


def _argv(src: Path, out: Path, kind: str, target: Path) -> list[str]:
    return [str(src), str(out), kind, "--target", str(target)]


@pytest.fixture
def run_break(monkeypatch, capsys):
    """Factory: ``break_draft.py SRC OUT KIND --target TARGET`` in this process; its exit code and what it
    printed (``returncode``, ``stdout``, ``stderr``)."""

    def run(src: Path, out: Path, kind: str, target: Path) -> SimpleNamespace:
        monkeypatch.setattr(sys, "argv", [str(SCRIPT), *_argv(src, out, kind, target)])
        monkeypatch.setattr(sys, "path", list(sys.path))  # aux_shift puts the repository on it
        code = break_draft.main()
        printed = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=printed.out, stderr=printed.err)

    return run


@pytest.mark.parametrize("kind", ["layers", "aux_shift", "no_d2t"])
def test_each_variant_breaks_what_it_names_in_a_copy(export, tmp_path, kind, run_break):
    src, target = export
    before = _digests(src)
    out = tmp_path / kind
    assert run_break(src, out, kind, target).returncode == 0
    assert _digests(src) == before
    cfg = json.loads((out / "config.json").read_text())
    tensors = load_file(str(out / "model.safetensors"))
    assert not (out / "automodel_spec_export.json").exists()  # no longer an export of ours
    assert cfg["num_hidden_layers"] == (12 if kind == "layers" else 1)
    ids = (cfg.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids")
    assert ids == ([0, 4, 7] if kind == "aux_shift" else None)  # Automodel's default [1, 5, 8], one lower
    assert ("d2t" in tensors) == (kind != "no_d2t")
    assert "midlayer.mlp.up_proj.weight" in tensors


@pytest.mark.parametrize("kind,scale", [("logit_flat", 0.25), ("logit_warm", 0.5), ("logit_sharp", 4.0)])
def test_the_logit_variants_scale_the_lm_head_only(export, tmp_path, kind, scale, run_break):
    """Every logit scaled alike: the argmax of each position, hence every greedy chain, is kept."""
    src, target = export
    out = tmp_path / kind
    assert run_break(src, out, kind, target).returncode == 0
    before, after = load_file(str(src / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert torch.equal(after["lm_head.weight"], before["lm_head.weight"] * scale)
    assert all(torch.equal(after[k], v) for k, v in before.items() if k != "lm_head.weight")
    assert json.loads((out / "config.json").read_text()) == json.loads((src / "config.json").read_text())


def test_a_logit_variant_without_its_own_lm_head_is_refused(export, tmp_path, run_break):
    src, target = export
    w = load_file(str(src / "model.safetensors"))
    del w["lm_head.weight"]
    save_file(w, str(src / "model.safetensors"))
    res = run_break(src, tmp_path / "flat", "logit_flat", target)
    assert res.returncode == 2 and "no lm_head.weight" in res.stderr and not (tmp_path / "flat").exists()


def test_an_existing_output_is_not_overwritten(export, tmp_path):
    src, target = export
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    res = subprocess.run([sys.executable, str(SCRIPT), *_argv(src, out, "layers", target)], capture_output=True,
                         text=True, timeout=60)  # the command line, as a user runs it
    assert res.returncode == 2 and "exists" in res.stderr
    assert (out / "mine.txt").read_text() == "keep"
