"""speculators' (vLLM's) EAGLE-3 format, read as the Llama draft config SGLang's EAGLE-3 class expects.

speculators nests the decoder layer's config under ``transformer_layer_config`` and keeps the
EAGLE-3 settings at the top with ``speculators_config``; SGLang loads no such config. The weights
already use the names SGLang reads (``layers.0.*``, ``fc``, ``norm``, ``lm_head``, ``d2t``, ``t2d``).
Two settings need care:

- aux layer ids: speculators' id ``i`` taps the *input* of target layer ``i``; SGLang's id ``j``
  taps the output of layer ``j`` (it captures the input of ``j + 1``). So ``j = i - 1``.
- ``norm_before_residual`` (speculators' training default) feeds the normed hidden state into the
  residual; no SGLang release has it and it cannot be folded into the weights: refused.
"""

from __future__ import annotations

from automodel_spec.export.draft_plan import Problems

_LAYER_ONLY = ("layer_types", "sliding_window", "use_sliding_window", "max_window_layers", "architectures")
_CARRIED_FLAGS = ("norm_output", "fc_norm", "norm_before_fc")


def is_speculators_config(config: dict) -> bool:
    """A config written by speculators (``speculators_config`` / ``transformer_layer_config``)."""
    return "speculators_config" in config or "transformer_layer_config" in config


def to_llama_draft_config(config: dict, where: str, notes: list[str]) -> dict:
    """The flat Llama EAGLE-3 draft config that ``config`` describes.

    Raises:
        CheckpointError: the draft uses something SGLang cannot serve as trained (every reason listed).
    """
    problems = Problems(where)
    kind = config.get("speculators_model_type") or (config.get("speculators_config") or {}).get("algorithm")
    layer = config.get("transformer_layer_config")
    if kind != "eagle3":
        problems.add(f"speculators draft of type {kind!r}: only eagle3 drafts have an SGLang EAGLE-3 "
                     "equivalent. Serve it with vLLM.")
    if not isinstance(layer, dict) or layer.get("model_type", "llama") != "llama":
        problems.add("transformer_layer_config is missing or not a llama layer: SGLang's LlamaForCausalLMEagle3 "
                     "builds a llama decoder layer.")
    if config.get("norm_before_residual"):
        problems.add(
            "norm_before_residual: true (speculators' training default): the draft adds the normed hidden "
            "state to the residual, which no SGLang release does; served, it would compute another function. "
            "Train with --no-norm-before-residual to serve with SGLang, or serve this draft with vLLM."
        )
    problems.raise_if_any()

    cfg = {k: v for k, v in layer.items() if k not in _LAYER_ONLY}
    cfg["architectures"] = list(config.get("architectures") or [])
    cfg["draft_vocab_size"] = config.get("draft_vocab_size")
    cfg["target_hidden_size"] = config.get("target_hidden_size") or layer.get("hidden_size")
    cfg["tie_word_embeddings"] = bool(config.get("tie_word_embeddings", False))
    for key in ("dtype", "torch_dtype"):
        if config.get(key) is not None:
            cfg[key] = config[key]
    for flag in _CARRIED_FLAGS:
        if config.get(flag):
            cfg[flag] = True
    notes.append("speculators (vLLM) EAGLE-3 format: transformer_layer_config and the EAGLE-3 keys written as "
                 "one flat Llama draft config")
    ids = config.get("eagle_aux_hidden_state_layer_ids")
    if ids:
        cfg["eagle_config"] = {"eagle_aux_hidden_state_layer_ids": _sglang_aux_ids(ids, where)}
        notes.append(f"aux layer ids {list(ids)} (speculators: inputs of those target layers) -> "
                     f"{cfg['eagle_config']['eagle_aux_hidden_state_layer_ids']} (SGLang: outputs of the layer before)")
    if layer.get("use_sliding_window") or "sliding_attention" in (layer.get("layer_types") or []):
        notes.append(
            f"WARNING: the draft was trained with a {layer.get('sliding_window')}-token sliding window; SGLang's "
            "draft attends to the whole context, so drafts differ past that length (SGLang's "
            "--speculative-draft-window-size, in sglang.extra_args, bounds it)"
        )
    return cfg


def _sglang_aux_ids(ids, where: str) -> list[int]:
    problems = Problems(where)
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        problems.add(f"eagle_aux_hidden_state_layer_ids={ids!r} is not a list of layer numbers.")
    elif any(i < 1 for i in ids):
        problems.add(f"eagle_aux_hidden_state_layer_ids={ids} taps the embedding output (id 0), which SGLang "
                     "cannot capture: its ids start at the output of layer 0.")
    problems.raise_if_any()
    return [i - 1 for i in ids]
