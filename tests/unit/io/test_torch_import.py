"""torch and safetensors are imported only through ``torch_import`` (with SIGINT / SIGTERM held meanwhile)."""

from __future__ import annotations

import ast
from pathlib import Path


def test_the_package_imports_torch_only_through_import_torch():
    """``import torch`` (or safetensors' torch half, which imports it) with SIGINT / SIGTERM live can abort
    the process mid-initialization; recipes no longer preload torch, so every import must hold them."""
    package = Path(__file__).resolve().parents[3] / "automodel_spec"
    bad = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "torch_import.py":
            continue
        tree = ast.parse(path.read_text())
        for fn in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))] + [tree]:
            held_at = min((n.lineno for n in ast.walk(fn) if isinstance(n, ast.Call)
                           and getattr(n.func, "id", None) in ("import_torch", "import_native_modules")), default=None)
            for node in ast.walk(fn):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) else []
                if "torch" in names or any(n and n.startswith("torch.") for n in names):
                    bad.append(f"{path.name}:{node.lineno}: import torch (use torch_import.import_torch())")
                elif "safetensors.torch" in names and (held_at is None or held_at > node.lineno):
                    bad.append(f"{path.name}:{node.lineno}: safetensors.torch before import_torch()")
    assert not bad, "\n".join(sorted(set(bad)))
