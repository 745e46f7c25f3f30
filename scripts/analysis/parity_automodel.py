#!/usr/bin/env python3
"""Parity with NeMo Automodel's ``serve_sglang`` on the producer fixtures, recorded as JSON.

    /tmp/prod/am/bin/python scripts/analysis/parity_automodel.py --our-python python --out docs/data/parity.json
    /tmp/prod/am/bin/python scripts/analysis/parity_automodel.py --our-python python --check

Run it with the interpreter that has ``nemo_automodel`` installed: theirs is imported and called
(``_parse_args`` + ``build_sglang_argv``, with its own defaults); ours runs as a subprocess of
``--our-python`` (``recipes/serve.py print_only=true`` and ``recipes/export.py``). For every fixture
in ``tests/fixtures/producers/*/manifest.json`` and every path a user could pass (run directory,
checkpoint, ``model/``, ``model/consolidated/``, ...):

* theirs with ``--print-only`` on the committed fixture, and for real (``print_only=False``: it
  exports and rewrites, but does not launch) on a copy, recording which files of the copy changed;
* ours with ``print_only=true`` (argv, notes, or the refusal), and one real export per fixture
  (the ``config.json`` keys it changed);
* for the directory each would hand to SGLang: what SGLang 0.5.9-0.5.17 would do with it, from
  the config and the safetensors headers (rules read from SGLang's source; nothing is launched).

The committed fixtures are digested before and after; any change is an error. ``--check`` re-runs
everything and exits 1 when the results differ from the JSON file.

Why this script keeps its own model of SGLang's loader (``sglang_reading``, ``effective_dtype`` and its
dtype names) instead of importing the package's (``automodel_spec.export.serving_dtype``, the layouts,
``automodel_spec.bench.reference``): it is the judge of both tools, ours included, so it must not share the
code it judges -- a rule the package got wrong would otherwise pass here as well. Its rules were read
from SGLang's source on their own (docs/parity.md names the lines), and a disagreement between it and
the package shows up as a failing row in ``docs/data/parity.json``. It also runs in the Automodel
venv, where this package is not installed (ours runs as a subprocess of ``--our-python``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import re
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "producers"
PRODUCERS = ("automodel", "specforge", "speculators")
SGLANG_CLASS = {"EAGLE3": "LlamaForCausalLMEagle3", "EAGLE": "LlamaForCausalLMEagle"}
# What SGLang's --dtype auto runs a float32 (or dtype-less) non-Gemma config in (model_config.py
# _get_and_verify_dtype, identical in 0.5.9-0.5.17). Deliberately not automodel_spec.export.serving_dtype's
# table: this script checks the package against SGLang (see the docstring).
_AUTO_FLOAT32 = "float16"
_DTYPES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "half": "float16",
           "fp16": "float16", "float32": "float32", "float": "float32", "fp32": "float32"}
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_VOLATILE = ("environment",)  # compared by --check only as a warning


@dataclass(frozen=True)
class Input:
    """One path a user could pass for a fixture.

    Attributes:
        label: what it is (``run_dir``, ``epoch_dir``, ...).
        rel: relative to the fixture's directory.
        synthetic: a layout made here from the fixture (not what the producer wrote).
    """

    label: str
    rel: str
    synthetic: bool = False


@dataclass
class Fixture:
    """One fixture of a producer's manifest, with the inputs to try and the one a user passes."""

    producer: str
    name: str
    root: Path
    algorithm: str
    action: str
    why: str
    inputs: list[Input]
    ours_primary: str
    theirs_primary: str
    expected_aux: list[int] | None = None
    facts_algorithm: str = ""


@dataclass
class Paths:
    """Where this run writes (all under one temporary directory)."""

    work: Path
    targets: dict[str, Path] = field(default_factory=dict)


# ---------------------------------------------------------------- fixtures and digests


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (symlinks as their target), keyed by relative path."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "symlink:" + str(p.readlink())
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def digest_changes(before: dict[str, str], after: dict[str, str]) -> dict[str, list[str]]:
    """Files added, removed and changed between two ``tree_digest`` results."""
    return {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "changed": sorted(k for k in set(before) & set(after) if before[k] != after[k]),
    }


def algorithm_of(facts_algorithm: str) -> str:
    """The ``--speculative-algorithm`` both tools are run with for a fixture's algorithm."""
    return "EAGLE" if facts_algorithm.startswith("EAGLE-1") else "EAGLE3"


def automodel_inputs(entry: dict) -> list[Input]:
    """Every directory of an Automodel run a user might name (theirs documents the checkpoint)."""
    epoch = entry["latest_checkpoint"]
    return [
        Input("output_dir", "."),
        Input("run_dir", "checkpoints"),
        Input("epoch_dir", epoch),
        Input("model_dir", f"{epoch}/model"),
        Input("consolidated", entry["hf_dir"]),
        # serve_sglang's docstring describes HF files straight in model/; 0.7.0 writes model/consolidated/
        Input("flat_model_dir", f"{epoch}/model", synthetic=True),
    ]


def other_inputs(root: Path, entry: dict) -> list[Input]:
    """The directory as given, its HF directory when deeper, and the symlinks a producer left in it."""
    inputs = [Input("as_given", ".")]
    hf_dir = entry.get("hf_dir")
    if hf_dir not in (None, "."):
        inputs.append(Input("hf_dir", hf_dir))
    if root.is_dir():
        inputs += [Input(f"link:{p.name}", p.name) for p in sorted(root.iterdir()) if p.is_symlink()]
    return inputs


def load_fixtures(root: Path) -> tuple[list[Fixture], dict[str, str]]:
    """Fixtures of every producer's manifest; and, per producer, why there are none."""
    fixtures, missing = [], {}
    for producer in PRODUCERS:
        manifest_path = root / producer / "manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as exc:
            missing[producer] = f"{manifest_path.relative_to(REPO)}: {type(exc).__name__}"
            continue
        for entry in manifest.get("fixtures", []):
            fixtures.append(make_fixture(producer, root / producer, entry))
    return fixtures, missing


def make_fixture(producer: str, producer_dir: Path, entry: dict) -> Fixture:
    """A ``Fixture`` from its manifest entry."""
    facts = entry.get("facts") or {}
    fixture_root = producer_dir / entry["path"]
    automodel = producer == "automodel"
    inputs = automodel_inputs(entry) if automodel else other_inputs(fixture_root, entry)
    return Fixture(
        producer=producer, name=entry["name"], root=fixture_root,
        algorithm=algorithm_of(facts.get("algorithm", "EAGLE-3")), facts_algorithm=facts.get("algorithm", ""),
        action=entry.get("action", ""), why=entry.get("why", ""), inputs=inputs,
        ours_primary="run_dir" if automodel else "as_given", theirs_primary="epoch_dir" if automodel else "as_given",
        expected_aux=facts.get("expected_eagle_aux_hidden_state_layer_ids"),
    )


def target_config(producer: str, producer_dir: Path) -> dict | None:
    """A bfloat16 Llama target config matching the producer's tiny target (manifest facts)."""
    manifest = json.loads((producer_dir / "manifest.json").read_text())
    spec = (manifest.get("inputs") or {}).get("target")
    if isinstance(spec, dict):  # Automodel: the numbers are in the manifest
        return {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
            "hidden_size": spec["hidden_size"], "intermediate_size": spec["intermediate_size"],
            "num_hidden_layers": spec["num_hidden_layers"], "num_attention_heads": spec["num_attention_heads"],
            "num_key_value_heads": spec["num_key_value_heads"], "vocab_size": spec["vocab_size"],
            "head_dim": spec["hidden_size"] // spec["num_attention_heads"],
            "max_position_embeddings": spec["max_position_embeddings"], "rms_norm_eps": spec["rms_norm_eps"],
            "rope_parameters": {"rope_theta": spec["rope_theta"], "rope_type": "default"},
            "tie_word_embeddings": False, "dtype": "bfloat16",
        }
    given = producer_dir / "inputs" / "target_config.json"  # the producer's own tiny target config
    if given.is_file():
        return {**json.loads(given.read_text()), "dtype": "bfloat16"}
    return None


def write_targets(paths: Paths, producers: list[str]) -> None:
    """One target directory (``config.json`` only) per producer, for both tools' target checks."""
    for producer in producers:
        config = target_config(producer, FIXTURES / producer)
        if config is None:
            continue
        d = paths.work / "targets" / producer
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        paths.targets[producer] = d


def copy_fixture(fixture: Fixture, dest: Path, inp: Input) -> Path:
    """A private copy of the fixture (symlinks kept), with ``inp``'s synthetic layout made in it."""
    shutil.copytree(fixture.root, dest, symlinks=True)
    if inp.synthetic:  # flat model/: the HF files of model/consolidated/ copied up into model/
        consolidated = dest / inp.rel / "consolidated"
        for f in consolidated.iterdir():
            shutil.copy2(f, dest / inp.rel / f.name)
    return dest


# ---------------------------------------------------------------- what SGLang would be handed


def safetensors_header(path: Path) -> dict[str, dict]:
    """Tensor names -> dtype/shape from a safetensors file's JSON header (no tensors read)."""
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header


def weight_names(d: Path) -> dict[str, str] | None:
    """Tensor name -> file, over the index's shards or every ``*.safetensors`` in ``d``."""
    index = d / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(p.name for p in d.glob("*.safetensors"))
    if not files:
        return None
    return {name: f for f in files if (d / f).is_file() for name in safetensors_header(d / f)}


def is_all_ones(d: Path, file: str, name: str) -> bool:
    """Whether a norm weight is untrained (all ones, an identity)."""
    from safetensors import safe_open

    with safe_open(str(d / file), framework="pt") as f:
        return bool((f.get_tensor(name) == 1).all())


def draft_view(d: Path | None) -> dict:
    """The facts of a draft directory that decide how SGLang loads it."""
    if d is None or not d.is_dir():
        return {"exists": False}
    config_path = d / "config.json"
    if not config_path.is_file():
        return {"exists": True, "config_json": False, "files": sorted(p.name for p in d.iterdir())}
    cfg = json.loads(config_path.read_text())
    names = weight_names(d) or {}
    canonical = {_canonical(n): n for n in names}
    layers = {int(m.group(1)) for n in canonical if (m := _LAYER.search("." + n))}
    view = {
        "exists": True, "config_json": True, "architectures": cfg.get("architectures"),
        "num_hidden_layers": cfg.get("num_hidden_layers"), "layers_in_weights": len(layers),
        "dtype": cfg.get("dtype"), "torch_dtype": cfg.get("torch_dtype"),
        "rope_theta": cfg.get("rope_theta"), "rope_parameters": cfg.get("rope_parameters"),
        "aux_layer_ids": (cfg.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids"),
        "draft_vocab_size": cfg.get("draft_vocab_size"), "vocab_size": cfg.get("vocab_size"),
        "fc_norm": cfg.get("fc_norm"), "norm_output": cfg.get("norm_output"),
        "parallel_drafting": cfg.get("parallel_drafting"), "speculators_config": "speculators_config" in cfg,
        "weight_files": bool(names), "decoder_names": _decoder_name_style(names),
        "has_d2t": "d2t" in names, "has_fc_bias": any(n.endswith("fc.bias") for n in names),
        "token_map_file": (d / "speculative_token_map.pt").is_file() or (d / "token_map.pt").is_file(),
    }
    for norm in ("layers.0.input_layernorm.weight", "norm.weight"):
        stored = canonical.get(norm)
        key = "trained_" + norm.replace(".weight", "").replace(".", "_")
        view[key] = None if stored is None else not is_all_ones(d, names[stored], stored)
    return view


def _canonical(name: str) -> str:
    """``model.x`` -> ``x``; ``midlayer.x`` (the one-layer name) -> ``layers.0.x``."""
    name = name.removeprefix("model.")
    return "layers.0." + name[len("midlayer."):] if name.startswith("midlayer.") else name


def _decoder_name_style(names: dict[str, str]) -> str | None:
    for prefix in ("model.layers.0.", "layers.0.", "model.midlayer.", "midlayer."):
        if any(n.startswith(prefix) for n in names):
            return prefix + "*"
    return None


def effective_dtype(flag: str | None, config: dict) -> str:
    """The dtype SGLang builds a model in for ``--dtype flag`` (``None`` = auto) and its config."""
    if flag not in (None, "auto"):
        return _DTYPES.get(flag, flag)
    named = _DTYPES.get(str(config.get("torch_dtype") or config.get("dtype") or "float32").removeprefix("torch."))
    return _AUTO_FLOAT32 if named in (None, "float32") else named


def sglang_reading(view: dict, algorithm: str, dtype_flag: str | None, target: dict,
                   expected_aux: list[int] | None) -> list[str]:
    """What SGLang 0.5.9-0.5.17 would do with a draft directory; empty when it loads as trained.

    Each line starts with a key the doc explains (with the SGLang source lines behind it).
    """
    if not view.get("exists"):
        return ["no_dir: the draft path does not exist"]
    if not view.get("config_json"):
        return ["no_config: no config.json in the draft path; SGLang's AutoConfig load fails at startup"]
    if view["speculators_config"]:
        return ["speculators_config: speculators-format config, which no SGLang release reads"]
    if not view["weight_files"]:
        return ["no_weights: no safetensors in the draft path"]
    out = []
    if (view["architectures"] or [None])[0] != SGLANG_CLASS[algorithm]:
        # the rest says what would follow once the architecture were fixed by hand
        out.append(f"bad_arch: architectures {view['architectures']} is not SGLang's {SGLANG_CLASS[algorithm]}; "
                   "startup error")
    out += _eagle3_reading(view, expected_aux) if algorithm == "EAGLE3" else _eagle_reading(view)
    return out + _common_reading(view, dtype_flag, target)


def _eagle3_reading(view: dict, expected_aux: list[int] | None) -> list[str]:
    out = []
    n, w = view["num_hidden_layers"], view["layers_in_weights"]
    if n != 1:
        out.append(f"layers_error_0511: num_hidden_layers={n}: 0.5.9-0.5.11 raise 'EAGLE3 currently only "
                   "supports 1 layer'")
    if isinstance(n, int) and n > w:
        out.append(f"layers_uninit: 0.5.12+ build {n} layers, {n - w} of them without weights (uninitialised)")
    if w == 1 and view["decoder_names"] in ("model.layers.0.*", "layers.0.*"):
        out.append(f"names_0511: {view['decoder_names']} names: 0.5.9-0.5.11 load only midlayer.* and skip "
                   "the decoder layer silently")
    if view["fc_norm"] or view["norm_output"]:
        out.append("eagle31_0511: fc_norm / norm_output are read from 0.5.12 only")
    if (view["draft_vocab_size"] or 0) < (view["vocab_size"] or 0) and not view["has_d2t"]:
        out.append("no_d2t: reduced draft vocab without d2t: draft ids read as target ids")
    if view["parallel_drafting"]:
        out.append("peagle: P-EAGLE draft (parallel_drafting): SGLang's EAGLE3 head skips mask_hidden and "
                   "the extra layer; a different model is served")
    if expected_aux and view["aux_layer_ids"] != expected_aux:
        out.append(f"aux_ids: trained on target layers {expected_aux} but config.json says "
                   f"{view['aux_layer_ids']}: SGLang captures its default layers")
    return out


def _eagle_reading(view: dict) -> list[str]:
    out = []
    n, w = view["num_hidden_layers"], view["layers_in_weights"]
    if isinstance(n, int) and n > w:
        out.append(f"eagle_layers_uninit: LlamaForCausalLMEagle builds num_hidden_layers={n} layers, "
                   f"{n - w} without weights")
    if view["trained_layers_0_input_layernorm"]:
        out.append("eagle_input_norm: trained layers.0.input_layernorm: SGLang's EAGLE layer 0 has none "
                   "(skipped)")
    if view["trained_norm"]:
        out.append("eagle_final_norm: trained final norm: SGLang's EAGLE draft has none (skipped)")
    if not view["has_fc_bias"]:
        out.append("eagle_fc_bias: no fc.bias in the weights: SGLang's fc has bias=True, left at torch's "
                   "random init")
    return out


def _common_reading(view: dict, dtype_flag: str | None, target: dict) -> list[str]:
    out = []
    config = {"torch_dtype": view["torch_dtype"], "dtype": view["dtype"]}
    draft, tgt = effective_dtype(dtype_flag, config), effective_dtype(dtype_flag, target)
    if draft != tgt:
        out.append(f"dtype_clash: --dtype {dtype_flag or 'auto'}: draft runs in {draft} beside a {tgt} "
                   "target (dtype mismatch at the draft's fc)")
    elif effective_dtype(None, config) != effective_dtype(None, target):
        out.append(f"note_dtype_flag: right only because --dtype {dtype_flag} is passed: under --dtype auto the "
                   f"draft would run in {effective_dtype(None, config)} beside a {effective_dtype(None, target)} "
                   "target")
    params = view["rope_parameters"]
    if isinstance(params, dict) and view["rope_theta"] is None and params.get("rope_theta") not in (None, 10000):
        out.append(f"rope_059: rope_parameters only: 0.5.9 (transformers 4.57.1) uses rope_theta=10000, "
                   f"not {params['rope_theta']:g}")
    return out


# ---------------------------------------------------------------- theirs (imported)


@contextlib.contextmanager
def captured_logs(logger_name: str) -> Iterator[list[str]]:
    """Messages the logger emits inside the block (theirs reports through logging)."""
    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(f"{record.levelname}: {record.getMessage()}")

    logger = logging.getLogger(logger_name)
    handler, old_level, old_propagate = _Collect(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # keep the console to the table
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def run_theirs(draft: Path, algorithm: str, target: Path, print_only: bool) -> dict:
    """Their argv for ``--target T --draft D --algorithm A`` (their defaults), or their exception."""
    from nemo_automodel.components.speculative import serve_sglang

    argv = ["--target", str(target), "--draft", str(draft), "--algorithm", algorithm]
    args = serve_sglang._parse_args(argv + (["--print-only"] if print_only else []))
    with captured_logs(serve_sglang.__name__) as logs:
        try:
            cmd, error = serve_sglang.build_sglang_argv(args), None
        except Exception as exc:  # their refusals are exceptions; record them as the outcome
            cmd, error = None, f"{type(exc).__name__}: {exc}"
    return {"cli": ["serve_sglang", *argv] + (["--print-only"] if print_only else []),
            "argv": cmd, "error": error, "logs": logs}


def theirs_for_input(fixture: Fixture, inp: Input, target: Path, work: Path) -> dict:
    """Theirs dry (on the fixture, or a copy for a synthetic layout) and real (on a fresh copy)."""
    dry_root = copy_fixture(fixture, work / "dry", inp) if inp.synthetic else fixture.root
    dry = run_theirs(dry_root / inp.rel, fixture.algorithm, target, print_only=True)
    real_root = copy_fixture(fixture, work / "real", inp)
    before = tree_digest(real_root)
    configs_before = {p: json.loads((real_root / p).read_text()) for p in before if p.endswith("config.json")}
    real = run_theirs(real_root / inp.rel, fixture.algorithm, target, print_only=False)
    changes = digest_changes(before, tree_digest(real_root))
    real["files"] = changes
    real["config_changes"] = {p: config_diff(configs_before[p], json.loads((real_root / p).read_text()))
                              for p in changes["changed"] if p in configs_before}
    real["draft_view"] = draft_view(_flag_path(real["argv"], "--speculative-draft-model-path"))
    return {"dry": dry, "real": real, "roots": [str(dry_root), str(real_root)]}


def _flag_path(argv: list[str] | None, flag: str) -> Path | None:
    value = flag_value(argv or [], flag)
    return Path(value) if value else None


# ---------------------------------------------------------------- ours (subprocess)


def run_ours(python: str, recipe: str, overrides: list[str], cwd: Path) -> dict:
    """Run one of our recipes; its exit code, notes, command (print_only) or refusal."""
    cmd = [python, str(REPO / "recipes" / recipe), *overrides]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    out = {"cli": [f"recipes/{recipe}", *overrides], "rc": proc.returncode,
           "notes": [ln[4:] for ln in proc.stdout.splitlines() if ln.startswith("  - ")]}
    lines = proc.stdout.splitlines()
    if "command:" in lines:
        out["argv"] = shlex.split(lines[lines.index("command:") + 1])
    if proc.returncode:
        out["error"] = _error_text(proc.stderr) or f"exit {proc.returncode}, no message"
    elif recipe == "export.py":
        out["export_dir"] = lines[-1].strip()
    return out


def _error_text(stderr: str) -> str:
    """Our message: from the ``error:`` line to the end (problems are listed one per line)."""
    lines = stderr.strip().splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith("error: ")), None)
    if start is None:
        return lines[-1] if lines else ""
    return "\n".join([lines[start][len("error: "):], *lines[start + 1:]])


def our_overrides(fixture: Fixture, draft: Path, target: Path, cache: Path) -> list[str]:
    """The overrides a user gives (plus a private cache, so runs see no earlier export)."""
    overrides = [f"algorithm={fixture.algorithm}", "draft=automodel", f"draft.path={draft}",
                 f"target.path={target}", f"cache_dir={cache}"]
    if any(fixture.root.rglob("training_state.pt")):
        # A SpecForge training checkpoint keeps its architecture in the --draft-config it was given;
        # name it, so the result does not depend on that file still sitting where training left it.
        overrides.append(f"draft.config={fixture.root.parent / 'inputs' / 'draft_config.json'}")
    return overrides


def ours_export(python: str, fixture: Fixture, draft: Path, target: Path, cache: Path) -> dict:
    """A real export; the config keys it changed and what SGLang would be handed."""
    result = run_ours(python, "export.py", our_overrides(fixture, draft, target, cache), cache.parent)
    if result["rc"]:
        return result
    export_dir = Path(result["export_dir"])
    manifest = json.loads((export_dir / "automodel_spec_export.json").read_text())
    source = Path(manifest["source"]) / "config.json"
    result["source_config"] = source.is_file()  # a SpecForge training checkpoint keeps its config elsewhere
    before = json.loads(source.read_text()) if source.is_file() else {}
    result["config_changes"] = config_diff(before, json.loads((export_dir / "config.json").read_text()))
    result["files"] = sorted(p.name for p in export_dir.iterdir())
    result["min_sglang"] = manifest.get("min_sglang")
    result["draft_view"] = draft_view(export_dir)
    return result


def config_diff(before: dict, after: dict) -> dict:
    """Keys added, removed and changed (``[before, after]``) between two configs."""
    return {
        "added": {k: after[k] for k in sorted(set(after) - set(before))},
        "removed": sorted(set(before) - set(after)),
        "changed": {k: [before[k], after[k]] for k in sorted(set(before) & set(after)) if before[k] != after[k]},
    }


# ---------------------------------------------------------------- normalization and comparison


class Normalizer:
    """Replaces machine-specific paths (and ports) so two runs compare equal."""

    def __init__(self, replacements: dict[str, str]):
        self._pairs = sorted(replacements.items(), key=lambda kv: -len(kv[0]))

    def text(self, s: str) -> str:
        for old, new in self._pairs:
            s = s.replace(old, new)
        return re.sub(r"(exports/\w+)-[0-9a-f]{20}", r"\1-<key>", s)

    def obj(self, o):
        if isinstance(o, str):
            return self.text(o)
        if isinstance(o, list):
            return [self.obj(x) for x in o]
        if isinstance(o, dict):
            return {self.text(k): self.obj(v) for k, v in o.items()}
        return o

    def argv(self, argv: list[str] | None) -> list[str] | None:
        if argv is None:
            return None
        out = self.obj(argv)
        out[0] = "<python>"
        for i, a in enumerate(out[:-1]):
            if a == "--port":
                out[i + 1] = "<port>"
        return out


def flag_value(argv: list[str], flag: str) -> str | None:
    """The value after ``flag`` in ``argv``."""
    return argv[argv.index(flag) + 1] if flag in argv[:-1] else None


def flags(argv: list[str] | None) -> dict[str, str | bool]:
    """``launch_server`` flags and values; ``--model`` is SGLang's alias of ``--model-path``."""
    if not argv:
        return {}
    rest = argv[argv.index("sglang.launch_server") + 1:]
    out, i = {}, 0
    while i < len(rest):
        name = "--model-path" if rest[i] == "--model" else rest[i]
        has_value = i + 1 < len(rest) and not rest[i + 1].startswith("--")
        out[name] = rest[i + 1] if has_value else True
        i += 2 if has_value else 1
    return out


def flag_diff(theirs: list[str] | None, ours: list[str] | None) -> dict:
    """Flags only theirs passes, only ours passes, and passed by both with other values."""
    a, b = flags(theirs), flags(ours)
    return {
        "only_theirs": {k: a[k] for k in a if k not in b},
        "only_ours": {k: b[k] for k in b if k not in a},
        "different": {k: [a[k], b[k]] for k in a if k in b and a[k] != b[k]},
    }


# ---------------------------------------------------------------- one fixture


def run_fixture(fixture: Fixture, paths: Paths, python: str, pool: ThreadPoolExecutor) -> dict:
    """Both tools on every input of one fixture; normalized."""
    target = paths.targets.get(fixture.producer)
    if target is None:
        return {"producer": fixture.producer, "fixture": fixture.name, "error": "no target config in the manifest"}
    target_cfg = json.loads((target / "config.json").read_text())
    base = paths.work / fixture.producer / fixture.name
    replacements = {str(target): "<target>", str(fixture.root): "<fixture>", str(REPO): "<repo>"}
    ours_jobs, theirs_runs = {}, {}
    for i, inp in enumerate(fixture.inputs):
        work = base / f"{i}-{inp.label.replace(':', '_')}"
        work.mkdir(parents=True)
        theirs_runs[inp.label] = theirs_for_input(fixture, inp, target, work)
        ours_root = theirs_runs[inp.label]["roots"][0]
        replacements.update({r: "<fixture>" for r in theirs_runs[inp.label]["roots"]})
        replacements[str(work)] = "<work>"
        ours_jobs[inp.label] = pool.submit(
            run_ours, python, "serve.py",
            ["print_only=true", *our_overrides(fixture, Path(ours_root) / inp.rel, target, work / "cache")], work)
    ours_runs = {label: job.result() for label, job in ours_jobs.items()}
    export = _export_primary(fixture, paths, python, ours_runs, target)
    replacements[str(paths.work)] = "<tmp>"
    norm = Normalizer(replacements)
    return assemble(fixture, norm, theirs_runs, ours_runs, export, target_cfg)


def _export_primary(fixture: Fixture, paths: Paths, python: str, ours_runs: dict, target: Path) -> dict | None:
    """One real export of ours: from the input a user passes, else the first one ours accepts."""
    order = [fixture.ours_primary] + [i.label for i in fixture.inputs if not i.synthetic]
    label = next((lb for lb in order if ours_runs.get(lb, {}).get("rc") == 0), None)
    if label is None:
        return None
    rel = next(i.rel for i in fixture.inputs if i.label == label)
    cache = paths.work / "exports" / fixture.producer / fixture.name / "cache"
    cache.parent.mkdir(parents=True)
    return {"input": label, **ours_export(python, fixture, fixture.root / rel, target, cache)}


def assemble(fixture: Fixture, norm: Normalizer, theirs_runs: dict, ours_runs: dict,
             export: dict | None, target_cfg: dict) -> dict:
    """The fixture's record: per input both tools, and the comparison of the primary inputs."""
    inputs = {}
    for inp in fixture.inputs:
        t, o = theirs_runs[inp.label], ours_runs[inp.label]
        real = t["real"]
        reading = [] if real["argv"] is None else sglang_reading(
            real["draft_view"], fixture.algorithm, flag_value(real["argv"], "--dtype"), target_cfg,
            fixture.expected_aux)
        inputs[inp.label] = norm.obj({
            "rel": inp.rel, "synthetic": inp.synthetic,
            "theirs": {
                "cli": t["dry"]["cli"], "argv": norm.argv(t["dry"]["argv"]), "error": t["dry"]["error"],
                "logs": t["dry"]["logs"],
                "real": {"argv": norm.argv(real["argv"]), "error": real["error"], "logs": real["logs"],
                         "files": real["files"], "config_changes": real["config_changes"],
                         "draft_view": real["draft_view"], "sglang": reading},
                "real_differs_from_dry": norm.argv(real["argv"]) != norm.argv(t["dry"]["argv"]),
            },
            "ours": {"cli": o["cli"], "rc": o["rc"], "argv": norm.argv(o.get("argv")), "error": o.get("error"),
                     "notes": o["notes"]},
        })
    record = {"producer": fixture.producer, "fixture": fixture.name, "algorithm": fixture.algorithm,
              "facts_algorithm": fixture.facts_algorithm, "manifest_action": fixture.action,
              "manifest_why": fixture.why, "ours_primary": fixture.ours_primary,
              "theirs_primary": fixture.theirs_primary, "inputs": inputs}
    record["export"] = norm.obj(_export_record(export, fixture, target_cfg))
    served = inputs[fixture.ours_primary]["ours"]["rc"] == 0
    record["ours_as_manifest"] = served == (fixture.action == "serve")
    theirs_argv = inputs[fixture.theirs_primary]["theirs"]["real"]["argv"]
    record["flag_diff"] = flag_diff(theirs_argv, inputs[fixture.ours_primary]["ours"]["argv"])
    return record


def _export_record(export: dict | None, fixture: Fixture, target_cfg: dict) -> dict | None:
    if export is None:
        return None
    keep = {k: export.get(k) for k in ("input", "cli", "rc", "error", "notes", "source_config",
                                        "config_changes", "files", "min_sglang", "draft_view")}
    if export.get("draft_view"):
        keep["sglang"] = sglang_reading(export["draft_view"], fixture.algorithm, None, target_cfg,
                                        fixture.expected_aux)
    return keep


# ---------------------------------------------------------------- report, check, main


def theirs_resolved(rec: dict) -> str | None:
    """The first input for which theirs hands SGLang a directory with a config.json (or raises)."""
    for label, inp in sorted(rec["inputs"].items(), key=lambda kv: kv[1]["synthetic"]):
        real = inp["theirs"]["real"]
        if real["error"] or real["draft_view"].get("config_json"):
            return label
    return None


def outcome_theirs(rec: dict, label: str | None) -> str:
    """One cell: what theirs does for this input, and what SGLang does with what it is handed."""
    if label is None:
        return "no input resolves"
    t = rec["inputs"][label]["theirs"]
    if t["real"]["error"]:
        return "raises " + t["real"]["error"].split(":")[0]
    keys = [s.split(":")[0] for s in t["real"]["sglang"]]
    wrote = len(t["real"]["files"]["changed"]) + len(t["real"]["files"]["added"])
    issues = ", ".join(k for k in keys if not k.startswith("note_")) or "loads"
    return (f"rewrites {wrote} file(s) in place; " if wrote else "") + "SGLang: " + issues


def outcome_ours(rec: dict, label: str) -> str:
    """One cell: ours' exit code, or what its export hands SGLang."""
    o = rec["inputs"][label]["ours"]
    if o["rc"]:
        return f"refused (exit {o['rc']})"
    export = rec.get("export") or {}
    keys = [s.split(":")[0] for s in export.get("sglang", []) if not s.startswith("note_")]
    return f"export (SGLang >= {export.get('min_sglang')}); SGLang: " + (", ".join(keys) or "loads")


def table(records: list[dict]) -> str:
    """A compact markdown table: a row per fixture; theirs on its documented input and on the one it
    resolves, ours on the path a user passes."""
    rows = ["| producer/fixture | manifest | theirs on its documented input | theirs on the input it resolves "
            "| ours (`draft.path`) |",
            "|---|---|---|---|---|"]
    for rec in records:
        if "inputs" not in rec:
            rows.append(f"| {rec['producer']}/{rec['fixture']} | - | {rec.get('error')} | - | - |")
            continue
        tp, op, best = rec["theirs_primary"], rec["ours_primary"], theirs_resolved(rec)
        best_cell = f"`{rec['inputs'][best]['rel']}`: {outcome_theirs(rec, best)}" if best else "none"
        rows.append(f"| {rec['producer']}/{rec['fixture']} | {rec['manifest_action']} | "
                    f"`{rec['inputs'][tp]['rel']}`: {outcome_theirs(rec, tp)} | {best_cell} | "
                    f"`{rec['inputs'][op]['rel']}`: {outcome_ours(rec, op)} |")
    return "\n".join(rows)


def acceptance(records: list[dict]) -> str:
    """Per input kind: how many fixtures each tool resolves to a directory SGLang can open."""
    lines = []
    for rec in records:
        cells = []
        for label, inp in rec.get("inputs", {}).items():
            view = inp["theirs"]["real"]["draft_view"]
            theirs = "E" if inp["theirs"]["real"]["error"] else ("ok" if view.get("config_json") else "-")
            ours = "ok" if inp["ours"]["rc"] == 0 else "refused"
            cells.append(f"{label}: theirs {theirs} / ours {ours}")
        lines.append(f"{rec['producer']}/{rec['fixture']}: " + "; ".join(cells))
    return "\n".join(lines)


def environment(python: str) -> dict:
    """Versions behind the results (compared by --check only as a warning)."""
    import importlib.metadata as md

    ours = subprocess.run([python, "-c", "import importlib.metadata as m, sys; print(m.version('automodel-spec'), "
                           "sys.version.split()[0])"], capture_output=True, text=True)
    return {"nemo_automodel": md.version("nemo_automodel"), "theirs_python": sys.version.split()[0],
            "ours": ours.stdout.strip()}


def collect(python: str) -> dict:
    """Every fixture through both tools; the fixtures must come out byte-identical."""
    before = tree_digest(FIXTURES)
    fixtures, missing = load_fixtures(FIXTURES)
    with tempfile.TemporaryDirectory(prefix="parity-") as tmp:
        paths = Paths(work=Path(tmp).resolve())
        write_targets(paths, sorted({f.producer for f in fixtures}))
        with ThreadPoolExecutor(max_workers=8) as pool:
            records = [run_fixture(f, paths, python, pool) for f in fixtures]
    changes = digest_changes(before, tree_digest(FIXTURES))
    if any(changes.values()):
        sys.exit(f"FIXTURES CHANGED under {FIXTURES}: {json.dumps(changes, indent=2)}")
    return {"generator": "scripts/analysis/parity_automodel.py", "environment": environment(python),
            "missing_manifests": missing, "fixtures": records}


def check(fresh: dict, recorded_path: Path) -> int:
    """0 when the fresh results equal the recorded ones (environment aside), else 1 with the diffs."""
    recorded = json.loads(recorded_path.read_text())
    if recorded.get("environment") != fresh.get("environment"):
        print(f"note: environment differs: {recorded.get('environment')} -> {fresh.get('environment')}")
    diffs = list(_diff(_comparable(recorded), _comparable(fresh), ""))
    for d in diffs[:60]:
        print(d)
    if diffs:
        print(f"{len(diffs)} difference(s) from {recorded_path}; re-run with --out to record them")
        return 1
    print(f"no change from {recorded_path}")
    return 0


def _comparable(result: dict) -> dict:
    """The result without its environment, fixtures keyed by name (so a diff names the fixture)."""
    out = {k: v for k, v in result.items() if k not in _VOLATILE}
    out["fixtures"] = {f"{r['producer']}/{r['fixture']}": r for r in result.get("fixtures", [])}
    return out


def _diff(a, b, where: str) -> Iterator[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            yield from _diff(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _diff(x, y, f"{where}[{i}]")
    elif a != b:
        yield f"{where}: {json.dumps(a)[:200]} -> {json.dumps(b)[:200]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--our-python", default="python", help="interpreter with automodel-spec installed")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "data" / "parity.json")
    parser.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = parser.parse_args(argv)
    python = shutil.which(args.our_python) or args.our_python
    result = collect(python)
    print(table(result["fixtures"]))
    print()
    print(acceptance(result["fixtures"]))
    for producer, why in result["missing_manifests"].items():
        print(f"no fixtures for {producer}: {why}")
    if args.check:
        return check(result, args.out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
