"""The README's command lines hold: every script they run exists, and every recipe command's overrides
compose into a typed ServeConfig (Hydra's compose API, one compose per command; a sweep's overrides by
their first value). Paths the README names in quotes are checked by tests/unit/test_docs_links.py."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from automodel_spec.config.schema import ServeConfig
from automodel_spec.hydra.glue import register_configs

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
RECIPES = {"recipes/serve.py": "serve", "recipes/export.py": "export"}
# Options of the recipes that take a value (skipped with it).
VALUE_OPTIONS = {"--config-dir", "-cd", "--config-name", "-cn", "--cfg", "-c", "--package", "-p"}
SEPARATORS = {"&&", "||", ";", "|"}


def bash_commands(text: str) -> list[str]:
    """Each command of the README's ```bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            command: list[str] = []
            for token in [*tokens, ";"]:
                if token in SEPARATORS:
                    if command:
                        commands.append(shlex.join(command))
                    command = []
                else:
                    command.append(token)
    return commands


def code_spans(text: str) -> list[str]:
    """The prose's code spans (outside fenced blocks; a span may run over a line break), spaces joined."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return sorted({" ".join(span.split()) for span in re.findall(r"`([^`]+)`", text)})


def inline_commands(text: str) -> list[str]:
    """Commands the prose quotes in code spans: `python ...` and `bash scripts/...`."""
    return [span for span in code_spans(text) if span.startswith(("python ", "bash scripts/"))]


def script_of(argv: list[str]) -> str | None:
    """The file a ``python FILE`` / ``bash FILE`` command runs (``None`` for ``python -m``)."""
    if argv[0] in ("python", "python3", "bash") and len(argv) > 1 and not argv[1].startswith("-"):
        return argv[1]
    return None


def recipe_overrides(argv: list[str]) -> list[str]:
    """The Hydra overrides of a recipe command, a sweep's (``a=1,2``, ``range(...)``) by its first value."""
    args, i, overrides = argv[2:], 0, []
    while i < len(args):
        if args[i] in VALUE_OPTIONS:
            i += 2
            continue
        if not args[i].startswith("-"):
            overrides.append(args[i])
        i += 1
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [f"{o.input_line.split('=', 1)[0]}={next(o.sweep_string_iterator())}" if o.is_sweep_override()
            else o.input_line for o in parsed]


def override_spans(text: str) -> list[str]:
    """Code spans of the prose made only of overrides of the config (``'bench.phases=[c1,c8]'``, ``sglang=x
    'sglang.cuda_graph_bs=[1,8]'``), each composed on its own."""
    heads = {f.name for f in dataclasses.fields(ServeConfig)} | {"sweep", "launcher"}
    spans = []
    for span in code_spans(text):
        try:
            tokens = shlex.split(span)
        except ValueError:
            continue
        keys = [OVERRIDE.match(tok) for tok in tokens]
        if tokens and all(keys) and all(k.group(1) in heads for k in keys) and "..." not in span:
            spans.append(span)
    return spans


OVERRIDE = re.compile(r"^\+?([a-z_][a-z0-9_]*)(?:\.[a-z0-9_]+)*=\S")
TEXT = README.read_text(encoding="utf-8")
BASH = bash_commands(TEXT)
RECIPE_COMMANDS = [c for c in BASH + inline_commands(TEXT)
                   if script_of(shlex.split(c)) in RECIPES and "..." not in c]
SPANS = override_spans(TEXT)


def test_the_readme_commands_are_found():
    assert any(c.startswith("python recipes/serve.py -m +sweep=grid") for c in BASH)
    assert any(c.startswith("python recipes/export.py") for c in BASH)
    assert "ruff check ." in BASH and "python -m pytest -q" in BASH  # split at &&
    assert len(RECIPE_COMMANDS) >= 10
    assert "'bench.phases=[c1,c8,r20,c1]'" in SPANS and not any("FAKE_SGLANG" in s for s in SPANS)


def test_a_sweep_is_composed_at_its_first_value():
    argv = shlex.split("python recipes/serve.py -m spec.num_steps=1,3 'bench.temperature=[0,1]' +sweep=grid")
    assert recipe_overrides(argv) == ["spec.num_steps=1", "bench.temperature=[0,1]", "+sweep=grid"]


@pytest.mark.parametrize("command", sorted({c for c in BASH + inline_commands(TEXT) if script_of(shlex.split(c))}))
def test_every_script_exists(command):
    script = script_of(shlex.split(command))
    assert (REPO / script).is_file(), f"README runs {script}, which does not exist: {command}"


@pytest.mark.parametrize("command", sorted({c for c in BASH + inline_commands(TEXT)
                                             if c.startswith("python -m automodel_spec")}))
def test_every_module_of_the_package_run_exists(command):
    module = shlex.split(command)[2]
    assert importlib.util.find_spec(module) is not None, f"README runs python -m {module}: {command}"


def compose_failures(commands: list[str]) -> list[str]:
    """Each recipe command that does not compose into a ServeConfig, with Hydra's or the schema's reason."""
    register_configs()
    GlobalHydra.instance().clear()
    failures = []
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        for command in commands:
            argv = shlex.split(command)
            try:
                cfg = compose(RECIPES[argv[1]], overrides=recipe_overrides(argv), return_hydra_config=True)
                with open_dict(cfg):
                    del cfg["hydra"]
                assert isinstance(OmegaConf.to_object(cfg), ServeConfig)
            except Exception as exc:  # every command's failure reported together
                failures.append(f"{command}\n    {type(exc).__name__}: {exc}")
    GlobalHydra.instance().clear()
    return failures


def test_every_recipe_command_and_override_composes(monkeypatch):
    monkeypatch.setenv("SGLANG_API_KEY", "readme-example")  # 'sglang.api_key=${oc.env:SGLANG_API_KEY}'
    failures = compose_failures(RECIPE_COMMANDS + [f"python recipes/serve.py {span}" for span in SPANS])
    assert not failures, "README commands that do not compose:\n" + "\n".join(failures)


def test_a_command_that_does_not_compose_is_reported():
    failures = compose_failures(["python recipes/serve.py -m spec.num_stepz=1,3",
                                 "python recipes/export.py draft=trainde draft.path=RUN",
                                 "python recipes/serve.py 'bench.temperature=0.5'",
                                 "python recipes/serve.py draft=trained draft.path=RUN"])
    assert [f.splitlines()[0] for f in failures] == ["python recipes/serve.py -m spec.num_stepz=1,3",
                                                     "python recipes/export.py draft=trainde draft.path=RUN",
                                                     "python recipes/serve.py 'bench.temperature=0.5'"]
