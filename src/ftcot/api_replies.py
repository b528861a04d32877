"""Talking to an OpenAI-style HTTP API: its error text, when to try again, and URLs safe to record.

Shared by the teacher backend (``teach/backends/openai_compat.py``), the API
student's fine-tuning client (``train/openai_student.py``) and what records
their settings: all talk to the same kind of server and must agree on what is
retryable, how long to wait, and what of a URL may be written down.
"""

from __future__ import annotations

import email.utils
import json
import time
from urllib.parse import urlsplit, urlunsplit


def error_message(text: str | bytes) -> str:
    """The server's own words from an error reply (OpenAI, vLLM, llama.cpp, FastAPI shapes)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text.strip()
    try:
        body = json.loads(text)
    except ValueError:
        return text[:500] or "(empty body)"
    if isinstance(body, dict):
        error = body.get("error", body.get("detail", body.get("message")))
        if isinstance(error, dict):
            error = error.get("message", error)
        if error is not None:
            return (error if isinstance(error, str) else json.dumps(error))[:500]
    return text[:500]


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:  # HTTP dates are GMT; a naive one is malformed
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def public_url(url: str) -> str:
    """``url`` without user info, query or fragment: safe to record and print."""
    parts = urlsplit(url.rstrip("/"))
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
