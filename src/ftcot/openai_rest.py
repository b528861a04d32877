"""OpenAI's REST API for files and long-running jobs: one client, with the retries, for batches and fine-tuning.

The Batch API teacher (:class:`ftcot.teach.batch.BatchClient`) and the API
student (:class:`ftcot.train.openai_student.FineTuneClient`) each upload a
file, create a job from it (a batch, a fine-tuning job) and poll the job. What
they share is here; each subclasses :class:`RestClient` with its endpoints and
its own error type (a :class:`RestAPIError`).

- Every request is retried on 408, 409, 429, 5xx, timeouts and dropped
  connections, with exponential back-off and full jitter; ``retry-after-ms``
  or ``Retry-After`` (seconds or an HTTP date) is honoured as a lower bound,
  capped at ``max_retry_after_s``. A 429 whose error code is
  ``insufficient_quota`` is not retried (waiting adds no credit); any other
  4xx raises at once with the server's own message; running out of retries
  raises with ``retryable=True`` (rerun the same command to resume).
- A request that is not idempotent (creating a job) passes ``recover``: after
  an attempt whose reply may have been lost (a timeout, a dropped connection, a
  5xx, a 2xx that is not a JSON object) it looks on the server for what that
  attempt made, and returns it instead of creating a second one.
- The API key goes only into the ``Authorization`` header (user info in the
  URL is sent as Basic auth by httpx); every message goes through
  :func:`ftcot.api_replies.redact`: the key, the URL's credentials and the
  caller's other secrets never reach a log line or an error.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from ftcot.api_replies import (backoff_delay, endpoint, error_message, parse_retry_after, public_url, redact,
                               retryable_status, url_secrets)
from ftcot.errors import FtcotError

log = logging.getLogger(__name__)


class RestAPIError(FtcotError):
    """A request failed: at once (a 4xx) or after all retries.

    ``retryable`` says whether rerunning the same command later may succeed.
    """

    def __init__(self, message: str, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


def error_code(response_text: str) -> str | None:
    """The ``error.code`` of an OpenAI error body (``insufficient_quota``, ``invalid_api_key``…), if any."""
    try:
        body = json.loads(response_text)
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def retry_after_s(headers: httpx.Headers | dict[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from OpenAI's ``retry-after-ms`` or the standard ``Retry-After``."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    return parse_retry_after(headers.get("retry-after"), now)


class RestClient:
    """Requests to ``base_url`` (``…/v1``) with the retries, recovery and redaction of the module docstring.

    A subclass names its error type (``error``), adds its endpoints on top of :meth:`request`,
    :meth:`upload` and :meth:`find_newest`, may add ``key_hint`` to the message of a 401 or 403, and
    logs its retries under ``logger``.
    """

    error: type[RestAPIError] = RestAPIError
    key_hint = ""
    logger = log  # a subclass logs under its own module's name

    def __init__(self, base_url: str, api_key: str | None, *, secrets: Sequence[str] = (),
                 request_timeout_s: float = 120, max_retries: int = 6, backoff_base_s: float = 1.0,
                 backoff_cap_s: float = 60.0, max_retry_after_s: float = 300.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url = base_url.rstrip("/")
        self.public_base_url = public_url(self.base_url)
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.max_retry_after_s = max_retry_after_s
        self._sleep = sleep
        self._rng = random.Random()
        self._secrets = [s for s in [api_key, *url_secrets(base_url), *secrets] if s]
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(headers=headers, timeout=request_timeout_s)

    def __repr__(self) -> str:  # never the key
        return f"{type(self).__name__}(base_url={self.public_base_url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def clean(self, text: str) -> str:
        """``text`` with the key, the URL's credentials and the other secrets replaced by ``***``."""
        return redact(text, self._secrets)

    # -- what both APIs have --

    def upload(self, content: bytes, filename: str, purpose: str) -> dict[str, Any]:
        """``POST /files`` (multipart: ``purpose``, ``file``); the file object."""
        def files() -> dict[str, Any]:  # fresh per attempt
            return {"file": (filename, content, "application/jsonl")}

        # A repeated upload after a lost reply costs nothing but a stray file: retried as is.
        return self.request("POST", "files", data={"purpose": purpose}, files=files)

    def find_newest(self, path: str, field: str, value: str, max_pages: int) -> dict[str, Any] | None:
        """The newest object of a list endpoint (OpenAI lists newest first) whose ``field`` is ``value``."""
        params: dict[str, Any] = {"limit": 100}
        for _ in range(max_pages):
            body = self.request("GET", path, params=params)
            items = [item for item in body.get("data") or [] if isinstance(item, dict)]
            for item in items:
                if item.get(field) == value and item.get("id"):
                    return item
            if not body.get("has_more") or not items:
                return None
            params["after"] = items[-1].get("id")
        return None

    # -- one logical request --

    def request(self, method: str, path: str, *, recover: Callable[[], dict[str, Any] | None] | None = None,
                files: Callable[[], dict[str, Any]] | None = None,
                receive: Callable[[httpx.Response], None] | None = None, **kwargs: Any) -> Any:
        """The reply's JSON object (None when ``receive`` took a 2xx body as it streamed), after retries.

        ``path`` is relative to ``base_url``; ``files`` builds the multipart files afresh per attempt;
        ``recover`` is asked, after an attempt whose reply may have been lost, for what it made.
        """
        path = path.lstrip("/")
        url = endpoint(self.base_url, path)
        where = f"{method} {self.public_base_url}/{path}"
        attempts = self.max_retries + 1
        reason, status = "", None
        for attempt in range(attempts):
            wait: float | None = None
            ambiguous = False  # the server may have acted on a request whose reply was lost
            status = None
            try:
                with self._http.stream(method, url, files=files() if files else None, **kwargs) as response:
                    status = response.status_code
                    if 200 <= status < 300 and receive is not None:
                        receive(response)
                        return None
                    response.read()
            except httpx.ConnectError as exc:
                reason = f"could not connect ({type(exc).__name__})"
            except httpx.TimeoutException as exc:
                reason, ambiguous = f"timed out ({type(exc).__name__})", True
            except httpx.TransportError as exc:  # reset, dropped mid-reply, protocol errors
                reason, ambiguous = f"connection failed ({type(exc).__name__}: {exc})", True
            else:
                if 200 <= status < 300:
                    try:
                        body = response.json()
                    except ValueError:
                        body = None
                    if isinstance(body, dict):
                        return body
                    reason, ambiguous = "the reply was not a JSON object", True
                else:
                    message = error_message(response.text)
                    if not retryable_status(status) or (
                            status == 429 and error_code(response.text) == "insufficient_quota"):
                        hint = self.key_hint if status in (401, 403) else ""
                        raise self.error(self.clean(f"HTTP {status} from {where}: {message}{hint}"), status)
                    reason, ambiguous = f"HTTP {status}: {message}", status >= 500
                    wait = retry_after_s(response.headers)
            if attempt + 1 == attempts:
                break
            if wait is not None:
                delay = min(wait, self.max_retry_after_s) + self._rng.uniform(0.0, min(1.0, self.backoff_base_s))
            else:
                delay = backoff_delay(attempt, self.backoff_base_s, self.backoff_cap_s, self._rng)
            self.logger.warning("%s: attempt %d of %d failed: %s; retrying in %.2f s", where, attempt + 1, attempts,
                        self.clean(reason), delay)
            self._sleep(delay)
            if ambiguous and recover is not None:
                found = recover()
                if found is not None:
                    self.logger.info("%s: the earlier attempt took effect; using its result", where)
                    return found
        raise self.error(self.clean(f"{where}: gave up after {attempts} attempts; last: {reason}. "
                                    f"Rerun the same command to resume."), status, retryable=True)
