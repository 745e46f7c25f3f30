"""One owner per fact (docs/architecture.md, "One owner per rule"): facts that several modules need are
written once, and these checks fail when a second copy appears in the code or the YAML, or when copies
that must stay (package metadata) disagree with the owner."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from automodel_spec.sglang_options import OLDEST_RELEASE

ROOT = Path(__file__).resolve().parents[2]
CODE_DIRS = ("automodel_spec", "hydra_plugins", "recipes")


def code_strings(path: Path) -> list[tuple[int, str]]:
    """Every string literal of a Python file with its line, docstrings left out (prose may name facts)."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def yaml_lines(path: Path) -> list[tuple[int, str]]:
    """The lines of a YAML file without their comments."""
    return [(n, line.split("#", 1)[0]) for n, line in enumerate(path.read_text().splitlines(), 1)]


def restatements(pattern: str, root: Path = ROOT, owner: str | None = None) -> list[str]:
    """``file:line`` of each string literal (code) or value (YAML under conf/) matching ``pattern``.

    Args:
        pattern: a regular expression for the fact.
        root: the checkout to search.
        owner: the file (relative to ``root``) allowed to state the fact.
    """
    found = []
    files = [p for d in CODE_DIRS for p in sorted((root / d).rglob("*.py"))]
    for path in files + sorted((root / "conf").rglob("*.yaml")):
        rel = path.relative_to(root).as_posix()
        lines = code_strings(path) if path.suffix == ".py" else yaml_lines(path)
        found += [f"{rel}:{n}" for n, text in lines if rel != owner and re.search(pattern, text)]
    return found


def release_pattern(release: str) -> str:
    """``release`` as a whole version number (0.5.9, not 0.5.90 or 10.5.9)."""
    return rf"(?<![\d.]){re.escape(release)}(?![\d])"


# --- the oldest supported SGLang release ------------------------------------------------------------


def test_the_oldest_release_is_read_from_the_recorded_releases_only():
    # sglang_options.OLDEST_RELEASE is the first release in data/sglang_options.json; code and YAML
    # that need it read it there
    assert restatements(release_pattern(OLDEST_RELEASE)) == []


def test_the_package_pins_the_oldest_release():
    # pyproject cannot import the package: its pin is a copy, held to the owner here
    # (read as text: tomllib is Python 3.11+, the project supports 3.10)
    pins = re.findall(r'"sglang(?:\[[^\]]*\])?>=([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert pins and set(pins) == {OLDEST_RELEASE}, pins


def test_the_restatement_check_sees_strings_and_yaml_but_not_prose(tmp_path):
    (tmp_path / "automodel_spec").mkdir()
    (tmp_path / "conf").mkdir()
    (tmp_path / "automodel_spec" / "a.py").write_text(
        '"""Works with SGLang 0.5.9 and later."""\n'
        '# 0.5.9 did it otherwise\n'
        'OLD = "0.5.9"\n'
        'NEWER = "0.5.90"\n'
        'def f():\n    return f"needs >= 0.5.9 here"\n')
    (tmp_path / "conf" / "b.yaml").write_text("release: 0.5.9\n# release: 0.5.9\n")
    assert restatements(release_pattern("0.5.9"), tmp_path) == [
        "automodel_spec/a.py:3", "automodel_spec/a.py:6", "conf/b.yaml:1"]
