"""Shared fixtures for the unit suite: tiny EAGLE drafts written to disk in the real layouts.

Every fixture writes real files (safetensors, ``torch.save`` files, ``config.json``, ``LATEST``
symlinks) under ``tmp_path`` with tiny random weights, using ``automodel_spec.demo.synthetic``. The shape
is smaller than ``synthetic.TINY`` so the whole suite runs in seconds on two CPU cores, but it keeps
what the checks depend on: grouped-query attention (kv heads != heads), an intermediate size that
differs from the hidden size (so a transposed MLP weight has the wrong shape), a target with 8
layers, and a draft vocabulary smaller than the target's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from automodel_spec.demo.synthetic import (
    LlamaShape,
    automodel_eagle3_config,
    automodel_eagle_config,
    eagle3_draft_tensors,
    eagle_draft_tensors,
    write_automodel_run,
    write_sharded_safetensors,
)
from automodel_spec.draft.draft_sources import read_draft_sources
from automodel_spec.draft.resolve import resolve_draft
from automodel_spec.export.draft_plan import DraftPlan
from automodel_spec.export.eagle3_layout import ARCHITECTURE as EAGLE3_ARCH
from automodel_spec.export.eagle_layout import ARCHITECTURE as EAGLE_ARCH
from automodel_spec.export.preflight import plan_draft

SHAPE = LlamaShape(hidden_size=64, num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=2,
                   intermediate_size=96, vocab_size=128, max_position_embeddings=256)
DRAFT_VOCAB = 32
# Hot tokens that are not simply 0..DRAFT_VOCAB-1, so d2t (selected - position) is not all zeros.
SELECTED = torch.sort(torch.randperm(SHAPE.vocab_size, generator=torch.Generator().manual_seed(0))[:DRAFT_VOCAB]).values


def selected_ids() -> torch.Tensor:
    return SELECTED.clone()


def eagle3_tensors(num_aux: int = 3, seed: int = 0, selected: torch.Tensor | None = SELECTED) -> dict:
    """EAGLE-3 draft tensors under Automodel's names, with d2t/t2d matching ``selected``."""
    w = eagle3_draft_tensors(SHAPE, DRAFT_VOCAB, repeat=False, seed=seed, num_aux=num_aux)
    if selected is not None:
        w["d2t"] = selected - torch.arange(DRAFT_VOCAB, dtype=torch.int64)
        t2d = torch.zeros(SHAPE.vocab_size, dtype=torch.bool)
        t2d[selected] = True
        w["t2d"] = t2d
    return w


def eagle3_config() -> dict:
    """The draft config.json exactly as Automodel writes it (num_hidden_layers = the target's 8)."""
    return automodel_eagle3_config(SHAPE, DRAFT_VOCAB)


def eagle_tensors(seed: int = 0) -> dict:
    return eagle_draft_tensors(SHAPE, seed=seed, repeat=False)


def eagle_config() -> dict:
    return automodel_eagle_config(SHAPE)


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 (files) / '->target' (symlinks) / 'dir', for every entry under root."""
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "->" + str(p.readlink())
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def make_run(tmp_path: Path) -> Callable[..., Path]:
    """Factory: write an Automodel EAGLE run and return its ``epoch_E_step_S`` directory.

    Defaults give a valid EAGLE-3 run under ``tmp_path/run`` with hot-token metadata.
    """

    def make(run_dir: Path | None = None, *, config: dict | None = None, tensors: dict | None = None,
             selected: torch.Tensor | None = SELECTED, step: int = 100, epoch: int = 0,
             recipe: dict | None = None, consolidated: bool = True, meta_name: str = "eagle_meta.pt") -> Path:
        return write_automodel_run(
            run_dir or tmp_path / "run",
            config if config is not None else eagle3_config(),
            tensors if tensors is not None else eagle3_tensors(),
            step=step, epoch=epoch, selected_token_ids=selected, vocab_size=SHAPE.vocab_size,
            recipe=recipe, consolidated=consolidated, meta_name=meta_name,
        )

    return make


@pytest.fixture
def eagle3_ckpt(make_run) -> Path:
    """A valid EAGLE-3 Automodel checkpoint directory (``run/epoch_0_step_100``)."""
    return make_run()


@pytest.fixture
def eagle_ckpt(make_run, tmp_path: Path) -> Path:
    """A valid EAGLE-1 Automodel checkpoint directory with hot-token metadata."""
    return make_run(tmp_path / "eagle_run", config=eagle_config(), tensors=eagle_tensors())


def plan_from_disk(path: Path | str, architecture: str = EAGLE3_ARCH,
                   aux_layer_ids: list[int] | None = None) -> DraftPlan:
    """Resolve, load and check a draft on disk the way the exporter does."""
    resolved = resolve_draft(str(path))
    return plan_draft(resolved, architecture, read_draft_sources(resolved), aux_layer_ids=aux_layer_ids)


@pytest.fixture
def plan3(make_run, tmp_path: Path) -> Callable[..., DraftPlan]:
    """Factory: write an EAGLE-3 run from (modified) config/tensors, then plan it from disk."""
    counter = iter(range(10_000))

    def plan(*, config: dict | None = None, tensors: dict | None = None, selected=SELECTED,
             aux_layer_ids: list[int] | None = None, recipe: dict | None = None, drop_meta: bool = False):
        ckpt = make_run(tmp_path / f"p3_{next(counter)}", config=config, tensors=tensors, selected=selected,
                        recipe=recipe)
        if drop_meta:
            (ckpt / "eagle_meta.pt").unlink()
        return plan_from_disk(ckpt, EAGLE3_ARCH, aux_layer_ids)

    return plan


@pytest.fixture
def plan1(make_run, tmp_path: Path) -> Callable[..., DraftPlan]:
    """Factory: write an EAGLE-1 run from (modified) config/tensors, then plan it from disk."""
    counter = iter(range(10_000))

    def plan(*, config: dict | None = None, tensors: dict | None = None, selected=None):
        ckpt = make_run(tmp_path / f"p1_{next(counter)}", config=config if config is not None else eagle_config(),
                        tensors=tensors if tensors is not None else eagle_tensors(), selected=selected)
        return plan_from_disk(ckpt, EAGLE_ARCH)

    return plan


def write_hf_dir(d: Path, config: dict, tensors: dict, shard_bytes: int = 4 << 30) -> Path:
    """A plain HF directory: config.json + model.safetensors (or shards + index)."""
    d.mkdir(parents=True, exist_ok=True)
    write_sharded_safetensors(d, tensors.items(), shard_bytes)
    (d / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return d


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    """The builders and constants above, for test modules (conftest is not imported by name)."""
    return SimpleNamespace(
        SHAPE=SHAPE, DRAFT_VOCAB=DRAFT_VOCAB, EAGLE3_ARCH=EAGLE3_ARCH, EAGLE_ARCH=EAGLE_ARCH,
        selected_ids=selected_ids, eagle3_tensors=eagle3_tensors, eagle3_config=eagle3_config,
        eagle_tensors=eagle_tensors, eagle_config=eagle_config, tree_digest=tree_digest,
        plan_from_disk=plan_from_disk, write_hf_dir=write_hf_dir,
    )
