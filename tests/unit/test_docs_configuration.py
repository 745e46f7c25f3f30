"""docs/configuration.md names every setting of the typed config, and no setting that does not exist."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from automodel_spec.config.schema import ServeConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
SECTIONS = tuple(f.name for f in dataclasses.fields(ServeConfig) if f.default_factory is not dataclasses.MISSING)
# A dotted name under one of the config's sections, wherever the page writes it (tables, prose, commands).
DOTTED = re.compile(r"(?<![\w./$-])\+?((?:" + "|".join(SECTIONS) + r")(?:\.[a-z_][a-z0-9_]*)+)")
# The page's example of a misspelt key, which the composer refuses.
TYPO_EXAMPLES = {"sglang.tp_sizee"}


def schema_settings(cls: type = ServeConfig, prefix: str = "") -> set[str]:
    """Every leaf field of the schema by its full name (nested dataclasses walked)."""
    names = set()
    for f in dataclasses.fields(cls):
        kind = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(kind):
            names |= schema_settings(type(kind), f"{prefix}{f.name}.")
        else:
            names.add(prefix + f.name)
    return names


def settings_table(text: str) -> set[str]:
    """The names in the first column of the "## Settings" table."""
    section = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    names = set()
    for line in section.splitlines():
        cells = line.split("|")
        if line.startswith("| `") and len(cells) > 2:
            names |= set(re.findall(r"`([^`]+)`", cells[1]))
    return names


def test_the_schema_is_walked_to_its_leaves():
    settings = schema_settings()
    assert {"mode", "print_only", "draft.path", "sglang.release", "bench.slo.itl_s", "algorithm.name"} <= settings
    assert "bench.slo" not in settings and "bench" not in settings
    assert set(SECTIONS) == {"algorithm", "draft", "target", "spec", "sglang", "bench"}


def test_every_setting_is_in_the_settings_table_and_nothing_else():
    listed, settings = settings_table(DOC.read_text()), schema_settings()
    assert not settings - listed, f"settings missing from docs/configuration.md: {sorted(settings - listed)}"
    assert not listed - settings, f"docs/configuration.md lists settings that do not exist: {sorted(listed - settings)}"


def test_every_dotted_setting_the_page_names_exists():
    named = {m.group(1) for m in DOTTED.finditer(DOC.read_text())}
    assert "draft.path" in named and "bench.slo.ttft_s" in named  # the pattern finds them
    groups = {name.rsplit(".", 1)[0] for name in schema_settings() if name.count(".") > 1}  # bench.slo
    unknown = named - schema_settings() - groups - TYPO_EXAMPLES
    assert not unknown, f"docs/configuration.md names settings that do not exist: {sorted(unknown)}"


def test_the_checks_catch_a_missing_and_an_unknown_setting():
    text = DOC.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `sglang.python` |"))
    assert "sglang.python" not in settings_table(text.replace(row + "\n", ""))
    made_up = text.replace("| `sglang.python` |", "| `sglang.python`, `sglang.pyhton` |")
    assert "sglang.pyhton" in settings_table(made_up) - schema_settings()
    assert "spec.num_stepz" in {m.group(1) for m in DOTTED.finditer("set `spec.num_stepz=3`")} - schema_settings()
