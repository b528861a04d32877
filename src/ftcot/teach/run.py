"""A teach run, from its :class:`~ftcot.teach.config.TeachConfig`: the one function ``ftcot teach``,
``ftcot.teach()`` and ``ftcot run``'s teach stages call.

It checks everything before the first request (settings, the output path, the
API key, options that only matter after the main run), then runs the plan
through the executor the config names — the request loop, the Batch API or
adaptive rounds of the loop — and, when asked, rationalization after it; each
writes into RUN_DIR's store, so a rerun sends only what is missing and the
run directory's budget covers them all. RUN_DIR also gets ``report.json``
(the teacher's accuracy, yield, cost) and ``run.json`` (the settings and
summary of the last run; never an API key). A dry run prices the plan and
writes nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from ftcot.api_replies import public_url, redact
from ftcot.errors import FtcotError
from ftcot.tasks import Task
from ftcot.teach.config import TeachConfig

RAY_ADDRESS_SETTING = "--teacher-args ray_address"


@dataclass
class TeachOutcome:
    out: Path
    task: Task
    config: TeachConfig
    summary: Any  # the executor's TeachSummary (BatchTeachSummary with batch); None after adaptive rounds
    adaptive: Any = None  # AdaptiveSummary
    rationalized: Any = None  # RationalizeSummary
    report: Any = None  # TeacherReport (None for a dry run)
    workers: list[dict[str, Any]] | None = None  # with workers: each one's node, pid and requests answered

    @property
    def interrupted(self) -> bool:
        return bool((self.summary is not None and self.summary.interrupted)
                    or (self.adaptive is not None and self.adaptive.interrupted))


def make_backend(config: TeachConfig, data_root: Path | None) -> Any:
    from ftcot.teach.backends import make_teacher

    return make_teacher(config.spec, data_root=data_root, **config.backend_options())


def run_teach(config: TeachConfig, out: Path, *, data_root: Path | None = None, dry_run: bool = False,
              progress: bool = False, console: Console | None = None, task: Task | None = None) -> TeachOutcome:
    """Teach ``config`` into RUN_DIR ``out`` (see the module docstring); ``task``: already loaded."""
    from ftcot.data_root import resolve_data_root
    from ftcot.paths import check_output, task_inputs
    from ftcot.tasks import load_task
    from ftcot.teach.backends import require_credentials, teacher_secrets
    from ftcot.teach.batch import batch_teacher, refuse_open_batches
    from ftcot.teach.engine import questions_of, resolve_settings
    from ftcot.teach.pricing import PriceTable

    out = Path(out)
    console = console or Console(stderr=True, highlight=False)
    if task is None:
        task = load_task(config.task, resolve_data_root(data_root), config.answer_type)
    root = task.data_root
    # The store holds paid replies: never inside the data a task reads (the recorded teacher files) or a task file.
    check_output(out, task_inputs(task))
    prices = PriceTable.load(config.prices)
    backend = make_backend(config, root)
    secrets = teacher_secrets(config.spec, config.api_key_env, config.base_url)
    if not dry_run:  # a dry run sends nothing and needs no key
        require_credentials(backend)
    # Everything checked before RUN_DIR is touched: a bad setting must not leave an empty run behind.
    samples = config.max_samples if config.adaptive else config.samples
    settings, _ = resolve_settings(task, config.split, backend, config.method, samples, config.temperature,
                                   config.max_tokens, concurrency=config.concurrency, max_cost=config.max_cost,
                                   prices=prices, rationale=config.rationale)
    questions_of(task, config.split, config.questions)  # an empty split, or questions not in it
    if config.batch:
        batch_teacher(backend)  # an hf: or replay: teacher has no Batch API
    elif not dry_run:
        refuse_open_batches(out)  # their requests are paid for: collect them, do not send them again
    if config.workers and not dry_run:
        from ftcot.ray_cluster import check_reachable

        check_reachable(config.ray_address, RAY_ADDRESS_SETTING)  # ray.init would retry it for minutes
    if dry_run:
        return TeachOutcome(out, task, config, _dry_run(config, task, backend, prices, out))
    outcome = TeachOutcome(out, task, config, None)
    pool = _start_workers(config, backend, root, console) if config.workers else None
    try:
        _run(config, task, backend if pool is None else pool, root, out, outcome, prices, secrets, settings,
             console, progress)
    finally:
        if pool is not None:
            outcome.workers = pool.to_json()
            pool.shutdown()
    return outcome


def _run(config: TeachConfig, task: Task, backend: Any, root: Path | None, out: Path, outcome: TeachOutcome,
         prices: Any, secrets: list[str], settings: Any, console: Console, progress: bool) -> None:
    """The run proper, into ``outcome``: the plan through its executor, then rationalization."""
    from ftcot.teach.report import report_from_store
    from ftcot.teach.store import TeachStore

    # Adaptive rounds and rationalization run the loop several times: with workers, on the same pool.
    teacher = (lambda: backend) if config.workers else (lambda: make_backend(config, root))
    with TeachStore.open(out) as store:
        store.lock_for_writing()
        if config.adaptive:
            from ftcot.teach.adaptive import adaptive_teach

            outcome.adaptive = adaptive_teach(
                task, config.split, teacher, store, until_correct=config.until_correct,
                max_samples=config.max_samples, temperature=config.temperature, max_tokens=config.max_tokens,
                method=config.method, only=config.questions, concurrency=config.concurrency,
                max_cost=config.max_cost, prices=prices, secrets=secrets, console=console, progress=progress,
                rationale=config.rationale)
        else:
            outcome.summary = _execute(config, task, backend, store, prices, secrets, console, progress)
        summary = outcome.summary.to_json() if outcome.summary is not None else None
        workers = {"workers": backend.to_json()} if config.workers else {}
        record = {"settings": {k: v for k, v in settings.to_json().items() if k != "exemplars"},
                  "config": config.model_dump(mode="json", exclude={"questions", "base_url"}),
                  "base_url": _public(config.base_url), "finished": time.time(), "summary": summary,
                  **({"adaptive": outcome.adaptive.to_json()} if outcome.adaptive is not None else {}), **workers}
        _write_json(out / "run.json", record, secrets)
        outcome.report = report_from_store(store, task.spec, prices)
        _write_json(out / "report.json", outcome.report.to_json(), secrets)
    if config.rationalize and not outcome.interrupted:
        from ftcot.teach.rationalize import rationalize

        outcome.rationalized = rationalize(task, out, teacher,
                                           samples=config.rationalize, max_tokens=config.max_tokens,
                                           concurrency=config.concurrency, max_cost=config.max_cost, prices=prices,
                                           secrets=secrets, console=console, progress=progress)


def _start_workers(config: TeachConfig, prototype: Any, root: Path | None, console: Console) -> Any:
    """``config.workers`` Ray workers, each with the teacher ``prototype`` was built from
    (:mod:`ftcot.teach.workers`)."""
    import os

    from ftcot.teach.workers import WorkerPool

    key_variable = config.api_key_env or "OPENAI_API_KEY"
    environment = {key_variable: os.environ[key_variable]} if os.environ.get(key_variable) else {}
    console.print(f"starting {config.workers} teach workers on Ray ({config.ray_address or 'a local cluster'}) …")
    pool = WorkerPool.start(prototype, config.spec, config.backend_options(), count=config.workers,
                            cpus=config.worker_cpus, gpus=config.worker_gpus, address=config.ray_address,
                            data_root=root, environment=environment, setting=RAY_ADDRESS_SETTING)
    console.print("started: " + ", ".join(f"{w.node} (pid {w.pid}{', GPU ' + ','.join(w.gpus) if w.gpus else ''})"
                                          for w in pool.workers), markup=False)
    return pool


def _execute(config: TeachConfig, task: Task, backend: Any, store: Any, prices: Any, secrets: list[str],
             console: Console, progress: bool) -> Any:
    """The plan through the executor the config names: the Batch API or the request loop."""
    if config.batch:
        from ftcot.teach.batch import teach_batch

        return teach_batch(task, config.split, backend, config.method, config.samples, config.temperature,
                           config.max_tokens, config.max_cost, store, progress=progress, prices=prices,
                           secrets=secrets, console=console, only=config.questions, api_key_env=config.api_key_env,
                           poll_interval_s=config.poll_interval_s, rationale=config.rationale,
                           batch_timeout_s=config.batch_timeout_s)
    from ftcot.teach.engine import teach

    return teach(task, config.split, backend, config.method, config.samples, config.temperature, config.max_tokens,
                 config.concurrency, config.max_cost, store, progress=progress, prices=prices, secrets=secrets,
                 console=console, only=config.questions, rationale=config.rationale)


def _dry_run(config: TeachConfig, task: Task, backend: Any, prices: Any, out: Path) -> Any:
    """The plan priced; adaptive sampling is priced at its most (M samples a question)."""
    from ftcot.teach.store import STORE_FILE, TeachStore

    store = TeachStore.open_readonly(out) if (out / STORE_FILE).is_file() else None
    samples = config.max_samples if config.adaptive else config.samples
    try:
        if config.batch:
            from ftcot.teach.batch import teach_batch

            return teach_batch(task, config.split, backend, config.method, samples, config.temperature,
                               config.max_tokens, config.max_cost, store, prices=prices, dry_run=True,
                               only=config.questions, api_key_env=config.api_key_env, rationale=config.rationale)
        from ftcot.teach.engine import teach

        return teach(task, config.split, backend, config.method, samples, config.temperature, config.max_tokens,
                     config.concurrency, config.max_cost, store, prices=prices, dry_run=True, only=config.questions,
                     rationale=config.rationale)
    finally:
        if store is not None:
            store.close()


def _public(base_url: str | list[str] | None) -> str | list[str] | None:
    if base_url is None:
        return None
    return public_url(base_url) if isinstance(base_url, str) else [public_url(u) for u in base_url]


def _write_json(path: Path, value: Any, secrets: list[str]) -> None:
    from ftcot.paths import atomic_write_text

    try:
        atomic_write_text(path, redact(json.dumps(value, indent=2, ensure_ascii=False), secrets) + "\n")
    except FtcotError as exc:
        raise FtcotError(f"{exc} The completions are stored: rerun the same command once it is fixed (it sends "
                         f"nothing already stored).") from None
