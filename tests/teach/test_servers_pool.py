"""One teacher, several servers: least-loaded choice, a per-server limit, and failover when one dies.

The servers are real processes on 127.0.0.1 (tests/teach/pool_server.py), each
serving one request at a time like llama.cpp, killed with SIGKILL mid-run; the
store is a real SQLite file. What each server received and answered is read
from its own log, which survives its death.
"""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ftcot.errors import FtcotError
from ftcot.tasks import Task, load_task
from ftcot.teach.backends import make_teacher, teacher_secrets
from ftcot.teach.backends.openai_compat import OpenAICompatTeacher
from ftcot.teach.engine import teach
from ftcot.teach.store import TeachStore
from tests.conftest import PROJECT_ROOT
from tests.teach.servers import free_port


class PoolServer:
    def __init__(self, log: Path, delay: float, capacity: int = 1) -> None:
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.teach.pool_server", "--log", str(log), "--delay", str(delay),
             "--capacity", str(capacity)], stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)
        assert self.process.stdout is not None
        self.base_url = f"http://127.0.0.1:{int(self.process.stdout.readline())}/v1"

    def lines(self) -> list[tuple[str, str]]:
        return [tuple(line.split()) for line in self.log.read_text().splitlines() if line.strip()]

    def answered(self) -> list[str]:
        return [digest for kind, digest in self.lines() if kind == "out"]

    def in_flight(self) -> set[str]:
        counts = collections.Counter()
        for kind, digest in self.lines():
            counts[digest] += 1 if kind == "in" else -1
        return {digest for digest, count in counts.items() if count > 0}

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.kill()


@pytest.fixture
def pool(tmp_path):
    started: list[PoolServer] = []

    def make(count: int, delay: float) -> list[PoolServer]:
        servers = [PoolServer(tmp_path / f"server{i}.log", delay) for i in range(count)]
        started.extend(servers)
        return servers

    yield make
    for server in started:
        server.stop()


def coin_task(data_root, n: int) -> Task:
    full = load_task("coin_flip", data_root)
    indices = full.split_indices("test")[:n]
    return Task(full.spec, {i: full.samples[i] for i in indices}, {"default": {"train": [], "test": indices}},
                data_root)


def test_a_server_killed_mid_run_hands_its_requests_to_the_others(tmp_path, data_root, pool):
    servers = pool(3, delay=0.1)
    teacher = OpenAICompatTeacher("stub", base_url=[s.base_url for s in servers], supports_n=False, max_retries=0,
                                  server_concurrency=1)
    victim = servers[1]
    killed: list[str] = []

    async def kill_when_busy() -> None:
        while not (len(victim.answered()) >= 2 and victim.in_flight()):
            await asyncio.sleep(0.01)
        killed.extend(victim.in_flight())
        victim.kill()

    original = teacher.complete
    watcher = []

    async def complete(request):  # starts the killer inside the run's own event loop
        if not watcher:
            watcher.append(asyncio.ensure_future(kill_when_busy()))
        return await original(request)

    teacher.complete = complete
    task = coin_task(data_root, 20)
    with TeachStore.open(tmp_path / "run") as store:
        summary = teach(task, "test", teacher, "zs_cot", concurrency=3, store=store)
        assert victim.process.returncode == -signal.SIGKILL and len(killed) == 1
        # Every item completed, each stored once, each logical request sent once by the engine.
        assert (summary.complete_chains, summary.failed) == (20, 0)
        assert summary.requests == summary.new == store.count() == 40
    answered = [digest for s in servers for digest in s.answered()]
    assert len(answered) == len(set(answered)) == 40  # no reply paid twice
    survivors = servers[0].answered() + servers[2].answered()
    assert killed[0] in survivors  # the request the dead server held was answered by another one
    counts = teacher.server_counts()
    assert sum(counts.values()) == 41  # 40 requests, one of them started twice (moved)


def test_requests_go_to_the_least_loaded_server_within_its_limit(tmp_path, data_root, pool):
    servers = pool(3, delay=0.05)
    teacher = OpenAICompatTeacher("stub", base_url=[s.base_url for s in servers], supports_n=False, max_retries=0,
                                  server_concurrency=1)
    with TeachStore.open(tmp_path / "run") as store:
        summary = teach(coin_task(data_root, 30), "test", teacher, "zs_cot", concurrency=16, store=store)
    assert summary.complete_chains == 30
    served = [len(s.answered()) for s in servers]
    assert sum(served) == 60
    # Each server took one request at a time (its limit), so the three shared the work evenly.
    assert min(served) >= 15, served
    for server in servers:  # never more than one in flight at a server
        depth = peak = 0
        for kind, _ in server.lines():
            depth += 1 if kind == "in" else -1
            peak = max(peak, depth)
        assert peak == 1


def test_a_server_down_from_the_start_is_skipped(tmp_path, data_root, pool):
    (alive,) = pool(1, delay=0.0)
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    teacher = OpenAICompatTeacher("stub", base_url=[dead, alive.base_url], supports_n=False, max_retries=0,
                                  server_down_s=60)
    with TeachStore.open(tmp_path / "run") as store:
        summary = teach(coin_task(data_root, 8), "test", teacher, "zs_cot", concurrency=4, store=store)
    assert (summary.complete_chains, summary.failed) == (8, 0)
    counts = teacher.server_counts()
    # Tried by the first requests (before any had failed), then left alone for server_down_s;
    # what it could not take went to the live one, where all 16 were answered once.
    assert 1 <= counts[dead] <= 4 and counts[alive.base_url] == 16 == len(set(alive.answered()))


def test_when_every_server_is_down_the_items_fail_and_the_run_goes_on(tmp_path, data_root):
    urls = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]
    teacher = OpenAICompatTeacher("stub", base_url=urls, supports_n=False, max_retries=1, backoff_base_s=0.01)
    with TeachStore.open(tmp_path / "run") as store:
        summary = teach(coin_task(data_root, 3), "test", teacher, "zs_cot", concurrency=3, store=store)
        assert (summary.complete_chains, summary.failed, summary.new) == (0, 3, 0)
        assert all("connection failed" in f.message for f in store.failures())


def test_several_base_urls_through_make_teacher_and_their_secrets():
    teacher = make_teacher("openai:stub", base_url=["http://127.0.0.1:1/v1", "http://u:pw-secret@127.0.0.1:2/v1?token=tok-secret"])
    assert teacher.base_urls == ["http://127.0.0.1:1/v1", "http://u:pw-secret@127.0.0.1:2/v1?token=tok-secret"]
    assert "secret" not in repr(teacher)
    assert {"pw-secret", "tok-secret"} <= set(teacher_secrets("openai:stub", None, teacher.base_urls))
    with pytest.raises(FtcotError, match="given twice"):
        OpenAICompatTeacher("stub", base_url=["http://127.0.0.1:1/v1", "http://127.0.0.1:1/v1/"])
    with pytest.raises(FtcotError, match="server-concurrency"):
        OpenAICompatTeacher("stub", base_url="http://127.0.0.1:1/v1", server_concurrency=0)
    with pytest.raises(FtcotError, match="must be http"):
        OpenAICompatTeacher("stub", base_url=["http://127.0.0.1:1/v1", "ftp://x"])


def test_the_cli_takes_base_url_more_than_once(tmp_path, pool):
    servers = pool(2, delay=0.02)
    from tests.teach.test_cli_teach import coin_task_file, run_ftcot

    task = coin_task_file(tmp_path, 6)
    done = run_ftcot("teach", "--task", task, "--answer-type", "yes/no", "--split", "test", "--teacher",
                     "openai:stub", "--teacher-args", f"base_url=[{servers[0].base_url},{servers[1].base_url}]",
                     "--teacher-args", "server_concurrency=1", "--teacher-args", "concurrency=4", "--out", tmp_path / "run")
    assert done.returncode == 0, done.stderr
    assert all(len(s.answered()) >= 3 for s in servers)
    assert sum(len(s.answered()) for s in servers) == 12
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["base_url"] == [servers[0].base_url, servers[1].base_url]
    assert record["config"]["server_concurrency"] == 1


def test_an_experiment_teacher_takes_a_list_of_servers_and_keeps_its_stage_key():
    from ftcot.experiment.config import TeacherConfig

    one = TeacherConfig(spec="openai:m", base_url="http://127.0.0.1:1/v1")
    listed = TeacherConfig(spec="openai:m", base_url=["http://127.0.0.1:1/v1"])
    assert one.identity() == listed.identity()  # a list of one is that server: the same teach stage
    pool_a = TeacherConfig(spec="openai:m", base_url=["http://127.0.0.1:1/v1", "http://u:pw@127.0.0.1:2/v1"],
                           server_concurrency=2)
    pool_b = TeacherConfig(spec="openai:m", base_url=["http://u:pw@127.0.0.1:2/v1", "http://127.0.0.1:1/v1"])
    assert pool_a.identity() == pool_b.identity()  # the servers, not their order or limits
    assert "pw" not in str(pool_a.identity())
    told = TeacherConfig(spec="openai:m", chat=True, system_prompt="Be careful.")
    assert told.identity() != TeacherConfig(spec="openai:m", chat=True).identity()
