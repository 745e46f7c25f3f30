"""Served vs reference accept length with real SGLang, for a draft and for drafts broken on purpose.

Not yet run (written on a machine without a GPU; the lead runs it with the trained pair).

The pair: ``REFERENCE_TARGET`` and ``REFERENCE_DRAFT`` (an Automodel run, a checkpoint or anything
``draft=automodel`` resolves), else a synthetic ~100M repeat pair built here (every draft accepted;
on it an aux-id shift changes nothing, since all its layers' inputs are equal: only a trained pair
tells that variant apart). Each variant is served *as handed over* (no export of ours, like
``test_producers_gpu._serve_raw``), measured with the benchmark's own prompts and client (16 prompts x
128 tokens, T=0, one at a time), and computed by ``automodel_spec.reference``. Recorded in
``$OUT/reference_gpu.json`` (the table for docs/benchmarks.md); asserted: the draft as exported is
served as trained, and each broken variant fails the check (``reference.verdict`` with the good
draft's reference as the expected accept length) while the server answers without an error.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from automodel_spec.bench.client import run_requests, sampling_params
from automodel_spec.bench.workload import load_prompts, select_prompts
from automodel_spec.command import DraftArgs, build_launch_command
from automodel_spec.config import AlgorithmConfig, SGLangConfig, SpecConfig
from automodel_spec.server import SGLangServer, pick_port

from .serve_cli import sglang_processes
from .test_serve_gpu import OUT

pytestmark = pytest.mark.gpu

STEPS = 3
PROMPTS, TOKENS = 16, 128
_ROWS: list[dict] = []


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> tuple[Path, Path]:
    """(target dir, the draft exported by our pipeline)."""
    from automodel_spec.prepare import prepare_export
    from automodel_spec.resolve import resolve_draft

    root = tmp_path_factory.mktemp("refpair")
    target, draft = os.environ.get("REFERENCE_TARGET"), os.environ.get("REFERENCE_DRAFT")
    if not (target and draft):
        import torch

        from automodel_spec import synthetic

        shape = synthetic.LlamaShape(768, 12, 12, 4, 2048, 32000, 4096)
        target = str(synthetic.write_target(root / "target", shape, repeat=True, device="cuda"))
        cfg = synthetic.automodel_eagle3_config(shape, 8000)
        synthetic.write_automodel_run(root / "run", cfg, synthetic.eagle3_draft_tensors(shape, 8000, device="cuda"),
                                      selected_token_ids=torch.arange(8000), vocab_size=32000)
        draft = str(root / "run")
    target_cfg = json.loads((Path(target) / "config.json").read_text())
    export = prepare_export(resolve_draft(draft), "LlamaForCausalLMEagle3", cache_dir=root / "cache",
                            target_config=target_cfg).path
    yield Path(target), export
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "reference_gpu.json").write_text(json.dumps(_ROWS, indent=2) + "\n")
    print("\n| variant | served | reference | verdict |\n|---|---:|---:|---|")
    for r in _ROWS:
        print(f"| {r['variant']} | {r.get('served')} | {r.get('reference')} | {r.get('verdict')} |")


def _variant(export: Path, out: Path, name: str, target_layers: int) -> Path:
    """A copy of the export broken as the known silent failures break it."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(export, out)
    cfg = json.loads((out / "config.json").read_text())
    if name == "layers_copied":
        cfg["num_hidden_layers"] = target_layers
    elif name == "aux_shifted":
        eagle = cfg.setdefault("eagle_config", {})
        ids = eagle.get("eagle_aux_hidden_state_layer_ids") or [1, target_layers // 2 - 1, target_layers - 4]
        eagle["eagle_aux_hidden_state_layer_ids"] = [i + 1 for i in ids]
    elif name == "d2t_dropped":
        w = load_file(str(out / "model.safetensors"))
        save_file({k: v for k, v in w.items() if k != "d2t"}, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    return out


def _served(target: Path, draft: Path, case: str) -> dict:
    sg = SGLangConfig(mem_fraction_static=0.5, max_running_requests=8)
    port = pick_port("127.0.0.1", 0)
    argv = build_launch_command(str(target), sg, AlgorithmConfig(), SpecConfig(STEPS, 1, STEPS + 1),
                                DraftArgs(path=str(draft)), port=port)
    prompts = select_prompts(load_prompts(None), PROMPTS, 0)
    with SGLangServer(argv, f"http://127.0.0.1:{port}", OUT / case, ready_timeout_s=600) as srv:
        records, _ = run_requests(lambda p: srv.generate(p, timeout=300), prompts, 1,
                                  sampling_params(TOKENS, 0.0), progress=False)
    ok = [r for r in records if r.get("ok")]
    tokens, verify = sum(r["completion_tokens"] for r in ok), sum(r["spec_verify_ct"] for r in ok)
    return {"failed_requests": len(records) - len(ok), "served": tokens / verify if verify else None}


def _reference(target: Path, draft: Path):
    from automodel_spec.reference import compute_reference

    return compute_reference(str(target), str(draft), STEPS, select_prompts(load_prompts(None), PROMPTS, 0),
                             max_new_tokens=TOKENS, device="cuda")


@pytest.fixture(scope="module")
def good_row(good) -> dict:
    target, export = good
    ref = _reference(target, export)
    row = {"variant": "as exported", "reference": ref.accept_length, "reference_s": round(ref.seconds, 1),
           "problems": ref.problems, **_served(target, export, "ref_good")}
    from automodel_spec.reference import verdict

    row["ok"], row["verdict"] = verdict(row["served"], ref.accept_length, ref.problems)
    _ROWS.append(row)
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def test_the_draft_as_exported_is_served_as_trained(good_row):
    assert good_row["failed_requests"] == 0
    assert good_row["ok"], good_row["verdict"]


@pytest.mark.parametrize("name", ["layers_copied", "aux_shifted", "d2t_dropped"])
def test_a_broken_variant_fails_the_check_while_the_server_answers(good, good_row, name, tmp_path):
    from automodel_spec.reference import verdict

    if name == "aux_shifted" and not os.environ.get("REFERENCE_DRAFT"):
        pytest.skip("the synthetic repeat pair's layer inputs are all equal: only a trained pair tells a shift")
    target, export = good
    layers = json.loads((target / "config.json").read_text())["num_hidden_layers"]
    broken = _variant(export, tmp_path / name, name, layers)
    ref = _reference(target, broken)
    row = {"variant": name, "reference": ref.accept_length, "problems": ref.problems,
           **_served(target, broken, f"ref_{name}")}
    row["ok"], row["verdict"] = verdict(row["served"], ref.accept_length, ref.problems,
                                        min_accept_length=0.95 * good_row["reference"])
    _ROWS.append(row)
    print(json.dumps(row), file=sys.stderr, flush=True)
    assert not sglang_processes()
    assert row["failed_requests"] == 0, "the server itself reported the problem (recorded)"
    assert not row["ok"], f"{name} passed the check: {row}"
