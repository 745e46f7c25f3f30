"""GPU leases: two jobs never hold the same GPU; all-or-nothing; the pool from config, env or nvidia-smi.

Leases are real ``flock`` locks; the concurrent cases run in separate processes (a lock is per
open file, so threads would prove less). nvidia-smi is the fake in tests/fakes/bin (2 GPUs).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from automodel_spec.errors import ConfigError
from automodel_spec.io import nvidia_smi
from automodel_spec.serve.gpu_pool import (
    gpu_phase,
    lease_dir,
    lease_gpus,
    parallel_jobs,
    pinned_env,
    registered_server,
    sharing_groups,
    visible_gpus,
)

FAKE_BIN = Path(__file__).resolve().parents[2] / "fakes" / "bin"


@pytest.fixture
def fake_smi(monkeypatch):
    """The fake nvidia-smi on PATH, 2 GPUs; no CUDA_VISIBLE_DEVICES."""
    monkeypatch.setenv("PATH", f"{FAKE_BIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_NVIDIA_SMI_GPUS", "2")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("FAKE_NVIDIA_SMI_RECORD", raising=False)


@pytest.fixture
def no_smi(monkeypatch, tmp_path):
    """No nvidia-smi on PATH at all, no CUDA_VISIBLE_DEVICES."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_pool_comes_from_config_then_env_then_nvidia_smi(fake_smi, monkeypatch):
    assert visible_gpus() == (["0", "1"], "nvidia-smi")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 5")
    assert visible_gpus() == (["3", "5"], "CUDA_VISIBLE_DEVICES=3, 5")
    assert visible_gpus(["7"]) == (["7"], "bench.gpu_pool=['7']")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # a job given no GPU has none
    assert visible_gpus()[0] == []


def test_no_gpu_found_means_no_pool(no_smi):
    assert visible_gpus() == (None, "no GPU found")
    assert parallel_jobs(1) == 1


def test_parallel_jobs_is_the_pool_over_tp_size(fake_smi):
    assert parallel_jobs(1) == 2 and parallel_jobs(2) == 1 and parallel_jobs(4) == 1
    assert parallel_jobs(2, ["0", "1", "2", "3"]) == 2


def test_a_lease_is_exclusive_and_released(tmp_path):
    with lease_gpus(["0", "1"], 1, tmp_path) as first:
        with lease_gpus(["0", "1"], 1, tmp_path) as second:
            assert first == ["0"] and second == ["1"]
    with lease_gpus(["0", "1"], 2, tmp_path) as both:
        assert both == ["0", "1"]


def test_a_pool_smaller_than_tp_size_is_refused_naming_both(tmp_path):
    with pytest.raises(ConfigError, match=r"sglang\.tp_size=2 needs 2 GPU\(s\) on this host.*offers 1 \(CUDA_VISIBLE_DEVICES=0\)"):
        with lease_gpus(["0"], 2, tmp_path, source="CUDA_VISIBLE_DEVICES=0"):
            pass


def _hold(pool, count, lock_dir, log, hold_s):
    with lease_gpus(pool, count, Path(lock_dir), poll_s=0.05) as gpus:
        start = time.monotonic()
        time.sleep(hold_s)
        with open(log, "a") as fh:
            fh.write(f"{','.join(gpus)} {start} {time.monotonic()}\n")


def _overlap(a, b) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_processes_never_hold_a_gpu_at_once(tmp_path):
    # 4 processes, 2 GPUs; two want 2 GPUs (tensor parallel), two want 1: all-or-nothing leases, no deadlock
    log = tmp_path / "log"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hold, args=(["0", "1"], n, str(tmp_path), str(log), 0.3)) for n in (2, 1, 2, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    spans = [(set(g.split(",")), float(a), float(b)) for g, a, b in (line.split() for line in log.read_text().splitlines())]
    assert sorted(len(g) for g, _, _ in spans) == [1, 1, 2, 2]
    for i, (gi, *ti) in enumerate(spans):
        for gj, *tj in spans[i + 1:]:
            assert not (gi & gj and _overlap(ti, tj)), f"GPU {gi & gj} held by two processes at once: {spans}"


def test_the_same_card_by_index_or_uuid_is_one_lease(fake_smi, tmp_path):
    with lease_gpus(["0"], 1, tmp_path):
        with pytest.raises(TimeoutError):
            _lease_within(["GPU-fake-0"], tmp_path, 0.3)


def _lease_within(pool, lock_dir, seconds, share=1):
    import threading

    got = threading.Event()

    def take():
        with lease_gpus(pool, 1, lock_dir, poll_s=0.05, share=share):
            got.set()

    t = threading.Thread(target=take, daemon=True)
    t.start()
    if not got.wait(seconds):
        raise TimeoutError("no lease")


def test_pinned_env_sets_the_devices_in_nvidia_smi_order():
    env = pinned_env(["1", "3"], {"PATH": "/bin"})
    assert env == {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "1,3", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert pinned_env(["0"], {"CUDA_DEVICE_ORDER": "FASTEST_FIRST"})["CUDA_DEVICE_ORDER"] == "FASTEST_FIRST"
    assert pinned_env(None) is None


def test_lease_dir_is_per_user_or_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTOMODEL_SPEC_LOCK_DIR", str(tmp_path / "locks"))
    assert lease_dir() == tmp_path / "locks" and (tmp_path / "locks").is_dir()
    monkeypatch.delenv("AUTOMODEL_SPEC_LOCK_DIR")
    assert lease_dir().parent.name == f"automodel_spec-{os.getuid()}"


def test_processes_on_a_jobs_gpus_only(fake_smi, monkeypatch, tmp_path):
    record = tmp_path / "record.jsonl"
    # a live process (this test's own pid) recorded as a server on GPU 1
    record.write_text(f'{{"event": "start", "pid": {os.getpid()}, "cuda_visible_devices": "1"}}\n')
    monkeypatch.setenv("FAKE_NVIDIA_SMI_RECORD", str(record))
    assert nvidia_smi.processes_on(["0"]) == []
    mine = f"{os.getpid()}, python3, 1000 MiB (GPU 1) (this process)"
    assert nvidia_smi.processes_on(["1"]) == [mine]
    assert nvidia_smi.processes_on(["GPU-fake-1"]) == [mine]
    assert nvidia_smi.processes_on(None) == [mine]


def test_nvidia_smi_missing_answers_none(no_smi):
    assert nvidia_smi.query("gpu=index") is None
    assert nvidia_smi.gpu_uuids() == {} and nvidia_smi.processes_on(["0"]) == []


def test_a_shared_gpu_takes_as_many_holders_as_it_has_slots_and_excludes_a_lone_holder(tmp_path):
    with lease_gpus(["0"], 1, tmp_path, share=2) as a, lease_gpus(["0"], 1, tmp_path, share=2) as b:
        assert a == b == ["0"]
        with pytest.raises(TimeoutError):  # both slots taken
            _lease_within(["0"], tmp_path, 0.3, share=2)
        with pytest.raises(TimeoutError):  # a job that wants the GPU alone waits for the sharers
            _lease_within(["0"], tmp_path, 0.3)
    with lease_gpus(["0"], 1, tmp_path):
        with pytest.raises(TimeoutError):  # and sharers wait for a job that has it alone
            _lease_within(["0"], tmp_path, 0.3, share=2)


def _phase(lock_dir, exclusive, log, hold_s, ready=None, go=None):
    with gpu_phase(["0"], Path(lock_dir), exclusive=exclusive, poll_s=0.02):
        start = time.monotonic()
        if ready:
            Path(ready).touch()
        while go and not Path(go).exists():
            time.sleep(0.01)
        time.sleep(hold_s)
        end = time.monotonic()
    with open(log, "a") as fh:
        fh.write(f"{'measure' if exclusive else 'start'} {start} {end}\n")


def _wait_for(what, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_measurement_overlaps_no_start_and_goes_before_starts_asked_for_after_it(tmp_path):
    # a start holds the phase; a measurement queues behind it; a start asked for after that waits for the
    # measurement, though it could have shared the phase with the first start
    log, ready, go = tmp_path / "log", tmp_path / "first-start-holds", tmp_path / "first-start-may-end"
    ctx = multiprocessing.get_context("spawn")
    first = ctx.Process(target=_phase, args=(str(tmp_path), False, str(log), 0.0, str(ready), str(go)))
    first.start()
    _wait_for(ready.exists)
    measure = ctx.Process(target=_phase, args=(str(tmp_path), True, str(log), 0.3))
    measure.start()
    queue = tmp_path / "gpu-0.measure-queue"
    _wait_for(lambda: queue.is_dir() and any(queue.iterdir()))
    second = ctx.Process(target=_phase, args=(str(tmp_path), False, str(log), 0.1))
    second.start()
    time.sleep(0.5)  # the second start, ready by now, must still be waiting
    assert not log.exists()
    go.touch()
    for p in (first, measure, second):
        p.join(timeout=60)
        assert p.exitcode == 0
    spans = {kind: (float(a), float(b)) for kind, a, b in (line.split() for line in log.read_text().splitlines()
                                                           if line.startswith("measure"))}
    starts = sorted((float(a), float(b)) for kind, a, b in (line.split() for line in log.read_text().splitlines())
                    if kind == "start")
    assert len(starts) == 2, log.read_text()
    m = spans["measure"]
    assert starts[0][1] <= m[0] and m[1] <= starts[1][0], log.read_text()


def test_sharing_servers_are_marked_while_they_run(tmp_path):
    assert sharing_groups(["0"], tmp_path) == set()
    with registered_server(["0"], tmp_path, 4242), registered_server(["0"], tmp_path, 77):
        assert sharing_groups(["0"], tmp_path) == {4242, 77}
        assert sharing_groups(["1"], tmp_path) == set()
    assert sharing_groups(["0"], tmp_path) == set()


def test_parallel_jobs_counts_each_gpus_servers(fake_smi):
    assert parallel_jobs(1, share=4) == 8 and parallel_jobs(2, share=3) == 3


def test_memory_sized_reads_the_lines_sglang_writes_after_its_memory_pools():
    from automodel_spec.bench.placement import memory_sized

    # SGLang 0.5.17 on an H100, 2026-12-06 (after "KV Cache is allocated" and "Memory pool end")
    assert memory_sized("[2026-12-06 12:09:16] Capture target verify CUDA graph begin. backend=full, bs=[1, 8]")
    assert memory_sized("[2026-12-06 11:59:43] Capture cuda graph begin. This can take up to several minutes.")
    assert memory_sized("The server is fired up and ready to roll!")  # CUDA graphs disabled: nothing captured
    assert not memory_sized("[2026-12-06 12:09:16] KV Cache is allocated. #tokens: 13768")
    assert not memory_sized("[2026-12-06 12:09:22] Capture draft extend CUDA graph end. elapsed=1.03 s")
