"""API students: upload, create, poll, resume, and keep the key secret.

TEST DOUBLE: OpenAI's fine-tuning service is a paid remote service that cannot
run here, so every test below talks real HTTP over real sockets to
:class:`tests.train.openai_stub.OpenAIStub`, a server on 127.0.0.1 that
implements the API's contract (request and reply shapes from OpenAI's API
reference and the ``openai`` SDK's types) and counts the requests it gets.
The DATA_DIR is real: ``ftcot curate``'s output for coin_flip from the recorded
teacher rationales.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ftcot.curate import curate
from ftcot.curate.dataset import chat_record, read_examples, write_data_dir
from ftcot.errors import FtcotError
from ftcot.tasks import load_task
from ftcot.templates import get_template
from ftcot.openai_rest import retry_after_s
from ftcot.train.openai_student import (
    LOCK_FILE,
    STATE_FILE,
    FineTuneAPIError,
    FineTuneJobFailed,
    FineTuneStillRunning,
    build_job_payload,
    train_openai_student,
)
from tests.conftest import PROJECT_ROOT, TEACHER_DIR
from tests.train.openai_stub import Fault, OpenAIStub

SECRET = "sk-test-SECRET"
KEY_ENV = "FTCOT_TEST_OPENAI_KEY"
BASE = "gpt-4o-mini-2024-07-18"
FILES, JOBS = "/v1/files", "/v1/fine_tuning/jobs"
JOB, EVENTS = f"{JOBS}/{{id}}", f"{JOBS}/{{id}}/events"


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(data_root, tmp_path_factory) -> Path:
    """A real DATA_DIR: coin_flip curated from the recorded teacher rationales."""
    task = load_task("coin_flip", data_root)
    with (TEACHER_DIR / "zs_cot" / "coin_flip.jsonl").open() as handle:
        records = [json.loads(line) for line in handle]
    train, val, summary = curate(task, get_template("ft_cot"), records)
    out = tmp_path_factory.mktemp("data")
    write_data_dir(out, train, val, summary)
    assert val, "the test wants a validation slice"
    return out


@pytest.fixture
def stub():
    server = OpenAIStub(api_key=SECRET)
    yield server
    server.close()


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)


def train(stub: OpenAIStub, data_dir: Path, out: Path, lines: list[str] | None = None, base_model: str = BASE,
          **kwargs):
    options = dict(base_url=stub.base_url, api_key_env=KEY_ENV, poll_interval_s=0.01, backoff_base_s=0.01,
                   progress=(lines.append if lines is not None else None))
    options.update(kwargs)
    return train_openai_student(data_dir, base_model, out, **options)


def state(out: Path) -> dict:
    return json.loads((out / STATE_FILE).read_text())


def assert_one_line(exc: BaseException, *fragments: str) -> None:
    text = str(exc)
    assert "\n" not in text
    for fragment in fragments:
        assert fragment in text, text


def paid(stub: OpenAIStub) -> tuple[int, int]:
    """(uploads, job creations) the stub received."""
    return stub.count("POST", FILES), stub.count("POST", JOBS)


# --- the whole flow ----------------------------------------------------------------------------


def test_full_flow_uploads_creates_polls_and_writes_train_json(stub, data_dir, tmp_path, key):
    lines: list[str] = []
    out = tmp_path / "ckpt"
    result = train(stub, data_dir, out, lines)

    (job_id,) = stub.jobs
    job = stub.jobs[job_id]
    assert result == json.loads((out / "train.json").read_text())
    assert result["student"] == f"openai:{job['fine_tuned_model']}"
    assert result["student"].startswith(f"openai:ft:{BASE}:")
    assert (result["base_model"], result["job_id"], result["template"], result["task"]) == (
        BASE, job_id, "ft_cot", "coin_flip")
    assert result["base_url"] == stub.base_url

    # Exactly one training upload (the curated chat file, byte for byte), one validation
    # upload (val.jsonl in the same chat format), one job with the provider's defaults.
    assert paid(stub) == (2, 1)
    payload = stub.job_payloads[job_id]
    assert payload == {"model": BASE, "training_file": payload["training_file"],
                       "validation_file": payload["validation_file"]}
    assert stub.file_contents[payload["training_file"]] == (data_dir / "openai_chat.jsonl").read_bytes()
    val_rows = [json.loads(line) for line in stub.file_contents[payload["validation_file"]].decode().splitlines()]
    assert val_rows == [chat_record(e) for e in read_examples(data_dir / "val.jsonl")]

    recorded = state(out)
    assert recorded["job_id"] == job_id and recorded["status"] == "succeeded"
    assert recorded["training_file"] == payload["training_file"]
    assert recorded["validation_file"] == payload["validation_file"]
    assert recorded["fine_tuned_model"] == job["fine_tuned_model"]
    assert (recorded["base_model"], recorded["base_url"]) == (BASE, stub.base_url)

    # Progress shows each status and the job's events, oldest first.
    text = "\n".join(lines)
    for status in ("queued", "running", "succeeded"):
        assert f"job {job_id}: {status}" in text
    assert text.index("Fine-tuning job started") < text.index("The job has successfully completed")

    # A finished run is not repeated: no request at all.
    before = len(stub.requests)
    assert train(stub, data_dir, out) == result
    assert len(stub.requests) == before


def test_validation_can_be_left_out_and_hyperparameters_are_sent_when_given(stub, data_dir, tmp_path, key):
    train(stub, data_dir, tmp_path / "ckpt", validation=False, hyperparameters={"n_epochs": 3},
          suffix="ftcot", seed=7)
    (payload,) = stub.job_payloads.values()
    assert "validation_file" not in payload
    assert (payload["hyperparameters"], payload["suffix"], payload["seed"]) == ({"n_epochs": 3}, "ftcot", 7)
    assert paid(stub) == (1, 1)


# --- resuming: nothing is paid twice -------------------------------------------------------------


def test_stopped_by_timeout_then_rerun_only_polls(stub, data_dir, tmp_path, key):
    out = tmp_path / "ckpt"
    stub.hold = "running"
    with pytest.raises(FineTuneStillRunning) as info:
        train(stub, data_dir, out, timeout_s=0.3)
    (job_id,) = stub.jobs
    assert_one_line(info.value, job_id, "still running", "rerun")
    assert state(out)["job_id"] == job_id and state(out)["status"] == "running"
    assert paid(stub) == (2, 1)

    stub.hold = None
    result = train(stub, data_dir, out)
    assert paid(stub) == (2, 1)  # no second upload, no second job
    assert result["job_id"] == job_id


def test_killed_process_resumes_the_recorded_job(stub, data_dir, tmp_path, key):
    """A real SIGKILL of a real process while the job runs, then the same call again."""
    out = tmp_path / "ckpt"
    stub.hold = "running"
    script = textwrap.dedent(f"""
        from pathlib import Path
        from ftcot.train.openai_student import train_openai_student
        train_openai_student(Path({str(data_dir)!r}), {BASE!r}, Path({str(out)!r}), base_url={stub.base_url!r},
                             api_key_env={KEY_ENV!r}, poll_interval_s=0.05)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], cwd=PROJECT_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and stub.count("GET", JOB) < 2:
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
        assert stub.count("GET", JOB) >= 2, "the job was never polled"
    finally:
        process.send_signal(signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=10)
    assert process.returncode == -signal.SIGKILL
    assert SECRET not in (stdout + stderr).decode()
    (job_id,) = stub.jobs
    assert state(out)["job_id"] == job_id

    stub.hold = None
    result = train(stub, data_dir, out)
    assert paid(stub) == (2, 1)
    assert result["job_id"] == job_id


def test_stopped_after_the_training_upload_only_adds_what_is_missing(stub, data_dir, tmp_path, key):
    out = tmp_path / "ckpt"

    class Stop(Exception):
        pass

    def stop_after_first_upload(line: str) -> None:
        if line.startswith("uploaded openai_chat.jsonl"):
            raise Stop

    with pytest.raises(Stop):
        train(stub, data_dir, out, progress=stop_after_first_upload)
    assert paid(stub) == (1, 0)
    assert state(out)["training_file"] and not state(out)["job_id"]

    train(stub, data_dir, out)
    assert paid(stub) == (2, 1)  # the validation file and the job; the training file not again
    (payload,) = stub.job_payloads.values()
    assert payload["training_file"] == state(out)["training_file"]


def test_a_create_request_sent_but_not_recorded_is_found_not_sent_again(stub, data_dir, tmp_path, key):
    """Killed between sending the create request and recording its reply."""
    out = tmp_path / "ckpt"
    stub.hold = "running"
    with pytest.raises(FineTuneStillRunning):
        train(stub, data_dir, out, timeout_s=0.1)
    recorded = state(out)
    assert recorded["job_requested"] is True
    recorded.update(job_id=None, status=None)
    (out / STATE_FILE).write_text(json.dumps(recorded))

    stub.hold = None
    lines: list[str] = []
    result = train(stub, data_dir, out, lines)
    assert paid(stub) == (2, 1)
    assert stub.count("GET", JOBS) == 1  # looked the job up instead
    assert result["job_id"] == next(iter(stub.jobs))
    assert any("created by an earlier run" in line for line in lines)


def test_a_lost_create_reply_is_not_retried_into_a_second_job(stub, data_dir, tmp_path, key):
    # The server creates the job, then the reply is a 500 (or the connection drops).
    stub.fail("POST", JOBS, Fault(500, message="internal error", after_effect=True))
    result = train(stub, data_dir, tmp_path / "ckpt")
    assert paid(stub) == (2, 1) and len(stub.jobs) == 1
    assert result["job_id"] == next(iter(stub.jobs))


def test_a_rerun_with_another_base_model_is_refused(stub, data_dir, tmp_path, key):
    out = tmp_path / "ckpt"
    stub.hold = "running"
    with pytest.raises(FineTuneStillRunning):
        train(stub, data_dir, out, timeout_s=0.1)
    before = len(stub.requests)
    with pytest.raises(FtcotError) as info:
        train(stub, data_dir, out, base_model="gpt-4.1-nano-2025-04-14")
    assert_one_line(info.value, STATE_FILE, "base model", BASE, next(iter(stub.jobs)))
    assert len(stub.requests) == before


def test_a_second_run_on_the_same_checkpoint_is_refused(stub, data_dir, tmp_path, key):
    import fcntl

    out = tmp_path / "ckpt"
    out.mkdir()
    with (out / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        with pytest.raises(FtcotError) as info:
            train(stub, data_dir, out)
    assert_one_line(info.value, "Another ftcot train is running")
    assert stub.requests == []


# --- job failures and HTTP errors --------------------------------------------------------------


def test_failed_job_is_one_line_error_with_id_and_reason(stub, data_dir, tmp_path, key):
    out = tmp_path / "ckpt"
    stub.outcome = "failed"
    with pytest.raises(FineTuneJobFailed) as info:
        train(stub, data_dir, out)
    (job_id,) = stub.jobs
    assert_one_line(info.value, job_id, "failed", stub.failure["message"], "invalid_training_file")
    assert isinstance(info.value, FtcotError) and info.value.exit_code == 2
    assert state(out)["status"] == "failed"
    assert not (out / "train.json").exists()

    # A rerun reports it again (one free GET); it never starts another paid job.
    with pytest.raises(FineTuneJobFailed) as again:
        train(stub, data_dir, out)
    assert_one_line(again.value, job_id, stub.failure["message"])
    assert paid(stub) == (2, 1)


def test_cancelled_job_is_one_line_error(stub, data_dir, tmp_path, key):
    stub.outcome = "cancelled"
    with pytest.raises(FineTuneJobFailed) as info:
        train(stub, data_dir, tmp_path / "ckpt")
    assert_one_line(info.value, next(iter(stub.jobs)), "cancelled")


def test_401_is_one_line_error_without_the_key(stub, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    stub.api_key = "sk-the-right-one"  # the stub echoes the wrong key in full
    with pytest.raises(FineTuneAPIError) as info:
        train(stub, data_dir, tmp_path / "ckpt")
    assert_one_line(info.value, "HTTP 401", "Incorrect API key provided", "/v1/files")
    assert SECRET not in str(info.value) and "***" in str(info.value)
    assert (info.value.status, info.value.retryable) == (401, False)
    assert stub.count("POST", FILES) == 1  # not retried


def test_400_carries_the_server_message(stub, data_dir, tmp_path, key):
    stub.fail("POST", JOBS, Fault(400, message="Invalid n_epochs: 0 is below the minimum of 1.", code="invalid_value"))
    with pytest.raises(FineTuneAPIError) as info:
        train(stub, data_dir, tmp_path / "ckpt")
    assert_one_line(info.value, "HTTP 400", "Invalid n_epochs: 0 is below the minimum of 1.")
    assert stub.count("POST", JOBS) == 1


def test_429_and_5xx_are_retried_honouring_retry_after(stub, data_dir, tmp_path, key):
    stub.fail("POST", FILES, Fault(503, message="overloaded"))
    stub.fail("GET", JOB, Fault(429, headers={"Retry-After": "1"}, message="Rate limit reached"))
    stub.fail("GET", EVENTS, Fault(502))
    start = time.monotonic()
    result = train(stub, data_dir, tmp_path / "ckpt")
    assert time.monotonic() - start >= 1.0  # waited as told
    assert result["student"].startswith("openai:ft:")
    assert len(stub.jobs) == 1


def test_insufficient_quota_is_not_retried(stub, data_dir, tmp_path, key):
    stub.fail("POST", FILES, Fault(429, message="You exceeded your current quota.", code="insufficient_quota"))
    with pytest.raises(FineTuneAPIError) as info:
        train(stub, data_dir, tmp_path / "ckpt")
    assert_one_line(info.value, "HTTP 429", "exceeded your current quota")
    assert stub.count("POST", FILES) == 1


def test_giving_up_after_retries_says_rerun(stub, data_dir, tmp_path, key):
    stub.fail("POST", FILES, *[Fault(500)] * 3)
    with pytest.raises(FineTuneAPIError) as info:
        train(stub, data_dir, tmp_path / "ckpt", max_retries=2)
    assert_one_line(info.value, "gave up after 3 attempts", "HTTP 500", "Rerun")
    assert info.value.retryable


def test_missing_key_for_a_remote_server_fails_before_any_request(data_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("FTCOT_UNSET_KEY", raising=False)
    with pytest.raises(FtcotError) as info:
        train_openai_student(data_dir, BASE, tmp_path / "ckpt", api_key_env="FTCOT_UNSET_KEY")
    assert_one_line(info.value, "FTCOT_UNSET_KEY")
    assert not (tmp_path / "ckpt").exists()


def test_a_data_dir_without_the_chat_file_is_one_line_error(stub, tmp_path, key):
    with pytest.raises(FtcotError) as info:
        train(stub, tmp_path, tmp_path / "ckpt")
    assert_one_line(info.value, "openai_chat.jsonl", "ftcot curate")


# --- the key never leaks ----------------------------------------------------------------------


def test_the_key_appears_in_no_file_message_or_log(stub, data_dir, tmp_path, key, caplog, capsys):
    caplog.set_level(logging.DEBUG)  # httpx and httpcore included
    out = tmp_path / "ckpt"
    messages: list[str] = []
    stub.fail("POST", FILES, Fault(500, message=f"upstream said Bearer {SECRET}"))
    stub.hold = "running"
    try:
        train(stub, data_dir, out, messages, timeout_s=0.1)
    except FtcotError as exc:
        messages.append(repr(exc))
    stub.hold = None
    stub.outcome = "failed"
    stub.failure = {"code": "bad", "message": f"rejected key {SECRET}", "param": None}
    for attempt in ("failed job", "401"):
        if attempt == "401":
            stub.api_key = "sk-the-right-one"
            out = tmp_path / "ckpt2"
        try:
            train(stub, data_dir, out, messages)
        except FtcotError as exc:
            messages.append(str(exc))
            messages.append(repr(exc))
    assert any("HTTP 401" in m for m in messages)
    captured = capsys.readouterr()
    artifacts = {str(p): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert artifacts
    for name, content in artifacts.items():
        assert SECRET.encode() not in content, name
    assert "upstream said" in caplog.text  # the 500's message was logged, scrubbed
    for text in (caplog.text, captured.out, captured.err, *messages):
        assert SECRET not in text


# --- pure helpers ------------------------------------------------------------------------------


def test_build_job_payload_sends_only_what_is_set():
    assert build_job_payload(BASE, "file-1") == {"model": BASE, "training_file": "file-1"}
    assert build_job_payload(BASE, "file-1", "file-2", suffix="s", seed=0, hyperparameters={"n_epochs": 2}) == {
        "model": BASE, "training_file": "file-1", "validation_file": "file-2", "suffix": "s", "seed": 0,
        "hyperparameters": {"n_epochs": 2}}


def test_public_url_drops_credentials():
    from ftcot.api_replies import public_url

    assert public_url("https://user:pw@example.com:8443/v1/?key=x#f") == "https://example.com:8443/v1"
    assert public_url("https://api.openai.com/v1/") == "https://api.openai.com/v1"


def test_retry_after_forms():
    assert retry_after_s({"retry-after-ms": "250"}) == 0.25
    assert retry_after_s({"retry-after": "3"}) == 3.0
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412480 - 10) == 10.0
    assert retry_after_s({}) is None
