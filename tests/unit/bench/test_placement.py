"""bench/placement.py: a server sharing a GPU starts only where its share of the free memory holds its weights."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from automodel_spec.bench import placement
from automodel_spec.bench.placement import wait_for_room, weights_bytes
from automodel_spec.errors import ServerError
from automodel_spec.io import nvidia_smi

GIB = 2**30


@pytest.fixture
def gpu(monkeypatch):
    """The free memory nvidia-smi reports, one reading a call (the last repeats), and the sharers that run."""
    state = SimpleNamespace(free_mib=[81559], reads=0, sharers=set(), sleeps=0)

    def free_mib(gpus):
        state.reads += 1
        return state.free_mib[min(state.reads, len(state.free_mib)) - 1]

    def sleep(_):
        state.sleeps += 1

    monkeypatch.setattr(nvidia_smi, "free_mib", free_mib)
    monkeypatch.setattr(placement, "sharing_groups", lambda names, locks: set(state.sharers))
    monkeypatch.setattr(placement, "group_running", lambda g: True)
    monkeypatch.setattr(placement.time, "sleep", sleep)
    return state


def _wait(fraction, need, **kw):
    wait_for_room(fraction, need, ["0"], ["0"], Path("/nonexistent"), kw.pop("wait_s", 60.0), poll_s=0, **kw)


def test_a_share_that_holds_the_weights_starts_at_once(gpu):
    _wait(0.42, int(14.6 * GIB))
    assert gpu.sleeps == 0


def test_a_share_too_small_with_no_sharer_to_wait_for_fails_before_the_start(gpu):
    gpu.free_mib = [41 * 1024]  # two 8B-shaped servers up on an H100 (2026-12-07)
    with pytest.raises(ServerError) as err:
        _wait(0.26, int(14.6 * GIB))
    text = str(err.value)
    assert "sglang.mem_fraction_static=0.26 of the 41.0 GiB free on GPU 0 is 10.7 GiB" in text
    assert "14.6 GiB of weights" in text and "Raise sglang.mem_fraction_static above 0.36" in text
    assert "bench.servers_per_gpu" in text and gpu.sleeps == 0


def test_a_sharer_that_stops_frees_the_room_it_waits_for(gpu):
    gpu.free_mib, gpu.sharers = [41 * 1024, 41 * 1024, 60 * 1024], {4242}
    _wait(0.26, int(14.6 * GIB))
    assert gpu.sleeps == 2 and gpu.reads == 3


def test_a_sharer_that_stays_fails_the_start_after_the_wait(gpu):
    gpu.free_mib, gpu.sharers = [41 * 1024], {4242}
    with pytest.raises(ServerError, match=r"1 server\(s\) sharing the GPU did not stop within 0 s"):
        _wait(0.26, int(14.6 * GIB), wait_s=0)


def test_tensor_parallel_servers_hold_a_share_of_the_weights_per_gpu(gpu):
    gpu.free_mib = [41 * 1024]
    _wait(0.26, int(14.6 * GIB), tp_size=2)  # 7.3 GiB a GPU fits 10.7 GiB


@pytest.mark.parametrize(("fraction", "need", "free"), [(None, GIB, 1024), (0.2, None, 1024), (0.2, GIB, None)])
def test_what_is_not_known_is_not_checked(gpu, fraction, need, free):
    gpu.free_mib = [free]
    _wait(fraction, need)
    assert gpu.sleeps == 0


def test_weights_are_the_targets_and_the_exports_safetensors(tmp_path):
    target, export = tmp_path / "target", tmp_path / "export"
    for d, sizes in ((target, (3000, 5000)), (export, (700,))):
        d.mkdir()
        for i, size in enumerate(sizes):
            (d / f"model-{i}.safetensors").write_bytes(b"\0" * size)
        (d / "config.json").write_text("{}")
    run = SimpleNamespace(target=str(target), export=SimpleNamespace(path=export))
    assert weights_bytes(run) == 8700
    assert weights_bytes(SimpleNamespace(target="meta-llama/Llama-3.1-8B", export=None)) is None


def test_nvidia_smi_gives_the_least_free_memory_of_the_gpus(monkeypatch):
    rows = [["0", "41984 MiB"], ["1", "60000 MiB"], ["2", "[N/A]"]]
    monkeypatch.setattr(nvidia_smi, "query", lambda fields: rows if fields == "gpu=index,memory.free" else None)
    assert nvidia_smi.free_mib(["0", "1"]) == 41984
    assert nvidia_smi.free_mib(["1"]) == 60000 and nvidia_smi.free_mib(["2"]) is None
