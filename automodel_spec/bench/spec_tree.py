"""SGLang's EAGLE draft tree and its verify rules, as release 0.5.17 runs them, without any model.

Read in SGLang 0.5.17's wheel (``srt/speculative/``) and sgl-kernel's kernels; the model glue is
``tree_reference``. What is modelled:

* **The tree** (``spec_utils.select_top_k_tokens``, ``eagle_utils.organize_draft_results``, sgl-kernel
  ``build_tree_efficient``): step 0 takes the ``topk`` most probable tokens after the last verified
  token (the draft's plain softmax; their probabilities are their scores) and they are the beam. Each of
  the ``num_steps - 1`` later steps expands every beam node into its ``topk`` most probable children,
  scored by the parent's score times the child's probability (a path's cumulative probability); the
  ``topk`` best of those ``topk * topk`` candidates are the next beam. Every candidate of every step is
  kept; the tree is the ``num_draft_tokens - 1`` highest-scoring candidates, in the order they were
  made (ties: the earlier first, where CUDA's top-k leaves the order open). A child is listed after its
  parent, siblings in that order; a candidate whose parent was not chosen (only a tie or a NaN can do
  that) is never reachable, as SGLang skips it with a warning.
* **Greedy verify** (``verify_tree_greedy``, temperature 0): from the root, the child whose token is
  the target's argmax is accepted, until none is; the target's argmax there is the bonus token.
* **Target-only tree sampling** (``tree_speculative_sampling_target_only``, temperature > 0, SGLang's
  default): one uniform coin per accepted level; the children are tried in sibling order with the
  target's probabilities ``q`` summed as they go, and child ``j`` is accepted when ``coin <= sum / threshold_acc``
  or ``q(child) >= threshold_single`` (``--speculative-accept-threshold-acc`` / ``-single``, both 1.0 by
  default: then the child is accepted with probability ``q(child)``). The bonus token is drawn from ``q``
  at the last accepted node with the rejected children's mass removed. The draft's probabilities never
  enter the test: only the tree's shape does.
* **Rejection sampling** (``--speculative-use-rejection-sampling``, chains only): the draft samples
  each token from ``softmax(logits / T)`` and it is accepted when ``coin * p_draft < q``; the bonus is
  drawn from ``relu(q - p_draft)`` after a rejection, from ``q`` after a full accept.

Other releases, read in their wheels: 0.5.9 builds the tree the same way (``select_top_k_tokens`` in
one function, ``organize_draft_results`` alike), takes the draft's plain softmax and verifies with the
same greedy and target-only kernels and thresholds, but has no rejection sampling
(``--speculative-use-rejection-sampling`` is not among its flags); 0.5.23 splits
``select_top_k_tokens`` as 0.5.17 does, keeps ``organize_draft_results`` and both sampling paths (its
draft softmax goes through ``sampling_softmax``). Releases between were not read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from automodel_spec.io.torch_import import import_torch

DEFAULT_THRESHOLD = 1.0  # SGLang's default for both accept thresholds


@dataclass
class DraftTree:
    """One round's draft tree. Node 0 is the root (the last verified token); nodes ``1..n`` are the
    draft tokens in SGLang's order.

    Attributes:
        tokens: ``tokens[i]``, the target id of node ``i`` (``-1`` for the root).
        parents: ``parents[i]``, the parent node (``-1`` for the root and for an unreachable node).
        scores: ``scores[i]``, the node's cumulative draft probability (1 for the root).
    """

    tokens: list[int] = field(default_factory=lambda: [-1])
    parents: list[int] = field(default_factory=lambda: [-1])
    scores: list[float] = field(default_factory=lambda: [1.0])

    @property
    def size(self) -> int:
        """Draft tokens in the tree (the root not counted)."""
        return len(self.tokens) - 1

    def children(self, node: int) -> list[int]:
        """``node``'s children in sibling order (the order the verify kernels try them)."""
        return [i for i in range(1, len(self.tokens)) if self.parents[i] == node]

    def depth(self, node: int) -> int:
        """Edges from the root (0 for the root; unreachable nodes have none and say -1)."""
        d = 0
        while node > 0:
            node = self.parents[node]
            d += 1
        return d if node == 0 else -1

    def path(self, node: int) -> tuple[int, ...]:
        """The tokens from the root's child down to ``node``."""
        out = []
        while node > 0:
            out.append(self.tokens[node])
            node = self.parents[node]
        return tuple(reversed(out))

    def leaves(self) -> list[int]:
        """Reachable nodes without children (the root alone when the tree is empty)."""
        has_child = {p for p in self.parents[1:] if p >= 0}
        out = [i for i in range(1, len(self.tokens)) if i not in has_child and self.depth(i) > 0]
        return out or [0]


class TreeBuilder:
    """Builds one request's tree the way SGLang's draft loop does, one step at a time, so that the
    caller can batch the draft's forward passes over many requests.

    ``pending()`` gives the paths (tokens after the last verified one) whose next-token distribution
    the draft must give now; ``expand()`` takes, for each, its ``topk`` (probability, target id) pairs
    in descending probability. After ``num_steps`` expansions ``done`` is true and ``tree()`` gives the
    tree. For ``topk == 1`` the probabilities do not matter (every candidate is kept).
    """

    def __init__(self, topk: int, num_steps: int, num_draft_tokens: int):
        if topk < 1 or num_steps < 1:
            raise ValueError(f"topk={topk}, num_steps={num_steps}: both must be at least 1")
        most = topk + (num_steps - 1) * topk * topk
        if not 2 <= num_draft_tokens <= most + 1:
            raise ValueError(f"num_draft_tokens={num_draft_tokens}: SGLang's tree for topk={topk}, "
                             f"num_steps={num_steps} holds 2 to {most + 1} tokens (the root included)")
        self.topk, self.num_steps, self.num_draft_tokens = topk, num_steps, num_draft_tokens
        self._scores: list[float] = []
        self._tokens: list[int] = []
        self._parents: list[int] = []  # the candidate index of the parent, -1 for the root
        self._paths: list[tuple[int, ...]] = []
        self._beam: list[int] | None = None  # candidate indices; None before step 0
        self._step = 0

    @property
    def done(self) -> bool:
        return self._step == self.num_steps

    def pending(self) -> list[tuple[int, ...]]:
        """The paths to expand now: the root before step 0, then the beam in SGLang's slot order."""
        if self.done:
            return []
        return [()] if self._beam is None else [self._paths[c] for c in self._beam]

    def expand(self, results: list[list[tuple[float, int]]]) -> None:
        """Add the candidates of this step from each pending path's ``topk`` (probability, token) pairs."""
        parents = [-1] if self._beam is None else self._beam
        if len(results) != len(parents) or any(len(r) != self.topk for r in results):
            raise ValueError(f"expand: expected {len(parents)} lists of {self.topk} (probability, token) pairs")
        first = len(self._scores)
        for parent, pairs in zip(parents, results, strict=True):
            base = 1.0 if parent < 0 else self._scores[parent]
            prefix = () if parent < 0 else self._paths[parent]
            for p, token in pairs:
                self._scores.append(base * float(p))
                self._tokens.append(int(token))
                self._parents.append(parent)
                self._paths.append(prefix + (int(token),))
        made = range(first, len(self._scores))
        if self._beam is None:  # step 0: the root's topk children are the beam, in rank order
            self._beam = list(made)
        else:
            self._beam = sorted(made, key=lambda c: (-self._scores[c], c))[:self.topk]
        self._step += 1

    def tree(self) -> DraftTree:
        """The ``num_draft_tokens - 1`` best candidates as SGLang's verify sees them."""
        if not self.done:
            raise ValueError(f"tree: {self._step} of {self.num_steps} steps expanded")
        best = sorted(range(len(self._scores)), key=lambda c: (-self._scores[c], c))[:self.num_draft_tokens - 1]
        chosen = sorted(best)
        node_of = {c: i + 1 for i, c in enumerate(chosen)}
        out = DraftTree()
        for c in chosen:
            parent = self._parents[c]
            out.tokens.append(self._tokens[c])
            out.parents.append(0 if parent < 0 else node_of.get(parent, -1))
            out.scores.append(self._scores[c])
        return out


def verify_greedy(tree: DraftTree, argmax: list[int]) -> tuple[list[int], int]:
    """(accepted nodes from the root down, the bonus token) given the target's argmax at every node
    (``argmax[i]`` for node ``i``, the root's at 0)."""
    node, accepted = 0, []
    while True:
        nxt = next((c for c in tree.children(node) if tree.tokens[c] == argmax[node]), None)
        if nxt is None:
            return accepted, int(argmax[node])
        accepted.append(nxt)
        node = nxt


def _accept_chances(probs: list[float], threshold_single: float, threshold_acc: float) -> list[float]:
    """The chance that each child is the one accepted, given its parent was reached, for children
    tried in this order with target probabilities ``probs`` (one coin, the kernel's test)."""
    out, acc, gone = [], 0.0, 0.0  # gone: coin mass already taken by an earlier child
    for p in probs:
        lo = min(1.0, acc / threshold_acc)
        acc += p
        if p >= threshold_single:  # accepted whatever the coin, if no earlier child was
            out.append(max(0.0, 1.0 - gone))
            gone = 1.0
            continue
        hi = min(1.0, acc / threshold_acc)
        chance = max(0.0, hi - max(lo, gone))
        out.append(chance)
        gone = max(gone, hi)
    return out


def reach_probabilities(tree: DraftTree, target_prob, threshold_single: float = DEFAULT_THRESHOLD,
                        threshold_acc: float = DEFAULT_THRESHOLD) -> list[float]:
    """``reach[i]``: the chance that target-only sampling accepts node ``i`` (1 for the root), given the
    target's probability ``target_prob(node, token)`` of ``token`` after ``node``'s path."""
    reach = [0.0] * len(tree.tokens)
    reach[0] = 1.0
    for node in range(len(tree.tokens)):  # parents come before their children
        if node > 0 and tree.parents[node] < 0:
            continue
        kids = tree.children(node)
        if not kids or reach[node] == 0.0:
            continue
        chances = _accept_chances([float(target_prob(node, tree.tokens[c])) for c in kids],
                                  threshold_single, threshold_acc)
        for c, chance in zip(kids, chances, strict=True):
            reach[c] = reach[node] * chance
    return reach


def expected_accepted(tree: DraftTree, target_prob, threshold_single: float = DEFAULT_THRESHOLD,
                      threshold_acc: float = DEFAULT_THRESHOLD) -> list[float]:
    """``out[d]``: the exact chance that target-only sampling accepts at least ``d + 1`` draft tokens
    (the expected count is their sum; for a chain with the default thresholds, the products of the
    target's probabilities of the drafts)."""
    reach = reach_probabilities(tree, target_prob, threshold_single, threshold_acc)
    deepest = max((tree.depth(i) for i in range(1, len(tree.tokens))), default=0)
    out = [0.0] * deepest
    for i in range(1, len(tree.tokens)):
        d = tree.depth(i)
        if d > 0:
            out[d - 1] += reach[i]
    return out


def sample_target_only(tree: DraftTree, probs, generator, threshold_single: float = DEFAULT_THRESHOLD,
                       threshold_acc: float = DEFAULT_THRESHOLD) -> tuple[list[int], int]:
    """One round of target-only tree sampling: (accepted nodes, the bonus token).

    Args:
        probs: the target's sampling distribution after every node, a tensor ``[n + 1, vocab]``.
        generator: the ``torch.Generator`` the coins and the bonus draw come from.
    """
    torch = import_torch()
    node, accepted = 0, []
    rejected: list[int] = []
    while True:
        coin = float(torch.rand((), generator=generator))
        acc, rejected, taken = 0.0, [], None
        for c in tree.children(node):
            p = float(probs[node, tree.tokens[c]])
            acc += p
            if coin <= acc / threshold_acc or p >= threshold_single:
                taken = c
                break
            rejected.append(tree.tokens[c])
        if taken is None:
            break
        accepted.append(taken)
        node = taken
    return accepted, _draw(probs[node], rejected, generator)


def accept_rejection_chain(draft_tokens: list[int], draft_probs: list, target_probs, generator) -> tuple[int, int]:
    """One round of rejection sampling on a chain: (drafts accepted, the bonus token).

    Args:
        draft_tokens: the tokens the draft sampled, one per step.
        draft_probs: the distribution each was sampled from (``[vocab]`` tensors, target ids).
        target_probs: ``[steps + 1, vocab]``: the target's distribution after the root and each draft.
        generator: where the coins and the bonus draw come from.
    """
    torch = import_torch()
    for k, (token, q_draft) in enumerate(zip(draft_tokens, draft_probs, strict=True)):
        coin = float(torch.rand((), generator=generator))
        if not coin * float(q_draft[token]) < float(target_probs[k, token]):
            residual = (target_probs[k] - q_draft).clamp_min(0.0)
            return k, _draw_from(residual, generator)
    return len(draft_tokens), _draw_from(target_probs[len(draft_tokens)], generator)


def _draw(row, removed: list[int], generator) -> int:
    """A token from ``row`` with ``removed`` tokens' mass taken out (the kernel's ``relu(q - p)``)."""
    if not removed:
        return _draw_from(row, generator)
    residual = row.clone()
    residual[removed] = 0.0
    return _draw_from(residual, generator)


def _draw_from(weights, generator) -> int:
    """A token drawn in proportion to ``weights``; with nothing left (thresholds below 1 can do that)
    the kernels' answer, the last id."""
    torch = import_torch()
    if float(weights.sum()) <= 0.0:
        return int(weights.shape[-1] - 1)
    return int(torch.multinomial(weights.float().cpu(), 1, generator=generator))  # the generator is the CPU's
