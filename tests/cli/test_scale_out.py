"""Scale-out as a user runs it: parallel sweeps (joblib), submitit, SLURM settings, multi-node flags.

Servers are the fake (tests/fakes/fake_sglang.py) and nvidia-smi is the fake in tests/fakes/bin
(two GPUs; it lists the fake servers that are running, on the GPUs of their CUDA_VISIBLE_DEVICES).
The fake server appends its start and stop, port and CUDA_VISIBLE_DEVICES to FAKE_SGLANG_RECORD, so
a test can check that no two servers ever held a GPU or a port at the same time. Every run leaves
no process behind (``run_cli`` checks through /proc). Each test has its own lease directory.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import run_recipe
from test_bench_cli import (
    SERVE,
    TAG_VAR,
    WORKLOAD,
    assert_nothing_left,
    metrics,
    output,
    run_cli,
)

FAKE_BIN = Path(__file__).resolve().parents[1] / "fakes" / "bin"


def _has(plugin: str) -> bool:
    try:
        return importlib.util.find_spec(f"hydra_plugins.{plugin}") is not None
    except ModuleNotFoundError:
        return False


needs_joblib = pytest.mark.skipif(not _has("hydra_joblib_launcher"), reason="hydra-joblib-launcher is not installed")
needs_submitit = pytest.mark.skipif(not _has("hydra_submitit_launcher"),
                                    reason="hydra-submitit-launcher is not installed")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process checks use /proc")


def two_gpus(tmp_path: Path, **extra: str) -> dict:
    """The environment of a host with two (fake) GPUs whose servers are recorded."""
    record = tmp_path / "servers.jsonl"
    return {"PATH": f"{FAKE_BIN}{os.pathsep}{os.environ['PATH']}", "FAKE_NVIDIA_SMI_GPUS": "2",
            "FAKE_SGLANG_RECORD": str(record), "FAKE_NVIDIA_SMI_RECORD": str(record),
            "AUTOMODEL_SPEC_LOCK_DIR": str(tmp_path / "leases"), **extra}


def servers(record: Path) -> list[dict]:
    """Each server's life from the record: pid, port, GPUs, start and stop time."""
    lives: dict[int, dict] = {}
    for line in record.read_text().splitlines():
        e = json.loads(line)
        life = lives.setdefault(e["pid"], {"pid": e["pid"], "port": e["port"], "algorithm": e.get("algorithm"),
                                           "gpus": set((e["cuda_visible_devices"] or "").split(","))})
        life[e["event"]] = e["time"]
    return list(lives.values())


def overlapping(a: dict, b: dict) -> bool:
    return a["start"] < b["stop"] and b["start"] < a["stop"]


# --- one host, several GPUs -----------------------------------------------------------------------


def _summary_rows(root: Path) -> list[tuple]:
    with open(root / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    keep = ("point", "status", "temperature", "concurrency", "num_steps", "topk", "num_draft_tokens", "accept_length")
    return sorted(tuple(r.get(k) for k in keep) for r in rows)


def _best(root: Path) -> list[str]:
    return [line.split("#")[0].strip() for line in (root / "best_override.txt").read_text().splitlines()]


@needs_joblib
def test_servers_sharing_a_gpu_start_side_by_side_and_are_measured_alone(tmp_path, cache):
    # one GPU, bench.servers_per_gpu=2: two servers on it at once, but while one is measured (its
    # requests), no other server starts, stops or is measured; the idle one is not "another process"
    env = two_gpus(tmp_path, FAKE_NVIDIA_SMI_GPUS="1", FAKE_SGLANG_BOOT_S="3", FAKE_SGLANG_STEP_MS="2",
                   FAKE_SGLANG_RECORD_REQUESTS="1")
    res = run_cli(SERVE, "-m", "+sweep=grid", "+launcher=parallel", *WORKLOAD, "bench.concurrency=[1]",
                  "bench.name=shared", "bench.servers_per_gpu=2", "sglang.mem_fraction_static=0.4",
                  "spec.num_steps=1,2,3", "spec.topk=1", cwd=tmp_path / "cwd", cache=cache, env=env, timeout=150)
    assert res.returncode == 0, output(res)
    assert "Joblib.Parallel(n_jobs=2," in output(res)  # 1 GPU x 2 servers per GPU
    events = [json.loads(line) for line in (tmp_path / "servers.jsonl").read_text().splitlines()]
    lives = {e["pid"]: {} for e in events}
    for e in events:
        if e["event"] == "generate":
            lives[e["pid"]].setdefault("first", e["time"])
            lives[e["pid"]]["last"] = e["time"]
        else:
            lives[e["pid"]][e["event"]] = e["time"]
    assert len(lives) == 4 and all({"start", "sized", "ready", "first", "stop"} <= set(v) for v in lives.values()), lives
    together = [(a, b) for a in lives.values() for b in lives.values()
                if a is not b and a["start"] < b["stop"] and b["start"] < a["stop"]]
    assert together, f"no two servers shared the GPU; the test proved nothing: {lives}"
    # starts overlap, but a server starts only once the one starting before it has sized its memory
    booting_together = [(a, b) for a, b in together if a["start"] <= b["start"] < a["ready"]]
    assert booting_together, f"no two servers booted side by side: {lives}"
    assert all(b["start"] >= a["sized"] for a, b in booting_together), booting_together
    for pid, me in lives.items():
        for other_pid, other in lives.items():
            if other_pid == pid:
                continue
            for what in ("start", "ready", "stop"):  # a start runs from "start" to "ready"
                t = other[what]
                assert not me["first"] < t < me["last"], f"server {other_pid} {what} while {pid} was measured"
            assert not (me["first"] < other["last"] and other["first"] < me["last"]), "two measured at once"
    root = tmp_path / "cwd" / "sweeps" / "shared"
    points = [metrics(p.parent) for p in root.glob("spec*/metrics.json")]
    assert len(points) == 3 and all(m["status"] == "ok" and m["other_gpu_processes"] == [] for m in points)
    # the two servers started first (the baseline's and a point's) start together: one is measured beside the other
    measured = points + [metrics(p.parent) for p in (root / "baseline").glob("*/metrics.json")]
    assert any(m["idle_servers"] == 1 for m in measured), [m["idle_servers"] for m in measured]
    assert "numbers may be off" not in output(res) and "waiting up to" not in output(res)
    assert "beside 1 idle server(s) of other points" in output(res)


def test_servers_per_gpu_needs_a_memory_share_for_each(tmp_path, cache):
    res = run_cli(SERVE, "-m", "+sweep=grid", *WORKLOAD, "bench.name=mem", "bench.servers_per_gpu=4",
                  "spec.num_steps=1", "spec.topk=1", cwd=tmp_path / "cwd", cache=cache,
                  env={"FAKE_SGLANG_RECORD": str(tmp_path / "servers.jsonl")})
    assert res.returncode != 0
    assert ("bench.servers_per_gpu=4 puts that many servers on one GPU; sglang.mem_fraction_static=None would let "
            "each take more than its share of the GPU's memory. Set sglang.mem_fraction_static=0.22 or lower.") in output(res)
    assert not (tmp_path / "servers.jsonl").exists()


@needs_joblib
def test_a_parallel_sweep_shares_the_gpus_and_summarizes_like_a_serial_one(tmp_path, cache):
    """One parallel sweep on two (fake) GPUs, held against the same grid run serially: two jobs at once
    never share a GPU or a port, points do not wait for the shared baseline, and the summary is the
    serial one's. (One parallel run for the three: each is a check of the same run, ~5 s of CPU each.)"""
    # speed follows the accept length (3 ms a forward pass), so the ranking does not hang on noise, and the
    # baseline's measurement lasts long enough for a point to start beside it
    grid = ["-m", "+sweep=grid", *WORKLOAD, "bench.concurrency=[1]", "bench.max_new_tokens=64", "bench.name=same",
            "spec.num_steps=1,2,3,5", "spec.topk=1"]
    env = {"FAKE_SGLANG_STEP_MS": "3"}
    serial = run_cli(SERVE, *grid, cwd=tmp_path / "serial", cache=cache, env=env, timeout=150)
    assert serial.returncode == 0, output(serial)
    parallel = run_cli(SERVE, *grid, "+launcher=parallel", "bench.gpu_free_wait_s=5", cwd=tmp_path / "parallel",
                       cache=cache, env=two_gpus(tmp_path, FAKE_SGLANG_BOOT_S="1", **env), timeout=150)
    assert parallel.returncode == 0, output(parallel)
    a, b = tmp_path / "serial" / "sweeps" / "same", tmp_path / "parallel" / "sweeps" / "same"

    # two concurrent jobs never share a GPU or a port
    assert "Joblib.Parallel(n_jobs=2," in output(parallel)  # the default: the pool's 2 GPUs / sglang.tp_size=1
    lives = servers(tmp_path / "servers.jsonl")
    assert len(lives) == 5  # 4 points and the shared baseline, each server stopped
    assert all("start" in s and "stop" in s and s["gpus"] <= {"0", "1"} and len(s["gpus"]) == 1 for s in lives), lives
    together = [(x, y) for i, x in enumerate(lives) for y in lives[i + 1:] if overlapping(x, y)]
    assert together, f"no two servers ran at once; the test proved nothing: {lives}"
    for x, y in together:
        assert not x["gpus"] & y["gpus"], f"two servers on GPU {x['gpus'] & y['gpus']} at once: {x} {y}"
        assert x["port"] != y["port"], f"two servers on port {x['port']} at once: {x} {y}"
    points = [metrics(p.parent) for p in b.glob("spec*/metrics.json")]
    assert len(points) == 4 and all(m["status"] == "ok" for m in points)
    assert {tuple(m["gpus"]) for m in points} <= {("0",), ("1",)}
    # the other job's server, listed by nvidia-smi on the other GPU, was neither waited for nor recorded
    assert all(m["other_gpu_processes"] == [] for m in points)
    assert "waiting up to" not in parallel.stdout
    assert parallel.stdout.count("measuring the no-speculation baseline") == 1

    # a point started beside the baseline's measurement goes on with its own server on the other GPU,
    # and the summary joins its speedups once the baseline is there
    baseline = [s for s in lives if s["algorithm"] is None]
    assert len(baseline) == 1, lives
    beside = [s for s in lives if s["algorithm"] and overlapping(s, baseline[0])]
    assert beside, f"every point waited for the baseline's server: {lives}"
    assert "goes on without waiting" in parallel.stdout
    with open(b / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and all(r["status"] == "ok" and float(r["speedup"]) > 0 for r in rows), rows
    assert all(float(r["baseline_tok_per_s"]) > 0 for r in rows)

    # the summary is the serial one's
    assert _summary_rows(a) == _summary_rows(b) and len(_summary_rows(a)) == 4
    assert _best(a) == _best(b) == ["temperature 0, concurrency 1: spec.num_steps=5 spec.topk=1 spec.num_draft_tokens=6"]
    assert sorted(p.name for p in a.iterdir() if p.name.startswith("spec")) == \
        sorted(p.name for p in b.iterdir() if p.name.startswith("spec"))  # +launcher does not name a point


@needs_joblib
def test_a_parallel_sweep_whose_every_point_failed_exits_1(tmp_path, cache):
    # the jobs run in joblib's worker processes: their codes reach the recipe through the sweep dir
    res = run_cli(SERVE, "-m", "+sweep=grid", "+launcher=parallel", "hydra.launcher.n_jobs=2", *WORKLOAD,
                  "bench.name=f", "bench.baseline=false", "spec.num_steps=1,3", "spec.topk=1", cwd=tmp_path / "cwd",
                  cache=cache, env={"FAKE_SGLANG_CRASH_IF": "--port", "AUTOMODEL_SPEC_LOCK_DIR": str(tmp_path / "l")})
    assert res.returncode == 1, output(res)
    root = tmp_path / "cwd" / "sweeps" / "f"
    assert sorted(json.loads(p.read_text())["code"] for p in (root / ".job_codes").glob("*.json")) == [1, 1]
    assert all(metrics(p.parent)["status"] == "failed" for p in root.glob("spec*/metrics.json"))


def test_a_server_that_could_not_bind_is_started_again_on_another_port(tmp_path, bench_job):
    # the job in this process (bench_job, tests/cli/conftest.py): its [bench] lines are in its log
    out = tmp_path / "out"
    res = bench_job("mode=bench", *WORKLOAD, "bench.baseline=false", "spec.num_steps=1", "spec.topk=1",
                    output_dir=out, env={"FAKE_SGLANG_BIND_FAIL_ONCE": str(tmp_path / "failed-once"),
                                         "AUTOMODEL_SPEC_LOCK_DIR": str(tmp_path / "l")})
    assert res.returncode == 0, res.output
    assert "[bench] the server could not bind its address (port " in res.log
    assert "starting it again on another port (2/3)" in res.log
    assert metrics(out)["status"] == "ok"


@needs_joblib
@pytest.mark.parametrize(("sig", "code", "group"), [(signal.SIGTERM, 143, False), (signal.SIGINT, 130, True)],
                         ids=["SIGTERM-to-the-recipe", "Ctrl-C-to-the-terminal-group"])
def test_a_signal_stops_a_parallel_sweep_and_every_server(tmp_path, cache, sig, code, group):
    # joblib answers an interrupted Parallel() by killing its workers' process trees (SIGKILL), which
    # can cut a job's own stop of its server short: what is left then goes as SGLang's children go,
    # with their parent (the fake is told to do as they do)
    env = two_gpus(tmp_path, FAKE_SGLANG_BOOT_S="60", FAKE_SGLANG_CHILDREN_DIE_WITH_PARENT="1")
    tag = uuid.uuid4().hex
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("FAKE_SGLANG_", "AUTOMODEL_SPEC_", "HYDRA_"))}
    full_env.update(AUTOMODEL_SPEC_CACHE=str(cache), PYTHONUNBUFFERED="1", **{TAG_VAR: tag}, **env)
    (tmp_path / "cwd").mkdir()
    proc = subprocess.Popen([sys.executable, str(SERVE), "-m", "+sweep=grid", "+launcher=parallel", *WORKLOAD,
                             "bench.name=s", "bench.baseline=false", "spec.num_steps=1,3", "spec.topk=1"],
                            cwd=tmp_path / "cwd", env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        record = tmp_path / "servers.jsonl"
        deadline = time.monotonic() + 60
        while not (record.exists() and record.read_text().count('"start"') >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, "two servers never started"
            time.sleep(0.1)
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == code, out[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        assert_nothing_left(tag, timeout=15)


# --- clusters -------------------------------------------------------------------------------------


@needs_submitit
def test_a_sweep_through_submitit_runs_each_point_in_its_own_process(tmp_path, cache):
    args = ["-m", "+sweep=grid", "hydra/launcher=submitit_local", "hydra.launcher.gpus_per_node=1",
            "hydra.launcher.timeout_min=5", *WORKLOAD, "bench.name=c", "spec.num_steps=1,3", "spec.topk=1"]
    res = run_cli(SERVE, *args, cwd=tmp_path / "cwd", cache=cache, env={"AUTOMODEL_SPEC_LOCK_DIR": str(tmp_path / "l")},
                  timeout=150)
    assert res.returncode == 0, output(res)
    root = tmp_path / "cwd" / "sweeps" / "c"
    points = {p.parent.name: metrics(p.parent) for p in root.glob("spec*/metrics.json")}
    assert sorted(points) == ["spec.num_steps=1,spec.topk=1", "spec.num_steps=3,spec.topk=1"]
    assert all(m["status"] == "ok" and m["gpus"] == ["0"] for m in points.values())  # submitit's one GPU
    logs = list((root / ".submitit").rglob("*_log.out"))
    assert len(logs) == 2 and all("[bench] spec.num_steps=" in p.read_text() for p in logs)  # the jobs ran there
    assert (root / "summary.md").is_file() and "[sweep] summary:" in res.stdout
    failed = run_cli(SERVE, *args, "bench.name=cf", cwd=tmp_path / "cwd", cache=cache, timeout=150,
                     env={"FAKE_SGLANG_CRASH_IF": "--port", "AUTOMODEL_SPEC_LOCK_DIR": str(tmp_path / "l")})
    assert failed.returncode == 1, output(failed)


@needs_submitit
def test_the_slurm_preset_maps_to_these_sbatch_settings(tmp_path, monkeypatch):
    import submitit
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    from automodel_spec.hydra.glue import register_configs

    srun = tmp_path / "bin" / "srun"  # submitit's SLURM executor looks for it; it is never run here
    srun.parent.mkdir()
    srun.write_text("#!/bin/sh\nexit 1\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{srun.parent}{os.pathsep}{os.environ['PATH']}")
    register_configs()
    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        cfg = compose("serve", overrides=["+sweep=grid", "+launcher=slurm", "sglang.tp_size=2",
                                          "hydra.launcher.partition=gpu"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert params["_target_"].endswith("SlurmLauncher") and cfg.sglang.port == 0
    # what the launcher does with them (hydra_submitit_launcher's launch), up to the sbatch file
    params.pop("_target_")
    params.pop("submitit_folder")
    executor = submitit.AutoExecutor(cluster="slurm", folder=str(tmp_path / "f"),
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    sbatch = executor._executor._make_submission_file_text("python -m job", "uid")
    for line in ("--partition=gpu", "--gpus-per-task=2", "--ntasks-per-node=1", "--nodes=1", "--cpus-per-task=8",
                 "--mem=64GB", "--time=60"):
        assert f"#SBATCH {line}\n" in sbatch, sbatch


# --- several machines -----------------------------------------------------------------------------


@pytest.fixture
def print_only(tmp_path, cache, monkeypatch, capsys):
    """Factory: ``recipes/serve.py print_only=true OVERRIDES`` on the demo cache, its job in this process
    (``helpers.run_recipe``: what is tested is the job's check of the settings, which needs no process of its
    own); returns its exit code and what it printed (``returncode``, ``stdout``, ``stderr``)."""
    monkeypatch.setenv("AUTOMODEL_SPEC_CACHE", str(cache))

    def run(*overrides: str) -> SimpleNamespace:
        code = run_recipe("serve", "print_only=true", *overrides, output_dir=tmp_path / "out")
        printed = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=printed.out, stderr=printed.err)

    return run


def test_multi_node_flags_are_shown_by_print_only(print_only):
    res = print_only("sglang.tp_size=4", "sglang.nnodes=2", "sglang.node_rank=1", "sglang.dist_init_addr=10.0.0.1:50000")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "--tp-size 4 " in res.stdout
    assert "--nnodes 2 --node-rank 1 --dist-init-addr 10.0.0.1:50000" in res.stdout


@pytest.mark.parametrize(("overrides", "expected"), [
    (["sglang.nnodes=2", "sglang.tp_size=3"],
     ["sglang.tp_size=3 is not a multiple of sglang.nnodes=2", "sglang.nnodes=2 needs sglang.dist_init_addr=HOST:PORT"]),
    (["sglang.nnodes=2", "sglang.tp_size=2", "sglang.dist_init_addr=10.0.0.1"],
     ["sglang.dist_init_addr=10.0.0.1: give it as HOST:PORT"]),
    (["sglang.nnodes=2", "sglang.tp_size=2", "sglang.dist_init_addr=10.0.0.1:port"],
     ["the port 'port' is not a port number"]),
    (["sglang.nnodes=2", "sglang.tp_size=2", "sglang.dist_init_addr=fe80::1:5000"],
     ["an IPv6 address goes in brackets"]),
    (["mode=bench", "sglang.nnodes=2", "sglang.node_rank=1", "sglang.tp_size=2", "sglang.dist_init_addr=h:1"],
     ["mode=bench with sglang.node_rank=1: only rank 0 serves requests"]),
    (["mode=bench", "sglang.tp_size=2", "bench.gpu_pool=[0]"],
     ["bench.gpu_pool=['0'] holds 1 GPU(s); sglang.tp_size=2 needs that many"]),
], ids=["tp-not-multiple-and-no-address", "no-port", "port-not-a-number", "ipv6-without-brackets",
        "bench-on-rank-1", "pool-smaller-than-tp"])
def test_multi_node_and_pool_mistakes_exit_1_naming_each(print_only, overrides, expected):
    res = print_only(*overrides)
    assert res.returncode == 1, res.stdout + res.stderr
    for needle in expected:
        assert needle in res.stderr, res.stderr


def test_serving_on_more_gpus_than_the_host_has_is_refused_before_launch(tmp_path, cache):
    res = run_cli(SERVE, f"sglang.python={Path(__file__).resolve().parents[1] / 'fakes' / 'fake_sglang.py'}",
                  "sglang.port=0", "sglang.tp_size=4", cwd=tmp_path, cache=cache, env=two_gpus(tmp_path))
    assert res.returncode == 1, output(res)
    assert "sglang.tp_size=4 needs 4 GPU(s) on this host for one server; it offers 2 (nvidia-smi)" in res.stderr
    assert not (tmp_path / "servers.jsonl").exists()  # no server was started


@pytest.mark.parametrize(("arg", "package"), [("+launcher=parallel", "hydra-joblib-launcher"),
                                              ("+launcher=slurm", "hydra-submitit-launcher"),
                                              ("+sweep=optuna", "hydra-optuna-sweeper")])
def test_a_preset_whose_plugin_is_missing_exits_2_with_the_install_command(arg, package, capsys):
    from automodel_spec.hydra.recipe_runtime import check_plugins

    with pytest.raises(SystemExit) as exc:
        check_plugins(["-m", "+sweep=grid", arg], has_plugin=lambda module: False)
    assert exc.value.code == 2
    assert f"error: {arg} needs the Hydra plugin {package}, which is not installed: pip install {package}" in \
        capsys.readouterr().err
    check_plugins(["-m", arg], has_plugin=lambda module: True)  # installed: nothing to say
