"""The benchmark as a user runs it: ``recipes/serve.py mode=bench`` and ``-m +sweep=...`` in subprocesses.

Every run gets its own working directory under ``tmp_path``; the demo pair is built once per module
in a cache under a tmp dir (``AUTOMODEL_SPEC_CACHE``). Servers are the fake
(``sglang.python=tests/fakes/fake_sglang.py``: accept length = steps + 1, 1 ms per generated token),
so the numbers prove the plumbing, not speculative decoding. Each CLI run carries a unique tag in its
environment, which every process it starts inherits: after each run the tests check through /proc
that none of them is left, and SIGKILL any that is.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
import yaml
from helpers import run_recipe, tree

from automodel_spec.io.process_state import process_running

REPO = Path(__file__).resolve().parents[2]
SERVE = REPO / "recipes" / "serve.py"
EXPORT = REPO / "recipes" / "export.py"
FAKE = REPO / "tests" / "fakes" / "fake_sglang.py"
CLI_TIMEOUT_S = 90
TAG_VAR = "AUTOMODEL_SPEC_TEST_BENCH_TAG"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WORKLOAD = [f"sglang.python={FAKE}", "sglang.port=0", "sglang.stop_timeout_s=4", "sglang.ready_timeout_s=30",
            "bench.num_prompts=4", "bench.max_new_tokens=16", "bench.request_timeout_s=20",
            "bench.concurrency=[1,2]"]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process checks use /proc")


# --- helpers --------------------------------------------------------------------------------------


def _tagged_pids(tag: str) -> list[int]:
    """Live processes (a thread still runs) whose environment carries ``tag``."""
    needle = f"{TAG_VAR}={tag}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if needle not in fh.read().split(b"\0"):
                    continue
        except OSError:
            continue
        if process_running(int(entry)):
            pids.append(int(entry))
    return pids


def assert_nothing_left(tag: str, timeout: float = 5.0) -> None:
    """No process started by the tagged run is alive; kill (and report) any that is."""
    deadline = time.monotonic() + timeout
    while (left := _tagged_pids(tag)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, f"processes left behind by the CLI run: {left}"


def run_cli(script: Path, *args: str, cwd: Path, cache: Path, env: dict | None = None,
            timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run a recipe; afterwards check it left no process behind."""
    cwd.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("FAKE_SGLANG_", "AUTOMODEL_SPEC_", "HYDRA_"))}
    full_env.update(AUTOMODEL_SPEC_CACHE=str(cache), PYTHONUNBUFFERED="1", **{TAG_VAR: tag}, **(env or {}))
    try:
        return subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=full_env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    finally:
        assert_nothing_left(tag)


CATEGORIES = {"chat", "code", "math", "creative", "summarization", "translation"}


def metrics(d: Path) -> dict:
    return json.loads((d / "metrics.json").read_text())


def baseline_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "baseline").iterdir() if p.is_dir())


def output(res: subprocess.CompletedProcess) -> str:
    return res.stdout + res.stderr


# --- one point ------------------------------------------------------------------------------------


def test_single_bench_run_writes_metrics_with_a_baseline_of_its_own(tmp_path, cache):
    out = tmp_path / "out"
    res = run_cli(SERVE, "mode=bench", *WORKLOAD, "spec.num_steps=3", "spec.topk=1", f"hydra.run.dir={out}",
                  cwd=tmp_path / "cwd", cache=cache)
    assert res.returncode == 0, output(res)
    assert "measuring the no-speculation baseline" in res.stdout
    ms = r"[0-9.]+/[0-9.]+/[0-9.]+ms"  # p50/p90/p99
    lat = rf" ttft {ms} itl {ms} \(per token {ms}\) tpot {ms}"
    assert re.search(rf"\[bench\] out: boot \d+s; T=0 c=1: [0-9.]+ tok/s x[0-9.]+ accept 4\.00{lat} \(4/4 identical "
                     rf"to baseline\); T=0 c=2: [0-9.]+ tok/s x[0-9.]+ accept 4\.00{lat} \(4/4 identical to baseline\)",
                     res.stdout), res.stdout

    m = metrics(out)
    assert m["status"] == "ok" and m["algorithm"] == "EAGLE3" and m["key"]
    assert m["schema"] == 3
    assert m["requested"] == {"num_steps": 3, "topk": 1, "num_draft_tokens": 4, "adaptive": False,
                              "adaptive_config": None}
    assert m["server_settings"]["speculative_algorithm"] == "EAGLE3"
    assert m["effective"] == {"num_steps": 3, "topk": 1, "num_draft_tokens": 4, "adaptive": False,
                              "adaptive_config": None}
    assert m["boot_s"] > 0 and m["gpu_seconds"] >= m["boot_s"]
    assert Path(m["server_log"]) == out / "server.log" and "fired up" in (out / "server.log").read_text()

    base_dir = Path(m["baseline_dir"])
    assert base_dir.parent == out / "baseline" and baseline_dirs(out) == [base_dir]
    base = metrics(base_dir)
    assert base["status"] == "ok" and base["effective"] is None
    assert base["server_settings"].get("speculative_algorithm") is None
    assert (base_dir / "records.jsonl").is_file() and (base_dir / "server.log").is_file()

    assert set(m["levels"]) == {"T0_c1", "T0_c2"}
    for key, lv in m["levels"].items():
        assert lv["temperature"] == 0.0 and lv["concurrency"] in (1, 2)
        assert lv["requests"] == 4 and lv["failed_requests"] == 0 and lv["output_tokens"] == 64
        assert lv["output_tok_per_s"] > 0
        assert 0.016 <= lv["latency_p50_s"] <= lv["latency_p90_s"]  # the fake sleeps 1 ms per token
        assert lv["tpot_s"] > 0
        assert lv["accept_length"] == pytest.approx(4.0) and lv["acceptance_rate"] == pytest.approx(1.0)
        assert lv["server_accept_length"] == pytest.approx(4.0)
        assert lv["baseline_tok_per_s"] == base["levels"][key]["output_tok_per_s"] > 0
        assert lv["speedup"] == pytest.approx(lv["output_tok_per_s"] / lv["baseline_tok_per_s"])
        assert base["levels"][key]["accept_length"] is None
        # the fake accepts every draft: each request's 4 verify rounds accepted 3 drafts each
        assert lv["accept_histogram"] == [0, 0, 0, 16] and lv["histogram_requests"] == 4
        cats = lv["by_category"]
        assert sum(c["requests"] for c in cats.values()) == 4 and set(cats) <= CATEGORIES
        assert all(c["accept_length"] == pytest.approx(4.0) for c in cats.values())

    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert [r["concurrency"] for r in records] == [1] * 4 + [2] * 4  # warm-up requests are not recorded
    assert all(r["ok"] and r["completion_tokens"] == 16 and r["spec_verify_ct"] == 4 for r in records)
    assert all(r["output_ids"] == [5] * 16 for r in records)  # kept for the lossless check
    # streamed: 3 steps, every draft accepted -> each chunk a verify round of 4 tokens
    assert all(r["streamed"] and r["chunk_tokens"] == [4] * 4 and len(r["chunk_s"]) == 4 for r in records)
    assert all(r["ttft_s"] == r["chunk_s"][0] and r["chunk_s"] == sorted(r["chunk_s"]) for r in records)
    for lv in m["levels"].values():
        assert lv["streamed"] is True
        for name in ("ttft", "itl", "itl_token", "tpot"):
            assert 0 < lv[f"{name}_p50_s"] <= lv[f"{name}_p90_s"] <= lv[f"{name}_p99_s"]
        # a chunk of 4 tokens: the gap per token is a quarter of the gap between chunks
        assert lv["itl_token_p50_s"] == pytest.approx(lv["itl_p50_s"] / 4)
    for lv in m["levels"].values():  # the fake returns the same tokens with and without speculation
        assert (lv["lossless_compared"], lv["lossless_identical"], lv["lossless_first_difference"]) == (4, 4, None)
        assert lv["reference_accept_length"] is None and lv["served_as_trained"] is None
    if not torch.cuda.is_available():  # bench.reference auto: computed on a GPU only
        assert m["reference"]["status"] == "skipped" and "no CUDA GPU" in m["reference"]["reason"]
    assert [r["i"] for r in records] == [0, 1, 2, 3] * 2


def test_one_server_measures_every_temperature_at_every_concurrency(tmp_path, bench_job):
    out = tmp_path / "out"
    res = bench_job("mode=bench", *WORKLOAD, "bench.num_prompts=2", "bench.concurrency=[1,3]",
                    "bench.temperature=[0,0.7]", "bench.baseline=false", "spec.num_steps=1", "spec.topk=1",
                    output_dir=out)
    assert res.returncode == 0, res.output
    assert (out / "server.log").read_text().count("fired up") == 1  # one server for all four levels
    m = metrics(out)
    assert list(m["levels"]) == ["T0_c1", "T0_c3", "T0.7_c1", "T0.7_c3"]
    # at least twice the concurrency in requests, so the server holds that many for most of the level
    assert [lv["requests"] for lv in m["levels"].values()] == [2, 6, 2, 6]
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert [(r["temperature"], r["concurrency"]) for r in records] == \
        [(0.0, 1)] * 2 + [(0.0, 3)] * 6 + [(0.7, 1)] * 2 + [(0.7, 3)] * 6


def _fake_nvidia_smi(tmp_path: Path, process_listed_times: int) -> dict:
    """A stand-in nvidia-smi on PATH: one H100, and a process on it for its first N process queries."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    count = tmp_path / "smi-count"
    smi.write_text("#!/bin/sh\ncase \"$1\" in\n"
                   "  --query-gpu=*) echo 'NVIDIA H100 80GB HBM3, GPU-1234' ;;\n"
                   f"  --query-compute-apps=*) echo x >> {count}\n"
                   f"    [ $(wc -l < {count}) -le {process_listed_times} ] && echo '4242, python3, 48000 MiB' ;;\n"
                   "esac\nexit 0\n")
    smi.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def test_the_card_and_a_process_that_stays_on_it_are_recorded(tmp_path, bench_job):
    out = tmp_path / "out"
    res = bench_job("mode=bench", *WORKLOAD, "bench.baseline=false", "spec.num_steps=1", "spec.topk=1",
                    "bench.gpu_free_wait_s=1.5", output_dir=out, env=_fake_nvidia_smi(tmp_path, process_listed_times=1000))
    assert res.returncode == 0, res.output
    assert "[bench] waiting up to 1.5s for 1 process(es) to leave the GPU" in res.log
    assert "[bench] warning: other processes use the GPU; numbers may be off: 4242, python3, 48000 MiB" in res.log
    m = metrics(out)
    assert m["gpu"] == ["NVIDIA H100 80GB HBM3, GPU-1234"]
    assert m["other_gpu_processes"] == ["4242, python3, 48000 MiB"]


def test_a_process_leaving_the_gpu_is_waited_for_not_recorded(tmp_path, bench_job):
    # e.g. the previous point's server, still releasing its memory when this point starts
    out = tmp_path / "out"
    res = bench_job("mode=bench", *WORKLOAD, "bench.baseline=false", "spec.num_steps=1", "spec.topk=1",
                    output_dir=out, env=_fake_nvidia_smi(tmp_path, process_listed_times=2))
    assert res.returncode == 0, res.output
    assert "[bench] waiting up to 30s for 1 process(es) to leave the GPU" in res.log
    assert "numbers may be off" not in res.output
    assert metrics(out)["other_gpu_processes"] == []


def test_gpu_memory_the_job_holds_itself_is_named_not_waited_for(tmp_path, bench_job):
    # nvidia-smi's parent is the job's own process (here this one): a wait for it to leave could never end
    out = tmp_path / "out"
    bin_dir = tmp_path / "smi-bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\ncase \"$1\" in\n"
                   "  --query-gpu=*) echo 'NVIDIA H100 80GB HBM3, GPU-1234' ;;\n"
                   "  --query-compute-apps=*) echo \"$PPID, python3, 23634 MiB\" ;;\n"
                   "esac\nexit 0\n")
    smi.chmod(0o755)
    res = bench_job("mode=bench", *WORKLOAD, "bench.baseline=false", "spec.num_steps=1", "spec.topk=1",
                    output_dir=out, env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert res.returncode == 0, res.output
    assert "[bench] warning: this process holds GPU memory itself:" in res.log
    assert "23634 MiB (this process)" in res.log
    assert "waiting up to" not in res.output and "numbers may be off" not in res.output
    assert metrics(out)["other_gpu_processes"] == []


def test_a_point_resumed_on_another_card_sglang_or_edited_prompts_is_measured_again(tmp_path, bench_job):
    """A sweep carried to another machine: a card of the same model (another UUID) reuses the point and its
    baseline; a card of another model, another SGLang release or the prompts file edited in place measures both
    again, rather than rank one card's, release's or workload's numbers beside another's."""
    bin_dir, card = tmp_path / "smi-bin", tmp_path / "card"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\ncase \"$1\" in\n  --query-gpu=*) cat {card} ;;\nesac\nexit 0\n")
    smi.chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(f'{{"prompt": "Count to {n}."}}\n' for n in range(4)))
    out = tmp_path / "out"
    args = ("mode=bench", *WORKLOAD, "spec.num_steps=1", "spec.topk=1", f"bench.prompts={prompts}")
    card.write_text("NVIDIA H100 80GB HBM3, GPU-aaaa\n")
    assert bench_job(*args, output_dir=out, env=env).returncode == 0
    first = metrics(out)
    card.write_text("NVIDIA H100 80GB HBM3, GPU-bbbb\n")  # another machine, the same model
    again = bench_job(*args, output_dir=out, env=env)
    assert again.returncode == 0 and "already complete (ok); skipped" in again.log, again.output
    card.write_text("NVIDIA H200, GPU-cccc\n")
    other = bench_job(*args, output_dir=out, env=env)
    assert other.returncode == 0, other.output
    assert "already complete" not in other.log
    assert "measuring the no-speculation baseline once" in other.log  # the H100's baseline is not this card's
    m = metrics(out)
    assert m["key"] != first["key"] and m["gpu"] == ["NVIDIA H200, GPU-cccc"]
    assert Path(m["baseline_dir"]).name != Path(first["baseline_dir"]).name
    assert first["sglang_installed"] == m["sglang_installed"] == "0.5.17"  # the fake's release when unset
    upgraded = bench_job(*args, output_dir=out, env={**env, "FAKE_SGLANG_RELEASE": "0.5.18"})
    assert upgraded.returncode == 0, upgraded.output
    assert "already complete" not in upgraded.log and "measuring the no-speculation baseline once" in upgraded.log
    assert metrics(out)["sglang_installed"] == "0.5.18"
    prompts.write_text("".join(f'{{"prompt": "Name {n} colours."}}\n' for n in range(4)))  # the same path, edited
    edited = bench_job(*args, output_dir=out, env={**env, "FAKE_SGLANG_RELEASE": "0.5.18"})
    assert edited.returncode == 0 and "already complete" not in edited.log, edited.output
    assert "measuring the no-speculation baseline once" in edited.log
    assert metrics(out)["prompts_content"] not in (None, first["prompts_content"])


def test_a_level_the_servers_kv_cache_cannot_hold_at_once_fails_the_point(tmp_path, cache, monkeypatch, caplog):
    """A cache of 50 tokens: the baseline's 2 requests of 8 + 16 tokens fit (48), the point's with 4 draft
    slots each do not (56): its level at concurrency 2 would have measured a queue, so the point fails."""
    monkeypatch.setenv("AUTOMODEL_SPEC_CACHE", str(cache))
    monkeypatch.setenv("FAKE_SGLANG_KV_TOKENS", "50")
    caplog.set_level(logging.INFO, logger="automodel_spec")
    out = tmp_path / "out"
    code = run_recipe("serve", "mode=bench", *WORKLOAD, "spec.num_steps=3", "spec.topk=1", output_dir=out)
    assert code == 1, caplog.text
    m = metrics(out)
    assert m["status"] == "failed" and list(m["levels"]) == ["T0_c1"]  # the level that fitted is kept
    assert ("the server's KV cache holds 50 tokens (max_total_num_tokens of /server_info), fewer than concurrency 2 "
            "x 28 tokens per request (8 prompt + 16 generated + 4 draft) = 56") in m["error"]
    base = metrics(baseline_dirs(out)[0])
    assert base["status"] == "ok" and base["server_settings"]["max_total_num_tokens"] == 50


def test_single_bench_run_of_an_invalid_setting_is_recorded_and_fails(tmp_path, cache, monkeypatch, caplog):
    """In this process (the recipe's job on the composed config): nothing here needs one of its own."""
    monkeypatch.setenv("AUTOMODEL_SPEC_CACHE", str(cache))
    caplog.set_level(logging.INFO, logger="automodel_spec")
    out = tmp_path / "out"
    code = run_recipe("serve", "mode=bench", *WORKLOAD, "spec.num_steps=3", "spec.topk=1", "spec.num_draft_tokens=2",
                      output_dir=out)
    assert code == 1, caplog.text
    m = metrics(out)
    assert m["status"] == "invalid"
    assert "set spec.num_draft_tokens=4 (got 2" in m["reason"]
    assert "[bench] out: skipped, invalid setting" in caplog.text
    assert not (out / "server.log").exists() and not (out / "baseline").exists()  # no server was started


def test_print_only_bench_writes_nothing(tmp_path, cache):
    before = tree(cache)
    cwd = tmp_path / "cwd"
    res = run_cli(SERVE, "print_only=true", "mode=bench", *WORKLOAD, "spec.num_steps=3", "spec.topk=1",
                  cwd=cwd, cache=cache)
    assert res.returncode == 0, output(res)
    assert "print_only: nothing was written" in res.stdout
    assert "--speculative-num-steps 3" in res.stdout
    assert tree(cwd) == {}
    assert tree(cache) == before


@pytest.mark.slow
def test_print_only_sweep_writes_nothing(tmp_path, cache):
    before = tree(cache)
    cwd = tmp_path / "cwd"
    res = run_cli(SERVE, "-m", "+sweep=grid", "print_only=true", *WORKLOAD, "bench.name=p",
                  "spec.num_steps=1,3", "spec.topk=1", cwd=cwd, cache=cache)
    assert res.returncode == 0, output(res)
    assert res.stdout.count("print_only: nothing was written") == 2
    assert tree(cwd) == {}, "a print_only sweep wrote files"
    assert tree(cache) == before


# --- a grid sweep, run twice ----------------------------------------------------------------------

# spec.num_steps=1,3,5 x spec.topk=1,2 with 4 draft tokens: a chain needs steps+1 tokens and a tree
# holds at most steps*topk+1, so (1,1), (1,2) and (5,1) are invalid; (3,1) crashes (the fake is told
# to), and (3,2) and (5,2) are measured.
GRID = ["-m", "+sweep=grid", *WORKLOAD, "bench.name=g", "spec.num_steps=1,3,5", "spec.topk=1,2",
        "spec.num_draft_tokens=4"]
CRASH = {"FAKE_SGLANG_CRASH_IF": "--speculative-num-steps 3 --speculative-eagle-topk 1 "}
INVALID = {"spec.num_draft_tokens=4,spec.num_steps=1,spec.topk=1": "set spec.num_draft_tokens=2 (got 4",
           "spec.num_draft_tokens=4,spec.num_steps=1,spec.topk=2": "num_steps*topk+1 = 1*2+1 = 3",
           "spec.num_draft_tokens=4,spec.num_steps=5,spec.topk=1": "set spec.num_draft_tokens=6 (got 4"}
CRASHED = "spec.num_draft_tokens=4,spec.num_steps=3,spec.topk=1"
MEASURED = ["spec.num_draft_tokens=4,spec.num_steps=3,spec.topk=2", "spec.num_draft_tokens=4,spec.num_steps=5,spec.topk=2"]


@pytest.fixture(scope="module")
def grid(tmp_path_factory, cache):
    """The grid sweep with one crashing point, then the identical command again without the crash."""
    cwd = tmp_path_factory.mktemp("grid")
    first = run_cli(SERVE, *GRID, cwd=cwd, cache=cache, env=CRASH)
    root = cwd / "sweeps" / "g"
    after_first = tree(root)
    statuses_first = {p.parent.name: metrics(p.parent)["status"] for p in root.glob("*/metrics.json")}
    summary_first = (root / "summary.md").read_text() if (root / "summary.md").exists() else ""
    crashed_first = metrics(root / CRASHED) if (root / CRASHED / "metrics.json").exists() else {}
    second = run_cli(SERVE, *GRID, cwd=cwd, cache=cache)
    after_second = tree(root)
    baselines_second = baseline_dirs(root)
    crashed_second = metrics(root / CRASHED)
    measured_second = {p: metrics(root / p) for p in MEASURED}
    summary_second = (root / "summary.md").read_text()
    # Timeouts and the objective's level are not part of a measurement: a third run changing them reuses all.
    third = run_cli(SERVE, *GRID, "sglang.ready_timeout_s=45", "sglang.stop_timeout_s=5", "bench.request_timeout_s=30",
                    "bench.objective_concurrency=2", cwd=cwd, cache=cache)
    return {"root": root, "first": first, "second": second, "third": third, "after_first": after_first,
            "after_second": after_second, "statuses_first": statuses_first, "summary_first": summary_first,
            "crashed_first": crashed_first, "baselines_second": baselines_second,
            "crashed_second": crashed_second, "summary_second": summary_second, "measured_second": measured_second}


@pytest.mark.slow
def test_sweep_records_invalid_and_crashed_points_and_goes_on(grid):
    first = grid["first"]
    assert first.returncode == 0, output(first)
    assert grid["statuses_first"] == {**dict.fromkeys(INVALID, "invalid"), CRASHED: "failed",
                                      **dict.fromkeys(MEASURED, "ok")}
    # The crash is neither the first nor the last job: jobs after it still ran.
    launched = re.findall(r"#(\d+) : spec\.num_steps=(\d) spec\.topk=(\d)", first.stdout)
    assert [(s, k) for _, s, k in launched] == [("1", "1"), ("1", "2"), ("3", "1"), ("3", "2"), ("5", "1"),
                                                ("5", "2")]
    assert "job 2 failed with code 1; continuing the sweep" in first.stderr
    assert f"[bench] {CRASHED}: failed: the server exited with code 3 during startup" in first.stdout
    crashed = grid["crashed_first"]
    assert crashed["key"] and "CUDA out of memory (simulated)" in crashed["error"]  # the server log's tail
    assert crashed["levels"] == {} and crashed["gpu_seconds"] > 0
    md = grid["summary_first"]
    for point, reason in INVALID.items():
        assert f"- {point}: invalid: " in md and reason in md
    assert f"- {CRASHED}: failed: the server exited with code 3 during startup" in md


@pytest.mark.slow
def test_invalid_and_failed_points_say_why(grid):
    root = grid["root"]
    for point, reason in INVALID.items():
        m = metrics(root / point)
        assert m["status"] == "invalid" and reason in m["reason"]
        assert not (root / point / "server.log").exists()


@pytest.mark.slow
def test_sweep_summary_files(grid):
    root = grid["root"]
    for name in ("summary.csv", "summary.md", "best_override.txt"):
        assert (root / name).is_file() and (root / name).stat().st_size > 0, name
    for conc in (1, 2):
        png = (root / f"heatmap_T0_c{conc}.png").read_bytes()
        assert png.startswith(PNG_MAGIC) and len(png) > 1000
    lines = (root / "best_override.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["temperature 0, concurrency 1", "temperature 0, concurrency 2"]
    # The fake's speedups hover around 1 (it proves plumbing, not speed): either the best setting, or
    # no speculation with the best setting named.
    setting = r"spec\.num_steps=\d spec\.topk=\d spec\.num_draft_tokens=4"
    assert all(re.search(rf": {setting}  # [0-9.]+ tok/s, x[0-9.]+$", line)
               or re.search(rf": algorithm=none  # no setting beat no speculation \([0-9.]+ tok/s\); "
                            rf"best was {setting} at x0\.[0-9]+$", line) for line in lines), lines
    assert "[sweep] summary:" in grid["second"].stdout


@pytest.mark.slow
def test_sweep_measures_the_baseline_once_and_shares_it(grid):
    root = grid["root"]
    (base_dir,) = grid["baselines_second"]
    assert metrics(base_dir)["status"] == "ok"
    assert grid["first"].stdout.count("measuring the no-speculation baseline") == 1
    for m in grid["measured_second"].values():
        assert (root.parents[1] / m["baseline_dir"]).resolve() == base_dir.resolve()  # relative to the cwd
        for lv in m["levels"].values():
            assert lv["speedup"] == pytest.approx(lv["output_tok_per_s"] / lv["baseline_tok_per_s"])
    assert grid["measured_second"][MEASURED[1]]["levels"]["T0_c1"]["accept_length"] == pytest.approx(16 / 3)  # 5 steps


@pytest.mark.slow
def test_rerun_skips_complete_points_reuses_the_baseline_and_retries_the_failed_one(grid):
    root, second, before, after = grid["root"], grid["second"], grid["after_first"], grid["after_second"]
    assert second.returncode == 0, output(second)
    for point in MEASURED:
        assert f"[bench] {point}: already complete (ok); skipped" in second.stdout
        rel = f"{point}/metrics.json"
        assert after[rel] == before[rel], f"{rel} was rewritten"
    (base_dir,) = grid["baselines_second"]
    rel = f"baseline/{base_dir.name}/metrics.json"
    assert after[rel] == before[rel]
    assert "measuring the no-speculation baseline" not in second.stdout
    # The failed point ran again (the fake no longer crashes): now it is measured.
    assert f"{CRASHED}: already complete" not in second.stdout
    m = grid["crashed_second"]
    assert m["status"] == "ok" and m["levels"]["T0_c1"]["accept_length"] == pytest.approx(4.0)
    assert (root.parents[1] / m["baseline_dir"]).resolve() == base_dir.resolve()  # relative to the cwd
    md = grid["summary_second"]
    assert f"- {CRASHED}: failed" not in md
    assert all(f"- {p}: invalid: " in md for p in INVALID)


# --- Optuna ---------------------------------------------------------------------------------------


def _has_optuna_sweeper() -> bool:
    try:  # find_spec of a submodule raises when the namespace package is absent
        return importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _has_optuna_sweeper(), reason="hydra-optuna-sweeper is not installed")
def test_optuna_sweep_runs_its_trials_and_summarizes(tmp_path, cache):
    cwd = tmp_path / "cwd"
    res = run_cli(SERVE, "-m", "+sweep=optuna", "hydra.sweeper.n_trials=3", *WORKLOAD, "bench.name=o",
                  cwd=cwd, cache=cache, timeout=120)
    assert res.returncode == 0, output(res)
    trials = re.findall(r"#(\d+) : spec\.num_steps=(\d+) spec\.topk=(\d+)", res.stdout)
    assert [n for n, _, _ in trials] == ["0", "1", "2"], res.stdout
    root = cwd / "sweeps" / "o"
    points = {f"spec.num_steps={s},spec.topk={k}" for _, s, k in trials}
    assert {p.parent.name for p in root.glob("*/metrics.json")} == points
    results = {p: metrics(root / p) for p in points}
    assert all(m["status"] == "ok" for m in results.values())
    assert len(baseline_dirs(root)) == 1
    assert (root / "summary.md").is_file() and (root / "best_override.txt").is_file()
    # The sweeper maximized the objective each job returned: tokens/s at the first concurrency level.
    best = yaml.safe_load((root / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(m["levels"]["T0_c1"]["output_tok_per_s"] for m in results.values()))


@pytest.mark.slow
def test_rerun_with_other_timeouts_reuses_every_measurement(grid):
    root, third, before = grid["root"], grid["third"], grid["after_second"]
    assert third.returncode == 0, output(third)
    assert third.stdout.count("already complete (ok); skipped") == 3, third.stdout
    assert "measuring the no-speculation baseline" not in third.stdout
    assert len(baseline_dirs(root)) == 1
    now = tree(root)
    measured = [f"{p}/metrics.json" for p in (*MEASURED, CRASHED)] + \
        [f"baseline/{d.name}/metrics.json" for d in baseline_dirs(root)]
    assert [now[k] for k in measured] == [before[k] for k in measured]  # not rewritten
    assert {p.parent.name for p in root.glob("*/metrics.json")} == {*INVALID, CRASHED, *MEASURED}
