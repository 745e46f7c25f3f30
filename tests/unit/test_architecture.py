"""The layering of docs/architecture.md, read from the source with ``ast``: each module sits in the layer its
folder (or, at the package's root, its name) is given by the doc's table, no module imports upward, only the
Hydra edge (``hydra/``) imports Hydra or OmegaConf, and the recipes import nothing but the package (and the
standard library)."""

from __future__ import annotations

import ast
import functools
import re
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "automodel_spec"
ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"
HYDRA_MODULES = ("hydra", "omegaconf")
HYDRA_EDGE = "hydra/"
RECIPES = PACKAGE.parent / "recipes"


def documented_layers(doc: Path = ARCHITECTURE) -> dict[str, list[str]]:
    """The table under "Folders and layers", lowest first: layer -> its folders (``io/``) and root modules."""
    section = doc.read_text().split("## Folders and layers", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    return {layer.strip(): re.findall(r"`([\w/]+)`", members) for layer, members in rows[1:]}


LAYERS = documented_layers()
LEVEL = {member: level for level, members in enumerate(LAYERS.values()) for member in members}


def unit_of(module: str) -> str:
    """The table's name for a module's place: its folder (``bench/``) or, at the root, its own name."""
    return module.split(".")[0] + "/" if "." in module else module


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def imports(path: Path) -> frozenset[str]:
    """Every module ``path`` imports, at the top or inside a function (absolute names); each file parsed once
    for all the checks (the module's tests run as one unit, tests/conftest.py)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}: relative import of {node.module}; the package uses absolute ones"
            found.add(node.module)
            if node.module.split(".")[0] == "automodel_spec":  # from automodel_spec.demo import synthetic
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return frozenset(found)


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Each module of the package (``__init__`` files aside) -> every module it imports."""
    return {module_name(p, package): imports(p) for p in sorted(package.rglob("*.py")) if p.name != "__init__.py"}


def upward_imports(modules: dict[str, set[str]]) -> list[str]:
    """``a -> b`` for each import of a module in a higher layer than the importer's."""
    found = []
    for module, deps in modules.items():
        for dep in sorted(d.removeprefix("automodel_spec.") for d in deps if d.startswith("automodel_spec.")):
            if dep in modules and LEVEL.get(unit_of(dep), -1) > LEVEL[unit_of(module)]:
                found.append(f"{module} ({_layer(module)}) -> {dep} ({_layer(dep)})")
    return found


def hydra_imports(modules: dict[str, set[str]]) -> list[str]:
    return [f"{module} -> {dep}" for module, deps in modules.items() if unit_of(module) != HYDRA_EDGE
            for dep in sorted(deps) if dep.split(".")[0] in HYDRA_MODULES]


def _layer(module: str) -> str:
    return next(name for name, members in LAYERS.items() if unit_of(module) in members)


def test_every_module_has_a_layer():
    units = {unit_of(module) for module in graph()}
    assert units - set(LEVEL) == set(), "add new folders or root modules to docs/architecture.md's table"
    assert set(LEVEL) - units == set(), "docs/architecture.md's table names folders or modules that do not exist"


def test_the_package_root_holds_a_handful_of_modules():
    root = sorted(p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert len(root) <= 5, f"{root}: a module belongs in its layer's folder"


def test_no_module_imports_upward():
    assert upward_imports(graph()) == []


def foreign_imports(recipes: Path = RECIPES) -> list[str]:
    """``recipe -> module`` for each import of a recipe that is neither the package nor the standard library.

    The package's first import holds SIGINT / SIGTERM while a recipe starts (``signals``): Hydra, OmegaConf
    or torch imported by a recipe itself could come before it.
    """
    return [f"{path.name} -> {dep}" for path in sorted(recipes.glob("*.py")) for dep in sorted(imports(path))
            if dep.split(".")[0] not in ("automodel_spec", "__future__", *sys.stdlib_module_names)]


def test_the_recipes_import_only_the_package():
    assert sorted(p.name for p in RECIPES.glob("*.py")) == ["export.py", "serve.py"], "runtime code goes in the package"
    assert foreign_imports() == []


def test_the_recipe_check_catches_hydra_imported_by_a_recipe(tmp_path):
    (tmp_path / "serve.py").write_text("import signal\nimport hydra\nfrom automodel_spec.prepare import prepare_run\n")
    assert foreign_imports(tmp_path) == ["serve.py -> hydra"]


def test_only_the_hydra_edge_imports_hydra_or_omegaconf():
    modules = graph()
    assert hydra_imports(modules) == []
    assert {"hydra.core.config_store", "omegaconf"} <= modules["hydra.glue"]  # the check sees real imports


def test_the_import_graph_has_no_cycle():
    modules = graph()
    deps = {m: {d.removeprefix("automodel_spec.") for d in ds if d.removeprefix("automodel_spec.") in modules}
            for m, ds in modules.items()}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join(path + (module,))}"
        if module not in done:
            for dep in deps[module]:
                visit(dep, path + (module,))
            done.add(module)

    for module in deps:
        visit(module, ())


def fake_package(tmp_path: Path, **sources: str) -> Path:
    """A package of empty modules (one per table entry) with the given sources, keyed ``folder__module``."""
    for unit in LEVEL:
        path = tmp_path / (unit + "mod.py" if unit.endswith("/") else unit + ".py")
        path.parent.mkdir(exist_ok=True)
        path.write_text("")
    for name, source in sources.items():
        (tmp_path / (name.replace("__", "/") + ".py")).write_text(source)
    return tmp_path


@pytest.mark.parametrize(("source", "expected"), [
    ("from automodel_spec.prepare import PreparedRun\n", ["draft.resolve (resolve) -> prepare (pipeline)"]),
    ("def f():\n    import automodel_spec.launch\n", ["draft.resolve (resolve) -> launch (pipeline)"]),
    ("from automodel_spec.export import mod\n", ["draft.resolve (resolve) -> export.mod (plan, check and write)"]),
    ("from automodel_spec.errors import CheckpointError\n", []),
])
def test_the_checks_catch_an_upward_import_wherever_it_is(tmp_path, source, expected):
    assert upward_imports(graph(fake_package(tmp_path, draft__resolve=source))) == expected


def test_the_checks_catch_hydra_outside_the_hydra_folder(tmp_path):
    package = fake_package(tmp_path, config__schema="def f():\n    from omegaconf import OmegaConf\n",
                           hydra__glue="import hydra\n")
    assert hydra_imports(graph(package)) == ["config.schema -> omegaconf"]
