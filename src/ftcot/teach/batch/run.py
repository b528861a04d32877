"""A teach run through the Batch API: the run's plan sent as batches, polled, collected into the store.

Stage 1's missing requests go out as batches (split at the provider's limits), then, once they are
collected, stage 2's for the rationales that came back; what came back retryable is resubmitted alone. Every
result is stored under the keys a request-loop run uses, its cost charged to the run directory's budget.
A teacher with ``top_logprobs`` asks for them in every line's body (its payload builder) and a line's
top-K is stored with its completion, as the request loop stores them.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ftcot.api_replies import public_url, redact, retryable_status
from ftcot.errors import FtcotError, check_float, check_int
from ftcot.tasks import Sample, Task
from ftcot.teach.backends.openai_compat import OpenAICompatTeacher
from ftcot.teach.batch.client import (MAX_REQUESTS_PER_BATCH, TERMINAL, BatchAPIError, BatchClient, LineResult,
                                      batch_endpoint, chunked, input_line, parse_output_line)
from ftcot.teach.batch.ledger import BatchLedger, BatchRecord
from ftcot.teach.budget import Budget, run_root, spent_in
from ftcot.teach.engine import (TeachSummary, check_same_run, questions_of, record_run, resolve_settings,
                                stored_logprobs, stored_rows)
from ftcot.teach.plan import Plan, PlannedRequest, Target, TeachSettings, plan_requests
from ftcot.teach.pricing import PriceTable
from ftcot.teach.records import Teacher, TopLogprobs
from ftcot.teach.store import Failure, StoredCompletion, TeachStore

log = logging.getLogger("ftcot.teach.batch")

DEFAULT_POLL_INTERVAL_S = 30.0
DEFAULT_SUBMISSIONS = 3  # batches per stage and run: the first and two resubmissions of what came back retryable
_STORE_EVERY = 500  # output lines per store transaction

@dataclass
class BatchTeachSummary(TeachSummary):
    batches: list[str] = field(default_factory=list)  # batch ids created by this run
    resumed_batches: list[str] = field(default_factory=list)  # recorded by an earlier run, collected by this one
    resubmitted: int = 0  # requests sent again after their batch left them failed or unanswered
    open_requests: int = 0  # dry run: requests in open batches (paid for, not counted again)
    still_running: list[str] = field(default_factory=list)  # batch ids running when batch_timeout_s passed
    batch_timeout_s: float | None = None

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
        if self.still_running:
            lines.append(self.deadline_line())
        return lines

    def deadline_line(self) -> str:
        shown = ", ".join(self.still_running[:4]) + (", …" if len(self.still_running) > 4 else "")
        return (f"batch_timeout_s={self.batch_timeout_s:g} passed with {len(self.still_running)} batch(es) still "
                f"running ({shown}); they keep running on the server: rerun the same command to collect them "
                f"(nothing is created again).")


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
                rationale: str = "answer", batch_timeout_s: float | None = None) -> BatchTeachSummary:
    """:func:`ftcot.teach.engine.teach` through the Batch API (see the module docstring).

    Same arguments and store as ``teach`` (``rationale`` included: recorded with the run, read
    when chains are exported); ``teacher`` must be an ``openai:`` teacher, whose payloads (its
    system prompt too), chat mode and identity (store keys) are used. The key is read from
    ``os.environ[api_key_env]`` (default ``OPENAI_API_KEY``). ``client`` replaces the HTTP client
    (tests pass one with short back-offs).
    """
    backend = batch_teacher(teacher)
    check_float("--poll-interval", poll_interval_s, 0, low_open=True)
    check_float("batch_timeout_s", batch_timeout_s, 0, low_open=True, optional=True)
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
        run = _BatchRun(settings, questions, backend, store, ledger, http, budget, secrets, poll_interval_s,
                        max_requests, max_submissions, console or Console(stderr=True), progress, batch_timeout_s)
        return run.main()
    finally:
        ledger.close()
        if own_client:
            http.close()


class _BatchRun:
    def __init__(self, settings: TeachSettings, questions: list[Sample], teacher: OpenAICompatTeacher,
                 store: TeachStore, ledger: BatchLedger, client: BatchClient, budget: Budget,
                 secrets: Sequence[str], poll_interval_s: float, max_requests: int,
                 max_submissions: int, console: Console, show_progress: bool,
                 batch_timeout_s: float | None = None) -> None:
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
        self._logprobs: dict[str, TopLogprobs] = {}  # the top-K of the rows not yet stored
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
        # Stop polling then (batches keep running; the next run collects them): a server that never
        # finishes a batch would otherwise be polled until its 24 h window closes.
        self.deadline = None if batch_timeout_s is None else self._started + batch_timeout_s

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
        except _DeadlinePassed:
            pass  # the same: recorded, running on, collected by the next run (summary.still_running)
        self.summary.elapsed_s = time.monotonic() - self._started
        self.summary.batch_timeout_s = self.deadline and self.deadline - self._started
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
                    for item in self.ledger.items(record.id).values():  # failed until an answer is stored
                        self.fail(item.targets, 404, f"batch {record.batch_id} is unknown to the server", True)
                    self.store_failures()
                    self.ledger.update(record.id, collected=1, status="lost")
                    del pending[record.id]
                    continue
                status = str(batch.get("status") or "unknown")
                counts = batch.get("request_counts")
                done = _count(counts, "completed") + _count(counts, "failed")
                self.progress.update(self._bars[record.id], completed=done, status=status)
                if status != record.status:
                    self.ledger.update(record.id, status=status)
                    record.status = status
                if status in TERMINAL:
                    given_up |= self.collect(record, batch)
                    del pending[record.id]
            if pending and self.deadline is not None and time.monotonic() >= self.deadline:
                self.summary.still_running = sorted(str(r.batch_id) for r in pending.values())
                raise _DeadlinePassed
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
        self.store_failures()
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
        self._logprobs.update(stored_logprobs(item.targets, completions, self.settings.top_logprobs))
        if self.settings.top_logprobs:
            self.check_refetched(rows)
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

    def check_refetched(self, rows: list[StoredCompletion]) -> None:
        """A stored greedy completion asked again for its top-K (ftcot.teach.plan) that came back with another
        text keeps its text, without them (the store checks): recorded, and not resubmitted by this run."""
        kept = self.store.get_many(row.key for row in rows)
        for row in rows:
            first = kept.get(row.key)
            if first is not None and first.text != row.text:
                self.given_up.add(row.key)
                self.fail([Target(row.key, first.stage, first.sample_index, first.sample_number)], 200,
                          "asked again for its log-probabilities, the greedy completion came back with another "
                          "text: the stored text is kept, without them", False)

    def store_rows(self, rows: list[StoredCompletion]) -> None:
        if not rows and not self._spending:
            return
        self.summary.new += self.store.add_completions(rows, self._spending, self._logprobs)
        self._spending, self._logprobs = [], {}
        self.new_keys.update(row.key for row in rows)

    def store_failures(self) -> None:
        """The failures :meth:`fail` noted, into the store in one transaction."""
        self.store.add_failures(self._failures)
        self._failures = []

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


class _DeadlinePassed(Exception):
    """batch_timeout_s passed with batches still running."""


def _count(counts: Any, name: str) -> int:
    """One of a batch's ``request_counts``, 0 where a server sends something else than a count."""
    value = counts.get(name) if isinstance(counts, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return 0
    try:
        number = int(float(value))
    except (ValueError, OverflowError):
        return 0
    return max(number, 0)


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
