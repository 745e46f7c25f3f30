"""A minimal JSON-over-HTTP client for the SGLang server (stdlib only)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request


class HTTPStatusError(RuntimeError):
    """The server answered with a non-2xx status."""

    def __init__(self, url: str, status: int, body: str):
        self.status = status
        super().__init__(f"{url} answered HTTP {status}: {body[:300]}")


def request_json(method: str, url: str, payload: dict | None = None, *, timeout: float = 30.0,
                 api_key: str | None = None) -> dict:
    """Send a request and decode the JSON answer (an empty body gives ``{}``)."""
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read().decode() or "{}"
    except urllib.error.HTTPError as exc:
        raise HTTPStatusError(url, exc.code, exc.read().decode(errors="replace")) from exc
    try:
        return json.loads(body)
    except ValueError:
        return {"text": body}
