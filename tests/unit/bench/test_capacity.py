"""Whether a server's KV cache holds a level's concurrent requests (bench/capacity.py)."""

from __future__ import annotations

import pytest

from automodel_spec.bench.capacity import check_kv_capacity, draft_slots
from automodel_spec.errors import ServerError


def test_draft_slots_count_the_verify_candidates_or_the_draft_tree_whichever_is_larger():
    assert draft_slots({}) == 0 and draft_slots({"speculative_algorithm": None, "speculative_num_steps": 3}) == 0
    chain = {"speculative_algorithm": "EAGLE3", "speculative_num_steps": 3, "speculative_eagle_topk": 1,
             "speculative_num_draft_tokens": 4}
    assert draft_slots(chain) == 4
    tree = {**chain, "speculative_eagle_topk": 8, "speculative_num_draft_tokens": 16}
    assert draft_slots(tree) == 24  # 3 steps x topk 8 written by the draft, beyond the 16 verified


def test_a_cache_that_holds_every_request_passes_and_an_unreported_one_is_not_judged():
    check_kv_capacity(31767, 8, 200, 128, 0)
    check_kv_capacity(8 * (200 + 128 + 4), 8, 200, 128, 4)  # exactly enough
    check_kv_capacity(None, 64, 4000, 4000, 16)


def test_a_cache_too_small_for_the_level_names_the_numbers_and_what_to_change():
    # the no-speculation baseline of 2026-12-06: 1,282 tokens for 8 requests
    with pytest.raises(ServerError) as err:
        check_kv_capacity(1282, 8, 40, 128, 0)
    msg = str(err.value)
    assert "holds 1282 tokens (max_total_num_tokens of /server_info)" in msg
    assert "concurrency 8 x 168 tokens per request (40 prompt + 128 generated + 0 draft) = 1344" in msg
    assert "would queue requests" in msg
    assert all(k in msg for k in ("sglang.mem_fraction_static", "bench.servers_per_gpu", "bench.concurrency"))
    with pytest.raises(ServerError, match=r"\+ 1 draft\) = 130"):
        check_kv_capacity(129, 1, 1, 128, 1)
