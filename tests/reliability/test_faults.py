"""Faults, fourth round: workload files, a server that fails during a benchmark, damaged sweep directories,
and what a user's disk, network or GPU does to a run (issue 37).

Each case runs as the cases of ``test_hostile_inputs.py`` run (its own directory, ``HOME``, ``TMPDIR``,
cache and working directory; in this process through Hydra's compose API, or the real CLI where only a
process shows it) against the fake SGLang server (``tests/fakes/fake_sglang.py``), which fails on purpose
as ``FAKE_SGLANG_FAIL`` says. Each must end with its exit code and a message naming the cause, no
``Traceback``, within ``HANG_S``, nothing changed outside the cache and the run's directories, no process
of the fake server left once the run is over, and pass its own check (a re-measured point's file, the
summary's line). ``test_figures_in_docs_reliability`` requires the table of ``docs/reliability.md``.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_hostile_inputs import COLUMNS as HOSTILE_COLUMNS
from test_hostile_inputs import (
    FAKE_SERVER,
    Hostile,
    Result,
    _serve,
    _verdict,
    case_results,
    documented_figures,
    figures_table,
    run_hostile,
)

from automodel_spec.bench.result import LevelResult, PointResult, SpecSettings, write_point

FIGURES_BEGIN = "<!-- figures of tests/reliability/test_faults.py -->"
FIGURES_END = "<!-- end of fault figures -->"
# the bench runs against the fake: quick to boot, short requests, a short request timeout for the hang
BENCH = [*FAKE_SERVER, "bench.request_timeout_s=3", "bench.warmup_requests=1", "sglang.stop_timeout_s=2"]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses Linux paths and signals")

WORKLOAD, SERVER, SWEEP, BEYOND = ("workload files", "server failing during a benchmark", "damaged sweep directories",
                                   "disk, network and GPU")


# --- workload files --------------------------------------------------------------------------------


def _prompts_file(name: str, make: Callable[[Path], None], *extra: str) -> Callable[..., list[str]]:
    def build(ws) -> list[str]:
        p = ws.src / name
        make(p)
        return [*_serve(*BENCH, *extra, mode="bench")(ws), f"bench.prompts={p}"]

    return build


def _gzip_of(chunks: Callable[[], object]) -> Callable[[Path], None]:
    def make(p: Path) -> None:
        with gzip.open(p, "wb", compresslevel=9) as fh:
            for chunk in chunks():
                fh.write(chunk)

    return make


def _gzip_members(piece: bytes, times: int) -> Callable[[Path], None]:
    """A gzip file of ``times`` members, each ``piece`` compressed (gzip reads them as one stream): a file
    that expands to ``times * len(piece)`` bytes, written without compressing them all."""
    def make(p: Path) -> None:
        member = gzip.compress(piece, compresslevel=9)
        with open(p, "wb") as fh:
            for _ in range(times):
                fh.write(member)

    return make


def _lines(n: int) -> bytes:
    return b"".join(json.dumps({"prompt": f"question {i}: " + "word " * 20}).encode() + b"\n" for i in range(n))


def _truncated(p: Path) -> None:
    _gzip_of(lambda: [_lines(3000)])(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _corrupt(p: Path) -> None:
    _gzip_of(lambda: [_lines(3000)])(p)
    data = bytearray(p.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0x5A
    p.write_bytes(bytes(data))


def _long_and_short(p: Path) -> None:
    p.write_text(json.dumps({"prompt": "a short question"}) + "\n"
                 + json.dumps({"id": "long-one", "prompt": "word " * 4000}) + "\n")


def _no_server_log(ws) -> str | None:
    logs = [str(p) for p in ws.cwd.rglob("server.log")]
    return f"a server was started: {logs}" if logs else None


WORKLOAD_CASES = [
    Hostile(WORKLOAD, "gzip_expanding_past_the_size_bound",
            _prompts_file("bomb.jsonl.gz", _gzip_members(b"\n" * 2**20, 300)),
            r"bomb\.jsonl\.gz holds more than 256 MiB once decompressed \(the bound on a prompts file\)",
            script="serve", print_only=True),
    Hostile(WORKLOAD, "gzip_line_past_the_line_bound",
            _prompts_file("line.jsonl.gz", _gzip_members(b"a" * 2**20, 40)),
            r"line\.jsonl\.gz:1 is longer than 16 MiB \(the bound on one line of a prompts file\)",
            script="serve", print_only=True),
    Hostile(WORKLOAD, "gzip_truncated", _prompts_file("cut.jsonl.gz", _truncated),
            r"cut\.jsonl\.gz is a damaged gzip archive: it ends before the end of its data \(truncated\)",
            script="serve", print_only=True),
    Hostile(WORKLOAD, "gzip_corrupt", _prompts_file("bad.jsonl.gz", _corrupt),
            r"bad\.jsonl\.gz is a damaged gzip archive: .*Copy the file again", script="serve", print_only=True),
    Hostile(WORKLOAD, "named_gz_but_plain_text",
            _prompts_file("plain.jsonl.gz", lambda p: p.write_text('{"prompt": "hi"}\n')),
            r"plain\.jsonl\.gz is named \.gz but is not such an archive", script="serve", print_only=True),
    Hostile(WORKLOAD, "zstd_archive",
            _prompts_file("p.jsonl.zst", lambda p: p.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 32)),
            r"p\.jsonl\.zst is a zstd archive, which is not read here: decompress it", script="serve",
            print_only=True),
    Hostile(WORKLOAD, "prompt_longer_than_the_context_refused_before_the_server",
            _prompts_file("long.jsonl", _long_and_short),
            r"1 prompt\(s\) of bench\.prompts=.*long\.jsonl do not fit the target's context of 256 tokens with "
            r"bench\.max_new_tokens=8 .*prompt long-one: 2,500 tokens \(estimated.*bench\.long_prompts=skip",
            script="serve", check=_no_server_log),
    Hostile(WORKLOAD, "prompt_longer_than_the_context_skipped_with_a_count",
            _prompts_file("long.jsonl", _long_and_short, "bench.long_prompts=skip"),
            r"left out \(bench\.long_prompts=skip\): 1 of 2 prompts remain", code=0, script="serve"),
]


# --- a server that fails during a benchmark ------------------------------------------------------------


def _failing(how: str, after: int = 0) -> tuple[tuple[str, str], ...]:
    return (("FAKE_SGLANG_FAIL", how), ("FAKE_SGLANG_FAIL_AFTER", str(after)))


def _bench(*extra: str) -> Callable[..., list[str]]:
    return _serve(*BENCH, *extra, mode="bench")


def _sweep_goes_on(ws) -> list[str]:
    return ["-m", "+sweep=grid", "bench.name=s", "spec.num_steps=1,2", "spec.topk=1",
            *_serve(*BENCH, mode="bench")(ws)]


def _sweep_summary_names_the_death(ws) -> str | None:
    summary = ws.cwd / "sweeps" / "s" / "summary.md"
    text = summary.read_text() if summary.is_file() else ""
    if not re.search(r"spec\.num_steps=2.*: failed: the server was killed by SIGKILL during the benchmark", text):
        return f"summary.md does not list the dead point's cause:\n{text}"
    if "| 1 | 1 | 2 |" not in text:
        return f"summary.md does not rank the point that was measured:\n{text}"
    return None


SERVER_CASES = [
    Hostile(SERVER, "server_killed_mid_benchmark", _bench(),
            r"the server was killed by SIGKILL during the benchmark, \d+\.\d s into it \(\d+\.\d s after it "
            r"started\)\. Likely cause: .*(out of memory|killed from outside).*Last lines of .*server\.log:\n"
            r"(.|\n)*scheduler is using 79\.1 GB of host memory", env=_failing("die", 2), script="serve"),
    Hostile(SERVER, "server_exits_cuda_out_of_memory", _bench(),
            r"the server exited with code 1 during the benchmark, .* Likely cause: GPU out of memory", script="serve",
            env=_failing("cuda_oom", 2)),
    Hostile(SERVER, "answers_http_500", _bench(),
            r"the warm-up: 1 of 1 request\(s\) failed, e\.g\. request 0 \(prompt .*\): HTTPStatusError: .*answered "
            r"HTTP 500", script="serve", env=_failing("http500")),
    Hostile(SERVER, "answers_html", _bench(),
            r"level spec T=0 c=1: 2 of 2 request\(s\) failed, e\.g\. request 0 .*answered a body that is not JSON "
            r"\(is it SGLang\?\): '<html>", script="serve", env=_failing("html", 1)),
    Hostile(SERVER, "never_answers", _bench("bench.request_timeout_s=1"),
            r"request\(s\) failed, .*timed out: no answer within 1\.\d s \(bench\.request_timeout_s\)",
            script="serve", env=_failing("hang")),
    Hostile(SERVER, "closes_the_connection", _bench(),
            r"request\(s\) failed, .*the server closed the connection without an answer", script="serve",
            env=_failing("reset")),
    Hostile(SERVER, "completion_tokens_nan", _bench(), r"meta_info\.completion_tokens=nan is not a whole number",
            script="serve", env=_failing("nan")),
    Hostile(SERVER, "no_meta_info", _bench(), r"the answer has no meta_info \(keys: text\)", script="serve",
            env=_failing("no_meta")),
    Hostile(SERVER, "completion_tokens_text", _bench(),
            r"""meta_info\.completion_tokens='"eight"' is not a number of tokens""", script="serve",
            env=_failing("text_tokens")),
    Hostile(SERVER, "no_token_answered", _bench(),
            r"the answer holds no token where 8 were asked for", script="serve", env=_failing("zero_tokens")),
    Hostile(SERVER, "sweep_goes_on_after_a_server_death", _sweep_goes_on,
            r"\[bench\] spec\.num_steps=2,spec\.topk=1: failed: the server was killed by SIGKILL", code=0,
            script="serve", process=True, check=_sweep_summary_names_the_death,
            env=(("FAKE_SGLANG_FAIL", "die"), ("FAKE_SGLANG_FAIL_AFTER", "2"),
                 ("FAKE_SGLANG_FAIL_IF", "--speculative-num-steps 2"))),
]


# --- damaged sweep directories --------------------------------------------------------------------------


def _point(steps: int = 1, tok_s: float = 100.0) -> PointResult:
    level = LevelResult(temperature=0.0, concurrency=1, requests=2, output_tokens=16, wall_s=0.16,
                        output_tok_per_s=tok_s, accept_length=2.0, verify_steps=8)
    return PointResult(status="ok", key="k", algorithm="EAGLE3", requested=SpecSettings(steps, 1, steps + 1),
                       levels={level.key: level})


def _sweep(damage: Callable[[Path], None], *, good: bool = True) -> Callable[..., list[str]]:
    """A sweep directory of two points (one damaged by ``damage``, given its point directory)."""
    def build(ws) -> list[str]:
        d = ws.cwd / "sweeps" / "s"
        for name, steps in (("spec.num_steps=1", 1), ("spec.num_steps=2", 2)):
            (d / name).mkdir(parents=True)
            write_point(d / name / "metrics.json", _point(steps, 100.0 * steps))
        damage(d / "spec.num_steps=2")
        if not good:
            damage(d / "spec.num_steps=1")
        return [str(d)]

    return build


def _replace_with_dir(point: Path) -> None:
    (point / "metrics.json").unlink()
    (point / "metrics.json").mkdir()


def _replace_with_fifo(point: Path) -> None:
    (point / "metrics.json").unlink()
    os.mkfifo(point / "metrics.json")


def _grow_to_256_mib(point: Path) -> None:
    os.truncate(point / "metrics.json", 2**28)  # sparse: nothing written


def _truncate(point: Path) -> None:
    text = (point / "metrics.json").read_text()
    (point / "metrics.json").write_text(text[: len(text) // 3])


def _edit(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(point: Path) -> None:
        data = json.loads((point / "metrics.json").read_text())
        change(data)
        (point / "metrics.json").write_text(json.dumps(data))

    return damage


def _summary_lists(pattern: str) -> Callable[..., str | None]:
    def check(ws) -> str | None:
        summary = ws.cwd / "sweeps" / "s" / "summary.md"
        text = summary.read_text() if summary.is_file() else "(no summary.md)"
        return None if re.search(pattern, text) else f"summary.md lacks {pattern!r}:\n{text}"

    return check


def _resume(damage: Callable[[Path], None], *extra: str) -> Callable[..., list[str]]:
    """A point directory where an earlier run of the same point left a damaged file; the run re-measures."""
    def build(ws) -> list[str]:
        out = ws.cwd / "outputs" / "run"
        out.mkdir(parents=True)
        damage(out)
        return [*_bench(*extra)(ws), f"output_dir={out}"]

    return build


def _measured_again(aside: str | None) -> Callable[..., str | None]:
    def check(ws) -> str | None:
        out = ws.cwd / "outputs" / "run"
        try:
            data = json.loads((out / "metrics.json").read_text())
        except (OSError, ValueError) as exc:
            return f"no readable metrics.json after the run: {exc}"
        if data.get("status") != "ok":
            return f"the point was not measured again: {data.get('status')} {data.get('error')}"
        if aside and not (out / aside).exists():
            return f"what was there is not kept as {aside}: {sorted(p.name for p in out.iterdir())}"
        return None

    return check


def _predictions_damaged(point: Path) -> None:
    (point.parent / "predictions.json").write_text('{"predictions": [{"point": "1/1/2"}], "measured_first": []}')


def _summary_md_a_directory(point: Path) -> None:
    (point.parent / "summary.md").mkdir()


SWEEP_CASES = [
    Hostile(SWEEP, "resume_metrics_json_a_directory",
            _resume(lambda out: (out / "metrics.json").mkdir()),
            r"metrics\.json is unreadable \(is a directory, not a benchmark result file\): the point is measured "
            r"again; what was there is kept as metrics\.json\.unreadable-1", code=0, script="serve",
            check=_measured_again("metrics.json.unreadable-1")),
    Hostile(SWEEP, "resume_metrics_json_truncated",
            _resume(lambda out: (out / "metrics.json").write_text('{"status": "ok", "levels": {"T0_c1": {"tempe')),
            r"metrics\.json is unreadable \(is not valid JSON .*truncated or damaged\): the point is measured again",
            code=0, script="serve", check=_measured_again(None)),
    Hostile(SWEEP, "resume_metrics_json_wrong_shape",
            _resume(lambda out: (out / "metrics.json").write_text('["ok"]')),
            r"metrics\.json is unreadable \(a benchmark result is a JSON object, got list\)", code=0, script="serve",
            check=_measured_again(None)),
    Hostile(SWEEP, "resume_records_a_directory", _resume(lambda out: (out / "records.jsonl").mkdir()),
            r"records\.jsonl was not a file: moved aside as records\.jsonl\.unreadable-1", code=0, script="serve",
            check=_measured_again("records.jsonl.unreadable-1")),
    Hostile(SWEEP, "baseline_dir_a_file", _resume(lambda out: (out / "baseline").write_text("the user's\n"),
                                                  "bench.baseline=true"),
            r"the shared baseline's directory .*baseline cannot be made: .*baseline is not a directory\. Move that out "
            r"of the way, or set bench\.baseline=false", script="serve",
            check=lambda ws: None if (ws.cwd / "outputs" / "run" / "baseline").read_text() == "the user's\n"
            else "the file in the baseline's place was changed"),
    Hostile(SWEEP, "summary_metrics_json_a_directory", _sweep(_replace_with_dir),
            r"WARNING: point spec\.num_steps=2 is unreadable: .*is a directory, not a benchmark result file",
            code=0, script="sweep", check=_summary_lists(r"spec\.num_steps=2: unreadable: .*is a directory")),
    Hostile(SWEEP, "summary_metrics_json_truncated", _sweep(_truncate),
            r"point spec\.num_steps=2 is unreadable: .*is not valid JSON", code=0, script="sweep",
            check=_summary_lists(r"Best at temperature 0, concurrency 1: `spec\.num_steps=1 ")),
    Hostile(SWEEP, "summary_levels_a_list", _sweep(_edit(lambda d: d.__setitem__("levels", [1, 2]))),
            r"point spec\.num_steps=2 is unreadable: .*levels=\[1, 2\] is not a JSON object", code=0,
            script="sweep"),
    Hostile(SWEEP, "summary_tokens_per_second_a_text",
            _sweep(_edit(lambda d: d["levels"]["T0_c1"].__setitem__("output_tok_per_s", "fast"))),
            r"levels\.T0_c1: output_tok_per_s=\"fast\" is not a number", code=0, script="sweep"),
    Hostile(SWEEP, "summary_metrics_json_a_fifo", _sweep(_replace_with_fifo),
            r"point spec\.num_steps=2 is unreadable: .*is not a regular file \(a fifo", code=0, script="sweep"),
    Hostile(SWEEP, "summary_metrics_json_of_256_mib", _sweep(_grow_to_256_mib),
            r"point spec\.num_steps=2 is unreadable: .*holds 268,435,456 bytes, more than any benchmark result",
            code=0, script="sweep"),
    Hostile(SWEEP, "summary_every_point_unreadable", _sweep(_truncate, good=False),
            r"point spec\.num_steps=1 is unreadable(.|\n)*point spec\.num_steps=2 is unreadable", script="sweep"),
    Hostile(SWEEP, "summary_predictions_damaged", _sweep(_predictions_damaged),
            r"predictions\.json: confirmations is missing or not a JSON array", code=0, script="sweep",
            check=_summary_lists(r"WARNING: .*predictions\.json: .*left out of this summary")),
    Hostile(SWEEP, "summary_md_a_directory", _sweep(_summary_md_a_directory),
            r"cannot write the summary of .*sweeps/s: Is a directory", script="sweep"),
]


# --- the user's disk, network and GPU ---------------------------------------------------------------------

def _nearly_full_disk(free_kib: int) -> Callable[..., list[str]]:
    """The run's output directory on a small tmpfs with ``free_kib`` KiB left (a user's disk nearly full)."""
    def build(ws) -> list[str]:
        disk = ws.cwd / "disk"
        disk.mkdir()
        try:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True,
                           capture_output=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            pytest.skip(f"cannot mount a small tmpfs here ({exc})")
        with open(disk / "someone-elses-data", "wb") as fh:
            fh.write(b"\0" * (1024 - free_kib) * 1024)
        (disk / "out").mkdir()
        return [*_bench("bench.num_prompts=16", "bench.max_new_tokens=64")(ws), f"output_dir={disk / 'out'}"]

    return build


BEYOND_CASES = [
    Hostile(BEYOND, "disk_full_during_the_benchmark", _nearly_full_disk(4),
            r"cannot write .*disk/out/.*: No space left on device\. Free space on that disk", script="serve",
            process=True),
    Hostile(BEYOND, "gpu_lost_mid_benchmark", _bench(),
            r"the server exited with code 1 during the benchmark.*Likely cause: a GPU fault", script="serve",
            env=_failing("gpu_lost", 2)),
    Hostile(BEYOND, "http_proxy_in_the_environment", _bench(), r"\[bench\] [\w-]+: boot \d+s; T=0 c=1: [\d.]+ tok/s", code=0,
            script="serve", process=True, env=(("http_proxy", "http://127.0.0.1:9"), ("HTTP_PROXY", "http://127.0.0.1:9"))),
]

CASES = WORKLOAD_CASES + SERVER_CASES + SWEEP_CASES + BEYOND_CASES


# --- running ----------------------------------------------------------------------------------------------


def _fake_pids(root: Path) -> set[int]:
    """Processes still running the fake server whose working directory lies under ``root``."""
    left = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"fake_sglang" in (entry / "cmdline").read_bytes() and \
                    str(root) in os.readlink(entry / "cwd"):
                left.add(int(entry.name))
        except OSError:
            continue
    return left


def _run(case: Hostile, root: Path, base: Path) -> Result:
    try:
        r = run_hostile(case, root, base)
    finally:  # a small disk of a case is unmounted, however the case ended
        if os.path.ismount(root / "cwd" / "disk"):
            subprocess.run(["umount", str(root / "cwd" / "disk")], capture_output=True)
    deadline = time.monotonic() + 2  # a process leaving as the run ends is no process outliving it
    while _fake_pids(root) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = _fake_pids(root)
    if left:
        r.problem = "; ".join(filter(None, [r.problem, f"fake server processes outlived the run: {sorted(left)}"]))
    return r


@pytest.fixture(scope="module")
def results(request, tmp_path_factory) -> dict[str, Callable[[], Result]]:
    """Each selected case's result, on demand; process cases started at once on a pool."""
    yield from case_results(request, tmp_path_factory, CASES, _run, "faults", 2)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in CASES])
def test_fault_is_handled(case: Hostile, results) -> None:
    r = results[case.name]()
    wrong = _verdict(case, r)
    print(f"[fault] {case.klass}: {case.name}: exit {r.code} in {r.seconds:.1f}s")
    assert not wrong, "; ".join(wrong) + f"\n{r.output[-4000:]}"


# the hostile inputs' columns, and a fake server left running after its run
COLUMNS = (*HOSTILE_COLUMNS, ("processes left", lambda wrong: any("outlived the run" in w for w in wrong)))


def test_figures_in_docs_reliability(results) -> None:
    """The figures in docs/reliability.md are this module's count (only when every case ran)."""
    if set(results) != {c.name for c in CASES}:
        pytest.skip("only part of the table was selected")
    outcomes = {c.name: _verdict(c, results[c.name]()) for c in CASES}
    table = figures_table(outcomes, CASES, COLUMNS)
    assert documented_figures(FIGURES_BEGIN, FIGURES_END) == table, f"docs/reliability.md should read:\n{table}"


def test_five_cases_a_class_at_least() -> None:
    assert len({c.name for c in CASES}) == len(CASES)
    for klass in (WORKLOAD, SERVER, SWEEP):
        assert sum(c.klass == klass for c in CASES) >= 5, klass


def test_memory_does_not_grow_with_the_decompressed_size(tmp_path) -> None:
    """Reading a prompts file holds a chunk and a line, whatever the file expands to: the peak memory of a
    process reading 8 MiB and one reading 240 MiB (both compressed to little) differs by less than 32 MiB."""
    peaks = {}
    for mib in (8, 240):
        p = tmp_path / f"{mib}.jsonl.gz"
        blank = gzip.compress(b"\n" * 2**20, compresslevel=9)
        with open(p, "wb") as fh:  # gzip members, read as one stream
            fh.write(gzip.compress(_lines(50)) + blank * mib + gzip.compress(_lines(50)))
        code = "import sys; from automodel_spec.bench.workload import load_prompts; print(len(load_prompts(sys.argv[1])))"
        proc = subprocess.Popen([sys.executable, "-c", code, str(p)], stdout=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0 and proc.stdout.read().strip() == "100"
        peaks[mib] = usage.ru_maxrss * 1024  # KiB on Linux
    assert peaks[240] - peaks[8] < 32 * 2**20, {k: v / 2**20 for k, v in peaks.items()}

