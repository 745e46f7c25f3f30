"""One owner per fact (docs/architecture.md, "One owner per rule"): facts that several modules need are
written once, and these checks fail when a second copy appears in the code or the YAML, or when copies
that must stay (package metadata) disagree with the owner."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

from automodel_spec.config.sglang_options import OLDEST_RELEASE

ROOT = Path(__file__).resolve().parents[2]
CODE_DIRS = ("automodel_spec", "hydra_plugins", "recipes")
# scripts that run the package's code (scripts/fixtures records what other tools do, in their terms)
SCRIPT_DIRS = ("scripts/gpu", "scripts/analysis")


@cache
def parsed(path: Path) -> ast.Module:
    """``path``'s syntax tree, parsed once for all the checks."""
    return ast.parse(path.read_text(), str(path))


def code_strings(path: Path) -> list[tuple[int, str]]:
    """Every string literal of a Python file with its line, docstrings left out (prose may name facts)."""
    tree = parsed(path)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def yaml_lines(path: Path) -> list[tuple[int, str]]:
    """The lines of a YAML file without their comments."""
    return [(n, line.split("#", 1)[0]) for n, line in enumerate(path.read_text().splitlines(), 1)]


def restatements(pattern: str, root: Path = ROOT, owner: str | tuple[str, ...] = ()) -> list[str]:
    """``file:line`` of each string literal (code) or value (YAML under conf/) matching ``pattern``.

    Args:
        pattern: a regular expression for the fact.
        root: the checkout to search.
        owner: the file(s) (relative to ``root``) allowed to state the fact.
    """
    owners = (owner,) if isinstance(owner, str) else owner
    found = []
    files = [p for d in CODE_DIRS for p in sorted((root / d).rglob("*.py"))]
    for path in files + sorted((root / "conf").rglob("*.yaml")):
        rel = path.relative_to(root).as_posix()
        lines = code_strings(path) if path.suffix == ".py" else yaml_lines(path)
        found += [f"{rel}:{n}" for n, text in lines if rel not in owners and re.search(pattern, text)]
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
        "# 0.5.9 did it otherwise\n"
        'OLD = "0.5.9"\n'
        'NEWER = "0.5.90"\n'
        'def f():\n    return f"needs >= 0.5.9 here"\n'
    )
    (tmp_path / "conf" / "b.yaml").write_text("release: 0.5.9\n# release: 0.5.9\n")
    assert restatements(release_pattern("0.5.9"), tmp_path) == [
        "automodel_spec/a.py:3",
        "automodel_spec/a.py:6",
        "conf/b.yaml:1",
    ]


# --- the draft-token rule ---------------------------------------------------------------------------


def code_lines(path: Path) -> list[tuple[int, str]]:
    """The lines of a Python file without comments or string literals (what the code computes)."""
    import io
    import tokenize

    kept: dict[int, list[str]] = {}
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if tok.type not in (tokenize.COMMENT, tokenize.STRING, tokenize.NL, tokenize.NEWLINE):
            kept.setdefault(tok.start[0], []).append(tok.string)
    return [(n, " ".join(parts)) for n, parts in sorted(kept.items())]


def code_matches(pattern: str, root: Path = ROOT, *dirs: str) -> list[str]:
    """``file:line`` of each line of code (not comment, not string) matching ``pattern``, under ``dirs``
    (the package, the Hydra plugin and the recipes by default)."""
    return [
        f"{path.relative_to(root).as_posix()}:{n}"
        for d in dirs or CODE_DIRS
        for path in sorted((root / d).rglob("*.py"))
        for n, line in code_lines(path)
        if re.search(pattern, line)
    ]


def literal_defaults(name: str, root: Path = ROOT) -> list[str]:
    """``file:line`` of each number literal given as the default of ``name``: a parameter's default,
    a dataclass field's, or ``x.get("name", literal)``."""
    found = []
    for d in CODE_DIRS:
        for path in sorted((root / d).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            for node in ast.walk(parsed(path)):
                if isinstance(node, ast.arguments):
                    params = node.posonlyargs + node.args
                    pairs = list(zip(params[len(params) - len(node.defaults) :], node.defaults, strict=True))
                    pairs += [
                        (a, v)
                        for a, v in zip(node.kwonlyargs, node.kw_defaults, strict=True)
                        if v is not None
                    ]
                    found += [
                        f"{rel}:{v.lineno}" for a, v in pairs if a.arg == name and isinstance(v, ast.Constant)
                    ]
                elif (
                    isinstance(node, ast.AnnAssign)
                    and isinstance(node.target, ast.Name)
                    and node.target.id == name
                    and isinstance(node.value, ast.Constant)
                ):
                    found.append(f"{rel}:{node.lineno}")
                elif (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "get"
                    and len(node.args) == 2
                    and isinstance(node.args[0], ast.Constant)
                    and node.args[0].value == name
                    and isinstance(node.args[1], ast.Constant)
                ):
                    found.append(f"{rel}:{node.lineno}")
    return found


# "steps * topk + 1" (code_lines spaces the tokens: "spec . num_steps * spec . topk + 1")
TREE_SIZE = r"\*\s*(\w+\s*\.\s*)*topk\s*\+\s*1\b"


def test_draft_tokens_are_derived_in_spec_rules_only():
    # spec_rules.draft_tokens is the rule (its checks beside it use the tree's size too): a second
    # "steps * topk + 1" elsewhere could drift from it
    found = code_matches(TREE_SIZE)
    assert found and [f for f in found if not f.startswith("automodel_spec/config/spec_rules.py:")] == []


def test_the_draft_token_cap_has_one_default():
    # the config's SpecConfig.max_draft_tokens; the rule, the grid and the predict sweeper read it
    assert literal_defaults("max_draft_tokens") == [
        f"automodel_spec/config/schema.py:{n}"
        for n, line in code_lines(ROOT / "automodel_spec/config/schema.py")
        if line.startswith("max_draft_tokens")
    ]


def test_the_grid_derives_draft_tokens_as_the_server_is_asked():
    from automodel_spec.config.schema import SpecConfig
    from automodel_spec.config.spec_rules import resolve_spec
    from automodel_spec.predict.points import grid_points

    for cap in (SpecConfig.max_draft_tokens, 8, 64):
        for point in grid_points([1, 2, 3, 5, 7, 10], [1, 2, 4, 8], cap):
            spec = resolve_spec(SpecConfig(num_steps=point.num_steps, topk=point.topk, max_draft_tokens=cap))
            assert spec.num_draft_tokens == point.num_draft_tokens, point


def test_the_copy_checks_see_code_and_defaults(tmp_path):
    (tmp_path / "automodel_spec").mkdir()
    (tmp_path / "automodel_spec" / "a.py").write_text(
        "# tokens = steps * topk + 1\n"
        "def f(steps, topk, max_draft_tokens=16):\n    return steps * topk + 1\n"
        "def h(spec):\n    return spec.num_steps * spec.topk + 1\n"
        "def g(cfg, max_draft_tokens: int = CAP):\n    return cfg.get('max_draft_tokens', 16)\n"
    )
    assert code_matches(TREE_SIZE, tmp_path) == ["automodel_spec/a.py:3", "automodel_spec/a.py:5"]
    assert literal_defaults("max_draft_tokens", tmp_path) == [
        "automodel_spec/a.py:2",
        "automodel_spec/a.py:7",
    ]


# --- the keys of /server_info -----------------------------------------------------------------------


def test_server_info_keys_are_named_in_sglang_options_only():
    # sglang_options.INFO_*; the keys that are not also config field names (attention_backend, tp_size ...)
    from automodel_spec.config.sglang_options import INFO_ACCEPT_LENGTH, INFO_KEYS

    keys = [
        k
        for k in (*INFO_KEYS, INFO_ACCEPT_LENGTH)
        if k.startswith("speculative_") or k.startswith("max_total") or k == INFO_ACCEPT_LENGTH
    ]
    pattern = "^(" + "|".join(map(re.escape, keys)) + ")$"
    assert restatements(pattern, owner="automodel_spec/config/sglang_options.py") == []


def test_server_info_keys_map_to_the_fields_that_hold_them():
    from dataclasses import fields

    from automodel_spec.bench.result import SpecSettings
    from automodel_spec.config.schema import SGLangConfig
    from automodel_spec.config.sglang_options import INFO_KEYS, INFO_SERVER_SETTINGS, INFO_SPEC, OPTIONS

    assert set(INFO_SPEC) <= set(INFO_KEYS) and set(INFO_SERVER_SETTINGS) <= set(INFO_KEYS)
    assert set(INFO_SPEC.values()) <= {f.name for f in fields(SpecSettings)}
    assert all(f"sglang.{key}" == setting for key, setting in INFO_SERVER_SETTINGS.items())
    assert set(INFO_SERVER_SETTINGS.values()) <= {o.key for o in OPTIONS}
    assert {k.removeprefix("sglang.") for k in INFO_SERVER_SETTINGS.values()} <= {
        f.name for f in fields(SGLangConfig)
    }


# --- the drafts' tables: layer shapes, architecture names, legacy names, default capture layers ---------


def shape_tables(root: Path = ROOT) -> list[str]:
    """``file:line`` of each dict that maps a Llama layer's ``down_proj`` weight to a shape tuple."""
    found = []
    for d in CODE_DIRS + SCRIPT_DIRS:
        for path in sorted((root / d).rglob("*.py")):
            for node in ast.walk(parsed(path)):
                if isinstance(node, ast.Dict) and any(
                    isinstance(v, ast.Tuple) and k is not None and "down_proj" in ast.unparse(k)
                    for k, v in zip(node.keys, node.values, strict=True)
                ):
                    found.append(f"{path.relative_to(root).as_posix()}:{node.lineno}")
    return found


def test_the_llama_layer_shapes_are_tabled_in_draft_plan_only():
    # draft_plan.decoder_layer_shapes; the reference adds only the biases SGLang allocates
    found = shape_tables()
    assert len(found) == 1 and found[0].startswith("automodel_spec/export/draft_plan.py:"), found


def test_the_architecture_and_legacy_names_are_the_layouts():
    from automodel_spec.export import eagle3_layout, eagle_layout

    archs = (eagle3_layout.ARCHITECTURE, eagle_layout.ARCHITECTURE)
    pattern = "^(" + "|".join(archs) + ")$"
    # config.py's default is a copy (the config may not import the layouts): held to the owner below
    layouts = ("automodel_spec/export/eagle3_layout.py", "automodel_spec/export/eagle_layout.py")
    assert restatements(pattern, owner=(*layouts, "automodel_spec/config/schema.py")) == []
    legacy = "^(" + "|".join(re.escape(k) for k in eagle3_layout.LEGACY_NAMES) + r")\.?$"
    assert restatements(legacy, owner=layouts[0]) == []


def test_the_configured_architectures_are_the_layouts():
    import yaml

    from automodel_spec.config.schema import AlgorithmConfig
    from automodel_spec.export import eagle3_layout, eagle_layout

    assert AlgorithmConfig().architecture == eagle3_layout.ARCHITECTURE
    for name, arch in (("EAGLE3", eagle3_layout.ARCHITECTURE), ("EAGLE", eagle_layout.ARCHITECTURE)):
        option = yaml.safe_load((ROOT / "conf" / "algorithm" / f"{name}.yaml").read_text()) or {}
        assert option.get("architecture", AlgorithmConfig().architecture) == arch, name


def test_the_default_capture_layers_are_derived_once():
    # eagle3_layout.default_aux_layer_ids; the reference numbers them as SGLang does (+1)
    from automodel_spec.bench.reference import capture_layers
    from automodel_spec.export.eagle3_layout import default_aux_layer_ids

    found = [
        f
        for d in (*CODE_DIRS, *SCRIPT_DIRS)
        for f in code_matches(r"//\s*2\s*[-+]\s*1\b|-\s*[34]\s*\]", ROOT, d)
    ]
    assert [f for f in found if not f.startswith("automodel_spec/export/eagle3_layout.py:")] == []
    assert capture_layers({}, 32) == [i + 1 for i in default_aux_layer_ids(32)] == [2, 16, 29]


# --- the YAML options set only what differs from what they extend ---------------------------------


def option_values(conf: Path, group: str, option: str) -> tuple[dict, dict]:
    """``(what the option sets, what it extends)``: the schema's defaults, or another option of its group."""
    from dataclasses import asdict

    import yaml

    from automodel_spec.config.schema import AlgorithmConfig, BenchConfig, DraftConfig, SGLangConfig

    schemas = {
        "algorithm": AlgorithmConfig,
        "draft": DraftConfig,
        "sglang": SGLangConfig,
        "bench": BenchConfig,
    }
    own = yaml.safe_load((conf / group / f"{option}.yaml").read_text()) or {}
    base: dict = {}
    for entry in own.pop("defaults", []):
        if entry == f"/schema/{group}@_here_":
            base = asdict(schemas[group]())
        elif isinstance(entry, str) and not entry.startswith(("/", "_self_")):
            parent_own, parent_base = option_values(conf, group, entry)
            base = {**parent_base, **parent_own}
    return own, base


def restated_defaults(conf: Path = ROOT / "conf") -> list[str]:
    """``group/option.yaml: key`` for each key an option sets to the value it already inherits."""
    found = []
    for group in ("algorithm", "draft", "sglang", "bench"):
        for path in sorted((conf / group).glob("*.yaml")):
            own, base = option_values(conf, group, path.stem)
            found += [
                f"{group}/{path.name}: {key}"
                for key, value in own.items()
                if key in base and base[key] == value
            ]
    found += [f"serve.yaml: {key}" for key in _restated_in_primary(conf)]
    return found


def _restated_in_primary(conf: Path) -> list[str]:
    """The keys of ``serve.yaml`` (the primary config, typed by ``ServeConfig``) set to its defaults."""
    from dataclasses import asdict

    import yaml

    from automodel_spec.config.schema import ServeConfig

    own = yaml.safe_load((conf / "serve.yaml").read_text()) if (conf / "serve.yaml").exists() else {}
    base = asdict(ServeConfig())
    found = []
    for key, value in (own or {}).items():
        if key in ("defaults", "hydra") or key not in base:
            continue
        if isinstance(value, dict) and isinstance(base[key], dict):
            found += [f"{key}.{k}" for k, v in value.items() if k in base[key] and base[key][k] == v]
        elif base[key] == value:
            found.append(key)
    return found


def test_the_options_set_only_what_differs_from_what_they_extend():
    # the defaults are the schema's (automodel_spec/config/schema.py), as in Hydra's own examples: a copy in
    # a YAML option would keep an old value after the schema's default changed
    assert restated_defaults() == []


def test_the_restated_default_check_follows_an_option_it_extends(tmp_path):
    (tmp_path / "sglang").mkdir()
    for group in ("algorithm", "draft", "bench"):
        (tmp_path / group).mkdir()
    (tmp_path / "sglang" / "a.yaml").write_text(
        "defaults:\n  - /schema/sglang@_here_\nport: 30000\ntp_size: 2\n"
    )
    (tmp_path / "sglang" / "b.yaml").write_text("defaults:\n  - a\ntp_size: 2\ncuda_graph_max_bs: null\n")
    (tmp_path / "sglang" / "c.yaml").write_text("defaults:\n  - b\ncuda_graph_max_bs: 8\n")
    (tmp_path / "sglang" / "d.yaml").write_text(
        "defaults:\n  - c\ncuda_graph_max_bs: null\n"
    )  # differs from c
    (tmp_path / "serve.yaml").write_text(
        "defaults:\n  - serve_schema\nmode: serve\nprint_only: true\n"
        "target:\n  path: null\n  revision: main\nhydra:\n  job:\n    chdir: false\n"
    )
    assert restated_defaults(tmp_path) == [
        "sglang/a.yaml: port",
        "sglang/b.yaml: tp_size",
        "sglang/b.yaml: cuda_graph_max_bs",
        "serve.yaml: mode",
        "serve.yaml: target.path",
    ]
