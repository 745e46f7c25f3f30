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
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from helpers import ServeProcess, is_fake_server, run_recipe, tree
from hydra.errors import HydraException

from automodel_spec.hydra import recipe_runtime
from automodel_spec.hydra.glue import SCRATCH_ENV
from automodel_spec.io.process_state import process_running

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


@pytest.fixture
def built_cache(demo_export) -> tuple[Path, subprocess.CompletedProcess]:
    """A cache holding the built demo pair and its export, and what the export run that made them printed:
    the shared one (tests/conftest.py), built once per worker rather than again for this module on every
    worker that runs one of its tests."""
    return demo_export


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


@pytest.fixture
def in_process(tmp_path, monkeypatch):
    """A recipe run in this process (``run_recipe``): its own cache."""
    monkeypatch.setenv("AUTOMODEL_SPEC_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def serve_job(tmp_path, in_process, capsys):
    """Factory: ``recipes/serve.py OVERRIDES`` in this process (where what is tested is the job's, not the
    command line's); returns its exit code and what it printed (``returncode``, ``stdout``, ``stderr``)."""

    def run(*overrides: str) -> SimpleNamespace:
        code = run_recipe("serve", *overrides, output_dir=tmp_path / "out")
        printed = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=printed.out, stderr=printed.err)

    return run


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
    # CPython's import-time report on stderr: a run that touches no tensor never loads torch (~1.5 s of CPU)
    res = run_cli(SERVE, "print_only=true", cwd=tmp_path / "cwd", cache=cache, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert res.returncode == 0, res.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
    assert "hydra" in imported and "torch" not in imported and "safetensors.torch" not in imported
    draft = Path(flag(command_argv(res.stdout), "--speculative-draft-model-path"))
    assert draft.parent == cache / "exports" and (draft / "config.json").is_file()
    assert tree(cache) == before
    assert tree(tmp_path / "cwd") == {}


@pytest.fixture(scope="module")
def automodel_pair(tmp_path_factory) -> tuple[Path, Path]:
    """A TINY Llama target and an Automodel EAGLE-3 run (320-token draft vocabulary) written in-process."""
    from automodel_spec.demo import synthetic

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


def test_print_only_builds_for_the_release_asked_for_and_says_which(serve_job):
    res = serve_job("print_only=true", "sglang=throughput", "sglang.release=0.5.23")
    assert res.returncode == 0, res.stderr
    assert re.search(r"^SGLang release: 0\.5\.23 \(sglang\.release; ", res.stdout, re.M), res.stdout
    argv = command_argv(res.stdout)
    assert flag(argv, "--cuda-graph-max-bs-decode") == "64" and "--cuda-graph-max-bs" not in argv
    old = serve_job("print_only=true", "sglang=throughput", "sglang.release=0.5.12")
    assert flag(command_argv(old.stdout), "--cuda-graph-max-bs") == "64"


def test_a_setting_the_release_cannot_take_is_refused_naming_both(tmp_path, serve_job):
    res = serve_job("print_only=true", "spec.adaptive=true", "sglang.release=0.5.10")
    assert res.returncode != 0
    assert re.search(r"spec\.adaptive needs SGLang >= 0\.5\.11[;,] (but )?the command is built for SGLang 0\.5\.10",
                     res.stderr), res.stderr
    assert "Traceback" not in res.stdout + res.stderr and "command:" not in res.stdout
    bad = serve_job("print_only=true", "sglang.release=0.5.8")
    assert bad.returncode != 0 and "sglang.release=0.5.8: SGLang 0.5.8 is older than 0.5.9" in bad.stderr
    config = tmp_path / "adaptive.json"  # the per-batch-size format: 0.5.13's
    config.write_text('{"1": {"candidate_steps": [1, 3]}}')
    res = serve_job("print_only=true", "spec.adaptive=true", f"spec.adaptive_config={config}", "sglang.release=0.5.12")
    assert res.returncode != 0 and "command:" not in res.stdout
    assert f"spec.adaptive with spec.adaptive_config={config} needs SGLang >= 0.5.13, but the command is built " \
           "for SGLang 0.5.12 (sglang.release)" in res.stderr


def test_an_adaptive_start_the_release_would_die_on_is_refused_before_anything_starts(serve_job):
    res = serve_job("print_only=true", "spec.adaptive=true", "spec.num_steps=3", "spec.topk=1", "sglang.release=0.5.17")
    assert res.returncode != 0 and "command:" not in res.stdout and "Traceback" not in res.stderr
    assert "spec.adaptive=true with spec.num_steps=3 would die at startup on SGLang 0.5.17" in res.stderr
    ok = serve_job("print_only=true", "spec.adaptive=true", "spec.num_steps=7", "spec.topk=1", "sglang.release=0.5.17")
    assert ok.returncode == 0 and "--speculative-adaptive" in ok.stdout


# --- Hydra's own options and compose-time errors --------------------------------------------------


HELP_GROUP_LINE = re.compile(r"^(?:(\w+) +| +)(\w+)(\*?)  +\S")


def help_groups(text: str) -> dict[str, dict[str, bool]]:
    """The '== Config groups' section of a help text: group -> {option: is the default}."""
    section = text.split("== Config groups", 1)[1].split("\n\n", 1)[0]
    groups: dict[str, dict[str, bool]] = {}
    group = None
    for line in section.splitlines()[1:]:
        m = HELP_GROUP_LINE.match(line)
        if m:
            group = m.group(1) or group
            groups.setdefault(group, {})[m.group(2)] = bool(m.group(3))
    return groups


def conf_options(group: str) -> set[str]:
    return {p.stem for p in (REPO / "conf" / group).glob("*.yaml")}


def conf_defaults() -> dict[str, str]:
    entries = yaml.safe_load((REPO / "conf" / "serve.yaml").read_text())["defaults"]
    return {k: v for e in entries if isinstance(e, dict) for k, v in e.items() if not k.startswith("override")}


@pytest.fixture(scope="module")
def help_runs(tmp_path_factory) -> dict:
    """``--help`` of each recipe, run once for the tests that read it (Hydra lists every config group:
    ~1.3 s of CPU a run): script -> (the run, its working directory, its cache directory)."""
    runs = {}
    for script in (SERVE, EXPORT):
        root = tmp_path_factory.mktemp(f"help-{script.stem}")
        runs[script] = (run_cli(script, "--help", cwd=root / "cwd", cache=root / "cache"), root / "cwd", root / "cache")
    return runs


@pytest.mark.parametrize(("script", "groups"), [(SERVE, ["algorithm", "draft", "sglang", "bench", "sweep", "launcher"]),
                                                (EXPORT, ["algorithm", "draft"])], ids=["serve", "export"])
def test_help_is_the_recipes_own_with_its_commands_and_every_group_option(help_runs, script, groups):
    res, cwd, cache = help_runs[script]
    assert res.returncode == 0, res.stderr
    text = res.stdout
    assert text.startswith(f"{script.name}: ")  # its own description, not "... is powered by Hydra"
    assert "powered by Hydra" not in text and "_schema" not in text and "== Config ==" not in text
    commands = [line.strip() for line in text.splitlines() if line.startswith("  python recipes/")]
    assert len(commands) == 3 and all(c.startswith(f"python recipes/{script.name}") for c in commands)
    listed = help_groups(text)
    assert list(listed) == groups
    for group in groups:  # every option in conf/, and nothing else
        assert set(listed[group]) == conf_options(group), group
    defaults = conf_defaults()
    for group in groups:
        marked = [option for option, default in listed[group].items() if default]
        assert marked == ([defaults[group]] if group in defaults else []), group
    assert "--hydra-help" in text
    assert tree(cwd) == {} and not cache.exists()


def test_serve_and_export_help_differ(help_runs):
    texts = [help_runs[script][0].stdout for script in (SERVE, EXPORT)]
    assert texts[0] != texts[1]
    assert "python recipes/export.py" not in texts[0] and "python recipes/serve.py" not in texts[1]


@pytest.mark.parametrize("script", [SERVE, EXPORT], ids=["serve", "export"])
def test_hydra_help_still_works(tmp_path, script):
    res = run_cli(script, "--hydra-help", cwd=tmp_path / "cwd", cache=tmp_path / "cache")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("Hydra (") and "== Flags ==" in res.stdout and "--hydra-help" in res.stdout
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
def test_compose_errors_fail_before_the_job_runs(tmp_path, monkeypatch, capsys, override, expected):
    monkeypatch.setenv("AUTOMODEL_SPEC_CACHE", str(tmp_path / "cache"))
    with pytest.raises(HydraException, match=re.escape(expected)):
        run_recipe("serve", "print_only=true", override)
    assert "[automodel-spec]" not in capsys.readouterr().out  # composition failed: the job never started
    assert not (tmp_path / "cache").exists()


def test_a_compose_error_of_the_real_cli_exits_nonzero_without_a_traceback(tmp_path):
    res = run_cli(SERVE, "print_only=true", "sglang.tp_sizee=2", cwd=tmp_path / "cwd", cache=tmp_path / "cache")
    assert res.returncode != 0
    assert "tp_sizee" in res.stderr and "[automodel-spec]" not in res.stdout
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
def test_cross_field_errors_are_reported_together_with_exit_1(tmp_path, in_process, capsys, overrides, expected):
    assert run_recipe("serve", "print_only=true", *overrides, output_dir=tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert err.count("error: invalid configuration") == 1, err  # one message
    for text in expected:
        assert text in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()


def test_nonexistent_local_draft_path_exits_1_naming_it(tmp_path, in_process, capsys):
    target = tmp_path / "target"
    target.mkdir()
    (target / "config.json").write_text("{}\n")
    missing = tmp_path / "no" / "such" / "run"
    code = run_recipe("serve", "draft=automodel", f"draft.path={missing}", f"target.path={target}",
                      output_dir=tmp_path / "out")
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"draft.path={missing} does not exist" in err
    assert "Traceback" not in err
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


def test_a_parallel_print_only_sweep_whose_every_point_is_refused_exits_1(tmp_path):
    """Its points run in the launcher's worker processes, which share the parent's temporary sweep dir (their
    exit codes were left in dirs of their own, and the sweep exited 0); nothing is left behind."""
    cwd, cache, scratch, other = tmp_path / "cwd", tmp_path / "cache", tmp_path / "tmpdir", tmp_path / "other"
    scratch.mkdir()
    other.mkdir()  # another run's print_only sweep dir, in the environment it started this one with: not used
    res = run_cli(SERVE, "-m", "+sweep=grid", "print_only=true", "+launcher=parallel", "spec.num_steps=1,3",
                  "spec.topk=1", "bench.gpu_pool=[0,0]", cwd=cwd, cache=cache,
                  env={"TMPDIR": str(scratch), SCRATCH_ENV: str(other)})
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stderr.count("bench.gpu_pool=['0', '0'] must list GPUs") == 2, res.stderr
    assert tree(cwd) == {} and tree(scratch) == {} and tree(other) == {}


@pytest.mark.parametrize(("launcher", "words"), [
    (["hydra.launcher.n_jobs=0"], "hydra.launcher.n_jobs=0 must be a whole number >= 1"),
    pytest.param(["+launcher=slurm"], "srun (Slurm's command) is not on this machine's PATH",
                 marks=pytest.mark.skipif(shutil.which("srun") is not None, reason="a Slurm node")),
])
def test_a_launcher_that_cannot_start_is_refused_before_the_sweep(tmp_path, launcher, words):
    cwd = tmp_path / "cwd"
    args = ["+launcher=parallel", *launcher] if launcher[0].startswith("hydra.") else launcher
    res = run_cli(SERVE, "-m", "+sweep=grid", "print_only=true", "spec.num_steps=1,3", "spec.topk=1", *args,
                  cwd=cwd, cache=tmp_path / "cache")
    assert res.returncode == 1 and words in res.stderr and "Traceback" not in res.stderr, res.stderr


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


def test_export_without_a_draft_to_export_exits_1(in_process, capsys):
    assert run_recipe("export", "print_only=true", "algorithm=none") == 1
    assert "algorithm=none has no draft to export" in capsys.readouterr().err


def test_readme_export_command_needs_no_target(tmp_path, automodel_pair):
    # README: python recipes/export.py draft=trained draft.path=RUN_DIR (the demo target stays out of it)
    target, run = automodel_pair
    cwd, cache = tmp_path / "cwd", tmp_path / "cache"
    res = run_cli(EXPORT, "draft=trained", f"draft.path={run}", cwd=cwd, cache=cache)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "target: none (target.path unset)" in res.stdout
    assert "no target.path given: draft/target compatibility not checked" in res.stdout
    export = Path(res.stdout.strip().splitlines()[-1])
    assert export.parent == cache / "exports" and (export / "config.json").is_file()
    assert not (cache / "demo").exists()  # the demo pair is not built for a draft of your own
    # with a target, the draft is checked against it
    res = run_cli(EXPORT, "print_only=true", "draft=automodel", f"draft.path={run}", f"target.path={target}",
                  cwd=cwd, cache=cache)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"target: {target}" in res.stdout and "draft checked against the target's config.json" in res.stdout
    assert res.stdout.strip().splitlines()[-1] == str(export)


@pytest.mark.parametrize("recipe", ["serve", "export"])
def test_the_demo_target_with_a_draft_of_your_own_exits_1_naming_target_path(tmp_path, in_process, capsys,
                                                                             automodel_pair, recipe):
    code = run_recipe(recipe, "print_only=true", "draft=automodel", f"draft.path={automodel_pair[1]}",
                      "target.path=builtin:demo-target", output_dir=tmp_path / "out")
    err = capsys.readouterr().err
    assert code == 1, err
    assert "set target.path=MODEL_DIR_OR_HUB_ID" in err and "set draft.path" not in err
    assert "Traceback" not in err and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("extra", [["print_only=true"], [], ["mode=bench"], ["mode=bench", "print_only=true"]],
                         ids=["print_only", "serve", "bench", "bench-print_only"])
def test_serving_a_draft_of_your_own_without_a_target_exits_1_naming_target_path(tmp_path, in_process, capsys,
                                                                                automodel_pair, extra):
    code = run_recipe("serve", *extra, "draft=automodel", f"draft.path={automodel_pair[1]}", f"sglang.python={FAKE}",
                      output_dir=tmp_path / "out")
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.count("error: invalid configuration (1 problem(s))") == 1, err
    assert "target.path is unset" in err and "set target.path=MODEL_DIR_OR_HUB_ID" in err
    assert "Traceback" not in err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()


def test_the_demo_draft_with_a_target_of_your_own_exits_1_naming_draft_path(tmp_path, in_process, capsys,
                                                                            automodel_pair):
    code = run_recipe("serve", "print_only=true", f"target.path={automodel_pair[0]}", output_dir=tmp_path / "out")
    err = capsys.readouterr().err
    assert code == 1, err
    assert "set draft.path=RUN_DIR" in err and "algorithm=none" in err
    assert "set target.path" not in err


@pytest.mark.parametrize("algorithm", ["none", "NEXTN"])
def test_a_target_of_your_own_without_a_draft_is_served_as_given(tmp_path, in_process, capsys, automodel_pair,
                                                                 algorithm):
    # the demo draft stays selected (draft=demo is the default) but is not used: no demo target either
    target = automodel_pair[0]
    code = run_recipe("serve", "print_only=true", f"algorithm={algorithm}", f"target.path={target}",
                      output_dir=tmp_path / "out")
    out = capsys.readouterr().out
    assert code == 0, out
    assert flag(command_argv(out), "--model-path") == str(target)
    assert "demo" not in out and not (tmp_path / "cache").exists()


# --- paths: '~' and non-ASCII characters ---------------------------------------------------------------


@pytest.fixture
def home_pair(tmp_path, automodel_pair) -> Path:
    """A HOME holding the pair under non-ASCII names with a space: ~/ckpt/ü run, ~/models/tärget."""
    home = tmp_path / "home"
    shutil.copytree(automodel_pair[1], home / "ckpt" / "ü run", symlinks=True)
    shutil.copytree(automodel_pair[0], home / "models" / "tärget")
    return home


def test_quoted_tilde_and_non_ascii_paths_serve(tmp_path, in_process, capsys, monkeypatch, home_pair):
    home, cwd = home_pair, tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(home))
    before = tree(home)
    code = run_recipe("serve", "print_only=true", "draft=automodel", 'draft.path="~/ckpt/ü run"',
                      'target.path="~/models/tärget"', 'cache_dir="~/cache"', output_dir=tmp_path / "out")
    out = capsys.readouterr().out
    assert code == 0, out
    argv = command_argv(out)
    assert flag(argv, "--model-path") == str(home / "models" / "tärget")  # expanded: SGLang gets no '~'
    export = flag(argv, "--speculative-draft-model-path")
    assert export.startswith(str(home / "cache" / "exports") + "/LlamaForCausalLMEagle3-"), export
    assert f"hf files in {home / 'ckpt' / 'ü run'}/epoch_0_step_100" in out
    assert "draft checked against the target's config.json" in out
    assert tree(home) == before and tree(cwd) == {}


def test_quoted_tilde_and_non_ascii_paths_export(tmp_path, home_pair):
    home = home_pair
    res = run_cli(EXPORT, "draft=automodel", 'draft.path="~/ckpt/ü run"', 'draft.export_dir="~/exports/ü"',
                  'cache_dir="~/cache"', cwd=tmp_path / "cwd", cache=tmp_path / "cache", env={"HOME": str(home)})
    assert res.returncode == 0, res.stdout + res.stderr
    export = home / "exports" / "ü"
    assert res.stdout.strip().splitlines()[-1] == str(export)
    assert (export / "config.json").is_file() and (export / "model.safetensors").is_file()
    assert (home / "cache").is_dir() and not (tmp_path / "cache").exists()
    assert not (tmp_path / "cwd" / "~").exists()


@pytest.mark.parametrize("script", [SERVE, EXPORT], ids=["serve", "export"])
def test_unquoted_tilde_or_non_ascii_exits_1_showing_the_quoted_form(tmp_path, script):
    res = run_cli(script, "print_only=true", "draft=automodel", "draft.path=~/ckpt/run", "target.path=/m/ü",
                  "spec.num_steps=3", cwd=tmp_path / "cwd", cache=tmp_path / "cache")
    assert res.returncode == 1, res.stdout + res.stderr
    assert """'draft.path="~/ckpt/run"'""" in res.stderr and """'target.path="/m/ü"'""" in res.stderr
    assert "spec.num_steps" not in res.stderr  # overrides Hydra reads are not mentioned
    assert "Traceback" not in res.stderr and res.stdout == ""
    assert tree(tmp_path / "cwd") == {} and not (tmp_path / "cache").exists()


@pytest.mark.parametrize(("args", "quoted"), [
    (["draft.path=~user/ckpt", "-cn", "x~y"], ["""'draft.path="~user/ckpt"'"""]),
    (["draft.path=/ckpt/é", "target.path='~/m'", "+sweep=grid"], ["""'draft.path="/ckpt/é"'"""]),
    (["--config-dir", "~/conf", "cache_dir=~/c", "spec.topk=1"], ["""'cache_dir="~/c"'"""]),
])
def test_the_quoting_check_names_each_unquoted_override_and_nothing_else(in_process, capsys, args, quoted):
    with pytest.raises(SystemExit) as exc:
        recipe_runtime.check_override_quoting(args)
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert [line.split("->")[1].strip() for line in err.splitlines() if "->" in line] == quoted


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


# --- tensor parallel: several scheduler processes -------------------------------------------------


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, -signal.SIGKILL)],
                         ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_a_tensor_parallel_server_and_every_process_of_it_stop_with_serve(serve, tmp_path, sig, code):
    # sglang.tp_size=2: the fake starts 2 "schedulers" and a "detokenizer", as SGLang does; none of
    # them dies with its parent by itself, so only our stop (or, for SIGKILL, the server's own
    # shutdown on the SIGTERM the kernel sends when serve.py dies) ends them
    proc, pidfile = serve("sglang.tp_size=2")
    proc.wait_for(READY_LINE)
    pids = fake_pids(pidfile)
    assert len(pids) == 4 and all(process_running(p) for p in pids), pids
    assert "--tp-size 2" in (tmp_path / "run-0" / "server.log").read_text().splitlines()[0]
    if sig == signal.SIGKILL:
        proc.proc.kill()  # serve.py alone: the server runs in a session of its own
        assert proc.finish() == code
    else:
        assert proc.signal(sig) == code, proc.output[-3000:]
    deadline = time.monotonic() + 10
    while any(process_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if process_running(p)], "processes of the tp=2 server outlived serve.py"


def test_a_node_of_rank_1_comes_up_without_asking_for_what_only_rank_0_serves(serve, tmp_path):
    proc, pidfile = serve("sglang.tp_size=2", "sglang.nnodes=2", "sglang.node_rank=1",
                          "sglang.dist_init_addr=127.0.0.1:50000")
    proc.wait_for(re.compile(r"node 1 of 2 is up in [0-9.]+s; requests go to rank 0"))
    assert "test generation" not in proc.output and not (tmp_path / "run-0" / "server_info.json").exists()
    assert proc.signal(signal.SIGINT) == 130, proc.output[-3000:]
