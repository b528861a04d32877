"""The Batch API's wire format and HTTP client: input lines, output lines, files and batches (OpenAI's contract).

Pure helpers build a batch's input file (:func:`input_line`, :func:`chunked`) and read its output and error
files (:func:`parse_output_line`); :class:`BatchClient` uploads, creates, polls, finds and downloads over
:class:`ftcot.openai_rest.RestClient` (its retry policy and one-line errors).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ftcot.api_replies import error_message, retryable_status
from ftcot.openai_rest import RestAPIError, RestClient
from ftcot.teach.backends.openai_compat import parse_response
from ftcot.teach.plan import PlannedRequest
from ftcot.teach.records import Completion

log = logging.getLogger("ftcot.teach.batch")

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
COMPLETION_WINDOW = "24h"
MAX_REQUESTS_PER_BATCH = 50_000  # OpenAI's limit per batch
MAX_BATCH_BYTES = 190 * 2**20  # OpenAI's input file limit is 200 MB

# --- the wire format (no network) -------------------------------------------------------------


@dataclass(frozen=True)
class LineResult:
    """What one output or error line says about its request."""

    custom_id: str
    completions: list[Completion] | None  # None: the request failed
    status: int | None = None
    message: str = ""
    retryable: bool = False
    request_id: str = ""


def batch_endpoint(chat: bool) -> str:
    return "/v1/chat/completions" if chat else "/v1/completions"


def input_line(item: PlannedRequest, body: dict[str, Any], url: str) -> str:
    """One line of a batch input file (OpenAI's request input object)."""
    return json.dumps({"custom_id": item.key, "method": "POST", "url": url, "body": body},
                      ensure_ascii=False, separators=(",", ":"))


def chunked(lines: Sequence[tuple[PlannedRequest, str]], max_requests: int = MAX_REQUESTS_PER_BATCH,
            max_bytes: int = MAX_BATCH_BYTES) -> list[list[tuple[PlannedRequest, str]]]:
    """Split a stage's lines into batches within the provider's limits, in order."""
    chunks: list[list[tuple[PlannedRequest, str]]] = []
    size = 0
    for pair in lines:
        line_bytes = len(pair[1].encode("utf-8")) + 1
        if not chunks or len(chunks[-1]) >= max_requests or (chunks[-1] and size + line_bytes > max_bytes):
            chunks.append([])
            size = 0
        chunks[-1].append(pair)
        size += line_bytes
    return chunks


def parse_output_line(line: dict[str, Any], chat: bool) -> LineResult:
    """A line of a batch's output or error file (OpenAI's request output object)."""
    custom_id = str(line.get("custom_id") or "")
    response = line.get("response") if isinstance(line.get("response"), dict) else {}
    error = line.get("error") if isinstance(line.get("error"), dict) else None
    status = response.get("status_code")
    status = int(status) if isinstance(status, (int, float)) and not isinstance(status, bool) else None
    body = response.get("body")
    request_id = str(response.get("request_id") or line.get("id") or "")
    if status == 200 and error is None:
        try:
            return LineResult(custom_id, parse_response(body, chat=chat), 200, request_id=request_id)
        except (ValueError, TypeError, AttributeError) as exc:
            return LineResult(custom_id, None, 200, f"the result could not be read ({exc})", True, request_id)
    if error is not None:
        code, message = error.get("code"), str(error.get("message") or "no message")
        text = f"{code}: {message}" if code else message
        # batch_expired and friends: the request never ran; it may run in another batch.
        retryable = status is None or retryable_status(status)
        return LineResult(custom_id, None, status, text, retryable and code != "batch_cancelled", request_id)
    if status is None:
        return LineResult(custom_id, None, None, "the line has neither a response nor an error", True, request_id)
    message = error_message(json.dumps(body)) if body is not None else "(empty body)"
    return LineResult(custom_id, None, status, f"HTTP {status}: {message}", retryable_status(status), request_id)


# --- HTTP --------------------------------------------------------------------------------------


class BatchAPIError(RestAPIError):
    """A request to the files or batch API failed: at once (a 4xx) or after all retries."""


class BatchClient(RestClient):
    """The few requests of OpenAI's files and batch API, with the retries of :class:`ftcot.openai_rest.RestClient`
    (408, 409, 429, 5xx, dropped connections; exponential back-off with full jitter, ``Retry-After`` honoured).

    The key goes only into the ``Authorization`` header; every message is redacted.
    """

    error = BatchAPIError
    key_hint = " (check the API key)"
    logger = log

    def __init__(self, base_url: str, api_key: str | None, *, request_timeout_s: float = 300,
                 **options: Any) -> None:
        super().__init__(base_url, api_key, request_timeout_s=request_timeout_s, **options)

    def upload_file(self, content: bytes, filename: str) -> dict[str, Any]:
        return self.upload(content, filename, "batch")

    def create_batch(self, input_file_id: str, endpoint_path: str) -> dict[str, Any]:
        payload = {"input_file_id": input_file_id, "endpoint": endpoint_path, "completion_window": COMPLETION_WINDOW}
        # Not idempotent: after a lost reply, look for the batch before creating it again.
        return self.request("POST", "batches", json=payload, recover=lambda: self.find_batch(input_file_id))

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        return self.request("GET", f"batches/{batch_id}")

    def find_batch(self, input_file_id: str, max_pages: int = 10) -> dict[str, Any] | None:
        """The newest batch made from ``input_file_id``."""
        return self.find_newest("batches", "input_file_id", input_file_id, max_pages)

    def download(self, file_id: str, path: Path) -> None:
        """A file's content into ``path`` (written whole or not at all; retried as a whole)."""
        partial = path.with_name(path.name + ".part")

        def receive(response: httpx.Response) -> None:
            with partial.open("wb") as handle:
                for block in response.iter_bytes():
                    handle.write(block)
            os.replace(partial, path)

        try:
            self.request("GET", f"files/{file_id}/content", receive=receive)
        finally:
            partial.unlink(missing_ok=True)
