"""Whether a server's KV cache holds a level's concurrent requests, so that a level measures speed.

SGLang (0.5.17's ``kv_pool_runtime``) sizes its KV cache as ``mem_fraction_static`` of the GPU memory
that was free when the server started, less the weights: a server that starts beside others
(``bench.servers_per_gpu``), or while another one's memory is still held, can come up with room for
a few requests only. It serves the level anyway and queues the rest, and nothing in its answers says
so. One H100, 2026-12-06: a no-speculation baseline whose cache held 1,282 tokens ran 8 concurrent
requests at most 4 at a time and measured 577 tok/s, where the same server with 31,767 tokens
measured 1,163. The cache's size is ``max_total_num_tokens`` of ``/server_info`` (0.5.17 reports it
with the scheduler's start-up facts; where a server does not, nothing is checked); this module turns
it into an error before such a level counts.
"""

from __future__ import annotations

from automodel_spec.config.sglang_options import (
    INFO_ALGORITHM,
    INFO_KV_TOKENS,
    INFO_NUM_DRAFT_TOKENS,
    INFO_NUM_STEPS,
    INFO_TOPK,
)
from automodel_spec.errors import ServerError


def draft_slots(settings: dict) -> int:
    """KV slots a request holds beyond its own tokens while the server speculates (0 without).

    A verify round writes ``num_draft_tokens`` candidates, and the draft's steps write ``steps x topk``.
    """
    if not settings.get(INFO_ALGORITHM):
        return 0
    tokens = settings.get(INFO_NUM_DRAFT_TOKENS) or 0
    steps, topk = settings.get(INFO_NUM_STEPS) or 0, settings.get(INFO_TOPK) or 1
    return max(int(tokens), int(steps) * int(topk))


def check_kv_capacity(kv_tokens: int | None, concurrency: int, prompt_tokens: int, max_new_tokens: int,
                      slots: int) -> None:
    """Raise when ``concurrency`` requests cannot all be in the server's KV cache at once.

    Args:
        kv_tokens: the server's ``max_total_num_tokens`` (``None``: not reported; nothing is checked).
        concurrency: requests the level keeps in flight.
        prompt_tokens: the longest prompt of the level, in tokens (0 before any was sent).
        max_new_tokens: tokens each request generates (the benchmark ignores EOS).
        slots: ``draft_slots`` of the server's settings.

    Raises:
        ServerError: naming the cache's size, what the level needs, and what to change.
    """
    if kv_tokens is None:
        return
    per_request = prompt_tokens + max_new_tokens + slots
    need = concurrency * per_request
    if kv_tokens >= need:
        return
    raise ServerError(
        f"the server's KV cache holds {kv_tokens} tokens ({INFO_KV_TOKENS} of /server_info), fewer than "
        f"concurrency {concurrency} x {per_request} tokens per request ({prompt_tokens} prompt + "
        f"{max_new_tokens} generated + {slots} draft) = {need}: SGLang would queue requests and the level "
        "would measure the queue, not the server's speed. SGLang sizes the cache from the GPU memory free "
        "when the server starts: raise sglang.mem_fraction_static, run fewer servers on the GPU "
        "(bench.servers_per_gpu), or lower bench.concurrency or bench.max_new_tokens.")
