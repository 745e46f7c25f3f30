"""Shared test setup: GPU tests are skipped where there is no CUDA GPU with SGLang."""

from __future__ import annotations

import importlib.util

import pytest


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
    reason = None
    for item in items:
        if "gpu" in item.keywords:
            reason = reason or _gpu_ready() or ""
            if reason:
                item.add_marker(pytest.mark.skip(reason=f"GPU test: {reason}"))
