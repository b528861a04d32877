"""Teaching through a provider's Batch API: the same completions at half the price, within 24 hours.

``ftcot teach … --batch`` (``batch: true`` for a teacher in ``ftcot run``)
sends what a normal run would send, as batches, over OpenAI's files and batch
HTTP API (``base_url`` = ``…/v1``):

1. ``POST {base_url}/files`` (multipart: ``purpose=batch``, ``file``): a JSONL
   input file, one line per request,
   ``{"custom_id", "method": "POST", "url": "/v1/completions", "body"}``; the
   body is exactly what the openai backend would post
   (:meth:`OpenAICompatTeacher.payload`, ``/v1/chat/completions`` with
   ``--chat``). A ``custom_id`` is the store key of the request's first
   completion, so every output line maps back to its store rows.
2. ``POST {base_url}/batches`` ``{input_file_id, endpoint, completion_window: "24h"}``.
3. ``GET {base_url}/batches/{id}`` every ``poll_interval_s`` until the batch
   is ``completed``, ``failed``, ``expired`` or ``cancelled`` (a progress bar
   per batch shows its request counts).
4. ``GET {base_url}/files/{output_file_id}/content`` and the same for
   ``error_file_id``: each line is ``{"custom_id", "response": {"status_code",
   "request_id", "body"}, "error"}``. A 200 body is read by the backend's
   :func:`parse_response` and stored, usage and a reasoning model's separate
   reasoning (``reasoning_content``/``reasoning``, :mod:`ftcot.teach.reasoning`)
   included, under the keys a normal run uses: a batch run and a normal run read
   and fill the same store, export the same chains under every ``--rationale``,
   and nothing stored is paid twice.

Two-stage Zero-shot-CoT is two rounds of batches: the rationales, then the
answers to the rationales that came back. A stage larger than
``max_requests`` (50,000, OpenAI's limit) or ~190 MB of input is split into
several batches, polled together.

State and resuming
------------------
Every batch is recorded in the run's ``teach.sqlite`` (tables ``batches`` and
``batch_requests``, made by this module): its requests and their store keys
before anything is uploaded, then the input file id, then ``create_sent``
before the create request goes out, then the batch id the moment it is known,
before any waiting. A run killed at any point (``kill -9`` while polling)
resumes by polling the batches it recorded, never creating them again. A batch
whose create request was sent but whose reply was lost (a kill, a timeout, a
5xx) is looked up on the server by its input file (``GET {base_url}/batches``)
and adopted; one never created is dropped from the ledger (an uploaded file
costs nothing) and its requests are built afresh. A recorded batch is collected
only from the server it was sent to: a rerun with another ``--base-url`` is
refused in one line. A batch the server no longer knows (404) is marked lost
and its requests are sent again. A normal run (without ``--batch``) refuses a
run directory with open batches: their requests are paid for already.

Failures
--------
- a line with an error (HTTP 429 or 5xx in its ``response``, in the output or
  the error file) and a request the batch left unanswered (``expired``: the
  24-hour window passed; lines missing from both files) are resubmitted alone,
  in a new batch, up to ``max_submissions`` batches per stage and run;
- a line refused for good (another 4xx), a ``failed`` batch (the server refused
  the input: its ``errors`` say why) and a ``cancelled`` one are recorded as
  failures and not resubmitted by this run; the next run asks for them again,
  as it does after a normal run's failures.

Every result that came back is stored first, whatever the batch's status.
Failure messages, errors and progress lines go through
:func:`ftcot.api_replies.redact`: the API key and the URL's credentials never
reach a log, a message or the store.

Cost
----
Priced at batch prices (:meth:`PriceTable.batch_prices`, half the list price).
``--max-cost`` reserves each request at an upper bound (prompt at 2 characters
per token, ``max_tokens × n`` completion tokens) before its batch is created;
the requests that would pass the cap are not sent, nor any after them (as in
the engine: no stage-2 answer either once the cap is reached). What the
collected completions cost counts against the cap, also those of batches a
killed run left. ``--dry-run`` counts what would be sent (requests already in
open batches are not counted again) and prices it at batch prices.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ftcot.api_replies import error_message, public_url, redact, retryable_status
from ftcot.errors import FtcotError, check_float, check_int
from ftcot.openai_rest import RestAPIError, RestClient
from ftcot.tasks import Sample, Task
from ftcot.teach.backends.openai_compat import OpenAICompatTeacher, parse_response
from ftcot.teach.budget import Budget, run_root, spent_in
from ftcot.teach.engine import (TeachSummary, check_same_run, questions_of, record_run, resolve_settings,
                                stored_rows)
from ftcot.teach.plan import Plan, PlannedRequest, Target, TeachSettings, plan_requests
from ftcot.teach.pricing import PriceTable
from ftcot.teach.records import Completion, CompletionRequest, Teacher
from ftcot.teach.store import Failure, StoredCompletion, TeachStore

log = logging.getLogger(__name__)

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
COMPLETION_WINDOW = "24h"
MAX_REQUESTS_PER_BATCH = 50_000  # OpenAI's limit per batch
MAX_BATCH_BYTES = 190 * 2**20  # OpenAI's input file limit is 200 MB
DEFAULT_POLL_INTERVAL_S = 30.0
DEFAULT_SUBMISSIONS = 3  # batches per stage and run: the first and two resubmissions of what came back retryable
_STORE_EVERY = 500  # output lines per store transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    teacher TEXT NOT NULL,
    stage TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    base_url TEXT NOT NULL,
    requests INTEGER NOT NULL,
    input_file_id TEXT,
    create_sent INTEGER NOT NULL DEFAULT 0,
    batch_id TEXT,
    status TEXT NOT NULL,
    collected INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_requests (
    batch INTEGER NOT NULL,
    custom_id TEXT NOT NULL,
    request TEXT NOT NULL,
    targets TEXT NOT NULL,
    PRIMARY KEY (batch, custom_id)
);
"""


# --- records and pure helpers (no network) ---------------------------------------------------


# A batch line is a planned request; its custom_id is the store key of its first choice.
BatchItem = PlannedRequest  # noqa: the name the ledger and input files use


@dataclass(frozen=True)
class LineResult:
    """What one output or error line says about its request."""

    custom_id: str
    completions: list[Completion] | None  # None: the request failed
    status: int | None = None
    message: str = ""
    retryable: bool = False
    request_id: str = ""


@dataclass
class BatchRecord:
    """One row of the ``batches`` table."""

    id: int
    teacher: str
    stage: str
    endpoint: str
    base_url: str
    requests: int
    input_file_id: str | None
    create_sent: bool
    batch_id: str | None
    status: str
    collected: bool
    error: str | None


def batch_endpoint(chat: bool) -> str:
    return "/v1/chat/completions" if chat else "/v1/completions"


def input_line(item: BatchItem, body: dict[str, Any], url: str) -> str:
    """One line of a batch input file (OpenAI's request input object)."""
    return json.dumps({"custom_id": item.key, "method": "POST", "url": url, "body": body},
                      ensure_ascii=False, separators=(",", ":"))


def chunked(lines: Sequence[tuple[BatchItem, str]], max_requests: int = MAX_REQUESTS_PER_BATCH,
            max_bytes: int = MAX_BATCH_BYTES) -> list[list[tuple[BatchItem, str]]]:
    """Split a stage's lines into batches within the provider's limits, in order."""
    chunks: list[list[tuple[BatchItem, str]]] = []
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


def _request_json(request: CompletionRequest) -> str:
    return json.dumps(dataclasses.asdict(request), separators=(",", ":"))


def _request_from_json(text: str) -> CompletionRequest:
    data = json.loads(text)
    data["stop"] = tuple(data.get("stop") or ())
    return CompletionRequest(**data)


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


# --- the ledger: batches recorded in teach.sqlite ---------------------------------------------------


class BatchLedger:
    """The ``batches`` and ``batch_requests`` tables of a run's store, on a connection of their own.

    Writes commit at once (``synchronous=FULL``, like the store): a batch id is on disk before the
    first poll.
    """

    def __init__(self, connection: sqlite3.Connection | None, writable: bool) -> None:
        self._db = connection
        self.writable = writable

    @classmethod
    def open(cls, store: TeachStore | None) -> BatchLedger:
        if store is None:
            return cls(None, False)
        if not store.writable:
            db = sqlite3.connect(f"{store.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
            db.row_factory = sqlite3.Row
            has = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'batches'").fetchone()
            if not has:
                db.close()
                return cls(None, False)
            return cls(db, False)
        db = sqlite3.connect(store.path, isolation_level=None, timeout=30.0)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=30000")
        try:
            db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
        except sqlite3.Error as exc:
            db.close()
            raise FtcotError(f"{store.path}: cannot record batches ({exc}); free space or fix the directory "
                             f"and rerun.") from None
        return cls(db, True)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    def add(self, teacher: str, stage: str, endpoint_path: str, base_url: str, items: Sequence[BatchItem]) -> int:
        """Record a batch's requests before anything is uploaded; returns its ledger id."""
        assert self._db is not None and self.writable
        now = time.time()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            cursor = self._db.execute(
                "INSERT INTO batches (teacher, stage, endpoint, base_url, requests, status, created, updated) "
                "VALUES (?, ?, ?, ?, ?, 'prepared', ?, ?)", (teacher, stage, endpoint_path, base_url, len(items),
                                                              now, now))
            row_id = int(cursor.lastrowid)
            self._db.executemany(
                "INSERT INTO batch_requests (batch, custom_id, request, targets) VALUES (?, ?, ?, ?)",
                [(row_id, item.key, _request_json(item.request),
                  json.dumps([dataclasses.astuple(t) for t in item.targets])) for item in items])
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        return row_id

    def update(self, row_id: int, **fields: Any) -> None:
        assert self._db is not None and self.writable
        names = ", ".join(f"{name} = ?" for name in fields)
        self._db.execute(f"UPDATE batches SET {names}, updated = ? WHERE id = ?",
                         [*fields.values(), time.time(), row_id])

    def open_batches(self) -> list[BatchRecord]:
        """Batches not collected yet, oldest first."""
        if self._db is None:
            return []
        rows = self._db.execute("SELECT * FROM batches WHERE collected = 0 ORDER BY id")
        return [_record(row) for row in rows]

    def get(self, row_id: int) -> BatchRecord:
        assert self._db is not None
        return _record(self._db.execute("SELECT * FROM batches WHERE id = ?", (row_id,)).fetchone())

    def items(self, row_id: int) -> dict[str, BatchItem]:
        assert self._db is not None
        rows = self._db.execute("SELECT custom_id, request, targets FROM batch_requests WHERE batch = ? "
                                "ORDER BY rowid", (row_id,))
        return {row["custom_id"]: PlannedRequest(_request_from_json(row["request"]),
                                                 tuple(Target(*t) for t in json.loads(row["targets"])))
                for row in rows}

    def open_keys(self) -> set[str]:
        """Store keys of every request in a batch not collected yet (paid for, or about to be)."""
        if self._db is None:
            return set()
        rows = self._db.execute("SELECT r.targets FROM batch_requests r JOIN batches b ON b.id = r.batch "
                                "WHERE b.collected = 0")
        return {t[0] for row in rows for t in json.loads(row["targets"])}

    def all(self) -> list[BatchRecord]:
        if self._db is None:
            return []
        return [_record(row) for row in self._db.execute("SELECT * FROM batches ORDER BY id")]


def _record(row: sqlite3.Row) -> BatchRecord:
    values = {name: row[name] for name in BatchRecord.__dataclass_fields__}
    values["create_sent"], values["collected"] = bool(values["create_sent"]), bool(values["collected"])
    return BatchRecord(**values)


def open_batches(run_dir: Path) -> list[BatchRecord]:
    """The batches a run directory has not collected yet (empty without a store or batches)."""
    from ftcot.teach.store import STORE_FILE

    if not (Path(run_dir) / STORE_FILE).is_file():
        return []
    with TeachStore.open_readonly(run_dir) as store:
        ledger = BatchLedger.open(store)
        try:
            return ledger.open_batches()
        finally:
            ledger.close()


def refuse_open_batches(run_dir: Path, how: str = "rerun with --batch") -> None:
    """A normal run would pay again for what open batches are doing: refuse it in one line."""
    recorded = [b for b in open_batches(run_dir) if b.batch_id or b.create_sent]
    if recorded:
        ids = ", ".join(b.batch_id or f"#{b.id} (being created)" for b in recorded[:3])
        count = sum(b.requests for b in recorded)
        raise FtcotError(f"{run_dir} has {len(recorded)} open teacher batch(es) ({ids}; {count} requests, paid "
                         f"for); {how} to collect them instead of paying for those requests again.")


# --- the run ----------------------------------------------------------------------------------------


@dataclass
class BatchTeachSummary(TeachSummary):
    batches: list[str] = field(default_factory=list)  # batch ids created by this run
    resumed_batches: list[str] = field(default_factory=list)  # recorded by an earlier run, collected by this one
    resubmitted: int = 0  # requests sent again after their batch left them failed or unanswered
    open_requests: int = 0  # dry run: requests in open batches (paid for, not counted again)

    def lines(self) -> list[str]:
        lines = super().lines()
        if self.dry_run:
            note = "at batch prices (half the list price)"
            if self.open_requests:
                note += f"; {self.open_requests} requests are in batches already sent, not counted"
            return lines + [note + "."]
        sent = f"{len(self.batches)} batches created ({', '.join(self.batches[:4])}" + (
            ", …)" if len(self.batches) > 4 else ")") if self.batches else "no batch created"
        resumed = f", {len(self.resumed_batches)} resumed from an earlier run" if self.resumed_batches else ""
        again = f", {self.resubmitted} requests resubmitted" if self.resubmitted else ""
        lines.insert(2, f"batch API: {sent}{resumed}{again}; cost at batch prices.")
        if self.interrupted:
            lines.append("the batches keep running on the server; rerun the same command to collect them "
                         "(nothing is created again).")
        return lines


def batch_teacher(teacher: Teacher) -> OpenAICompatTeacher:
    if not isinstance(teacher, OpenAICompatTeacher):
        raise FtcotError(f"--batch (batch: true) needs an openai: teacher with a Batch API, not "
                         f"'{teacher.name}'; drop --batch for it.")
    return teacher


def teach_batch(task: Task, split: str, teacher: Teacher, method: str = "zs_cot", samples: int = 1,
                temperature: float = 0.0, max_tokens: int | None = None, max_cost: float | None = None,
                store: TeachStore | None = None, progress: bool = False, *, prices: PriceTable | None = None,
                dry_run: bool = False, secrets: Sequence[str] = (), console: Console | None = None,
                only: Collection[int] | None = None, api_key_env: str | None = None,
                poll_interval_s: float = DEFAULT_POLL_INTERVAL_S, max_requests: int = MAX_REQUESTS_PER_BATCH,
                max_submissions: int = DEFAULT_SUBMISSIONS, client: BatchClient | None = None,
                rationale: str = "answer") -> BatchTeachSummary:
    """:func:`ftcot.teach.engine.teach` through the Batch API (see the module docstring).

    Same arguments and store as ``teach`` (``rationale`` included: recorded with the run, read
    when chains are exported); ``teacher`` must be an ``openai:`` teacher, whose payloads (its
    system prompt too), chat mode and identity (store keys) are used. The key is read from
    ``os.environ[api_key_env]`` (default ``OPENAI_API_KEY``). ``client`` replaces the HTTP client
    (tests pass one with short back-offs).
    """
    backend = batch_teacher(teacher)
    check_float("--poll-interval", poll_interval_s, 0, low_open=True)
    check_int("max_requests", max_requests, 1)
    check_int("max_submissions", max_submissions, 1)
    table = (prices or PriceTable()).batch_prices()
    settings, price = resolve_settings(task, split, backend, method, samples, temperature, max_tokens,
                                       max_cost=max_cost, prices=table, rationale=rationale)
    questions = questions_of(task, split, only)
    if store is not None:
        check_same_run(store, settings)
    budget = Budget(max_cost, price, spent_in(run_root(store.path.parent)) if store is not None else 0.0)
    if dry_run:
        ledger = BatchLedger.open(store)
        try:
            return _dry_run(settings, questions, store, budget, backend.supports_n, ledger.open_keys())
        finally:
            ledger.close()
    if store is None or not store.writable:
        raise ValueError("teach_batch() needs a store open for writing")
    backend.require_credentials()
    api_key = os.environ.get(api_key_env or "OPENAI_API_KEY") or None
    secrets = [*secrets, *([api_key] if api_key else [])]
    record_run(store, task, questions, settings)
    own_client = client is None
    http = client or BatchClient(backend.base_url, api_key, secrets=secrets)
    ledger = BatchLedger.open(store)
    try:
        run = _BatchRun(settings, questions, backend, store, ledger, http, budget, secrets, poll_interval_s, max_requests, max_submissions, console or Console(stderr=True), progress)
        return run.main()
    finally:
        ledger.close()
        if own_client:
            http.close()


class _BatchRun:
    def __init__(self, settings: TeachSettings, questions: list[Sample], teacher: OpenAICompatTeacher,
                 store: TeachStore, ledger: BatchLedger, client: BatchClient, budget: Budget,
                 secrets: Sequence[str], poll_interval_s: float, max_requests: int,
                 max_submissions: int, console: Console, show_progress: bool) -> None:
        self.settings, self.plan, self.questions = settings, Plan(settings), questions
        self.teacher, self.store, self.ledger, self.client = teacher, store, ledger, client
        self.budget, self.secrets = budget, secrets
        self.reserved: list[float] = []  # reservations of the requests in batches now (released once collected)
        self.poll_interval_s, self.max_requests, self.max_submissions = poll_interval_s, max_requests, max_submissions
        self.console = console
        self.endpoint = batch_endpoint(teacher.chat)
        self.base_url = public_url(teacher.base_url)
        self.stopping = False
        self.failed_keys: set[str] = set()
        self.given_up: set[str] = set()  # keys refused for good by this run's batches: not resubmitted now
        self._failures: list[Failure] = []  # noted, not yet recorded in the store
        self._spending: list[tuple[str, float]] = []  # what the rows not yet stored cost
        self.new_keys: set[str] = set()  # keys this run stored
        self.summary = BatchTeachSummary(
            task=settings.task, split=settings.split, teacher=settings.teacher, method=settings.method,
            samples=settings.samples, temperature=settings.temperature, questions=len(questions),
            chains=len(questions) * settings.samples, complete_chains=0, max_cost_usd=budget.cap,
            cost_usd=0.0 if budget.price is not None else None, spent_before_usd=budget.spent_before)
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console,
                                 disable=not show_progress, transient=False)
        self._bars: dict[int, Any] = {}
        self._started = time.monotonic()

    def clean(self, text: str) -> str:
        return redact(text, self.secrets)

    def say(self, text: str) -> None:
        self.progress.console.print(self.clean(text), markup=False, highlight=False)

    # -- the run --

    def main(self) -> BatchTeachSummary:
        try:
            with self.progress:
                self.resume()
                self.stage(lambda skip: self.requests(skip).first)
                if self.plan.two_stage:
                    self.stage(lambda skip: self.requests(skip).second)
        except KeyboardInterrupt:
            # Everything sent is recorded: the batches run on, and the next run polls them.
            self.summary.interrupted = True
        self.summary.elapsed_s = time.monotonic() - self._started
        asked = {s.index for s in self.questions}
        self.summary.complete_chains = sum(chain.complete for chain in self.plan.chains(
            self.store, [q for q in self.store.questions() if q.sample_index in asked]))
        self.summary.failed = len(self.store.missing(sorted(self.failed_keys)))
        return self.summary

    def resume(self) -> None:
        """Collect the batches an earlier run recorded and did not collect (it was stopped or killed)."""
        pending = []
        for record in self.ledger.open_batches():
            if record.base_url != self.base_url and (record.batch_id or record.create_sent):
                raise FtcotError(
                    f"{self.store.path} records batch {record.batch_id or '#' + str(record.id)} ({record.requests} "
                    f"{record.stage} requests) at {record.base_url}, not {self.base_url}; rerun with --base-url "
                    f"{record.base_url} to collect it (it is paid for).")
            if record.batch_id is None and record.create_sent and record.input_file_id:
                found = self.client.find_batch(record.input_file_id)
                if found is not None and found.get("id"):
                    self.ledger.update(record.id, batch_id=found["id"], status=found.get("status") or "validating")
                    record = self.ledger.get(record.id)
            if record.batch_id is None:
                # Never created: nothing is paid. Its requests are built again with this run's settings.
                self.ledger.update(record.id, collected=1, status="abandoned")
                continue
            self.summary.resumed_batches.append(record.batch_id)
            self.say(f"resuming batch {record.batch_id} ({record.requests} {record.stage} requests, "
                     f"{record.status}) recorded by an earlier run")
            pending.append(record)
        if pending:
            self.given_up |= self.wait(pending)

    def requests(self, skip: Collection[str]):
        """The run's plan now: what the store lacks, less ``skip`` (the one plan every executor consumes)."""
        return plan_requests(self.plan, self.questions, self.store, self.teacher.supports_n, skip)

    def stage(self, build: Callable[[Collection[str]], list[PlannedRequest]]) -> None:
        """Send a stage's missing requests as batches, wait, collect; resubmit what came back retryable."""
        if not self.summary.cached:  # found stored before this run (less what it collected from resumed batches)
            self.summary.cached = self.requests(()).stored - len(self.new_keys)
        for submission in range(self.max_submissions):
            items = build(self.given_up)
            if not items:
                return
            if self.stopping:  # the cost cap: counted here only for a stage it stopped before it began
                self.summary.not_sent += len(items) if submission == 0 else 0
                return
            if submission > 0:
                self.summary.resubmitted += len(items)
            items = self.within_budget(items)
            if not items:
                return
            lines = [(item, input_line(item, self.teacher.payload(item.request), self.endpoint)) for item in items]
            records = []
            for chunk in chunked(lines, self.max_requests):
                row_id = self.ledger.add(self.settings.teacher, chunk[0][0].targets[0].stage, self.endpoint,
                                         self.base_url, [item for item, _ in chunk])
                records.append(self.create(row_id, "\n".join(line for _, line in chunk) + "\n"))
            self.given_up |= self.wait(records)
            self.budget.release(sum(self.reserved))  # collected: charged at what they cost
            self.reserved = []
        # What is still missing after the last submission stays failed (recorded); the next run retries it.

    def within_budget(self, items: list[PlannedRequest]) -> list[PlannedRequest]:
        """The items the budget lets go out, in order (as in the request loop: the first one refused stops
        the run, no cheaper one after it is sent). Reserved until their batches are collected."""
        for position, item in enumerate(items):
            amount = self.budget.reserve(item.request)
            if amount is None:
                self.stopping = True
                self.summary.stopped_by_cost_cap = True
                self.summary.not_sent += len(items) - position
                return items[:position]
            self.reserved.append(amount)
        return items

    def create(self, row_id: int, content: str) -> BatchRecord:
        record = self.ledger.get(row_id)
        reply = self.client.upload_file(content.encode("utf-8"), f"ftcot-{record.stage}-{row_id}.jsonl")
        file_id = reply.get("id")
        if not isinstance(file_id, str) or not file_id:
            raise BatchAPIError(f"POST {self.client.public_base_url}/files: the reply has no file id")
        # From here the batch may exist on the server: a run stopped before the reply looks for it there.
        self.ledger.update(row_id, input_file_id=file_id, status="uploaded", create_sent=1)
        try:
            batch = self.client.create_batch(file_id, self.endpoint)
        except BatchAPIError as exc:
            if exc.status is not None and 400 <= exc.status < 500 and not retryable_status(exc.status):
                # Refused: no batch exists, nothing is paid. An open row would refuse every later run.
                self.ledger.update(row_id, collected=1, status="refused", error=self.clean(str(exc)))
            raise
        batch_id = batch.get("id")
        if not isinstance(batch_id, str) or not batch_id:
            raise BatchAPIError(f"POST {self.client.public_base_url}/batches: the reply has no batch id")
        self.ledger.update(row_id, batch_id=batch_id, status=str(batch.get("status") or "validating"))
        self.summary.batches.append(batch_id)
        self.summary.requests += record.requests
        self.say(f"created batch {batch_id}: {record.requests} {record.stage} requests")
        return self.ledger.get(row_id)

    def wait(self, records: list[BatchRecord]) -> set[str]:
        """Poll until every batch ends, collect each as it does; returns the keys not to resubmit."""
        given_up: set[str] = set()
        pending = {r.id: r for r in records}
        for record in records:
            self._bars[record.id] = self.progress.add_task(
                escape(f"{record.stage} batch {record.batch_id}"), total=record.requests, status=record.status)
        while pending:
            for record in list(pending.values()):
                try:
                    batch = self.client.get_batch(record.batch_id or "")
                except BatchAPIError as exc:
                    if exc.status != 404:
                        raise
                    self.say(f"batch {record.batch_id} is unknown to {self.base_url} (HTTP 404); its requests "
                             f"are sent again")
                    self.ledger.update(record.id, collected=1, status="lost")
                    del pending[record.id]
                    continue
                status = str(batch.get("status") or "unknown")
                counts = batch.get("request_counts") or {}
                done = int(counts.get("completed") or 0) + int(counts.get("failed") or 0)
                self.progress.update(self._bars[record.id], completed=done, status=status)
                if status != record.status:
                    self.ledger.update(record.id, status=status)
                    record.status = status
                if status in TERMINAL:
                    given_up |= self.collect(record, batch)
                    del pending[record.id]
            if pending:
                time.sleep(self.poll_interval_s)
        return given_up

    def collect(self, record: BatchRecord, batch: dict[str, Any]) -> set[str]:
        """Store every result of an ended batch, record the failures; returns the keys not to resubmit."""
        items = self.ledger.items(record.id)
        answered: set[str] = set()
        given_up: set[str] = set()
        rows: list[StoredCompletion] = []
        for file_id in (batch.get("output_file_id"), batch.get("error_file_id")):
            if not file_id:
                continue
            for line in self._lines(record, str(file_id)):
                result = parse_output_line(line, self.teacher.chat)
                item = items.get(result.custom_id)
                if item is None or result.custom_id in answered:
                    continue  # not ours, or a line seen twice
                answered.add(result.custom_id)
                if result.completions is None:
                    if not result.retryable:
                        given_up.update(t.key for t in item.targets)
                    self.fail(item.targets, result.status, result.message, result.retryable)
                    continue
                rows += self.rows(record, item, result)
                if len(rows) >= _STORE_EVERY:
                    self.store_rows(rows)
                    rows = []
        self.store_rows(rows)
        status = record.status
        reason = {"expired": ("the batch expired (24 h window) before this request ran", True),
                  "cancelled": ("the batch was cancelled before this request ran", False),
                  "failed": (self._batch_errors(batch), False)}.get(status, (
                      "the batch's files hold no result for this request", True))
        for custom_id, item in items.items():
            if custom_id not in answered:
                if not reason[1]:
                    given_up.update(t.key for t in item.targets)
                self.fail(item.targets, None, f"batch {record.batch_id} {status}: {reason[0]}", reason[1])
        self.store.add_failures(self._failures)
        self._failures = []
        error = self.clean(reason[0]) if status in ("failed", "cancelled") else None
        self.ledger.update(record.id, collected=1, error=error)  # after the store has it all: a kill collects again
        if status == "failed":
            self.say(f"batch {record.batch_id} failed: {reason[0]}")
        return given_up

    def _lines(self, record: BatchRecord, file_id: str) -> Iterator[dict[str, Any]]:
        path = self.store.path.parent / f".batch-{record.id}-{file_id}.jsonl"
        try:
            self.client.download(file_id, path)
        except BatchAPIError as exc:
            if exc.status != 404:
                raise
            # Deleted on the server (providers keep files for a limited time): its requests count as
            # unanswered, and those are sent again.
            self.say(f"batch {record.batch_id}: file {file_id} is gone from the server (HTTP 404); the requests "
                     f"it held are sent again")
            return
        try:
            with path.open(encoding="utf-8") as handle:
                for number, text in enumerate(handle, 1):
                    if not text.strip():
                        continue
                    try:
                        line = json.loads(text)
                    except ValueError:
                        log.warning("batch %s, file %s line %d: not JSON; skipped", record.batch_id, file_id, number)
                        continue
                    if isinstance(line, dict):
                        yield line
        finally:
            path.unlink(missing_ok=True)

    @staticmethod
    def _batch_errors(batch: dict[str, Any]) -> str:
        errors = (batch.get("errors") or {}).get("data") if isinstance(batch.get("errors"), dict) else None
        messages = [f"{e.get('code')}: {e.get('message')}" if e.get("code") else str(e.get("message"))
                    for e in errors or [] if isinstance(e, dict)]
        return "; ".join(messages[:3]) or "the server gave no reason"

    def rows(self, record: BatchRecord, item: PlannedRequest, result: LineResult) -> list[StoredCompletion]:
        """Store rows for one answered line, as the engine stores a reply (prompt billed once); its cost is
        charged to the budget and recorded with them."""
        request, completions = item.request, result.completions or []
        rows = stored_rows(self.settings.teacher, request, item.targets, completions,
                           request_id=result.request_id, elapsed=0.0)
        if len(completions) < len(item.targets):
            self.fail(item.targets[len(completions):], 200,
                      f"the teacher returned {len(completions)} completions for n={request.n}", True)
        prompt_tokens = sum(r.prompt_tokens for r in rows)
        completion_tokens = sum(r.completion_tokens for r in rows)
        cost = self.budget.charge(prompt_tokens, completion_tokens)
        self._spending.append((f"batch {record.batch_id}: {item.key}", cost))
        self.summary.prompt_tokens += prompt_tokens
        self.summary.completion_tokens += completion_tokens
        if self.summary.cost_usd is not None:
            self.summary.cost_usd += cost
        return rows

    def store_rows(self, rows: list[StoredCompletion]) -> None:
        if not rows and not self._spending:
            return
        self.summary.new += self.store.add_completions(rows, self._spending)
        self._spending = []
        self.new_keys.update(row.key for row in rows)

    def fail(self, targets: Sequence[Target], status: int | None, message: str, retryable: bool) -> None:
        """Note failed items; :meth:`store_failures` records them (one transaction per batch, not per item)."""
        message = self.clean(message)
        now = time.time()
        for target in targets:
            self._failures.append(Failure(target.key, self.settings.teacher, target.stage, target.sample_index,
                                          target.sample_number, status, message, retryable, now))
            self.failed_keys.add(target.key)
        if len(self.summary.failure_examples) < 3 and targets:
            self.summary.failure_examples.append(f"sample {targets[0].sample_index}: {message}")


def _dry_run(settings: TeachSettings, questions: list[Sample], store: TeachStore | None, budget: Budget,
             supports_n: bool, open_keys: set[str]) -> BatchTeachSummary:
    """What a batch run would send now, at batch prices: the plan priced (requests in open batches are not
    counted: they are paid for)."""
    requests = plan_requests(Plan(settings), questions, store, supports_n, open_keys)
    prompt_tokens, completion_tokens, cost = requests.estimate(budget.price)
    return BatchTeachSummary(
        task=settings.task, split=settings.split, teacher=settings.teacher, method=settings.method,
        samples=settings.samples, temperature=settings.temperature, questions=len(questions),
        chains=requests.chains, complete_chains=requests.complete_chains, dry_run=True, cost_usd=None,
        max_cost_usd=budget.cap, spent_before_usd=budget.spent_before, open_requests=len(open_keys),
        estimated_requests=requests.requests, estimated_prompt_tokens=prompt_tokens,
        estimated_completion_tokens=completion_tokens, estimated_cost_usd=cost)
