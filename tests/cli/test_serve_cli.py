"""The real CLI, as a user runs it: ``python recipes/serve.py ...`` and ``recipes/export.py`` in subprocesses.

Every run gets its own working directory and ``AUTOMODEL_SPEC_CACHE`` under ``tmp_path``. Serving
uses the fake server (``sglang.python=tests/fakes/fake_sglang.py``), which stands in for SGLang's
process lifecycle only. Serve processes run in their own session and the fake writes its pids to
FAKE_SGLANG_PIDFILE, so teardown can SIGKILL anything a failing test leaves behind.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import ServeProcess, is_fake_server, process_running, tree

REPO = Path(__file__).resolve().parents[2]
SERVE = REPO / "recipes" / "serve.py"
EXPORT = REPO / "recipes" / "export.py"
FAKE = REPO / "tests" / "fakes" / "fake_sglang.py"
CLI_TIMEOUT_S = 60
READY_LINE = re.compile(r"test generation: (\d+) tokens, accept length ([0-9.]+|n/a)")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process checks use /proc")


# --- helpers --------------------------------------------------------------------------------------


def _env(cache: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FAKE_SGLANG_", "AUTOMODEL_SPEC_", "HYDRA_"))}
    env.update(AUTOMODEL_SPEC_CACHE=str(cache), PYTHONUNBUFFERED="1", **extra)
    return env


def run_cli(script: Path, *args: str, cwd: Path, cache: Path, env: dict | None = None,
            timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=_env(cache, **(env or {})),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def command_argv(stdout: str) -> list[str]:
    """The server argv that print_only shows (the line after ``command:``), parsed as a shell would."""
    lines = stdout.splitlines()
    assert "command:" in lines, stdout
    argv = shlex.split(lines[lines.index("command:") + 1])
    assert argv[1:3] == ["-m", "sglang.launch_server"], argv
    return argv


def flag(argv: list[str], name: str) -> str:
    assert name in argv, f"{name} not in {argv}"
    return argv[argv.index(name) + 1]


def fake_pids(pidfile: Path) -> list[int]:
    text = pidfile.read_text() if pidfile.exists() else ""
    return [int(p) for p in text.split()] if text.endswith("\n") else []


def wait_fake_pids(pidfile: Path, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while not fake_pids(pidfile):
        assert time.monotonic() < deadline, f"the fake server wrote no pids to {pidfile} within {timeout}s"
        time.sleep(0.05)
    return fake_pids(pidfile)


def assert_no_fake_left(pidfile: Path, timeout: float = 5.0) -> None:
    pids = fake_pids(pidfile)
    assert len(pids) == 2, f"the fake server never wrote its pids to {pidfile}"
    deadline = time.monotonic() + timeout
    while any(process_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [p for p in pids if process_running(p)]
    assert not left, f"fake server processes still running: {left}"


@pytest.fixture(scope="module")
def built_cache(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A cache holding the built demo pair and its export, made by a first real ``recipes/export.py`` run."""
    root = tmp_path_factory.mktemp("built")
    cache = root / "cache"
    first = run_cli(EXPORT, cwd=root / "cwd", cache=cache, timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr
    return cache, first


@pytest.fixture
def serve(tmp_path, built_cache):
    """Factory: start serve.py on the built demo with the fake server; kills what is left on teardown."""
    started: list[tuple[ServeProcess, Path]] = []

    def start(*overrides: str, mode: str = "ok", env: dict | None = None) -> tuple[ServeProcess, Path]:
        n = len(started)
        pidfile = tmp_path / f"fake-pids-{n}.txt"
        args = [f"sglang.python={FAKE}", "sglang.port=0", "sglang.stop_timeout_s=4",
                f"hydra.run.dir={tmp_path / f'run-{n}'}", *overrides]
        proc = ServeProcess(args, cwd=tmp_path / f"cwd-{n}",
                            env=_env(built_cache[0], FAKE_SGLANG_MODE=mode, FAKE_SGLANG_PIDFILE=str(pidfile),
                                     **(env or {})))
        started.append((proc, pidfile))
        return proc, pidfile

    yield start
    for proc, pidfile in started:
        proc.kill()
        for pid in fake_pids(pidfile):
            if process_running(pid) and is_fake_server(pid):
                os.kill(pid, signal.SIGKILL)


# --- print_only -----------------------------------------------------------------------------------


def test_print_only_demo_prints_the_command_and_writes_nothing(tmp_path):
    cwd, cache, home = tmp_path / "cwd", tmp_path / "cache", tmp_path / "home"
    for d in (cwd, home):
        d.mkdir()
    res = run_cli(SERVE, "print_only=true", cwd=cwd, cache=cache, env={"HOME": str(home)})
    assert res.returncode == 0, res.stderr
    assert "print_only: nothing was written" in res.stdout
    argv = command_argv(res.stdout)
    assert argv[0] == sys.executable
    assert flag(argv, "--model-path") == str(cache / "demo" / "v1" / "target")
    assert flag(argv, "--speculative-algorithm") == "EAGLE3"
    # The demo pair is not built yet: the export path is a placeholder, quoted as one argument.
    assert flag(argv, "--speculative-draft-model-path").startswith("<export of ")
    assert "would be built" in res.stdout
    assert not cache.exists()
    assert tree(cwd) == {} and tree(home) == {}
    assert not (cwd / "outputs").exists() and not (cwd / "multirun").exists()


def test_print_only_with_a_built_demo_shows_the_export_and_touches_nothing(tmp_path, built_cache):
    cache = built_cache[0]
    before = tree(cache)
    res = run_cli(SERVE, "print_only=true", cwd=tmp_path / "cwd", cache=cache)
    assert res.returncode == 0, res.stderr
    draft = Path(flag(command_argv(res.stdout), "--speculative-draft-model-path"))
    assert draft.parent == cache / "exports" and (draft / "config.json").is_file()
    assert tree(cache) == before
    assert tree(tmp_path / "cwd") == {}


@pytest.fixture(scope="module")
def automodel_pair(tmp_path_factory) -> tuple[Path, Path]:
    """A TINY Llama target and an Automodel EAGLE-3 run (320-token draft vocabulary) written in-process."""
    from automodel_spec import synthetic

    root = tmp_path_factory.mktemp("automodel")
    target = synthetic.write_target(root / "target", synthetic.TINY, repeat=True, tokenizer=False)
    shape, vocab = synthetic.TINY, 320
    synthetic.write_automodel_run(root / "run", synthetic.automodel_eagle3_config(shape, vocab),
                                  synthetic.eagle3_draft_tensors(shape, vocab),
                                  selected_token_ids=range(vocab), vocab_size=shape.vocab_size)
    return target, root / "run"


def test_print_only_automodel_run_prints_eagle3_and_the_export_path(tmp_path, automodel_pair):
    target, run = automodel_pair
    cwd, cache = tmp_path / "cwd", tmp_path / "cache"
    before = (tree(target), tree(run))
    res = run_cli(SERVE, "print_only=true", "algorithm=EAGLE3", "draft=automodel", f"draft.path={run}",
                  f"target.path={target}", "sglang.port=0", cwd=cwd, cache=cache)
    assert res.returncode == 0, res.stderr
    argv = command_argv(res.stdout)
    assert flag(argv, "--speculative-algorithm") == "EAGLE3"
    assert flag(argv, "--model-path") == str(target)
    export = flag(argv, "--speculative-draft-model-path")
    assert re.fullmatch(re.escape(str(cache / "exports")) + r"/LlamaForCausalLMEagle3-[0-9a-f]+", export), export
    assert f"draft:  {export}" in res.stdout
    assert "sglang.port=0: a free port is picked at launch" in res.stdout
    assert not cache.exists() and tree(cwd) == {}
    assert (tree(target), tree(run)) == before


def test_print_only_masks_the_api_key(tmp_path):
    res = run_cli(SERVE, "print_only=true", "sglang.api_key=sk-very-secret", cwd=tmp_path / "cwd",
                  cache=tmp_path / "cache")
    assert res.returncode == 0, res.stderr
    assert "sk-very-secret" not in res.stdout + res.stderr
    assert flag(command_argv(res.stdout), "--api-key") == "***"


# --- Hydra's own options and compose-time errors --------------------------------------------------


def test_help_lists_the_groups(tmp_path):
    res = run_cli(SERVE, "--help", cwd=tmp_path / "cwd", cache=tmp_path / "cache")
    assert res.returncode == 0, res.stderr
    assert "== Configuration groups ==" in res.stdout
    groups = dict(line.split(": ", 1) for line in res.stdout.splitlines()
                  if re.match(r"^(algorithm|draft|sglang|bench): ", line))
    assert {"EAGLE", "EAGLE3", "NEXTN", "STANDALONE", "none"} <= set(groups["algorithm"].split(", "))
    assert {"automodel", "demo", "hub", "legacy"} <= set(groups["draft"].split(", "))
    assert tree(tmp_path / "cwd") == {} and not (tmp_path / "cache").exists()


def test_cfg_job_prints_the_composed_config(tmp_path):
    res = run_cli(SERVE, "--cfg", "job", "sglang.tp_size=2", "algorithm=EAGLE", cwd=tmp_path / "cwd",
                  cache=tmp_path / "cache")
    assert res.returncode == 0, res.stderr
    cfg = yaml.safe_load(res.stdout)
    assert cfg["sglang"]["tp_size"] == 2
    assert cfg["algorithm"]["name"] == "EAGLE"
    assert cfg["draft"]["path"] == "builtin:demo"
    assert "hydra" not in cfg
    assert tree(tmp_path / "cwd") == {} and not (tmp_path / "cache").exists()


@pytest.mark.parametrize(("override", "expected"), [
    ("sglang.tp_sizee=2", "tp_sizee"),
    ("sglang.tp_size=abc", "abc"),
    ("spec.num_stepz=3", "num_stepz"),
    ("algorithm=EAGLE4", "EAGLE4"),
])
def test_compose_errors_fail_before_the_job_runs(tmp_path, override, expected):
    res = run_cli(SERVE, "print_only=true", override, cwd=tmp_path / "cwd", cache=tmp_path / "cache")
    assert res.returncode != 0
    assert expected in res.stderr
    assert "[automodel-spec]" not in res.stdout  # composition failed: the job never started
    assert "Traceback" not in res.stderr
    assert tree(tmp_path / "cwd") == {} and not (tmp_path / "cache").exists()


@pytest.mark.parametrize(("overrides", "expected"), [
    (["spec.num_steps=3"], ["1 problem(s)", "spec.topk"]),
    (["spec.topk=1", "spec.num_draft_tokens=9"], ["1 problem(s)", "spec.num_steps"]),
    (["spec.num_steps=3", "spec.topk=1", "spec.num_draft_tokens=9", "sglang.port=70000", "sglang.tp_size=0",
      "sglang.mem_fraction_static=1.5"],
     ["4 problem(s)", "spec.num_draft_tokens=4", "sglang.port=70000", "sglang.tp_size=0",
      "sglang.mem_fraction_static=1.5"]),
])
def test_cross_field_errors_are_reported_together_with_exit_1(tmp_path, overrides, expected):
    res = run_cli(SERVE, "print_only=true", *overrides, cwd=tmp_path / "cwd", cache=tmp_path / "cache")
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stderr.count("error: invalid configuration") == 1, res.stderr  # one message
    for text in expected:
        assert text in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert tree(tmp_path / "cwd") == {} and not (tmp_path / "cache").exists()


def test_nonexistent_local_draft_path_exits_1_naming_it(tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    (target / "config.json").write_text("{}\n")
    missing = tmp_path / "no" / "such" / "run"
    res = run_cli(SERVE, "draft=automodel", f"draft.path={missing}", f"target.path={target}",
                  f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path / "cwd", cache=tmp_path / "cache")
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"draft.path={missing} does not exist" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "cache").exists()


MULTIRUN = ["-m", "print_only=true", "spec.num_steps=1,3", "spec.topk=1", "spec.num_draft_tokens=2,4"]


def test_multirun_print_only_runs_every_job_continues_past_invalid_ones_and_writes_nothing(tmp_path):
    cwd, cache, scratch = tmp_path / "cwd", tmp_path / "cache", tmp_path / "tmpdir"
    scratch.mkdir()
    res = run_cli(SERVE, *MULTIRUN, cwd=cwd, cache=cache, env={"TMPDIR": str(scratch)})
    assert res.returncode == 0, res.stdout + res.stderr
    for num in range(4):
        assert re.search(rf"#{num} : ", res.stdout), res.stdout
    # (1, 1, 2) and (3, 1, 4) are valid chains; (1, 1, 4) and (3, 1, 2) are not.
    commands = [shlex.split(line) for line in res.stdout.splitlines() if "sglang.launch_server" in line]
    assert [(flag(a, "--speculative-num-steps"), flag(a, "--speculative-num-draft-tokens")) for a in commands] \
        == [("1", "2"), ("3", "4")]
    assert res.stderr.count("error: invalid configuration") == 2, res.stderr
    assert "set spec.num_draft_tokens=2 (got 4" in res.stderr
    assert "set spec.num_draft_tokens=4 (got 2" in res.stderr
    assert "job 1 failed with code 1; continuing the sweep" in res.stderr
    assert "job 2 failed with code 1; continuing the sweep" in res.stderr
    assert not cache.exists()
    assert tree(cwd) == {}  # no multirun/, outputs/ or multirun.yaml
    assert tree(scratch) == {}  # nor anything left in the temporary directory


# --- export.py ------------------------------------------------------------------------------------


def test_export_prints_the_export_dir_last_and_reuses_it(tmp_path, built_cache):
    cache, first = built_cache
    path = Path(first.stdout.strip().splitlines()[-1])
    assert "export (written):" in first.stdout
    assert path.is_absolute() and path.parent == cache / "exports"
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    second = run_cli(EXPORT, cwd=tmp_path / "cwd", cache=cache)
    assert second.returncode == 0, second.stderr
    assert "export (reused):" in second.stdout and "reused from an earlier run" in second.stdout
    assert second.stdout.strip().splitlines()[-1] == str(path)


def test_export_print_only_before_the_demo_exists_writes_nothing(tmp_path):
    cwd, cache = tmp_path / "cwd", tmp_path / "cache"
    res = run_cli(EXPORT, "print_only=true", cwd=cwd, cache=cache)
    assert res.returncode == 0, res.stderr
    assert "would be built" in res.stdout
    assert "export (would be written)" in res.stdout
    assert "nothing to export" not in res.stdout  # the demo draft is exported, not passed through
    assert not cache.exists() and tree(cwd) == {}


def test_export_print_only_of_an_existing_export_says_reused_and_touches_nothing(tmp_path, built_cache):
    cache, first = built_cache
    before = tree(cache)
    res = run_cli(EXPORT, "print_only=true", cwd=tmp_path / "cwd", cache=cache)
    assert res.returncode == 0, res.stderr
    assert "export (reused):" in res.stdout and "would be written" not in res.stdout
    assert res.stdout.strip().splitlines()[-1] == first.stdout.strip().splitlines()[-1]
    assert tree(cache) == before and tree(tmp_path / "cwd") == {}


def test_export_without_a_draft_to_export_exits_1(tmp_path):
    res = run_cli(EXPORT, "print_only=true", "algorithm=none", cwd=tmp_path / "cwd", cache=tmp_path / "cache")
    assert res.returncode == 1
    assert "algorithm=none has no draft to export" in res.stderr


# --- serving with the fake server -----------------------------------------------------------------


SIGNALS = pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                                  ids=["SIGINT", "SIGTERM"])


@SIGNALS
def test_serve_reports_ready_then_a_signal_stops_everything(serve, tmp_path, sig, code):
    proc, pidfile = serve()
    m = proc.wait_for(READY_LINE)
    assert m.group(0) == "test generation: 48 tokens, accept length 4.00"
    out = proc.output
    assert re.search(r"\[automodel-spec\] ready in \d+\.\d+s at http://127\.0\.0\.1:\d+", out), out
    assert ("effective speculative settings: speculative_algorithm=EAGLE3, speculative_num_steps=3, "
            "speculative_eagle_topk=1, speculative_num_draft_tokens=4") in out
    assert len(fake_pids(pidfile)) == 2
    assert proc.signal(sig) == code, proc.output[-3000:]
    assert_no_fake_left(pidfile)
    run_dir = tmp_path / "run-0"
    assert "fired up and ready to roll" in (run_dir / "server.log").read_text()
    assert (run_dir / "server_info.json").is_file() and (run_dir / "effective_settings.json").is_file()


def test_serve_killed_outright_takes_its_server_along(serve):
    # SIGKILL (an OOM kill, a scheduler's hard limit, a lease that ends): serve.py can stop nothing
    # itself, so the kernel tells the server that its launcher died.
    proc, pidfile = serve()
    proc.wait_for(READY_LINE)
    proc.proc.kill()  # serve.py alone: the server runs in a session of its own
    assert proc.finish() == -signal.SIGKILL
    assert_no_fake_left(pidfile)


def test_serve_with_an_api_key_and_no_speculation_never_shows_the_key(serve, tmp_path):
    key = "sk-cli-secret-4242"
    proc, pidfile = serve("algorithm=none", f"sglang.api_key={key}")
    proc.wait_for(re.compile(r"speculation: off \(algorithm=none\)"))
    assert "--speculative-algorithm" not in proc.output
    assert proc.signal(signal.SIGINT) == 130, proc.output[-3000:]
    assert_no_fake_left(pidfile)
    run_dir = tmp_path / "run-0"
    texts = {"console": proc.output, "server.log": (run_dir / "server.log").read_text(),
             "server_info.json": (run_dir / "server_info.json").read_text()}
    for name, text in texts.items():
        assert key not in text, f"the api key leaked into {name}"
    assert "server_args api_key=***" in texts["server.log"]
    assert '"api_key": "***"' in texts["server_info.json"]


@SIGNALS
def test_signal_during_boot_stops_the_booting_server(serve, sig, code):
    proc, pidfile = serve("sglang.stop_timeout_s=2", env={"FAKE_SGLANG_BOOT_S": "30"})
    proc.wait_for(re.compile(r"fake-sglang: booting on port"))
    assert len(wait_fake_pids(pidfile)) == 2  # its child ("scheduler") is up too
    t0 = time.monotonic()
    assert proc.signal(sig) == code, proc.output[-3000:]
    assert time.monotonic() - t0 < 2 + 8
    assert "ready in" not in proc.output
    assert_no_fake_left(pidfile)


def test_server_exiting_by_itself_gives_serve_its_exit_code(serve):
    proc, pidfile = serve(mode="exit_after", env={"FAKE_SGLANG_EXIT_AFTER_S": "2"})
    assert proc.finish(timeout=40) == 7, proc.output[-3000:]
    assert "server exited with code 7" in proc.output
    assert_no_fake_left(pidfile)


def test_crash_at_boot_exits_nonzero_within_seconds_with_the_log_tail(serve):
    proc, pidfile = serve(mode="crash")
    t0 = time.monotonic()
    code = proc.finish(timeout=40)
    assert code != 0
    assert time.monotonic() - t0 < 20
    out = proc.output
    assert "the server exited with code 3 during startup" in out
    tail = out.split("Last lines of", 1)[1]
    assert "CUDA out of memory" in tail
    assert "Traceback" not in out
    assert_no_fake_left(pidfile)


@pytest.mark.skipif(importlib.util.find_spec("sglang") is not None, reason="SGLang is installed here")
def test_missing_sglang_exits_2_with_an_install_hint(tmp_path, built_cache):
    res = run_cli(SERVE, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path / "cwd", cache=built_cache[0])
    assert res.returncode == 2, res.stdout + res.stderr
    assert "sglang is required to launch the server" in res.stderr
    assert "pip install" in res.stderr and "sglang" in res.stderr
    assert "Traceback" not in res.stderr
