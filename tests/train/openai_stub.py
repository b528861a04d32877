"""A stub of OpenAI's files + fine-tuning HTTP API, served for real on 127.0.0.1.

TEST DOUBLE: OpenAI's fine-tuning service cannot run here (it is a paid remote
service), so the tests talk real HTTP over real sockets to this server, which
implements the contract the client relies on, with the request and reply shapes
of OpenAI's API reference and the ``openai`` SDK's types:

- ``POST /v1/files`` (multipart: ``purpose=fine-tune``, ``file``) → a file object
  ``{id: "file-…", object: "file", bytes, created_at, filename, purpose, status}``;
  400 when ``purpose`` is not ``fine-tune`` or a line lacks ``messages``.
- ``POST /v1/fine_tuning/jobs`` ``{model, training_file, validation_file?, suffix?,
  seed?, hyperparameters?}`` → a ``fine_tuning.job`` (status ``validating_files``);
  400 for an unknown file id.
- ``GET /v1/fine_tuning/jobs`` (``limit``, ``after``) → ``{object: "list", data, has_more}``, newest first.
- ``GET /v1/fine_tuning/jobs/{id}`` → the job; each GET moves it one step along
  ``validating_files → queued → running → succeeded`` (or ``failed``/``cancelled``,
  see :attr:`OpenAIStub.outcome`), unless :attr:`OpenAIStub.hold` names a status
  to stay in.
- ``GET /v1/fine_tuning/jobs/{id}/events`` (``limit``, ``after``) →
  ``{object: "list", data: [fine_tuning.job.event…], has_more}``, newest first.

Errors use OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``.
A wrong bearer token gets 401 whose message repeats the token *in full* (OpenAI
masks it; the stub does not, to check that the client scrubs it). Faults are
queued per route with :meth:`OpenAIStub.fail`.
"""

from __future__ import annotations

import collections
import email.parser
import email.policy
import itertools
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

PROGRESSION = ("validating_files", "queued", "running")


@dataclass
class Fault:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    message: str = "stub fault"
    code: str | None = None
    after_effect: bool = False  # act on the request, then answer with the fault (a lost reply)


def openai_error(message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class OpenAIStub:
    """The server plus what tests set (``outcome``, ``hold``, faults) and read (``requests``)."""

    def __init__(self, api_key: str | None = "sk-test-SECRET") -> None:
        self.api_key = api_key
        self.outcome = "succeeded"  # or "failed" / "cancelled"
        self.failure = {"code": "invalid_training_file",
                        "message": "The job failed due to an invalid training file: line 3 has no assistant message.",
                        "param": "training_file"}
        self.hold: str | None = None  # a status to stay in (e.g. "running")
        self.files: dict[str, dict[str, Any]] = {}
        self.file_contents: dict[str, bytes] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.job_payloads: dict[str, dict[str, Any]] = {}
        self.events: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        self.requests: list[tuple[str, str]] = []  # (method, path) in order of arrival
        self._faults: dict[tuple[str, str], list[Fault]] = collections.defaultdict(list)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="openai-stub",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    # --- what tests use --------------------------------------------------------------------

    def count(self, method: str, route: str) -> int:
        """Requests received for a route: ``"/v1/files"``, ``"/v1/fine_tuning/jobs"``,
        ``"/v1/fine_tuning/jobs/{id}"``, ``"/v1/fine_tuning/jobs/{id}/events"``."""
        with self._lock:
            return sum(1 for m, p in self.requests if m == method and _route(p) == route)

    def fail(self, method: str, route: str, *faults: Fault) -> None:
        """Answer the next requests to ``route`` with ``faults``, in order."""
        with self._lock:
            self._faults[(method, route)].extend(faults)

    # --- the API ---------------------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids):06d}stub"

    def _event(self, job_id: str, message: str, level: str = "info") -> None:
        events = self.events[job_id]
        events.append({"object": "fine_tuning.job.event", "id": f"ftevent-{job_id}-{len(events) + 1}",
                       "created_at": int(time.time()), "level": level, "message": message,
                       "data": {}, "type": "message"})

    def upload(self, fields: dict[str, tuple[str | None, bytes]]) -> tuple[int, dict[str, Any]]:
        purpose = fields.get("purpose", (None, b""))[1].decode()
        if purpose != "fine-tune":
            return 400, openai_error(f"Invalid purpose '{purpose}'.", param="purpose")
        if "file" not in fields:
            return 400, openai_error("Missing file.", param="file")
        filename, content = fields["file"]
        for number, line in enumerate(content.decode().splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row.get("messages"), list):
                return 400, openai_error(f"Line {number} has no 'messages'.", param="file")
        file_id = self._new_id("file")
        self.files[file_id] = {"id": file_id, "object": "file", "bytes": len(content),
                               "created_at": int(time.time()), "filename": filename or "upload.jsonl",
                               "purpose": "fine-tune", "status": "processed", "status_details": None}
        self.file_contents[file_id] = content
        return 200, self.files[file_id]

    def create_job(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        for key in ("training_file", "validation_file"):
            if body.get(key) is not None and body[key] not in self.files:
                return 400, openai_error(f"invalid {key}: {body[key]}", param=key, code="invalid_file")
        if not body.get("model"):
            return 400, openai_error("Missing model.", param="model")
        job_id = self._new_id("ftjob")
        hyper = body.get("hyperparameters") or {}
        self.jobs[job_id] = {
            "object": "fine_tuning.job", "id": job_id, "model": body["model"], "created_at": int(time.time()),
            "finished_at": None, "fine_tuned_model": None, "organization_id": "org-stub", "result_files": [],
            "status": "validating_files", "validation_file": body.get("validation_file"),
            "training_file": body["training_file"], "trained_tokens": None, "error": None,
            "hyperparameters": {"n_epochs": hyper.get("n_epochs", "auto"),
                                "batch_size": hyper.get("batch_size", "auto"),
                                "learning_rate_multiplier": hyper.get("learning_rate_multiplier", "auto")},
            "seed": body.get("seed", 42), "suffix": body.get("suffix"),
        }
        self.job_payloads[job_id] = body
        self._event(job_id, f"Created fine-tuning job: {job_id}")
        return 200, self.jobs[job_id]

    def get_job(self, job_id: str) -> tuple[int, dict[str, Any]]:
        job = self.jobs.get(job_id)
        if job is None:
            return 404, openai_error(f"Could not find fine-tune: {job_id}", code="fine_tune_not_found")
        status = job["status"]
        if status not in ("succeeded", "failed", "cancelled") and status != self.hold:
            step = PROGRESSION.index(status) + 1
            job["status"] = PROGRESSION[step] if step < len(PROGRESSION) else self.outcome
            self._on_status(job)
        return 200, job

    def _on_status(self, job: dict[str, Any]) -> None:
        job_id, status = job["id"], job["status"]
        if status == "queued":
            self._event(job_id, "Validating training file: done")
        elif status == "running":
            self._event(job_id, "Fine-tuning job started")
            self._event(job_id, "Step 1/10: training loss=1.23")
        elif status == "succeeded":
            suffix = job.get("suffix") or ""
            job["fine_tuned_model"] = f"ft:{job['model']}:org-stub:{suffix}:{job_id[-10:]}"
            job["trained_tokens"] = 1234
            job["finished_at"] = int(time.time())
            self._event(job_id, f"New fine-tuned model created: {job['fine_tuned_model']}")
            self._event(job_id, "The job has successfully completed")
        elif status == "failed":
            job["error"] = dict(self.failure)
            job["finished_at"] = int(time.time())
            self._event(job_id, self.failure["message"], level="error")
        elif status == "cancelled":
            job["finished_at"] = int(time.time())
            self._event(job_id, "Job cancelled by user")

    def list_jobs(self, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        jobs = sorted(self.jobs.values(), key=lambda j: j["id"], reverse=True)
        return 200, _page(jobs, query)

    def list_events(self, job_id: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        if job_id not in self.jobs:
            return 404, openai_error(f"Could not find fine-tune: {job_id}", code="fine_tune_not_found")
        return 200, _page(list(reversed(self.events[job_id])), query)

    def handle(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        split = urlsplit(path)
        route, query = _route(split.path), parse_qs(split.query)
        with self._lock:
            self.requests.append((method, split.path))
            fault = self._faults[(method, route)].pop(0) if self._faults[(method, route)] else None
            if self.api_key is not None:
                given = headers.get("Authorization") or ""
                if given != f"Bearer {self.api_key}":
                    token = given.removeprefix("Bearer ")
                    return 401, openai_error(f"Incorrect API key provided: {token}.", code="invalid_api_key"), {}
            if fault is not None and not fault.after_effect:
                return fault.status, openai_error(fault.message, code=fault.code), fault.headers
            status, reply = self._dispatch(method, split.path, route, query, headers, body)
            if fault is not None:  # the request took effect; its reply is lost
                return fault.status, openai_error(fault.message, code=fault.code), fault.headers
            return status, reply, {}

    def _dispatch(self, method: str, path: str, route: str, query: dict[str, list[str]], headers: Any,
                  body: bytes) -> tuple[int, dict[str, Any]]:
        parts = path.strip("/").split("/")
        if (method, route) == ("POST", "/v1/files"):
            return self.upload(_multipart(headers.get("Content-Type", ""), body))
        if (method, route) == ("POST", "/v1/fine_tuning/jobs"):
            return self.create_job(json.loads(body))
        if (method, route) == ("GET", "/v1/fine_tuning/jobs"):
            return self.list_jobs(query)
        if (method, route) == ("GET", "/v1/fine_tuning/jobs/{id}"):
            return self.get_job(parts[3])
        if (method, route) == ("GET", "/v1/fine_tuning/jobs/{id}/events"):
            return self.list_events(parts[3], query)
        return 404, openai_error(f"Unknown route {method} {path}")


def _route(path: str) -> str:
    parts = urlsplit(path).path.strip("/").split("/")
    if len(parts) >= 4 and parts[:3] == ["v1", "fine_tuning", "jobs"]:
        parts[3] = "{id}"
    return "/" + "/".join(parts)


def _page(items: list[dict[str, Any]], query: dict[str, list[str]]) -> dict[str, Any]:
    limit = int(query.get("limit", ["20"])[0])
    after = query.get("after", [None])[0]
    if after is not None:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    return {"object": "list", "data": items[:limit], "has_more": len(items) > limit}


def _multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Fields of a multipart/form-data body: name → (filename, bytes)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields[name] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


def _handler(stub: OpenAIStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Headers and body go out as separate writes; without this each reply waits for a delayed ACK.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, reply, extra = stub.handle(self.command, self.path, self.headers, body)
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    return Handler
