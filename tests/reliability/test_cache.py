"""The export cache under faults: signals at random moments, many writers at once, a full disk.

What the cache promises (docs/reliability.md): every export directory it holds is complete (its
manifest is there and every file matches the size and digest recorded in it); a writer killed by
SIGKILL leaves at most a hidden temporary directory, which the next run removes; SIGTERM / SIGINT
leave nothing; concurrent writers of one export produce it once; a full disk is an error naming the
directory, with nothing left behind. The figures these tests measure are printed (``pytest -s -o addopts=``:
in one process; pytest-xdist's workers do not pass printed output on).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import run_recipe, write_large_eagle3_run

from automodel_spec.draft.resolve import resolve_draft
from automodel_spec.export.exporter import MANIFEST
from automodel_spec.export.sealed_dir import TMP_MARK
from automodel_spec.export.serving_dtype import choose_serving_dtype
from automodel_spec.prepare import prepare_export

REPO = Path(__file__).resolve().parents[2]
EXPORT = REPO / "recipes" / "export.py"
EAGLE3 = "LlamaForCausalLMEagle3"
# a third at any moment of an export's life (most land in imports), two thirds into its write. A round's case
# is its signal and its kind (any moment / into the write), and they repeat every three rounds of a lane, so a
# lane has three cases (lane 0: SIGKILL any moment, SIGINT and SIGTERM into the write; lane 1: SIGTERM any
# moment, SIGKILL and SIGINT into the write): 12 rounds run each case twice (18 ran each three times, at
# ~2 s of CPU a round, the longest test of the suite); 8 of them aim into the write
ROUNDS = 12
SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)
# exit codes: ours once the recipe runs (130 / 143), the default action before its handler is installed
ENDED_BY = {signal.SIGKILL: {-9}, signal.SIGTERM: {143, -15}, signal.SIGINT: {130, -2, 1}}
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals and mounts are Linux's")


@pytest.fixture(scope="module")
def big_runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two different large drafts (different weights)."""
    root = tmp_path_factory.mktemp("big")
    return write_large_eagle3_run(root / "run0", seed=0), write_large_eagle3_run(root / "run1", seed=1)


def _env(cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOMODEL_SPEC_", "HYDRA_"))}
    return {**env, "AUTOMODEL_SPEC_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}


def _start(run: Path, cache: Path, cwd: Path) -> subprocess.Popen:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, str(EXPORT), "draft=automodel", f"draft.path={run}"], cwd=cwd,
                            env=_env(cache), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _export(run: Path, cache: Path, cwd: Path) -> tuple[int, str]:
    proc = _start(run, cache, cwd)
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, out


def _export_in_this_process(run: Path, cache: Path):
    """An uninterrupted export of ``run`` into ``cache`` as recipes/export.py makes it without a target (its
    job's library call, in this process, which has torch: a run of the recipe imports it again, ~2.3 s of
    CPU). Callable from a lane's thread: it takes no signal and reads no environment."""
    return prepare_export(resolve_draft(str(run)), EAGLE3, cache_dir=cache,
                          serving_dtype=choose_serving_dtype(None, None))


def _blake(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def check_only_complete_exports(exports: Path) -> list[Path]:
    """Every visible export directory is complete and matches its manifest; returns the temp dirs.

    Checked here by reading every byte (not by the exporter's own stat shortcut).
    """
    if not exports.is_dir():
        return []
    temps = []
    for d in exports.iterdir():
        if TMP_MARK in d.name and d.name.startswith("."):
            temps.append(d)
            continue
        assert d.is_dir(), f"{d} is not an export directory"
        manifest = json.loads((d / MANIFEST).read_text())
        assert set(manifest["files"]) | {MANIFEST} == {p.name for p in d.iterdir()}, d
        for name, rec in manifest["files"].items():
            f = d / name
            assert f.stat().st_size == rec["size"] and _blake(f) == rec["digest"], f"{f} does not match its manifest"
    return temps


def _writer_pid(temp: Path) -> int:
    return int(re.search(r"\.tmp-(\d+)-", temp.name)[1])


# CPython's report of a KeyboardInterrupt it dropped because it was raised inside a weakref callback
# (importlib's module-lock one, during an import); the recipe then ends the run as interrupted itself
_DROPPED_INTERRUPT = re.compile(r"Exception ignored in: .*\nTraceback \(most recent call last\):\n(?:  .*\n)*"
                                r"(?:KeyboardInterrupt|(?:automodel_spec\.signals\.)?Terminated): ?\n")


def _no_traceback_but_an_interrupt(out: str) -> bool:
    """A traceback only where SIGINT arrived before the recipe's handler (Python's own KeyboardInterrupt)
    or where CPython dropped it (reported as such; the run must then still end as interrupted)."""
    out, dropped = _DROPPED_INTERRUPT.subn("", out)
    if dropped and not out.rstrip().endswith(("interrupted", "terminated")):
        return False
    return "Traceback" not in out or out.rstrip().endswith("KeyboardInterrupt")


def _no_error_but_the_interpreters_start(out: str) -> bool:
    """No ``error:`` line, except CPython's own when SIGINT lands while it imports ``site`` (the first
    ~10 ms, before any of the recipe's code runs: "Fatal Python error: init_import_site", exit 1)."""
    if out.startswith("Fatal Python error: init_import_site") and out.rstrip().endswith("KeyboardInterrupt"):
        return True
    return "error:" not in out


# --- (a) signals at random moments --------------------------------------------------------------------


# Rounds run in lanes, each on a cache of its own: two exports at once beside the other pytest-xdist
# workers' processes rather than one (the longest test of the suite, handed out first). The delays are
# drawn over the times an export takes, measured with the lanes running at once.
LANES = 2
CHECK_EVERY = 3  # rounds of a lane between uninterrupted runs (two a lane: after the third and the last)
POLL_S = 0.005  # how often a round looks for the export's temporary directory


@pytest.mark.slow
def test_signals_at_random_moments_leave_only_complete_exports(big_runs, tmp_path):
    """Rounds of two kinds: a signal at any moment of a CLI export's life (imports, reading, writing,
    after), and, two rounds in three, one at a random moment of its write (counted from its temporary
    directory's appearing), where an incomplete export could be left: most of a run is imports and
    reading, so a delay drawn over the whole run seldom lands inside the write."""
    run = big_runs[0]
    seed = int(os.environ.get("AUTOMODEL_SPEC_FAULT_SEED") or time.time_ns() % 100_000)
    ctx = f"(seed {seed}; AUTOMODEL_SPEC_FAULT_SEED={seed} replays the delays)"
    lanes = [tmp_path / f"lane{n}" for n in range(LANES)]

    # how long one whole CLI export takes, and its write, two at once
    measured = _in_lanes(lambda lane: _export_timed(run, lane / "cache", lane / "cwd"), lanes)
    for lane, (code, out, _, _) in zip(lanes, measured, strict=True):
        assert code == 0, out[-2000:]
        _drop_exports(lane / "cache" / "exports")
    full_s = max(m[2] for m in measured)
    write_s = max(m[3] for m in measured)

    rngs = [random.Random(seed * 100 + n) for n in range(LANES)]  # one per lane: each round its own delay
    plans = [[_Round(SIGNALS[(n + LANES * i) % len(SIGNALS)], while_writing=i % 3 != 0,
                     delay=rngs[n].uniform(0.0, write_s if i % 3 else full_s))
              for i in range(ROUNDS // LANES)] for n in range(LANES)]
    t1 = time.monotonic()
    results = _in_lanes(lambda lane: _lane_rounds(run, lane, plans[lanes.index(lane)], ctx), lanes)
    figures = {"seed": seed, "full_export_s": round(full_s, 2), "write_s": round(write_s, 2), "rounds": ROUNDS,
               "lanes": LANES, "rounds_s": round(time.monotonic() - t1, 1)}
    for key in ("by_signal", "completed_before_signal", "signalled_while_writing", "temp_dirs_left_by_sigkill",
                "check_run_s"):
        figures[key] = _merge([r[key] for r in results])
    # the write rounds reached the write: signals landed while the temporary directory was there (the
    # SIGKILLs among them leave one for the next run to remove, most runs; the kill below always does)
    assert figures["signalled_while_writing"], f"no signal landed inside a write: {figures} {ctx}"

    # the cleanup itself: a SIGKILL mid-write of another draft leaves a temp dir holding half the weights
    # beside the complete export the last check run wrote; the next run (a reuse) removes it under the lock
    cache, cwd = lanes[0] / "cache", lanes[0] / "cwd"
    exports = cache / "exports"
    weights_bytes = next(exports.glob("*/model.safetensors")).stat().st_size  # the check run's export
    _kill_mid_write(big_runs[1], cache, cwd, at_bytes=weights_bytes // 2)
    left = check_only_complete_exports(exports)
    left_bytes = sum(f.stat().st_size for t in left for f in t.iterdir())
    t2 = time.monotonic()
    res = prepare_export(resolve_draft(str(run)), EAGLE3, cache_dir=cache,
                       serving_dtype=choose_serving_dtype(None, None))  # as recipes/export.py without a target
    figures["cleanup"] = {"temp_dirs": len(left), "mb": round(left_bytes / 1e6, 1),
                          "next_run_s": round(time.monotonic() - t2, 3)}
    assert left and res.reused and check_only_complete_exports(exports) == []
    assert any(n.startswith("removed 1 unfinished export(s)") for n in res.notes), res.notes
    print(f"\n[reliability] kill rounds: {json.dumps(figures)}")


@dataclasses.dataclass(frozen=True)
class _Round:
    sig: signal.Signals
    while_writing: bool  # the delay counts from the temporary directory's appearing, not from the start
    delay: float


def _in_lanes(fn, lanes: list[Path]) -> list:
    """``fn(lane)`` for every lane at once; the first failure is raised."""
    with ThreadPoolExecutor(len(lanes)) as pool:
        return [f.result() for f in [pool.submit(fn, lane) for lane in lanes]]


def _merge(values: list):
    if isinstance(values[0], dict):
        return {k: sum(v.get(k, 0) for v in values) for k in sorted({k for v in values for k in v})}
    if isinstance(values[0], list):
        return [x for v in values for x in v]
    return sum(values)


def _drop_exports(exports: Path) -> None:
    """Delete the complete exports (so the next run writes again); leftovers stay for it to clean."""
    for d in exports.iterdir() if exports.is_dir() else []:
        if not d.name.startswith("."):
            shutil.rmtree(d)


def _temp_dirs(exports: Path, pid: int) -> list[Path]:
    """The temporary directories of the writer ``pid`` in ``exports``."""
    try:
        return [d for d in exports.iterdir() if f"{TMP_MARK}{pid}-" in d.name]
    except FileNotFoundError:
        return []


def _await_write(proc: subprocess.Popen, exports: Path, timeout_s: float = 60.0) -> bool:
    """Wait until ``proc`` has started writing its export (its temporary directory is there);
    ``False`` when it ended first."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        if _temp_dirs(exports, proc.pid):
            return True
        time.sleep(POLL_S)
    return False


def _export_timed(run: Path, cache: Path, cwd: Path) -> tuple[int, str, float, float]:
    """An uninterrupted CLI export: exit code, output, seconds in all, seconds its temporary directory
    was there (the write: from its making to its rename into place)."""
    t0 = time.monotonic()
    proc = _start(run, cache, cwd)
    assert _await_write(proc, cache / "exports"), "the export ended without writing"
    t_write = time.monotonic()
    while _temp_dirs(cache / "exports", proc.pid) and time.monotonic() < t_write + 60:
        time.sleep(POLL_S)
    write_s = time.monotonic() - t_write
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, out, time.monotonic() - t0, write_s


def _lane_rounds(run: Path, lane: Path, plan: list[_Round], ctx: str) -> dict:
    """One lane's rounds: start an export, signal it after the planned delay, check the cache.

    After every round the cache holds only complete exports, and the next run proceeds normally
    (it is the next round's run, which must end with 0 or the signal's code, with no error); every
    ``CHECK_EVERY`` rounds an uninterrupted run must write the export and leave no temporary directory (the
    export's library call in this process, ``_export_in_this_process``: the recipe's process runs in every
    round and in the measurement before them).
    """
    cache, cwd = lane / "cache", lane / "cwd"
    exports = cache / "exports"
    figures = {"by_signal": {}, "completed_before_signal": 0, "signalled_while_writing": 0,
               "temp_dirs_left_by_sigkill": 0, "check_run_s": []}
    known: set[str] = set()
    for i, rnd in enumerate(plan):
        sig = rnd.sig
        proc = _start(run, cache, cwd)
        if not rnd.while_writing or _await_write(proc, exports):
            time.sleep(rnd.delay)
        if proc.poll() is None:
            figures["signalled_while_writing"] += bool(_temp_dirs(exports, proc.pid))
            proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
        when = "into its write" if rnd.while_writing else "after its start"
        what = f"{lane.name} round {i} {sig.name} {rnd.delay:.2f}s {when} {ctx}: rc {proc.returncode}\n{out[-1500:]}"
        figures["by_signal"][sig.name] = figures["by_signal"].get(sig.name, 0) + 1
        if proc.returncode == 0:
            figures["completed_before_signal"] += 1
        else:
            assert proc.returncode in ENDED_BY[sig], what
        assert _no_traceback_but_an_interrupt(out) and _no_error_but_the_interpreters_start(out), what

        temps = {t.name for t in check_only_complete_exports(exports)}  # fails on any incomplete export
        for name in temps - known:  # only a SIGKILLed writer leaves one; SIGTERM / SIGINT clean up
            assert sig == signal.SIGKILL and _writer_pid(Path(name)) == proc.pid, f"{name} left: {what}"
        figures["temp_dirs_left_by_sigkill"] += len(temps - known)
        known = temps
        _drop_exports(exports)

        if (i + 1) % CHECK_EVERY == 0 or i == len(plan) - 1:
            t0 = time.monotonic()
            res = _export_in_this_process(run, cache)
            figures["check_run_s"].append(round(time.monotonic() - t0, 2))
            assert not res.reused, f"{lane.name} after round {i} {ctx}: reused, not written: {res.notes}"
            assert check_only_complete_exports(exports) == [], f"temp dirs left after a full run {ctx}"
            known = set()
    return figures


def _kill_mid_write(run: Path, cache: Path, cwd: Path, at_bytes: int) -> None:
    """SIGKILL an export once more than ``at_bytes`` of its weights are written."""
    proc = _start(run, cache, cwd)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        weights = [t / "model.safetensors" for t in _temp_dirs(cache / "exports", proc.pid)]
        if any(w.exists() and w.stat().st_size > at_bytes for w in weights):
            break
        time.sleep(0.002)
    proc.kill()
    proc.communicate(timeout=60)


# --- (b) many writers at once ---------------------------------------------------------------------------


@pytest.mark.slow
def test_eight_processes_two_drafts_one_complete_export_each(big_runs, tmp_path):
    cache = tmp_path / "cache"
    t0 = time.monotonic()
    procs = [(run, _start(run, cache, tmp_path / f"cwd{i}")) for i, run in enumerate(big_runs * 4)]
    outs = []
    for run, proc in procs:
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, out[-2000:]
        outs.append((run, out))
    elapsed = time.monotonic() - t0

    exports = cache / "exports"
    assert check_only_complete_exports(exports) == []  # no temp dir left
    finals = sorted(p.name for p in exports.iterdir())
    assert len(finals) == 2 and not any(n.startswith(".") for n in finals), finals
    for run in big_runs:
        states = sorted(re.search(r"export \((\w+)\)", out)[1] for r, out in outs if r == run)
        assert states == ["reused", "reused", "reused", "written"], states  # written once, then reused
        paths = {out.strip().splitlines()[-1] for r, out in outs if r == run}
        assert len(paths) == 1 and Path(paths.pop()).name in finals
    print(f"\n[reliability] 8 processes, 2 drafts: {elapsed:.1f}s, exports {finals}")


# --- (c) a full disk ------------------------------------------------------------------------------------


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB tmpfs (root, where mounting is allowed); skipped elsewhere."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True,
                       capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a small tmpfs here ({exc}); test_full_disk_stand_in covers the message")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False, capture_output=True, timeout=30)


def _assert_full_disk_reported(code: int, out: str, exports: Path) -> None:
    assert code == 1, out[-2000:]
    assert f"no space left on the device holding {exports} while writing the export" in out, out[-2000:]
    assert "free space there, or set cache_dir=DIR" in out and "Traceback" not in out
    assert not exports.exists() or list(exports.iterdir()) == []  # no temp dir, no partial export


def test_full_disk_on_a_small_tmpfs(big_runs, tmp_path, full_disk):
    cache = full_disk / "cache"
    code, out = _export(big_runs[0], cache, tmp_path / "cwd")
    _assert_full_disk_reported(code, out, cache / "exports")


def test_full_disk_stand_in(big_runs, tmp_path, monkeypatch, capsys):
    """Where no tmpfs can be mounted: the safetensors write raises ENOSPC, through the real recipe's job (in
    this process, which has torch: a process of its own imports it again, ~2.3 s of CPU; the tmpfs case
    above runs the recipe's process)."""
    import safetensors.torch

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    cache = tmp_path / "cache"
    monkeypatch.setattr(safetensors.torch, "save_file", no_space)
    monkeypatch.setenv("AUTOMODEL_SPEC_CACHE", str(cache))
    code = run_recipe("export", "draft=automodel", f"draft.path={big_runs[0]}")
    printed = capsys.readouterr()
    _assert_full_disk_reported(code, printed.out + printed.err, cache / "exports")
