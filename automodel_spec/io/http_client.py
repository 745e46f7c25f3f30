"""A minimal JSON-over-HTTP client for the SGLang server (stdlib only).

The server is one this machine started, so requests never go through a proxy: ``urlopen`` takes
``http_proxy`` from the environment (set on many clusters for the way out), and sent there a request to
127.0.0.1 never reached the server, which then looked as if it never became ready.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

DIRECT_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy, whatever the environment says


class HTTPStatusError(RuntimeError):
    """The server answered with a non-2xx status."""

    def __init__(self, url: str, status: int, body: str):
        self.status = status
        super().__init__(f"{url} answered HTTP {status}: {body[:300]}")


class NotJSONError(ValueError):
    """The server answered 2xx with a body that is not JSON (``request_json(..., json_only=True)``)."""

    def __init__(self, url: str, body: str):
        one = " ".join(body.split())
        super().__init__(f"{url} answered a body that is not JSON (is it SGLang?): {one[:120]!r}")


def request_json(method: str, url: str, payload: dict | None = None, *, timeout: float = 30.0,
                 api_key: str | None = None, json_only: bool = False) -> dict:
    """Send a request and decode the JSON answer (an empty body gives ``{}``).

    A body that is not JSON comes back as ``{"text": body}`` (SGLang answers some endpoints in plain
    text), or raises ``NotJSONError`` with ``json_only``.
    """
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    try:
        with DIRECT_OPENER.open(req, timeout=timeout) as resp:
            body = resp.read().decode() or "{}"
    except urllib.error.HTTPError as exc:
        raise HTTPStatusError(url, exc.code, exc.read().decode(errors="replace")) from exc
    try:
        return json.loads(body)
    except ValueError:
        if json_only:
            raise NotJSONError(url, body) from None
        return {"text": body}
