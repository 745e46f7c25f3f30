"""Streamed ``/generate``: the server-sent events read, each chunk's tokens counted, the output rebuilt, errors
raised; against the fake server over real HTTP (cumulative and incremental events, speculation's bursts)."""

from __future__ import annotations

import io

import pytest

from automodel_spec.bench.client import run_requests
from automodel_spec.bench.stream import StreamError, read_events, stream_generate
from automodel_spec.bench.workload import Prompt
from automodel_spec.io.http_client import HTTPStatusError

SPEC = ("--speculative-algorithm", "EAGLE3", "--speculative-num-steps", "3", "--speculative-eagle-topk", "1")


def lines(text: str) -> io.BytesIO:
    return io.BytesIO(text.encode())


def test_events_are_read_one_per_blank_line_and_end_at_done():
    stream = (': a comment\n\ndata: {"a": 1}\n\nevent: x\ndata: {"b":\ndata: 2}\n\r\n'
              "data: [DONE]\n\ndata: {\"after\": 1}\n\n")
    assert list(read_events(lines(stream))) == [{"a": 1}, {"b": 2}, None]  # nothing after [DONE]


def test_a_last_event_without_its_blank_line_is_read():
    assert list(read_events(lines('data: {"a": 1}\n\ndata: [DONE]'))) == [{"a": 1}, None]


def _generate(server, n=16, **extra):
    return stream_generate(server.base_url + "/generate",
                           {"text": "hello", "sampling_params": {"max_new_tokens": n, "temperature": 0.0}, **extra},
                           timeout=20)


def test_cumulative_events_under_speculation_carry_a_verify_round_each(fake_server):
    server = fake_server(*SPEC)
    answer = _generate(server, n=14)
    # 3 steps, every draft accepted: rounds of 4 tokens, the last one cut at 14
    assert answer.chunk_tokens == [4, 4, 4, 2]
    assert answer.chunk_s == sorted(answer.chunk_s) and answer.chunk_s[0] > 0
    meta = answer.final["meta_info"]
    assert meta["completion_tokens"] == 14 and meta["spec_verify_ct"] == 4
    assert meta["spec_correct_drafts_histogram"] == [0, 0, 0, 4]
    assert answer.final["output_ids"] == [5] * 14 and answer.final["text"] == "x" * 14


def test_incremental_events_are_joined_into_the_whole_output(fake_server):
    server = fake_server(*SPEC, "--incremental-streaming-output")
    answer = _generate(server, n=10)
    assert answer.chunk_tokens == [4, 4, 2]
    assert answer.final["output_ids"] == [5] * 10 and answer.final["meta_info"]["completion_tokens"] == 10


def test_partial_acceptance_streams_what_the_histogram_counts(fake_server):
    server = fake_server(*SPEC, env={"FAKE_SGLANG_ACCEPT": "0.6"})
    answer = _generate(server, n=40)
    meta = answer.final["meta_info"]
    assert sum(answer.chunk_tokens) == 40
    # the prefill's token, then one chunk per verify round
    assert len(answer.chunk_tokens) == meta["spec_verify_ct"] + 1 == sum(meta["spec_correct_drafts_histogram"]) + 1
    assert answer.chunk_tokens[0] == 1 and max(answer.chunk_tokens) <= 4 and len(set(answer.chunk_tokens)) > 1


def test_without_speculation_every_token_is_a_chunk(fake_server):
    answer = _generate(fake_server(), n=6)
    assert answer.chunk_tokens == [1] * 6 and len(answer.chunk_s) == 6


def test_an_error_event_fails_the_request(fake_server):
    server = fake_server(*SPEC, env={"FAKE_SGLANG_STREAM_ERROR_AFTER": "2"})
    with pytest.raises(StreamError, match="simulated scheduler error"):
        _generate(server)


def test_an_http_error_is_raised_with_its_status(fake_server):
    server = fake_server()
    with pytest.raises(HTTPStatusError, match="404"):
        stream_generate(server.base_url + "/no_such_endpoint", {"text": "x"}, timeout=20)


def test_streamed_records_keep_what_unstreamed_ones_did(fake_server):
    server = fake_server(*SPEC)
    gen = lambda payload: stream_generate(server.base_url + "/generate", payload, timeout=20)  # noqa: E731
    prompts = [Prompt(id=f"p{i}", category="k", text=f"text {i}") for i in range(3)]
    records, _ = run_requests(gen, prompts, 2, {"max_new_tokens": 8}, progress=False)
    for r in records:
        assert r["ok"] and r["streamed"] and r["completion_tokens"] == 8 and r["spec_verify_ct"] == 2
        assert r["output_ids"] == [5] * 8 and r["spec_correct_drafts_histogram"] == [0, 0, 0, 2]
        assert r["chunk_tokens"] == [4, 4] and r["ttft_s"] == r["chunk_s"][0] <= r["latency_s"]
