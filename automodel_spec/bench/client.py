"""Send a workload to a running server at a fixed concurrency and record every request.

``send_request`` sends one and records it (the open-loop and phased loads send through it too).
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

from automodel_spec.bench.response import parse_generate_response, request_failure
from automodel_spec.bench.stream import StreamedAnswer
from automodel_spec.bench.workload import Prompt


def sampling_params(max_new_tokens: int, temperature: float) -> dict:
    """Fixed output length (``ignore_eos``), so every setting generates the same number of tokens."""
    return {"max_new_tokens": max_new_tokens, "temperature": temperature, "ignore_eos": True}


def run_requests(generate, prompts: list[Prompt], concurrency: int, params: dict, *,
                 label: str = "", progress: bool = True) -> tuple[list[dict], float]:
    """Send every prompt with at most ``concurrency`` in flight; return (records, wall seconds).

    ``generate(payload)`` is the server's ``/generate`` call: it returns the answer (a dict) or, streamed,
    a ``StreamedAnswer`` (``bench.stream``), whose chunks give the streaming latencies. A failed request
    (an error, a timeout, an answer ``parse_generate_response`` refuses) is recorded with its error rather
    than stopping the run.
    """
    bar = progress_bar(len(prompts), label) if progress else None
    t0 = time.perf_counter()
    records = []
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [pool.submit(send_request, generate, i, p, params, t0, concurrency=concurrency)
                   for i, p in enumerate(prompts)]
        for fut in as_completed(futures):
            records.append(fut.result())
            if bar:
                bar.update(1)
    wall = time.perf_counter() - t0
    if bar:
        bar.close()
    return sorted(records, key=lambda r: r["i"]), wall


def send_request(generate, i: int, prompt: Prompt, params: dict, level_t0: float, **fields) -> dict:
    """Send one request and return its record.

    The record holds the prompt, ``fields`` (the level's load), ``send_s`` (when it was sent, seconds
    after ``level_t0``, a ``time.perf_counter`` value), ``latency_s``, what the answer reported
    (``parse_generate_response``) and, streamed, ``ttft_s``, ``chunk_s`` and ``chunk_tokens``. A failed request is
    recorded with ``ok=False`` and its error.
    """
    t0 = time.perf_counter()
    rec = {"i": i, "prompt_id": prompt.id, "category": prompt.category, **fields, "send_s": t0 - level_t0}
    try:
        out = generate({**prompt.payload(), "sampling_params": params})
        if isinstance(out, StreamedAnswer):
            rec.update(streamed=True, chunk_s=out.chunk_s, chunk_tokens=out.chunk_tokens,
                       ttft_s=out.chunk_s[0] if out.chunk_s else None)
            out = out.final
        rec.update(ok=True, **parse_generate_response(out, params.get("max_new_tokens")))
    except Exception as exc:  # recorded; the metrics count it as a failed request
        rec.update(ok=False, error=request_failure(exc, time.perf_counter() - t0)[:500])
    rec["latency_s"] = time.perf_counter() - t0
    return rec


def progress_bar(total: int, label: str, unit: str = "req"):
    """A progress bar on stderr (tqdm's, or a counter without tqdm): ``update(k)``, ``close()``."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _Counter(total, label)
    return tqdm(total=total, desc=label, unit=unit, file=sys.stderr, leave=False)


class _Counter:
    """Minimal progress display when tqdm is not installed.

    Like tqdm's bar it redraws one terminal line on stderr: progress is not a message for the log.
    """

    def __init__(self, total: int, label: str):
        self.total, self.label, self.n = total, label, 0

    def update(self, k: int) -> None:
        self.n += k
        sys.stderr.write(f"\r{self.label} {self.n}/{self.total}")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()
