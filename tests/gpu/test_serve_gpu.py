"""End to end on a CUDA GPU with real SGLang: export with this project, serve, generate, stop.

Run on the GPU machine with ``scripts/gpu/gpu_suite.sh`` (see docs/gpu-runs.md). Every model is built
here, offline, in the real Automodel layouts (tiny shapes, the repeat construction of
``automodel_spec.demo.synthetic``: every drafted token should be accepted under greedy decoding).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import pytest
from helpers import ServeProcess

from automodel_spec.config.schema import AlgorithmConfig, SGLangConfig, SpecConfig
from automodel_spec.demo import synthetic
from automodel_spec.demo.pair import DEMO_DRAFT_VOCAB, ensure_demo_pair
from automodel_spec.launch import probe_generation, sglang_release
from automodel_spec.serve.command import DraftArgs, build_launch_command
from automodel_spec.serve.server import SGLangServer, pick_port

from .serve_cli import READY, sglang_processes

pytestmark = pytest.mark.gpu

OUT = Path(os.environ.get("OUT") or "/tmp/automodel_spec_gpu")
SPEC = ["spec.num_steps=3", "spec.topk=1", "spec.num_draft_tokens=4"]
COMMON = ["sglang=triton", "sglang.ready_timeout_s=400"]
# CUDA-graph capture costs a minute per boot; only the default path (the demo test) keeps it.
NO_GRAPHS = ["sglang.disable_cuda_graph=true"]
_RESULTS: list[dict] = []


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cache")
    os.environ["AUTOMODEL_SPEC_CACHE"] = str(d)
    return d


@pytest.fixture(scope="session", autouse=True)
def summary():
    yield
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "gpu_results.json").write_text(json.dumps(_RESULTS, indent=2) + "\n")
    print("\n=== GPU suite summary ===")
    print(f"{'case':38} {'rc':>4} {'boot_s':>7} {'tokens':>6} {'accept':>7}")
    for r in _RESULTS:
        print(f"{r['case']:38} {str(r.get('rc')):>4} {r.get('boot_s', float('nan')):7.1f} "
              f"{str(r.get('tokens')):>6} {str(r.get('accept')):>7}")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _serve_and_stop(case: str, overrides: list[str], sig=signal.SIGINT, expect_accept=None) -> dict:
    OUT.mkdir(parents=True, exist_ok=True)
    work = OUT / case
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    sp = ServeProcess(overrides + COMMON + [f"hydra.run.dir={work}/hydra"], cwd=work, log_path=work / "console.log")
    try:
        m = sp.wait_for(READY, timeout=420)
        boot = time.monotonic() - t0
        port = int(sp.wait_for(r"ready in [0-9.]+s at http://127\.0\.0\.1:(\d+)", timeout=5).group(1))
        rc = sp.signal(sig, timeout=90)
    finally:
        sp.kill()
    accept = float(m.group(2)) if m.group(2) not in (None, "n/a") else None
    res = {"case": case, "rc": rc, "boot_s": boot, "tokens": int(m.group(1)) if m.group(1) else None,
           "accept": accept}
    _RESULTS.append(res)
    assert rc == (130 if sig == signal.SIGINT else 143), sp.lines[-20:]
    time.sleep(1)
    assert _port_free(port), f"port {port} still held after the stop"
    assert not sglang_processes(), f"SGLang processes survived: {sglang_processes()}"
    if expect_accept is not None:
        assert accept is not None and accept >= expect_accept, res
    return res


def test_demo_eagle3_serves_and_accepts(cache):
    """The default path: demo pair, Automodel layout, exported by us, served in the foreground."""
    res = _serve_and_stop("demo_eagle3", SPEC, expect_accept=3.0)
    assert res["tokens"] == 48


def test_baseline_without_speculation_stops_on_sigterm(cache):
    _serve_and_stop("baseline_none", ["algorithm=none"] + NO_GRAPHS, sig=signal.SIGTERM)


def test_legacy_draft_model_pt_serves(cache, tmp_path):
    pair = ensure_demo_pair(cache, "LlamaForCausalLMEagle3")
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    import torch

    tensors = synthetic.eagle3_draft_tensors(synthetic.TINY, DEMO_DRAFT_VOCAB, repeat=True)
    torch.save(tensors, legacy / "draft_model.pt")
    cfg = synthetic.automodel_eagle3_config(synthetic.TINY, DEMO_DRAFT_VOCAB)
    (legacy / "config.json").write_text(json.dumps(cfg))
    _serve_and_stop("legacy_eagle3", SPEC + NO_GRAPHS + ["draft=legacy", f"draft.path={legacy}",
                                             f"target.path={pair.target}"], expect_accept=3.0)


def test_eagle1_demo_serves_and_accepts(cache):
    _serve_and_stop("demo_eagle1", SPEC + NO_GRAPHS + ["algorithm=EAGLE"], expect_accept=2.0)


def _broken_run(tmp_path: Path, mutate) -> Path:
    shape = synthetic.TINY
    tensors = synthetic.eagle3_draft_tensors(shape, DEMO_DRAFT_VOCAB, repeat=True)
    mutate(tensors)
    run = tmp_path / "run"
    synthetic.write_automodel_run(run, synthetic.automodel_eagle3_config(shape, DEMO_DRAFT_VOCAB), tensors,
                                  selected_token_ids=list(range(DEMO_DRAFT_VOCAB)), vocab_size=shape.vocab_size)
    return run


@pytest.mark.parametrize("case,mutate,message", [
    ("dropped", lambda t: t.pop("model.fc.weight"), "missing"),
    ("misnamed", lambda t: t.__setitem__("model.fc_proj.weight", t.pop("model.fc.weight")), "does not know"),
])
def test_preflight_refuses_before_launch(cache, tmp_path, case, mutate, message):
    pair = ensure_demo_pair(cache, "LlamaForCausalLMEagle3")
    run = _broken_run(tmp_path, mutate)
    work = OUT / f"refused_{case}"
    work.mkdir(parents=True, exist_ok=True)
    sp = ServeProcess(SPEC + COMMON + ["draft=automodel", f"draft.path={run}", f"target.path={pair.target}",
                                       f"hydra.run.dir={work}/hydra"], cwd=work, log_path=work / "console.log")
    rc = sp.finish(timeout=120)
    text = sp.output
    _RESULTS.append({"case": f"refused_{case}", "rc": rc})
    assert rc == 1 and message in text and "launching" not in text, text[-2000:]
    assert not sglang_processes()


def test_exported_draft_beats_the_silently_broken_one(cache, tmp_path):
    """Serve (a) our export and (b) the same Automodel draft only renamed for SGLang, keeping the
    target's num_hidden_layers as Automodel writes it: SGLang loads (b) without a word, with 7
    random extra layers. The accept lengths must differ clearly."""
    from automodel_spec.draft.resolve import resolve_draft
    from automodel_spec.prepare import prepare_export

    pair = ensure_demo_pair(cache, "LlamaForCausalLMEagle3")
    resolved = resolve_draft(str(pair.draft_run))
    ours = prepare_export(resolved, "LlamaForCausalLMEagle3", cache_dir=cache).path
    naive = tmp_path / "naive"
    shutil.copytree(resolved.model_dir, naive)
    cfg = json.loads((naive / "config.json").read_text())
    cfg["architectures"] = ["LlamaForCausalLMEagle3"]
    assert cfg["num_hidden_layers"] == synthetic.TINY.num_hidden_layers
    (naive / "config.json").write_text(json.dumps(cfg))
    sg = SGLangConfig(attention_backend="triton", cuda_graph_max_bs=8, max_running_requests=16,
                      mem_fraction_static=0.6, disable_cuda_graph=True)
    accepts = {}
    for name, draft in (("ours", ours), ("naive", naive)):
        port = pick_port("127.0.0.1", 0)
        argv = build_launch_command(str(pair.target), sg, AlgorithmConfig(), SpecConfig(3, 1, 4),
                                    DraftArgs(path=str(draft)), port=port, release=sglang_release(sg).release)
        work = OUT / f"fidelity_{name}"
        with SGLangServer(argv, f"http://127.0.0.1:{port}", work, ready_timeout_s=400) as srv:
            res = probe_generation(srv, skip_tokenizer_init=False)
            boot = srv.boot_s
        accepts[name] = res["accept_length"]
        _RESULTS.append({"case": f"fidelity_{name}", "rc": 0, "boot_s": boot,
                         "tokens": res["completion_tokens"], "accept": res["accept_length"]})
    assert not sglang_processes()
    assert accepts["ours"] >= 3.0, accepts
    assert accepts["naive"] < accepts["ours"] - 1.0, accepts


def test_sigkilled_recipe_takes_the_real_server_along(cache):
    """serve.py killed outright (no chance to stop anything): SGLang must still go, through
    automodel_spec.serve.parent_watch (the kernel's parent-death signal), and free the GPU and the port."""
    work = OUT / "sigkill"
    work.mkdir(parents=True, exist_ok=True)
    sp = ServeProcess(SPEC + NO_GRAPHS + COMMON + [f"hydra.run.dir={work}/hydra"], cwd=work,
                      log_path=work / "console.log")
    try:
        sp.wait_for(READY, timeout=420)
        port = int(sp.wait_for(r"ready in [0-9.]+s at http://127\.0\.0\.1:(\d+)", timeout=5).group(1))
        assert sglang_processes()
        t0 = time.monotonic()
        sp.proc.kill()  # serve.py alone: the server runs in a session of its own
        sp.finish(timeout=30)
        while (sglang_processes() or not _port_free(port)) and time.monotonic() - t0 < 90:
            time.sleep(0.5)
        gone_s = time.monotonic() - t0
    finally:
        sp.kill()
    _RESULTS.append({"case": f"sigkill_recipe (gone in {gone_s:.1f}s)", "rc": -9})
    assert not sglang_processes(), f"SGLang outlived its SIGKILLed launcher: {sglang_processes()}"
    assert _port_free(port)
