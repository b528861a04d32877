"""Identical requests are paid once: in flight (coalesced), once stored (never asked again), and across a kill -9.

MultiArith has questions whose text is the same (12 among its 420 training
questions). Against a live sampling teacher the request for sample m of either
question is the same request (same prompt, settings and seed), so it is one
store key: one HTTP request must fill it for both questions. The teacher is a
real HTTP server on 127.0.0.1 (tests/teach/stub_openai.py) that counts what it
receives.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import time

import pytest

from ftcot.errors import FtcotError
from ftcot.jsonl import read_jsonl
from ftcot.tasks import Task, load_task
from ftcot.teach.backends.openai_compat import OpenAICompatTeacher
from ftcot.teach.engine import teach
from ftcot.teach.export import export
from ftcot.teach.store import STORE_FILE, TeachStore
from tests.conftest import PROJECT_ROOT
from tests.teach.test_cli_teach import cli_env, coin_task_file, ftcot_command, run_ftcot, sent_body_hash


def twins_task(data_root, singles: int = 4) -> tuple[Task, list[tuple[int, int]]]:
    """MultiArith training questions: every pair with the same text, plus a few others."""
    full = load_task("multiarith", data_root)
    by_text = collections.defaultdict(list)
    for i in full.split_indices("train"):
        by_text[full.samples[i].question].append(i)
    pairs = [tuple(v[:2]) for v in by_text.values() if len(v) > 1]
    others = [v[0] for v in by_text.values() if len(v) == 1][:singles]
    indices = sorted([i for pair in pairs for i in pair] + others)
    task = Task(full.spec, {i: full.samples[i] for i in indices}, {"default": {"train": indices, "test": []}},
                data_root)
    return task, pairs


def sent_twice(server) -> int:
    per_body = collections.Counter(json.dumps(b, sort_keys=True) for b in server.requests())
    return sum(c - 1 for c in per_body.values())


@pytest.mark.parametrize("supports_n", [False, True], ids=["one-request-per-sample", "n-per-request"])
def test_questions_with_the_same_text_share_each_request_in_flight(tmp_path, data_root, stub, supports_n):
    task, pairs = twins_task(data_root)
    assert len(pairs) >= 6  # the data has them: otherwise this test tests nothing
    server = stub(delay_s=0.05, honour_n=supports_n)  # slow enough that both twins are in flight together
    teacher = OpenAICompatTeacher("stub", base_url=server.base_url, supports_n=supports_n, max_retries=0)
    questions = len(task.samples)
    with TeachStore.open(tmp_path) as store:
        summary = teach(task, "train", teacher, "zs_cot", samples=4, temperature=0.7, concurrency=16, store=store)
        assert summary.complete_chains == summary.chains == 4 * questions
        assert sent_twice(server) == 0
        distinct = questions - len(pairs)  # distinct texts
        stage1 = [b for b in server.requests() if b["max_tokens"] == 128]
        assert sum(b.get("n", 1) for b in stage1) == 4 * distinct
        assert summary.requests == server.count()
        assert summary.new == store.count()  # every completion received is stored once, none ignored
        export(store, tmp_path / "out.jsonl")
    records = collections.defaultdict(list)
    for _, record in read_jsonl(tmp_path / "out.jsonl"):
        records[record["sample_index"]].append(record["reasoning_completion"])
    for a, b in pairs:  # both twins have their D chains: the same paid rationales
        assert len(records[a]) == 4 and records[a] == records[b]


def test_a_stored_request_is_never_asked_again_for_another_question(tmp_path, data_root, stub):
    task, pairs = twins_task(data_root)
    server = stub()
    teacher = OpenAICompatTeacher("stub", base_url=server.base_url, supports_n=False, max_retries=0)
    firsts = {a for a, _ in pairs}
    with TeachStore.open(tmp_path) as store:
        teach(task, "train", teacher, "zs_cot", samples=2, temperature=0.7, store=store, only=firsts)
        before = server.count()
        assert before == 4 * len(firsts)  # 2 rationales + 2 answers per question
        twins = teach(task, "train", teacher, "zs_cot", samples=2, temperature=0.7, store=store,
                      only={b for _, b in pairs})
        assert server.count() == before and twins.requests == 0
        assert twins.complete_chains == 2 * len(pairs)


def test_a_dry_run_counts_a_shared_request_once(tmp_path, data_root, stub):
    task, pairs = twins_task(data_root)
    server = stub()
    teacher = OpenAICompatTeacher("stub", base_url=server.base_url, supports_n=False, max_retries=0)
    planned = teach(task, "train", teacher, "zs_cot", samples=2, temperature=0.7, dry_run=True)
    assert server.count() == 0
    with TeachStore.open(tmp_path) as store:
        done = teach(task, "train", teacher, "zs_cot", samples=2, temperature=0.7, store=store)
    assert planned.estimated_requests == done.requests == server.count()
    assert planned.estimated_requests == 2 * 2 * (len(task.samples) - len(pairs))


def test_a_kill_at_concurrency_8_loses_at_most_8_replies_and_nothing_stored_is_asked_again(tmp_path, stub, proxy):
    """Group commits under SIGKILL: a reply keeps its request's slot until committed, so at most
    --concurrency paid replies are lost, and a rerun asks for exactly what is missing."""
    front = proxy(stub(delay_s=0.3).base_url)
    run_dir, questions = tmp_path / "run", 40
    args = ["teach", "--task", coin_task_file(tmp_path, questions), "--answer-type", "yes/no", "--split", "test",
            "--method", "zs", "--teacher", "openai:gemma", "--teacher-args", f"base_url={front.base_url}", "--teacher-args", "concurrency=8",
            "--out", run_dir]
    process = subprocess.Popen(ftcot_command(*args), env=cli_env(), cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline, stored = time.monotonic() + 120, 0
    while time.monotonic() < deadline and process.poll() is None and stored < 12:
        if (run_dir / STORE_FILE).is_file():
            try:
                with TeachStore.open_readonly(run_dir) as store:
                    stored = store.count()
            except FtcotError:
                stored = 0
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    with TeachStore.open_readonly(run_dir) as store:
        before_kill = list(store.completions())
    sent_before = front.count("/completions")
    assert 12 <= len(before_kill) < questions
    assert sent_before - len(before_kill) <= 8  # paid for but not stored: at most the requests in flight

    assert run_ftcot(*args).returncode == 0
    with TeachStore.open_readonly(run_dir) as store:
        assert store.count() == questions
    per_body = front.per_body()
    assert all(per_body[sent_body_hash(row)] == 1 for row in before_kill)  # nothing stored was asked again (model "gemma")
    assert front.count("/completions") - sent_before == questions - len(before_kill)
