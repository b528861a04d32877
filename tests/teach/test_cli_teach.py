"""``ftcot teach`` end to end: real subprocesses, real HTTP servers on 127.0.0.1, SIGKILL mid-run.

Servers: the stub OpenAI-compatible server (fast, deterministic) and, for the
``slow`` tests, a real llama.cpp server with Gemma 3 270M. Both sit behind the
counting ``proxy``, which records a hash of every request body it forwards.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftcot.errors import FtcotError
from ftcot.jsonl import read_jsonl
from ftcot.scoring import score
from ftcot.tasks import get_spec, load_task
from ftcot.teach.backends.openai_compat import build_completions_payload
from ftcot.teach.records import CompletionRequest
from ftcot.teach.store import STORE_FILE, TeachStore
from tests.conftest import PROJECT_ROOT, SHARED_DATA, TEACHER_DIR
from tests.mounts import resize, small_disk  # noqa: F401  (fixtures)

FAKE_KEY = "sk-ftcot-test-0123456789abcdefSECRET"


def ftcot_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ftcot", *map(str, args)]


def cli_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "FTCOT_DATA": str(SHARED_DATA), "COLUMNS": "200", **extra}


def run_ftcot(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(ftcot_command(*args), capture_output=True, text=True, env=env or cli_env(),
                          cwd=PROJECT_ROOT, timeout=timeout)


def coin_task_file(tmp_path: Path, n: int) -> Path:
    """A task file of the first ``n`` coin-flip test questions (a user's own task, all test)."""
    task = load_task("coin_flip", SHARED_DATA)
    path = tmp_path / "coins.jsonl"
    with path.open("w") as handle:
        for sample in task.split("test")[:n]:
            handle.write(json.dumps({"question": sample.question, "answer": sample.answer, "split": "test"}) + "\n")
    return path


def sent_body_hash(row) -> str:
    """SHA-256 of the body the openai backend sends for a stored completion (n=1)."""
    request = CompletionRequest(row.prompt, row.max_tokens, row.temperature, 1, row.seed, row.stop)
    return hashlib.sha256(json.dumps(build_completions_payload("gemma", request)).encode()).hexdigest()


# -- replay ------------------------------------------------------------------------------------


def test_replay_reproduces_the_recorded_accuracy(tmp_path):
    run_dir = tmp_path / "run"
    result = run_ftcot("teach", "--teacher", "replay:text-davinci-002", "--task", "coin_flip", "--split", "test",
                       "--method", "zs_cot", "--out", run_dir)
    assert result.returncode == 0, result.stderr
    indices = set(load_task("coin_flip", SHARED_DATA).split_indices("test"))
    recorded = [r for _, r in read_jsonl(TEACHER_DIR / "zs_cot" / "coin_flip.jsonl") if r["sample_index"] in indices]
    expected = sum(score(r["answer_completion"], r["answer"], get_spec("coin_flip"), "zs_cot").correct
                   for r in recorded) / len(recorded)
    report = json.loads(run_ftcot("teach", "report", run_dir, "--json").stdout)
    assert report["accuracy"] == pytest.approx(expected) and report["scored"] == 150
    assert json.loads((run_dir / "report.json").read_text())["accuracy"] == pytest.approx(expected)
    assert f"{100 * expected:.2f}%" in result.stdout
    assert "150/150 chains complete" in result.stdout
    assert "300/300" in result.stderr and "completions/s" in result.stderr  # the progress bar's last state
    settings = json.loads((run_dir / "run.json").read_text())["settings"]
    assert (settings["task"], settings["method"], settings["samples"]) == ("coin_flip", "zs_cot", 1)

    exported = run_ftcot("teach", "export", run_dir, "--out", tmp_path / "out.jsonl")
    assert exported.returncode == 0 and "wrote 150 records" in exported.stdout
    by_index = {r["sample_index"]: r for r in recorded}
    for _, record in read_jsonl(tmp_path / "out.jsonl"):
        original = by_index[record["sample_index"]]
        assert {k: record[k] for k in original} == original


def test_replay_with_two_samples_is_a_one_line_error(tmp_path):
    result = run_ftcot("teach", "--teacher", "replay:text-davinci-002", "--task", "coin_flip", "--split", "test",
                       "--samples", "2", "--temperature", "0.7", "--out", tmp_path / "run")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "cannot sample" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize(("args", "message"), [
    (["--teacher", "gpt4:x"], "Unknown teacher 'gpt4:x'"),
    (["--teacher", "replay:text-davinci-002", "--method", "cot"], "--method: Unknown method 'cot'. Did you mean 'zs_cot'?"),
    (["--teacher", "replay:no-such-teacher"], "no such recorded teacher"),
    (["--teacher", "replay:text-davinci-002", "--samples", "2"], "cannot sample"),
])
def test_bad_settings_are_one_line_errors(tmp_path, args, message):
    result = run_ftcot("teach", "--task", "coin_flip", "--split", "test", "--out", tmp_path / "run", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1


# -- resume after SIGKILL -------------------------------------------------------------------------


def kill_mid_run_then_resume(tmp_path: Path, base_url: str, proxy, questions: int, extra: list[str]) -> None:
    """Start a run, SIGKILL it once some completions are stored, run again; check nothing paid is resent."""
    run_dir = tmp_path / "run"
    task_file = coin_task_file(tmp_path, questions)
    args = ["teach", "--task", task_file, "--answer-type", "yes/no", "--split", "test", "--teacher", "openai:gemma",
            "--teacher-args", f"base_url={base_url}", "--teacher-args", "concurrency=1", "--out", run_dir, *extra]
    process = subprocess.Popen(ftcot_command(*args), env=cli_env(), cwd=PROJECT_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    stored = 0
    while time.monotonic() < deadline and process.poll() is None:
        if (run_dir / STORE_FILE).is_file():
            try:
                with TeachStore.open_readonly(run_dir) as store:
                    stored = store.count()
            except FtcotError:  # created but not initialised yet
                stored = 0
            if stored >= 3:
                break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed; make it slower"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    with TeachStore.open_readonly(run_dir) as store:
        before_kill = list(store.completions())
    assert 3 <= len(before_kill) < 2 * questions
    sent_before = proxy.count("/completions")

    result = run_ftcot(*args)
    assert result.returncode == 0, result.stderr
    with TeachStore.open_readonly(run_dir) as store:
        assert store.count() == 2 * questions
    report = json.loads(run_ftcot("teach", "report", run_dir, "--json", "--task", task_file, "--answer-type",
                                  "yes/no").stdout)
    assert report["scored"] == questions

    # Every completion stored before the kill went over the wire exactly once, in both runs together.
    per_body = proxy.per_body()
    for row in before_kill:
        assert per_body[sent_body_hash(row)] == 1, f"stored completion {row.key[:12]} was requested again"
    # The second run asked for exactly what was missing; only the request in flight at the
    # kill (one, at concurrency 1: sent, never stored) went out twice.
    assert proxy.count("/completions") - sent_before == 2 * questions - len(before_kill)
    repeats = sum(count - 1 for count in per_body.values())
    assert repeats <= 1 and proxy.count("/completions") == 2 * questions + repeats


def test_a_run_killed_with_sigkill_resumes_without_resending_stub(tmp_path, stub, proxy):
    upstream = stub(delay_s=0.3)
    front = proxy(upstream.base_url)
    kill_mid_run_then_resume(tmp_path, front.base_url, front, questions=6, extra=["--teacher-args", "max_tokens=16"])


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_without_resending_llama(tmp_path, llama_server, proxy):
    front = proxy(llama_server)
    kill_mid_run_then_resume(tmp_path, front.base_url, front, questions=4, extra=["--teacher-args", "max_tokens=16"])


# -- diverse reasoning against llama.cpp -----------------------------------------------------------


@pytest.mark.slow
def test_top_up_to_three_samples_stores_three_distinct_rationales_from_llama(tmp_path, llama_server, proxy):
    front = proxy(llama_server)
    run_dir = tmp_path / "run"
    task_file = coin_task_file(tmp_path, 2)
    common = ["teach", "--task", task_file, "--answer-type", "yes/no", "--split", "test", "--teacher",
              "openai:gemma", "--teacher-args", f"base_url={front.base_url}", "--temperature", "0.7", "--teacher-args", "max_tokens=16",
              "--out", run_dir]
    first = run_ftcot(*common, "--samples", "2")
    assert first.returncode == 0, first.stderr
    assert front.count("/completions") == 2 * 2 * 2  # llama ignores n: every sample its own request
    top_up = run_ftcot(*common, "--samples", "3")
    assert top_up.returncode == 0, top_up.stderr
    assert front.count("/completions") == 2 * 3 * 2  # only the third sample and its answer were asked for
    assert not front.repeated()
    assert run_ftcot("teach", "export", run_dir, "--out", tmp_path / "out.jsonl").returncode == 0
    rationales: dict[int, set[str]] = {}
    for _, record in read_jsonl(tmp_path / "out.jsonl"):
        rationales.setdefault(record["sample_index"], set()).add(record["reasoning_completion"])
    assert [len(v) for v in rationales.values()] == [3, 3]


# -- budget -------------------------------------------------------------------------------------------


def test_max_cost_stops_before_the_cap_and_keeps_results(tmp_path, stub, proxy):
    upstream = stub(completion_tokens=5)
    front = proxy(upstream.base_url)
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"gemma": {"prompt": 0, "completion": 1_000_000}}))  # $1 per completion token
    run_dir = tmp_path / "run"
    args = ["teach", "--task", coin_task_file(tmp_path, 8), "--answer-type", "yes/no", "--split", "test",
            "--teacher", "openai:gemma", "--teacher-args", f"base_url={front.base_url}", "--method", "zs", "--teacher-args", "max_tokens=10",
            "--teacher-args", f"prices={prices}", "--out", run_dir]
    result = run_ftcot(*args, "--max-cost", "32")
    assert result.returncode == 0, result.stderr
    assert "stopped at the --max-cost cap" in result.stdout
    summary = json.loads((run_dir / "run.json").read_text())["summary"]
    assert summary["stopped_by_cost_cap"] and summary["cost_usd"] <= 32
    with TeachStore.open_readonly(run_dir) as store:
        assert store.count() == summary["requests"] == front.count("/completions") < 8
    finished = run_ftcot(*args, "--max-cost", "1000")
    assert finished.returncode == 0 and "8/8 chains complete" in finished.stdout
    assert front.count("/completions") == 8 and not front.repeated()


def test_dry_run_sends_nothing(tmp_path, stub, proxy):
    upstream = stub()
    front = proxy(upstream.base_url)
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"gemma": [1.0, 2.0]}))
    result = run_ftcot("teach", "--task", coin_task_file(tmp_path, 5), "--answer-type", "yes/no", "--split", "test",
                       "--teacher", "openai:gemma", "--teacher-args", f"base_url={front.base_url}", "--samples", "2",
                       "--temperature", "0.7", "--teacher-args", f"prices={prices}", "--dry-run", "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    # 5 stage-1 requests with n=2 (the backend assumes n works until told otherwise) + 10 stage-2.
    assert "would send 15 requests" in result.stdout and "Nothing was sent" in result.stdout
    assert front.count() == 0 and upstream.count() == 0
    assert not (tmp_path / "run").exists()


# -- secrets --------------------------------------------------------------------------------------------


def test_the_api_key_appears_in_no_artifact_and_no_output(tmp_path, stub, proxy):
    upstream = stub()
    # Request 4 (after a first chain is complete) is answered with a 401 that echoes the Authorization header.
    front = proxy(upstream.base_url, faults={4: "401-echo"})
    run_dir = tmp_path / "run"
    env = cli_env(FTCOT_TEST_KEY=FAKE_KEY)
    task_file = coin_task_file(tmp_path, 4)
    outputs = []
    teach = run_ftcot("teach", "--task", task_file, "--answer-type", "yes/no", "--split", "test", "--teacher",
                      "openai:gemma", "--teacher-args", f"base_url={front.base_url}", "--teacher-args", "api_key_env=FTCOT_TEST_KEY",
                      "--teacher-args", "concurrency=1", "--out", run_dir, env=env)
    # A 401 means the key is refused: the run stops sending and exits non-zero, in one line.
    assert teach.returncode == 2 and "Traceback" not in teach.stderr, teach.stderr
    assert "HTTP 401" in teach.stderr.splitlines()[-1] and "check the API key" in teach.stderr
    assert "1 items failed" in teach.stdout and "refused the credentials" in teach.stdout
    assert FAKE_KEY not in teach.stdout + teach.stderr
    assert all(seen.authorization == f"Bearer {FAKE_KEY}" for seen in front.seen)  # the key was used...
    assert front.count("/completions") == 4  # ...and nothing was sent after the 401
    outputs.append(run_ftcot("teach", "export", run_dir, env=env))
    outputs.append(run_ftcot("teach", "report", run_dir, "--json", "--task", task_file, "--answer-type", "yes/no",
                             env=env))
    outputs.append(run_ftcot("teach", "--task", task_file, "--answer-type", "yes/no", "--split", "test",
                             "--teacher", "openai:gemma", "--teacher-args", f"base_url={front.base_url}",
                             "--teacher-args", "api_key_env=FTCOT_TEST_KEY", "--dry-run", "--out", run_dir, env=env))
    for result in outputs:  # ...and shown nowhere
        assert result.returncode == 0, result.stderr
        assert FAKE_KEY not in result.stdout and FAKE_KEY not in result.stderr
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {STORE_FILE, "run.json", "report.json", "export.jsonl"}
    for path in files:
        assert FAKE_KEY.encode() not in path.read_bytes(), f"the API key leaked into {path.name}"
    with TeachStore.open_readonly(run_dir) as store:
        (failure,) = store.failures()
    assert failure.status == 401 and FAKE_KEY not in failure.message


def test_ctrl_c_stores_what_is_in_flight_before_stopping(tmp_path, stub, proxy):
    upstream = stub(delay_s=0.5)
    front = proxy(upstream.base_url)
    run_dir = tmp_path / "run"
    args = ["teach", "--task", coin_task_file(tmp_path, 8), "--answer-type", "yes/no", "--split", "test",
            "--teacher", "openai:gemma", "--teacher-args", f"base_url={front.base_url}", "--teacher-args", "concurrency=4", "--out", run_dir]
    process = subprocess.Popen(ftcot_command(*args), env=cli_env(), cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while front.count() < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stdout and "Traceback" not in stderr
    with TeachStore.open_readonly(run_dir) as store:
        # Every request that went out (paid for) came back into the store.
        assert store.count() == front.count("/completions") < 16


def test_import_zero_shot_cot_logs_round_trips_a_log(tmp_path):
    from ftcot.teach.import_logs import render_log

    recorded = [r for _, r in read_jsonl(TEACHER_DIR / "zs_cot" / "coin_flip.jsonl")][:20]
    log = tmp_path / "coin_flip_zero_shot_cot.log"
    log.write_text(render_log(recorded, "coin_flip"))
    result = run_ftcot("teach", "import-zero-shot-cot-logs", log, "--task", "coin_flip", "--method", "zs_cot",
                       "--out", tmp_path / "records.jsonl")
    assert result.returncode == 0, result.stderr
    assert "wrote 20 records" in result.stdout
    assert [r for _, r in read_jsonl(tmp_path / "records.jsonl")] == recorded


# -- outages, exit codes and URLs ------------------------------------------------------------------


def teach_args(task_file: Path, base_url: str, run_dir: Path, *extra: str) -> list[str]:
    return ["teach", "--task", task_file, "--answer-type", "yes/no", "--split", "test", "--teacher", "openai:gemma",
            "--teacher-args", f"base_url={base_url}", "--out", run_dir, *extra]


@pytest.mark.parametrize(("outage", "sent", "reason"), [
    (401, 1, "HTTP 401"),  # the key is refused: one request, then nothing more is sent
    (403, 1, "HTTP 403"),
    ("garbage", 3, "answered 200 with something that is not JSON"),  # each item once, never retried
])
def test_a_run_where_nothing_came_back_exits_non_zero_and_a_rerun_after_the_outage_finishes(
        tmp_path, stub, outage, sent, reason):
    server = stub(outage=outage)
    args = teach_args(coin_task_file(tmp_path, 3), server.base_url, tmp_path / "run", "--teacher-args", "concurrency=1")
    down = run_ftcot(*args)
    assert down.returncode == 2 and "Traceback" not in down.stderr, down.stderr
    last = down.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and reason in last and "0/3 chains complete" in last
    assert server.count() == sent
    assert json.loads((tmp_path / "run" / "run.json").read_text())["summary"]["failed"] == sent
    nothing = run_ftcot("teach", "export", tmp_path / "run")  # not an empty file that looks like a teacher
    assert nothing.returncode == 2 and nothing.stderr.count("\n") == 1 and "no complete chain" in nothing.stderr
    assert not (tmp_path / "run" / "export.jsonl").exists()

    server.outage = None
    back = run_ftcot(*args)
    assert back.returncode == 0, back.stderr
    assert "3/3 chains complete" in back.stdout
    assert server.count() == sent + 6  # every missing item asked again, nothing stored asked twice
    assert "wrote 3 records" in run_ftcot("teach", "export", tmp_path / "run").stdout


def test_credentials_in_the_base_url_reach_no_output_or_file_and_its_query_follows_the_path(tmp_path, stub):
    """user:password and ?token= in --base-url: sent (Basic auth, query), shown nowhere, even when echoed."""
    server = stub(outage=400, echo=True)  # every request refused with a message repeating its URL and auth
    password, token = "pa55-word-secret", "tok-secret-0123"
    base_url = server.base_url.replace("http://", f"http://alice:{password}@") + f"?token={token}&v=1"
    run_dir = tmp_path / "run"
    result = run_ftcot(*teach_args(coin_task_file(tmp_path, 2), base_url, run_dir))
    assert result.returncode == 2, result.stderr
    assert set(server.urls) == {f"/v1/completions?token={token}&v=1"}
    echoed = "Basic " + base64.b64encode(f"alice:{password}".encode()).decode()
    assert "stub outage" in result.stdout and "HTTP 400 from http://127.0.0.1:" in result.stdout
    for secret in (password, token, echoed.split()[1]):
        assert secret not in result.stdout + result.stderr
        for path in run_dir.rglob("*"):
            assert secret.encode() not in path.read_bytes(), f"{secret} leaked into {path.name}"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["base_url"] == server.base_url
    assert all(token not in line for line in record["summary"]["failure_examples"])


@pytest.mark.parametrize(("base_url", "env", "message"), [
    ("ftp://127.0.0.1:9/v1", {}, "the base URL must be http(s)://host/…, e.g. http://127.0.0.1:8000/v1, not "
                                 "'ftp://127.0.0.1:9/v1'"),
    ("127.0.0.1:9/v1", {}, "the base URL must be http(s)://host/…"),
    ("http://bob:hunter22@127.0.0.1:9/v1", {"FTCOT_TEST_KEY": FAKE_KEY}, "carries user:password"),
])
def test_a_base_url_that_cannot_work_is_a_one_line_error_before_anything_runs(tmp_path, base_url, env, message):
    args = teach_args(coin_task_file(tmp_path, 2), base_url, tmp_path / "run", "--teacher-args",
                      "api_key_env=FTCOT_TEST_KEY")
    result = run_ftcot(*args, env=cli_env(**env))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr and "hunter22" not in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["teach", "report", "export"])
def test_a_run_directory_whose_store_is_not_a_store_is_a_one_line_error_and_stays_as_it_was(tmp_path, command):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / STORE_FILE).write_bytes(b"not an sqlite file, but maybe someone's data")
    args = {"teach": ["teach", "--task", "coin_flip", "--split", "test", "--teacher", "replay:text-davinci-002",
                      "--out", run_dir],
            "report": ["teach", "report", run_dir], "export": ["teach", "export", run_dir]}[command]
    result = run_ftcot(*args)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "cannot open the teach store (file is not a database)" in result.stderr
    assert (run_dir / STORE_FILE).read_bytes() == b"not an sqlite file, but maybe someone's data"
    assert sorted(p.name for p in run_dir.iterdir()) == [STORE_FILE]


def test_a_full_disk_is_a_one_line_error_and_the_rerun_after_freeing_space_asks_for_nothing_twice(
        tmp_path, small_disk):
    disk = small_disk(200)  # KiB: fills up a few completions into the run (the empty store takes ~180)
    args = ["teach", "--task", "coin_flip", "--split", "test", "--teacher", "replay:text-davinci-002",
            "--out", disk / "run"]
    full = run_ftcot(*args)
    assert full.returncode == 2 and "Traceback" not in full.stderr, full.stderr[-2000:]
    last = full.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {disk / 'run' / STORE_FILE}: cannot store (database or disk is full)")
    with TeachStore.open_readonly(disk / "run") as store:
        kept = store.count()
    assert kept > 0

    resize(disk, 8 * 1024)
    freed = run_ftcot(*args)
    assert freed.returncode == 0, freed.stderr[-2000:]
    assert "150/150 chains complete" in freed.stdout and f"{kept} already stored" in freed.stdout


def test_a_run_record_that_cannot_be_written_is_a_one_line_error_and_the_store_is_kept(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "run.json").mkdir(parents=True)  # in the way: a folder where the record goes
    result = run_ftcot("teach", "--task", "coin_flip", "--split", "test", "--teacher", "replay:text-davinci-002",
                       "--out", run_dir)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {run_dir / 'run.json'}: cannot write (Is a directory); check the path and rerun. The completions "
        f"are stored: rerun the same command once it is fixed (it sends nothing already stored).")
    assert not list(run_dir.glob(".run.json.tmp*"))
    with TeachStore.open_readonly(run_dir) as store:
        assert store.count() == 300


@pytest.mark.parametrize("value", [None, ""])
def test_a_named_key_variable_that_is_unset_or_empty_is_refused_before_anything_is_sent(tmp_path, stub, value):
    """api_key_env names the variable, so a key was meant: without it the requests went out with none (a local
    server answered them; a remote one would refuse each)."""
    server = stub()
    env = cli_env() if value is None else cli_env(FTCOT_TEST_EMPTY_KEY=value)
    env.pop("FTCOT_TEST_EMPTY_KEY", None) if value is None else None
    args = teach_args(coin_task_file(tmp_path, 2), server.base_url, tmp_path / "run", "--teacher-args",
                      "api_key_env=FTCOT_TEST_EMPTY_KEY")
    result = run_ftcot(*args, env=env)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "FTCOT_TEST_EMPTY_KEY (api_key_env) is not set or empty" in result.stderr
    assert server.count() == 0
    # Without api_key_env, a local server needs no key: the same run goes through.
    plain = run_ftcot(*teach_args(coin_task_file(tmp_path, 2), server.base_url, tmp_path / "run2"))
    assert plain.returncode == 0, plain.stderr


def test_a_split_with_no_questions_or_questions_not_in_it_are_refused_before_a_run_exists(tmp_path, data_root):
    """Both taught nothing and exited 0 (the API's questions=[999999] too), so a script went on to curate."""
    import ftcot
    from ftcot.errors import FtcotError

    only_test = tmp_path / "only_test.jsonl"
    only_test.write_text("".join(json.dumps({"question": f"{i} + 1?", "answer": str(i + 1), "split": "test"}) + "\n"
                                 for i in range(4)))
    result = run_ftcot("teach", "--task", only_test, "--answer-type", "number", "--split", "train", "--teacher",
                       "hf:tiny-gpt2", "--out", tmp_path / "run")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "Task 'only_test' has no questions in its train split" in result.stderr
    assert not (tmp_path / "run").exists()
    with pytest.raises(FtcotError, match=r"questions 999999: not in coin_flip's train split"):
        ftcot.teach("coin_flip", "replay:text-davinci-002", tmp_path / "api", questions=[999999], data_dir=data_root)
    assert not (tmp_path / "api").exists()
