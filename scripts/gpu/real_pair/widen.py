#!/usr/bin/env python3
"""Widen a trained Llama target and its EAGLE-3 draft to a larger shape without changing what they compute.

    python scripts/gpu/real_pair/widen.py --target DIR [--draft DIR] --shape llama-3.1-8b --out DIR

Writes ``OUT/target`` (an HF Llama directory SGLang serves) and, with ``--draft``, ``OUT/draft`` (an
EAGLE-3 draft in SGLang's layout that ``recipes/serve.py draft.path=...`` takes); each ``--also-draft
NAME=DIR`` (another draft of the same target, e.g. the other producer's) goes to ``OUT/draft-NAME``. The draft may be given
in any form the project's export takes (an Automodel run or checkpoint, a SpecForge export, an export
of ours): it goes through ``recipes/export.py`` first, so the widening reads what SGLang would load.

Why: a trained pair of ~100M parameters decodes in about a millisecond, where speculation cannot pay;
users serve 8B-70B targets. Widening keeps the trained acceptance and gives the cost of the larger
shape: dense kernels read every weight, zeros included.

The construction (each step keeps the function exactly in real arithmetic):

- embedding, lm_head, every linear layer: the real block in the first rows / columns, zeros elsewhere;
- heads: small head ``h`` of KV group ``g`` at index ``j`` in its group goes to wide head
  ``g * (nh'/nkv') + j``, KV head ``g`` to wide KV head ``g``; inside a head, rotate-half pairs stay
  pairs (dim ``d < hd/2`` at ``d``, ``d >= hd/2`` at ``d - hd/2 + hd'/2``); unused heads are zero;
- rope: base ``theta ** (hd'/hd)``, so the first ``hd/2`` frequencies are unchanged; q rows scaled by
  ``sqrt(hd'/hd)`` for the wider softmax scale;
- RMSNorm: weights scaled by ``sqrt(H/H')`` and ``rms_norm_eps`` by ``H/H'``: the mean square is then
  taken over ``H'`` dims of which ``H`` are real;
- layers: the small layers at increasing positions, every other layer all zero (an identity through
  the residual), placed so that the hidden states SGLang captures for the EAGLE-3 draft (inputs of
  layers ``[2, L'//2, L'-3]``, or ``eagle_aux_hidden_state_layer_ids + 1``) are the ones it was trained on;
- the draft alike: ``fc``'s feature ``c`` real columns at ``c * H'``, the first layer's 2H attention input
  real columns at 0 and at ``H'``, its own norms, rope and lm_head over the draft vocabulary as above.

Before it reports success the tool checks its result in float32 on ``--device``: the wide target's
logits against the small target's on a few prompts, and with a draft, the project's reference accept
length (``automodel_spec.bench.reference``) of the small pair against the wide pair's, with the same output
tokens and per-depth histogram. It exits 1 when the check fails (only ``OUT/widen.json`` is left, for the
diagnosis), 2 for a shape or checkpoint it cannot hold (naming the field; ``--out`` is removed again), and
writes nothing outside ``--out``, which must not exist.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from automodel_spec.bench import reference  # noqa: E402
from automodel_spec.bench.workload import Prompt  # noqa: E402
from automodel_spec.demo import synthetic  # noqa: E402
from automodel_spec.draft.weights import load_safetensors  # noqa: E402
from automodel_spec.export import rope  # noqa: E402
from automodel_spec.export.draft_plan import attention_dims  # noqa: E402
from automodel_spec.io.torch_import import import_torch  # noqa: E402

# Files of a target directory that travel unchanged (the tokenizer and generation settings).
_COPIED = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
           "chat_template.jinja", "tokenizer.model")
# Logits of the wide target may differ from the small one's only by float32 rounding of the rescaled
# norms and the longer (zero-padded) sums, relative to the logits' own scale: 2e-7 was seen on the CPU,
# 1.05e-3 on an H100 (CUDA's float32 kernels sum the 4-5x longer rows in another order) with identical
# reference outputs and histograms. By the device type the check runs on.
LOGIT_TOLERANCE = {"cpu": 1e-4, "cuda": 3e-3}


class WidenError(ValueError):
    """A shape or checkpoint the construction cannot hold; the message names the field."""


@dataclass(frozen=True)
class Shape:
    """A Llama shape: hidden size, attention heads, head dim, KV heads, layers, MLP size."""

    hidden: int
    heads: int
    head_dim: int
    kv_heads: int
    layers: int
    mlp: int

    @classmethod
    def of_config(cls, cfg: dict) -> Shape:
        h, heads, kv, hd, inter = attention_dims(cfg)
        return cls(h, heads, hd, kv, int(cfg["num_hidden_layers"]), inter)


NAMED_SHAPES = {
    "llama-3.1-8b": Shape(synthetic.LLAMA_3_1_8B.hidden_size, synthetic.LLAMA_3_1_8B.num_attention_heads,
                          synthetic.LLAMA_3_1_8B.head_dim, synthetic.LLAMA_3_1_8B.num_key_value_heads,
                          synthetic.LLAMA_3_1_8B.num_hidden_layers, synthetic.LLAMA_3_1_8B.intermediate_size),
}


def parse_shape(text: str) -> Shape:
    """``llama-3.1-8b`` or ``HIDDEN,HEADS,HEAD_DIM,KV_HEADS,LAYERS,MLP``."""
    if text in NAMED_SHAPES:
        return NAMED_SHAPES[text]
    parts = text.split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 6 or min(values) < 1:
        raise WidenError(f"--shape {text!r}: give a named shape ({', '.join(NAMED_SHAPES)}) or six positive "
                         "integers HIDDEN,HEADS,HEAD_DIM,KV_HEADS,LAYERS,MLP")
    return Shape(*values)


def check_fits(small: Shape, wide: Shape, what: str) -> None:
    """Refuse a wide shape that cannot hold ``small`` exactly, naming the field."""
    problems = []
    for field_name, a, b in (("hidden_size", small.hidden, wide.hidden), ("head_dim", small.head_dim, wide.head_dim),
                             ("num_key_value_heads", small.kv_heads, wide.kv_heads),
                             ("num_hidden_layers", small.layers, wide.layers),
                             ("intermediate_size", small.mlp, wide.mlp)):
        if b < a:
            problems.append(f"{field_name} {b} < the {what}'s {a}")
    for field_name, heads, kv in (("the " + what, small.heads, small.kv_heads), ("the wide shape", wide.heads, wide.kv_heads)):
        if heads % kv:
            problems.append(f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv} in {field_name}")
    if not problems and small.heads // small.kv_heads > wide.heads // wide.kv_heads:
        problems.append(f"num_attention_heads/num_key_value_heads {wide.heads}/{wide.kv_heads} holds fewer query heads "
                        f"per KV head than the {what}'s {small.heads}/{small.kv_heads}")
    for field_name, hd in (("the " + what, small.head_dim), ("the wide shape", wide.head_dim)):
        if hd % 2:
            problems.append(f"head_dim {hd} of {field_name} is odd (rope rotates pairs of dims)")
    if problems:
        raise WidenError(f"cannot widen the {what} to {wide}: " + "; ".join(problems))


def check_config(cfg: dict, what: str) -> rope.Rope:
    """The parts of a Llama config the construction models; anything else is refused by name."""
    arch = cfg.get("architectures") or []
    if cfg.get("model_type", "llama") != "llama":
        raise WidenError(f"{what}: model_type={cfg.get('model_type')!r}; only Llama models are widened")
    for key in ("attention_bias", "mlp_bias"):
        if cfg.get(key):
            raise WidenError(f"{what}: {key}=true is not modelled (biases would need the same placement); "
                             "widen a model without biases")
    try:
        rope_cfg, conflicts = rope.read_rope(cfg)
    except ValueError as exc:
        raise WidenError(f"{what}: {exc}") from exc
    if conflicts:
        raise WidenError(f"{what}: its rope settings disagree ({'; '.join(conflicts)}); fix the config first")
    if rope_cfg.scaling is not None:
        raise WidenError(f"{what}: rope scaling {rope_cfg.describe()} (rope_parameters / rope_scaling) is not "
                         "modelled: only plain rope keeps its frequencies under a new base; widen a model with "
                         "default rope")
    if arch and not any(a in ("LlamaForCausalLM", "LlamaForCausalLMEagle3") for a in arch):
        raise WidenError(f"{what}: architectures={arch}; only LlamaForCausalLM targets and LlamaForCausalLMEagle3 "
                         "drafts are widened")
    return rope_cfg


# ----------------------------------------------------------------------------------------------- placement


def head_rows(small: Shape, wide: Shape, *, kv: bool):
    """Where each row of a small q (or k/v) projection goes in the wide one: one index per row."""
    torch = import_torch()
    per_small, per_wide = small.heads // small.kv_heads, wide.heads // wide.kv_heads
    n_heads = small.kv_heads if kv else small.heads
    half, wide_half = small.head_dim // 2, wide.head_dim // 2
    out = []
    for h in range(n_heads):
        wh = h if kv else (h // per_small) * per_wide + h % per_small
        for d in range(small.head_dim):
            wd = d if d < half else d - half + wide_half
            out.append(wh * wide.head_dim + wd)
    return torch.tensor(out, dtype=torch.long)


def layer_positions(small_capture: list[int], wide_capture: list[int], small_layers: int, wide_layers: int) -> list[int]:
    """Wide positions of the small layers, so that ``hidden_states[c']`` of the wide model (the input of
    layer ``c'``) equals ``hidden_states[c]`` of the small one for each capture pair ``(c, c')``.

    Between captures the small layers are spread evenly over the wide segment, ends included.
    """
    bounds = list(zip([0, *small_capture, small_layers], [0, *wide_capture, wide_layers], strict=True))
    positions: list[int] = []
    for (a, wa), (b, wb) in itertools.pairwise(bounds):
        n, room = b - a, wb - wa
        if n > room or n < 0 or room < 0:
            raise WidenError(f"num_hidden_layers {wide_layers}: cannot place small layers {a}..{b - 1} in wide layers "
                             f"{wa}..{wb - 1} (captured inputs {small_capture} -> {wide_capture}); give more layers")
        if n == 1:
            positions.append(wa)
        elif n > 1:
            positions += [wa + round(i * (room - 1) / (n - 1)) for i in range(n)]
    return positions


def wide_capture_for(small_capture: list[int], small_layers: int, wide_layers: int, explicit: bool) -> list[int]:
    """The wide capture: SGLang's default for ``wide_layers`` when the draft names no ids, else ids spread
    in proportion (each keeping room for the small layers before and after it)."""
    if not explicit:
        return reference.capture_layers({}, wide_layers)
    out, prev_small, prev_wide = [], 0, 0
    for c in small_capture:
        low = prev_wide + (c - prev_small)
        high = wide_layers - (small_layers - c)
        out.append(min(max(round(c * wide_layers / small_layers), low, 1), high))
        prev_small, prev_wide = c, out[-1]
    return out


# ------------------------------------------------------------------------------------------------- tensors


class _Widener:
    """Places small tensors into zero tensors of the wide shape (float32, on ``device``)."""

    def __init__(self, small: Shape, wide: Shape, device: str):
        self.torch = import_torch()
        self.small, self.wide, self.device = small, wide, device
        self.q_rows = head_rows(small, wide, kv=False).to(device)
        self.kv_rows = head_rows(small, wide, kv=True).to(device)
        self.q_scale = math.sqrt(wide.head_dim / small.head_dim)
        self.norm_scale = math.sqrt(small.hidden / wide.hidden)

    def place(self, t, shape: tuple, rows=None, cols=None):
        torch = self.torch
        t = t.to(self.device, torch.float32)
        out = torch.zeros(shape, dtype=torch.float32, device=self.device)
        if t.dim() == 1:
            out[rows if rows is not None else slice(0, t.shape[0])] = t
            return out
        r = rows if rows is not None else torch.arange(t.shape[0], device=self.device)
        c = cols if cols is not None else torch.arange(t.shape[1], device=self.device)
        out[r[:, None], c[None, :]] = t
        return out

    def norm(self, t):
        return self.place(t * self.norm_scale, (self.wide.hidden,))

    def split_cols(self, parts: int, part_width: int, wide_part_width: int):
        """Columns of an input made of ``parts`` concatenated vectors, each real part at its wide offset."""
        torch = self.torch
        return torch.cat([torch.arange(part_width, device=self.device) + i * wide_part_width for i in range(parts)])

    def attention(self, p: dict, prefix: str, in_cols, in_width: int) -> dict:
        w = self.wide
        o_cols = self.q_rows  # o_proj's input is the heads' output, placed as q's rows
        return {
            prefix + "q_proj.weight": self.place(p[prefix + "q_proj.weight"] * self.q_scale,
                                                 (w.heads * w.head_dim, in_width), self.q_rows, in_cols),
            prefix + "k_proj.weight": self.place(p[prefix + "k_proj.weight"], (w.kv_heads * w.head_dim, in_width),
                                                 self.kv_rows, in_cols),
            prefix + "v_proj.weight": self.place(p[prefix + "v_proj.weight"], (w.kv_heads * w.head_dim, in_width),
                                                 self.kv_rows, in_cols),
            prefix + "o_proj.weight": self.place(p[prefix + "o_proj.weight"], (w.hidden, w.heads * w.head_dim),
                                                 None, o_cols),
        }

    def mlp(self, p: dict, prefix: str) -> dict:
        w = self.wide
        return {prefix + "gate_proj.weight": self.place(p[prefix + "gate_proj.weight"], (w.mlp, w.hidden)),
                prefix + "up_proj.weight": self.place(p[prefix + "up_proj.weight"], (w.mlp, w.hidden)),
                prefix + "down_proj.weight": self.place(p[prefix + "down_proj.weight"], (w.hidden, w.mlp))}

    def zero_layer(self, prefix: str) -> dict:
        """An identity layer: every projection zero, so the residual passes through unchanged."""
        torch, w = self.torch, self.wide
        z = lambda *shape: torch.zeros(shape, dtype=torch.float32, device=self.device)  # noqa: E731
        ones = torch.full((w.hidden,), self.norm_scale, dtype=torch.float32, device=self.device)
        return {prefix + "input_layernorm.weight": ones.clone(), prefix + "post_attention_layernorm.weight": ones.clone(),
                prefix + "self_attn.q_proj.weight": z(w.heads * w.head_dim, w.hidden),
                prefix + "self_attn.k_proj.weight": z(w.kv_heads * w.head_dim, w.hidden),
                prefix + "self_attn.v_proj.weight": z(w.kv_heads * w.head_dim, w.hidden),
                prefix + "self_attn.o_proj.weight": z(w.hidden, w.heads * w.head_dim),
                prefix + "mlp.gate_proj.weight": z(w.mlp, w.hidden), prefix + "mlp.up_proj.weight": z(w.mlp, w.hidden),
                prefix + "mlp.down_proj.weight": z(w.hidden, w.mlp)}


def _take(params: dict, used: set, name: str):
    used.add(name)
    return params[name]


def widen_target(params: dict, cfg: dict, wide: Shape, positions: list[int], device: str) -> tuple[dict, dict]:
    """The wide target's tensors (float32) and config.json, small layer ``i`` at wide layer ``positions[i]``
    (``layer_positions``)."""
    small = Shape.of_config(cfg)
    check_fits(small, wide, "target")
    rope_cfg = check_config(cfg, "target")
    wd = _Widener(small, wide, device)
    out, used = {}, set()
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        if name in params:
            t = _take(params, used, name)
            out[name] = wd.place(t, (t.shape[0], wide.hidden))
    out["model.norm.weight"] = wd.norm(_take(params, used, "model.norm.weight"))
    small_at = dict(zip(positions, range(small.layers), strict=True))
    cols = wd.split_cols(1, small.hidden, wide.hidden)
    for i in range(wide.layers):
        prefix = f"model.layers.{i}."
        if i not in small_at:
            out.update(wd.zero_layer(prefix))
            continue
        src = f"model.layers.{small_at[i]}."
        p = {k[len(src):]: _take(params, used, k) for k in list(params) if k.startswith(src)}
        missing = {"input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight",
                   "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                   "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"} - p.keys()
        if missing:
            raise WidenError(f"target layer {small_at[i]}: no {sorted(missing)}; is this a Llama checkpoint?")
        out[prefix + "input_layernorm.weight"] = wd.norm(p["input_layernorm.weight"])
        out[prefix + "post_attention_layernorm.weight"] = wd.norm(p["post_attention_layernorm.weight"])
        for name, t in (*wd.attention(p, "self_attn.", cols, wide.hidden).items(), *wd.mlp(p, "mlp.").items()):
            out[prefix + name] = t
    unknown = sorted(set(params) - used)
    if unknown:
        raise WidenError(f"target: tensors the construction does not model: {unknown[:6]}; only plain Llama weights "
                         "are widened")
    return out, _wide_config(cfg, small, wide, rope_cfg, num_layers=wide.layers)


_DRAFT_LAYER = ("midlayer.input_layernorm.weight", "midlayer.hidden_norm.weight",
                "midlayer.post_attention_layernorm.weight", "midlayer.self_attn.q_proj.weight",
                "midlayer.self_attn.k_proj.weight", "midlayer.self_attn.v_proj.weight",
                "midlayer.self_attn.o_proj.weight", "midlayer.mlp.gate_proj.weight", "midlayer.mlp.up_proj.weight",
                "midlayer.mlp.down_proj.weight")


def widen_draft(params: dict, cfg: dict, wide: Shape, small_target_hidden: int, wide_ids: list[int] | None,
                device: str) -> tuple[dict, dict]:
    """The wide EAGLE-3 draft's tensors (float32) and config.json, from an export in SGLang's layout."""
    small = Shape.of_config(cfg)
    draft_wide = Shape(wide.hidden, wide.heads, wide.head_dim, wide.kv_heads, small.layers, wide.mlp)
    check_fits(Shape(small.hidden, small.heads, small.head_dim, small.kv_heads, small.layers, small.mlp),
               draft_wide, "draft")
    rope_cfg = check_config(cfg, "draft")
    if small.layers != 1:
        raise WidenError(f"draft: num_hidden_layers={small.layers}; only one-layer EAGLE-3 drafts (SGLang's "
                         "LlamaForCausalLMEagle3) are widened")
    target_hidden = int(cfg.get("target_hidden_size") or small.hidden)
    if target_hidden != small.hidden or target_hidden != small_target_hidden:
        raise WidenError(f"draft: target_hidden_size={target_hidden}, hidden_size={small.hidden}, target hidden "
                         f"{small_target_hidden}: all three must agree (one norm epsilon serves the draft's norms)")
    missing = [n for n in (*_DRAFT_LAYER, "fc.weight", "norm.weight", "lm_head.weight") if n not in params]
    if missing:
        raise WidenError(f"draft: no {missing[:4]}; give the draft as trained or exported (it goes through "
                         "recipes/export.py first)")
    wd = _Widener(small, draft_wide, device)
    used: set = set()
    fc = _take(params, used, "fc.weight")
    n_feat = fc.shape[1] // small.hidden
    out = {"fc.weight": wd.place(fc, (wide.hidden, n_feat * wide.hidden), None,
                                 wd.split_cols(n_feat, small.hidden, wide.hidden))}
    for name in ("midlayer.input_layernorm.weight", "midlayer.hidden_norm.weight",
                 "midlayer.post_attention_layernorm.weight", "norm.weight",
                 *[n for n in params if n.startswith("fc_norm.")]):
        out[name] = wd.norm(_take(params, used, name))
    attn_in = wd.split_cols(2, small.hidden, wide.hidden)  # embeddings ++ hidden state
    out.update(wd.attention({n: _take(params, used, n) for n in _DRAFT_LAYER if ".self_attn." in n},
                            "midlayer.self_attn.", attn_in, 2 * wide.hidden))
    out.update(wd.mlp({n: _take(params, used, n) for n in _DRAFT_LAYER if ".mlp." in n}, "midlayer.mlp."))
    head = _take(params, used, "lm_head.weight")
    out["lm_head.weight"] = wd.place(head, (head.shape[0], wide.hidden))
    for name in ("d2t", "t2d"):
        if name in params:
            out[name] = _take(params, used, name)
    unknown = sorted(set(params) - used)
    if unknown:
        raise WidenError(f"draft: tensors the construction does not model: {unknown[:6]}")
    wcfg = _wide_config(cfg, small, draft_wide, rope_cfg, num_layers=1)
    wcfg["target_hidden_size"] = wide.hidden
    if wide_ids is not None:
        wcfg["eagle_config"] = {**(cfg.get("eagle_config") or {}), "eagle_aux_hidden_state_layer_ids": wide_ids}
    return out, wcfg


def _wide_config(cfg: dict, small: Shape, wide: Shape, rope_cfg: rope.Rope, *, num_layers: int) -> dict:
    out = dict(cfg)
    out.update(hidden_size=wide.hidden, num_attention_heads=wide.heads, num_key_value_heads=wide.kv_heads,
               head_dim=wide.head_dim, intermediate_size=wide.mlp, num_hidden_layers=num_layers,
               rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)) * small.hidden / wide.hidden)
    theta = rope_cfg.theta ** (wide.head_dim / small.head_dim)
    rope.write_both_forms(out, rope.Rope(theta, None), [])
    out.setdefault("rope_parameters", {"rope_type": "default", "rope_theta": theta})
    out["widened_from"] = {"hidden_size": small.hidden, "num_attention_heads": small.heads,
                           "num_key_value_heads": small.kv_heads, "head_dim": small.head_dim,
                           "num_hidden_layers": small.layers, "intermediate_size": small.mlp,
                           "rope_theta": rope_cfg.theta, "rms_norm_eps": cfg.get("rms_norm_eps")}
    return out


# --------------------------------------------------------------------------------------------------- files


def _read_dir(d: Path) -> tuple[dict, dict]:
    if not (d / "config.json").is_file():
        raise WidenError(f"{d}: no config.json; give an HF directory")
    files = sorted(d.glob("*.safetensors"))
    if not files:
        raise WidenError(f"{d}: no *.safetensors files")
    return json.loads((d / "config.json").read_text()), load_safetensors(files)


def export_draft(draft: Path, target: Path, work: Path) -> Path:
    """The draft as the project's export writes it (``recipes/export.py``), in ``work``."""
    cmd = [sys.executable, str(REPO / "recipes" / "export.py"), "draft=trained", f"draft.path={draft}",
           f"target.path={target}", f"cache_dir={work / 'cache'}", f"hydra.run.dir={work / 'hydra'}"]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    if proc.returncode != 0:
        raise WidenError(f"draft {draft}: the project's export refused it:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def _write(out_dir: Path, tensors: dict, cfg: dict, dtype: str, shard_bytes: int) -> None:
    torch = import_torch()
    out_dir.mkdir(parents=True)
    dt = getattr(torch, dtype)
    cfg = {**cfg, "torch_dtype": dtype, "dtype": dtype}
    named = ((k, v.to(dt) if v.is_floating_point() else v) for k, v in tensors.items())
    synthetic.write_sharded_safetensors(out_dir, named, shard_bytes)
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------------------------------- check


def _model(cfg: dict, tensors: dict, device: str):
    """A transformers Llama of ``cfg`` holding ``tensors`` (float32, already on ``device``), without a copy."""
    torch = import_torch()
    from transformers import LlamaConfig, LlamaForCausalLM

    clean = {k: v for k, v in cfg.items() if k not in ("architectures", "widened_from", "dtype", "torch_dtype")}
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**clean))
    tied = bool(cfg.get("tie_word_embeddings"))
    model.load_state_dict(tensors, assign=True, strict=not tied)
    if tied:
        model.tie_weights()
    # the rope's frequencies are a buffer that is not in the checkpoint: made again on the device
    model.model.rotary_emb = type(model.model.rotary_emb)(config=model.config).to(device)
    return model.eval()


def check_logits(small, wide, prompts: list[list[int]]) -> float:
    """Largest logit difference between the two models over ``prompts``, relative to the logits' scale."""
    torch = import_torch()
    worst = 0.0
    with torch.no_grad():
        for ids in prompts:
            x = torch.tensor([ids], device=next(small.parameters()).device)
            a, b = small(x).logits.float(), wide(x).logits.float()
            worst = max(worst, float((a - b).abs().max() / a.abs().max().clamp_min(1.0)))
    return worst


def _prompts(target_dir: Path, vocab: int, n: int, length: int) -> list[list[int]]:
    """``n`` prompts of token ids: the target's tokenizer on a few lines of code, else seeded random ids."""
    texts = ["def fibonacci(n):\n    ", "import os\nimport sys\n\n", "class Stack:\n    def __init__(self):",
             "for i in range(10):\n    print(", "    return sorted(items, key=lambda", "# parse the arguments\n"]
    try:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(target_dir / "tokenizer.json"))
        out = [tok.encode(t).ids[:length] for t in texts[:n]]
        if all(len(o) >= 2 for o in out):
            return out
    except Exception:  # no tokenizer (synthetic targets): ids serve as well
        pass
    torch = import_torch()
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, vocab, (length,), generator=g).tolist() for _ in range(n)]


def check_pair(small_target_dir: Path, small_target, small_draft: Path, wide_target_dir: Path, wide_target,
               wide_draft: Path, prompts: list[list[int]], num_steps: int, max_new_tokens: int, device: str) -> dict:
    """The reference accept length of the small and the wide pair (float32), and whether they agree."""
    ps = [Prompt(id=str(i), category="ids", input_ids=tuple(p)) for i, p in enumerate(prompts)]
    runs = {}
    for name, tdir, target, ddir in (("small", small_target_dir, small_target, small_draft),
                                     ("wide", wide_target_dir, wide_target, wide_draft)):
        ref = reference.compute_reference(str(tdir), str(ddir), num_steps, ps, max_new_tokens=max_new_tokens,
                                          device=device, target=target)
        runs[name] = {"accept_length": ref.accept_length, "histogram": ref.histogram, "problems": ref.problems,
                      "outputs": [p.output_ids for p in ref.prompts], "seconds": round(ref.seconds, 1)}
    same_outputs = sum(a == b for a, b in zip(runs["small"]["outputs"], runs["wide"]["outputs"], strict=True))
    return {"num_steps": num_steps, "max_new_tokens": max_new_tokens, "prompts": len(prompts),
            "same_outputs": same_outputs,
            **{f"{k}_{f}": runs[k][f] for k in runs for f in ("accept_length", "histogram", "problems", "seconds")}}


# ---------------------------------------------------------------------------------------------------- main


def widen(args) -> dict:
    torch = import_torch()
    wide = parse_shape(args.shape)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    tcfg, tparams = _read_dir(args.target)
    small_shape = Shape.of_config(tcfg)
    check_fits(small_shape, wide, "target")
    report: dict = {"shape": args.shape, "small": small_shape.__dict__, "wide": wide.__dict__, "device": device}
    with tempfile.TemporaryDirectory(prefix="widen-") as tmp_s:
        tmp = Path(tmp_s)
        draft_export, dcfg, dparams, wide_ids = None, None, None, None
        if args.draft is not None:
            draft_export = export_draft(args.draft.resolve(), args.target.resolve(), tmp)
            dcfg, dparams = _read_dir(draft_export)
            ids = (dcfg.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids")
            small_capture = reference.capture_layers(dcfg, small_shape.layers)
        else:
            ids, small_capture = None, reference.capture_layers({}, small_shape.layers)
        wide_capture = wide_capture_for(small_capture, small_shape.layers, wide.layers, ids is not None)
        if ids is not None:
            wide_ids = [c - 1 for c in wide_capture]
        positions = layer_positions(small_capture, wide_capture, small_shape.layers, wide.layers)
        wt, wcfg = widen_target(tparams, tcfg, wide, positions, device)
        report.update(captured_inputs={"small": small_capture, "wide": wide_capture}, layer_positions=positions)
        dtype = args.dtype or tcfg.get("torch_dtype") or tcfg.get("dtype") or "bfloat16"
        _write(args.out / "target", wt, wcfg, dtype, args.shard_bytes)
        for f in _COPIED:
            if (args.target / f).is_file():
                shutil.copy2(args.target / f, args.out / "target" / f)
        report["target_written_s"] = round(time.perf_counter() - t0, 1)
        small_model = reference.load_target(str(args.target), device, torch.float32)
        wide_model = _model(wcfg, wt, device)
        prompts = _prompts(args.target, int(tcfg["vocab_size"]), args.check_prompts, 24)
        report["logit_difference"] = check_logits(small_model, wide_model, prompts)
        report["logit_tolerance"] = tolerance = LOGIT_TOLERANCE[torch.device(device).type]
        ok = report["logit_difference"] <= tolerance
        drafts = [("draft", draft_export, dcfg, dparams, wide_ids)] if dparams is not None else []
        for name, src in args.also_draft:
            other = export_draft(src.resolve(), args.target.resolve(), Path(tempfile.mkdtemp(dir=tmp)))
            ocfg, oparams = _read_dir(other)
            if reference.capture_layers(ocfg, small_shape.layers) != small_capture:
                raise WidenError(f"--also-draft {name}={src}: it reads target layers "
                                 f"{reference.capture_layers(ocfg, small_shape.layers)}, --draft reads {small_capture}: "
                                 "one wide target serves drafts of one capture; widen it separately")
            drafts.append((f"draft-{name}", other, ocfg, oparams, wide_ids))
        for name, export, cfg, params, ids_ in drafts:
            wd, wdcfg = widen_draft(params, cfg, wide, small_shape.hidden, ids_, device)
            # float32 on disk: exactly the constructed values (SGLang casts them at load; the export of
            # recipes/serve.py writes them in the target's dtype)
            _write(args.out / name, wd, wdcfg, "float32", args.shard_bytes)
            pair = check_pair(args.target, small_model, export, args.out / "target", wide_model,
                              args.out / name, prompts, args.check_steps, args.check_tokens, device)
            report["reference" if name == "draft" else f"reference-{name}"] = pair
            ok = ok and not pair["wide_problems"] and _same_acceptance(pair)
    report["ok"] = ok
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def _same_acceptance(pair: dict) -> bool:
    """The wide pair accepts as the small one: equal accept length and histogram over the check prompts
    (float32; a near-tie of two logits may flip one token on a large model, so 1% of slack)."""
    a, b = pair["small_accept_length"], pair["wide_accept_length"]
    if a is None or b is None:
        return a == b
    return abs(a - b) <= 0.01 * a


def _named_dir(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name.replace("-", "").replace("_", "").isalnum() or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: give NAME=DIR, NAME of letters, digits, - and _")
    return name, Path(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", type=Path, required=True, help="the small target's HF directory")
    ap.add_argument("--draft", type=Path, default=None, help="its EAGLE-3 draft (Automodel run, SpecForge export, ...)")
    ap.add_argument("--also-draft", type=_named_dir, action="append", default=[], metavar="NAME=DIR",
                    help="another EAGLE-3 draft of the same target, written to OUT/draft-NAME")
    ap.add_argument("--shape", required=True, help="llama-3.1-8b or HIDDEN,HEADS,HEAD_DIM,KV_HEADS,LAYERS,MLP")
    ap.add_argument("--out", type=Path, required=True, help="a new directory: OUT/target, OUT/draft, OUT/widen.json")
    ap.add_argument("--device", default=None, help="where to build and check (default: cuda when available)")
    ap.add_argument("--dtype", default=None, help="the wide target's dtype on disk (default: the target's)")
    ap.add_argument("--check-prompts", type=int, default=4)
    ap.add_argument("--check-steps", type=int, default=3)
    ap.add_argument("--check-tokens", type=int, default=32)
    ap.add_argument("--shard-bytes", type=int, default=4 << 30)
    args = ap.parse_args(argv)
    if args.also_draft and args.draft is None:
        print("error: --also-draft needs --draft (the draft whose capture places the wide target's layers)",
              file=sys.stderr)
        return 2
    if args.out.exists():
        print(f"error: --out {args.out} exists; give a new directory (nothing is overwritten)", file=sys.stderr)
        return 2
    try:
        report = widen(args)
    except WidenError as exc:
        shutil.rmtree(args.out, ignore_errors=True)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BaseException:
        shutil.rmtree(args.out, ignore_errors=True)
        raise
    (args.out / "widen.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if not k.startswith("reference")}, default=str))
    for key, ref in report.items():
        if key.startswith("reference"):
            print(f"{key}: accept length small {ref['small_accept_length']:.3f} histogram {ref['small_histogram']}; "
                  f"wide {ref['wide_accept_length']:.3f} histogram {ref['wide_histogram']}; same outputs "
                  f"{ref['same_outputs']}/{ref['prompts']}")
    if not report["ok"]:
        print(f"error: the widened pair does not compute what the small pair does (logit difference "
              f"{report['logit_difference']:.2e}, tolerance {report['logit_tolerance']:g}); nothing in {args.out} should be "
              "served", file=sys.stderr)
        for written in args.out.iterdir():  # every directory the tool wrote there (--out was new): none is to be served
            if written.is_dir():
                shutil.rmtree(written, ignore_errors=True)
        return 1
    print(f"widened: {', '.join(str(p) for p in sorted(args.out.iterdir()) if p.is_dir())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
