"""Every bad input a clear refusal: the recipes on damaged drafts, configs, paths and caches.

Each case builds one bad input under its own directory (``src/``), runs ``recipes/export.py`` or
``recipes/serve.py`` on it (``print_only=true`` wherever the case allows) with ``AUTOMODEL_SPEC_CACHE``,
``HOME``, ``TMPDIR`` and the working directory pointing into that directory, and checks:

- the exit code (1: bad input or refusal, 2: a missing optional dependency, 0: a warning only);
- a message naming the problem (one regex per case), and no Python traceback;
- nothing changed under the case's directory (the source checkpoint included, by sha256) except the
  cache and the Hydra output directory, and with ``print_only`` nothing at all.

A case runs in this process (``helpers.run_recipe``: Hydra's compose API, then the recipe's job through
``recipe_runtime.run_and_exit``, the code that turns every error into a message and an exit code) unless it
needs Hydra's launcher (a multirun: ``process=True``), which runs as a user runs it, a subprocess.
The real CLI's own handling (compose errors, ``--help``, output directories, signals) is tested in
``tests/cli``. Subprocess cases start together on a pool as soon as the module's first test asks for
a result. Drafts are built once per module and copied.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from helpers import run_recipe
from hydra.errors import HydraException

from automodel_spec.demo.synthetic import (
    LlamaShape,
    automodel_eagle3_config,
    automodel_eagle_config,
    eagle3_draft_tensors,
    eagle_draft_tensors,
    llama_config,
    write_automodel_run,
    write_sharded_safetensors,
)

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = {"export": REPO / "recipes" / "export.py", "serve": REPO / "recipes" / "serve.py"}
PRODUCERS = REPO / "tests" / "fixtures" / "producers"
CLI_TIMEOUT_S = 120

SHAPE = LlamaShape(hidden_size=64, num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=2,
                   intermediate_size=96, vocab_size=128, max_position_embeddings=256)
DRAFT_VOCAB = 32
SELECTED = torch.sort(torch.randperm(SHAPE.vocab_size, generator=torch.Generator().manual_seed(0))[:DRAFT_VOCAB]).values
HF_CONFIG = "config.json"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses Linux paths and limits")


# --- the drafts every case starts from --------------------------------------------------------------


def draft_tensors(*, with_d2t: bool = True) -> dict:
    """EAGLE-3 tensors under Automodel's names, with (or without) d2t/t2d for ``SELECTED``."""
    w = eagle3_draft_tensors(SHAPE, DRAFT_VOCAB, repeat=False, seed=0)
    del w["d2t"], w["t2d"]
    if with_d2t:
        w["d2t"] = SELECTED - torch.arange(DRAFT_VOCAB, dtype=torch.int64)
        t2d = torch.zeros(SHAPE.vocab_size, dtype=torch.bool)
        t2d[SELECTED] = True
        w["t2d"] = t2d
    return w


def write_hf(d: Path, config: dict, tensors: dict, shard_bytes: int = 4 << 30) -> Path:
    """A plain HF draft directory: config.json + model.safetensors (or shards + index)."""
    d.mkdir(parents=True, exist_ok=True)
    write_sharded_safetensors(d, tensors.items(), shard_bytes)
    (d / HF_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return d


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """Good drafts, built once: ``run`` and ``eagle1`` (Automodel runs), ``hf``, ``sharded``, ``nod2t``,
    ``legacy``, and a ``target`` (its config.json)."""
    root = tmp_path_factory.mktemp("base")
    config = automodel_eagle3_config(SHAPE, DRAFT_VOCAB)
    write_automodel_run(root / "run", config, draft_tensors(), selected_token_ids=SELECTED,
                        vocab_size=SHAPE.vocab_size)
    write_hf(root / "hf", config, draft_tensors())
    write_hf(root / "sharded", config, draft_tensors(), shard_bytes=64 << 10)
    write_hf(root / "nod2t", config, draft_tensors(with_d2t=False))
    write_automodel_run(root / "eagle1", automodel_eagle_config(SHAPE), eagle_draft_tensors(SHAPE, repeat=False),
                        selected_token_ids=SELECTED, vocab_size=SHAPE.vocab_size)
    (root / "legacy").mkdir()
    torch.save(draft_tensors(), root / "legacy" / "draft_model.pt")
    (root / "legacy" / HF_CONFIG).write_text(json.dumps(config))
    (root / "target").mkdir()
    (root / "target" / HF_CONFIG).write_text(json.dumps(llama_config(SHAPE, torch_dtype="bfloat16")))
    return root


@dataclass
class Workspace:
    """One case's directory: ``src/`` (the inputs), ``cache/``, ``cwd/``, ``home/``, ``tmp/``."""

    root: Path
    base: Path
    env: dict = field(default_factory=dict)

    @property
    def src(self) -> Path:
        return self.root / "src"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def cwd(self) -> Path:
        return self.root / "cwd"

    def copy(self, name: str, dest: str | None = None) -> Path:
        """A copy of one of the ``base`` drafts under ``src/``."""
        return Path(shutil.copytree(self.base / name, self.src / (dest or name), symlinks=True))

    def producer(self, rel: str) -> Path:
        """A copy of a producer fixture (``tests/fixtures/producers/<rel>``) under ``src/``."""
        return Path(shutil.copytree(PRODUCERS / rel, self.src / Path(rel).name, symlinks=True))

    def target(self) -> str:
        return f"target.path={self.copy('target')}"


def edit_json(path: Path, change: Callable[[dict], object]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def draft(path: Path, *extra: str) -> list[str]:
    return ["draft=automodel", f"draft.path={path}", *extra]


# --- the cases ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes:
        name: the test id.
        build: makes the input under the workspace; returns the CLI arguments.
        message: regex the output must match (the problem named).
        code: expected exit code.
        script: ``export`` or ``serve``.
        print_only: run with ``print_only=true`` (then nothing at all may be written).
        absent: regex the output must not match (wrong advice).
        skip: returns a reason to skip, or ``None``.
        writes: directories under ``cwd/`` the run may write besides the Hydra output directory.
        process: run as a subprocess (it needs Hydra's launcher: a multirun).
    """

    name: str
    build: Callable[[Workspace], list[str]]
    message: str
    code: int = 1
    script: str = "export"
    print_only: bool = True
    absent: str | None = None
    skip: Callable[[], str | None] | None = None
    writes: tuple[str, ...] = ()
    process: bool = False


def _config_case(name: str, change: Callable[[dict], object], message: str) -> Case:
    """A plain HF draft whose config.json is changed by ``change``."""

    def build(ws: Workspace) -> list[str]:
        d = ws.copy("hf")
        edit_json(d / HF_CONFIG, change)
        return draft(d)

    return Case(name, build, message)


def _pop(key: str) -> Callable[[dict], object]:
    return lambda c: c.pop(key)


def _set(key: str, value) -> Callable[[dict], object]:
    return lambda c: c.__setitem__(key, value)


def _write_config_text(text: str) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        d = ws.copy("hf")
        (d / HF_CONFIG).write_text(text)
        return draft(d)

    return build


def _tensor_case(name: str, change: Callable[[dict], object], message: str) -> Case:
    """A plain HF draft whose tensors are changed by ``change`` before they are written."""

    def build(ws: Workspace) -> list[str]:
        tensors = draft_tensors()
        change(tensors)
        return draft(write_hf(ws.src / "bad", automodel_eagle3_config(SHAPE, DRAFT_VOCAB), tensors))

    return Case(name, build, message)


def _poison(name: str, value: float) -> Callable[[dict], object]:
    def change(t: dict) -> None:
        t[name] = t[name].clone()
        t[name].view(-1)[3] = value

    return change


def _meta_case(name: str, ids, message: str) -> Case:
    """An Automodel run without d2t in the weights, so d2t is rebuilt from eagle_meta.pt's ``ids``."""

    def build(ws: Workspace) -> list[str]:
        run = ws.src / "run"
        ckpt = write_automodel_run(run, automodel_eagle3_config(SHAPE, DRAFT_VOCAB), draft_tensors(with_d2t=False))
        torch.save({"selected_token_ids": ids, "global_step": 100}, ckpt / "eagle_meta.pt")
        return draft(run)

    return Case(name, build, message)


def _serve_case(name: str, overrides: list[str], message: str, code: int = 1) -> Case:
    """``serve.py print_only=true`` on a good draft and target, with ``overrides``."""

    def build(ws: Workspace) -> list[str]:
        return [*draft(ws.copy("hf")), ws.target(), *overrides]

    return Case(name, build, message, code=code, script="serve")


def _index_case(name: str, index, message: str) -> Case:
    def build(ws: Workspace) -> list[str]:
        d = ws.copy("sharded")
        (d / "model.safetensors.index.json").write_text(index if isinstance(index, str) else json.dumps(index))
        return draft(d)

    return Case(name, build, message)


def _weights_bytes_case(name: str, damage: Callable[[bytes], bytes], message: str) -> Case:
    def build(ws: Workspace) -> list[str]:
        d = ws.copy("hf")
        f = d / "model.safetensors"
        f.write_bytes(damage(f.read_bytes()))
        return draft(d)

    return Case(name, build, message)


def _latest(ws: Workspace, make: Callable[[Path], None]) -> list[str]:
    run = ws.copy("run")
    (run / "LATEST").unlink()
    make(run)
    return draft(run)


def _symlink_loop(run: Path) -> None:
    os.symlink("LOOP", run / "LATEST")
    os.symlink("LATEST", run / "LOOP")


def _latest_outside(ws: Workspace) -> list[str]:
    other = ws.copy("run", "other_run")
    return _latest(ws, lambda run: os.symlink(f"../other_run/{next(other.glob('epoch_*')).name}", run / "LATEST"))


def _meta_two_dirs_above(ws: Workspace) -> list[str]:
    d = ws.copy("nod2t", "a/b/draft")
    torch.save({"selected_token_ids": SELECTED}, ws.src / "a" / "eagle_meta.pt")
    return draft(d)


def _legacy_truncated(ws: Workspace) -> list[str]:
    d = ws.copy("legacy")
    f = d / "draft_model.pt"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return ["draft=legacy", f"draft.path={d}"]


def _legacy_not_state_dict(ws: Workspace) -> list[str]:
    d = ws.copy("legacy")
    torch.save([torch.zeros(2)], d / "draft_model.pt")
    return ["draft=legacy", f"draft.path={d}"]


def _missing_shard(ws: Workspace) -> list[str]:
    d = ws.copy("sharded")
    shards = sorted(d.glob("model-*.safetensors"))
    shards[-1].unlink()
    return draft(d)


def _root_skip() -> str | None:
    return "runs as root, which reads a chmod 000 file (see the sysfs case)" if os.geteuid() == 0 else None


def _unreadable_config(ws: Workspace) -> list[str]:
    d = ws.copy("hf")
    (d / HF_CONFIG).chmod(0)
    return draft(d)


def _write_only_sysfs_file() -> Path | None:
    """A sysfs attribute that is write-only for everyone, root included (read: EACCES). Only read here."""
    for pattern in ("class/zram-control/hot_remove", "devices/system/memory/probe", "power/wakeup_count"):
        for p in Path("/sys").glob(pattern):
            if p.is_file() and not p.stat().st_mode & 0o444:
                return p
    return None


def _sysfs_skip() -> str | None:
    return None if _write_only_sysfs_file() else "no write-only sysfs file to stand in for an unreadable one"


def _unreadable_weights(ws: Workspace) -> list[str]:
    d = ws.copy("hf")
    (d / "model.safetensors").unlink()
    os.symlink(_write_only_sysfs_file(), d / "model.safetensors")
    return draft(d)


def _cache_is_file(ws: Workspace) -> list[str]:
    ws.cache.parent.mkdir(parents=True, exist_ok=True)
    ws.cache.write_text("not a directory\n")
    return draft(ws.copy("hf"))


def _read_only_dir() -> str | None:
    """An existing directory this process cannot create entries in (``/sys/kernel`` for root)."""
    return None if os.geteuid() != 0 or not os.access("/sys/kernel", os.W_OK) or _sysfs_refuses() else \
        "no read-only directory for root"


def _sysfs_refuses() -> bool:
    try:
        os.mkdir("/sys/kernel/automodel_spec_probe")
    except OSError:
        return True
    os.rmdir("/sys/kernel/automodel_spec_probe")
    return False


def _cache_read_only(ws: Workspace) -> list[str]:
    if os.geteuid() == 0:  # root ignores modes; sysfs refuses new entries even to root
        ws.env["AUTOMODEL_SPEC_CACHE"] = "/sys/kernel"
    else:
        ws.cache.mkdir(parents=True)
        ws.cache.chmod(0o555)
    return draft(ws.copy("hf"))


def _target_config(change: Callable[[dict], object]) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        t = ws.copy("target")
        edit_json(t / HF_CONFIG, change)
        return [*draft(ws.copy("hf")), f"target.path={t}"]

    return build


def _speculators_norm_before_residual(ws: Workspace) -> list[str]:
    d = ws.producer("speculators/train_dry_run_sglang_compatible")
    edit_json(d / HF_CONFIG, _set("norm_before_residual", True))
    return draft(d)


def _automodel_missing_shard(ws: Workspace) -> list[str]:
    run = ws.producer("automodel/eagle3_run_full")
    consolidated = next(run.glob("checkpoints/epoch_*/model/consolidated"))
    (consolidated / "model-00002-of-00006.safetensors").unlink()
    return draft(run)


def _specforge_truncated(ws: Workspace) -> list[str]:
    run = ws.producer("specforge/training_run")
    f = run / "tiny-eagle3-step4" / "training_state.pt"
    f.write_bytes(f.read_bytes()[:4096])
    cfg = ws.producer("specforge/inputs") / "draft_config.json"
    return draft(run / "tiny-eagle3-step4", f"draft.config={cfg}")


def _sglang_installed() -> str | None:
    return "SGLang is installed here" if importlib.util.find_spec("sglang") else None


def _bench(ws: Workspace) -> list[str]:
    return ["mode=bench", *draft(ws.copy("hf")), ws.target(), "bench.baseline=false"]


def _sweep(ws: Workspace) -> list[str]:
    return ["-m", "+sweep=grid", "bench.name=s", *draft(ws.copy("hf")), ws.target(), "bench.baseline=false",
            "spec.num_steps=1,2", "spec.topk=1"]


def _long_path(ws: Workspace) -> list[str]:
    return draft(ws.src / "/".join(["d" * 200] * 25))


def _long_name(ws: Workspace) -> list[str]:
    return draft(ws.src / ("n" * 300))


LONG = r"(too long|PATH_MAX|NAME_MAX)"

def _index_outside(ws: Workspace) -> list[str]:
    d = ws.copy("sharded")
    ws.copy("hf")
    index = d / "model.safetensors.index.json"
    edit_json(index, lambda doc: doc["weight_map"].__setitem__("model.fc.weight", "../hf/model.safetensors"))
    return draft(d)


def _latest_file_outside(ws: Workspace) -> list[str]:
    other = ws.copy("run", "other_run")
    name = next(other.glob("epoch_*")).name
    return _latest(ws, lambda run: (run / "LATEST").write_text(f"../other_run/{name}\n"))


def _all_incomplete(ws: Workspace) -> list[str]:
    run = ws.copy("run")
    for step in run.glob("epoch_*"):
        (step / ".incomplete").touch()
    (run / "LATEST").unlink()
    return draft(run)


def _in_checkpoint(name: str, data: bytes) -> Callable[[Workspace], list[str]]:
    """The Automodel run with one file of its checkpoint directory replaced by ``data``."""

    def build(ws: Workspace) -> list[str]:
        run = ws.copy("run")
        (next(run.glob("epoch_*")) / name).write_bytes(data)
        return draft(run)

    return build


def _eagle1_meta(ids) -> Callable[[Workspace], list[str]]:
    def build(ws: Workspace) -> list[str]:
        run = ws.copy("eagle1")
        torch.save({"selected_token_ids": ids}, next(run.glob("epoch_*")) / "eagle_meta.pt")
        return ["algorithm=EAGLE", *draft(run)]

    return build


def _speculators_heads_text(ws: Workspace) -> list[str]:
    d = ws.producer("speculators/train_dry_run_sglang_compatible")
    edit_json(d / HF_CONFIG, lambda c: c["transformer_layer_config"].__setitem__("num_attention_heads", "4"))
    return draft(d)


def _peagle(ws: Workspace) -> list[str]:
    return draft(ws.producer("automodel/peagle_run"))


CASES = [
    # the draft's config.json
    _config_case("config_without_hidden_size", _pop("hidden_size"), r"hidden_size.*(missing|not set|absent)"),
    _config_case("config_without_vocab_size", _pop("vocab_size"), r"vocab_size.*(missing|not set|absent)"),
    _config_case("config_hidden_size_text", _set("hidden_size", "sixty-four"), r"hidden_size='sixty-four'.*integer"),
    _config_case("config_vocab_size_fraction", _set("vocab_size", 128.5), r"vocab_size=128\.5.*integer"),
    _config_case("config_hidden_size_bool", _set("hidden_size", True), r"hidden_size=True.*integer"),
    _config_case("config_heads_zero", _set("num_attention_heads", 0), r"num_attention_heads=0"),
    _config_case("config_heads_negative", _set("num_attention_heads", -4), r"num_attention_heads=-4"),
    _config_case("config_kv_heads_zero", _set("num_key_value_heads", 0), r"num_key_value_heads=0"),
    _config_case("config_without_intermediate_size", _pop("intermediate_size"), r"intermediate_size"),
    _config_case("config_heads_do_not_divide_hidden", _set("num_attention_heads", 5), r"num_attention_heads=5"),
    _config_case("config_kv_heads_do_not_divide_heads", _set("num_key_value_heads", 3), r"num_key_value_heads=3"),
    _config_case("config_rope_theta_text", _set("rope_theta", "big"), r"rope"),
    Case("config_not_json", _write_config_text("{not json"), r"config\.json.*(not valid JSON|JSON)"),
    Case("config_json_array", _write_config_text("[1, 2]"), r"config\.json.*JSON object"),
    Case("config_empty", _write_config_text(""), r"config\.json.*(empty|JSON)"),
    # the weights
    _index_case("index_json_array", [], r"index\.json.*(JSON object|weight_map)"),
    _index_case("index_weight_map_text", {"weight_map": "model.safetensors"}, r"index\.json.*weight_map"),
    _index_case("index_not_json", "{", r"index\.json is not valid JSON"),
    Case("shard_missing", _missing_shard, r"names shard\(s\) that are not there"),
    _weights_bytes_case("safetensors_empty", lambda b: b"", r"model\.safetensors.*(damaged|empty)"),
    _weights_bytes_case("safetensors_truncated", lambda b: b[: len(b) // 2], r"model\.safetensors.*damaged"),
    _weights_bytes_case("safetensors_garbage_header", lambda b: b"\xff" * 16 + b[16:], r"model\.safetensors.*damaged"),
    _tensor_case("weights_nan", _poison("model.fc.weight", float("nan")), r"fc\.weight holds 1 NaN or infinite"),
    _tensor_case("weights_inf", _poison("model.norm.weight", float("inf")), r"norm\.weight holds 1 NaN or infinite"),
    _tensor_case("weights_integer", lambda t: t.__setitem__("model.fc.weight", t["model.fc.weight"].to(torch.int32)),
                 r"fc\.weight has dtype torch\.int32.*floating point"),
    _tensor_case("d2t_float", lambda t: t.__setitem__("d2t", t["d2t"].float()), r"d2t has dtype torch\.float32"),
    _meta_case("selected_ids_duplicate", torch.zeros(DRAFT_VOCAB, dtype=torch.int64), r"selected_token_ids repeats"),
    _meta_case("selected_ids_fractional", SELECTED.double() + 0.5, r"selected_token_ids is a 1-D torch\.float64"),
    _meta_case("selected_ids_out_of_range", SELECTED + 1000, r"selected_token_ids fall outside the vocab"),
    Case("meta_two_dirs_above_not_used", _meta_two_dirs_above, r"no d2t tensor and no eagle_meta\.pt",
         absent=r"rebuilt from"),
    Case("legacy_truncated", _legacy_truncated, r"draft_model\.pt.*damaged", absent=r"allow_unsafe_pickle"),
    Case("legacy_not_state_dict", _legacy_not_state_dict, r"draft_model\.pt is not a state dict"),
    Case("unreadable_config_chmod_000", _unreadable_config, r"config\.json.*(Permission denied|cannot read)",
         skip=_root_skip),
    Case("unreadable_weights_root_too", _unreadable_weights, r"model\.safetensors.*(Permission denied|cannot read)",
         skip=_sysfs_skip),
    # the run directory
    Case("latest_binary", lambda ws: _latest(ws, lambda r: (r / "LATEST").write_bytes(b"\xff\xfe\x00\x9c" * 8)),
         r"LATEST does not hold a checkpoint name"),
    Case("latest_symlink_loop", lambda ws: _latest(ws, _symlink_loop), r"LATEST.*(loop|cannot)"),
    Case("latest_outside_run_dir", _latest_outside, r"LATEST.*outside"),
    Case("latest_missing_target", lambda ws: _latest(ws, lambda r: os.symlink("epoch_9_step_9", r / "LATEST")),
         r"points at .*epoch_9_step_9, which does not exist"),
    # paths
    Case("path_longer_than_path_max", _long_path, LONG),
    Case("name_longer_than_name_max", _long_name, LONG),
    Case("draft_path_unknown_user", lambda ws: ["draft=automodel", 'draft.path="~nosuchuser/ckpt"'], r"~nosuchuser.*(no user|unknown user)"),
    Case("target_path_unknown_user", lambda ws: [*draft(ws.copy("hf")), 'target.path="~nosuchuser/model"'],
         r"~nosuchuser.*(no user|unknown user)", script="serve"),
    Case("cache_dir_unknown_user", lambda ws: [*draft(ws.copy("hf")), 'cache_dir="~nosuchuser/cache"'],
         r"~nosuchuser.*(no user|unknown user)"),
    Case("draft_path_missing", lambda ws: draft(ws.src / "nope"), r"draft\.path=.*nope does not exist"),
    # the cache
    Case("cache_dir_is_a_file", _cache_is_file, r"cache.*(not a directory|Not a directory)", print_only=False),
    Case("cache_dir_read_only", _cache_read_only, r"cannot write .*(cache|/sys/kernel)", print_only=False,
         skip=_read_only_dir),
    # the target
    Case("target_sizes_not_integer", _target_config(_set("hidden_size", "big")), r"hidden_size='big'.*integer"),
    Case("target_vocab_fraction", _target_config(_set("vocab_size", 1.5)), r"vocab_size=1\.5.*integer"),
    Case("target_layers_zero", _target_config(_set("num_hidden_layers", 0)), r"num_hidden_layers=0"),
    Case("target_hidden_mismatch", _target_config(_set("hidden_size", 96)), r"target has hidden_size=96"),
    Case("target_without_config", lambda ws: [*draft(ws.copy("hf")), f"target.path={ws.src}"],
         r"target\.path=.* has no config\.json"),
    # serving settings
    _serve_case("nnodes_zero", ["sglang.nnodes=0"], r"sglang\.nnodes=0 must be >= 1"),
    _serve_case("node_rank_not_below_nnodes", ["sglang.nnodes=2", "sglang.node_rank=2"],
                r"sglang\.node_rank=2 .*sglang\.nnodes=2"),
    _serve_case("node_rank_negative", ["sglang.node_rank=-1"], r"sglang\.node_rank=-1"),
    _serve_case("context_length_negative", ["sglang.context_length=-5"], r"sglang\.context_length=-5 must be >= 1"),
    _serve_case("cuda_graph_max_bs_negative", ["sglang.cuda_graph_max_bs=-1"], r"sglang\.cuda_graph_max_bs=-1"),
    _serve_case("max_running_requests_zero", ["sglang.max_running_requests=0"], r"sglang\.max_running_requests=0"),
    _serve_case("warmup_requests_negative", ["mode=bench", "bench.warmup_requests=-1"],
                r"bench\.warmup_requests=-1 must be >= 0"),
    _serve_case("request_rate_negative", ["mode=bench", "bench.request_rate=[2,-1]"],
                r"bench\.request_rate=\[2\.0, -1\.0\] needs one or more rates .*above 0"),
    _serve_case("phases_empty", ["mode=bench", "bench.phases=[]"], r"bench\.phases=\[\] has no phase.*c1,c8,c32,c1"),
    _serve_case("objective_goodput_without_goals", ["mode=bench", "bench.objective=goodput"],
                r"bench\.objective=goodput .* none is set: give one or more of bench\.slo\.ttft_s"),
    _serve_case("aux_ids_duplicate", ["draft.aux_layer_ids=[1,1,5]"], r"draft\.aux_layer_ids=\[1, 1, 5\].*repeat"),
    _serve_case("extra_args_port", ["sglang.extra_args=[--port,31000]"], r"--port.*sglang\.port"),
    _serve_case("extra_args_port_equals", ["sglang.extra_args=['--port=31000']"], r"--port.*sglang\.port"),
    _serve_case("extra_args_model_path", ["sglang.extra_args=[--model-path,/x]"], r"--model-path.*target\.path"),
    _serve_case("extra_args_algorithm", ["sglang.extra_args=[--speculative-algorithm,EAGLE]"],
                r"--speculative-algorithm.*algorithm="),
    _serve_case("extra_args_api_key", ["sglang.extra_args=[--api-key,k]"], r"--api-key.*sglang\.api_key"),
    _serve_case("spec_steps_zero", ["spec.num_steps=0", "spec.topk=1"], r"spec\.num_steps=0 must be >= 1"),
    _serve_case("port_out_of_range", ["sglang.port=70000"], r"sglang\.port=70000 is not a port"),
    _serve_case("host_all_interfaces_without_key", ["sglang.host=0.0.0.0"], r"WARNING: .*0\.0\.0\.0.*api_key",
                code=0),
    # drafts written by the producers' own code, damaged
    Case("speculators_norm_before_residual", _speculators_norm_before_residual, r"norm_before_residual"),
    Case("automodel_index_names_missing_shard", _automodel_missing_shard, r"model-00002-of-00006\.safetensors"),
    Case("specforge_training_state_truncated", _specforge_truncated, r"training_state\.pt.*damaged",
         absent=r"allow_unsafe_pickle"),
    Case("index_names_shard_outside_its_dir", _index_outside, r"names shard\(s\) outside its directory: \.\./hf"),
    Case("latest_file_names_outside_run_dir", _latest_file_outside, r"LATEST points at .*other_run.*outside the run"),
    Case("every_checkpoint_incomplete", _all_incomplete, r"every checkpoint in .* is marked \.incomplete"),
    Case("meta_file_garbage", _in_checkpoint("eagle_meta.pt", b"\x00garbage" * 10), r"eagle_meta\.pt"),
    Case("recipe_yaml_invalid", _in_checkpoint("config.yaml", b"model: [unclosed\n"), r"config\.yaml"),
    Case("eagle1_selected_ids_fractional", _eagle1_meta(SELECTED.double() + 0.5),
         r"selected_token_ids is a 1-D torch\.float64"),
    Case("eagle1_selected_ids_duplicate", _eagle1_meta(torch.zeros(DRAFT_VOCAB, dtype=torch.int64)),
         r"selected_token_ids repeats"),
    Case("export_dir_unknown_user", lambda ws: [*draft(ws.copy("hf")), 'draft.export_dir="~nosuchuser/x"'],
         r"draft\.export_dir=~nosuchuser/x: .*no user 'nosuchuser'"),
    Case("output_dir_unknown_user", lambda ws: [*draft(ws.copy("hf")), ws.target(), 'output_dir="~nosuchuser/o"'],
         r"output_dir=~nosuchuser/o: .*no user 'nosuchuser'", script="serve"),
    Case("bench_prompts_unknown_user", lambda ws: [*draft(ws.copy("hf")), ws.target(), "mode=bench",
                                                   'bench.prompts="~nosuchuser/p.jsonl"'],
         r"bench\.prompts=~nosuchuser/p\.jsonl: .*no user", script="serve"),
    _serve_case("aux_ids_beyond_the_target", ["draft.aux_layer_ids=[1,3,9]"], r"aux layer ids \[9\] do not exist"),
    Case("serve_own_draft_without_target", lambda ws: draft(ws.copy("hf")), r"target\.path is unset", script="serve"),
    Case("speculators_heads_text", _speculators_heads_text, r"num_attention_heads='4'.*integer"),
    Case("automodel_peagle_refused", _peagle, r"P-EAGLE"),
    # the same cause, the same exit code in every mode
    Case("bench_without_sglang", _bench, r"sglang is required", code=2, script="serve", print_only=False,
         skip=_sglang_installed),
    Case("sweep_every_point_without_sglang", _sweep, r"sglang is required", code=2, script="serve",
         print_only=False, skip=_sglang_installed, writes=("sweeps",), process=True),
]


# --- running and checking -------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> sha256 / symlink target / 'dir' / mode, for every entry under ``root``."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "->" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            elif not p.is_file():  # a fifo or socket: reading it would block
                out[rel] = f"special, mode {p.stat().st_mode:o}"
            else:
                try:
                    out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
                except OSError:
                    out[rel] = f"unreadable, mode {p.stat().st_mode:o}"
    return out


@dataclass
class Outcome:
    code: int
    output: str
    changed: list[str]
    seconds: float


# read once, at import: subprocess cases run in threads while an in-process case changes os.environ
BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOMODEL_SPEC_", "HYDRA_", "FAKE_SGLANG_"))}


def run_case(case: Case, root: Path, base: Path) -> Outcome:
    ws = Workspace(root, base)
    for d in (ws.src, ws.cwd, root / "home", root / "tmp"):
        d.mkdir(parents=True)
    args = [*(["print_only=true"] if case.print_only else []), *case.build(ws)]
    env = {**BASE_ENV, "AUTOMODEL_SPEC_CACHE": str(ws.cache), "HOME": str(root / "home"), "TMPDIR": str(root / "tmp"),
           "MPLCONFIGDIR": str(base / "matplotlib"), "PYTHONUNBUFFERED": "1", **ws.env}  # matplotlib's font cache
    before = snapshot(root)
    t0 = time.monotonic()
    if case.process:
        res = subprocess.run([sys.executable, str(SCRIPTS[case.script]), *args], cwd=ws.cwd, env=env,
                             stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
        code, output = res.returncode, res.stdout + res.stderr
    else:
        code, output = _in_process(case.script, args, env, ws.cwd)
    after = snapshot(root)
    allowed = () if case.print_only else ("cache", "cwd/outputs", "cwd/multirun", *(f"cwd/{w}" for w in case.writes))
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p)
                     and not any(p == a or p.startswith(a + "/") for a in allowed))
    return Outcome(code, output, changed, time.monotonic() - t0)


def _in_process(script: str, args: list[str], env: dict, cwd: Path) -> tuple[int, str]:
    """The recipe's job on the composed config, in this process with ``env`` and ``cwd``; its exit code
    and everything it printed or logged. A composition error ends like Hydra's CLI ends it: exit 1."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)  # the library's messages, as the console shows them
    library = logging.getLogger("automodel_spec")
    saved = (dict(os.environ), os.getcwd(), tempfile.tempdir, library.level)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    tempfile.tempdir = None  # taken from $TMPDIR again
    library.addHandler(handler)
    library.setLevel(logging.INFO)
    # serve.py asks Hydra for its output directory; here it is where Hydra would have put it
    output_dir = None if any(a.startswith("output_dir=") for a in args) else cwd / "outputs" / "run"
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = run_recipe(script, *args, output_dir=output_dir)
    except HydraException as exc:
        code = 1
        out.write(f"{exc}\n")
    finally:
        library.removeHandler(handler)
        os.environ.clear()
        os.environ.update(saved[0])
        os.chdir(saved[1])
        tempfile.tempdir = saved[2]
        library.setLevel(saved[3])
    return code, out.getvalue()


def _skip_reason(case: Case) -> str | None:
    return case.skip() if case.skip else None


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory, base) -> dict[str, Callable[[], Outcome]]:
    """Each selected case's outcome, on demand: subprocess cases started at once on a pool as wide as the
    machine, in-process ones run when their test asks (in this thread: they change the cwd and env)."""
    selected = [item.callspec.params["case"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec") and "case" in item.callspec.params]
    root = tmp_path_factory.mktemp("cases")
    pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2))
    runs: dict[str, Callable[[], Outcome]] = {}
    for c in selected:
        if not _skip_reason(c):
            runs[c.name] = (pool.submit(run_case, c, root / c.name, base).result if c.process
                            else functools.partial(run_case, c, root / c.name, base))
    yield runs
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in CASES])
def test_bad_input_is_refused_clearly(case: Case, outcomes: dict[str, Callable[[], Outcome]]) -> None:
    reason = _skip_reason(case)
    if reason:
        pytest.skip(reason)
    out = outcomes[case.name]()
    print(f"[bad-input] {case.name}: exit {out.code} in {out.seconds:.1f}s"
          + (" (traceback)" if "Traceback" in out.output else ""))
    assert out.code == case.code, f"exit {out.code}, expected {case.code}:\n{out.output}"
    assert "Traceback" not in out.output, out.output
    assert re.search(case.message, out.output, re.S), f"no match for {case.message!r}:\n{out.output}"
    if case.absent:
        assert not re.search(case.absent, out.output, re.S), f"wrong advice {case.absent!r}:\n{out.output}"
    assert out.changed == [], f"written or changed outside the cache and output dirs: {out.changed[:10]}"


def test_the_table_holds_at_least_45_distinct_cases() -> None:
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))
    assert len(names) >= 45


# A planted bug, through the real recipe: the library's prepare_run raises an unexpected exception.
_BUG_WRAPPER = """
import runpy, sys
sys.argv = sys.argv[1:]
import automodel_spec.prepare

def planted_bug(*args, **kwargs):
    raise ZeroDivisionError("a planted bug")

automodel_spec.prepare.prepare_run = planted_bug
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_bug_shows_its_traceback_after_a_line_saying_it_is_one(tmp_path: Path) -> None:
    """Never a bug behind a generic message: the traceback is shown, after a line asking for a report."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOMODEL_SPEC_", "HYDRA_"))}
    res = subprocess.run([sys.executable, "-c", _BUG_WRAPPER, str(SCRIPTS["export"]), "print_only=true"],
                         cwd=tmp_path, env={**env, "AUTOMODEL_SPEC_CACHE": str(tmp_path / "cache")},
                         capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    bug_line = out.find("this is a bug in automodel-spec")
    assert 0 <= bug_line < out.find("Traceback (most recent call last)"), out
    assert "ZeroDivisionError: a planted bug" in out, out
