"""Drafts written by the producers' own code, served on the Llama-3.1-8B-shaped synthetic target.

NeMo Automodel's ``LlamaEagle3DraftModel`` and its checkpoint code, and speculators' EAGLE-3 format,
write the drafts (``tests/gpu/inputs/*_gpu_draft.py``), with their weights set to the
repeat construction (``automodel_spec.demo.synthetic``) so that every drafted token is accepted under
greedy decoding: steps 3 / topk 1 must give an accept length of 4. The producers are not installed
on the GPU machine; their wheels travel in ``.whl/`` (see docs/gpu-runs.md). Each case is skipped
where its producer cannot be imported.

Also served: Automodel's own ``model/`` directory as its ``serve_sglang`` hands it to SGLang (only
``architectures`` rewritten), to record what that path does with a real Automodel checkpoint.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from automodel_spec.config.schema import AlgorithmConfig, SGLangConfig, SpecConfig
from automodel_spec.launch import probe_generation, sglang_release
from automodel_spec.serve.command import DraftArgs, build_launch_command
from automodel_spec.serve.server import SGLangServer, pick_port

from .serve_cli import REPO, sglang_processes
from .test_serve_gpu import _RESULTS, NO_GRAPHS, OUT, SPEC, _serve_and_stop

pytestmark = pytest.mark.gpu

PAIR = Path("/tmp/bench8b")
ALL_ACCEPTED = 3.9  # steps 3 / topk 1 at T=0 on the repeat construction: 4.0


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    import os

    os.environ["AUTOMODEL_SPEC_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    OUT.mkdir(parents=True, exist_ok=True)
    mine = [r for r in _RESULTS if "8b" in r["case"]]
    (OUT / "producers_gpu.json").write_text(json.dumps(mine, indent=2) + "\n")
    for r in mine:
        print(f"{r['case']:32} rc={r.get('rc')} boot={r.get('boot_s')} tokens={r.get('tokens')} "
              f"accept={r.get('accept')} {r.get('error', '')}")


@pytest.fixture(scope="module")
def pair() -> Path:
    subprocess.run([sys.executable, str(REPO / "scripts/gpu/build_bench_pair.py"), "--out", str(PAIR),
                    "--shape", "llama-3.1-8b", "--device", "cuda"], check=True, timeout=300)
    return PAIR


def _produce(script: str, module: str, pair: Path, out: Path) -> Path:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not importable here (carry its wheels in .whl/)")
    if out.exists():
        shutil.rmtree(out)
    t0 = time.monotonic()
    subprocess.run([sys.executable, str(REPO / "tests/gpu/inputs" / script), "--pair", str(pair),
                    "--out", str(out)], check=True, timeout=300)
    print(f"{script}: wrote {out} in {time.monotonic() - t0:.1f}s")
    return out


def _serve_8b(case: str, draft: Path, pair: Path) -> dict:
    return _serve_and_stop(case, SPEC + NO_GRAPHS + ["draft=automodel", f"draft.path={draft}",
                                                      f"target.path={pair / 'target'}"],
                           expect_accept=ALL_ACCEPTED)


@pytest.fixture(scope="module")
def automodel_run(pair, tmp_path_factory) -> Path:
    return _produce("automodel_gpu_draft.py", "nemo_automodel", pair, tmp_path_factory.mktemp("am") / "run")


def test_automodel_written_eagle3_serves_as_built(automodel_run, pair):
    res = _serve_8b("automodel_eagle3_8b", automodel_run, pair)
    assert res["tokens"] == 48


def test_speculators_eagle3_converted_serves_as_built(pair, tmp_path_factory):
    draft = _produce("speculators_gpu_draft.py", "speculators", pair, tmp_path_factory.mktemp("sp") / "draft")
    res = _serve_8b("speculators_eagle3_8b", draft, pair)
    assert res["tokens"] == 48


def test_automodel_model_dir_as_serve_sglang_passes_it(automodel_run, pair, tmp_path_factory):
    """Their path: architectures rewritten in place, nothing else (num_hidden_layers stays the
    target's 32, dtype stays float32, rope only in rope_parameters). Recorded, not required to fail:
    what SGLang 0.5.17 does with it goes to docs/parity.md."""
    from nemo_automodel.components.speculative.serve_sglang import resolve_draft_artifacts

    copy = tmp_path_factory.mktemp("theirs") / "run"
    shutil.copytree(automodel_run, copy, symlinks=True)
    latest = sorted(p for p in copy.iterdir() if p.name.startswith("epoch_"))[-1]
    found, _ = resolve_draft_artifacts(str(latest), "EAGLE3")
    res = {"case": "serve_sglang_model_dir_8b", "epoch_dir_resolves_to": found,
           "has_config": (Path(found) / "config.json").is_file()}
    # Their resolver looks in epoch_dir/model and epoch_dir, not model/consolidated where Automodel
    # 0.7.0 writes the HF files: a user has to name consolidated/ to get a config at all.
    draft_path, token_map = resolve_draft_artifacts(str(latest / "model" / "consolidated"), "EAGLE3")
    cfg = json.loads((Path(draft_path) / "config.json").read_text())
    res["config"] = {k: cfg.get(k) for k in (
        "architectures", "num_hidden_layers", "dtype", "torch_dtype", "rope_theta", "rope_parameters")}
    text = _serve_raw(res, "theirs_8b", pair, DraftArgs(path=draft_path, token_map=token_map))
    res["log_tail"] = text[-1500:]
    (OUT / "theirs_8b.json").write_text(json.dumps(res, indent=2) + "\n")
    assert not sglang_processes()


def test_float32_config_beside_a_bfloat16_target_is_recorded(automodel_run, pair, tmp_path_factory):
    """What --dtype auto does with a draft whose config says float32 (Automodel's CPU-side saves; no
    dtype at all counts the same): our export with only its dtype put back to float32. Recorded for
    docs/parity.md; our exports never ship it (they name the target's dtype)."""
    from automodel_spec.draft.resolve import resolve_draft
    from automodel_spec.prepare import prepare_export

    ours = prepare_export(resolve_draft(str(automodel_run)), "LlamaForCausalLMEagle3",
                        cache_dir=tmp_path_factory.mktemp("fp32cache"), serving_dtype=("bfloat16", "test")).path
    fp32 = tmp_path_factory.mktemp("fp32") / "draft"
    shutil.copytree(ours, fp32)
    cfg = json.loads((fp32 / "config.json").read_text())
    cfg.pop("dtype", None)
    cfg["torch_dtype"] = "float32"
    (fp32 / "config.json").write_text(json.dumps(cfg))
    res = {"case": "float32_config_draft_8b"}
    text = _serve_raw(res, "fp32_8b", pair, DraftArgs(path=str(fp32)))
    res["dtype_lines"] = [ln[-200:] for ln in text.splitlines() if "dtype" in ln.lower()][-6:]
    res["error_lines"] = [ln[-300:] for ln in text.splitlines() if "Error" in ln][-4:]
    (OUT / "fp32_8b.json").write_text(json.dumps(res, indent=2) + "\n")
    assert not sglang_processes()


def _serve_raw(res: dict, case: str, pair: Path, draft: DraftArgs) -> str:
    """Launch SGLang on ``draft`` as handed over (no export of ours), probe it, record what happens in
    ``res`` (whichever way it goes: that is the finding); returns the server's log."""
    sg = SGLangConfig(attention_backend="triton", cuda_graph_max_bs=8, max_running_requests=16,
                      mem_fraction_static=0.6, disable_cuda_graph=True)
    port = pick_port("127.0.0.1", 0)
    argv = build_launch_command(str(pair / "target"), sg, AlgorithmConfig(), SpecConfig(3, 1, 4), draft, port=port,
                                release=sglang_release(sg).release)
    try:
        with SGLangServer(argv, f"http://127.0.0.1:{port}", OUT / case, ready_timeout_s=400) as srv:
            res["boot_s"] = srv.boot_s
            try:
                out = probe_generation(srv, skip_tokenizer_init=False)
                res.update(rc=0, tokens=out["completion_tokens"], accept=out["accept_length"])
            except Exception as exc:
                res.update(rc="generation failed", error=str(exc)[:300])
    except Exception as exc:
        res.update(rc="server failed", error=str(exc)[:300])
    _RESULTS.append(res)
    log = OUT / case / "server.log"
    return log.read_text(errors="replace") if log.is_file() else ""

