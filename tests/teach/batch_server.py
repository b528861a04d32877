"""A real OpenAI-style files + Batch API server on 127.0.0.1, for the batch teacher tests.

TEST DOUBLE: a provider's Batch API is a paid remote service that cannot run
here, so the tests talk real HTTP over real sockets (aiohttp, in a background
thread of the test process, so it outlives a client subprocess killed with
SIGKILL) to this server. It implements the contract the client relies on, with
the request and reply shapes of OpenAI's API reference and the ``openai``
SDK's types:

- ``POST /v1/files`` (multipart: ``purpose=batch``, ``file``) → a file object;
  400 when ``purpose`` is not ``batch`` or a line is not a request input object
  (``custom_id`` unique in the file, ``method: POST``, ``url``, ``body``).
- ``GET /v1/files/{id}/content`` → the file's bytes.
- ``POST /v1/batches`` ``{input_file_id, endpoint, completion_window: "24h"}`` →
  a batch object, status ``validating``; 400 for an unknown file or endpoint.
- ``GET /v1/batches`` (``limit``, ``after``) → ``{object: "list", data, has_more}``, newest first.
- ``GET /v1/batches/{id}`` → the batch; each GET moves it along
  ``validating → in_progress → finalizing → completed``, running its requests
  while ``in_progress`` (all at once, or ``lines_per_poll`` per GET). A request
  is answered as the stub teacher answers (:func:`tests.teach.stub_openai.reply_text`:
  deterministic texts the two-stage answer extraction parses), with usage.
  Successful lines go to the output file, failed ones to the error file.

The same base URL also answers ``POST /v1/completions`` and ``POST
/v1/chat/completions`` at once (as a provider does beside its Batch API), with
the very replies a batch line gets, so a batch run and a request-loop run of the
same questions can be compared. ``reasoning`` makes it a reasoning model for
stage-1 requests: ``"reasoning_content"`` (DeepSeek, vLLM's reasoning parsers)
or ``"reasoning"`` (newer vLLM) beside the chat message's content, or
``"think"``: ``<think>…</think>`` before the text (how every style answers
``/v1/completions``, which has no message). Stage-2 answers stay plain.

Knobs for what real batches do: ``hold`` (stay ``in_progress``, running
nothing), ``fail_lines`` (the next N requests run answer HTTP 500),
``refuse_marker`` (prompts containing it answer HTTP 400, always),
``errors_in_output`` (failed lines in the output file, as some servers write
them), ``expire_after`` (the next batch expires after running that many
requests: its output holds those, its error file ``batch_expired`` lines for
the rest), ``fail_next_batch`` (the next batch fails validation with that
message), ``lose_create_replies`` (the next N batch creations take effect but
answer 500: a lost reply), ``refuse_creates`` (the next N are refused with a 400), ``forget_batches``
(every batch GET answers 404), ``counts_as`` (every batch's ``request_counts`` replaced by that value). A wrong bearer token gets a 401 whose message
repeats the token in full, to check that the client scrubs it.

What tests read: :meth:`count` (requests per route), ``created`` (the
custom_ids of each created batch, in order) and ``ran`` (every request run:
what a provider would bill).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.teach.stub_openai import reply_text

ENDPOINTS = ("/v1/completions", "/v1/chat/completions")
REASONING_STYLES = ("reasoning_content", "reasoning", "think")


def reasoning_of(prompt: str) -> str:
    """What the stub "thinks" before a rationale: its own words per prompt, never in the visible text."""
    tag = hashlib.sha256(prompt.encode()).hexdigest()[:8]
    return f"Weighing question {tag}: each flip turns the coin over, so count the flips."


def _error(message: str, status: int, code: str | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                        "code": code}}, status=status)


@dataclass
class BatchServer:
    api_key: str | None = None
    completion_tokens: int = 5  # per choice
    honour_n: bool = True
    lines_per_poll: int | None = None
    hold: bool = False
    fail_lines: int = 0
    refuse_marker: str | None = None
    errors_in_output: bool = False
    expire_after: int | None = None
    fail_next_batch: str | None = None
    lose_create_replies: int = 0
    refuse_creates: int = 0  # the next N batch creations are refused (HTTP 400, e.g. a billing limit)
    reasoning: str | None = None  # one of REASONING_STYLES: a reasoning model
    forget_batches: bool = False  # GET /v1/batches/{id} answers 404 (a server that lost its batches)
    counts_as: Any = None  # when set, every batch's request_counts is this (a server sending odd shapes)
    port: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, route) in order of arrival
    created: list[list[str]] = field(default_factory=list)  # custom_ids of each created batch
    ran: list[str] = field(default_factory=list)  # custom_ids of every request run (billed)
    direct: list[dict[str, Any]] = field(default_factory=list)  # bodies posted to the endpoints themselves
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    contents: dict[str, bytes] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.reasoning not in (None, *REASONING_STYLES):
            raise ValueError(f"reasoning must be one of {REASONING_STYLES}")
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._work: dict[str, dict[str, Any]] = {}  # per batch: its input lines, position, results
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="batch-stub", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("batch stub did not start")
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    # -- what tests read ---------------------------------------------------------------------

    def count(self, method: str, route: str) -> int:
        """Requests received for a route: ``/v1/files``, ``/v1/files/{id}/content``, ``/v1/batches``,
        ``/v1/batches/{id}``."""
        with self._lock:
            return sum(1 for m, r in self.requests if (m, r) == (method, route))

    def input_lines(self, batch_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._work[batch_id]["lines"])

    # -- the server ----------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        app = web.Application(client_max_size=256 * 2**20, middlewares=[self._auth])
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{id}/content", self._content)
        app.router.add_post("/v1/batches", self._create)
        app.router.add_get("/v1/batches", self._list)
        app.router.add_get("/v1/batches/{id}", self._get)
        for route in ENDPOINTS:
            app.router.add_post(route, self._complete)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        async def shutdown() -> None:
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else request.path
        with self._lock:
            self.requests.append((request.method, route))
        if self.api_key is not None:
            given = request.headers.get("Authorization") or ""
            if given != f"Bearer {self.api_key}":
                return _error(f"Incorrect API key provided: {given.removeprefix('Bearer ')}.", 401,
                              "invalid_api_key")
        return await handler(request)

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids):06d}stub"

    def _store_file(self, content: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = self._new_id("file")
        self.files[file_id] = {"id": file_id, "object": "file", "bytes": len(content),
                               "created_at": int(time.time()), "filename": filename, "purpose": purpose,
                               "status": "processed", "status_details": None}
        self.contents[file_id] = content
        return self.files[file_id]

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        purpose = str(form.get("purpose") or "")
        if purpose != "batch":
            return _error(f"Invalid purpose '{purpose}' for a batch input.", 400)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            return _error("Missing file.", 400)
        content = upload.file.read()
        seen = set()
        for number, text in enumerate(content.decode("utf-8").splitlines(), 1):
            if not text.strip():
                continue
            line = json.loads(text)
            if not (isinstance(line, dict) and line.get("method") == "POST" and line.get("url") in ENDPOINTS
                    and isinstance(line.get("body"), dict) and line.get("custom_id")):
                return _error(f"Line {number} is not a batch request input object.", 400)
            if line["custom_id"] in seen:
                return _error(f"Line {number}: custom_id {line['custom_id']} is not unique.", 400)
            seen.add(line["custom_id"])
        with self._lock:
            return web.json_response(self._store_file(content, upload.filename, "batch"))

    async def _content(self, request: web.Request) -> web.Response:
        with self._lock:
            content = self.contents.get(request.match_info["id"])
        if content is None:
            return _error(f"No such File object: {request.match_info['id']}", 404)
        return web.Response(body=content, content_type="application/octet-stream")

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            if self.refuse_creates > 0:
                self.refuse_creates -= 1
                return _error("Enqueued token limit reached for this organization (stub: refused).", 400,
                              "token_limit_exceeded")
            file = self.files.get(body.get("input_file_id"))
            if file is None or file["purpose"] != "batch":
                return _error(f"Invalid input_file_id: {body.get('input_file_id')}", 400)
            if body.get("endpoint") not in ENDPOINTS or body.get("completion_window") != "24h":
                return _error("endpoint must be one of /v1/completions, /v1/chat/completions and "
                              "completion_window 24h.", 400)
            lines = [json.loads(t) for t in self.contents[file["id"]].decode().splitlines() if t.strip()]
            batch_id = self._new_id("batch")
            now = int(time.time())
            self.batches[batch_id] = {
                "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                "input_file_id": file["id"], "completion_window": "24h", "status": "validating",
                "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
                "expires_at": now + 86400, "finalizing_at": None, "completed_at": None, "failed_at": None,
                "expired_at": None, "cancelling_at": None, "cancelled_at": None,
                "request_counts": {"total": len(lines), "completed": 0, "failed": 0}, "metadata": None}
            self._work[batch_id] = {"lines": lines, "position": 0, "outputs": [], "errors": [],
                                    "expire_after": self.expire_after, "fail": self.fail_next_batch}
            self.expire_after = self.fail_next_batch = None  # each applies to one batch
            self.created.append([line["custom_id"] for line in lines])
            if self.lose_create_replies > 0:
                self.lose_create_replies -= 1
                return _error("The server had an error while processing your request (stub: reply lost).", 500)
            return web.json_response(self.batches[batch_id])

    async def _list(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "20"))
        after = request.query.get("after")
        with self._lock:
            items = sorted(self.batches.values(), key=lambda b: b["id"], reverse=True)
        if after is not None:
            ids = [b["id"] for b in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        return web.json_response({"object": "list", "data": items[:limit], "has_more": len(items) > limit,
                                  "first_id": items[0]["id"] if items else None,
                                  "last_id": items[:limit][-1]["id"] if items else None})

    async def _get(self, request: web.Request) -> web.Response:
        with self._lock:
            batch = self.batches.get(request.match_info["id"])
            if batch is None or self.forget_batches:
                return _error(f"No batch found with id '{request.match_info['id']}'.", 404)
            self._advance(batch)
            if self.counts_as is not None:
                return web.json_response({**batch, "request_counts": self.counts_as})
            return web.json_response(batch)

    # -- running a batch -----------------------------------------------------------------------

    def _advance(self, batch: dict[str, Any]) -> None:
        work, now = self._work[batch["id"]], int(time.time())
        status = batch["status"]
        if status == "validating":
            if work["fail"]:
                batch.update(status="failed", failed_at=now, errors={"object": "list", "data": [
                    {"code": "invalid_request", "message": work["fail"], "param": None, "line": None}]})
            else:
                batch.update(status="in_progress", in_progress_at=now)
        elif status == "in_progress" and not self.hold:
            lines = work["lines"]
            step = self.lines_per_poll or len(lines)
            for line in lines[work["position"]:work["position"] + step]:
                if work["expire_after"] is not None and work["position"] >= work["expire_after"]:
                    break
                self._answer(work, line)
                work["position"] += 1
            counts = batch["request_counts"]
            counts["completed"] = sum(1 for o in work["outputs"] if o["response"]["status_code"] == 200)
            counts["failed"] = work["position"] - counts["completed"]
            if work["expire_after"] is not None and work["position"] >= work["expire_after"]:
                for line in lines[work["position"]:]:
                    work["errors"].append({"id": self._new_id("batch_req"), "custom_id": line["custom_id"],
                                           "response": None, "error": {
                                               "code": "batch_expired",
                                               "message": "This request could not be executed before the "
                                                          "completion window expired."}})
                batch.update(status="expired", expired_at=now)
                self._write_files(batch, work)
            elif work["position"] >= len(lines):
                batch.update(status="finalizing", finalizing_at=now)
        elif status == "finalizing":
            batch.update(status="completed", completed_at=now)
            self._write_files(batch, work)

    async def _complete(self, request: web.Request) -> web.Response:
        """``POST /v1/completions`` or ``/v1/chat/completions`` answered at once, as a batch line would be."""
        body = await request.json()
        with self._lock:
            self.direct.append(body)
            status, reply = self._reply(request.path, body, self._new_id("req"))
        return web.json_response(reply, status=status)

    def _answer(self, work: dict[str, Any], line: dict[str, Any]) -> None:
        self.ran.append(line["custom_id"])
        request_id = self._new_id("req")
        result: dict[str, Any] = {"id": self._new_id("batch_req"), "custom_id": line["custom_id"], "error": None}
        status, reply = self._reply(line["url"], line["body"], request_id)
        result["response"] = {"status_code": status, "request_id": request_id, "body": reply}
        (work["outputs"] if status == 200 or self.errors_in_output else work["errors"]).append(result)

    def _reply(self, url: str, body: dict[str, Any], request_id: str) -> tuple[int, dict[str, Any]]:
        """The status and body a request gets, in a batch or not."""
        chat = url == "/v1/chat/completions"
        prompt = body["messages"][-1]["content"] if chat else body["prompt"]
        if self.refuse_marker and self.refuse_marker in prompt:
            return 400, {"error": {"message": "this prompt is refused (stub)", "type": "invalid_request_error"}}
        if self.fail_lines > 0:
            self.fail_lines -= 1
            return 500, {"error": {"message": "The server had an error (stub)", "type": "server_error"}}
        n = body.get("n", 1) if self.honour_n else 1
        thinks = self.reasoning is not None and not prompt.rstrip().endswith(" is")  # not a stage-2 answer
        choices = []
        for i in range(n):
            text = reply_text(prompt, body.get("seed"), body.get("temperature", 1.0), i, False)
            finish = "length" if body["max_tokens"] <= self.completion_tokens else "stop"
            fields: dict[str, Any] = {}
            if thinks and (self.reasoning == "think" or not chat):
                text = f"<think>\n{reasoning_of(prompt)}\n</think>\n\n{text.strip()}"
            elif thinks:
                fields[self.reasoning] = reasoning_of(prompt)
            if chat:
                choices.append({"index": i, "message": {"role": "assistant", "content": text, **fields},
                                "finish_reason": finish})
            else:
                choices.append({"index": i, "text": text, "finish_reason": finish, "logprobs": None})
        return 200, {"id": f"cmpl-{request_id}", "object": "text_completion", "model": body["model"],
                     "created": int(time.time()), "choices": choices,
                     "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": self.completion_tokens * n,
                               "total_tokens": len(prompt) // 4 + self.completion_tokens * n}}

    def _write_files(self, batch: dict[str, Any], work: dict[str, Any]) -> None:
        def jsonl(rows: list[dict[str, Any]]) -> bytes:
            return "".join(json.dumps(row) + "\n" for row in rows).encode()

        if work["outputs"]:
            batch["output_file_id"] = self._store_file(jsonl(work["outputs"]), "batch_output.jsonl",
                                                       "batch_output")["id"]
        if work["errors"]:
            batch["error_file_id"] = self._store_file(jsonl(work["errors"]), "batch_errors.jsonl",
                                                      "batch_output")["id"]
