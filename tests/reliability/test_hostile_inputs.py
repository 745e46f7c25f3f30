"""Hostile and careless inputs, third round: each class of the 29 cases found handled badly (issue 22).

One table, every case tagged with its class; each runs as in ``test_bad_inputs.py`` (its own directory,
``HOME``, ``TMPDIR``, cache and working directory; in this process through Hydra's compose API where
the behaviour allows, the real CLI where the exit code or what only a process does matters: the
``.hydra/`` files, the job log, the output directory, signals) and must end:

- with the expected exit code and a message naming the cause (one regex each), no ``Traceback``;
- within ``HANG_S`` (an in-process case is stopped by ``SIGALRM``, a process one by its timeout);
- with nothing changed outside the cache and the run's output directories (sha256 of every file
  before and after): a case that deleted or changed a file it did not write counts as data lost;
- and the case's own check where it has one (a file's content, a directory that must not be left).

``test_figures_in_docs_reliability`` counts, per class, the cases tried, refused cleanly, data lost,
tracebacks and hangs, and requires them to be the table in ``docs/reliability.md``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_bad_inputs import BASE_ENV, REPO, Workspace, _in_process, draft, edit_json, snapshot

PRODUCERS = REPO / "tests" / "fixtures" / "producers"
FAKE = REPO / "tests" / "fakes" / "fake_sglang.py"
KEY = "sk-literal-9d41c07b2e"
HANG_S = 60
FAKE_SERVER = [f"sglang.python={FAKE}", "sglang.port=0", "sglang.stop_timeout_s=4", "sglang.ready_timeout_s=30",
               "bench.num_prompts=2", "bench.max_new_tokens=8", "bench.request_timeout_s=20", "bench.baseline=false",
               "bench.gpu_free_wait_s=0"]
DOCS = REPO / "docs" / "reliability.md"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses Linux paths and signals")


# --- inputs ----------------------------------------------------------------------------------------


def _automodel(ws: Workspace, name: str = "run") -> Path:
    """A copy of NeMo Automodel's own EAGLE-3 run (producer fixture) under ``src/``."""
    return Path(shutil.copytree(PRODUCERS / "automodel" / "eagle3_run_full", ws.src / name, symlinks=True))


def _ckpt(run: Path) -> Path:
    return next((run / "checkpoints").glob("epoch_*"))


def _model_config(run: Path) -> Path:
    return _ckpt(run) / "model" / "consolidated" / "config.json"


def _target(ws: Workspace) -> str:
    d = ws.src / "target"
    d.mkdir(parents=True)
    shutil.copy(PRODUCERS / "specforge" / "inputs" / "target_config.json", d / "config.json")
    return f"target.path={d}"


def _exported(ws: Workspace, run: Path, out: Path) -> None:
    """An export of ``run`` written into ``out`` first, as an earlier run left it (the library called
    directly: builds run in the pool's threads too, where the environment must not change)."""
    from automodel_spec.draft.resolve import resolve_draft
    from automodel_spec.export.serving_dtype import choose_serving_dtype
    from automodel_spec.prepare import prepare_export

    prepare_export(resolve_draft(str(run)), "LlamaForCausalLMEagle3", export_dir=str(out), cache_dir=ws.cache,
                   serving_dtype=choose_serving_dtype(None, None))  # as export.py without a target


def ws_env(ws: Workspace) -> dict:
    return {**BASE_ENV, "AUTOMODEL_SPEC_CACHE": str(ws.cache), "HOME": str(ws.root / "home"),
            "TMPDIR": str(ws.root / "tmp"), "PYTHONUNBUFFERED": "1", **ws.env}


def _rebuild_beside_user_file(ws: Workspace) -> list[str]:
    run, out = _automodel(ws), ws.root / "mine"
    _exported(ws, run, out)
    (out / "README.md").write_text("my notes about this export\n")
    edit_json(out / "config.json", lambda c: c.__setitem__("rms_norm_eps", 1e-6))  # damaged: to be rebuilt
    return draft(run, f"draft.export_dir={out}")


def _rebuild_beside_user_dir(ws: Workspace) -> list[str]:
    run, out = _automodel(ws), ws.root / "mine"
    _exported(ws, run, out)
    (out / "tokenizer").mkdir()
    (out / "tokenizer" / "tokenizer.json").write_text("{}\n")
    (out / "model.safetensors").unlink()
    return draft(run, f"draft.export_dir={out}")


def _export_dir_inside(ws: Workspace) -> list[str]:
    run = _automodel(ws)
    return draft(run, f"draft.export_dir={run}/exported")


def _cache_inside(ws: Workspace) -> list[str]:
    run = _automodel(ws)
    os.symlink(run, ws.src / "link")  # inside it after the symlink is resolved
    return draft(run, f"cache_dir={ws.src / 'link' / 'cache'}")


def _recipe(text: str) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        run = _automodel(ws)
        (_ckpt(run) / "config.yaml").write_text(text)
        return draft(run)

    return build


BILLION_LAUGHS = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 12))


def _deep_json(ws: Workspace) -> list[str]:
    run = _automodel(ws)
    path = _model_config(run)
    path.write_text(path.read_text().rstrip()[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    return draft(run)


def _config_value(change: Callable[[dict], object]) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        run = _automodel(ws)
        edit_json(_model_config(run), change)
        return draft(run)

    return build


def _set_rope_theta(value: float) -> Callable[[dict], object]:
    return lambda c: c["rope_parameters"].__setitem__("rope_theta", value)


def _output_dir_file(*extra: str) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        (ws.src / "results").write_text("my results\n")
        return [*draft(_automodel(ws)), _target(ws), f"output_dir={ws.src / 'results'}", *extra]

    return build


def _non_utf8_path(ws: Workspace) -> list[str]:
    name = os.fsdecode(b"run-\xff\xfe")  # bytes of no UTF-8 text, as Python carries them in argv
    return ["draft=automodel", f'draft.path="{_automodel(ws, name)}"']


def _serve(*extra: str, mode: str = "serve") -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        return [*draft(_automodel(ws)), _target(ws), f"mode={mode}", *extra]

    return build


def _prompts(make: Callable[[Path], None]) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        p = ws.src / "prompts.jsonl"
        make(p)
        return [*_serve(mode="bench")(ws), f"bench.prompts={p}"]

    return build


def _loop(p: Path) -> None:
    os.symlink(p.name + ".b", p)
    os.symlink(p.name, p.parent / (p.name + ".b"))


def _draft_path_loop(ws: Workspace) -> list[str]:
    _loop(ws.src / "ckpt")
    return draft(ws.src / "ckpt")


def _sweep_dir(make: Callable[[Path], None]) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        make(ws.src / "sweep")
        return [str(ws.src / "sweep")]

    return build


def _another_tools_runs(d: Path) -> None:
    """A run directory of another tool: its own metrics.json files and summary.md, no Hydra multirun.yaml."""
    for name in ("eval-1", "eval-2"):
        (d / name).mkdir(parents=True)
        (d / name / "metrics.json").write_text(json.dumps({"loss": 1.25, "step": 100}))
    (d / "summary.md").write_text("# my notes\n")


def _sweep_named_out_of_sweeps(ws: Workspace) -> list[str]:
    # sweeps/../.. is the workspace's root: the points, multirun.yaml and summary would land beside src/
    return ["-m", "+sweep=grid", "bench.name=../..", *_serve(*FAKE_SERVER, "spec.num_steps=1", "spec.topk=1",
                                                             mode="bench")(ws)]


def _sweep_dir_a_file(ws: Workspace) -> list[str]:
    (ws.cwd / "sweeps").mkdir(parents=True)
    (ws.cwd / "sweeps" / "s").write_text("the user's notes\n")  # where the sweep's directory would go
    return ["-m", "+sweep=grid", "bench.name=s", *_serve(*FAKE_SERVER, "spec.num_steps=1", "spec.topk=1",
                                                        mode="bench")(ws)]


def _sweep_with_key(ws: Workspace) -> list[str]:
    return ["-m", "+sweep=grid", "bench.name=s", *_serve(*FAKE_SERVER, "spec.num_steps=1", "spec.topk=1",
                                                        f"sglang.api_key={KEY}", mode="bench")(ws)]


def _hydra_key_check(ws: Workspace) -> str | None:
    held = [str(p.relative_to(ws.cwd)) for p in ws.cwd.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    hydra = list(ws.cwd.rglob(".hydra/overrides.yaml"))
    if held:
        return f"the literal key is in {held}"
    if not hydra or "sglang.api_key='***'" not in hydra[0].read_text():
        return f"no masked override in the point's .hydra/overrides.yaml: {[h.read_text() for h in hydra]}"
    return None


def _job_log_check(ws: Workspace) -> str | None:
    logs = list(ws.cwd.glob("outputs/*/*/serve.log"))
    if len(logs) != 1:
        return f"expected one serve.log under outputs/, found {logs}"
    text = logs[0].read_text()
    missing = [what for what, pattern in (("the plan", r"\[automodel-spec\] prepared"),
                                         ("the export notes", r"num_hidden_layers 8 -> 1"),
                                         ("the error line", r"error: .*server"))
               if not re.search(pattern, text)]
    return f"serve.log lacks {missing}:\n{text}" if missing else None


def _no_outputs_check(ws: Workspace) -> str | None:
    left = sorted(str(p.relative_to(ws.cwd)) for p in ws.cwd.rglob("*"))
    return f"a failed run left {left}" if left else None


def _no_sweep_files(ws: Workspace) -> str | None:
    d = ws.src / "sweep"
    left = sorted(p.name for p in d.iterdir()) if d.is_dir() else []
    return f"wrote {left} into the directory" if left else None


# the state a Ctrl-C during torch's import leaves: its loggers unset (torch sets WARNING once imported),
# with fake_tensor's exit hook (which logs its cache stats at INFO) already registered
_TORCH_CUT_SHORT = """
import logging, runpy, sys
import torch._subclasses.fake_tensor  # noqa: F401  (registers the exit hook)
logging.getLogger("torch").setLevel(logging.NOTSET)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


# --- the table ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    """One case.

    Attributes:
        klass: the class of issue 22 it belongs to.
        name: the test id.
        build: makes the input under the workspace; returns the arguments.
        message: regex the output must match.
        code: the exit code.
        script: ``export``, ``serve``, ``sweep`` (``python -m automodel_spec.sweep``) or ``torch_cut`` (the
            export recipe started with torch's loggers as a cut import leaves them).
        print_only: run with ``print_only=true``.
        process: run as a subprocess (the real CLI).
        check: a further check of the workspace after the run; returns what is wrong, or ``None``.
        env: extra environment.
    """

    klass: str
    name: str
    build: Callable[[Workspace], list[str]]
    message: str
    code: int = 1
    script: str = "export"
    print_only: bool = False
    process: bool = False
    check: Callable[[Workspace], str | None] | None = None
    env: tuple[tuple[str, str], ...] = ()


DATA_LOSS, SOURCE, STRUCTURE, TRACEBACK, NUMBERS, TYPOS, CAUSE, SECRETS, OUTPUT = (
    "data loss", "source written into", "hostile structure", "traceback on a mistake", "non-finite or absurd numbers",
    "typos accepted", "wrong cause named", "secrets", "misleading output")

CASES = [
    Hostile(DATA_LOSS, "rebuild_beside_a_user_file", _rebuild_beside_user_file,
            r"also 1 file\(s\) this project did not write: README\.md.*nothing was touched"),
    Hostile(DATA_LOSS, "rebuild_beside_a_user_directory", _rebuild_beside_user_dir,
            r"did not write: tokenizer", process=True),
    Hostile(DATA_LOSS, "sweep_summary_of_another_tools_runs", _sweep_dir(_another_tools_runs),
            r"is not a sweep directory: it has no multirun\.yaml .*were not written there", script="sweep"),
    Hostile(DATA_LOSS, "sweep_named_out_of_sweeps", _sweep_named_out_of_sweeps,
            r"bench\.name='\.\./\.\.' must name a directory inside sweeps/", script="serve", process=True),
    Hostile(SOURCE, "export_dir_inside_draft_path", _export_dir_inside,
            r"draft\.export_dir=.*/run/exported lies inside draft\.path=.*/run", process=True),
    Hostile(SOURCE, "cache_dir_inside_draft_path_through_a_link", _cache_inside,
            r"cache_dir=.*/link/cache lies inside draft\.path=.*symlinks resolved"),
    Hostile(STRUCTURE, "recipe_yaml_billion_laughs", _recipe(BILLION_LAUGHS),
            r"config\.yaml is refused: its aliases expand to more than 1,000,000 nodes", process=True),
    Hostile(STRUCTURE, "recipe_yaml_alias_inside_itself", _recipe("a: &a\n  b: *a\n"),
            r"config\.yaml is refused: the alias \*a refers to a node that contains it", print_only=True),
    Hostile(STRUCTURE, "recipe_yaml_nested_5000_deep", _recipe("a: " + "[" * 5000 + "]" * 5000 + "\n"),
            r"config\.yaml is refused: it nests more than 64 levels", print_only=True),
    Hostile(STRUCTURE, "config_json_nested_100000_deep", _deep_json, r"config\.json nests more than 64 levels",
            print_only=True),
    Hostile(TRACEBACK, "output_dir_is_a_file_serve", _output_dir_file(),
            r"output_dir=.*results cannot hold this run's logs and results: .*results is not a directory",
            script="serve", print_only=True),
    Hostile(TRACEBACK, "output_dir_is_a_file_bench", _output_dir_file("mode=bench", *FAKE_SERVER),
            r"output_dir=.*results cannot hold", script="serve", process=True),
    Hostile(TRACEBACK, "draft_path_bytes_not_utf8", _non_utf8_path, r"export \(written\)", code=0,
            process=True, env=(("PYTHONIOENCODING", "utf-8:strict"),)),
    Hostile(TRACEBACK, "sweep_dir_is_a_file", _sweep_dir_a_file,
            r"the sweep's directory sweeps/s cannot be created: sweeps/s is not a directory", script="serve",
            process=True, check=lambda ws: None if (ws.cwd / "sweeps" / "s").read_text() == "the user's notes\n"
            else "the file in the sweep's place was changed"),
    Hostile(TRACEBACK, "optuna_sweep_of_no_trial", lambda ws: ["-m", "+sweep=optuna", "hydra.sweeper.n_trials=0",
                                                                "print_only=true"],
            r"hydra\.sweeper\.n_trials=0 must be a whole number >= 1", script="serve", process=True),
    Hostile(NUMBERS, "rms_norm_eps_nan", _config_value(lambda c: c.__setitem__("rms_norm_eps", float("nan"))),
            r"rms_norm_eps=nan .*must be a finite number between 0 and 1", process=True),
    Hostile(NUMBERS, "rope_theta_infinity", _config_value(_set_rope_theta(float("inf"))),
            r"rope_parameters\.rope_theta=inf .*finite number > 0", print_only=True),
    Hostile(NUMBERS, "spec_num_steps_1e20", _serve("spec.num_steps=100000000000000000000", "spec.topk=1"),
            r"spec\.num_steps=100000000000000000000 is above 64", script="serve", print_only=True),
    Hostile(NUMBERS, "torch_dtype_unknown", _config_value(lambda c: c.__setitem__("torch_dtype", "float8_e9")),
            r"torch_dtype='float8_e9', which is not a dtype SGLang serves.*bfloat16, float16, float32", print_only=True),
    Hostile(TYPOS, "plus_key_misspelt", _serve("+sglang.tp_sizee=4"),
            r"sglang\.tp_sizee is not a setting \(did you mean sglang\.tp_size\?\)", script="serve", print_only=True,
            process=True),
    Hostile(TYPOS, "plus_key_unknown_top_level", _serve("+flavour=spicy"),
            r"flavour is not a setting \(the top level has: algorithm, draft", script="serve", print_only=True),
    Hostile(TYPOS, "schema_as_an_option", _serve("algorithm=algorithm_schema"),
            r"Could not find 'algorithm/algorithm_schema'", script="serve", print_only=True),
    Hostile(TYPOS, "revision_of_a_local_draft", _serve("draft.revision=main"),
            r"draft\.revision=main is set, but draft\.path=.* is a local directory", script="serve", print_only=True),
    Hostile(CAUSE, "bench_host_that_does_not_resolve", _serve("sglang.host=no-such-host.invalid", *FAKE_SERVER,
                                                              mode="bench"),
            r"sglang\.host=no-such-host\.invalid is not a host name or address", script="serve", process=True),
    Hostile(CAUSE, "bench_prompts_a_directory", _prompts(lambda p: p.mkdir()),
            r"bench\.prompts=.*prompts\.jsonl is a directory, not a file", script="serve", print_only=True),
    Hostile(CAUSE, "bench_prompts_a_symlink_loop", _prompts(_loop), r"prompts\.jsonl is a symlink loop",
            script="serve", print_only=True),
    Hostile(CAUSE, "bench_prompts_not_utf8", _prompts(lambda p: p.write_bytes(b'{"prompt": "hi"}\n{"prompt": "\xff"}\n')),
            r"prompts\.jsonl:2 is not UTF-8 text \(byte 0xff at column 13\)", script="serve", print_only=True),
    Hostile(CAUSE, "draft_path_a_symlink_loop", _draft_path_loop, r"draft\.path=.*ckpt is a symlink loop",
            print_only=True),
    Hostile(CAUSE, "sweep_summary_of_an_empty_dir", _sweep_dir(lambda d: d.mkdir()),
            r"holds no sweep point .*nothing was written", script="sweep", process=True, check=_no_sweep_files),
    Hostile(CAUSE, "sweep_summary_of_a_missing_dir", _sweep_dir(lambda d: None), r"sweep does not exist",
            code=2, script="sweep"),
    Hostile(SECRETS, "literal_api_key_in_a_sweep", _sweep_with_key, r"\[bench\] spec\.num_steps=1", code=0,
            script="serve", process=True, check=_hydra_key_check),
    Hostile(OUTPUT, "job_log_keeps_plan_notes_and_error", _serve(*FAKE_SERVER), r"error: the server exited",
            script="serve", process=True, check=_job_log_check, env=(("FAKE_SGLANG_MODE", "crash"),)),
    Hostile(OUTPUT, "failed_first_run_leaves_no_outputs_dir", _serve("spec.num_steps=0", "spec.topk=1"),
            r"spec\.num_steps=0 must be >= 1", script="serve", process=True, check=_no_outputs_check),
    Hostile(OUTPUT, "no_torch_cache_stats_after_a_cut_import", lambda ws: draft(_automodel(ws)), r"export \(written\)",
            code=0, script="torch_cut", process=True),
]


# --- running -------------------------------------------------------------------------------------------


class Hang(BaseException):
    """An in-process case ran past ``HANG_S`` (a BaseException: no ``except Exception`` swallows it)."""


@dataclass
class Result:
    code: int | None
    output: str
    changed: list[str]
    hung: bool
    problem: str | None  # the case's own check
    seconds: float


def _command(case: Hostile, args: list[str]) -> list[str]:
    if case.script == "sweep":
        return [sys.executable, "-m", "automodel_spec.sweep", *args]
    if case.script == "torch_cut":
        return [sys.executable, "-c", _TORCH_CUT_SHORT, str(REPO / "recipes" / "export.py"), *args]
    return [sys.executable, str(REPO / "recipes" / f"{case.script}.py"), *args]


def run_hostile(case: Hostile, root: Path, base_dir: Path) -> Result:
    ws = Workspace(root, base_dir)
    for d in (ws.src, ws.cwd, root / "home", root / "tmp"):
        d.mkdir(parents=True)
    args = [*(["print_only=true"] if case.print_only else []), *case.build(ws)]
    env = {**ws_env(ws), "MPLCONFIGDIR": str(base_dir / "matplotlib"), **dict(case.env)}
    before = snapshot(root)
    t0, hung = time.monotonic(), False
    if case.process:
        try:
            res = subprocess.run(_command(case, args), cwd=ws.cwd, env=env, stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True, timeout=HANG_S, errors="backslashreplace")
            code, output = res.returncode, res.stdout + res.stderr
        except subprocess.TimeoutExpired as exc:
            code, output, hung = None, f"{exc.stdout or ''}{exc.stderr or ''}", True
    else:
        code, output, hung = _in_process_bounded(case, args, env, ws.cwd)
    after = snapshot(root)
    allowed = ("cache", "cwd", "tmp")  # the cache, the run's output directories, $TMPDIR (port and GPU leases)
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p)
                     and not any(p == a or p.startswith(a + "/") for a in allowed))
    return Result(code, output, changed, hung, case.check(ws) if case.check else None, time.monotonic() - t0)


def _in_process_bounded(case: Hostile, args: list[str], env: dict, cwd: Path) -> tuple[int | None, str, bool]:
    if case.script == "sweep":
        return _bounded(lambda: _sweep_main(args))
    return _bounded(lambda: _in_process(case.script, args, env, cwd))


def _sweep_main(args: list[str]) -> tuple[int, str]:
    import contextlib
    import io

    from automodel_spec.sweep.__main__ import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(args)
    return code, out.getvalue()


def _bounded(call) -> tuple[int | None, str, bool]:
    def expire(signum, frame):
        raise Hang()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(HANG_S)
    try:
        code, output = call()
        return code, output, False
    except Hang:
        return None, "", True
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def case_results(request, tmp_path_factory, cases, run, name: str, workers: int):
    """Each of ``cases`` the session selected from the requesting module, its ``Result`` on demand: process
    cases started at once on a pool of ``workers`` (``run(case, root, base)``), in-process ones when first
    asked for, each once. A module fixture's body (``yield from``); the pool is shut down after the module.
    """
    base = tmp_path_factory.mktemp(f"{name}-base")
    selected = {item.callspec.params["case"].name for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec") and "case" in item.callspec.params}
    root = tmp_path_factory.mktemp(name)
    pool = ThreadPoolExecutor(max_workers=workers)
    runs: dict[str, Callable[[], Result]] = {}
    memo: dict[str, Result] = {}
    for c in cases:
        if c.name not in selected:
            continue
        if c.process:
            runs[c.name] = pool.submit(run, c, root / c.name, base).result
        else:
            runs[c.name] = lambda c=c: memo.get(c.name) or memo.setdefault(c.name, run(c, root / c.name, base))
    yield runs
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="module")
def results(request, tmp_path_factory) -> dict[str, Callable[[], Result]]:
    """Each selected case's result, on demand; process cases started at once on a pool (the cases copy the
    producers' fixtures, not test_bad_inputs' drafts)."""
    yield from case_results(request, tmp_path_factory, CASES, run_hostile, "hostile", max(2, os.cpu_count() or 2))


def _verdict(case: Hostile, r: Result) -> list[str]:
    """What is wrong with a result (empty: handled cleanly)."""
    wrong = []
    if r.hung:
        wrong.append(f"hung (no end within {HANG_S}s)")
    if "Traceback" in r.output:
        wrong.append("printed a traceback")
    if r.changed:
        wrong.append(f"changed or deleted what it did not write: {r.changed[:8]}")
    if r.code != case.code:
        wrong.append(f"exit {r.code}, expected {case.code}")
    if not re.search(case.message, r.output, re.S):
        wrong.append(f"no match for {case.message!r}")
    if "FakeTensor cache stats" in r.output:
        wrong.append("torch's FakeTensor cache stats on the console")
    if r.problem:
        wrong.append(r.problem)
    return wrong


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in CASES])
def test_hostile_input_is_handled(case: Hostile, results) -> None:
    r = results[case.name]()
    wrong = _verdict(case, r)
    print(f"[hostile] {case.klass}: {case.name}: exit {r.code} in {r.seconds:.1f}s")
    assert not wrong, "; ".join(wrong) + f"\n{r.output[-4000:]}"


FIGURES_BEGIN = "<!-- figures of tests/reliability/test_hostile_inputs.py -->"
FIGURES_END = "<!-- end of figures -->"


# The figures' columns after "cases": a heading, and what counts a case in it (from what was wrong with it).
COLUMNS = (("handled cleanly", lambda wrong: not wrong),
           ("data lost", lambda wrong: any(w.startswith("changed or deleted") for w in wrong)),
           ("tracebacks", lambda wrong: "printed a traceback" in wrong),
           ("hangs", lambda wrong: any(w.startswith("hung") for w in wrong)))


def figures_table(outcomes: dict[str, list[str]], cases=None, columns=COLUMNS) -> str:
    """The table of ``docs/reliability.md``: per class, cases tried, then one count per column (``outcomes``:
    case name -> what was wrong with it; ``cases``: this module's by default)."""
    cases = CASES if cases is None else cases
    lines = ["| class | cases | " + " | ".join(head for head, _ in columns) + " |",
             "|---|---:|" + "---:|" * len(columns)]
    total = [0] * (1 + len(columns))
    for klass in dict.fromkeys(c.klass for c in cases):
        names = [c.name for c in cases if c.klass == klass]
        row = [len(names), *(sum(counts(outcomes[n]) for n in names) for _, counts in columns)]
        total = [a + b for a, b in zip(total, row, strict=True)]
        lines.append(f"| {klass} | " + " | ".join(map(str, row)) + " |")
    lines.append("| **all** | " + " | ".join(f"**{v}**" for v in total) + " |")
    return "\n".join(lines)


def documented_figures(begin: str, end: str) -> str:
    """The table ``docs/reliability.md`` holds between the markers ``begin`` and ``end``."""
    text = DOCS.read_text()
    return text[text.index(begin) + len(begin):text.index(end)].strip()


def test_figures_in_docs_reliability(results) -> None:
    """The figures in docs/reliability.md are this module's count (only when every case ran)."""
    if set(results) != {c.name for c in CASES}:
        pytest.skip("only part of the table was selected")
    outcomes = {c.name: _verdict(c, results[c.name]()) for c in CASES}
    table = figures_table(outcomes)
    assert documented_figures(FIGURES_BEGIN, FIGURES_END) == table, f"docs/reliability.md should read:\n{table}"


def test_one_case_per_class_at_least() -> None:
    assert len({c.name for c in CASES}) == len(CASES)
    assert {c.klass for c in CASES} == {DATA_LOSS, SOURCE, STRUCTURE, TRACEBACK, NUMBERS, TYPOS, CAUSE, SECRETS,
                                        OUTPUT}
    json.dumps([c.name for c in CASES])  # names are plain ids
