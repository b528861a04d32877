"""The request loop: ask the teacher for what the store is missing, and store it as it arrives.

The run's :class:`~ftcot.teach.plan.RequestPlan` (:func:`~ftcot.teach.plan.plan_requests`:
the Batch API executor and the dry run consume the same one) lists what is missing;
this executor sends it:

- **Zero-shot-CoT** — stage 1 (rationale, ``max_tokens`` 128 by default, at
  temperature T, D samples), then for each rationale stage 2 (greedy, 32
  tokens). Stage-2 requests jump the queue, so a question is finished before
  new ones are started and a stopped run leaves few half-done chains.
- **Diverse reasoning** — with ``teacher.supports_n`` the missing samples of a
  question go out as one request with ``n = missing`` (the prompt is paid
  once); otherwise one request per sample, each with its own seed (the sample
  number). Top-up (D=2 → D=3) sends only the missing sample numbers.
- **Bounded** — at most ``concurrency`` requests in flight; every reply is
  committed to the store before anything else happens to it (and keeps its
  slot until then, so a ``kill -9`` loses at most ``concurrency`` replies). Replies that
  arrive together share one commit (a group commit: the replies that arrive
  while one commit runs are the next one's; commits run in a thread on their
  own connection, so the event loop never waits on an fsync). A ``kill -9``
  cannot tell that apart from one commit each: a reply is acted on only once
  it is committed.
- **Paid once** — the plan asks for each key once, whichever questions need
  it (MultiArith has questions with the same text), and never for a stored
  one; a stage-2 key that two new rationales share (they came out the same) is
  asked for by one request while the other waits for its reply.
- **Failures** — a :class:`TeacherError` fails that item (recorded in the
  store; the next run asks again) and the run goes on, except a 401 or 403:
  the credentials are refused, every other request would be too, so no new
  request is sent. Anything unexpected stops new requests, waits for the
  in-flight ones, and then stops the run with one line. Failure messages go
  through :func:`ftcot.api_replies.redact` (no key, no URL credentials).
- **Cost cap** — ``max_cost`` is the run directory's (:mod:`ftcot.teach.budget`):
  what earlier runs, rounds and rationalization spent counts. Each request's
  cost is reserved at an upper bound before it is sent; one that would pass the
  cap is not sent, and no request after it. Everything received is kept, and
  its cost recorded with it.
- **Ctrl-C** — the first one stops new requests and waits for those in
  flight (they are paid for); a second one aborts.
- **Log-probabilities** — a teacher built with ``top_logprobs`` K returns each
  completion's top-K per token; they are committed with it (same transaction).
  Stored greedy completions that lack them are asked again for them alone
  (:mod:`ftcot.teach.plan`); a reply whose text differs from the stored one
  keeps the stored text and leaves its top-K out (recorded as a failure).
- **Dry run** — the plan priced (:meth:`~ftcot.teach.plan.RequestPlan.estimate`);
  it sends nothing, writes nothing and needs no API key.
- **Inside a running event loop** (Jupyter) the run goes on a loop of its own
  in a thread (:func:`run_coroutine`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import heapq
import itertools
import math
import signal
import time
import uuid
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ftcot.api_replies import redact
from ftcot.errors import FtcotError
from ftcot.tasks import Sample, Task
from ftcot.tasks.custom import task_source
from ftcot.teach.backends import require_credentials
from ftcot.teach.budget import Budget, run_root, spent_in
from ftcot.teach.plan import (ANSWER, DEFAULT_MAX_TOKENS, Plan, PlannedRequest, Target, TeachSettings, plan_requests,
                              settings_of, validate)
from ftcot.teach.pricing import Price, PriceTable
from ftcot.teach.prompts import method_exemplars
from ftcot.teach.records import Completion, CompletionRequest, Teacher, TeacherError, TopLogprobs
from ftcot.teach.store import Failure, StoredCompletion, TeachStore

DEFAULT_CONCURRENCY = 16
# Stage-2 requests go first (see the module docstring).
_STAGE2_FIRST, _STAGE1_NEXT = 0, 1
# A reply keeps its slot until it is committed, so at most `concurrency` paid replies are
# ever unstored (what a kill -9 can lose). The price, measured by bench/teach_throughput.py on
# the loaded 2-core machine: at 256 in flight a reply waits ~18 ms (median) for its group
# commit, and the rate is 0.78-0.83 of ideal where freeing the slot at the reply gives
# 0.93. False is that comparison: more requests at the server, and a kill -9 may then also
# lose the replies waiting for a commit. The bench sets it; nothing else should.
SLOT_HELD_THROUGH_COMMIT = True


@dataclass
class TeachSummary:
    task: str
    split: str
    teacher: str
    method: str
    samples: int
    temperature: float
    questions: int
    chains: int  # questions × samples
    complete_chains: int  # chains with every stage stored, after this run
    cached: int = 0  # completions found in the store, not requested again
    new: int = 0  # completions received and stored by this run
    requests: int = 0  # requests sent by this run
    failed: int = 0  # items whose request failed this run (recorded in the store)
    not_sent: int = 0  # requests held back by --max-cost or a stop
    stopped_by_cost_cap: bool = False
    interrupted: bool = False
    credentials_refused: bool = False  # a 401/403 stopped the run's sending
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0  # None: the teacher's price is unknown
    max_cost_usd: float | None = None  # the run directory's cap, across invocations
    spent_before_usd: float = 0.0  # what the run directory had spent before this run
    elapsed_s: float = 0.0
    dry_run: bool = False
    estimated_requests: int = 0
    estimated_prompt_tokens: int = 0
    estimated_completion_tokens: int = 0
    estimated_cost_usd: float | None = None
    failure_examples: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """A short human summary (the CLI prints it after the progress bar)."""
        cost = "unknown (no price for this model; see --prices)" if self.cost_usd is None else f"${self.cost_usd:.4f}"
        if self.dry_run:
            estimate = ("unknown (no price for this model; see --prices)" if self.estimated_cost_usd is None
                        else f"${self.estimated_cost_usd:.4f}")
            return [
                f"dry run: {self.task} ({self.split}), {self.method}, teacher {self.teacher}, "
                f"D={self.samples}, T={self.temperature:g}: {self.questions} questions, {self.chains} chains, "
                f"{self.complete_chains} already complete.",
                f"would send {self.estimated_requests} requests: ~{self.estimated_prompt_tokens} prompt + "
                f"≤{self.estimated_completion_tokens} completion tokens (4 chars/token estimate), cost ≈ {estimate}. "
                f"Nothing was sent.",
            ]
        lines = [
            f"{self.task} ({self.split}), {self.method}, teacher {self.teacher}, D={self.samples}, "
            f"T={self.temperature:g}: {self.complete_chains}/{self.chains} chains complete "
            f"({self.questions} questions).",
            f"this run: {self.requests} requests, {self.new} new completions, {self.cached} already stored, "
            f"{self.failed} failed; {self.prompt_tokens} prompt + {self.completion_tokens} completion tokens, "
            f"cost {cost}; {self.elapsed_s:.1f} s.",
        ]
        stopped = self.stop_reason()
        if stopped:
            lines.append(stopped)
        if self.spent_before_usd and self.cost_usd is not None:
            lines.append(f"the run directory has spent ${self.spent_before_usd + self.cost_usd:.4f} in all "
                         f"(${self.spent_before_usd:.4f} before this run).")
        if self.failed:
            lines.append(f"{self.failed} items failed (recorded in the store; a rerun tries them again), e.g.: "
                         + " | ".join(self.failure_examples))
        return lines

    def stop_reason(self) -> str | None:
        """Why the run stopped sending before it was done (the cost cap, Ctrl-C, a refused key), or None."""
        if self.stopped_by_cost_cap:
            return (f"stopped at the --max-cost cap (${self.max_cost_usd:g} for the run directory, earlier runs "
                    f"included): {self.not_sent} requests not sent; everything received is stored, rerun with a "
                    f"higher cap to finish.")
        if self.interrupted:
            return f"interrupted: {self.not_sent} requests not sent; rerun the same command to finish."
        if self.credentials_refused:
            return (f"stopped: the teacher refused the credentials (HTTP 401/403), so {self.not_sent} requests "
                    f"were not sent; check the API key and rerun.")
        return None

    def failure_line(self) -> str:
        """One line for a run that left chains incomplete because items failed: how many, why, what to do."""
        fix = "check the API key" if self.credentials_refused else "fix the cause"
        example = f", e.g. {self.failure_examples[0]}" if self.failure_examples else ""
        return (f"{self.task} ({self.split}), teacher {self.teacher}: {self.complete_chains}/{self.chains} chains "
                f"complete; {self.failed} items failed this run ({self.new} completions came back){example} — "
                f"{fix} and rerun: the failed items are asked again, everything received is kept.")


def teach(task: Task, split: str, teacher: Teacher, method: str = "zs_cot", samples: int = 1,
          temperature: float = 0.0, max_tokens: int | None = None, concurrency: int = DEFAULT_CONCURRENCY,
          max_cost: float | None = None, store: TeachStore | None = None, progress: bool = False, *,
          prices: PriceTable | None = None, dry_run: bool = False, secrets: Sequence[str] = (),
          console: Console | None = None, only: Collection[int] | None = None,
          rationale: str = "answer") -> TeachSummary:
    """Run (or, with ``dry_run``, price) the teacher on ``task``'s ``split``; see the module docstring.

    ``store`` must be open for writing unless ``dry_run`` (where it may be None:
    nothing is stored yet). ``secrets`` are strings (an API key) scrubbed from
    every failure message before it is stored or shown. ``only`` restricts the
    split to those sample indices (an experiment that trains on a subset pays
    for that subset only). ``rationale`` says which part of a reasoning model's
    reply a chain exports (:mod:`ftcot.teach.reasoning`); it changes no request.
    ``max_cost`` caps what the store's run directory spends in all
    (:mod:`ftcot.teach.budget`): what earlier runs spent counts.
    """
    settings, price = resolve_settings(task, split, teacher, method, samples, temperature, max_tokens,
                                       concurrency=concurrency, max_cost=max_cost, prices=prices,
                                       rationale=rationale)
    questions = questions_of(task, split, only)
    if store is not None:
        check_same_run(store, settings)
    budget = Budget(max_cost, price, spent_in(run_root(store.path.parent)) if store is not None else 0.0)
    if dry_run:
        return _dry_run(Plan.for_teacher(settings, teacher), questions, store, budget, teacher.supports_n)
    if store is None or not store.writable:
        raise ValueError("teach() needs a store open for writing")
    require_credentials(teacher)
    record_run(store, task, questions, settings)
    run = _Run(settings, questions, teacher, store, budget, concurrency, secrets)
    return run_coroutine(run.main(console or Console(stderr=True), progress))


def run_coroutine(coroutine: Any) -> Any:
    """Run ``coroutine`` to its end on a fresh event loop (uvloop's where installed), also when the caller
    is inside a running one (Jupyter, an async application): then in a thread of its own, so the caller's
    loop is neither blocked by a nested ``run`` nor needed by ours."""
    def run() -> Any:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            return runner.run(coroutine)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ftcot-teach") as pool:
        return pool.submit(run).result()


def event_loop_factory() -> Any:
    """uvloop's event loop where it is installed, else None (asyncio's own).

    Measured by ``bench/teach_throughput.py``: at 256 requests in flight the
    client's CPU per request is the limit, and uvloop spends less of it in the
    loop and in socket handling.
    """
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def resolve_settings(task: Task, split: str, teacher: Teacher, method: str, samples: int, temperature: float,
                     max_tokens: int | None, *, concurrency: int = DEFAULT_CONCURRENCY, max_cost: float | None = None,
                     prices: PriceTable | None = None, rationale: str = "answer") -> tuple[TeachSettings, Price | None]:
    """A run's settings and the teacher's price, validated.

    Every one-line error about the arguments comes from here, so a caller can
    check them before it creates anything (the CLI, before the run directory).
    """
    task.split_indices(split)  # an unknown split is an error now, not after the store exists
    exemplars = method_exemplars(task, method)
    settings = TeachSettings(
        task=task.key, split=split, teacher=teacher.name, method=method, samples=samples,
        temperature=float(temperature), max_tokens=max_tokens or DEFAULT_MAX_TOKENS.get(method, 128),
        trigger=task.spec.trigger, exemplars=exemplars,
        keyed_by_question=bool(getattr(teacher, "keyed_by_question", False)), rationale=rationale,
        task_source=task_source(task), top_logprobs=int(getattr(teacher, "top_logprobs", 0) or 0))
    check = getattr(teacher, "check_settings", None)  # backends with limits refuse before anything runs
    if check is not None:
        check(temperature=settings.temperature, samples=settings.samples)
    validate(settings)
    if concurrency < 1:
        raise FtcotError(f"--concurrency must be at least 1 (got {concurrency}).")
    if not math.isfinite(settings.temperature):
        raise FtcotError(f"--temperature must be a finite number (got {temperature}).")
    if max_cost is not None and not (math.isfinite(max_cost) and max_cost >= 0):
        raise FtcotError(f"--max-cost must be a finite number of USD, 0 or more (got {max_cost}).")
    price = (prices or PriceTable()).price_for(teacher.name)
    if max_cost is not None and price is None:
        raise FtcotError(f"--max-cost needs a price for '{teacher.name}', which the built-in table lacks; "
                         f"pass --prices FILE with {{\"MODEL\": {{\"prompt\": USD, \"completion\": USD}}}} "
                         f"per 1M tokens.")
    return settings, price


def check_same_run(store: TeachStore, settings: TeachSettings) -> None:
    """A run directory holds one task, teacher and method; D, T and max tokens may change."""
    try:
        previous = settings_of(store)
    except FtcotError:
        return
    for name in ("task", "teacher", "method"):
        if getattr(previous, name) != getattr(settings, name):
            raise FtcotError(f"{store.path.parent} holds a run with {name} '{getattr(previous, name)}', not "
                             f"'{getattr(settings, name)}'; use another --out for a different {name}.")


def questions_of(task: Task, split: str, only: Collection[int] | None) -> list[Sample]:
    """``split``'s questions, or those of them whose sample index is in ``only``."""
    questions = task.split(split)
    if not questions:  # a run with nothing to ask would "succeed" and curate nothing
        raise FtcotError(f"Task '{task.key}' has no questions in its {split} split; teach another split.")
    if only is None:
        return questions
    present = {s.index for s in questions}
    strangers = sorted(set(only) - present)
    if strangers:
        shown = ", ".join(map(str, strangers[:5])) + (", …" if len(strangers) > 5 else "")
        raise FtcotError(f"questions {shown}: not in {task.key}'s {split} split (its sample indices run "
                         f"{min(present)}–{max(present)}, {len(present)} questions).")
    wanted = set(only)
    return [s for s in questions if s.index in wanted]


def record_run(store: TeachStore, task: Task, questions: Sequence[Sample], settings: TeachSettings) -> None:
    """The run's questions (with their split) and settings, in the store before any request is sent."""
    store.add_questions(task.key, split_labels(task), ((s.index, s.question, s.answer) for s in questions))
    store.add_run(settings.to_json())


def split_labels(task: Task) -> dict[int, str]:
    """Sample index -> "train" or "test", for the store's questions table."""
    labels: dict[int, str] = {}
    for part in ("train", "test"):
        try:
            labels.update((i, part) for i in task.split_indices(part))
        except FtcotError:  # a task without that split part
            pass
    return labels


class _Slots:
    """A semaphore whose waiters are served by priority (lower first), then in arrival order."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def acquire(self, priority: int) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # we were handed a slot just as we were cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)  # hand the slot straight to the next waiter
                return
        self._free += 1


def stored_rows(teacher: str, request: CompletionRequest, targets: Sequence[Target], completions: list[Completion],
                *, request_id: str, elapsed: float) -> list[StoredCompletion]:
    """The store rows of one answered request, in target order (a short reply leaves the last targets out).

    The prompt is billed once per request, whatever n was, so only the first row carries its tokens; a
    completion without its own latency gets ``elapsed``. The request loop and ``--batch`` both store
    through this, so the two kinds of run write the same rows.
    """
    now = time.time()
    prompt_tokens = max((c.prompt_tokens for c in completions), default=0)
    return [StoredCompletion(
        key=target.key, teacher=teacher, stage=target.stage, sample_index=target.sample_index,
        sample_number=target.sample_number, prompt=request.prompt, max_tokens=request.max_tokens,
        temperature=request.temperature, stop=request.stop,
        seed=None if request.seed is None else request.seed + i, text=c.text, finish_reason=c.finish_reason,
        prompt_tokens=prompt_tokens if i == 0 else 0, completion_tokens=c.completion_tokens,
        latency_s=c.latency_s or elapsed, request_id=request_id, created=now, reasoning=c.reasoning)
        for i, (target, c) in enumerate(zip(targets, completions))]


def stored_logprobs(targets: Sequence[Target], completions: list[Completion], k: int) -> dict[str, TopLogprobs]:
    """Key → top-K of the completions that came with them (committed with their rows: ``add_completions``), at
    most the ``k`` asked for where known (a batch line's reply is read without it)."""
    return {target.key: c.logprobs.cut(k) if k else c.logprobs
            for target, c in zip(targets, completions) if c.logprobs is not None}


class _Run:
    """The request loop: sends a :class:`RequestPlan`'s requests, and each new rationale's answer."""

    def __init__(self, settings: TeachSettings, questions: list[Sample], teacher: Teacher, store: TeachStore,
                 budget: Budget, concurrency: int, secrets: Sequence[str]) -> None:
        self.plan = Plan.for_teacher(settings, teacher)
        self.settings = settings
        self.questions = questions
        self.teacher = teacher
        self.store = store
        self.budget = budget
        self.secrets = secrets
        self.slots = _Slots(concurrency)
        # Every key being asked for now: a stage-2 key that a new rationale needs while another request
        # asks for it (two samples came out the same) waits for that reply instead of paying again.
        self.pending: dict[str, asyncio.Future[StoredCompletion | None]] = {}
        self._to_commit: list[tuple[list[StoredCompletion], tuple[str, float] | None, dict[str, TopLogprobs],
                                    asyncio.Future[None]]] = []
        self._flushing: asyncio.Future[None] | None = None
        self.sending = 0  # requests in flight
        self.stopping = False
        self.fatal: BaseException | None = None
        self.summary = TeachSummary(
            task=settings.task, split=settings.split, teacher=settings.teacher, method=settings.method,
            samples=settings.samples, temperature=settings.temperature, questions=len(questions),
            chains=len(questions) * settings.samples, complete_chains=0, max_cost_usd=budget.cap,
            cost_usd=0.0 if budget.price is not None else None, spent_before_usd=budget.spent_before)
        self._progress: Progress | None = None
        self._bar: Any = None
        self._started = time.monotonic()
        self._console: Console | None = None
        self._said_no_logprobs = False
        self._received = 0  # completions received this run (new ones, and stored ones refetched or scored)

    # -- the run -------------------------------------------------------------------

    async def main(self, console: Console, show_progress: bool) -> TeachSummary:
        self._console = console
        requests = plan_requests(self.plan, self.questions, self.store, self.teacher.supports_n)
        self.summary.cached = requests.stored
        if requests.refetches:
            n = requests.refetches
            how = f"scoring {n} stored completions" if self.plan.scores_text else \
                f"asking {n} stored greedy completions again"
            console.print(f"{how} for their top-"
                          f"{self.settings.top_logprobs} log-probabilities (their text is kept)", markup=False)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.1f} completions/s"), TextColumn("{task.fields[tokens]} tokens"),
            TextColumn("{task.fields[cost]}"), TimeElapsedColumn(),
            console=console, disable=not show_progress, transient=False)
        self._bar = self._progress.add_task(escape(f"{self.settings.task} {self.settings.method}"),
                                            total=requests.completions, rate=0.0, tokens=0, cost=self.budget.text())
        loop = asyncio.get_running_loop()
        handled = _install_interrupt(loop, lambda: self._interrupt(console))
        # Commits run in a thread on their own connection: an fsync (ms under load) then never
        # stops the event loop from sending and reading replies.
        self._writer = self.store.second_writer()
        self._committer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ftcot-teach-commit")
        try:
            with self._progress:
                await asyncio.gather(*(self._first(item) for item in requests.first),
                                     *(self._claim_and_send(item, _STAGE2_FIRST) for item in requests.second))
        finally:
            if handled:
                loop.remove_signal_handler(signal.SIGINT)
            await self.teacher.aclose()
            self._committer.shutdown(wait=True)
            self._writer.close()
        self.summary.elapsed_s = time.monotonic() - self._started
        asked = {s.index for s in self.questions}
        self.summary.complete_chains = sum(chain.complete for chain in self.plan.chains(
            self.store, [q for q in self.store.questions() if q.sample_index in asked]))
        if self.fatal is not None:
            raise FtcotError(f"stopped after an unexpected error from the teacher "
                             f"({type(self.fatal).__name__}: {redact(str(self.fatal), self.secrets)}); "
                             f"everything received is stored, rerun to continue.") from self.fatal
        return self.summary

    def _interrupt(self, console: Console) -> None:
        self.stopping = True
        self.summary.interrupted = True
        console.print(f"stopping: waiting for the {self.sending} requests in flight (they are paid for) "
                      f"to be stored; Ctrl-C again to abort.")
        asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)

    async def _first(self, item: PlannedRequest) -> None:
        """A stage-1 request; then (two stages) the answer of each rationale it brought."""
        rows = await self._claim_and_send(item, _STAGE1_NEXT)
        if rows and self.plan.two_stage and not item.refetch:  # a refetched rationale's answer is planned apart
            await asyncio.gather(*(self._answer(row) for row in rows if row is not None))

    async def _answer(self, rationale: StoredCompletion) -> None:
        item = self.plan.answer_request(rationale)
        if item.key in self.pending:  # the same rationale twice: one request, shared
            row = await asyncio.shield(self.pending[item.key])  # shielded: a waiter's cancellation is not the sender's
            if row is not None:
                self._cached(1)
            else:
                self._advance(1)
            return
        stored = self.store.get(item.key)
        if stored is not None and not self._lacks_logprobs(stored):
            self._cached(1)
            return
        await self._claim_and_send(dataclasses.replace(item, refetch=stored is not None), _STAGE2_FIRST)

    def _lacks_logprobs(self, row: StoredCompletion) -> bool:
        """Whether a stored answer is asked again for its top-K (Plan.lacks_logprobs); a run without them
        never reads the table."""
        if not self.settings.top_logprobs:
            return False
        return self.plan.lacks_logprobs(row, self.store.logprobs_k([row.key]).get(row.key, 0))

    async def _claim_and_send(self, item: PlannedRequest, priority: int) -> list[StoredCompletion | None] | None:
        """Send for the item's keys, then hand each key's stored row (None: not stored) to those waiting for it.

        A key leaves ``pending`` only after its row is committed, so an asker that finds it in neither
        ``pending`` nor the store can safely send it.
        """
        loop = asyncio.get_running_loop()
        for target in item.targets:
            self.pending[target.key] = loop.create_future()
        rows: list[StoredCompletion | None] | None = None
        try:
            rows = await self._send(item, priority)
            return rows
        finally:
            for i, target in enumerate(item.targets):
                future = self.pending.pop(target.key, None)
                if future is not None and not future.done():
                    future.set_result(rows[i] if rows and i < len(rows) else None)

    # -- one request -----------------------------------------------------------------

    def _steps(self, item: PlannedRequest) -> int:
        """Progress steps per target: a new rationale's answer counts too (it will not come if it fails)."""
        return 2 if self.plan.two_stage and item.targets[0].stage != ANSWER and not item.refetch else 1

    def _not_sent(self, item: PlannedRequest) -> None:
        self.summary.not_sent += 1
        self._advance(self._steps(item) * len(item.targets))

    async def _send(self, item: PlannedRequest, priority: int) -> list[StoredCompletion | None] | None:
        if self.stopping:
            self._not_sent(item)
            return None
        await self.slots.acquire(priority)
        holding = True
        try:
            if self.stopping:
                self._not_sent(item)
                return None
            reservation = self.budget.reserve(item.request)
            if reservation is None:
                self.stopping = True
                self.summary.stopped_by_cost_cap = True
                self._not_sent(item)
                return None
            self.summary.requests += 1
            self.sending += 1
            started = time.monotonic()
            try:
                if item.refetch and self.plan.scores_text:
                    completions = await self._scored(item)
                else:
                    completions = await self.teacher.complete(item.request)
            except TeacherError as exc:
                self._failed(item, item.targets, exc.status, str(exc), exc.retryable)
                if exc.status in (401, 403):  # the key is refused: every other request would be too
                    self.summary.credentials_refused = True
                    self.stopping = True
                return None
            except Exception as exc:  # a bug or an unwrapped error: stop sending, keep what we have
                self._failed(item, item.targets, None, f"{type(exc).__name__}: {exc}", True)
                self.fatal = self.fatal or exc
                self.stopping = True
                return None
            finally:
                self.budget.release(reservation)
                self.sending -= 1
            if not SLOT_HELD_THROUGH_COMMIT:
                self.slots.release()
                holding = False
            return await self._store(item, completions, time.monotonic() - started)
        finally:
            if holding:
                self.slots.release()

    async def _store(self, item: PlannedRequest, completions: list[Completion],
                     elapsed: float) -> list[StoredCompletion | None]:
        request_id = uuid.uuid4().hex
        stored = stored_rows(self.settings.teacher, item.request, item.targets, completions,
                             request_id=request_id, elapsed=elapsed)
        rows: list[StoredCompletion | None] = [*stored, *[None] * (len(item.targets) - len(stored))]
        prompt_tokens = stored[0].prompt_tokens if stored else 0
        # Paid now, whatever the commit does: charged before the first await, while the
        # request's reservation has just been released (the cap sees one or the other).
        completion_tokens = sum(c.completion_tokens for c in completions)
        cost = self.budget.charge(prompt_tokens, completion_tokens)
        self.summary.prompt_tokens += prompt_tokens
        self.summary.completion_tokens += completion_tokens
        if self.summary.cost_usd is not None:
            self.summary.cost_usd += cost
        logprobs = stored_logprobs(item.targets, completions, self.settings.top_logprobs)
        await self._commit(stored, (request_id, cost), logprobs)
        if self.settings.top_logprobs and not self._said_no_logprobs and any(c.logprobs is None for c in completions):
            self._said_no_logprobs = True  # stored all the same: the text is paid for
            if self._console is not None:
                self._console.print(f"{self.settings.teacher} returned a completion without the log-probabilities "
                                    f"asked for (top_logprobs={self.settings.top_logprobs}); does the server "
                                    f"support them? The text is stored.", markup=False)
        short = len(item.targets) - len(stored)
        if short:
            self._failed(item, item.targets[len(stored):], None,
                         f"the teacher returned {len(completions)} completions for n={item.request.n}", True)
        if item.refetch:
            rows = self._refetched(item, stored)
        self._received += len(stored)
        self._advance(len(stored))
        return rows

    async def _scored(self, item: PlannedRequest) -> list[Completion]:
        """A refetch from a teacher that scores text: each stored row's text with its top-K, nothing generated."""
        stored = self.store.get_many(t.key for t in item.targets)
        return [await self.teacher.score(item.request.prompt, stored[t.key]) for t in item.targets]

    def _refetched(self, item: PlannedRequest, replies: list[StoredCompletion]) -> list[StoredCompletion | None]:
        """A refetch's rows are the stored ones (their text is kept); a reply with another text got no top-K."""
        kept = self.store.get_many(t.key for t in item.targets)
        for reply in replies:
            first = kept.get(reply.key)
            if first is not None and first.text != reply.text:
                self._record_failures([Target(reply.key, first.stage, first.sample_index, first.sample_number)], None,
                                     "asked again for its log-probabilities, the greedy completion came back with "
                                     "another text (a nondeterministic server or dtype): the stored text is kept, "
                                     "without them", False)
        return [kept.get(t.key) for t in item.targets]

    async def _commit(self, rows: list[StoredCompletion], spending: tuple[str, float],
                      logprobs: dict[str, TopLogprobs]) -> None:
        """Return once ``rows`` (and what they cost) are committed: the replies that arrive together share one
        commit.

        Nothing is done with a reply before its commit (no stage 2, no waiter
        served, no progress), so a ``kill -9`` loses at most replies that had not
        been acted on: the same as requests still in flight. Under load one
        fsync'ed commit (~1 ms here) per reply would cap a run near 1,000
        completions/s; a group commit is one fsync for all the replies that
        arrived during the commit before it.
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._to_commit.append((rows, spending, logprobs, done))
        if self._flushing is None:
            self._flushing = asyncio.ensure_future(self._flush())
        await done

    async def _flush(self) -> None:
        """Commit what is queued, in the committer thread, until nothing is: replies that arrive
        during a commit form the next group."""
        loop = asyncio.get_running_loop()
        try:
            while self._to_commit:
                group, self._to_commit = self._to_commit, []
                rows = [row for rows, _, _, _ in group for row in rows]
                spending = [spent for _, spent, _, _ in group if spent is not None]
                logprobs = {key: top for _, _, tops, _ in group for key, top in tops.items()}
                try:
                    self.summary.new += await loop.run_in_executor(
                        self._committer, self._writer.add_completions, rows, spending, logprobs)
                except BaseException as exc:  # a full disk: every request of the group sees the one-line error
                    for _, _, _, done in group:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for _, _, _, done in group:
                    if not done.done():
                        done.set_result(None)
        finally:
            self._flushing = None

    def _failed(self, item: PlannedRequest, targets: Sequence[Target], status: int | None, message: str,
                retryable: bool) -> None:
        self._record_failures(targets, status, message, retryable)
        # A failed rationale ends its chain for this run: its stage 2 will not come.
        self._advance(self._steps(item) * len(targets))

    def _record_failures(self, targets: Sequence[Target], status: int | None, message: str, retryable: bool) -> None:
        message = redact(message, self.secrets)
        for target in targets:
            self.store.add_failure(Failure(target.key, self.settings.teacher, target.stage, target.sample_index,
                                           target.sample_number, status, message, retryable, time.time()))
        self.summary.failed += len(targets)
        if len(self.summary.failure_examples) < 3:
            self.summary.failure_examples.append(f"sample {targets[0].sample_index}: {message}")

    # -- progress --------------------------------------------------------------------

    def _cached(self, count: int) -> None:
        self.summary.cached += count
        self._advance(count)

    def _advance(self, count: int) -> None:
        if self._progress is None:
            return
        elapsed = max(time.monotonic() - self._started, 1e-9)
        self._progress.update(self._bar, advance=count, rate=self._received / elapsed,
                              tokens=self.summary.prompt_tokens + self.summary.completion_tokens,
                              cost=self.budget.text() if self.budget.price is not None else "cost ?")


def _install_interrupt(loop: asyncio.AbstractEventLoop, callback) -> bool:
    try:
        loop.add_signal_handler(signal.SIGINT, callback)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
        return False
    return True


def _dry_run(plan: Plan, questions: list[Sample], store: TeachStore | None,
             budget: Budget, supports_n: bool) -> TeachSummary:
    """What a run would send now, priced from estimates (:meth:`RequestPlan.estimate`); sends and writes nothing."""
    settings = plan.settings
    requests = plan_requests(plan, questions, store, supports_n)
    prompt_tokens, completion_tokens, cost = requests.estimate(budget.price)
    return TeachSummary(
        task=settings.task, split=settings.split, teacher=settings.teacher, method=settings.method,
        samples=settings.samples, temperature=settings.temperature, questions=len(questions),
        chains=requests.chains, complete_chains=requests.complete_chains, dry_run=True, cost_usd=None,
        max_cost_usd=budget.cap, spent_before_usd=budget.spent_before, estimated_requests=requests.requests,
        estimated_prompt_tokens=prompt_tokens, estimated_completion_tokens=completion_tokens,
        estimated_cost_usd=cost)
