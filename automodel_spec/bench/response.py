"""What a ``/generate`` answer must be to count, and what a failed request says.

A server that answers with something else than SGLang's JSON (an HTML error page of a proxy, a body
without ``meta_info``, a NaN or a text where a token count goes) must fail the request: counted as
zero tokens it would turn into a point that "succeeded" at 0.0 tokens/s.
"""

from __future__ import annotations

import json
import math
import urllib.error
from typing import Any

# meta_info counts every answer carries (SGLang's tokenizer manager writes them for every request)
REQUIRED_COUNTS = ("prompt_tokens", "completion_tokens")
# speculative decoding's, present with speculation (absent: 0 verify steps, no histogram)
OPTIONAL_COUNTS = ("spec_verify_ct",)
OPTIONAL_NUMBERS = ("spec_accept_length", "spec_accept_rate", "e2e_latency")
# rounds by accepted drafts; SGLang 0.5.12+ names it so, keeping the older name as an alias
HISTOGRAMS = ("spec_correct_drafts_histogram", "spec_accept_histogram")
_QUOTE = 120  # characters of an unusable body quoted in its error


class BadResponseError(ValueError):
    """A ``/generate`` answer that is not a well-formed SGLang answer (the message says how)."""


def parse_generate_response(out: Any, max_new_tokens: int | None = None) -> dict:
    """The record fields of one ``/generate`` answer, checked.

    Args:
        out: the answer: its body as ``bytes`` / ``str``, or already decoded JSON (a ``dict``).
        max_new_tokens: what was asked for; an answer of no token where some were asked is refused.

    Returns:
        ``completion_tokens``, ``prompt_tokens``, ``spec_verify_ct`` (whole numbers >= 0), the
        ``spec_accept_length`` / ``spec_accept_rate`` the server gave, ``output_ids`` (for the lossless
        check) and ``spec_correct_drafts_histogram`` where present.

    Raises:
        BadResponseError: not JSON, not an object, no ``meta_info``, a count missing, not a whole
            number, negative or not finite, a histogram or ``output_ids`` that is not a list of them.
    """
    if isinstance(out, (bytes, bytearray)):
        out = out.decode("utf-8", errors="replace")
    if isinstance(out, str):
        try:
            out = json.loads(out)
        except ValueError:
            raise BadResponseError(f"the answer is not JSON (is it SGLang's /generate?): {_quote(out)}") from None
        except RecursionError:
            raise BadResponseError("the answer nests too deeply to be SGLang's JSON") from None
    if isinstance(out, list) and len(out) == 1:  # a batch of one, as SGLang answers a list of prompts
        out = out[0]
    if not isinstance(out, dict):
        raise BadResponseError(f"the answer is JSON but not an object: {_quote(json.dumps(out)[:400])}")
    if "error" in out and "meta_info" not in out:
        raise BadResponseError(f"the server answered an error: {_quote(json.dumps(out['error'])[:400])}")
    meta = out.get("meta_info")
    if not isinstance(meta, dict):
        got = "no meta_info" if meta is None else f"meta_info of type {type(meta).__name__}"
        raise BadResponseError(f"the answer has {got} (keys: {', '.join(sorted(map(str, out))[:10]) or 'none'}): "
                               "not a well-formed SGLang answer")
    rec = {name: _count(meta, name) for name in REQUIRED_COUNTS}
    rec["spec_verify_ct"] = _count(meta, "spec_verify_ct") if meta.get("spec_verify_ct") is not None else 0
    if max_new_tokens and rec["completion_tokens"] == 0:
        raise BadResponseError(f"the answer holds no token where {max_new_tokens} were asked for "
                               "(meta_info.completion_tokens=0)")
    for name in OPTIONAL_NUMBERS:
        if meta.get(name) is not None:
            value = _number(meta, name)
            if name != "e2e_latency":
                rec[name] = value
    if "output_ids" in out and out["output_ids"] is not None:
        rec["output_ids"] = _counts(out["output_ids"], "output_ids")
    for name in HISTOGRAMS:
        hist = meta.get(name)
        if hist is not None:
            hist = _counts(hist, f"meta_info.{name}")
            if hist:
                rec["spec_correct_drafts_histogram"] = hist
            break
    return rec


def _count(meta: dict, name: str) -> int:
    """``meta[name]`` as a whole number >= 0 (an integral float, as some JSON writers give, is one)."""
    if name not in meta or meta[name] is None:
        raise BadResponseError(f"meta_info has no {name}: not a well-formed SGLang answer")
    value = meta[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadResponseError(f"meta_info.{name}={_quote(json.dumps(value))} is not a number of tokens")
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise BadResponseError(f"meta_info.{name}={value} is not a whole number of tokens >= 0")
    return int(value)


def _number(meta: dict, name: str) -> float:
    value = meta[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadResponseError(f"meta_info.{name}={_quote(json.dumps(value))} is not a finite number")
    return value


def _counts(values: Any, where: str) -> list[int]:
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                               for v in values):
        raise BadResponseError(f"{where} is not a list of whole numbers >= 0: {_quote(json.dumps(values)[:200])}")
    return list(values)


def _quote(text: str) -> str:
    """The start of ``text`` on one line, for a message."""
    one = " ".join(str(text).split())
    return repr(one[:_QUOTE] + ("..." if len(one) > _QUOTE else ""))


def request_failure(exc: BaseException, elapsed_s: float) -> str:
    """What a request that raised ``exc`` after ``elapsed_s`` seconds says in its record.

    A timeout says after how long (``bench.request_timeout_s``); a refused connection says the server
    is not listening; anything else is its type and message.
    """
    reason = exc.reason if isinstance(exc, urllib.error.URLError) and not hasattr(exc, "code") else exc
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        return (f"timed out: no answer within {elapsed_s:.1f} s (bench.request_timeout_s); the server is "
                "stuck or far slower than expected")
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused: the server is not listening (has it exited?)"
    if isinstance(reason, (ConnectionResetError, BrokenPipeError)) or "RemoteDisconnected" in type(reason).__name__:
        return f"the server closed the connection without an answer ({type(reason).__name__})"
    return f"{type(exc).__name__}: {exc}"
