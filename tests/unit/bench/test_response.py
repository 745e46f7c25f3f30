"""What a ``/generate`` answer must be to count (``bench/response.py``), and what a failed request says."""

from __future__ import annotations

import http.client
import json
import urllib.error

import pytest

from automodel_spec.bench.response import BadResponseError, parse_generate_response, request_failure

META = {"prompt_tokens": 8, "completion_tokens": 16, "spec_verify_ct": 4, "spec_accept_length": 4.0}


def answer(**meta) -> dict:
    return {"text": "x", "output_ids": [5] * 16, "meta_info": {**META, **meta}}


@pytest.mark.parametrize("form", [dict, json.dumps, lambda a: json.dumps(a).encode(), lambda a: [a]])
def test_a_well_formed_answer_in_every_form_gives_its_counts(form):
    rec = parse_generate_response(form(answer(spec_accept_histogram=[0, 1, 3])), max_new_tokens=16)
    assert rec == {"prompt_tokens": 8, "completion_tokens": 16, "spec_verify_ct": 4, "spec_accept_length": 4.0,
                   "output_ids": [5] * 16, "spec_correct_drafts_histogram": [0, 1, 3]}


def test_without_speculation_no_verify_count_is_zero_and_an_integral_float_is_a_count():
    rec = parse_generate_response({"meta_info": {"prompt_tokens": 8.0, "completion_tokens": 16}})
    assert rec == {"prompt_tokens": 8, "completion_tokens": 16, "spec_verify_ct": 0}


@pytest.mark.parametrize(("out", "message"), [
    ("<html><body>502 Bad Gateway</body></html>", r"not JSON .*'<html><body>502 Bad Gateway"),
    ("[1, 2]", r"JSON but not an object"),
    ({"text": "x"}, r"has no meta_info \(keys: text\)"),
    ({"meta_info": "fast"}, r"meta_info of type str"),
    ({"error": {"message": "out of memory"}}, r"the server answered an error: .*out of memory"),
    (answer(completion_tokens=None), r"meta_info has no completion_tokens"),
    ({"meta_info": {"completion_tokens": 3}}, r"meta_info has no prompt_tokens"),
    (answer(completion_tokens=float("nan")), r"completion_tokens=nan is not a whole number"),
    (answer(completion_tokens=float("inf")), r"completion_tokens=inf is not a whole number"),
    (answer(completion_tokens=-1), r"completion_tokens=-1 is not a whole number"),
    (answer(completion_tokens=7.5), r"completion_tokens=7\.5 is not a whole number"),
    (answer(completion_tokens="16"), r"""completion_tokens='"16"' is not a number of tokens"""),
    (answer(completion_tokens=True), r"completion_tokens='true' is not a number of tokens"),
    (answer(completion_tokens=0), r"holds no token where 16 were asked for"),
    (answer(spec_accept_length=float("nan")), r"spec_accept_length='NaN' is not a finite number"),
    (answer(spec_verify_ct="many"), r"spec_verify_ct='\"many\"' is not a number"),
    (answer(spec_correct_drafts_histogram=[1, -2]), r"spec_correct_drafts_histogram is not a list of whole numbers"),
    ({**answer(), "output_ids": ["a"]}, r"output_ids is not a list of whole numbers"),
])
def test_an_answer_that_is_not_sglangs_fails_with_its_reason(out, message):
    with pytest.raises(BadResponseError, match=message):
        parse_generate_response(out, max_new_tokens=16)


def test_no_token_is_an_answer_where_none_was_asked_for():
    assert parse_generate_response(answer(completion_tokens=0))["completion_tokens"] == 0


@pytest.mark.parametrize(("exc", "said"), [
    (TimeoutError("timed out"), r"timed out: no answer within 2\.5 s \(bench\.request_timeout_s\)"),
    (urllib.error.URLError(TimeoutError("timed out")), r"timed out: no answer within 2\.5 s"),
    (urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")),
     r"connection refused: the server is not listening \(has it exited\?\)"),
    (http.client.RemoteDisconnected("Remote end closed connection"),
     r"the server closed the connection without an answer \(RemoteDisconnected\)"),
    (ConnectionResetError(104, "reset"), r"closed the connection without an answer \(ConnectionResetError\)"),
    (BadResponseError("the answer has no meta_info"), r"BadResponseError: the answer has no meta_info"),
])
def test_a_failed_request_says_why(exc, said):
    import re

    assert re.search(said, request_failure(exc, 2.51))
