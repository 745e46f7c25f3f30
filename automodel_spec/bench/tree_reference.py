"""The reference accept length for trees and for sampling: the draft and target of ``reference``, decoded
round by round with SGLang's tree and verify rules (``spec_tree``).

At temperature 0 the result is exact (the tree and the target's greedy output are deterministic),
with the chain's floating-point caveat. At temperature > 0 the generation is random, so the reference
draws ``samples`` independent generations per prompt (seeded: the same arguments give the same
numbers) and gives the served accept length's expected value with a prediction interval for one served
run over the same prompts (``interval_of``). Along every sampled generation it also keeps each
round's exact expected accept count given the round's context (``spec_tree.expected_accepted``: for a
chain, sums of products of the target's probabilities), which is how the tests hold the sampling
against the exact value.

The target and the draft keep caches of the committed positions, as SGLang's do (the draft's from the
target's features through ``fc``, never from its own guesses); each round the target runs over the
tree's leaf paths and the draft over each beam path from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from automodel_spec.bench.spec_tree import (
    DEFAULT_THRESHOLD,
    DraftTree,
    TreeBuilder,
    accept_rejection_chain,
    expected_accepted,
    sample_target_only,
    verify_greedy,
)
from automodel_spec.errors import ConfigError
from automodel_spec.io.torch_import import import_torch

Z_99 = 2.576  # the two-sided 99% normal quantile: a served run outside it is 1 in 100 by chance


@dataclass
class Sampling:
    """How the server verifies (read back from it where it says).

    Attributes:
        temperature: the requests' temperature (0: greedy verify).
        threshold_single: ``--speculative-accept-threshold-single``.
        threshold_acc: ``--speculative-accept-threshold-acc``.
        rejection: ``--speculative-use-rejection-sampling`` (chains only).
        samples: generations drawn per prompt at temperature > 0.
        seed: the seed of the first; the others follow from it.
    """

    temperature: float = 0.0
    threshold_single: float = DEFAULT_THRESHOLD
    threshold_acc: float = DEFAULT_THRESHOLD
    rejection: bool = False
    samples: int = 4
    seed: int = 0


@dataclass
class _Seq:
    prompt: int
    replicate: int
    tokens: list[int]
    known: object  # the target's features of the committed positions but the last
    generator: object | None
    cache: object = None  # the target's KV cache of those positions
    draft_past: list | None = None  # the draft's keys and values of its committed positions, per layer
    draft_done: int = 0  # how many committed positions the draft's cache holds
    rounds: int = 0
    histogram: list[int] = field(default_factory=list)
    expected: float = 0.0  # sum over rounds of the exact expected accepted count
    accepted: list[int] = field(default_factory=list)  # drafts accepted in each round


def check_sampling(topk: int, sampling: Sampling, hot_token_map: bool) -> None:
    """Refuse a verify setting the reference does not model (or SGLang refuses).

    Raises:
        ConfigError: naming the value and why.
    """
    if sampling.temperature < 0:
        raise ConfigError(f"temperature={sampling.temperature}: must be 0 (greedy) or more.")
    for name in ("threshold_single", "threshold_acc"):
        v = getattr(sampling, name)
        if not 0.0 < v <= 1.0:
            raise ConfigError(f"{name}={v}: SGLang's accept thresholds lie in (0, 1] (default 1.0).")
    if sampling.samples < 2 and sampling.temperature > 0:
        raise ConfigError(f"samples={sampling.samples}: at temperature > 0 the interval needs at least 2 "
                          "generations per prompt.")
    if sampling.rejection:
        if topk != 1:
            raise ConfigError(f"rejection sampling with topk={topk}: SGLang's --speculative-use-rejection-sampling "
                              "requires topk=1.")
        if hot_token_map:
            raise ConfigError("rejection sampling with a reduced-vocabulary draft (d2t): SGLang refuses it (the "
                              "draft's distribution must be over the target's vocabulary).")
        if sampling.threshold_single != 1.0 or sampling.threshold_acc != 1.0:
            raise ConfigError("rejection sampling ignores the accept thresholds; SGLang refuses them below 1.0.")


def run_tree(target, draft, prompts: list[list[int]], num_steps: int, topk: int, num_draft_tokens: int,
             max_new_tokens: int, aux_layers: list[int], device: str, sampling: Sampling,
             batch_size: int = 16, first_prompt: int = 0, progress=None) -> list[dict]:
    """Decode every prompt (``samples`` times at temperature > 0) with SGLang's tree and verify rules.

    ``first_prompt``: the place of ``prompts[0]`` in the whole set, which seeds each generation's draws
    (a slice computed in a process of its own draws as in the whole). ``progress``: told each token
    decoded (``update(k)``; ``client.progress_bar``), up to ``max_new_tokens`` a generation.

    Returns, per prompt, a dict with ``output_ids`` (the first generation's), ``rounds`` and
    ``histogram`` (summed over its generations), ``sample_rounds`` (each generation's rounds, at
    temperature > 0), ``expected_accepted`` (the sum over rounds of the exact expected accepted count)
    and ``accepted_per_round`` (the first generation's).
    """
    torch = import_torch()
    check_sampling(topk, sampling, draft.hot is not None)
    reps = sampling.samples if sampling.temperature > 0 else 1
    out = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            seqs = [_Seq(prompt=p, replicate=r, tokens=list(prompts[p]), known=None,
                         generator=_generator(sampling.seed, r, first_prompt + p) if sampling.temperature > 0 else None,
                         histogram=[0] * (num_steps + 1))
                    for p in range(start, min(start + batch_size, len(prompts))) for r in range(reps)]
            _decode(target, draft, seqs, num_steps, topk, num_draft_tokens, max_new_tokens, aux_layers, device,
                    sampling, progress)
            for p in range(start, min(start + batch_size, len(prompts))):
                mine = [s for s in seqs if s.prompt == p]
                n = len(prompts[p])
                out.append({"output_ids": mine[0].tokens[n:n + max_new_tokens],
                            "rounds": sum(s.rounds for s in mine),
                            "histogram": [sum(s.histogram[k] for s in mine) for k in range(num_steps + 1)],
                            "sample_rounds": [s.rounds for s in mine] if sampling.temperature > 0 else None,
                            "expected_accepted": sum(s.expected for s in mine),
                            "accepted_per_round": mine[0].accepted})
    return out


def _generator(seed: int, replicate: int, prompt: int):
    """One generator per generation, so the batch a prompt lands in changes none of its draws."""
    torch = import_torch()
    return torch.Generator().manual_seed((seed * 1_000_003 + replicate) * 1_000_003 + prompt)


def _decode(target, draft, seqs: list[_Seq], num_steps, topk, num_draft_tokens, max_new_tokens, aux_layers,
            device, sampling: Sampling, progress=None) -> None:
    head = target.get_output_embeddings()
    plen = [len(s.tokens) for s in seqs]
    for s in seqs:
        last, s.known, s.cache = _prefill(target, draft, s.tokens, aux_layers, device)
        s.tokens.append(_pick(head(last), sampling, s.generator))
    if progress is not None:
        progress.update(len(seqs))
    active = [i for i in range(len(seqs)) if max_new_tokens > 1]
    while active:
        trees, drafted = _draft_trees(draft, [seqs[i] for i in active], num_steps, topk, num_draft_tokens,
                                      sampling, device)
        still = []
        for j, (i, tree) in enumerate(zip(active, trees, strict=True)):
            s = seqs[i]
            accepted, bonus, expected, row, feats = _verify_round(target, draft, s, tree, drafted[j], aux_layers,
                                                                  device, sampling)
            n, k = len(s.tokens), len(accepted)
            s.cache.batch_select_indices(import_torch().tensor([row], device=device))
            extra = s.cache.get_seq_length() - (n + k)  # keep the committed positions: all but the new last token
            if extra > 0:
                s.cache.crop(-extra)  # a count to remove: what every transformers release reads alike
            s.known = import_torch().cat([s.known, feats[:k + 1]])
            s.tokens += [tree.tokens[a] for a in accepted] + [bonus]
            if progress is not None:  # the tokens past max_new_tokens a last round may add are not counted
                progress.update(min(k + 1, max_new_tokens - (n - plen[i])))
            s.rounds += 1
            s.histogram[k] += 1
            s.accepted.append(k)
            s.expected += expected
            if len(s.tokens) - plen[i] < max_new_tokens:
                still.append(i)
        active = still


def _prefill(target, draft, tokens: list[int], aux_layers: list[int], device: str):
    """(the target's last hidden at the prompt's end, the draft's features of every prompt position, the
    target's cache of them)."""
    torch = import_torch()
    cache = _new_cache()
    out = _run_cached(target.get_decoder(), torch.tensor([tokens], device=device), cache)
    return out.last_hidden_state[0, -1], _features(out.hidden_states, draft, aux_layers)[0], cache


def _new_cache():
    """An empty ``DynamicCache``, given to the target so that it fills it in place (transformers 4.x
    returns a tuple for a cache it made itself)."""
    try:
        from transformers import DynamicCache
    except ImportError:  # only a test's stand-in target runs without transformers
        return None
    return DynamicCache()


def _run_cached(decoder, ids, cache):
    """The decoder over ``ids`` after the positions ``cache`` holds, which it extends (the keyword is
    ``past_key_values`` until transformers 5.2x, ``cache`` since)."""
    import inspect

    name = "cache" if "cache" in inspect.signature(getattr(decoder, "forward", decoder)).parameters else "past_key_values"
    return decoder(ids, use_cache=True, output_hidden_states=True, **{name: cache})


def _features(hidden_states, draft, aux_layers: list[int]):
    torch = import_torch()
    f = torch.cat([hidden_states[c] for c in aux_layers], dim=-1) if draft.eagle3 else hidden_states[-1]
    return f.to(draft.dtype)


def _verify_round(target, draft, s: _Seq, tree: DraftTree, drafted, aux_layers, device, sampling: Sampling):
    """The target over the tree (one row per leaf, from the cache of the committed positions), then
    SGLang's verify: (accepted nodes, bonus, exact expected accepted count, the row of the last accepted
    node, that row's draft features ``[W, F]``)."""
    torch = import_torch()
    leaves = tree.leaves()
    place = {0: (0, 0)}  # node -> (row, position in the row)
    for r, leaf in enumerate(leaves):
        node = leaf
        while node > 0 and node not in place:
            place[node] = (r, tree.depth(node))
            node = tree.parents[node]
    rows = [[s.tokens[-1], *tree.path(leaf)] for leaf in leaves]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows], device=device)
    s.cache.batch_repeat_interleave(len(rows))  # right padding: causal, so it changes nothing before it
    out = _run_cached(target.get_decoder(), ids, s.cache)
    feats = _features(out.hidden_states, draft, aux_layers)
    nodes = sorted(place)
    where = torch.tensor([place[i] for i in nodes], device=device)
    logits = target.get_output_embeddings()(out.last_hidden_state[where[:, 0], where[:, 1]])
    index = {node: k for k, node in enumerate(nodes)}
    accepted, bonus, expected = _verify(tree, lambda node: logits[index[node]], drafted, sampling, s.generator)
    row = place[accepted[-1] if accepted else 0][0]
    return accepted, bonus, expected, row, feats[row]


def _verify(tree: DraftTree, node_logits, drafted, sampling: Sampling, generator) -> tuple[list[int], int, float]:
    """(accepted nodes, bonus token, the exact expected accepted count) for one round."""
    torch = import_torch()
    nodes = range(len(tree.tokens))
    if sampling.temperature == 0:
        argmax = [int(node_logits(i).argmax()) if tree.depth(i) >= 0 else -1 for i in nodes]
        accepted, bonus = verify_greedy(tree, argmax)
        return accepted, bonus, float(len(accepted))
    probs = torch.stack([_probs(node_logits(i), sampling.temperature) if tree.depth(i) >= 0
                         else torch.zeros_like(node_logits(0), dtype=torch.float32) for i in nodes])
    if sampling.rejection:
        tokens, draft_probs = drafted
        k, bonus = accept_rejection_chain(tokens, draft_probs, probs, generator)
        expected = _rejection_expected(tokens, draft_probs, probs)
        return list(range(1, k + 1)), bonus, expected
    accepted, bonus = sample_target_only(tree, probs, generator, sampling.threshold_single, sampling.threshold_acc)
    expected = sum(expected_accepted(tree, lambda node, token: probs[node, token], sampling.threshold_single,
                                     sampling.threshold_acc))
    return accepted, bonus, expected


def _rejection_expected(tokens, draft_probs, probs) -> float:
    """The expected accepted count of a rejection-sampled chain given its drafted tokens' contexts: the
    products of each step's chance ``sum min(q, p)`` (the chance that step's draw is accepted)."""
    total, survive = 0.0, 1.0
    for k, q_draft in enumerate(draft_probs):
        survive *= float(import_torch().minimum(probs[k], q_draft).sum())
        total += survive
    return total


def _probs(logits, temperature: float):
    torch = import_torch()
    return torch.softmax(logits.float() / temperature, dim=-1)


def _pick(logits, sampling: Sampling, generator) -> int:
    """The prefill's token: the argmax, or a draw from the target's distribution."""
    torch = import_torch()
    if sampling.temperature == 0:
        return int(logits.argmax())
    return int(torch.multinomial(_probs(logits, sampling.temperature).cpu(), 1, generator=generator))


def _draft_trees(draft, seqs: list[_Seq], num_steps: int, topk: int, num_draft_tokens: int, sampling: Sampling,
                 device: str) -> tuple[list[DraftTree], list]:
    """Each sequence's tree. Under rejection sampling the chain's tokens are drawn from
    ``softmax(logits / T)`` and the second element gives, per sequence, (tokens, the distributions they
    were drawn from)."""
    trees, drawn = [], []
    for s in seqs:
        tree, d = _draft_tree(draft, s, num_steps, topk, num_draft_tokens, sampling, device)
        trees.append(tree)
        drawn.append(d)
    return trees, drawn


def _draft_tree(draft, s: _Seq, num_steps: int, topk: int, num_draft_tokens: int, sampling: Sampling, device: str):
    """One sequence's tree, as SGLang's draft builds it: the draft's cache of the committed positions
    (their hidden inputs are the target's features through ``fc``) is extended by the positions
    committed since the last round, which gives the root's distribution; then each step runs the beam's
    paths, one row each, after that cache (SGLang's tree attention: a node sees its ancestors only)."""
    torch = import_torch()
    n = len(s.tokens)
    kept = []
    logits, back = draft.forward(torch.tensor([s.tokens[1 + s.draft_done:n]], device=device),
                                 draft.fc(s.known[None, s.draft_done:n - 1]),
                                 last=torch.tensor([n - 2 - s.draft_done], device=device),
                                 past=s.draft_past, kept=kept)
    s.draft_past, s.draft_done = kept, n - 1
    fed = {(): back[0]}  # path -> the hidden the draft feeds back after it (its children's input)
    builder = TreeBuilder(topk, num_steps, num_draft_tokens)
    tokens, dists = [], []
    while True:
        rows = builder.pending()
        results = []
        for r in range(len(rows)):
            if sampling.rejection:
                q = torch.softmax(logits[r].float() / sampling.temperature, dim=-1)
                tokens.append(int(torch.multinomial(q.cpu(), 1, generator=s.generator)))
                dists.append(q)  # over the target's vocabulary: check_sampling refused a d2t map
                results.append([(1.0, tokens[-1])])
                continue
            probs = torch.softmax(logits[r].float(), dim=-1)
            top = torch.topk(probs, topk) if topk > 1 else probs.max(-1, keepdim=True)
            ids = draft.to_target_ids(top.indices)
            results.append([(float(p), int(t)) for p, t in zip(top.values.tolist(), ids.tolist(), strict=True)])
        builder.expand(results)
        if builder.done:
            break
        paths = builder.pending()  # the beam: paths of one length, the step's
        past = [(k.expand(len(paths), -1, -1, -1), v.expand(len(paths), -1, -1, -1)) for k, v in s.draft_past]
        hidden = torch.stack([torch.stack([fed[path[:j]] for j in range(len(path))]) for path in paths])
        logits, back = draft.forward(torch.tensor([list(path) for path in paths], device=device), hidden,
                                     last=torch.full((len(paths),), len(paths[0]) - 1, device=device), past=past)
        for path, h in zip(paths, back, strict=True):
            fed[path] = h
    return builder.tree(), (tokens, dists)


def interval_of(sample_rounds: list[list[int]], tokens: list[int], z: float = Z_99) -> tuple[float, float, float]:
    """(expected accept length, low, high) of one served run over these prompts at temperature > 0.

    ``sample_rounds[p]``: the rounds of each sampled generation of prompt ``p``, which makes
    ``tokens[p]`` tokens. A served run is one generation per prompt: its accept length is
    ``sum(tokens) / sum(rounds)``. The rounds' sum is near normal (a sum over prompts); its variance is
    the sum of each prompt's variance over its generations, plus the variance of the mean the interval is
    centred on. The interval is that normal's ``z`` quantiles, turned into accept lengths; its low end is
    never below 1 (a round makes at least one token), where few prompts make the spread wide.
    """
    means = [sum(r) / len(r) for r in sample_rounds]
    reps = min(len(r) for r in sample_rounds)
    var = sum(sum((x - m) ** 2 for x in r) / (len(r) - 1) for r, m in zip(sample_rounds, means, strict=True))
    spread = z * math.sqrt(var * (1 + 1 / reps))
    total, rounds = sum(tokens), sum(means)
    return total / rounds, total / min(rounds + spread, total), total / max(rounds - spread, 1e-9)
