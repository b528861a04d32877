"""API students: fine-tune an OpenAI model on a DATA_DIR (``ftcot train --student openai:MODEL``).

The paper fine-tuned GPT-3 through the provider's API with the provider's
defaults (as in the paper); so does this module: no hyperparameters
are sent unless the caller passes some.

What is sent (OpenAI's fine-tuning HTTP API, ``base_url`` = ``…/v1``)
--------------------------------------------------------------------
1. ``POST {base_url}/files`` (multipart: ``purpose=fine-tune`` and ``file``):
   ``DATA_DIR/openai_chat.jsonl`` as the training file; then, when
   ``DATA_DIR/val.jsonl`` has rows and ``validation=True`` (the default), those
   rows in the same chat format (:func:`ftcot.curate.dataset.chat_record`),
   written first to ``CKPT_DIR/openai_val_chat.jsonl``. Curate holds those
   questions out of training, so they give the job's ``valid_loss`` metrics
   without overlapping the training file.
2. ``POST {base_url}/fine_tuning/jobs`` with ``model, training_file`` and, only
   when set, ``validation_file, suffix, seed, hyperparameters``
   (:func:`build_job_payload`).
3. ``GET {base_url}/fine_tuning/jobs/{id}`` every ``poll_interval_s`` until the
   status is ``succeeded``, ``failed`` or ``cancelled``; each poll also reads
   ``GET …/jobs/{id}/events`` and reports new events through ``progress``.

State and resuming (nothing is paid twice)
------------------------------------------
``CKPT_DIR/openai_job.json`` is rewritten atomically (temporary file, fsync,
rename) after every step: the uploaded file ids, the job id, its status, the
fine-tuned model, the base model, the SHA-256 of the uploaded files and
``base_url`` (user info, query and fragment removed). A rerun reads it and
does only what is missing: with a job id it only polls; with file ids but no
job it only creates the job; a recorded upload is never repeated. Before the
create request is sent, ``job_requested`` is recorded; a run that finds it set
without a job id (killed between request and reply), or a create attempt whose
reply was lost (timeout, dropped connection, 5xx), first looks for a job on
that training file (``GET …/fine_tuning/jobs``) and adopts it instead of
creating another. A lock file (``CKPT_DIR/.openai_job.lock``) keeps two runs
off the same CKPT_DIR. A rerun with another base model, server or training
data than the recorded one is refused (one line naming the file to delete).
A recorded failed or cancelled job is read once more (one free ``GET``) and
reported again with the server's reason; it is never retried silently.

On success ``CKPT_DIR/train.json`` is written::

    {"student": "openai:<fine_tuned_model>", "base_model": …, "template": …,
     "task": …, "job_id": …, "base_url": …, "trained_tokens": …}

(``template`` and ``task`` from ``DATA_DIR/curation.json``), so evaluation can
use ``openai:<fine_tuned_model>``.

Errors and retries
------------------
(:mod:`ftcot.openai_rest`, shared with the Batch API teacher.) Every request
is retried on 408, 409, 429, 5xx, timeouts and dropped connections, with
exponential back-off and full jitter; ``retry-after-ms`` or ``Retry-After``
(seconds or HTTP date) is honoured as a lower bound, capped at
``max_retry_after_s``. A 429 whose error code is ``insufficient_quota`` is not
retried (waiting does not add credit). Any other 4xx raises
:class:`FineTuneAPIError` (``retryable=False``) at once with the server's own
message; running out of retries raises it with ``retryable=True`` (rerun the
same command to resume). A failed or cancelled job raises
:class:`FineTuneJobFailed` naming the job id and the server's reason; running
past ``timeout_s`` raises :class:`FineTuneStillRunning` (rerun to resume
polling). All are :class:`~ftcot.errors.FtcotError`: one line, exit code 2.

The API key is read from ``os.environ[api_key_env]`` only (it may be unset for
a server on this machine), sent only in the ``Authorization`` header, never
written to CKPT_DIR, and scrubbed from every message and log line (some
servers echo what they were sent).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ftcot.api_replies import public_url
from ftcot.curate.dataset import chat_record, read_examples
from ftcot.data_root import resolve_data_root
from ftcot.dir_lock import lock_directory
from ftcot.jsonl import read_json_object
from ftcot.paths import atomic_write_json
from ftcot.errors import FtcotError, check_float, check_int
from ftcot.jsonl import write_jsonl
from ftcot.openai_rest import RestAPIError, RestClient
from ftcot.paths import check_output, check_writable_dir

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
STATE_FILE = "openai_job.json"
TRAIN_FILE = "train.json"
VAL_CHAT_FILE = "openai_val_chat.jsonl"
LOCK_FILE = ".openai_job.lock"
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
STATE_VERSION = 1

Progress = Callable[[str], None]

_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})


# --- errors ----------------------------------------------------------------------------------


class FineTuneAPIError(RestAPIError):
    """A request to the fine-tuning API failed: at once (a 4xx) or after all retries.

    ``retryable`` says whether rerunning the same command later may succeed.
    """


class FineTuneJobFailed(FtcotError):
    """The job ended ``failed`` or ``cancelled``; the message names it and the server's reason."""

    def __init__(self, message: str, job_id: str, status: str) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.status = status


class FineTuneStillRunning(FtcotError):
    """``timeout_s`` passed before the job finished; rerunning the command resumes polling."""

    def __init__(self, message: str, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id


# --- pure helpers (no network) ---------------------------------------------------------------


def is_local(base_url: str) -> bool:
    host = (urlsplit(base_url).hostname or "").lower()
    return host in _LOCAL_HOSTS or host.startswith("127.")


def build_job_payload(
    base_model: str,
    training_file: str,
    validation_file: str | None = None,
    *,
    suffix: str | None = None,
    seed: int | None = None,
    hyperparameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST /fine_tuning/jobs``; unset options are left out (provider defaults)."""
    payload: dict[str, Any] = {"model": base_model, "training_file": training_file}
    if validation_file:
        payload["validation_file"] = validation_file
    if suffix:
        payload["suffix"] = suffix
    if seed is not None:
        payload["seed"] = seed
    if hyperparameters:
        payload["hyperparameters"] = dict(hyperparameters)
    return payload


def job_failure_reason(job: dict[str, Any], last_error_event: str | None = None) -> str:
    """The server's reason for a failed or cancelled job, in one phrase."""
    error = job.get("error") or {}
    if isinstance(error, dict) and error.get("message"):
        extra = [f"{k} {error[k]}" for k in ("code", "param") if error.get(k)]
        return error["message"] + (f" ({', '.join(extra)})" if extra else "")
    if last_error_event:
        return last_error_event
    return "the server gave no reason" if job.get("status") == "failed" else "cancelled on the server"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` so that ``path`` is always either the old or the new complete file."""
    atomic_write_json(path, data, sort_keys=True)


# --- HTTP ------------------------------------------------------------------------------------


class FineTuneClient(RestClient):
    """The few requests of OpenAI's files and fine-tuning API, with the retries of
    :class:`ftcot.openai_rest.RestClient`.

    Each method returns the reply's JSON object or raises :class:`FineTuneAPIError`.
    """

    error = FineTuneAPIError
    logger = log

    def __init__(self, base_url: str = DEFAULT_BASE_URL, api_key: str | None = None, **options: Any) -> None:
        super().__init__(base_url, api_key, **options)

    # -- endpoints --

    def upload_file(self, path: Path, filename: str | None = None) -> dict[str, Any]:
        return self.upload(path.read_bytes(), filename or path.name, "fine-tune")

    def create_job(self, payload: dict[str, Any]) -> dict[str, Any]:
        # Not idempotent: after a reply is lost, look for the job before sending it again.
        training_file = payload["training_file"]
        return self.request("POST", "fine_tuning/jobs", json=payload, recover=lambda: self.find_job(training_file))

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self.request("GET", f"fine_tuning/jobs/{job_id}")

    def list_events(self, job_id: str, limit: int = 50) -> list[dict[str, Any]]:
        body = self.request("GET", f"fine_tuning/jobs/{job_id}/events", params={"limit": limit})
        return [e for e in body.get("data") or [] if isinstance(e, dict)]

    def find_job(self, training_file: str, max_pages: int = 5) -> dict[str, Any] | None:
        """The newest job trained on ``training_file``."""
        return self.find_newest("fine_tuning/jobs", "training_file", training_file, max_pages)


# --- the run ---------------------------------------------------------------------------------


@contextmanager
def _exclusive(ckpt: Path) -> Iterator[None]:
    """Keep a second run off the same CKPT_DIR (it would upload and create again)."""
    handle = lock_directory(ckpt / LOCK_FILE, lambda holder: (
        f"Another ftcot train is running on {ckpt} (pid {holder}); wait for it or use another --out."))
    try:
        yield
    finally:
        handle.close()  # closing the descriptor releases the flock


def _read_json(path: Path, what: str) -> dict[str, Any]:
    return read_json_object(path, what)


class _Run:
    """One call of :func:`train_openai_student`: the state file plus the steps that fill it."""

    def __init__(self, ckpt: Path, client: FineTuneClient, progress: Progress) -> None:
        self.ckpt = ckpt
        self.state_path = ckpt / STATE_FILE
        self.client = client
        # Server text (events, errors) may echo what it was sent: scrub it before anyone sees it.
        self.progress: Progress = lambda line: progress(client.clean(line))
        self.state: dict[str, Any] = {}
        self.seen_events: set[str] = set()
        self.last_error_event: str | None = None

    def save(self, **changes: Any) -> None:
        self.state.update(changes)
        self.state["updated_at"] = int(time.time())
        write_json_atomic(self.state_path, self.state)

    def refuse(self, what: str, recorded: Any, now: Any) -> FtcotError:
        job = self.state.get("job_id") or "(no job yet)"
        return FtcotError(
            f"{self.state_path} records {what} {recorded!r} (job {job}), not {now!r}; "
            f"rerun with the recorded one, use another --out, or delete {self.state_path} to start over "
            f"(a job already created is then paid again)."
        )

    def upload(self, key: str, path: Path, sha: str) -> str:
        if self.state.get(key):
            return self.state[key]
        reply = self.client.upload_file(path)
        file_id = reply.get("id")
        if not isinstance(file_id, str) or not file_id:
            raise FineTuneAPIError(f"POST {self.client.public_base_url}/files: the reply has no file id")
        self.save(**{key: file_id, f"{key}_sha256": sha})
        self.progress(f"uploaded {path.name} as {file_id}")
        return file_id

    def create_job(self, payload: dict[str, Any]) -> str:
        job: dict[str, Any] | None = None
        if self.state.get("job_requested"):
            # An earlier run sent the request and stopped before recording the reply.
            job = self.client.find_job(payload["training_file"])
            if job is not None:
                self.progress(f"found job {job['id']} created by an earlier run")
        if job is None:
            self.save(job_requested=True)
            job = self.client.create_job(payload)
        job_id = job.get("id")
        if not isinstance(job_id, str) or not job_id:
            raise FineTuneAPIError(f"POST {self.client.public_base_url}/fine_tuning/jobs: the reply has no job id")
        self.save(job_id=job_id, status=job.get("status"), fine_tuned_model=job.get("fine_tuned_model"))
        self.progress(f"created fine-tuning job {job_id} ({job.get('status')})")
        return job_id

    def show_events(self, job_id: str) -> None:
        if self.state.get("events_unsupported"):
            return
        try:
            events = self.client.list_events(job_id)
        except FineTuneAPIError as exc:
            if not exc.retryable:
                self.state["events_unsupported"] = True
            log.warning("could not read the events of %s: %s", job_id, exc)
            return
        new = [e for e in events if e.get("id") not in self.seen_events]
        new.sort(key=lambda e: (e.get("created_at") or 0))  # the API lists newest first
        for event in new:
            self.seen_events.add(event.get("id"))
            message = " ".join(str(event.get("message", "")).split())
            if event.get("level") == "error":
                self.last_error_event = message
            self.progress(f"{job_id}: {message}")

    def poll(self, job_id: str, poll_interval_s: float, timeout_s: float | None) -> dict[str, Any]:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.client.get_job(job_id)
            status = job.get("status")
            if status != self.state.get("status") or job.get("fine_tuned_model") != self.state.get("fine_tuned_model"):
                self.save(status=status, fine_tuned_model=job.get("fine_tuned_model"))
                self.progress(f"job {job_id}: {status}")
            self.show_events(job_id)
            if status in TERMINAL:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise FineTuneStillRunning(
                    f"Fine-tuning job {job_id} is still {status} after {timeout_s:g} s; "
                    f"rerun the same command to resume waiting (state in {self.state_path}).",
                    job_id,
                )
            remaining = float("inf") if deadline is None else deadline - time.monotonic()
            time.sleep(max(0.0, min(poll_interval_s, remaining)))


def _check_data_dir(data_dir: Path) -> tuple[Path, dict[str, Any]]:
    chat = data_dir / "openai_chat.jsonl"
    if not chat.is_file():
        raise FtcotError(f"{chat} not found: pass a DATA_DIR written by `ftcot curate`.")
    if chat.stat().st_size == 0:
        raise FtcotError(f"{chat} is empty: no training examples to fine-tune on.")
    curation = _read_json(data_dir / "curation.json", "pass a DATA_DIR written by `ftcot curate`")
    return chat, curation


def _write_train_json(ckpt: Path, state: dict[str, Any], curation: dict[str, Any]) -> dict[str, Any]:
    result = {
        "student": f"openai:{state['fine_tuned_model']}",
        "base_model": state["base_model"],
        "template": curation.get("template"),
        "task": curation.get("task"),
        "job_id": state["job_id"],
        "base_url": state["base_url"],
        "trained_tokens": state.get("trained_tokens"),
    }
    write_json_atomic(ckpt / TRAIN_FILE, result)
    return result


def _failure(state: dict[str, Any], reason: str) -> FineTuneJobFailed:
    job_id, status = state["job_id"], state.get("status")
    return FineTuneJobFailed(
        f"OpenAI fine-tuning job {job_id} {status}: {reason}. It is recorded in {STATE_FILE}; "
        f"to try again, fix the cause and use another --out (or delete that file).",
        job_id,
        status or "failed",
    )


def train_openai_student(
    data_dir: Path,
    base_model: str,
    out: Path,
    *,
    base_url: str = DEFAULT_BASE_URL,
    api_key_env: str = "OPENAI_API_KEY",
    poll_interval_s: float = 30,
    timeout_s: float | None = None,
    hyperparameters: dict[str, Any] | None = None,
    suffix: str | None = None,
    seed: int | None = None,
    validation: bool = True,
    progress: Progress | None = None,
    request_timeout_s: float = 120,
    max_retries: int = 6,
    backoff_base_s: float = 1.0,
) -> dict[str, Any]:
    """Fine-tune ``base_model`` on ``data_dir`` through OpenAI's API; returns the train.json record.

    Resumable: rerunning with the same ``out`` continues the recorded job (see the
    module docstring). ``progress`` receives one line per step, status change and
    job event (default: the module's logger at INFO).
    """
    data_dir, out = Path(data_dir), Path(out)
    report: Progress = progress or (lambda line: log.info("%s", line))
    check_float("--timeout", timeout_s, 0, low_open=True, optional=True)  # NaN would never time out
    check_float("poll_interval_s", poll_interval_s, 0, low_open=True)
    check_int("--seed", seed, 0, optional=True)
    if not base_model or not base_model.strip():
        raise FtcotError("No base model: pass --student openai:MODEL, e.g. openai:gpt-4.1-nano-2025-04-14.")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FtcotError(f"base_url must look like https://host/v1, not {public_url(base_url)!r}.")
    chat_path, curation = _check_data_dir(data_dir)
    check_output(out, [data_dir, resolve_data_root()])
    api_key = os.environ.get(api_key_env) or None
    if api_key is None and not is_local(base_url):
        raise FtcotError(
            f"Environment variable {api_key_env} is not set; fine-tuning at {public_url(base_url)} needs an "
            f"API key (export {api_key_env}=…)."
        )
    check_writable_dir(out)
    train_sha = sha256_file(chat_path)
    with _exclusive(out), FineTuneClient(
        base_url, api_key, request_timeout_s=request_timeout_s, max_retries=max_retries,
        backoff_base_s=backoff_base_s,
    ) as client:
        run = _Run(out, client, report)
        if run.state_path.exists():
            run.state = _read_json(run.state_path, "delete it to start over (a job it names is then paid again)")
            recorded = run.state
            for what, old, new in (("base model", recorded.get("base_model"), base_model),
                                   ("base_url", recorded.get("base_url"), client.public_base_url),
                                   ("training data sha256", recorded.get("training_file_sha256"), train_sha)):
                if old is not None and old != new:
                    raise run.refuse(what, old, new)
            if (recorded.get("job_id") and hyperparameters
                    and recorded.get("hyperparameters") not in (None, hyperparameters)):
                report(f"job {recorded['job_id']} already exists with hyperparameters "
                       f"{recorded.get('hyperparameters')}; the ones passed now are ignored")
        else:
            run.save(version=STATE_VERSION, base_model=base_model, base_url=client.public_base_url,
                     data_dir=str(data_dir.resolve()), training_file=None, validation_file=None, job_id=None,
                     status=None, fine_tuned_model=None)

        status = run.state.get("status")
        if status == "succeeded" and run.state.get("fine_tuned_model"):
            report(f"job {run.state['job_id']} already succeeded: {run.state['fine_tuned_model']}")
            return _write_train_json(out, run.state, curation)
        job_id = run.state.get("job_id")
        if not job_id:
            training_file = run.upload("training_file", chat_path, train_sha)
            validation_file = None
            if validation:
                validation_file = run.state.get("validation_file")
                val_path = data_dir / "val.jsonl"
                if validation_file is None and val_path.is_file():
                    rows = [chat_record(e) for e in read_examples(val_path)]
                    if rows:
                        val_chat = out / VAL_CHAT_FILE
                        with val_chat.open("w", encoding="utf-8") as handle:
                            write_jsonl(rows, handle)
                        validation_file = run.upload("validation_file", val_chat, sha256_file(val_chat))
            payload = build_job_payload(base_model, training_file, validation_file,
                                        suffix=suffix, seed=seed, hyperparameters=hyperparameters)
            run.save(hyperparameters=hyperparameters, suffix=suffix, seed=seed)
            job_id = run.create_job(payload)

        job = run.poll(job_id, poll_interval_s, timeout_s)
        if job.get("status") != "succeeded":
            reason = client.clean(job_failure_reason(job, run.last_error_event))
            run.save(failure_reason=reason)
            raise _failure(run.state, reason)
        if not job.get("fine_tuned_model"):
            raise FineTuneAPIError(
                f"GET {client.public_base_url}/fine_tuning/jobs/{job_id}: the job succeeded but names no "
                f"fine_tuned_model; rerun the same command to ask again.", retryable=True)
        run.save(trained_tokens=job.get("trained_tokens"))
        report(f"fine-tuned model: {job['fine_tuned_model']}")
        return _write_train_json(out, run.state, curation)
