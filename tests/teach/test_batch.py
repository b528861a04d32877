"""``ftcot teach --batch``: the Batch API end to end, resuming, resubmitting, prices, secrets.

TEST DOUBLE: a provider's Batch API is a paid remote service, so every test
talks real HTTP over real sockets to :class:`tests.teach.batch_server.BatchServer`
(aiohttp on 127.0.0.1, implementing OpenAI's files + batches contract, with
expiry, per-line failures, failed batches and lost replies as knobs). The
stores are real SQLite files, the CLI runs as a real subprocess, and the kill
is a real SIGKILL of a process polling a batch.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from ftcot.errors import FtcotError
from ftcot.tasks import Task, load_task
from ftcot.teach.backends import make_teacher
from ftcot.teach.backends.openai_compat import build_chat_payload
from ftcot.teach.batch import BatchAPIError, BatchClient, open_batches, parse_output_line, teach_batch
from ftcot.teach.budget import reservation
from ftcot.teach.plan import plan_requests
from ftcot.teach.engine import teach
from ftcot.teach.plan import Plan, settings_of
from ftcot.teach.pricing import PriceTable
from ftcot.teach.records import CompletionRequest
from ftcot.teach.report import report_from_store
from ftcot.teach.store import TeachStore
from tests.cli import assert_one_line_error
from tests.conftest import PROJECT_ROOT
from tests.teach.batch_server import BatchServer
from tests.teach.test_cli_teach import cli_env, ftcot_command, run_ftcot

MODEL = "gpt-4o-mini"  # has a built-in price: 0.15 / 0.60 USD per 1M tokens, 0.075 / 0.30 at batch prices
SECRET = "sk-ftcot-batch-test-0123456789SECRET"
KEY_ENV = "FTCOT_TEST_BATCH_KEY"
FILES, CREATE, BATCH = "/v1/files", "/v1/batches", "/v1/batches/{id}"


@pytest.fixture
def server():
    made: list[BatchServer] = []

    def make(**options) -> BatchServer:
        made.append(BatchServer(**options))
        return made[-1]

    yield make
    for s in made:
        s.close()


def coins(tmp_path: Path, data_root: Path, n: int) -> Task:
    """A user's task file of the first ``n`` coin-flip test questions."""
    path = tmp_path / "coins.jsonl"
    questions = load_task("coin_flip", data_root).split("test")[:n]
    path.write_text("".join(json.dumps({"question": s.question, "answer": s.answer, "split": "test"}) + "\n"
                            for s in questions))
    return load_task(str(path), data_root, "yes/no")


def run(server: BatchServer, run_dir: Path, task: Task, *, samples: int = 1, chat: bool = False,
        max_retries: int = 6, **options):
    teacher = make_teacher(f"openai:{MODEL}", base_url=server.base_url, chat=chat)
    client = BatchClient(server.base_url, None, backoff_base_s=0.01, max_retries=max_retries)
    with TeachStore.open(run_dir) as store:
        try:
            return teach_batch(task, "test", teacher, "zs_cot", samples, 0.7 if samples > 1 else 0.0, store=store,
                               poll_interval_s=0.01, client=client, **options)
        finally:
            client.close()


def stored(run_dir: Path) -> list:
    with TeachStore.open_readonly(run_dir) as store:
        return list(store.completions())


def complete_chains(run_dir: Path) -> tuple[int, int]:
    with TeachStore.open_readonly(run_dir) as store:
        chains = list(Plan(settings_of(store)).chains(store))
    return sum(c.complete for c in chains), len(chains)


def stage_of(server: BatchServer, batch_number: int) -> str:
    """Which stage a created batch asked for: stage-2 prompts end with the answer trigger."""
    batch_id = sorted(server.batches)[batch_number]
    prompts = [line["body"]["prompt"] for line in server.input_lines(batch_id)]
    return "answer" if all(p.rstrip().endswith(" is") for p in prompts) else "reasoning"


# --- the whole flow ---------------------------------------------------------------------------------


def test_two_stage_zero_shot_cot_is_two_batches_stored_as_a_normal_run_stores_them(tmp_path, data_root, server,
                                                                                     stub):
    batches, task = server(), coins(tmp_path, data_root, 4)
    summary = run(batches, tmp_path / "run", task, samples=2)

    # One batch per stage: the 4 questions with n=2 (the prompt paid once), then the 8 answers.
    assert batches.count("POST", CREATE) == 2 and [len(ids) for ids in batches.created] == [4, 8]
    assert [stage_of(batches, 0), stage_of(batches, 1)] == ["reasoning", "answer"]
    assert (summary.complete_chains, summary.chains, summary.new, summary.failed) == (8, 8, 16, 0)
    assert complete_chains(tmp_path / "run") == (8, 8)
    # Each line is the body the openai backend posts, keyed by the store key of its first completion.
    rows = {row.key: row for row in stored(tmp_path / "run")}
    first_id = batches.created[0][0]
    line = next(x for x in batches.input_lines(sorted(batches.batches)[0]) if x["custom_id"] == first_id)
    assert line["url"] == "/v1/completions" and line["method"] == "POST"
    assert rows[first_id].stage == "reasoning" and rows[first_id].sample_number == 0
    assert line["body"] == {"model": MODEL, "prompt": rows[first_id].prompt, "max_tokens": 128,
                            "temperature": 0.7, "n": 2, "seed": 0}
    # Usage as the provider reported it: the prompt billed on the first choice, completion tokens split.
    assert rows[first_id].prompt_tokens == len(rows[first_id].prompt) // 4 and rows[first_id].completion_tokens == 5
    prompt_tokens = sum(r.prompt_tokens for r in rows.values())
    completion_tokens = sum(r.completion_tokens for r in rows.values())
    assert (summary.prompt_tokens, summary.completion_tokens) == (prompt_tokens, completion_tokens)
    assert summary.cost_usd == pytest.approx((prompt_tokens * 0.075 + completion_tokens * 0.30) / 1e6)
    # The stub's texts go through the two-stage answer extraction like any teacher's.
    with TeachStore.open_readonly(tmp_path / "run") as store:
        report = report_from_store(store, task.spec)
        assert report.scored == 8
        # The report prices the run as it was paid: at the batch price, half the list price (0.15, 0.60).
        assert report.cost_usd == pytest.approx(summary.cost_usd)

    # A rerun sends nothing; a normal (non-batch) run on the same store finds everything stored.
    before = list(batches.requests)
    again = run(batches, tmp_path / "run", task, samples=2)
    assert batches.requests == before and (again.new, again.requests, again.batches) == (0, 0, [])
    normal = stub(honour_n=True)
    teacher = make_teacher(f"openai:{MODEL}", base_url=normal.base_url)
    with TeachStore.open(tmp_path / "run") as store:
        summary = teach(task, "test", teacher, "zs_cot", 2, 0.7, store=store)
    assert normal.count() == 0 and summary.complete_chains == 8


def test_a_batch_run_sends_only_what_a_normal_run_left(tmp_path, data_root, server, stub):
    task = coins(tmp_path, data_root, 4)
    normal = stub()
    teacher = make_teacher(f"openai:{MODEL}", base_url=normal.base_url)
    with TeachStore.open(tmp_path / "run") as store:
        teach(task, "test", teacher, "zs_cot", store=store, only=[s.index for s in task.split("test")[:1]])
    batches = server()
    summary = run(batches, tmp_path / "run", task)
    assert [len(ids) for ids in batches.created] == [3, 3] and summary.cached == 2  # its rationale and answer
    assert complete_chains(tmp_path / "run") == (4, 4) and len(stored(tmp_path / "run")) == 8


def test_chat_teachers_batch_chat_completions(tmp_path, data_root, server):
    batches, task = server(), coins(tmp_path, data_root, 2)
    run(batches, tmp_path / "run", task, chat=True)
    lines = batches.input_lines(sorted(batches.batches)[0])
    request = stored(tmp_path / "run")
    assert {line["url"] for line in lines} == {"/v1/chat/completions"}
    assert batches.batches[sorted(batches.batches)[0]]["endpoint"] == "/v1/chat/completions"
    first = next(r for r in request if r.key == lines[0]["custom_id"])
    assert lines[0]["body"] == build_chat_payload(MODEL, CompletionRequest(first.prompt, 128))
    assert complete_chains(tmp_path / "run") == (2, 2)


# --- failures: what is resubmitted, what is not --------------------------------------------------------


@pytest.mark.parametrize("errors_in_output", [False, True])
def test_failed_lines_are_resubmitted_alone(tmp_path, data_root, server, errors_in_output):
    batches, task = server(fail_lines=2, errors_in_output=errors_in_output), coins(tmp_path, data_root, 4)
    summary = run(batches, tmp_path / "run", task)
    first, again, answers = batches.created
    assert len(first) == 4 and again == first[:2] and len(answers) == 4  # only the two lines that got a 500
    assert (summary.resubmitted, summary.failed, summary.complete_chains) == (2, 0, 4)
    assert sorted(batches.ran) == sorted(first + first[:2] + answers)  # nothing that succeeded ran twice
    with TeachStore.open_readonly(tmp_path / "run") as store:
        failures = store.failures()
    assert {f.key for f in failures} == set(first[:2]) and all("HTTP 500" in f.message for f in failures)


def test_an_expired_batch_keeps_its_output_and_resubmits_only_the_rest(tmp_path, data_root, server):
    batches, task = server(expire_after=3), coins(tmp_path, data_root, 5)
    summary = run(batches, tmp_path / "run", task)
    first = batches.created[0]
    assert batches.batches[sorted(batches.batches)[0]]["status"] == "expired"
    assert batches.created[1] == first[3:]  # the three that ran are stored; the two left are sent again
    assert sorted(batches.ran[:5]) == sorted(first) and len(batches.ran) == 5 + 5
    assert (summary.resubmitted, summary.complete_chains) == (2, 5)
    with TeachStore.open_readonly(tmp_path / "run") as store:
        assert {f.message for f in store.failures()} == {
            "batch_expired: This request could not be executed before the completion window expired."}


def test_a_refused_line_is_kept_failed_by_this_run_and_asked_again_by_the_next(tmp_path, data_root, server):
    task = coins(tmp_path, data_root, 4)
    refused = task.split("test")[2]
    batches = server(refuse_marker=refused.question)
    summary = run(batches, tmp_path / "run", task)
    assert [len(ids) for ids in batches.created] == [4, 3]  # no resubmission of a 400, no answer without a rationale
    assert (summary.failed, summary.complete_chains, summary.new) == (1, 3, 6)
    assert "HTTP 400: this prompt is refused (stub)" in summary.failure_examples[0]
    assert "1 items failed" in " ".join(summary.lines())

    batches.refuse_marker = None
    summary = run(batches, tmp_path / "run", task)
    assert [len(ids) for ids in batches.created[2:]] == [1, 1] and summary.complete_chains == 4


def test_a_failed_batch_is_reported_with_the_servers_reason(tmp_path, data_root, server):
    batches, task = server(fail_next_batch="The model 'gpt-4o-mini' is not available for batches."), \
        coins(tmp_path, data_root, 3)
    summary = run(batches, tmp_path / "run", task)
    assert len(batches.created) == 1 and batches.ran == []  # not resubmitted by this run
    assert (summary.failed, summary.new, summary.complete_chains) == (3, 0, 0)
    assert "is not available for batches" in summary.failure_line() and "\n" not in summary.failure_line()
    summary = run(batches, tmp_path / "run", task)  # fixed on the server: the next run asks again
    assert summary.complete_chains == 3 and len(batches.created) == 3


def test_a_lost_create_reply_adopts_the_batch_instead_of_creating_another(tmp_path, data_root, server):
    batches, task = server(lose_create_replies=1), coins(tmp_path, data_root, 2)
    summary = run(batches, tmp_path / "run", task)
    assert batches.count("POST", CREATE) == 2 and len(batches.batches) == 2  # one per stage, none twice
    assert batches.count("GET", "/v1/batches") >= 1 and summary.complete_chains == 2


def test_a_run_stopped_between_create_and_its_reply_finds_the_batch_on_the_next_run(tmp_path, data_root, server):
    batches, task = server(lose_create_replies=1), coins(tmp_path, data_root, 2)
    with pytest.raises(BatchAPIError) as info:
        run(batches, tmp_path / "run", task, max_retries=0)
    assert "HTTP 500" in str(info.value) and "Rerun the same command" in str(info.value)
    [record] = open_batches(tmp_path / "run")
    assert record.create_sent and record.batch_id is None and record.input_file_id
    summary = run(batches, tmp_path / "run", task)
    assert len(batches.batches) == 2 and summary.resumed_batches == sorted(batches.batches)[:1]
    assert summary.complete_chains == 2 and open_batches(tmp_path / "run") == []


def test_results_deleted_on_the_server_are_asked_for_again(tmp_path, data_root, server):
    batches, task = server(lose_create_replies=1), coins(tmp_path, data_root, 2)
    with pytest.raises(BatchAPIError):
        run(batches, tmp_path / "run", task, max_retries=0)
    [batch_id] = batches.batches
    with httpx.Client() as http:  # the batch runs to its end while no ftcot is polling
        while http.get(f"{batches.base_url}/batches/{batch_id}").json()["status"] != "completed":
            pass
    del batches.contents[batches.batches[batch_id]["output_file_id"]]  # then its output file is deleted
    summary = run(batches, tmp_path / "run", task)
    assert summary.resumed_batches == [batch_id] and summary.complete_chains == 2
    assert batches.created[1] == batches.created[0] and len(batches.created) == 3  # sent again, then the answers


def test_an_open_batch_is_collected_only_from_its_server(tmp_path, data_root, server):
    first, task = server(lose_create_replies=1), coins(tmp_path, data_root, 2)
    with pytest.raises(BatchAPIError):
        run(first, tmp_path / "run", task, max_retries=0)
    other = server()
    with pytest.raises(FtcotError) as info:
        run(other, tmp_path / "run", task)
    assert f"at {first.base_url}, not {other.base_url}" in str(info.value)
    assert f"rerun with --base-url {first.base_url}" in str(info.value)
    assert other.requests == []


def test_output_lines_are_read_whatever_file_they_are_in():
    ok = {"custom_id": "k", "response": {"status_code": 200, "request_id": "r",
                                         "body": {"choices": [{"text": " yes.", "finish_reason": "stop"}],
                                                  "usage": {"prompt_tokens": 3, "completion_tokens": 2}}}, "error": None}
    result = parse_output_line(ok, chat=False)
    assert result.completions[0].text == " yes." and result.completions[0].prompt_tokens == 3
    limited = parse_output_line({"custom_id": "k", "response": {"status_code": 429, "body": {
        "error": {"message": "Rate limit"}}}}, chat=False)
    assert (limited.retryable, limited.status, limited.message) == (True, 429, "HTTP 429: Rate limit")
    refused = parse_output_line({"custom_id": "k", "response": {"status_code": 400, "body": {
        "error": {"message": "bad"}}}}, chat=False)
    assert not refused.retryable
    expired = parse_output_line({"custom_id": "k", "response": None,
                                 "error": {"code": "batch_expired", "message": "too late"}}, chat=False)
    assert expired.retryable and expired.message == "batch_expired: too late"


# --- kill -9 while polling ---------------------------------------------------------------------------------


def test_a_run_killed_while_polling_resumes_its_batches_and_creates_none_again(tmp_path, data_root, server):
    batches = server(api_key=SECRET, hold=True)
    task_file = tmp_path / "coins.jsonl"
    coins(tmp_path, data_root, 5)
    run_dir = tmp_path / "run"
    args = ["teach", "--task", task_file, "--answer-type", "yes/no", "--split", "test", "--teacher",
            f"openai:{MODEL}", "--teacher-args", f"base_url={batches.base_url}", "--teacher-args", f"api_key_env={KEY_ENV}", "--batch",
            "--teacher-args", "poll_interval_s=0.05", "--out", run_dir]
    env = cli_env(**{KEY_ENV: SECRET})
    process = subprocess.Popen(ftcot_command(*args), env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and batches.count("GET", BATCH) < 3:
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
        assert batches.count("GET", BATCH) >= 3, "the batch was never polled"
    finally:
        process.send_signal(signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL and SECRET not in stdout + stderr
    [record] = open_batches(run_dir)  # recorded before the first poll
    assert record.batch_id == sorted(batches.batches)[0] and record.stage == "reasoning"

    # A normal run would pay again for what the batch is doing: refused.
    normal = [a for a in args if a != "--batch"]
    del normal[normal.index("poll_interval_s=0.05") - 1:normal.index("poll_interval_s=0.05") + 1]
    refused = run_ftcot(*normal, env=env)
    assert_one_line_error(refused, "1 open teacher batch(es)", record.batch_id, "rerun with --batch")

    batches.hold = False
    result = run_ftcot(*args, env=env)
    assert result.returncode == 0, result.stderr
    assert batches.count("POST", CREATE) == 2  # one per stage, over both runs
    assert [stage_of(batches, 0), stage_of(batches, 1)] == ["reasoning", "answer"]
    assert len(batches.ran) == len(set(batches.ran)) == 10  # every request run (billed) once
    rows = stored(run_dir)
    assert len(rows) == len({r.key for r in rows}) == 10 and complete_chains(run_dir) == (5, 5)
    assert "5/5 chains complete" in result.stdout and "1 resumed from an earlier run" in result.stdout
    assert "10 new completions, 0 already stored" in result.stdout
    assert "created batch" in result.stderr and "resuming batch" in result.stderr
    assert open_batches(run_dir) == []
    for text in (result.stdout, result.stderr):
        assert SECRET not in text
    for file in run_dir.rglob("*"):
        assert SECRET.encode() not in file.read_bytes(), file


# --- prices: --dry-run and --max-cost at batch prices ----------------------------------------------------------


def _estimate(result: subprocess.CompletedProcess) -> float:
    assert result.returncode == 0, result.stderr
    return float(re.search(r"cost ≈ \$([0-9]+\.[0-9]+)", result.stdout).group(1))


def test_dry_run_and_max_cost_use_batch_prices(tmp_path, data_root, server):
    batches = server()
    task = coins(tmp_path, data_root, 4)
    prices = tmp_path / "prices.json"  # list prices high enough for the 4-decimal estimate to show the ratio
    prices.write_text(json.dumps({MODEL: {"prompt": 1000, "completion": 1000}}))
    base = ["teach", "--task", tmp_path / "coins.jsonl", "--answer-type", "yes/no", "--split", "test",
            "--teacher", f"openai:{MODEL}", "--teacher-args", f"base_url={batches.base_url}", "--out", tmp_path / "run", "--dry-run",
            "--teacher-args", f"prices={prices}"]
    listed, batched = _estimate(run_ftcot(*base)), _estimate(run_ftcot(*base, "--batch"))
    assert batched == pytest.approx(listed / 2, rel=1e-3) and batched > 0.5
    assert batches.requests == [] and not (tmp_path / "run").exists()

    # A cap that fits two stage-1 requests at batch prices (one at list prices): two are sent, no more.
    items = plan_requests(Plan(settings_for(task)), task.split("test"), None, True).first
    listed, batch = PriceTable().price_for(MODEL), PriceTable().batch_prices().price_for(MODEL)
    cap = reservation(items[0].request, batch) + reservation(items[1].request, batch) \
        + reservation(items[2].request, batch) / 2
    assert reservation(items[0].request, listed) + reservation(items[1].request, listed) > cap
    summary = run(batches, tmp_path / "run", task, max_cost=cap)
    assert [len(ids) for ids in batches.created] == [2]
    assert summary.stopped_by_cost_cap and summary.not_sent == 2 + 2  # two rationales, then two answers
    assert 0 < summary.cost_usd <= cap
    assert "stopped at the --max-cost cap" in " ".join(summary.lines())


def settings_for(task: Task):
    from ftcot.teach.engine import resolve_settings

    teacher = make_teacher(f"openai:{MODEL}", base_url="http://127.0.0.1:1/v1")
    return resolve_settings(task, "test", teacher, "zs_cot", 1, 0.0, None)[0]


# --- secrets and bad input ------------------------------------------------------------------------------------------


def test_a_refused_key_is_one_line_without_the_key(tmp_path, data_root, server):
    batches = server(api_key="sk-the-right-one")
    coins(tmp_path, data_root, 2)
    result = run_ftcot("teach", "--task", tmp_path / "coins.jsonl", "--answer-type", "yes/no", "--split", "test",
                       "--teacher", f"openai:{MODEL}", "--teacher-args", f"base_url={batches.base_url}", "--teacher-args", f"api_key_env={KEY_ENV}",
                       "--batch", "--teacher-args", "poll_interval_s=0.01", "--out", tmp_path / "run", env=cli_env(**{KEY_ENV: SECRET}))
    assert_one_line_error(result, "HTTP 401", "check the API key")
    assert SECRET not in result.stdout + result.stderr and "***" in result.stderr  # the server echoed it
    assert batches.count("POST", CREATE) == 0


def test_a_teacher_without_a_batch_api_is_refused_before_anything_is_written(tmp_path):
    result = run_ftcot("teach", "--task", "coin_flip", "--split", "test", "--teacher", "replay:text-davinci-002",
                       "--batch", "--out", tmp_path / "run")
    assert_one_line_error(result, "--batch (batch: true) needs an openai: teacher", "replay:text-davinci-002")
    assert not (tmp_path / "run").exists()


# --- ftcot run: batch: true -----------------------------------------------------------------------------------------


def test_a_batch_teacher_in_an_experiment_teaches_through_batches(tmp_path, data_root, server):
    from ftcot.experiment.config import load_config
    from ftcot.experiment.runner import DONE_FILE, Experiment, estimate_teach

    batches = server()
    coins(tmp_path, data_root, 3)
    config = {"name": "batch", "tasks": [{"spec": str(tmp_path / "coins.jsonl"), "answer_type": "yes/no"}],
              "teachers": [{"spec": f"openai:{MODEL}", "base_url": batches.base_url, "batch": True,
                            "poll_interval_s": 0.01}],
              "methods": ["zs"], "students": ["tiny-gpt2"]}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    experiment = Experiment(load_config(path), tmp_path / "out", data_root)
    [stage] = experiment.plan.of_kind("teach")
    estimate = estimate_teach(experiment, stage)
    assert estimate.estimated_requests == 6 and batches.requests == []
    outcome = experiment._run_stage(stage, 1, 1)
    assert outcome.status == "ran" and "3/3 chains" in outcome.note and "2 batches" in outcome.note
    assert batches.count("POST", CREATE) == 2 and (experiment.stage_dir(stage) / DONE_FILE).is_file()

    # The same teacher without batch: true has the same stage (same completions): it is done.
    config["teachers"][0]["batch"] = False
    path.write_text(yaml.safe_dump(config))
    [same] = Experiment(load_config(path), tmp_path / "out", data_root).plan.of_kind("teach")
    assert same.key == stage.key


def test_the_python_api_teaches_through_batches(tmp_path, data_root, server):
    import ftcot

    batches = server()
    coins(tmp_path, data_root, 3)
    result = ftcot.teach(str(tmp_path / "coins.jsonl"), f"openai:{MODEL}", tmp_path / "run", split="test",
                         answer_type="yes/no", base_url=batches.base_url, batch=True, poll_interval_s=0.01,
                         data_dir=data_root)
    assert (result.complete_chains, result.new_completions) == (3, 6) and batches.count("POST", CREATE) == 2
    assert result.summary["batches"] == sorted(batches.batches)


# --- servers that misbehave, and runs that stop -------------------------------------------------------------------


def _cli_args(batches: BatchServer, tmp_path: Path, data_root: Path, *extra: str) -> list:
    coins(tmp_path, data_root, 4)
    return ["teach", "--task", tmp_path / "coins.jsonl", "--answer-type", "yes/no", "--split", "test", "--teacher",
            f"openai:{MODEL}", "--teacher-args", f"base_url={batches.base_url},api_key_env={KEY_ENV}", "--batch",
            "--teacher-args", "poll_interval_s=0.05", *extra, "--out", tmp_path / "run"]


@pytest.mark.parametrize("counts", [["completed", 3], {"completed": "lots", "failed": None},
                                    {"completed": [1], "failed": {"n": 2}}, "3 of 4", {"completed": 1e300}])
def test_request_counts_of_any_shape_do_not_stop_the_run(tmp_path, data_root, server, counts):
    batches = server(counts_as=counts)
    summary = run(batches, tmp_path / "run", coins(tmp_path, data_root, 3))
    assert summary.complete_chains == summary.chains == 3


def test_a_batch_that_never_finishes_is_waited_for_until_the_timeout_then_collected_by_a_rerun(
        tmp_path, data_root, server):
    batches = server(api_key=SECRET, hold=True)
    env = cli_env(**{KEY_ENV: SECRET})
    args = _cli_args(batches, tmp_path, data_root, "--teacher-args", "batch_timeout_s=1")
    started = time.monotonic()
    stopped = run_ftcot(*args, env=env)
    assert time.monotonic() - started < 60
    [batch_id] = sorted(batches.batches)
    # Not a success: the last line says what is still running and how to collect it.
    assert stopped.returncode == 2 and "Traceback" not in stopped.stderr
    last = stopped.stderr.strip().splitlines()[-1]
    for fragment in ("batch_timeout_s=1 passed with 1 batch(es) still running", batch_id,
                     "rerun the same command to collect them"):
        assert fragment in last, last
    [record] = open_batches(tmp_path / "run")
    assert record.batch_id == batch_id

    batches.hold = False
    done = run_ftcot(*args, env=env)
    assert done.returncode == 0, done.stderr
    assert "4/4 chains complete" in done.stdout and "1 resumed from an earlier run" in done.stdout
    assert batches.count("POST", CREATE) == 2 and len(batches.ran) == len(set(batches.ran)) == 8


def test_a_server_that_forgets_every_batch_is_a_failed_run_not_a_silent_one(tmp_path, data_root, server):
    batches = server(api_key=SECRET, forget_batches=True)
    result = run_ftcot(*_cli_args(batches, tmp_path, data_root), env=cli_env(**{KEY_ENV: SECRET}))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "0/4 chains complete" in last and "unknown to the server" in last, last
    assert SECRET not in result.stdout + result.stderr


def test_sigterm_while_polling_exits_143_and_the_batches_are_collected_by_the_rerun(tmp_path, data_root, server):
    batches = server(api_key=SECRET, hold=True)
    env = cli_env(**{KEY_ENV: SECRET})
    args = _cli_args(batches, tmp_path, data_root)
    process = subprocess.Popen(ftcot_command(*args), env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while batches.count("GET", BATCH) < 2:
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr and "rerun the same command to collect them" in stdout
    batches.hold = False
    done = run_ftcot(*args, env=env)
    assert done.returncode == 0 and "4/4 chains complete" in done.stdout, done.stderr
    assert batches.count("POST", CREATE) == 2
