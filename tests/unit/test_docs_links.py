"""Every repository path the README and docs/ name exists, and none leads outside the repository.

A path is checked where the text names it in code quotes or as a Markdown link: ``docs/...``,
``scripts/...``, ``tests/...``, ``automodel_spec/...``, ``recipes/...``, ``conf/...``,
``hydra_plugins/...``, ``.ci/...`` and ``](target)``. Placeholders (``<...>``) are skipped; ``*`` is
a glob; ``tests/helpers.run_recipe`` names a Python attribute, so ``tests/helpers.py`` must exist.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PREFIXES = ("docs/", "scripts/", "tests/", "automodel_spec/", "recipes/", "conf/", "hydra_plugins/", ".ci/")
_QUOTED = re.compile(r"(?<=[`(\s])((?:" + "|".join(map(re.escape, PREFIXES)) + r")[A-Za-z0-9_./*\-]+)")
_LINK = re.compile(r"\]\(([^)#\s]+)")


def _named_paths(text: str) -> set[str]:
    found = {m.rstrip(".,:;") for m in _QUOTED.findall(text)}
    found |= {m for m in _LINK.findall(text) if not m.startswith(("http://", "https://", "mailto:"))}
    return found


def _exists(page: Path, name: str) -> bool:
    base = page.parent if name.startswith(("./", "../")) else ROOT
    if "*" in name:
        return any(base.glob(name))
    if (base / name).exists():
        return True
    stem, dot, _attr = name.rpartition(".")  # a module attribute: tests/helpers.run_recipe
    return bool(dot) and (base / f"{stem}.py").exists()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_named_path_exists(page):
    text = page.read_text(encoding="utf-8")
    missing = sorted(n for n in _named_paths(text) if not _exists(page, n))
    assert missing == [], f"{page.relative_to(ROOT)} names paths that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_path_outside_the_repository(page):
    """A ``../x`` that leads out of the repository to something real (a folder beside the checkout)."""
    text = page.read_text(encoding="utf-8")
    outside = sorted({m for m in re.findall(r"(?<![.\w])\.\./[\w.-]+", text) if (ROOT / m).exists()})
    assert outside == [], f"{page.relative_to(ROOT)} points outside the repository: {outside}"
