"""Shared test setup: GPU tests are skipped where there is no CUDA GPU with SGLang; how pytest-xdist's
workers share the suite (``addopts``: ``-n 3 --dist loadscope``)."""

from __future__ import annotations

import compileall
import contextlib
import fnmatch
import importlib.util
import io
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

# One intra-op thread per torch process, in the workers and in every process they start: the suite runs
# several workers and their recipes on two cores, where a thread pool per process spins on cores the others
# need (test_reference.py alone: 15 s of CPU with two threads, 11 s with one, the same results).
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Run whole on one worker each: modules whose tests share an expensive module-scoped fixture (a sweep,
# every case of the table started at once), so it is built once; and the GPU tests, which share the one
# GPU and so run one at a time. Every other test is a unit of its own.
WHOLE_MODULES = (
    "tests/reliability/test_cache.py",  # `big_runs`: two 44 MB drafts (the signal rounds first, see below)
    "tests/cli/test_bench_cli.py",  # `grid`: three sweeps
    "tests/reliability/test_bad_inputs.py",  # `outcomes`: every case of the module at once
    "tests/reliability/test_hostile_inputs.py",  # `results`: every case of the module at once
    "tests/reliability/test_faults.py",  # `results`: its process cases started at once
    "tests/cli/test_predict_cli.py",  # `predicted`: a sweep
    "tests/cli/test_export_signals.py",  # `big_run`
    "tests/cli/test_gpu_scripts.py",  # `shared`: the tiny pair both dry runs build, and its export
    "tests/gpu/",
)
# transformers and its Llama, imported in the worker by these modules' tests (~3 s of CPU on each worker that
# runs one of them): test_reference's and test_tree_reference's `pair` (a target loaded through transformers,
# module-scoped), test_widen's references, test_spec_tree's caches (transformers' DynamicCache, ~1 s),
# test_check_cli's references after its first (`references`: each computed once, module-scoped). One unit
# (in TOGETHER below), so one worker imports them.
REFERENCE_MODULES = ("tests/unit/bench/test_reference.py", "tests/unit/bench/test_tree_reference.py",
                     "tests/cli/test_widen.py", "tests/unit/bench/test_spec_tree.py", "tests/cli/test_check_cli.py")
# Modules whose tests mostly wait: see START_FIRST.
WAITING = ("tests/unit/serve/test_server.py", "tests/unit/serve/test_parent_watch.py",
           "tests/unit/bench/test_open_loop.py", "tests/unit/serve/test_gpu_pool.py", "tests/unit/bench/test_stream.py")
# Run together on one worker, each group a unit of its own: tests of a module otherwise shared out test by
# test that share one of its module-scoped fixtures, so it is built once rather than on each worker that
# one of them lands on.
TOGETHER = (
    # `help_runs`: each recipe's --help (~1.2 s of CPU a run)
    ("tests/cli/test_serve_cli.py::test_help_is_the_recipes_own_with_its_commands_and_every_group_option",
     "tests/cli/test_serve_cli.py::test_serve_and_export_help_differ"),
    ("tests/cli/test_replay_search.py",),  # Optuna, imported by the module's runs in the worker (~2 s of CPU)
    # the package's sources, parsed once (a cache of the module) for all of the module's checks (~1 s of CPU)
    ("tests/unit/test_one_owner.py",),
    ("tests/unit/test_architecture.py",),
    REFERENCE_MODULES,
    *((module,) for module in WAITING),
)
# Handed out first, in this order, then every other test in its usual order (what starts last should
# be short): the longest test of all (12 signalled exports), then the modules above, longest first.
# test_cache's other tests (~13 s) run after the signal rounds on the same worker, so its two drafts are
# written once (~1.7 s of CPU) rather than again on each worker one of them lands on; the module still
# ends well before the suite does.
# Between them, the modules whose tests mostly wait (timeouts, boots, schedules: ~30 s of waits for ~5 s of
# CPU), each a unit of its own (TOGETHER), one after each long unit: one worker waits through one of them
# while the others keep the cores busy. Handed out last, in their usual place, the three workers waited
# through them together at the end, a core idle; handed out one after another, they did so mid-run.
START_FIRST = ("tests/reliability/test_cache.py::test_signals_at_random_moments_leave_only_complete_exports",
               *(unit for pair in itertools.zip_longest((*WHOLE_MODULES[:2], REFERENCE_MODULES, *WHOLE_MODULES[2:]),
                                                        WAITING) for unit in pair if unit is not None))


def _work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: its module (or tests/gpu/) or its group when listed above, else
    itself."""
    for whole in WHOLE_MODULES:
        if nodeid.startswith(whole):
            return whole
    for group in TOGETHER:
        if nodeid.startswith(group):
            return group[0]
    return nodeid


def _start_order(nodeid: str) -> int:
    return next((i for i, first in enumerate(START_FIRST) if nodeid.startswith(first)), len(START_FIRST))


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist's, which is not installed everywhere
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadscope`` with the units above instead of whole modules, in the order of the collection
    (see ``pytest_collection_modifyitems``): most tests wait on processes, so a fine split keeps the
    workers busy to the end, while shared fixtures are still built once."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class _ByWorkUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _work_unit(nodeid)

    config.option.loadscopereorder = False  # (xdist's reorder: by the number of tests in a unit)
    return _ByWorkUnit(config, log)


def pytest_configure(config):
    # Where the environment forbids writing bytecode (PYTHONDONTWRITEBYTECODE, as on the CI machine), each
    # of the hundreds of interpreters the suite starts would compile the project's modules from source
    # (~0.1 s of CPU each, ~30 s over the suite): compiled once here, by the controller, they read it.
    if sys.dont_write_bytecode and not hasattr(config, "workerinput"):
        root = Path(__file__).resolve().parents[1]
        for folder in ("automodel_spec", "recipes", "hydra_plugins", "scripts", "tests/fakes"):
            compileall.compile_dir(root / folder, quiet=1)
        _rewrite_test_modules(config, root / "tests")


def _rewrite_test_modules(config, tests: Path) -> None:
    """pytest's assertion rewriting of every test module and conftest, cached once for the workers.

    pytest keeps a rewritten module in ``__pycache__`` unless bytecode may not be written, and reads that
    cache either way: under ``PYTHONDONTWRITEBYTECODE`` each of the three workers rewrote all the modules it
    collects (~2.7 s of CPU a worker). Rewritten here once, by the controller, they read it. pytest's own
    functions do it (private ones: where they have moved, the workers rewrite as before).
    """
    try:
        from _pytest.assertion.rewrite import (
            PYC_TAIL,
            _read_pyc,
            _rewrite_test,
            _write_pyc,
            assertstate_key,
            get_cache_dir,
        )

        state = config.stash[assertstate_key]  # absent with --assert=plain: nothing is rewritten
    except (ImportError, KeyError):
        return
    patterns = [*config.getini("python_files"), "conftest.py"]
    for fn in sorted(tests.rglob("*.py")):
        if not any(fnmatch.fnmatch(fn.name, pattern) for pattern in patterns):
            continue
        cache = get_cache_dir(fn)
        pyc = cache / (fn.name[:-3] + PYC_TAIL)
        if _read_pyc(fn, pyc) is None:  # absent, or of another version of the source
            try:
                cache.mkdir(exist_ok=True)
                stamp, code = _rewrite_test(fn, config)
            except (OSError, SyntaxError):  # the worker meets it again, and reports it
                continue
            _write_pyc(state, code, stamp, pyc)


@pytest.fixture(scope="session")
def demo_export(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A cache holding the built demo pair and its export, and what the export run that made them printed
    (once per session, i.e. per pytest-xdist worker). ``recipes/export.py``'s job in this process
    (``helpers.run_recipe``: the worker has torch imported already; a process of its own would import it
    again, ~2 s of CPU on each worker); the CLI's own export runs, a written one included, are
    test_serve_cli's."""
    from helpers import run_recipe

    root = tmp_path_factory.mktemp("cli-cache")
    (root / "cwd").mkdir()
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        mp.setenv("AUTOMODEL_SPEC_CACHE", str(root / "cache"))
        mp.chdir(root / "cwd")
        code = run_recipe("export")
    res = subprocess.CompletedProcess(["recipes/export.py"], code, out.getvalue(), err.getvalue())
    assert code == 0, res.stdout + res.stderr
    return root / "cache", res


@pytest.fixture(scope="session")
def cache(demo_export) -> Path:
    """The demo cache of ``demo_export``. Tests only read it or add exports of their own (none compares its
    contents with another module's; a test may compare them before and after its own run), so the modules
    share it."""
    return demo_export[0]


def _gpu_ready() -> str | None:
    if importlib.util.find_spec("sglang") is None:
        return "SGLang is not installed"
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    return None


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: _start_order(item.nodeid))  # stable: a module's tests stay in their order
    reason = None
    for item in items:
        if "gpu" in item.keywords:
            reason = reason or _gpu_ready() or ""
            if reason:
                item.add_marker(pytest.mark.skip(reason=f"GPU test: {reason}"))
