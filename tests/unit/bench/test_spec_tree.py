"""SGLang's tree and verify rules (``spec_tree``) against hand-worked trees and exact chances, and the
decoding loop (``tree_reference``) on bigram pairs where a draft's temperature bug can be made on purpose.

A bigram pair: the target's and the draft's next-token logits depend on the last token only (tables
``[V, V]``), behind the interfaces the reference drives (``get_decoder`` / ``get_output_embeddings``;
``fc`` / ``forward`` / ``to_target_ids``), so every distribution is known exactly.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from automodel_spec.bench.reference import verdict  # noqa: E402
from automodel_spec.bench.spec_tree import (  # noqa: E402
    DraftTree,
    TreeBuilder,
    accept_rejection_chain,
    expected_accepted,
    reach_probabilities,
    sample_target_only,
    verify_greedy,
)
from automodel_spec.bench.tree_reference import Sampling, interval_of, run_tree  # noqa: E402


def _build(topk, steps, tokens, dist):
    b = TreeBuilder(topk, steps, tokens)
    while not b.done:
        b.expand([dist(path) for path in b.pending()])
    return b.tree()


def test_the_tree_keeps_the_best_candidates_of_every_step_in_sglangs_order():
    # root: a .6, b .4; after a: c .9 d .1; after b: e .5 f .5; after ac: g .8 h .2; after be: i 1 j 0
    table = {(): [(0.6, 1), (0.4, 2)], (1,): [(0.9, 3), (0.1, 4)], (2,): [(0.5, 5), (0.5, 6)],
             (1, 3): [(0.8, 7), (0.2, 8)], (2, 5): [(1.0, 9), (0.0, 10)]}
    tree = _build(2, 3, 5, lambda path: table[path])
    # candidates: a .6 b .4 | ac .54 ad .06 be .2 bf .2 | beam ac, be -> acg .432 ach .108 bei .2 bej 0
    # best four: a .6, ac .54, acg .432, b .4; in the order they were made: a, b, ac, acg
    assert tree.tokens == [-1, 1, 2, 3, 7]
    assert tree.parents == [-1, 0, 0, 1, 3]
    assert tree.children(0) == [1, 2] and tree.path(4) == (1, 3, 7) and tree.depth(4) == 3
    assert verify_greedy(tree, [1, 3, 9, 7, 5]) == ([1, 3, 4], 5)  # the longest matching path, then the bonus
    assert verify_greedy(tree, [2, 0, 4, 0, 0]) == ([2], 4)


def test_a_chain_is_topk_one_whatever_the_probabilities():
    tree = _build(1, 4, 5, lambda path: [(0.01, len(path) + 10)])
    assert tree.tokens == [-1, 10, 11, 12, 13] and tree.parents == [-1, 0, 1, 2, 3]


@pytest.mark.parametrize("topk,steps,tokens", [(2, 3, 12), (2, 1, 4), (3, 2, 1)])
def test_sizes_sglang_cannot_build_are_refused(topk, steps, tokens):
    with pytest.raises(ValueError, match=f"num_draft_tokens={tokens}"):
        TreeBuilder(topk, steps, tokens)


def _random_tree(seed: int, vocab: int = 6):
    gen = torch.Generator().manual_seed(seed)

    def dist(path):
        p = torch.softmax(torch.randn(vocab, generator=gen) * 2, -1)
        top = torch.topk(p, 3)
        return list(zip(top.values.tolist(), top.indices.tolist(), strict=True))

    tree = _build(3, 3, 8, dist)
    probs = torch.softmax(torch.randn(len(tree.tokens), vocab, generator=gen) * 2, -1)
    return tree, probs


def test_a_chains_expected_accepts_are_products_of_the_targets_probabilities():
    chain = DraftTree(tokens=[-1, 2, 0, 1], parents=[-1, 0, 1, 2], scores=[1.0] * 4)
    q = torch.tensor([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2], [0.25, 0.6, 0.15], [1 / 3] * 3])
    survive = expected_accepted(chain, lambda node, token: q[node, token])
    assert survive == pytest.approx([0.7, 0.7 * 0.5, 0.7 * 0.5 * 0.6])


@pytest.mark.parametrize("single,acc", [(1.0, 1.0), (0.3, 1.0), (1.0, 0.6), (0.5, 0.4)])
def test_sampling_accepts_each_node_as_often_as_its_exact_chance(single, acc):
    """10,000 rounds of target-only sampling on a random tree: how often each node is accepted
    matches ``reach_probabilities`` (the kernel's test, read as chances) within 4 standard errors."""
    tree, probs = _random_tree(1)
    reach = reach_probabilities(tree, lambda node, token: probs[node, token], single, acc)
    gen = torch.Generator().manual_seed(0)
    n, hits = 10_000, [0] * len(tree.tokens)
    for _ in range(n):
        accepted, _ = sample_target_only(tree, probs, gen, single, acc)
        for a in accepted:
            hits[a] += 1
    for node in range(1, len(tree.tokens)):
        se = (reach[node] * (1 - reach[node]) / n) ** 0.5
        assert abs(hits[node] / n - reach[node]) <= 4 * se + 1e-3, node
    assert max(reach[1:]) > 0.1  # the tree is accepted often enough to test something


def test_with_the_default_thresholds_the_next_token_is_distributed_as_the_target():
    """Lossless sampling: the first token after the root, accepted draft or bonus, follows the target's q."""
    tree, probs = _random_tree(2)
    gen = torch.Generator().manual_seed(1)
    n, counts = 10_000, torch.zeros(probs.shape[1])
    for _ in range(n):
        accepted, bonus = sample_target_only(tree, probs, gen)
        counts[tree.tokens[accepted[0]] if accepted else bonus] += 1
    se = (probs[0] * (1 - probs[0]) / n) ** 0.5
    assert torch.all((counts / n - probs[0]).abs() <= 4 * se + 1e-3)


def test_rejection_sampling_accepts_a_draw_with_the_overlap_of_the_two_distributions():
    q_draft = torch.tensor([0.6, 0.3, 0.1])
    p_target = torch.tensor([[0.2, 0.5, 0.3], [1 / 3] * 3])
    gen = torch.Generator().manual_seed(2)
    n, accepted = 10_000, 0
    for _ in range(n):
        token = int(torch.multinomial(q_draft, 1, generator=gen))
        accepted += accept_rejection_chain([token], [q_draft], p_target, gen)[0]
    overlap = float(torch.minimum(q_draft, p_target[0]).sum())  # 0.2 + 0.3 + 0.1
    assert abs(accepted / n - overlap) <= 4 * (overlap * (1 - overlap) / n) ** 0.5


def test_the_interval_holds_one_run_of_a_known_spread():
    rounds = [[10, 12, 11, 13], [20, 18, 22, 20]]
    mean, low, high = interval_of(rounds, [32, 64])
    assert mean == pytest.approx(96 / (11.5 + 20))
    var = (2.25 + 0.25 + 0.25 + 2.25) / 3 + (0 + 4 + 4 + 0) / 3  # each prompt's variance over its draws
    spread = 2.576 * (var * (1 + 1 / 4)) ** 0.5  # one run's spread and the mean's, at 99%
    assert (low, high) == pytest.approx((96 / (31.5 + spread), 96 / (31.5 - spread)))


def test_the_interval_never_goes_below_one_token_a_round():
    """Two prompts of widely spread draws: the normal's low end would ask for more rounds than tokens."""
    _, low, _ = interval_of([[2, 20], [3, 19]], [20, 20])
    assert low == 1.0


# --- the decoding loop on bigram pairs --------------------------------------------------------------


class _Out:
    def __init__(self, h):
        self.last_hidden_state, self.hidden_states = h, (h,)


class _BigramTarget:
    def __init__(self, table):
        self.table = table

    def get_decoder(self):
        return lambda ids, **_: _Out(torch.nn.functional.one_hot(ids, len(self.table)).float())

    def get_output_embeddings(self):
        return lambda h: h @ self.table


class _BigramDraft:
    eagle3, hot, dtype = True, None, torch.float32

    def __init__(self, table):
        self.table = table

    def fc(self, x):
        return x

    def forward(self, tokens, hidden, last, past=None, kept=None):
        rows = torch.arange(tokens.shape[0])
        return self.table[tokens[rows, last]], hidden[rows, last]

    def to_target_ids(self, ids):
        return ids


V = 12
PROMPTS = [[1, 5], [3], [7, 2, 9], [11], [4, 4], [0, 8]]


def _tables(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    target = torch.randn(V, V, generator=gen) * 2.5
    return target, target + torch.randn(V, V, generator=gen) * 0.3  # a draft trained close to the target


def _run(draft_table, target_table, steps, topk, tokens, sampling, n=24):
    rows = run_tree(_BigramTarget(target_table), _BigramDraft(draft_table), PROMPTS, steps, topk, tokens, n,
                    [0], "cpu", sampling)
    total = sum(len(r["output_ids"]) * len(r["sample_rounds"] or [1]) for r in rows)
    rounds = sum(r["rounds"] for r in rows)
    interval = (interval_of([r["sample_rounds"] for r in rows], [len(r["output_ids"]) for r in rows])[1:]
                if sampling.temperature > 0 else None)
    return total / rounds, interval


@pytest.mark.parametrize("scale", [0.25, 4.0], ids=["logit_flat", "logit_sharp"])
def test_a_draft_with_scaled_logits_passes_at_t0_and_fails_at_t1_under_rejection_sampling(scale):
    """A temperature bug in the draft (break_draft.py's logit_flat / logit_sharp: its lm_head times 1/4
    or 4): the argmax, hence every greedy round, is unchanged, so today's T=0 chain check passes; sampled
    at T=1 its proposal no longer matches the target's distribution and the served accept length falls
    below the trained draft's interval."""
    target, draft = _tables()
    broken = draft * scale
    greedy = Sampling(temperature=0.0)
    good0, _ = _run(draft, target, 3, 1, 4, greedy)
    bad0, _ = _run(broken, target, 3, 1, 4, greedy)
    assert bad0 == good0 and verdict(bad0, good0)[0]
    hot = Sampling(temperature=1.0, rejection=True, samples=8, seed=3)
    good1, interval = _run(draft, target, 3, 1, 4, hot)
    bad1, _ = _run(broken, target, 3, 1, 4, Sampling(temperature=1.0, rejection=True, samples=8, seed=4))
    ok, text = verdict(bad1, good1, interval=interval)
    assert not ok and "below the reference interval" in text, (good1, interval, bad1)
    assert verdict(_run(draft, target, 3, 1, 4, Sampling(temperature=1.0, rejection=True, samples=8, seed=9))[0],
                   good1, interval=interval)[0]  # the trained draft, sampled afresh, passes


@pytest.mark.parametrize("scale", [0.25, 0.5], ids=["logit_flat", "logit_warm"])
@pytest.mark.parametrize("seed", [0, 1])
def test_a_flattened_draft_passes_the_chain_and_fails_the_tree_at_t0(scale, seed):
    """logit_flat / logit_warm at temperature 0: the 3/1/4 chain serves exactly as trained; SGLang's
    default tree 5/4/8 picks its nodes by products of the flattened probabilities and accepts less."""
    target, draft = _tables(seed)
    greedy = Sampling()
    chain, chain_bad = _run(draft, target, 3, 1, 4, greedy)[0], _run(draft * scale, target, 3, 1, 4, greedy)[0]
    assert chain_bad == chain and verdict(chain_bad, chain)[0]
    tree, tree_bad = _run(draft, target, 5, 4, 8, greedy)[0], _run(draft * scale, target, 5, 4, 8, greedy)[0]
    ok, text = verdict(tree_bad, tree)
    assert not ok and "below the reference" in text, (tree, tree_bad)


def test_target_only_chains_do_not_see_the_drafts_probabilities_but_trees_do():
    """SGLang's default verify uses the draft's ranking only: a chain with scaled logits serves exactly
    as the trained one at any temperature; a tree's node choice multiplies probabilities, so it changes."""
    target, draft = _tables()
    broken = draft / 4
    hot = Sampling(temperature=1.0, samples=4, seed=1)
    assert _run(broken, target, 3, 1, 4, hot) == _run(draft, target, 3, 1, 4, hot)
    trees = [run_tree(_BigramTarget(target), _BigramDraft(d), PROMPTS, 3, 3, 6, 16, [0], "cpu", Sampling())
             for d in (draft, broken)]
    assert [r["accepted_per_round"] for r in trees[0]] != [r["accepted_per_round"] for r in trees[1]]
