"""Stream one ``/generate`` request and record when each chunk of output arrives, and its tokens.

SGLang answers ``/generate`` with ``"stream": true`` as server-sent events: ``data: {json}`` per decode
step (several tokens a step under speculation), then ``data: [DONE]``. By default each event is
cumulative (the whole output so far, ``meta_info`` as it stands); with ``--incremental-streaming-output``
``output_ids`` are the new tokens only. ``meta_info.completion_tokens`` counts the output so far in both,
so a chunk's tokens are its difference from the previous event's, and the output is rebuilt in either
form. An error during a stream arrives as an event ``{"error": {...}}`` before ``[DONE]``
(docs/sglang-releases.md, "Streaming").
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from automodel_spec.io.http_client import DIRECT_OPENER, HTTPStatusError, NotJSONError

# a body that is not a stream (a proxy's error page, a server that ignores "stream") is read up to this much
_PLAIN_BODY_MAX = 16 << 20


class StreamError(RuntimeError):
    """The server reported an error inside the stream, or the stream broke off before ``[DONE]``."""


@dataclass
class StreamedAnswer:
    """A streamed ``/generate`` answer.

    Attributes:
        final: the answer as a non-streamed ``/generate`` gives it: ``text``, every ``output_ids`` and
            the last event's ``meta_info``.
        chunk_s: when each chunk that carried tokens arrived, seconds after the request was sent.
        chunk_tokens: how many output tokens each of those chunks carried.
    """

    final: dict
    chunk_s: list[float] = field(default_factory=list)
    chunk_tokens: list[int] = field(default_factory=list)


def stream_generate(url: str, payload: dict, *, timeout: float = 600.0,
                    api_key: str | None = None) -> StreamedAnswer | dict:
    """POST ``payload`` to ``url`` (a server's ``/generate``) streamed; return the answer and its chunks.

    ``timeout`` bounds the whole request, not only each read: a server that trickles events forever
    fails the request rather than holding the benchmark. An answer that is not an event stream (a server
    that answers the whole output at once) comes back as its JSON, for the caller to check.

    Raises:
        HTTPStatusError: the server answered with a non-2xx status.
        NotJSONError: the answer is neither an event stream nor JSON (an HTML page of a proxy, say).
        StreamError: an ``error`` event, an event that is not JSON, or no ``[DONE]``.
        TimeoutError: the stream took longer than ``timeout``.
    """
    req = urllib.request.Request(url, data=json.dumps({**payload, "stream": True}).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    t0 = time.perf_counter()
    chunks = _Chunks()
    try:
        with DIRECT_OPENER.open(req, timeout=timeout) as resp:  # the server is local: never through a proxy
            if not (resp.headers.get("Content-Type") or "").startswith("text/event-stream"):
                body = resp.read(_PLAIN_BODY_MAX).decode(errors="replace")
                try:
                    return json.loads(body)
                except ValueError:
                    raise NotJSONError(url, body) from None
            for event in _checked(read_events(resp), url):
                now = time.perf_counter() - t0
                if now > timeout:
                    raise TimeoutError(f"{url}: the stream ran past {timeout:g} s")
                if event is None:  # [DONE]
                    return StreamedAnswer(final=chunks.final(), chunk_s=chunks.times, chunk_tokens=chunks.tokens)
                if isinstance(event, dict) and "error" in event:
                    raise StreamError(f"{url}: the server reported an error in the stream: "
                                      f"{json.dumps(event['error'])[:300]}")
                chunks.add(event, now)
    except urllib.error.HTTPError as exc:
        raise HTTPStatusError(url, exc.code, exc.read().decode(errors="replace")) from exc
    raise StreamError(f"{url}: the stream ended without [DONE] after {len(chunks.times)} chunk(s)")


def _checked(events, url: str):
    """``events`` with an event that is not JSON told as a broken stream."""
    try:
        yield from events
    except ValueError as exc:
        raise StreamError(f"{url}: an event of the stream is not JSON ({exc}): is it SGLang's /generate?") from None


def read_events(lines) -> object:
    """The JSON of each ``data:`` event of a server-sent-event stream, ``None`` for ``[DONE]``.

    ``lines`` yields bytes lines (a response). Lines of one event are joined; comments and other
    fields are skipped, as the SSE format says.
    """
    data: list[str] = []
    for raw in lines:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
            continue
        if line or not data:
            continue
        text, data = "\n".join(data), []
        if text.strip() == "[DONE]":
            yield None
            return
        yield json.loads(text)
    if data:  # a last event without its blank line
        text = "\n".join(data)
        yield None if text.strip() == "[DONE]" else json.loads(text)


class _Chunks:
    """The events of one stream so far: arrival times, tokens each carried, the output rebuilt."""

    def __init__(self):
        self.times: list[float] = []
        self.tokens: list[int] = []
        self.ids: list[int] = []
        self.last: dict = {}
        self.count = 0

    def add(self, event: dict, now: float) -> None:
        if not isinstance(event, dict):  # kept as the answer, whose check (bench.response) words it
            self.last = {"event": event}
            return
        meta = event.get("meta_info") if isinstance(event.get("meta_info"), dict) else {}
        ids = event.get("output_ids") if isinstance(event.get("output_ids"), list) else None
        total = meta.get("completion_tokens")
        if isinstance(total, bool) or not isinstance(total, (int, float)) or not math.isfinite(total):
            total = None  # a count that is not one: the answer's check (bench.response) says so
        if ids is not None:
            # cumulative events hold the whole output (as many ids as completion_tokens); deltas extend it
            self.ids = list(ids) if total is None or len(ids) == total else self.ids + list(ids)
        total = int(total) if total is not None else len(self.ids)
        if total > self.count:
            self.times.append(now)
            self.tokens.append(total - self.count)
            self.count = total
        text = event.get("text")
        self.last = {**self.last, **event, "text": text if text is not None else self.last.get("text")}

    def final(self) -> dict:
        out = dict(self.last)
        if "output_ids" in out or self.ids:
            out["output_ids"] = self.ids
        return out
