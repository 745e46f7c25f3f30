"""Reliability on a real GPU with real SGLang: load through a served EAGLE-3 draft, and SIGKILL of the
recipe during boot and under load (no process left, GPU memory and port free, within the stop timeout).

The demo pair (tiny Llama target + EAGLE-3 draft in the Automodel layout) keeps boots short; the
figures go to ``$OUT/reliability_gpu.json`` and docs/reliability.md.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import ServeProcess

from .serve_cli import READY, gpu_query_scope, sglang_processes
from .test_serve_gpu import COMMON, NO_GRAPHS, OUT, SPEC, _port_free

pytestmark = pytest.mark.gpu

STOP_TIMEOUT_S = 30.0  # sglang.stop_timeout_s's default
_FIGURES: dict = {}
PORT_LINE = r"ready in [0-9.]+s at http://127\.0\.0\.1:(\d+)"


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    import os

    os.environ["AUTOMODEL_SPEC_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "reliability_gpu.json").write_text(json.dumps(_FIGURES, indent=2) + "\n")
    print(json.dumps(_FIGURES, indent=2))


def _gpu_used_mib() -> int:
    out = subprocess.run(["nvidia-smi", *gpu_query_scope(), "--query-compute-apps=used_memory",
                          "--format=csv,noheader,nounits"],
                         capture_output=True, text=True).stdout
    return sum(int(x) for x in out.split() if x.strip().isdigit())


def _generate(port: int, i: int) -> bool:
    body = json.dumps({"text": f"request {i}: count to ten", "sampling_params": {
        "temperature": 0.0, "max_new_tokens": 32, "ignore_eos": True}}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/generate", data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            out = json.loads(resp.read())
        return resp.status == 200 and out.get("meta_info", {}).get("completion_tokens") == 32
    except Exception:
        return False


def _load(port: int, n: int, concurrency: int) -> tuple[int, float]:
    t0 = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        ok = sum(pool.map(lambda i: _generate(port, i), range(n)))
    return n - ok, time.monotonic() - t0


def _wait_gone(port: int | None, limit: float) -> float:
    """Seconds until no SGLang process is left, the port is free and the GPU holds no process."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if not sglang_processes() and (port is None or _port_free(port)) and _gpu_used_mib() == 0:
            return time.monotonic() - t0
        time.sleep(0.25)
    return float("inf")


def _start(case: str) -> ServeProcess:
    work = OUT / case
    work.mkdir(parents=True, exist_ok=True)
    return ServeProcess(SPEC + NO_GRAPHS + COMMON + [f"hydra.run.dir={work}/hydra"], cwd=work,
                        log_path=work / "console.log")


def test_load_then_sigkill_under_load():
    sp = _start("load")
    try:
        sp.wait_for(READY, timeout=420)
        port = int(sp.wait_for(PORT_LINE, timeout=5).group(1))
        failed, took = _load(port, 512, 128)
        _FIGURES["load"] = {"requests": 512, "concurrency": 128, "failed": failed, "seconds": round(took, 1)}
        assert failed == 0
        background = threading.Thread(target=_load, args=(port, 512, 128), daemon=True)
        background.start()
        time.sleep(2.0)  # requests in flight
        sp.proc.kill()  # the recipe alone: the server must follow it (parent_watch)
        sp.finish(timeout=30)
        gone = _wait_gone(port, STOP_TIMEOUT_S + 30)
    finally:
        sp.kill()
    _FIGURES["sigkill_under_load"] = {"gone_s": round(gone, 1), "left": sglang_processes(),
                                      "gpu_mib": _gpu_used_mib()}
    assert gone <= STOP_TIMEOUT_S, _FIGURES["sigkill_under_load"]


def test_sigkill_during_boot():
    sp = _start("boot_kill")
    try:
        port = int(sp.wait_for(r"launching: .*--port (\d+)", timeout=120).group(1))
        time.sleep(8.0)  # SGLang is importing / loading weights
        assert sglang_processes(), "no SGLang process to kill during boot"
        sp.proc.kill()
        sp.finish(timeout=30)
        gone = _wait_gone(port, STOP_TIMEOUT_S + 30)
    finally:
        sp.kill()
    _FIGURES["sigkill_during_boot"] = {"gone_s": round(gone, 1), "left": sglang_processes(),
                                       "gpu_mib": _gpu_used_mib()}
    assert gone <= STOP_TIMEOUT_S, _FIGURES["sigkill_during_boot"]


def test_sigterm_stops_a_parallel_sweep_and_every_server():
    # on the GPU machine an SGLang detokenizer once outlived a parallel sweep stopped by SIGTERM (as
    # `timeout` or SLURM's scancel stop one): SIGTERM while a point is measured, then nothing left
    if importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None:
        pytest.skip("hydra-joblib-launcher is not installed (scripts/gpu/gpu_sweep_scale.sh installs it from .whl/)")
    work = OUT / "sweep_sigterm"
    work.mkdir(parents=True, exist_ok=True)
    sp = ServeProcess(["-m", "+sweep=grid", "+launcher=parallel", "bench.name=sigterm", f"hydra.sweep.dir={work}/sweep",
                       "bench.baseline=false", "bench.concurrency=[1]", "bench.num_prompts=64",
                       "bench.max_new_tokens=256", "spec.num_steps=1,3", "spec.topk=1", *NO_GRAPHS, *COMMON],
                      cwd=work, log_path=work / "console.log")
    try:
        sp.wait_for(r"spec T=0 c=1", timeout=420)  # a point's server is up and measuring
        assert sglang_processes()
        sp.proc.send_signal(signal.SIGTERM)
        sp.finish(timeout=STOP_TIMEOUT_S + 30)
        gone = _wait_gone(None, STOP_TIMEOUT_S + 30)
    finally:
        sp.kill()
    _FIGURES["sigterm_parallel_sweep"] = {"rc": sp.proc.returncode, "gone_s": round(gone, 1),
                                          "left": sglang_processes(), "gpu_mib": _gpu_used_mib()}
    assert gone <= STOP_TIMEOUT_S, _FIGURES["sigterm_parallel_sweep"]
