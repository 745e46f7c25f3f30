"""The load generator against an in-process ``generate``: concurrency, failures, ordering, payloads."""

from __future__ import annotations

import threading
import time

import pytest

from automodel_spec.bench.client import run_requests, sampling_params
from automodel_spec.bench.workload import Prompt


def prompts(n: int) -> list[Prompt]:
    return [Prompt(id=f"p{i}", category="k", text=f"text {i}") for i in range(n)]


class FakeGenerate:
    """A thread-safe ``generate(payload)`` that counts how many calls are in flight at once."""

    def __init__(self, delay_s: float = 0.02, fail_on: set[str] = frozenset(), tokens: int = 8):
        self.delay_s, self.fail_on, self.tokens = delay_s, fail_on, tokens
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        self.payloads: list[dict] = []

    def __call__(self, payload: dict) -> dict:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.payloads.append(payload)
        try:
            # later prompts finish first, so completion order differs from submission order
            idx = int(payload.get("text", "x 0").split()[-1]) if "text" in payload else 0
            time.sleep(self.delay_s * (1 + (idx % 3 == 0)))
            if payload.get("text") in self.fail_on:
                raise ConnectionError("server went away")
            return {"text": "x", "meta_info": {"completion_tokens": self.tokens, "prompt_tokens": 3,
                                               "spec_verify_ct": 2, "spec_accept_length": 4.0}}
        finally:
            with self.lock:
                self.in_flight -= 1


def test_sampling_params_fix_the_output_length():
    assert sampling_params(64, 0.7) == {"max_new_tokens": 64, "temperature": 0.7, "ignore_eos": True}


@pytest.mark.parametrize("concurrency", [1, 3])
def test_concurrency_is_respected_and_reached(concurrency):
    gen = FakeGenerate()
    records, wall = run_requests(gen, prompts(9), concurrency, {"max_new_tokens": 8}, progress=False)
    assert gen.max_in_flight == concurrency
    assert len(records) == 9 and wall > 0
    # at concurrency 1 the requests run back to back: wall time is at least the sum of their delays
    if concurrency == 1:
        assert wall >= sum(r["latency_s"] for r in records) * 0.99


def test_records_are_sorted_and_carry_the_server_meta():
    gen = FakeGenerate()
    params = sampling_params(8, 0.0)
    records, _ = run_requests(gen, prompts(7), 4, params, progress=False)
    assert [r["i"] for r in records] == list(range(7))
    assert [r["prompt_id"] for r in records] == [f"p{i}" for i in range(7)]
    r = records[0]
    assert r["ok"] is True and r["category"] == "k" and r["concurrency"] == 4
    assert (r["completion_tokens"], r["prompt_tokens"], r["spec_verify_ct"]) == (8, 3, 2)
    assert r["spec_accept_length"] == 4.0 and "spec_accept_rate" not in r
    assert r["latency_s"] >= 0.02
    assert all(p["sampling_params"] == params for p in gen.payloads)
    assert sorted(p["text"] for p in gen.payloads) == sorted(f"text {i}" for i in range(7))


def test_failed_requests_are_recorded_not_raised():
    gen = FakeGenerate(fail_on={"text 1", "text 4"})
    records, _ = run_requests(gen, prompts(6), 2, {}, progress=False)
    assert [r["ok"] for r in records] == [True, False, True, True, False, True]
    bad = records[1]
    assert bad["error"] == "ConnectionError: server went away"
    assert "completion_tokens" not in bad and bad["latency_s"] > 0


def test_odd_answers_fail_their_request_and_long_errors_are_cut():
    def weird(payload):
        if payload["input_ids"] == [1]:
            return ["not", "a", "dict"]
        raise RuntimeError("x" * 2000)

    ps = [Prompt(id="a", category="k", input_ids=(1,)), Prompt(id="b", category="k", input_ids=(2,))]
    odd, bad = run_requests(weird, ps, 2, {}, progress=False)[0]
    assert odd["ok"] is False and "not an object" in odd["error"]  # never a request of 0 tokens that succeeded
    assert bad["ok"] is False and len(bad["error"]) == 500


def test_progress_display_goes_to_stderr(capsys):
    run_requests(FakeGenerate(delay_s=0.0), prompts(3), 2, {}, label="spec c=2", progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    assert "spec c=2" in err


def test_progress_without_tqdm(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm -> ImportError
    run_requests(FakeGenerate(delay_s=0.0), prompts(3), 1, {}, label="base c=1", progress=True)
    err = capsys.readouterr().err
    assert "base c=1 3/3" in err


@pytest.mark.parametrize("name", ["spec_correct_drafts_histogram", "spec_accept_histogram"])
def test_the_acceptance_histogram_is_recorded_under_either_name_sglang_uses(name):
    # 0.5.12+ sends spec_correct_drafts_histogram and the older spec_accept_histogram as an alias
    def gen(payload):
        return {"meta_info": {"completion_tokens": 9, "prompt_tokens": 2, "spec_verify_ct": 3, name: [1, 0, 2]}}

    (rec,) = run_requests(gen, [Prompt(id="m", category="math", text="t 1")], 1, {}, progress=False)[0]
    assert rec["spec_correct_drafts_histogram"] == [1, 0, 2] and rec["category"] == "math"
