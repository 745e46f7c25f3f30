"""The offline model builders: real file layouts, a tokenizer that loads, an atomic demo pair."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from safetensors import safe_open

from automodel_spec.demo import pair as demo
from automodel_spec.demo import synthetic
from automodel_spec.demo.synthetic_tokenizer import NUM_TOKENS, write_byte_tokenizer
from automodel_spec.draft.resolve import resolve_draft, weight_files

SMALL = synthetic.LlamaShape(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                             intermediate_size=96, vocab_size=300, max_position_embeddings=256)


def test_byte_tokenizer_round_trips_any_text(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    write_byte_tokenizer(tmp_path)
    tok = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    text = "Grüße, 世界! tabs\tand\nnewlines"
    ids = tok.encode(text).ids
    assert len(ids) == len(text.encode())  # one token per byte, no merges
    assert all(3 <= i < NUM_TOKENS for i in ids)
    assert tok.decode(ids) == text
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast" and cfg["eos_token"] == "</s>"


def test_target_is_sharded_with_an_index_above_the_shard_size(tmp_path):
    synthetic.write_target(tmp_path, SMALL, shard_bytes=200_000, tokenizer=False)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = weight_files(tmp_path)
    assert len(shards) > 1 and set(index["weight_map"].values()) == {p.name for p in shards}
    names = set(index["weight_map"])
    assert {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"} <= names
    assert f"model.layers.{SMALL.num_hidden_layers - 1}.mlp.down_proj.weight" in names
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 4 and cfg["architectures"] == ["LlamaForCausalLM"]


def test_repeat_target_adds_nothing_and_reads_out_the_embedding(tmp_path):
    synthetic.write_target(tmp_path, SMALL, repeat=True, logit_scale=0.5, tokenizer=False)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        emb = f.get_tensor("model.embed_tokens.weight").float()
        head = f.get_tensor("lm_head.weight").float()
        o_proj = f.get_tensor("model.layers.0.self_attn.o_proj.weight")
        down = f.get_tensor("model.layers.2.mlp.down_proj.weight")
    assert not o_proj.any() and not down.any()
    assert (head - 0.5 * emb).abs().max() < 1e-2


def test_repeat_draft_passes_the_first_feature_and_heads_the_hot_vocab():
    w = synthetic.eagle3_draft_tensors(SMALL, 100, repeat=True)
    fc = w["model.fc.weight"].float()
    assert fc.shape == (64, 192) and (fc[:, :64] == synthetic_eye(64)).all() and not fc[:, 64:].any()
    assert (w["lm_head.weight"] == w["model.embed_tokens.weight"][:100]).all()
    assert w["t2d"].sum() == 100 and not w["d2t"].any()


def synthetic_eye(n):
    import torch

    return torch.eye(n)


def test_demo_pair_is_built_once_in_the_automodel_layout(tmp_path):
    pair = demo.ensure_demo_pair(tmp_path, "LlamaForCausalLMEagle3")
    assert pair.exists() and (pair.draft_run / "LATEST").is_symlink()
    resolved = resolve_draft(str(pair.draft_run))
    assert resolved.model_dir.name == "consolidated" and resolved.meta_path.name == "eagle_meta.pt"
    stamp = (pair.target / "model.safetensors").stat().st_mtime_ns
    assert demo.ensure_demo_pair(tmp_path, "LlamaForCausalLMEagle3") == pair
    assert (pair.target / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in pair.target.parent.iterdir() if ".tmp-" in p.name]


def test_demo_build_failure_leaves_nothing(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(synthetic, "write_sharded_safetensors", boom)
    with pytest.raises(OSError):
        demo.ensure_demo_pair(tmp_path, "LlamaForCausalLMEagle3")
    root = demo.demo_pair(tmp_path, "LlamaForCausalLMEagle3").target.parent
    assert not any(root.iterdir())



@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process checks use /proc")
def test_a_killed_demo_build_is_cleaned_up_by_the_next_one(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # its pid is a writer that is gone
    root = demo.demo_pair(tmp_path, "LlamaForCausalLMEagle3").target.parent
    leftover = root / f".target.tmp-{proc.pid}-abcd1234"
    leftover.mkdir(parents=True)
    (leftover / "config.json").write_text("{")
    pair = demo.ensure_demo_pair(tmp_path, "LlamaForCausalLMEagle3")
    assert pair.exists() and not leftover.exists()


WIDE = synthetic.LlamaShape(hidden_size=1024, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
                            intermediate_size=128, vocab_size=300, max_position_embeddings=256)


def _next_token_probs(head, emb, x: int, temperature: float):
    """The repeat construction's next-token distribution after token ``x``: its layers add nothing,
    so the last hidden state is RMSNorm(embedding of x) and the logits are lm_head @ it."""
    import torch

    h = emb[x] / emb[x].pow(2).mean().sqrt()
    return torch.softmax(head @ h / temperature, dim=0)


def test_spread_pair_shares_the_targets_probability_over_a_group_the_draft_ranks_first(tmp_path):
    import math

    spread = synthetic.Spread(size=4, gap=1.0)
    synthetic.write_target(tmp_path, WIDE, spread=spread, tokenizer=False)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        emb, head = f.get_tensor("model.embed_tokens.weight").float(), f.get_tensor("lm_head.weight").float()
    draft = synthetic.eagle3_draft_tensors(WIDE, 200, spread=spread)
    assert (draft["model.embed_tokens.weight"].float() == emb).all()  # same embedding, hence same ranking
    for x in (0, 41, 150):
        group = list(range(x // 4 * 4, x // 4 * 4 + 4))
        greedy = _next_token_probs(head, emb, x, 1e-3)
        assert int(greedy.argmax()) == x  # greedy decoding still repeats
        p = _next_token_probs(head, emb, x, 1.0)
        assert float(p[group].sum()) > 0.99  # sampling stays inside the group...
        expected_self = 1 / (1 + 3 * math.exp(-1.0))
        assert float(p[x]) == pytest.approx(expected_self, abs=0.08)  # ...and spreads over it
        draft_top = _next_token_probs(draft["lm_head.weight"].float(), emb, x, 1.0).topk(4).indices
        assert sorted(draft_top.tolist()) == group  # a tree of topk 4 covers what the target samples


def test_no_spread_keeps_the_repeat_pair_unchanged(tmp_path):
    import torch

    plain = synthetic._embedding(WIDE, 0, "cpu", torch.bfloat16)
    assert torch.equal(plain, synthetic._embedding(WIDE, 0, "cpu", torch.bfloat16, synthetic.Spread(size=1)))
    p = _next_token_probs(plain.float(), plain.float(), 7, 1.0)
    assert float(p[7]) > 0.99  # without groups the repeated token takes it all at this temperature
