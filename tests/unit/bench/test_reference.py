"""The reference accept length against brute force, and against drafts broken on purpose.

The pair is tiny (hidden 64, 8 target layers, vocabulary 48) and built so that what SGLang's loader
reads matters:

* the target repeats its last token (the ``synthetic`` repeat construction), but every layer from
  ``CLEAN`` on writes a large feature into the 16 directions orthogonal to all embeddings: the
  greedy output is unchanged (the lm_head rows are the embeddings) while the inputs of those layers
  differ from the embedding;
* the draft passes the first captured feature through ``fc`` and predicts "repeat", and its MLP
  reads only those orthogonal directions: fed the input of target layer ``CLEAN`` (the layer it was
  "trained" on) it adds nothing and every draft token is accepted; fed any other layer's input it
  adds a large random vector and the chain falls apart;
* its vocabulary is the upper 32 target ids (``d2t`` = 16), so a lost ``d2t`` sends wrong ids.

Each known silent failure is pushed through the real export (``prepare_export``) by patching its
internals or by damaging what it wrote; the reference must fall and ``verdict`` must fail.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
# A skip mark rather than pytest.importorskip: importing transformers at collection costs every pytest-xdist
# worker its import (~0.6 s of CPU), also the workers that never run these tests.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers is not installed")

from helpers import greedy_tokens  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from automodel_spec.bench.reference import (  # noqa: E402
    _Draft,
    compute_reference,
    load_target,
    read_served_draft,
    verdict,
)
from automodel_spec.bench.workload import Prompt  # noqa: E402
from automodel_spec.demo import synthetic  # noqa: E402
from automodel_spec.draft.resolve import resolve_draft  # noqa: E402
from automodel_spec.errors import CheckpointError  # noqa: E402
from automodel_spec.export import draft_plan  # noqa: E402
from automodel_spec.prepare import prepare_export  # noqa: E402

SHAPE = synthetic.LlamaShape(hidden_size=64, num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=2,
                             intermediate_size=96, vocab_size=48, max_position_embeddings=512)
DRAFT_VOCAB, OFFSET = 32, 16
TRAINED_IDS = [0, 3, 5]  # captured: inputs of target layers 1, 4, 6 (SGLang's default would be 2, 4, 5)
CLEAN = TRAINED_IDS[0] + 1
EAGLE3 = "LlamaForCausalLMEagle3"
STEPS = 3


def _perp(emb: torch.Tensor) -> torch.Tensor:
    """Projection onto the directions orthogonal to every embedding row."""
    e = emb.double()
    return (torch.eye(e.shape[1], dtype=torch.float64) - e.T @ torch.linalg.pinv(e @ e.T) @ e).float()


def _write_target(d: Path, *, random_target: bool = False) -> Path:
    synthetic.write_target(d, SHAPE, repeat=not random_target, tokenizer=False, dtype="float32")
    if random_target:
        return d
    w = load_file(str(d / "model.safetensors"))
    perp = _perp(w["model.embed_tokens.weight"])
    gen = torch.Generator().manual_seed(5)
    for i in range(CLEAN, SHAPE.num_hidden_layers):  # layers before CLEAN add nothing
        w[f"model.layers.{i}.mlp.down_proj.weight"] = perp @ torch.randn(64, 96, generator=gen)
    save_file(w, str(d / "model.safetensors"), metadata={"format": "pt"})
    return d


def _draft_tensors(*, agree: bool = True, seed: int = 0) -> dict:
    w = synthetic.eagle3_draft_tensors(SHAPE, DRAFT_VOCAB, repeat=True, dtype="float32")
    emb = w["model.embed_tokens.weight"]
    selected = torch.arange(OFFSET, OFFSET + DRAFT_VOCAB)
    w["lm_head.weight"] = emb[selected].clone()
    w["d2t"] = selected - torch.arange(DRAFT_VOCAB)
    w["t2d"] = torch.zeros(SHAPE.vocab_size, dtype=torch.bool)
    w["t2d"][selected] = True
    perp = _perp(emb)
    gen = torch.Generator().manual_seed(9 + seed)
    p = "model.layers.0.mlp."
    w[p + "gate_proj.weight"] = torch.randn(96, 64, generator=gen) @ perp
    w[p + "up_proj.weight"] = torch.randn(96, 64, generator=gen) @ perp
    w[p + "down_proj.weight"] = torch.randn(64, 96, generator=gen)
    if not agree:  # a draft that agrees only sometimes: a random MLP reading every direction
        w[p + "gate_proj.weight"] = torch.randn(96, 64, generator=gen) * 0.3
        w[p + "up_proj.weight"] = torch.randn(96, 64, generator=gen) * 0.3
        w[p + "down_proj.weight"] = torch.randn(64, 96, generator=gen) * 8e-4
    return w


def _run_dir(d: Path, tensors: dict) -> Path:
    cfg = synthetic.automodel_eagle3_config(SHAPE, DRAFT_VOCAB)
    cfg["torch_dtype"] = "float32"
    synthetic.write_automodel_run(d, cfg, tensors, selected_token_ids=torch.arange(OFFSET, OFFSET + DRAFT_VOCAB),
                                  vocab_size=SHAPE.vocab_size,
                                  recipe={"model": {"eagle": {"algorithm": "eagle3", "aux_layer_ids": TRAINED_IDS}}})
    return d


def _export(tmp: Path, tensors: dict | None = None, name: str = "run", aux_layer_ids=TRAINED_IDS) -> Path:
    run = _run_dir(tmp / name, tensors if tensors is not None else _draft_tensors())
    res = prepare_export(resolve_draft(str(run)), EAGLE3, aux_layer_ids=aux_layer_ids, cache_dir=tmp / f"cache-{name}")
    return res.path


PROMPTS = [Prompt(id=str(i), category="ids", input_ids=tuple(int(t) for t in ids)) for i, ids in enumerate(
    [[20, 31, 40, 22], [17, 47, 33], [45, 18, 29, 36, 16, 41], [30, 30, 25, 19, 44]])]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    target_dir = _write_target(tmp / "target")
    return tmp, target_dir, load_target(str(target_dir), "cpu", torch.float32)


def _reference(pair, draft_dir: Path, steps: int = STEPS, max_new: int = 24):
    _, target_dir, target = pair
    return compute_reference(str(target_dir), str(draft_dir), steps, PROMPTS, max_new_tokens=max_new,
                             device="cpu", target=target)


def _brute_force_rounds(target, draft: _Draft, aux_layers, ids: list[int], steps: int, n: int) -> tuple[int, list[int]]:
    """Verify rounds and accepted drafts per round, one prompt, one token at a time, no padding or
    batching: each proposal from a fresh draft pass over exactly its sequence, checked against the
    target's greedy output."""
    full = list(ids) + greedy_tokens(target, ids, n + steps)  # a last round may accept past the budget
    with torch.no_grad():
        hs = target(torch.tensor([full]), output_hidden_states=True).hidden_states
        feats = torch.cat([hs[c] for c in aux_layers], dim=-1)[0]
    made, rounds, accepted = 1, 0, []
    while made < n:
        pos = len(ids) + made  # the sequence holds full[:pos]; full[pos - 1] is the unverified token
        toks, hidden = list(full[1:pos]), list(draft.fc(feats[None, :pos - 1])[0])
        proposals = []
        for _ in range(steps):
            logits, back = draft.forward(torch.tensor([toks]), torch.stack(hidden)[None])
            d = int(draft.to_target_ids(logits[0, -1].argmax()))
            proposals.append(d)
            toks.append(d)
            hidden.append(back[0, -1])
        k = 0
        while k < steps and proposals[k] == full[pos + k]:
            k += 1
        rounds += 1
        accepted.append(k)
        made += k + 1
    return rounds, accepted


def test_agreeing_draft_accepts_every_token_and_outputs_the_targets_greedy_tokens(pair):
    tmp, _, target = pair
    ref = _reference(pair, _export(tmp))
    assert ref.problems == [] and ref.aux_layers == [1, 4, 6]
    for p, pr in zip(PROMPTS, ref.prompts, strict=True):
        assert pr.output_ids == greedy_tokens(target, list(p.input_ids), 24)
        assert pr.histogram[:STEPS] == [0] * STEPS  # every round accepted all drafts
    # 24 tokens: 1 from the prefill, then rounds of 4: ceil(23 / 4) = 6 rounds
    assert ref.accept_length == pytest.approx(24 / 6)
    assert verdict(ref.accept_length, ref.accept_length)[0]


@pytest.mark.parametrize("random_target", [False, True])
def test_partly_agreeing_draft_matches_a_brute_force_count(tmp_path, random_target):
    target_dir = _write_target(tmp_path / "target", random_target=random_target)
    target = load_target(str(target_dir), "cpu", torch.float32)
    draft_dir = _export(tmp_path, _draft_tensors(agree=False))
    ref = compute_reference(str(target_dir), str(draft_dir), 4, PROMPTS, max_new_tokens=20, device="cpu",
                            target=target, batch_size=3)  # a second batch of one: batching is exercised
    served = read_served_draft(draft_dir, target.config.to_dict())
    draft = _Draft(served, target, "cpu", torch.float32)
    total_rounds = 0
    for p, pr in zip(PROMPTS, ref.prompts, strict=True):
        assert pr.output_ids == greedy_tokens(target, list(p.input_ids), 20)
        rounds, accepted = _brute_force_rounds(target, draft, served.aux_layers, list(p.input_ids), 4, 20)
        assert pr.rounds == rounds
        assert pr.histogram == [accepted.count(k) for k in range(5)]
        total_rounds += rounds
    assert ref.accept_length == pytest.approx(20 * len(PROMPTS) / total_rounds)
    if not random_target:  # neither all accepted nor none: the count is not trivial
        assert 1.2 < ref.accept_length < 4.5


def _rewrite(export: Path, dest: Path, *, config=None, tensors=None) -> Path:
    """A copy of the export with its config or tensors changed (an export bug, made on purpose)."""
    dest.mkdir()
    cfg = json.loads((export / "config.json").read_text())
    w = load_file(str(export / "model.safetensors"))
    if config:
        config(cfg)
    if tensors:
        w = tensors(w)
    (dest / "config.json").write_text(json.dumps(cfg))
    save_file(w, str(dest / "model.safetensors"), metadata={"format": "pt"})
    return dest


def _assert_caught(ref, good: float, *, reported: bool = True):
    assert ref.accept_length < 0.6 * good, "the reference did not fall"
    ok, text = verdict(ref.accept_length, ref.accept_length, ref.problems, min_accept_length=0.95 * good)
    assert not ok, "the check passed a broken draft"
    if reported:
        assert ref.problems, "the reference did not say what SGLang would serve differently"


def test_num_hidden_layers_copied_from_the_target_is_caught(pair, monkeypatch):
    tmp, _, _ = pair
    good = _reference(pair, _export(tmp)).accept_length
    monkeypatch.setattr(draft_plan, "set_layer_count", lambda cfg, n, notes: None)  # the export's fix, lost
    export = _export(tmp, name="layers")
    assert json.loads((export / "config.json").read_text())["num_hidden_layers"] == SHAPE.num_hidden_layers
    ref = _reference(pair, export)
    assert any("num_hidden_layers=8" in p for p in ref.problems)
    _assert_caught(ref, good)


@pytest.mark.parametrize("ids", [None, [1, 4, 6]], ids=["lost", "shifted"])
def test_aux_layer_ids_lost_or_shifted_make_the_reference_fall(pair, ids):
    tmp, _, _ = pair
    good = _reference(pair, _export(tmp)).accept_length

    def set_ids(cfg):
        if ids is None:
            cfg.pop("eagle_config", None)
        else:
            cfg["eagle_config"]["eagle_aux_hidden_state_layer_ids"] = ids

    broken = _rewrite(_export(tmp), tmp / f"aux-{ids}", config=set_ids)
    ref = _reference(pair, broken)
    assert ref.aux_layers == ([2, 4, 5] if ids is None else [2, 5, 7])
    _assert_caught(ref, good, reported=False)  # nothing in the export can tell: the expected length does


def test_d2t_dropped_is_caught(pair):
    tmp, _, _ = pair
    good = _reference(pair, _export(tmp)).accept_length
    broken = _rewrite(_export(tmp), tmp / "no-d2t", tensors=lambda w: {k: v for k, v in w.items() if k != "d2t"})
    ref = _reference(pair, broken)
    assert any("no d2t" in p for p in ref.problems)
    _assert_caught(ref, good)


def test_weight_names_sglang_does_not_know_are_caught(pair):
    tmp, _, _ = pair
    good = _reference(pair, _export(tmp)).accept_length
    renamed = {"fc.weight": "model.fc_proj.weight", "norm.weight": "model.final_norm.weight"}
    broken = _rewrite(_export(tmp), tmp / "names", tensors=lambda w: {renamed.get(k, k): v for k, v in w.items()})
    ref = _reference(pair, broken)
    assert any("skips without a word" in p and "model.fc_proj.weight" in p for p in ref.problems)
    assert any("model.fc.weight" in p for p in ref.problems)  # left random
    _assert_caught(ref, good)


@pytest.mark.parametrize("arch", ["LlamaEagle3DraftModel", "LlamaForCausalLM"])
def test_an_architecture_sglang_does_not_serve_as_eagle_is_refused(pair, arch):
    tmp, target_dir, target = pair
    broken = _rewrite(_export(tmp), tmp / f"arch-{arch}", config=lambda c: c.update(architectures=[arch]))
    with pytest.raises(CheckpointError, match=arch):
        _reference(pair, broken)


def test_a_tree_is_reported_as_a_lower_bound(pair):
    tmp, target_dir, target = pair
    ref = compute_reference(str(target_dir), str(_export(tmp)), 2, PROMPTS[:1], topk=4, max_new_tokens=8,
                            device="cpu", target=target)
    assert not ref.exact
    ok, text = verdict(ref.accept_length * 1.3, ref.accept_length, exact=False)
    assert ok and "lower bound" in text
    assert not verdict(ref.accept_length * 0.9, ref.accept_length, exact=False)[0]


def test_served_below_the_reference_names_what_to_check():
    ok, text = verdict(1.5, 3.0)
    assert not ok and "50% below" in text and "aux layer ids" in text and "num_hidden_layers" in text
    assert verdict(2.9, 3.0)[0]


def test_the_command_line_prints_the_table_and_fails_on_a_broken_draft(pair, tmp_path, capsys):
    from automodel_spec.bench.reference import main

    tmp, target_dir, _ = pair
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"input_ids": list(p.input_ids)}) + "\n" for p in PROMPTS[:2]))
    args = ["--target", str(target_dir), "--num-steps", "3", "--prompts", str(prompts), "--num-prompts", "2",
            "--max-new-tokens", "9", "--device", "cpu"]
    out_json = tmp_path / "ref.json"
    assert main([*args, "--draft", str(_export(tmp)), "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert "accept length   4.500" in text and "target layers captured (inputs of) [1, 4, 6]" in text
    assert json.loads(out_json.read_text())["accept_length"] == 4.5
    assert main([*args, "--draft", str(_export(tmp)), "--served", "2.0"]) == 1
    assert "below the reference 4.50" in capsys.readouterr().out
    assert main([*args, "--draft", str(_export(tmp)), "--expected-accept-length", "4.6"]) == 1
    assert "below the expected 4.60" in capsys.readouterr().out
    broken = _rewrite(_export(tmp), tmp_path / "no-d2t", tensors=lambda w: {k: v for k, v in w.items() if k != "d2t"})
    assert main([*args, "--draft", str(broken)]) == 1
    assert "WARNING: draft_vocab_size=32 < vocab_size=48 and no d2t" in capsys.readouterr().out
    assert main([*args, "--draft", str(tmp_path / "nowhere")]) == 1
    assert "cannot read the draft's config" in capsys.readouterr().err


def test_eagle1_draft_follows_sglangs_eagle_loader(tmp_path):
    """EAGLE-1/2: fc over embeds ++ the target's final hidden, the target's lm_head; the repeat draft
    agrees with the repeat target, and a draft whose fc is dropped (unknown name) falls."""
    target_dir = synthetic.write_target(tmp_path / "target", SHAPE, repeat=True, tokenizer=False, dtype="float32")
    target = load_target(str(target_dir), "cpu", torch.float32)
    run = tmp_path / "run"
    cfg = synthetic.automodel_eagle_config(SHAPE)
    cfg["torch_dtype"] = "float32"
    synthetic.write_automodel_run(run, cfg, synthetic.eagle_draft_tensors(SHAPE, dtype="float32"),
                                  recipe={"model": {"eagle": {"algorithm": "eagle"}}})
    export = prepare_export(resolve_draft(str(run)), "LlamaForCausalLMEagle", cache_dir=tmp_path / "cache").path
    ref = compute_reference(str(target_dir), str(export), 3, PROMPTS, max_new_tokens=13, device="cpu", target=target)
    assert ref.algorithm == "EAGLE" and ref.problems == [] and ref.aux_layers == []
    assert ref.accept_length == pytest.approx(13 / 3)  # 1 + 3 rounds of 4
    broken = _rewrite(export, tmp_path / "fc", tensors=lambda w: {k.replace("fc.", "fc_in."): v for k, v in w.items()})
    bad = compute_reference(str(target_dir), str(broken), 3, PROMPTS, max_new_tokens=13, device="cpu", target=target)
    assert any("model.fc.weight" in p for p in bad.problems) and bad.accept_length < 0.6 * ref.accept_length


def test_eagle1_token_map_limits_the_draft_to_its_hot_tokens(tmp_path):
    """With a token map SGLang keeps only those rows of the target's lm_head: a token outside it is
    never proposed (the repeat target repeats token 5, the hot set is 16..47)."""
    target_dir = synthetic.write_target(tmp_path / "target", SHAPE, repeat=True, tokenizer=False, dtype="float32")
    target = load_target(str(target_dir), "cpu", torch.float32)
    run = tmp_path / "run"
    cfg = synthetic.automodel_eagle_config(SHAPE)
    synthetic.write_automodel_run(run, cfg, synthetic.eagle_draft_tensors(SHAPE, dtype="float32"),
                                  selected_token_ids=torch.arange(OFFSET, OFFSET + DRAFT_VOCAB),
                                  vocab_size=SHAPE.vocab_size, recipe={"model": {"eagle": {"algorithm": "eagle"}}})
    export = prepare_export(resolve_draft(str(run)), "LlamaForCausalLMEagle", cache_dir=tmp_path / "cache").path
    assert (export / "token_map.pt").is_file()
    prompts = [Prompt(id="hot", category="ids", input_ids=(20, 30)), Prompt(id="cold", category="ids", input_ids=(20, 5))]
    ref = compute_reference(str(target_dir), str(export), 3, prompts, max_new_tokens=13, device="cpu", target=target)
    hot, cold = ref.prompts
    assert hot.histogram == [0, 0, 0, 3] and cold.histogram == [12, 0, 0, 0]
    assert cold.output_ids == [5] * 13  # the target's own greedy tokens either way


def test_draft_vocab_size_null_takes_the_targets_lm_head(pair):
    """SGLang's load_lm_head_from_target: no lm_head and no d2t in the export, the target's head."""
    tmp, _, _ = pair

    def full_vocab(cfg):
        cfg["draft_vocab_size"] = None

    broken = _rewrite(_export(tmp), tmp / "full-vocab", config=full_vocab,
                      tensors=lambda w: {k: v for k, v in w.items() if k not in ("lm_head.weight", "d2t", "t2d")})
    ref = _reference(pair, broken)
    assert ref.problems == [] and ref.accept_length == pytest.approx(24 / 6)


@pytest.mark.parametrize("change", [
    lambda c: c.update(architectures="LlamaForCausalLMEagle3"),  # a string, not a list
    lambda c: c.update(hidden_size="sixty-four"),
    lambda c: c.update(num_attention_heads=0),
], ids=["architectures-string", "hidden-size-text", "zero-heads"])
def test_a_hostile_config_is_a_clear_error(pair, tmp_path, change):
    tmp, _, target = pair
    broken = _rewrite(_export(tmp), tmp_path / "bad", config=change)
    with pytest.raises(CheckpointError, match="config.json"):
        read_served_draft(broken, target.config.to_dict())
