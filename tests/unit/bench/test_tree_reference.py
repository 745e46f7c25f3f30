"""The reference for trees and for sampling against brute force, on a tiny random pair.

The pair: a random target (hidden 64, 4 layers, vocabulary 48) and an EAGLE-3 draft over the upper 32
ids (``d2t``) whose MLP is random, exported by the real export. At temperature 0 every round of the
reference's tree is held against a tree built by brute force: every draft distribution computed
afresh over exactly its path (no batching, no padding), every candidate path enumerated by depth, and
the accepted path taken as the longest prefix of the target's own greedy continuation in the tree.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

torch = pytest.importorskip("torch")
# A skip mark rather than pytest.importorskip: importing transformers at collection costs every pytest-xdist
# worker its import (~0.6 s of CPU), also the workers that never run these tests.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers is not installed")

from helpers import greedy_tokens  # noqa: E402

from automodel_spec.bench.reference import _Draft, compute_reference, load_target, main, read_served_draft  # noqa: E402
from automodel_spec.bench.tree_reference import Sampling  # noqa: E402
from automodel_spec.bench.workload import Prompt  # noqa: E402
from automodel_spec.demo import synthetic  # noqa: E402
from automodel_spec.draft.resolve import resolve_draft  # noqa: E402
from automodel_spec.errors import CheckpointError, ConfigError  # noqa: E402
from automodel_spec.prepare import prepare_export  # noqa: E402

SHAPE = synthetic.LlamaShape(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                             intermediate_size=96, vocab_size=48, max_position_embeddings=512)
DRAFT_VOCAB, OFFSET = 32, 16
PROMPTS = [Prompt(id=str(i), category="ids", input_ids=tuple(ids)) for i, ids in enumerate(
    [[20, 31, 40, 22], [17, 47, 33], [45, 18, 29, 36, 16]])]


def _draft_tensors(seed: int) -> dict:
    w = synthetic.eagle3_draft_tensors(SHAPE, DRAFT_VOCAB, repeat=True, dtype="float32")
    selected = torch.arange(OFFSET, OFFSET + DRAFT_VOCAB)
    w["lm_head.weight"] = w["model.embed_tokens.weight"][selected].clone()
    w["d2t"] = selected - torch.arange(DRAFT_VOCAB)
    w["t2d"] = torch.zeros(SHAPE.vocab_size, dtype=torch.bool)
    w["t2d"][selected] = True
    gen = torch.Generator().manual_seed(seed)
    p = "model.layers.0.mlp."
    w[p + "gate_proj.weight"] = torch.randn(96, 64, generator=gen) * 0.3
    w[p + "up_proj.weight"] = torch.randn(96, 64, generator=gen) * 0.3
    w[p + "down_proj.weight"] = torch.randn(64, 96, generator=gen) * 1e-3
    return w


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tree")
    target_dir = tmp / "target"
    synthetic.write_target(target_dir, SHAPE, repeat=True, tokenizer=False, dtype="float32")
    cfg = synthetic.automodel_eagle3_config(SHAPE, DRAFT_VOCAB)
    cfg["torch_dtype"] = "float32"
    synthetic.write_automodel_run(tmp / "run", cfg, _draft_tensors(3),
                                  selected_token_ids=torch.arange(OFFSET, OFFSET + DRAFT_VOCAB),
                                  vocab_size=SHAPE.vocab_size)
    export = prepare_export(resolve_draft(str(tmp / "run")), "LlamaForCausalLMEagle3", cache_dir=tmp / "cache").path
    target = load_target(str(target_dir), "cpu", torch.float32)
    return target_dir, export, target


def _reference(pair, steps, topk, tokens, max_new=14, **kw):
    target_dir, export, target = pair
    return compute_reference(str(target_dir), str(export), steps, PROMPTS, topk=topk, num_draft_tokens=tokens,
                             max_new_tokens=max_new, device="cpu", target=target, batch_size=2, **kw)


def _brute_force_round(target, draft: _Draft, aux, seq: list[int], steps: int, topk: int, tokens: int) -> int:
    """Drafts accepted in one round, from scratch: the tree by enumeration of candidate paths by depth."""
    with torch.no_grad():
        hs = target(torch.tensor([seq]), output_hidden_states=True).hidden_states
        base = list(draft.fc(torch.cat([hs[c] for c in aux], dim=-1)[:, :len(seq) - 1])[0])
        memo = {}

        def run(path):  # (the draft's top-k over target ids after `path`, the hidden it feeds back there)
            if path not in memo:
                hidden = base + [run(path[:k])[1] for k in range(len(path))]
                logits, back = draft.forward(torch.tensor([seq[1:] + list(path)]), torch.stack(hidden)[None])
                probs = torch.softmax(logits[0, -1], -1)
                top = torch.topk(probs, topk)
                ids = draft.to_target_ids(top.indices).tolist()
                memo[path] = (list(zip(top.values.tolist(), ids, strict=True)), back[0, -1])
            return memo[path]

        score, beam = {(): 1.0}, [()]
        for _ in range(steps):
            level = {b + (t,): score[b] * p for b in beam for p, t in run(b)[0]}
            score.update(level)
            beam = sorted(level, key=lambda q: -level[q])[:topk]
        del score[()]
        chosen = set(sorted(score, key=lambda q: -score[q])[:tokens - 1])
    greedy = greedy_tokens(target, seq, steps + 1)
    k = 0
    while k < steps and tuple(greedy[:k + 1]) in chosen:
        k += 1
    return k


@pytest.mark.parametrize("steps,topk,tokens", [(3, 2, 5), (2, 3, 7), (3, 3, 4)])
def test_tree_accepts_the_brute_force_path_every_round(pair, steps, topk, tokens):
    target_dir, export, target = pair
    ref = _reference(pair, steps, topk, tokens)
    assert ref.kind == "exact" and ref.num_draft_tokens == tokens
    draft = _Draft(read_served_draft(export, target.config.to_dict()), target, "cpu", torch.float32)
    for p, pr in zip(PROMPTS, ref.prompts, strict=True):
        ids = list(p.input_ids)
        assert pr.output_ids == greedy_tokens(target, ids, 14)  # lossless: the target's own greedy output
        seq, made = ids + pr.output_ids[:1], 1
        for k in pr.accepted_per_round:
            assert _brute_force_round(target, draft, ref.aux_layers, seq, steps, topk, tokens) == k
            seq += pr.output_ids[made:made + k + 1]
            made += k + 1
        assert made >= 14 and len(pr.accepted_per_round) == pr.rounds
    assert ref.histogram[0] < sum(ref.histogram) and ref.histogram[1] > 0  # neither none nor all accepted


def test_a_chain_is_the_tree_of_topk_one(pair):
    chain = _reference(pair, 3, 1, None)
    assert chain.kind == "exact" and chain.num_draft_tokens == 4
    target_dir, export, target = pair
    draft = _Draft(read_served_draft(export, target.config.to_dict()), target, "cpu", torch.float32)
    for p, pr in zip(PROMPTS, chain.prompts, strict=True):
        seq, made = list(p.input_ids) + pr.output_ids[:1], 1
        for k in pr.accepted_per_round:
            assert _brute_force_round(target, draft, chain.aux_layers, seq, 3, 1, 4) == k
            seq += pr.output_ids[made:made + k + 1]
            made += k + 1


def test_a_tree_without_its_size_is_a_lower_bound(pair):
    ref = _reference(pair, 3, 4, None, max_new=6)
    assert ref.kind == "bound" and not ref.exact


def test_sampling_matches_the_exact_expected_accepts_of_its_rounds(pair):
    """At T=1 the accepted drafts drawn in the rounds and the exact expectations of the same rounds
    (products of the target's probabilities on a chain) agree within sampling error."""
    for topk, tokens in [(1, None), (2, 5)]:
        ref = _reference(pair, 3, topk, tokens, max_new=20, sampling=Sampling(temperature=1.0, samples=6))
        assert ref.kind == "interval"
        low, high = ref.interval
        assert low < ref.accept_length < high
        rounds = sum(p.rounds for p in ref.prompts)
        drawn = sum(k * v for k, v in enumerate(ref.histogram))
        exact = sum(p.expected_accepted for p in ref.prompts)
        sd = (sum(k * k * v for k, v in enumerate(ref.histogram)) / rounds - (drawn / rounds) ** 2) ** 0.5
        assert abs(drawn - exact) / rounds < 4 * sd / rounds ** 0.5 + 1e-9
        assert exact > 0 and ref.expected_per_round == pytest.approx(1 + exact / rounds)


def test_the_same_seed_gives_the_same_interval(pair):
    a = _reference(pair, 2, 2, 4, max_new=8, sampling=Sampling(temperature=0.7, samples=3, seed=5))
    b = _reference(pair, 2, 2, 4, max_new=8, sampling=Sampling(temperature=0.7, samples=3, seed=5))
    assert a.interval == b.interval and a.accept_length == b.accept_length


@pytest.mark.parametrize("kw,words", [
    ({"sampling": Sampling(temperature=1.0, rejection=True)}, "requires topk=1"),
    ({"sampling": Sampling(temperature=1.0, threshold_acc=0.0)}, "threshold_acc=0.0"),
    ({"sampling": Sampling(temperature=-1.0)}, "temperature=-1.0"),
])
def test_settings_sglang_refuses_are_refused(pair, kw, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        _reference(pair, 3, 2, 5, **kw)


def test_a_tree_larger_than_sglang_builds_is_refused(pair):
    with pytest.raises(ConfigError, match="num_draft_tokens=9"):
        _reference(pair, 2, 2, 9)


def _prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": p.id, "category": "ids", "input_ids": list(p.input_ids)}) + "\n"
                            for p in PROMPTS))
    return path


def test_the_command_line_says_interval_and_writes_it(pair, tmp_path, capsys):
    target_dir, export, _ = pair
    out = tmp_path / "ref.json"
    code = main(["--target", str(target_dir), "--draft", str(export), "--num-steps", "3", "--topk", "2",
                 "--num-draft-tokens", "5", "--temperature", "1", "--samples", "2", "--max-new-tokens", "8",
                 "--prompts", str(_prompts_file(tmp_path)), "--num-prompts", "3", "--device", "cpu",
                 "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    data = json.loads(out.read_text())
    assert data["kind"] == "interval" and data["num_draft_tokens"] == 5 and data["temperature"] == 1.0
    low, high = data["interval"]
    assert low <= data["accept_length"] <= high
    assert "tree 3/2/5, T=1, target-only, thresholds 1/1, 2 generations per prompt" in printed
    assert f"({data['kind']})" in printed and "99% interval" in printed and "exact per round" in printed
    assert data["expected_per_round"] > 1


@pytest.mark.parametrize("args,words", [
    (["--temperature", "-1"], "temperature=-1.0"),
    (["--temperature", "1", "--samples", "1"], "samples=1"),
    (["--topk", "2", "--num-draft-tokens", "9", "--num-steps", "2"], "num_draft_tokens=9"),
    (["--topk", "2", "--temperature", "0.5"], "without num_draft_tokens"),
    (["--num-prompts", "0"], "--num-prompts 0: give 1 or more"),
    (["--max-new-tokens", "0"], "max_new_tokens=0"),
    (["--json", "{tmp}"], "is a directory"),  # refused before the computation, not after it
    (["--json", "{tmp}/prompts.jsonl/r.json"], "is not a directory"),
    pytest.param(["--device", "cuda"], "sees no CUDA GPU here", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="a CUDA GPU is here")),
])
def test_bad_settings_on_the_command_line_are_named_without_a_traceback(pair, tmp_path, capsys, args, words):
    target_dir, export, _ = pair
    base = ["--target", str(target_dir), "--draft", str(export), "--prompts", str(_prompts_file(tmp_path)),
            "--device", "cpu"]
    args = [a.format(tmp=tmp_path) for a in args]
    code = main(base + (["--num-steps", "3"] if "--num-steps" not in args else []) + args)
    err = capsys.readouterr().err
    assert code != 0 and words in err and err.startswith("error: ") and "Traceback" not in err


def test_the_json_goes_where_it_is_asked_its_directories_made(pair, tmp_path, capsys):
    target_dir, export, _ = pair
    out = tmp_path / "new" / "deeper" / "reference.json"
    assert main(["--target", str(target_dir), "--draft", str(export), "--prompts", str(_prompts_file(tmp_path)),
                 "--num-steps", "2", "--num-prompts", "1", "--max-new-tokens", "4", "--device", "cpu",
                 "--json", str(out)]) == 0, capsys.readouterr()
    assert json.loads(out.read_text())["kind"] == "exact"


def test_workers_compute_each_prompt_as_one_process_does(pair):
    """Prompts split over two spawned processes: every prompt's generations, rounds and histogram as in one
    process, the sampled draws included (seeded by the prompt's place in the whole set, not in its slice)."""
    target_dir, export, target = pair
    sampling = Sampling(temperature=1.0, samples=2, seed=5)
    kw = dict(topk=2, num_draft_tokens=4, max_new_tokens=10, device="cpu", sampling=sampling)
    one = compute_reference(str(target_dir), str(export), 3, PROMPTS, target=target, **kw)
    split = compute_reference(str(target_dir), str(export), 3, PROMPTS, workers=2, **kw)
    assert [p.prompt_id for p in split.prompts] == [p.prompt_id for p in one.prompts]
    assert [(p.output_ids, p.sample_rounds, p.histogram, p.expected_accepted) for p in split.prompts] == \
           [(p.output_ids, p.sample_rounds, p.histogram, p.expected_accepted) for p in one.prompts]
    assert split.interval == one.interval and split.kind == "interval"


def test_a_draft_that_cannot_be_read_is_refused_before_any_worker_starts(pair, tmp_path):
    target_dir, _, _ = pair
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["MistralForCausalLM"]}))
    with pytest.raises(CheckpointError, match="MistralForCausalLM"):
        compute_reference(str(target_dir), str(tmp_path), 3, PROMPTS, device="cpu", workers=2)


def test_no_workers_is_refused_by_name(pair):
    target_dir, export, _ = pair
    with pytest.raises(ConfigError, match="workers=0"):
        compute_reference(str(target_dir), str(export), 3, PROMPTS, device="cpu", workers=0)


def test_progress_counts_every_token_decoded_once(pair, monkeypatch):
    """The bar reaches its total exactly: each generation's max_new_tokens, not the tokens a last round decodes
    past them (a tree accepting several drafts at once)."""
    from automodel_spec.bench import reference

    target_dir, export, target = pair
    bars = []

    class Recorder:
        def __init__(self, total, label, unit="req"):
            self.total, self.unit, self.n, self.closed = total, unit, 0, False
            bars.append(self)

        def update(self, k):
            self.n += k

        def close(self):
            self.closed = True

    monkeypatch.setattr(reference, "progress_bar", Recorder)
    greedy = compute_reference(str(target_dir), str(export), 3, PROMPTS, target=target, topk=2, num_draft_tokens=5,
                               max_new_tokens=10, device="cpu")
    # a last round decoding past the 10 tokens: 1 (the prefill's) + 2 a round
    assert any(1 + sum(k + 1 for k in p.accepted_per_round) > 10 for p in greedy.prompts)
    compute_reference(str(target_dir), str(export), 3, PROMPTS, target=target, topk=2, num_draft_tokens=5,
                      max_new_tokens=10, device="cpu", sampling=Sampling(temperature=1.0, samples=2, seed=3))
    assert [(b.unit, b.total, b.n, b.closed) for b in bars] == [("tok", len(PROMPTS) * 10, len(PROMPTS) * 10, True),
                                                                 ("tok", len(PROMPTS) * 20, len(PROMPTS) * 20, True)]
    compute_reference(str(target_dir), str(export), 3, PROMPTS, target=target, max_new_tokens=9, device="cpu",
                      progress=False)
    assert len(bars) == 2  # none asked for, none shown
