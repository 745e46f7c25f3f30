"""scripts/gpu/real_pair/widen.py: a trained pair widened to a larger shape computes what it computed.

Token-exact on the CPU in float32: a random small Llama and its wide copy give the same logits; a small
pair with partial acceptance and its wide copy give the same reference accept length, histogram and
output tokens (the reference read from the files the tool wrote, as SGLang would read them); shapes
and configs the construction cannot hold are refused by name, and nothing is left behind.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
# A skip mark rather than pytest.importorskip, as in test_reference.py: importing transformers at collection
# costs every pytest-xdist worker its import (~0.9 s of CPU), also the workers that never run these tests.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers is not installed")

from helpers import load_script, run_recipe  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from unit.bench.test_reference import (  # noqa: E402  the partly agreeing tiny pair of the reference's tests
    PROMPTS,
    SHAPE,
    TRAINED_IDS,
    _draft_tensors,
    _export,
    _run_dir,
    _write_target,
)

from automodel_spec.bench.reference import capture_layers, compute_reference, load_target  # noqa: E402
from automodel_spec.demo import synthetic  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu" / "real_pair" / "widen.py"
# wider in every dimension, with head_dim * heads != hidden (Llama allows it) and more query heads per KV head
WIDE = "96,6,32,2,13,128"


widen = load_script(SCRIPT)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args, "--device", "cpu"], capture_output=True, text=True,
                          timeout=300)


def test_a_random_llama_keeps_its_logits_when_widened(tmp_path):
    small_dir = synthetic.write_target(tmp_path / "small", SHAPE, repeat=False, tokenizer=False, dtype="float32")
    cfg = json.loads((small_dir / "config.json").read_text())
    params = load_file(str(small_dir / "model.safetensors"))
    wide = widen.parse_shape(WIDE)
    small_capture = capture_layers({}, SHAPE.num_hidden_layers)
    wide_capture = widen.wide_capture_for(small_capture, SHAPE.num_hidden_layers, wide.layers, explicit=False)
    assert wide_capture == capture_layers({}, wide.layers)  # SGLang's default capture, unchanged
    positions = widen.layer_positions(small_capture, wide_capture, SHAPE.num_hidden_layers, wide.layers)
    tensors, wcfg = widen.widen_target(params, cfg, wide, positions, "cpu")
    assert tensors["model.layers.0.self_attn.q_proj.weight"].shape == (6 * 32, 96)
    assert wcfg["num_hidden_layers"] == 13 and wcfg["head_dim"] == 32
    small = load_target(str(small_dir), "cpu", torch.float32)
    big = widen._model(wcfg, tensors, "cpu")
    ids = torch.randint(0, SHAPE.vocab_size, (3, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = small(ids, output_hidden_states=True), big(ids, output_hidden_states=True)
    assert (a.logits - b.logits).abs().max() <= 1e-5 * a.logits.abs().max()
    assert torch.equal(a.logits.argmax(-1), b.logits.argmax(-1))
    for c, wc in zip(small_capture, wide_capture, strict=True):  # what the EAGLE-3 draft reads
        assert torch.allclose(a.hidden_states[c], b.hidden_states[wc][..., :SHAPE.hidden_size], atol=1e-5)
        assert b.hidden_states[wc][..., SHAPE.hidden_size:].abs().max() == 0


def test_a_partly_accepting_pair_keeps_its_reference_when_widened(tmp_path, capsys):
    target = _write_target(tmp_path / "target")
    run = _run_dir(tmp_path / "run", _draft_tensors(agree=False))
    agreeing = _run_dir(tmp_path / "run-agree", _draft_tensors(agree=True))
    out = tmp_path / "wide"
    proc = _run("--target", str(target), "--draft", str(run), "--also-draft", f"agree={agreeing}", "--shape", WIDE,
                "--out", str(out), "--dtype", "float32", "--check-prompts", "2", "--check-tokens", "12")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "widen.json").read_text())
    assert report["ok"] and report["reference"]["same_outputs"] == report["reference"]["prompts"]
    assert report["reference-draft-agree"]["same_outputs"] == report["reference"]["prompts"]
    dcfg = json.loads((out / "draft" / "config.json").read_text())
    # the draft was trained on the outputs of target layers [0, 3, 5]: each wide id reads the output of the
    # wide copy of that layer, with only identity layers after it
    wide_ids = dcfg["eagle_config"]["eagle_aux_hidden_state_layer_ids"]
    positions = report["layer_positions"]
    for small_id, wide_id in zip(TRAINED_IDS, wide_ids, strict=True):
        assert positions[small_id] <= wide_id < positions[small_id + 1]
    assert dcfg["hidden_size"] == dcfg["target_hidden_size"] == 96 and dcfg["num_hidden_layers"] == 1

    # the reference from the written files, on the reference tests' prompts, independent of the tool's check
    for name, agree, wide_draft in (("partial", False, out / "draft"), ("agree", True, out / "draft-agree")):
        small_draft = _export(tmp_path, _draft_tensors(agree=agree), name=f"small-{name}")
        small = compute_reference(str(target), str(small_draft), 4, PROMPTS, max_new_tokens=20, device="cpu")
        big = compute_reference(str(out / "target"), str(wide_draft), 4, PROMPTS, max_new_tokens=20, device="cpu")
        assert big.problems == [] and big.aux_layers == [c + 1 for c in wide_ids]
        if name == "partial":
            assert 1.2 < small.accept_length < 4.5  # neither all accepted nor none
        else:
            assert small.histogram[:4] == [0, 0, 0, 0]  # every round accepted all 4 drafts
        assert big.accept_length == small.accept_length
        assert big.histogram == small.histogram
        assert [p.output_ids for p in big.prompts] == [p.output_ids for p in small.prompts]

    # the project's export takes the wide draft as it is (what recipes/serve.py serves); its job in this
    # process, which has torch already (a process of its own would import it again, ~1.4 s of CPU)
    code = run_recipe("export", "draft=automodel", f"draft.path={out / 'draft'}", f"target.path={out / 'target'}",
                      f"cache_dir={tmp_path / 'c2'}")
    printed = capsys.readouterr()
    assert code == 0, printed.out + printed.err
    assert "export (written)" in printed.out, printed.out


@pytest.mark.parametrize(("shape", "change", "named"), [
    ("96,2,32,2,13,128", None, "query heads per KV head"),  # 1 query head per KV head < the target's 2
    ("48,6,32,2,13,128", None, "hidden_size 48"),
    ("96,6,32,2,6,128", None, "num_hidden_layers"),
    (WIDE, {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 512}}, "rope scaling"),
    (WIDE, {"attention_bias": True}, "attention_bias"),
])
def test_a_shape_or_config_it_cannot_hold_is_refused_by_name(tmp_path, capsys, shape, change, named):
    target = synthetic.write_target(tmp_path / "t", SHAPE, repeat=False, tokenizer=False, dtype="float32")
    if change:
        cfg = json.loads((target / "config.json").read_text())
        cfg.pop("rope_parameters", None)
        (target / "config.json").write_text(json.dumps({**cfg, **change}))
    out = tmp_path / "wide"
    assert widen.main(["--target", str(target), "--shape", shape, "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert named in err and err.startswith("error: ")
    assert not out.exists()


def test_a_wide_copy_that_computes_otherwise_fails_and_leaves_nothing_to_serve(tmp_path, monkeypatch, capsys):
    target = synthetic.write_target(tmp_path / "t", SHAPE, repeat=False, tokenizer=False, dtype="float32")
    monkeypatch.setitem(widen.LOGIT_TOLERANCE, "cpu", -1.0)  # any difference at all, even none, fails the check
    out = tmp_path / "wide"
    assert widen.main(["--target", str(target), "--shape", WIDE, "--out", str(out), "--device", "cpu"]) == 1
    assert "does not compute what the small pair does" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["widen.json"]  # the report, for the diagnosis


def test_an_existing_out_is_never_written_into(tmp_path):
    out = tmp_path / "wide"
    out.mkdir()
    (out / "mine.txt").write_text("the user's")
    proc = _run("--target", str(tmp_path), "--shape", WIDE, "--out", str(out))
    assert proc.returncode == 2 and "exists" in proc.stderr
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
