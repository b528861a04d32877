"""Talking to an OpenAI-style HTTP API: its error text, when to try again, and URLs safe to record.

Shared by the teacher backend (``teach/backends/openai_compat.py``), the API
student's fine-tuning client (``train/openai_student.py``) and what records
their settings: all talk to the same kind of server and must agree on what is
retryable, how long to wait, and what of a URL may be written down.
"""

from __future__ import annotations

import random

import base64
import email.utils
import json
import re
import time
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit


# One retry policy for every HTTP client of ftcot (the teacher backend, the Batch API, API students): what the
# openai SDK retries too. 409 is a conflict the server resolves by itself (a resource being updated).
RETRYABLE = (408, 409, 429)


def retryable_status(status: int) -> bool:
    """Whether a reply with this HTTP status may succeed if sent again (after a back-off)."""
    return status in RETRYABLE or status >= 500


def backoff_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Exponential back-off with full jitter for retry ``attempt`` (0 = first retry)."""
    return rng.uniform(0.0, min(cap_s, base_s * 2**attempt))


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
    try:
        port = parts.port
    except ValueError:  # "host:abc": not a port, and not worth keeping
        port = None
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def endpoint(base_url: str, path: str) -> str:
    """``base_url`` + ``/path``, its query string kept after the path (``…/v1/completions?token=x``)."""
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + "/" + path.lstrip("/"), parts.query, ""))


def url_secrets(url: str | None) -> list[str]:
    """What of ``url`` is a credential: the user info's password (also as the Basic auth header that
    carries it, which servers may echo) and the query's values.

    Values under 4 characters are left out: they are flags (``?v=1``), not keys, and
    replacing every "1" in a message would garble it.
    """
    if not url:
        return []
    parts = urlsplit(url)
    values = [value for _, value in parse_qsl(parts.query, keep_blank_values=True)]
    if parts.password:
        basic = f"{unquote(parts.username or '')}:{unquote(parts.password)}".encode("latin-1", "replace")
        values += [parts.password, unquote(parts.password), base64.b64encode(basic).decode("ascii")]
    return [value for value in values if len(value) >= 4]


# A URL as it appears in free text (an exception message, a server's echo): up to a space or a quote,
# less the punctuation of the sentence around it.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*[^\s'\"<>.,:;)\]]")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` safe to print, log or store: every URL as :func:`public_url` gives it, every secret replaced.

    The one redaction for every message that can hold a URL or a key (errors, stored
    failures, run records), so none of them can be more revealing than another.
    """
    text = _URL_IN_TEXT.sub(lambda match: public_url(match.group()), text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
