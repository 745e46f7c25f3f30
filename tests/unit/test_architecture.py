"""The layering of docs/architecture.md, read from the source with ``ast``: no module imports upward,
only the Hydra edge (``hydra_glue``, ``recipe_runtime``) imports Hydra or OmegaConf, and the recipes
import nothing but the package (and the standard library)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "automodel_spec"
HYDRA_MODULES = ("hydra", "omegaconf")
HYDRA_GLUE = "hydra_glue"
HYDRA_EDGE = (HYDRA_GLUE, "recipe_runtime")
RECIPES = PACKAGE.parent / "recipes"

# Lowest first: a module may import modules of its own layer or of a layer below (docs/architecture.md).
LAYERS = {
    "base": ["signals", "errors", "sglang_options", "config", "spec_rules", "config_rules", "adaptive", "atomic_write", "sealed_dir",
             "console_log", "process_state", "file_lock", "file_digest", "json_file", "yaml_file", "path_lookup",
             "http_client", "redact", "nvidia_smi", "job_codes"],
    "resolve": ["specforge_checkpoint", "resolve", "weights", "draft_sources", "trained_depths"],
    "plan and check": ["rope", "serving_dtype", "draft_plan", "eagle_layout", "eagle3_layout", "speculators_format",
                       "preflight", "target"],
    "write": ["export", "synthetic_tokenizer", "synthetic", "demo"],
    "pipeline": ["command", "prepare"],
    "launch": ["parent_watch", "server", "gpu_pool", "port_lease", "launch", "report"],
    "bench": ["bench.point", "bench.result", "bench.workload", "bench.response", "bench.server_exit", "bench.stream", "bench.client",
              "bench.open_loop", "bench.slo", "bench.metrics", "bench.phases", "bench.capacity", "bench.placement",
              "spec_tree", "reference", "tree_reference", "accept_depths", "bench.served_checks", "bench.job"],
    "prediction": ["predict.acceptance", "predict.cost", "predict.points", "predict.predictor", "predict.sweep"],
    "sweep results": ["sweep.rows", "sweep.ranking", "sweep.plots", "sweep.presets", "sweep.predictions", "sweep.summary",
                      "sweep.__main__"],
    "hydra edge": list(HYDRA_EDGE),
}
LEVEL = {module: level for level, modules in enumerate(LAYERS.values()) for module in modules}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function (absolute names)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}: relative import of {node.module}; the package uses absolute ones"
            found.add(node.module)
            if node.module == "automodel_spec":  # from automodel_spec import synthetic
                found |= {f"automodel_spec.{alias.name}" for alias in node.names}
    return found


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Each module of the package (``__init__`` files aside) -> every module it imports."""
    return {module_name(p, package): imports(p) for p in sorted(package.rglob("*.py")) if p.name != "__init__.py"}


def upward_imports(modules: dict[str, set[str]]) -> list[str]:
    """``a -> b`` for each import of a module in a higher layer than the importer's."""
    found = []
    for module, deps in modules.items():
        for dep in sorted(d.removeprefix("automodel_spec.") for d in deps if d.startswith("automodel_spec.")):
            if LEVEL.get(dep, -1) > LEVEL[module]:
                found.append(f"{module} ({_layer(module)}) -> {dep} ({_layer(dep)})")
    return found


def hydra_imports(modules: dict[str, set[str]]) -> list[str]:
    return [f"{module} -> {dep}" for module, deps in modules.items() if module not in HYDRA_EDGE
            for dep in sorted(deps) if dep.split(".")[0] in HYDRA_MODULES]


def _layer(module: str) -> str:
    return next(name for name, members in LAYERS.items() if module in members)


def test_every_module_has_a_layer():
    modules = set(graph())
    assert modules - set(LEVEL) == set(), "add new modules to LAYERS here and to docs/architecture.md"
    assert set(LEVEL) - modules == set(), "LAYERS names modules that no longer exist"


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
    assert {"hydra.core.config_store", "omegaconf"} <= modules[HYDRA_GLUE]  # the check sees real imports


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


@pytest.mark.parametrize(("source", "expected"), [
    ("from automodel_spec.prepare import PreparedRun\n", ["resolve (resolve) -> prepare (pipeline)"]),
    ("def f():\n    import automodel_spec.launch\n", ["resolve (resolve) -> launch (launch)"]),
    ("from automodel_spec import export\n", ["resolve (resolve) -> export (write)"]),
    ("from automodel_spec.errors import CheckpointError\n", []),
])
def test_the_checks_catch_an_upward_import_wherever_it_is(tmp_path, source, expected):
    (tmp_path / "resolve.py").write_text(source)
    assert upward_imports(graph(tmp_path)) == expected


def test_the_checks_catch_hydra_outside_hydra_glue(tmp_path):
    (tmp_path / "config.py").write_text("def f():\n    from omegaconf import OmegaConf\n")
    (tmp_path / "hydra_glue.py").write_text("import hydra\n")
    assert hydra_imports(graph(tmp_path)) == ["config -> omegaconf"]
