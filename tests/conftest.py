"""Shared test setup: GPU tests are skipped where there is no CUDA GPU with SGLang; how pytest-xdist's
workers share the suite (``addopts``: ``-n 4 --dist loadscope``)."""

from __future__ import annotations

import importlib.util

import pytest

# Run whole on one worker each: modules whose tests share an expensive module-scoped fixture (a sweep,
# drafts of 170 MB, every case of the table started at once), so it is built once; and the GPU tests,
# which share the one GPU and so run one at a time. Every other test is a unit of its own. The units
# are handed out in this order, the longest first (test_cache's 50 signalled exports take longest of
# any), then every other test in its usual order: what starts last should be short.
WHOLE_MODULES = (
    "tests/reliability/test_cache.py",  # `big_runs`
    "tests/cli/test_bench_cli.py",  # `grid`: three sweeps
    "tests/reliability/test_bad_inputs.py",  # `outcomes`: every case of the module at once
    "tests/reliability/test_hostile_inputs.py",  # `results`: every case of the module at once
    "tests/cli/test_predict_cli.py",  # `predicted`: a sweep
    "tests/unit/test_reference.py",  # `pair`: a target loaded through transformers
    "tests/cli/test_export_signals.py",  # `big_run`
    "tests/reliability/test_secrets.py",  # `cache`
    "tests/gpu/",
)


def _work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: its module (or tests/gpu/) when listed above, else itself."""
    for whole in WHOLE_MODULES:
        if nodeid.startswith(whole):
            return whole
    return nodeid


def _start_order(nodeid: str) -> int:
    unit = _work_unit(nodeid)
    return WHOLE_MODULES.index(unit) if unit in WHOLE_MODULES else len(WHOLE_MODULES)


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
