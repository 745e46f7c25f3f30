"""The accept length a draft reaches when it is served as trained, computed without SGLang.

Given what SGLang is given (the target's HF directory and the exported draft directory), this module
runs the target through ``transformers`` and the draft as SGLang 0.5.17's loader builds it, and
decodes the benchmark prompts with SGLang's draft tree (a chain at ``topk=1``) and verify rule at the
requests' temperature (``tree_reference``). The result is the accept length SGLang should report for
the same prompts and setting (at temperature > 0, where one served run should lie); a served accept length well below it means the server does not run the draft that was
exported (``docs/benchmarks.md``, "Reference accept length").

What is modelled, read in SGLang 0.5.17's source:

* EAGLE-3 (``models/llama_eagle3.py``): the target's embedding replaces the draft's (unless
  ``target_hidden_size`` differs); the captured target features are the *inputs* of the target
  layers ``[2, L//2, L-3]`` by default, or of ``eagle_config.eagle_aux_hidden_state_layer_ids``
  plus one (``models/llama.py`` ``set_eagle3_layers_to_capture``); ``input_norm`` (``norm_before_fc``)
  and ``fc_norm`` (per feature) before ``fc``; layer 0 attends over
  ``input_layernorm(embeds) ++ hidden_norm(hidden)`` with ``hidden`` as its residual; every further
  layer of ``num_hidden_layers`` is a plain layer (fused ``hidden_norm``); the final norm feeds the
  lm_head over the draft vocabulary, and the pre-norm hidden (the normed one with ``norm_output``) is
  fed back at the next draft step; draft ids become target ids through ``d2t`` (``d2t + arange``).
  With ``draft_vocab_size`` null the target's lm_head is used.
* EAGLE-1/2 (``models/llama_eagle.py``): ``fc`` (with bias) over ``embeds ++ the target's final
  normed hidden``, layer 0 without its input norm, no final norm, and the target's embedding and
  lm_head (SGLang shares both).
* The loader's name rules: ``midlayer`` / ``aux_norm_*`` legacy names, with or without ``model.``;
  ``t2d`` ignored; any other name it does not know is skipped. A weight SGLang leaves unloaded stays
  as allocated there (random, in effect): the reference fills it with random values (norm weights
  with ones, as SGLang initialises them) and lists it in ``ServedDraft.problems``.
* The schedule (``speculative/eagle_worker_v2.py``): draft position ``j`` takes token ``j + 1`` and
  the target's features at ``j``; the first draft token comes from the draft's extend pass, then
  ``num_steps - 1`` decode steps; the target verifies ``[last token, drafts...]`` greedily and keeps the
  longest matching prefix plus its own next token. The draft's cache of committed positions is always
  computed from the target's features.

The decoding itself is ``tree_reference``'s, with SGLang's tree and verify rules (``spec_tree``): a
chain is a tree of ``topk=1``. Exact for chains and trees at temperature 0, up to floating-point
differences between these kernels and SGLang's; an interval at temperature > 0. A tree without its
``num_draft_tokens`` is computed as its chain and called a bound (a lower bound only where the tree
holds the chain's path, which a small tree need not). ``ReferenceResult.kind`` says which:
``exact``, ``interval`` or ``bound``.

It decodes one sequence at a time (minutes for a large target, or on a CPU), so it shows the tokens
decoded so far on stderr (``progress``; with ``workers``, the prompts done).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from automodel_spec.bench.client import progress_bar
from automodel_spec.errors import (
    TRANSFORMERS_INSTALL_HINT,
    CheckpointError,
    ConfigError,
    MissingDependencyError,
    SpecError,
)
from automodel_spec.export.draft_plan import attention_dims, decoder_layer_shapes
from automodel_spec.export.eagle3_layout import ARCHITECTURE as EAGLE3_ARCH
from automodel_spec.export.eagle3_layout import LEGACY_NAMES, default_aux_layer_ids
from automodel_spec.export.eagle_layout import ARCHITECTURE as EAGLE_ARCH
from automodel_spec.io.path_lookup import directory_problem
from automodel_spec.io.torch_import import import_torch

log = logging.getLogger(__name__)

TOLERANCE = 0.05  # served within 5% of the reference: served as trained


# --- the draft as SGLang's loader builds it -----------------------------------------------------------


@dataclass
class ServedDraft:
    """A draft's weights as SGLang would hold them after loading the export.

    Attributes:
        algorithm: ``EAGLE3`` or ``EAGLE`` (from the architecture SGLang dispatches on).
        config: the draft's ``config.json``.
        params: SGLang's parameter name (unfused: ``q_proj``, not ``qkv_proj``) -> tensor.
        hot_token_id: draft id -> target id (``d2t + arange``; EAGLE-1/2: the export's ``token_map.pt``,
            the target lm_head's rows SGLang keeps); ``None`` when SGLang has none.
        aux_layers: the target layers whose inputs are captured (EAGLE-3), after SGLang's ``+1``.
        skipped: tensor names in the export that SGLang's loader skips without a word.
        missing: parameters nothing in the export loads (random in SGLang; random here too).
        problems: why what SGLang serves differs from the exported weights (empty: none known).
    """

    algorithm: str
    config: dict
    params: dict
    hot_token_id: object | None
    aux_layers: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def num_layers(self) -> int:
        return int(self.config.get("num_hidden_layers") or 1)


def _layer_shapes(cfg: dict, prefix: str, attn_in: int, *, input_norm: bool) -> dict[str, tuple]:
    """A Llama layer's parameters as the export plans them (``draft_plan.decoder_layer_shapes``), and the
    attention biases SGLang allocates when the config asks for them (the export never writes any)."""
    h = int(cfg["hidden_size"])
    shapes = decoder_layer_shapes(prefix, cfg, attn_in, input_norm)
    if cfg.get("attention_bias"):
        for p in ("q", "k", "v"):
            shapes[prefix + f"self_attn.{p}_proj.bias"] = (shapes[prefix + f"self_attn.{p}_proj.weight"][0],)
        shapes[prefix + "self_attn.o_proj.bias"] = (h,)
    return shapes


def eagle3_param_shapes(cfg: dict) -> dict[str, tuple]:
    """Every parameter ``LlamaForCausalLMEagle3`` allocates for this config, with its shape."""
    h = int(cfg["hidden_size"])
    vocab = int(cfg["vocab_size"])
    h_in = int(cfg.get("target_hidden_size") or h)
    n_aux = num_aux_hidden_states(cfg)
    eagle = cfg.get("eagle_config") or {}
    shapes = {"model.embed_tokens.weight": (vocab, h), "model.fc.weight": (h, h_in * n_aux),
              "model.norm.weight": (h,)}
    if cfg.get("bias"):
        shapes["model.fc.bias"] = (h,)
    if eagle.get("norm_before_fc", cfg.get("norm_before_fc", False)):
        shapes["model.input_norm.weight"] = (h_in * n_aux,)
    if cfg.get("fc_norm") or cfg.get("use_aux_norm"):
        shapes.update({f"model.fc_norm.{k}.weight": (h_in,) for k in range(n_aux)})
    for i in range(int(cfg.get("num_hidden_layers") or 1)):
        p = f"model.layers.{i}."
        shapes.update(_layer_shapes(cfg, p, 2 * h if i == 0 else h, input_norm=True))
        shapes[p + "hidden_norm.weight"] = (h,)
    if not cfg.get("tie_word_embeddings"):
        shapes["lm_head.weight"] = (int(cfg.get("draft_vocab_size") or vocab), h)
    return shapes


def eagle_param_shapes(cfg: dict) -> dict[str, tuple]:
    """Every parameter ``LlamaForCausalLMEagle`` loads for this config (its lm_head is the target's)."""
    h = int(cfg["hidden_size"])
    shapes = {"model.embed_tokens.weight": (int(cfg["vocab_size"]), h), "model.fc.weight": (h, 2 * h),
              "model.fc.bias": (h,)}
    for i in range(int(cfg.get("num_hidden_layers") or 1)):
        shapes.update(_layer_shapes(cfg, f"model.layers.{i}.", h, input_norm=i > 0))
    return shapes


def num_aux_hidden_states(cfg: dict) -> int:
    """SGLang's count of captured features: ``num_aux_hidden_states``, else the ids' count, else 3."""
    if cfg.get("num_aux_hidden_states") is not None:
        return int(cfg["num_aux_hidden_states"])
    ids = (cfg.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids")
    return len(ids) if ids else 3


def capture_layers(draft_cfg: dict, target_layers: int) -> list[int]:
    """The target layers whose inputs SGLang captures for an EAGLE-3 draft (``+1`` on explicit ids)."""
    ids = (draft_cfg.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids")
    if ids is None:  # SGLang's default is Automodel's, numbered as explicit ids are
        ids = default_aux_layer_ids(target_layers)
    return [int(i) + 1 for i in ids]


def _canonical_eagle3(name: str, shapes: dict) -> str | None:
    for legacy, new in LEGACY_NAMES.items():
        if legacy in name:
            name = name.replace(legacy, new)
    if name in shapes:
        return name
    return f"model.{name}" if f"model.{name}" in shapes else None


def _canonical_eagle(name: str, shapes: dict) -> str | None:
    if "lm_head" in name:  # never loaded: SGLang gives the draft the target's lm_head
        return None
    name = "model." + name
    return name if name in shapes else None


def read_served_draft(draft_dir: Path, target_config: dict) -> ServedDraft:
    """The export's weights as SGLang 0.5.17's loader would hold them.

    Raises:
        CheckpointError: the directory is not a draft SGLang would load as an EAGLE draft, or a tensor
            has a shape SGLang's loader refuses.
    """
    from automodel_spec.draft.resolve import weight_files
    from automodel_spec.draft.weights import load_safetensors
    from automodel_spec.export.exporter import TOKEN_MAP
    from automodel_spec.io.json_file import read_json

    draft_dir = Path(draft_dir).expanduser()
    cfg_path = draft_dir / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path}: cannot read the draft's config: no such file. Give the exported draft "
                              "directory (the one --speculative-draft-model-path is given).")
    cfg = read_json(cfg_path)  # bounded; a damaged file is a CheckpointError naming it
    archs = cfg.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs else None
    if arch not in (EAGLE3_ARCH, EAGLE_ARCH):
        raise CheckpointError(
            f"{cfg_path}: architectures={cfg.get('architectures')} is not {EAGLE3_ARCH} or {EAGLE_ARCH}, the "
            "classes SGLang serves EAGLE drafts with: SGLang would refuse it or load it as another model. "
            "Export the draft with recipes/export.py.")
    eagle3 = arch == EAGLE3_ARCH
    try:
        shapes = eagle3_param_shapes(cfg) if eagle3 else eagle_param_shapes(cfg)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise CheckpointError(f"{cfg_path}: not a usable {arch} config ({type(exc).__name__}: {exc}); SGLang "
                              "reads hidden_size, num_attention_heads, intermediate_size, vocab_size and "
                              "num_hidden_layers as integers.") from exc
    canonical = _canonical_eagle3 if eagle3 else _canonical_eagle
    tensors = load_safetensors(weight_files(draft_dir))  # an export: not a checkpoint to resolve
    torch = import_torch()
    params, skipped, hot = {}, [], None
    for name, t in tensors.items():
        if eagle3 and "d2t" in name:
            hot = t.long() + torch.arange(t.shape[0])
            continue
        if eagle3 and "t2d" in name:
            continue
        key = canonical(name, shapes)
        if key is None:
            skipped.append(name)
            continue
        if tuple(t.shape) != shapes[key]:
            raise CheckpointError(f"{draft_dir}: {name} has shape {tuple(t.shape)}; SGLang's {key} is "
                                  f"{shapes[key]} for this config.json: its loader would refuse the draft.")
        params[key] = t
    if not eagle3 and (draft_dir / TOKEN_MAP).is_file():  # --speculative-token-map: the lm_head's rows
        try:
            hot = torch.as_tensor(torch.load(draft_dir / TOKEN_MAP, map_location="cpu", weights_only=True),
                                  dtype=torch.int64)
        except Exception as exc:  # torch raises several types for a damaged file
            raise CheckpointError(f"{draft_dir / TOKEN_MAP}: cannot read the token map: {exc}") from exc
    served = ServedDraft(algorithm="EAGLE3" if eagle3 else "EAGLE", config=cfg, params=params,
                         hot_token_id=hot, skipped=sorted(skipped))
    if eagle3:
        _settle_eagle3(served, shapes, target_config)
    h = int(cfg["hidden_size"])
    shared_embed = not eagle3 or int(cfg.get("target_hidden_size") or h) == h  # SGLang's set_embed applies
    served.missing = sorted(k for k in shapes if k not in params and not (shared_embed and "embed_tokens" in k))
    if served.missing:
        served.problems.append(f"{len(served.missing)} weight(s) SGLang allocates that nothing in the export "
                               f"loads (random when served): {_short(served.missing)}")
    if skipped:
        served.problems.append(f"{len(skipped)} tensor(s) SGLang's loader skips without a word: {_short(skipped)}")
    if served.num_layers > 1 and any(f"model.layers.{served.num_layers - 1}." in m for m in served.missing):
        served.problems.append(f"num_hidden_layers={served.num_layers}: SGLang builds that many draft layers; "
                               "the export holds fewer (was the target's layer count copied?)")
    return served


def _settle_eagle3(served: ServedDraft, shapes: dict, target_config: dict) -> None:
    cfg = served.config
    target_layers = int(target_config["num_hidden_layers"])
    served.aux_layers = capture_layers(cfg, target_layers)
    beyond = [c for c in served.aux_layers if not 0 < c < target_layers]
    if beyond:
        raise CheckpointError(
            f"eagle_aux_hidden_state_layer_ids={(cfg.get('eagle_config') or {}).get('eagle_aux_hidden_state_layer_ids')}"
            f": SGLang captures the inputs of target layers {served.aux_layers} (id + 1), and layer(s) {beyond} "
            f"are not inputs of the target's {target_layers} layers.")
    if len(served.aux_layers) != num_aux_hidden_states(cfg):
        served.problems.append(f"num_aux_hidden_states={num_aux_hidden_states(cfg)} but "
                               f"{len(served.aux_layers)} layer ids: fc reads a different width than captured")
    if (cfg.get("eagle_config") or {}).get("use_aux_hidden_state") is False:
        raise CheckpointError("eagle_config.use_aux_hidden_state=false is not modelled by the reference.")
    vocab = int(cfg["vocab_size"])
    draft_vocab = cfg.get("draft_vocab_size")
    if draft_vocab is None and not cfg.get("tie_word_embeddings"):
        shapes.pop("lm_head.weight", None)  # SGLang takes the target's lm_head
        served.params.pop("lm_head.weight", None)
    elif draft_vocab is not None and int(draft_vocab) < vocab and served.hot_token_id is None:
        served.problems.append(f"draft_vocab_size={draft_vocab} < vocab_size={vocab} and no d2t tensor: SGLang "
                               "uses draft ids as target ids")
    if served.hot_token_id is not None and int(served.hot_token_id.max()) >= vocab:
        raise CheckpointError(f"d2t maps draft ids to target id {int(served.hot_token_id.max())} >= vocab_size={vocab}.")


def _short(names: list[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


# --- the computation ------------------------------------------------------------------------------------


def _rms(x, w, eps: float):
    torch = import_torch()
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w


def _linear(x, p: dict, name: str):
    torch = import_torch()
    return torch.nn.functional.linear(x, p[name + ".weight"], p.get(name + ".bias"))


def _rotate(x, cos, sin):
    torch = import_torch()
    half = x.shape[-1] // 2
    rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rot * sin


class _Draft:
    """The served draft on a device, run over whole right-padded sequences (causal, so padding after a
    row's end changes nothing before it)."""

    def __init__(self, served: ServedDraft, target, device: str, dtype, seed: int = 0):
        torch = import_torch()
        from transformers import LlamaConfig
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        self.served, self.cfg = served, served.config
        self.eagle3 = served.algorithm == "EAGLE3"
        self.eps = float(self.cfg.get("rms_norm_eps", 1e-6))
        shapes = eagle3_param_shapes(self.cfg) if self.eagle3 else eagle_param_shapes(self.cfg)
        gen = torch.Generator().manual_seed(seed)
        p = {}
        for name, shape in shapes.items():
            if name in served.params:
                p[name] = served.params[name].to(device=device, dtype=dtype)
            elif name.endswith("norm.weight") or ".fc_norm." in name:
                p[name] = torch.ones(shape, device=device, dtype=dtype)  # SGLang's RMSNorm starts at ones
            elif name.endswith(".bias"):
                p[name] = torch.zeros(shape, device=device, dtype=dtype)
            else:  # allocated, never loaded: random in effect
                p[name] = torch.empty(shape).normal_(0.0, 0.02, generator=gen).to(device=device, dtype=dtype)
        t_embed = target.get_input_embeddings().weight.to(device=device, dtype=dtype)
        h = int(self.cfg["hidden_size"])
        if not self.eagle3 or int(self.cfg.get("target_hidden_size") or h) == h:
            p["model.embed_tokens.weight"] = t_embed  # SGLang's set_embed / set_embed_and_head
        if self.cfg.get("tie_word_embeddings") and self.eagle3:
            p["lm_head.weight"] = p["model.embed_tokens.weight"]  # lm_head is the embedding module
        elif not self.eagle3 or self.cfg.get("draft_vocab_size") is None:  # SGLang's set_embed_and_head
            head = target.get_output_embeddings().weight.to(device=device, dtype=dtype)
            sliced = not self.eagle3 and served.hot_token_id is not None  # EAGLE-1/2 with a token map
            p["lm_head.weight"] = head[served.hot_token_id.to(device)] if sliced else head
        self.p = p
        self.hot = served.hot_token_id.to(device) if served.hot_token_id is not None else None
        try:
            rope_cfg = LlamaConfig(**{k: v for k, v in self.cfg.items() if k not in ("architectures", "auto_map")})
        except Exception as exc:  # transformers validates the rope settings
            raise CheckpointError(f"the draft's config.json is not a Llama config transformers accepts: {exc}") from exc
        self.rope = LlamaRotaryEmbedding(config=rope_cfg).to(device)
        self.dims = attention_dims(self.cfg)
        self.device, self.dtype = device, dtype

    def fc(self, aux):
        """Target features (``[B, T, n*H_in]``, or ``[B, T, H]`` for EAGLE-1) -> the draft's hidden input."""
        p = self.p
        if not self.eagle3:
            return aux
        if "model.input_norm.weight" in p:
            aux = _rms(aux, p["model.input_norm.weight"], self.eps)
        if "model.fc_norm.0.weight" in p:
            n = num_aux_hidden_states(self.cfg)
            aux = import_torch().cat([_rms(c, p[f"model.fc_norm.{k}.weight"], self.eps)
                                for k, c in enumerate(aux.chunk(n, dim=-1))], dim=-1)
        return _linear(aux, p, "model.fc")

    def _attention(self, x, prefix: str, cos, sin, past=None, kept=None):
        """Causal self-attention over ``x``; with ``past`` (the layer's keys and values of earlier
        positions, ``[B, kv, P, hd]`` each) ``x`` continues them. ``kept`` collects this call's keys and
        values (the past's included) for the caller's cache."""
        torch = import_torch()
        b, t, _ = x.shape
        _, heads, kv, hd, _ = self.dims
        q = _linear(x, self.p, prefix + "q_proj").view(b, t, heads, hd).transpose(1, 2)
        k = _linear(x, self.p, prefix + "k_proj").view(b, t, kv, hd).transpose(1, 2)
        v = _linear(x, self.p, prefix + "v_proj").view(b, t, kv, hd).transpose(1, 2)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        mask = None
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
            p_len = past[0].shape[2]
            j = torch.arange(p_len + t, device=x.device)
            mask = j[None, :] <= (p_len + torch.arange(t, device=x.device))[:, None]  # the past, then causal
        if kept is not None:
            kept.append((k, v))
        k, v = k.repeat_interleave(heads // kv, dim=1), v.repeat_interleave(heads // kv, dim=1)
        o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=mask is None, attn_mask=mask,
                                                             scale=hd ** -0.5)
        return _linear(o.transpose(1, 2).reshape(b, t, heads * hd), self.p, prefix + "o_proj")

    def _mlp(self, x, prefix: str):
        torch = import_torch()
        gate = torch.nn.functional.silu(_linear(x, self.p, prefix + "gate_proj"))
        return _linear(gate * _linear(x, self.p, prefix + "up_proj"), self.p, prefix + "down_proj")

    def forward(self, token_ids, hidden, last=None, past=None, kept=None):
        """(draft logits over its vocabulary, the hidden fed back) for tokens ``[B, T]`` paired with
        hidden inputs ``[B, T, H]`` (already through ``fc``), at positions ``0..T-1``.

        With ``last`` (``[B]``, a position per row) both are given at those positions only (``[B, V]``,
        ``[B, H]``): the lm_head then runs over one position a row, not all of them. With ``past`` (per
        layer, the keys and values of ``P`` earlier positions) the tokens sit at positions ``P..P+T-1``
        and attend to those too; ``kept`` (a list) receives every layer's keys and values, past included.
        """
        torch = import_torch()
        p, eps = self.p, self.eps
        embeds = torch.nn.functional.embedding(token_ids, p["model.embed_tokens.weight"])
        start = past[0][0].shape[2] if past else 0
        pos = torch.arange(start, start + token_ids.shape[1], device=self.device)[None].expand(token_ids.shape[0], -1)
        cos, sin = self.rope(embeds, pos)
        cos, sin = cos[:, None].to(self.dtype), sin[:, None].to(self.dtype)
        if self.eagle3:
            residual = hidden
            x = torch.cat([_rms(embeds, p["model.layers.0.input_layernorm.weight"], eps),
                           _rms(hidden, p["model.layers.0.hidden_norm.weight"], eps)], dim=-1)
        else:
            residual = x = _linear(torch.cat([embeds, hidden], dim=-1), p, "model.fc")
        out = None
        for i in range(self.served.num_layers):
            pre = f"model.layers.{i}."
            if i > 0:
                residual = out + residual
                x = _rms(residual, p[pre + ("hidden_norm" if self.eagle3 else "input_layernorm") + ".weight"], eps)
            residual = self._attention(x, pre + "self_attn.", cos, sin, past[i] if past else None, kept) + residual
            out = self._mlp(_rms(residual, p[pre + "post_attention_layernorm.weight"], eps), pre + "mlp.")
        residual = out + residual
        if last is not None:
            residual = residual[torch.arange(residual.shape[0], device=residual.device), last]
        if not self.eagle3:
            return torch.nn.functional.linear(residual, p["lm_head.weight"]), residual
        normed = _rms(residual, p["model.norm.weight"], eps)
        logits = torch.nn.functional.linear(normed, p["lm_head.weight"])
        return logits, (normed if self.cfg.get("norm_output") else residual)

    def to_target_ids(self, draft_ids):
        return self.hot[draft_ids] if self.hot is not None else draft_ids


@dataclass
class PromptReference:
    """One prompt's decode: ``output_ids`` (at temperature 0 the target's own greedy output), verify
    ``rounds``, and ``histogram[k]``: rounds that accepted ``k`` drafted tokens."""

    prompt_id: str
    output_ids: list[int]
    rounds: int
    histogram: list[int]
    sample_rounds: list[int] | None = None
    """At temperature > 0: each sampled generation's rounds (``rounds`` and ``histogram`` sum them;
    ``output_ids`` is the first generation's)."""
    expected_accepted: float | None = None
    """The sum over rounds of the exact expected accepted count given each round's context."""
    accepted_per_round: list[int] | None = None
    """Drafts accepted in each round (trees and sampling; of the first generation)."""

    @property
    def completion_tokens(self) -> int:
        """Tokens over every generation counted in ``rounds``."""
        return len(self.output_ids) * (len(self.sample_rounds) if self.sample_rounds else 1)


@dataclass
class ReferenceResult:
    """The reference over a prompt set.

    ``accept_length`` is completion tokens per verify round over all prompts (SGLang's
    ``completion_tokens / spec_verify_ct``; the first token, from the prefill, is a completion token
    and no round). ``problems``: why SGLang would serve something else than the exported weights.
    """

    algorithm: str
    num_steps: int
    topk: int
    prompts: list[PromptReference]
    problems: list[str]
    aux_layers: list[int]
    device: str
    dtype: str
    seconds: float
    num_draft_tokens: int | None = None
    temperature: float = 0.0
    threshold_single: float = 1.0
    threshold_acc: float = 1.0
    rejection_sampling: bool = False
    samples: int = 1

    @property
    def accept_length(self) -> float | None:
        return accept_length_of(self.prompts)

    @property
    def kind(self) -> str:
        """``exact`` (a chain, or a tree, at temperature 0), ``interval`` (temperature > 0) or ``bound``
        (a tree computed as its chain: its ``num_draft_tokens`` unknown)."""
        if self.temperature > 0:
            return "interval"
        return "exact" if self.topk == 1 or self.num_draft_tokens is not None else "bound"

    @property
    def expected_per_round(self) -> float | None:
        """At temperature > 0: one plus the mean over the sampled rounds of each round's exact expected
        accept count given its context (products of the target's probabilities on a chain); what the
        sampled accept length estimates with the coins' noise taken out, the end of each generation aside."""
        rounds = sum(p.rounds for p in self.prompts)
        if self.kind != "interval" or not rounds or any(p.expected_accepted is None for p in self.prompts):
            return None
        return 1 + sum(p.expected_accepted for p in self.prompts) / rounds

    @property
    def interval(self) -> tuple[float, float] | None:
        """At temperature > 0: where one served run over these prompts lies (99%)."""
        return interval_of_prompts(self.prompts) if self.kind == "interval" else None

    @property
    def histogram(self) -> list[int]:
        out = [0] * (self.num_steps + 1)
        for pr in self.prompts:
            for k, v in enumerate(pr.histogram):
                out[k] += v
        return out

    @property
    def exact(self) -> bool:
        return self.kind == "exact"

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(accept_length=self.accept_length, histogram=self.histogram, exact=self.exact, kind=self.kind,
                 interval=list(self.interval) if self.interval else None, expected_per_round=self.expected_per_round)
        return d


def reference_from_dict(data: dict) -> ReferenceResult:
    """A ``ReferenceResult`` from its ``to_dict`` form (the derived keys are recomputed)."""
    from dataclasses import fields

    d = {f.name: data[f.name] for f in fields(ReferenceResult) if f.name in data}  # newer fields have defaults
    d["prompts"] = [PromptReference(**p) for p in d["prompts"]]
    return ReferenceResult(**d)


def accept_length_of(prompts: list[PromptReference]) -> float | None:
    """Completion tokens per verify round over ``prompts`` (``None`` without a round)."""
    rounds = sum(p.rounds for p in prompts)
    return sum(p.completion_tokens for p in prompts) / rounds if rounds else None


def interval_of_prompts(prompts: list[PromptReference]) -> tuple[float, float] | None:
    """The 99% interval of one served run's accept length over ``prompts`` (sampled generations)."""
    from automodel_spec.bench.tree_reference import interval_of

    if not prompts or any(not p.sample_rounds or len(p.sample_rounds) < 2 for p in prompts):
        return None
    _, low, high = interval_of([p.sample_rounds for p in prompts], [len(p.output_ids) for p in prompts])
    return low, high


def histogram_of(prompts: list[PromptReference]) -> list[int]:
    """Verify rounds by drafts accepted, summed over ``prompts``."""
    out = [0] * max((len(p.histogram) for p in prompts), default=0)
    for p in prompts:
        for k, v in enumerate(p.histogram):
            out[k] += v
    return out


def load_target(target_dir: str, device: str, dtype):
    """The target through ``transformers`` (local files only, no remote code)."""
    try:
        from transformers import AutoModelForCausalLM
    except ImportError as exc:
        raise MissingDependencyError("transformers", TRANSFORMERS_INSTALL_HINT, "compute the reference") from exc
    if not (Path(target_dir).expanduser() / "config.json").is_file():
        raise CheckpointError(f"target {target_dir}: no config.json there; the reference needs the target's local "
                              "HF directory (the one SGLang's --model-path is given).")
    try:
        model = AutoModelForCausalLM.from_pretrained(str(Path(target_dir).expanduser()), dtype=dtype,
                                                     local_files_only=True)
    except TypeError:  # transformers 4.x names it torch_dtype
        model = AutoModelForCausalLM.from_pretrained(target_dir, torch_dtype=dtype, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"target {target_dir}: transformers cannot load it: {exc}") from exc
    return model.to(device).eval()


def prompt_token_ids(prompts, target_dir: str) -> list[list[int]]:
    """Each prompt's token ids as SGLang gets them: ``input_ids`` as given, text through the target's
    tokenizer (``encode``, special tokens added, as SGLang's tokenizer manager does)."""
    out, tok = [], None
    for p in prompts:
        if p.input_ids is not None:
            out.append(list(p.input_ids))
            continue
        if tok is None:
            from transformers import AutoTokenizer

            try:
                tok = AutoTokenizer.from_pretrained(target_dir, local_files_only=True)
            except (OSError, ValueError) as exc:
                raise CheckpointError(f"target {target_dir}: no tokenizer for text prompts ({exc}); give "
                                      "prompts with input_ids.") from exc
        out.append(list(tok.encode(p.text)))
    return out


def compute_reference(target_dir: str, draft_dir: str, num_steps: int, prompts, *, topk: int = 1,
                      max_new_tokens: int = 128, device: str | None = None, dtype: str = "float32",
                      batch_size: int = 16, target=None, num_draft_tokens: int | None = None,
                      sampling=None, workers: int = 1, first_prompt: int = 0, progress: bool = True
                      ) -> ReferenceResult:
    """The reference accept length of the exported draft over ``prompts`` (``bench.workload.Prompt``).

    Args:
        target_dir: the target's HF directory (what SGLang's ``--model-path`` is given).
        draft_dir: the exported draft (``--speculative-draft-model-path``).
        num_steps: draft tokens per verify round (``--speculative-num-steps``).
        topk: the served topk; above 1 without ``num_draft_tokens`` the chain computed is a lower bound.
        num_draft_tokens: the served tree's size (``--speculative-num-draft-tokens``): with it a tree is
            decoded as SGLang builds it.
        sampling: the temperature and verify settings (``tree_reference.Sampling``; default greedy).
        device: ``cuda`` or ``cpu`` (default: cuda when available).
        target: an already loaded target model (tests, repeated calls).
        workers: processes that compute slices of ``prompts`` side by side, each loading the target
            (``_compute_in_workers``); the result is the one process's, prompt by prompt.
        first_prompt: the place of ``prompts[0]`` in the whole set (a worker's slice): it seeds the
            sampled generations, so that a prompt draws the same wherever it is computed.
        progress: show the tokens decoded so far on stderr (minutes for a large target or on a CPU); with
            workers, the prompts done.

    Raises:
        CheckpointError: the draft or target cannot be read as SGLang would read it.
        MissingDependencyError: transformers is not installed (exit code 2).
    """
    from automodel_spec.bench.tree_reference import Sampling, check_sampling, run_tree

    if num_steps < 1:
        raise ConfigError(f"num_steps={num_steps}: the reference needs at least one draft step.")
    if workers < 1:
        raise ConfigError(f"workers={workers}: give the number of processes to compute it with, 1 or more.")
    if not prompts:
        raise ConfigError("no prompts: the reference is an average over prompts; give one or more.")
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens={max_new_tokens}: the reference decodes at least one token a prompt; "
                          "give 1 or more (the served benchmark's bench.max_new_tokens).")
    sampling = sampling or Sampling()
    check_sampling(topk, sampling, hot_token_map=False)
    if topk == 1:
        num_draft_tokens = num_steps + 1  # SGLang forces it for a chain
    bound = num_draft_tokens is None  # a tree of unknown size: its chain, and call it a bound
    if sampling.temperature > 0 and bound:
        raise ConfigError(f"topk={topk} at temperature {sampling.temperature:g} without num_draft_tokens: the tree "
                          "cannot be built; give --num-draft-tokens (the server's speculative_num_draft_tokens).")
    if not bound:
        _check_tree_size(topk, num_steps, num_draft_tokens)
    try:
        import transformers  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("transformers", TRANSFORMERS_INSTALL_HINT, "compute the reference") from exc
    if workers > 1 and len(prompts) > 1 and target is None:
        return _compute_in_workers(workers, target_dir, draft_dir, num_steps, prompts, progress, topk=topk,
                                   max_new_tokens=max_new_tokens, device=device, dtype=dtype, batch_size=batch_size,
                                   num_draft_tokens=num_draft_tokens, sampling=sampling)
    torch = import_torch()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device}: torch {torch.__version__} sees no CUDA GPU here; compute it on the CPU "
                          "(device cpu: slower, the same tokens in float32) or on the GPU machine.")
    dt = getattr(torch, dtype)
    t0 = time.perf_counter()
    target = target if target is not None else load_target(target_dir, device, dt)
    served = read_served_draft(Path(draft_dir), target.config.to_dict())
    draft = _Draft(served, target, device, dt)
    ids = prompt_token_ids(prompts, target_dir)
    generations = len(ids) * (sampling.samples if sampling.temperature > 0 else 1)
    bar = progress_bar(generations * max_new_tokens, "reference", unit="tok") if progress else None
    try:
        rows = run_tree(target, draft, ids, num_steps, 1 if bound else topk,
                        num_steps + 1 if bound else num_draft_tokens, max_new_tokens, served.aux_layers, device,
                        sampling, batch_size, first_prompt=first_prompt, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    chains = [PromptReference(prompt_id=p.id, **row) for p, row in zip(prompts, rows, strict=True)]
    return ReferenceResult(algorithm=served.algorithm, num_steps=num_steps, topk=topk, prompts=chains,
                           problems=list(served.problems), aux_layers=served.aux_layers, device=device,
                           dtype=dtype, seconds=time.perf_counter() - t0,
                           num_draft_tokens=num_draft_tokens,
                           temperature=sampling.temperature, threshold_single=sampling.threshold_single,
                           threshold_acc=sampling.threshold_acc, rejection_sampling=sampling.rejection,
                           samples=sampling.samples if sampling.temperature > 0 else 1)


def _compute_in_workers(workers: int, target_dir: str, draft_dir: str, num_steps: int, prompts, progress: bool,
                        **kwargs) -> ReferenceResult:
    """``compute_reference`` by ``workers`` processes, each over a contiguous slice of ``prompts``, merged.

    The reference decodes one sequence at a time with many small passes, so one process leaves a GPU
    mostly idle between them (fourteen references side by side on one H100 finished in 68-224 s each:
    docs/benchmarks.md, "Trees and sampling"). Each prompt's result is the one process's: its
    generations are seeded by its place in the whole set (``first_prompt``). The draft is read here
    first, so that what is wrong with it is raised as it is without workers.

    Raises:
        CheckpointError: the draft cannot be read as SGLang would read it; a worker failed.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from automodel_spec.export.target import read_target_config

    read_served_draft(Path(draft_dir), read_target_config(target_dir) or {})
    n = min(workers, len(prompts))
    bounds = [round(i * len(prompts) / n) for i in range(n + 1)]
    t0 = time.perf_counter()
    # spawn: a forked child cannot use CUDA, and a fresh interpreter holds nothing of the parent's
    bar = progress_bar(len(prompts), "reference", unit="prompt") if progress else None
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as pool:
        # each worker's own bar would overwrite the others' line: the parent counts the slices done
        futures = {pool.submit(compute_reference, target_dir, draft_dir, num_steps, prompts[a:b], first_prompt=a,
                               progress=False, **kwargs): b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)}
        try:
            for done in as_completed(futures):
                done.result()
                if bar is not None:
                    bar.update(futures[done])
            parts = [f.result() for f in futures]
        except SpecError:
            raise
        except Exception as exc:  # a worker died (out of memory, a signal) or failed unexpectedly
            raise CheckpointError(f"a reference worker failed ({type(exc).__name__}: {exc}); compute it with "
                                  "--workers 1 to see the whole error") from exc
        finally:
            if bar is not None:
                bar.close()
    merged = parts[0]
    merged.prompts = [p for part in parts for p in part.prompts]
    merged.seconds = time.perf_counter() - t0
    return merged


def _check_tree_size(topk: int, num_steps: int, num_draft_tokens: int) -> None:
    from automodel_spec.bench.spec_tree import TreeBuilder

    try:
        TreeBuilder(topk, num_steps, num_draft_tokens)
    except ValueError as exc:
        raise ConfigError(f"{exc}; SGLang would refuse the setting too.") from exc


# --- comparing with what was served ---------------------------------------------------------------------

CHECK_FIRST = ("check first: the aux layer ids (eagle_config.eagle_aux_hidden_state_layer_ids, +1 in SGLang), "
               "num_hidden_layers (SGLang builds that many layers), d2t (the hot-token map), the rope settings "
               "against the target's, and the server log for skipped weights")


def verdict(served: float | None, reference: float | None, problems: list[str] | None = None, *,
            exact: bool = True, tolerance: float = TOLERANCE,
            min_accept_length: float | None = None,
            interval: tuple[float, float] | None = None) -> tuple[bool, str]:
    """(served as trained?, the sentence to show) for a served and a reference accept length.

    Args:
        problems: what SGLang would serve differently from the export (``ReferenceResult.problems``).
        exact: the reference is exact; ``False``: a lower bound (a tree computed as its chain).
        interval: at temperature > 0, where one served run lies (99%, ``ReferenceResult.interval``):
            the served value is held against its low end (less the tolerance), not against a point.
        min_accept_length: the accept length the draft is known to reach (measured in training); a
            reference below it means the export does not hold the draft as trained (an aux-layer id
            lost or shifted is caught only so: the served draft and the reference read the same ids).
    """
    if problems:
        return False, "not served as trained: " + "; ".join(problems)
    if min_accept_length is not None and (reference is None or reference < min_accept_length):
        ref = "-" if reference is None else f"{reference:.2f}"
        return False, (f"the reference accept length {ref} is below the expected {min_accept_length:.2f}: the "
                       f"export does not compute the draft as trained; {CHECK_FIRST}")
    if served is None or reference is None:
        return True, "no accept length to compare"
    if interval is not None:
        low, high = interval
        span = f"interval [{low:.2f}, {high:.2f}] (expected {reference:.2f})"
        if served >= low * (1 - tolerance):
            where = "above" if served > high else "within"
            return True, f"served as trained (served {served:.2f}, {where} the reference {span})"
        return False, (f"served accept length {served:.2f} is below the reference {span}, by more than sampling "
                       f"explains: the server does not run the draft as exported, or samples it otherwise; "
                       f"{CHECK_FIRST}")
    if served >= reference * (1 - tolerance):
        if exact or served <= reference * (1 + tolerance):
            return True, f"served as trained (served {served:.2f}, reference {reference:.2f})"
        return True, f"served as trained (served {served:.2f}, chain reference {reference:.2f} is a tree's lower bound)"
    return False, (f"served accept length {served:.2f} is {100 * (1 - served / reference):.0f}% below the "
                   f"reference {reference:.2f}: the server does not run the draft as exported; {CHECK_FIRST}")


def estimated_cost(target_config: dict, num_prompts: int, max_new_tokens: int) -> float:
    """Target parameters x generated tokens: the rule ``bench.reference`` (auto) decides by."""
    h = int(target_config.get("hidden_size", 0))
    layers = int(target_config.get("num_hidden_layers", 0))
    inter = int(target_config.get("intermediate_size", 0))
    vocab = int(target_config.get("vocab_size", 0))
    params = layers * (4 * h * h + 3 * h * inter) + 2 * vocab * h
    return float(params) * num_prompts * max_new_tokens


AUTO_COST_LIMIT = 1e12  # about a minute on one GPU (a 100M target, 16 x 128 tokens is 2e11)


# --- command line ---------------------------------------------------------------------------------------


def _table(result: ReferenceResult) -> str:
    al = result.accept_length
    shape = (f"chain of {result.num_steps}" if result.topk == 1 or result.kind == "bound" else
             f"tree {result.num_steps}/{result.topk}/{result.num_draft_tokens}")
    how = f"T={result.temperature:g}"
    if result.temperature > 0:
        how += (", rejection sampling" if result.rejection_sampling else
                f", target-only, thresholds {result.threshold_single:g}/{result.threshold_acc:g}")
        how += f", {result.samples} generations per prompt"
    lines = [f"reference ({result.algorithm}, {shape}, {how}, {len(result.prompts)} prompts, "
             f"{result.device} {result.dtype}, {result.seconds:.1f}s)",
             f"  accept length   {al:.3f} ({result.kind})" if al is not None else "  accept length   -",
             "  accepted drafts " + " ".join(f"{k}:{v}" for k, v in enumerate(result.histogram))]
    if result.interval:
        lines.append("  one served run  {:.3f} .. {:.3f} (99% interval)".format(*result.interval))
    if result.expected_per_round is not None:
        lines.append(f"  exact per round {result.expected_per_round:.3f} (the sampled rounds' exact expected accepts)")
    if result.kind == "bound":
        lines.append(f"  topk={result.topk}: the chain is a lower bound for the tree (give --num-draft-tokens)")
    if result.aux_layers:
        lines.append(f"  target layers captured (inputs of) {result.aux_layers}")
    for p in result.problems:
        lines.append(f"  WARNING: {p}")
    return "\n".join(lines)


def _check_cli_args(args) -> None:
    """What the command line alone can be told wrong, before a model is loaded (``compute_reference`` checks
    the setting): all of it in one message.

    Raises:
        ConfigError: ``--num-prompts`` below 1; ``--json`` a directory, or in one that cannot be created.
    """
    errors = []
    if args.num_prompts < 1:
        errors.append(f"--num-prompts {args.num_prompts}: give 1 or more (prompts are cycled when the set is smaller).")
    if args.json:
        out = Path(args.json).expanduser()
        problem = "is a directory" if out.is_dir() else directory_problem(out.parent)
        if problem:
            errors.append(f"--json {args.json}: {problem}; give a file path in a directory this user can write, "
                          "or leave --json out.")
    if errors:
        raise ConfigError(errors)


def main(argv: list[str] | None = None) -> int:
    """``python -m automodel_spec.bench.reference --target DIR --draft EXPORT_DIR --num-steps N``."""
    from automodel_spec.bench.tree_reference import Sampling
    from automodel_spec.bench.workload import load_prompts, select_prompts

    ap = argparse.ArgumentParser(prog="python -m automodel_spec.bench.reference", description=__doc__.splitlines()[0])
    ap.add_argument("--target", required=True, help="the target's HF directory")
    ap.add_argument("--draft", required=True, help="the exported draft directory")
    ap.add_argument("--num-steps", type=int, required=True)
    ap.add_argument("--topk", type=int, default=1)
    ap.add_argument("--num-draft-tokens", type=int, default=None,
                    help="the tree's size (--speculative-num-draft-tokens); needed for topk > 1 to be exact")
    ap.add_argument("--temperature", type=float, default=0.0, help="the requests' temperature (> 0: an interval)")
    ap.add_argument("--threshold-single", type=float, default=1.0, help="--speculative-accept-threshold-single")
    ap.add_argument("--threshold-acc", type=float, default=1.0, help="--speculative-accept-threshold-acc")
    ap.add_argument("--rejection-sampling", action="store_true", help="--speculative-use-rejection-sampling")
    ap.add_argument("--samples", type=int, default=4, help="generations per prompt at temperature > 0")
    ap.add_argument("--sample-seed", type=int, default=0, help="the seed of the sampled generations")
    ap.add_argument("--prompts", default=None, help="JSONL prompts (default: the built-in set)")
    ap.add_argument("--num-prompts", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0, help="the bench's prompt order (bench.seed)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--workers", type=int, default=1,
                    help="processes computing slices of the prompts side by side, each loading the target "
                         "(on a GPU, which one process leaves mostly idle); the result is the same")
    ap.add_argument("--served", type=float, default=None, help="a served accept length to hold against it")
    ap.add_argument("--expected-accept-length", type=float, default=None,
                    help="the accept length measured in training: fail when the reference falls below it")
    ap.add_argument("--json", default=None, help="write the result here")
    args = ap.parse_args(argv)
    from automodel_spec.io.console_log import log_to_console

    log_to_console()
    try:
        _check_cli_args(args)
        prompts = select_prompts(load_prompts(args.prompts), args.num_prompts, args.seed)
        sampling = Sampling(temperature=args.temperature, threshold_single=args.threshold_single,
                            threshold_acc=args.threshold_acc, rejection=args.rejection_sampling,
                            samples=args.samples, seed=args.sample_seed)
        result = compute_reference(args.target, args.draft, args.num_steps, prompts, topk=args.topk,
                                   max_new_tokens=args.max_new_tokens, device=args.device, dtype=args.dtype,
                                   num_draft_tokens=args.num_draft_tokens, sampling=sampling, workers=args.workers)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(_table(result))
    ok, text = verdict(args.served, result.accept_length, result.problems, exact=result.exact,
                       min_accept_length=args.expected_accept_length, interval=result.interval)
    if args.served is not None or args.expected_accept_length is not None or result.problems:
        print(("" if ok else "WARNING: ") + text)
    if args.json:
        from automodel_spec.io.atomic_write import write_json_atomically

        out = Path(args.json).expanduser()
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomically(out, result.to_dict())
        except OSError as exc:  # a full or read-only disk since the check: the result above is still printed
            print(f"error: --json {args.json}: cannot write it ({exc.strerror or exc}); the result is printed above.",
                  file=sys.stderr)
            return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

