"""Preflight: plan a draft's servable form and check it, before SGLang sees it (no file is read here).

``plan_draft`` dispatches to the layout of the algorithm, which refuses what SGLang's loader would
skip, leave random or mis-shape; drafts SGLang cannot serve at all (P-EAGLE) are refused first.
``check_against_target`` says where the planned draft and the target disagree.
"""

from __future__ import annotations

from pathlib import Path

from automodel_spec.draft.draft_sources import DraftSources
from automodel_spec.draft.resolve import ResolvedDraft
from automodel_spec.errors import CheckpointError
from automodel_spec.export.draft_plan import DraftPlan, Problems, check_draft_config
from automodel_spec.export.eagle3_layout import ARCHITECTURE as EAGLE3_ARCH
from automodel_spec.export.eagle3_layout import plan_eagle3
from automodel_spec.export.eagle_layout import ARCHITECTURE as EAGLE_ARCH
from automodel_spec.export.eagle_layout import plan_eagle
from automodel_spec.export.rope import read_rope
from automodel_spec.export.speculators_format import is_speculators_config, to_llama_draft_config


def check_servable_at_all(config: dict, where: Path) -> None:
    """Refuse drafts that no SGLang EAGLE path serves (P-EAGLE's parallel drafting)."""
    if config.get("parallel_drafting"):
        raise CheckpointError(
            f"{where} is a P-EAGLE draft (parallel_drafting: true, mask_token_id/num_depths): SGLang's "
            "EAGLE/EAGLE3 workers draft one token per step and would serve it wrongly. Serve it with an "
            "engine that supports parallel drafting (vLLM's P-EAGLE), or train with parallel_drafting=false."
        )


def plan_draft(resolved: ResolvedDraft, architecture: str, sources: DraftSources, *,
               aux_layer_ids: list[int] | None, dtype: tuple[str, str] | None = None) -> DraftPlan:
    """Check a local draft for ``architecture`` against SGLang's loader and build its servable form.

    Args:
        resolved: where the draft is (for messages and notes).
        architecture: the SGLang class to plan for (from the algorithm).
        sources: what the draft holds (``draft_sources.read_draft_sources``); nothing is read here.
        aux_layer_ids: ``draft.aux_layer_ids``; ``None`` takes the recipe's, else the config's.
        dtype: ``(dtype, why)``: the dtype the target is served in (see ``serving_dtype``).

    Raises:
        CheckpointError: the draft cannot be served as trained; the message lists every reason.
    """
    config = sources.config
    where = str(resolved.model_dir)
    check_servable_at_all(config, resolved.model_dir)
    format_notes: list[str] = []
    if is_speculators_config(config):
        if architecture != EAGLE3_ARCH:
            raise CheckpointError(f"{where} is a speculators EAGLE-3 draft; serve it with algorithm=EAGLE3.")
        config = to_llama_draft_config(config, where, format_notes)
    check_draft_config(config, resolved.config_file)
    plan = _plan_for(resolved, architecture, config, sources, aux_layer_ids, dtype)
    plan.notes[:0] = format_notes
    return plan


def _plan_for(resolved, architecture, config, sources: DraftSources, aux_layer_ids, dtype) -> DraftPlan:
    where = str(resolved.model_dir)
    tensors, meta = sources.tensors, sources.meta
    if architecture == EAGLE3_ARCH:
        source = "draft.aux_layer_ids"
        if aux_layer_ids is None:
            aux_layer_ids = sources.recipe_aux_layer_ids
            source = f"{resolved.checkpoint_dir}/config.yaml"
        return plan_eagle3(config, tensors, meta, where=where, aux_layer_ids=aux_layer_ids, aux_source=source,
                           dtype=dtype)
    if architecture == EAGLE_ARCH:
        if aux_layer_ids is not None:
            raise CheckpointError("draft.aux_layer_ids is for EAGLE-3 drafts; EAGLE-1/2 reads one hidden state.")
        return plan_eagle(config, tensors, meta, where=where, dtype=dtype)
    raise CheckpointError(
        f"no preflight for architecture {architecture}: this project prepares {EAGLE3_ARCH} and {EAGLE_ARCH} "
        "drafts. Serve other drafts with a hub id or an already-servable directory."
    )


def check_against_target(draft_config: dict, target_config: dict, where: str) -> list[str]:
    """Say exactly where a servable draft config and the target disagree.

    Returns:
        warnings: differences that serve as trained but deserve a look (the rope).

    Raises:
        CheckpointError: listing each mismatch that cannot serve.
    """
    problems = Problems(where)
    t_hidden = target_config.get("hidden_size")
    hidden = int(draft_config["hidden_size"])
    want = int(draft_config.get("target_hidden_size") or hidden)
    if t_hidden is not None and int(t_hidden) != want:
        problems.add(f"the draft reads target hidden states of size {want}, the target has hidden_size={t_hidden}.")
    if t_hidden is not None and int(t_hidden) != hidden:
        problems.add(
            f"draft hidden_size={hidden} differs from the target's {t_hidden}; SGLang gives the draft the "
            "target's embedding, so they must be equal."
        )
    t_vocab = target_config.get("vocab_size")
    if t_vocab is not None and int(t_vocab) != int(draft_config["vocab_size"]):
        problems.add(f"draft vocab_size={draft_config['vocab_size']} but the target's vocab_size={t_vocab}.")
    n = target_config.get("num_hidden_layers")
    ids = (draft_config.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids")
    if n is not None and ids:
        too_deep = [i for i in ids if i > int(n) - 2]
        if too_deep:
            problems.add(
                f"aux layer ids {too_deep} do not exist for a {n}-layer target: SGLang captures the input of "
                f"layer id+1, so ids must be <= {int(n) - 2}."
            )
    problems.raise_if_any()
    return _rope_warnings(draft_config, target_config)


def _rope_warnings(draft_config: dict, target_config: dict) -> list[str]:
    """A draft copies its rope from the target's config; a different one is served as the draft says."""
    try:
        draft, _ = read_rope(draft_config)
        target, _ = read_rope(target_config)
    except (TypeError, ValueError):
        return []  # the draft's own rope was checked by its plan; an odd target config is SGLang's to refuse
    if draft == target:
        return []
    return [f"WARNING: the draft's rope ({draft.describe()}) differs from the target's ({target.describe()}). "
            "It is served as the draft's config.json says, which is right only if the draft was trained so; "
            "a config copied from another model, or a default rope_theta, would lower acceptance."]
