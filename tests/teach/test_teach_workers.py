"""``ftcot teach`` with ``workers``: one run's requests answered by Ray workers on a real local Ray cluster.

Real everywhere: the ``ftcot teach`` command in a subprocess, a local Ray cluster it starts, worker processes
that a test kills with SIGKILL, and the stub OpenAI-compatible server on 127.0.0.1 (in this process, so it
counts every request the workers send, also those of a killed worker).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from ftcot.teach.store import TeachStore
from tests.cli import assert_one_line_error
from tests.teach.test_cli_teach import cli_env, coin_task_file, ftcot_command, run_ftcot

pytest.importorskip("ray")

WORKER_PROCESS = "TeacherWorker"  # Ray titles an actor's process ray::TeacherWorker


def _teach(task: Path, out: Path, url: str, *extra: str) -> list[str]:
    return ["teach", "--task", str(task), "--split", "test", "--teacher", "openai:stub", "--out", str(out),
            "--answer-type", "yes/no", "--samples", "2", "--temperature", "0.7", "--teacher-args",
            f"base_url={url}", *extra]


def _env() -> dict[str, str]:
    return cli_env(RAY_ADDRESS="")  # a local cluster of the run's own, whatever the shell points at


def _stored(out: Path) -> dict[str, str]:
    with TeachStore.open_readonly(out) as store:
        return {row.key: row.text for row in store.completions()}


def _worker_pids() -> list[int]:
    found = subprocess.run(["pgrep", "-f", f"ray::{WORKER_PROCESS}"], capture_output=True, text=True,
                           check=False).stdout
    return [int(pid) for pid in found.split()]


def test_two_workers_share_a_run_and_store_what_one_process_would(stub, tmp_path):
    server = stub(logprobs=True)
    task = coin_task_file(tmp_path, 24)
    result = run_ftcot(*_teach(task, tmp_path / "ray", server.base_url, "--teacher-args",
                               "workers=2,worker_cpus=0.5,top_logprobs=2"), env=_env())
    assert result.returncode == 0, result.stderr
    served = [int(line.split(": ")[1].split()[0]) for line in result.stdout.splitlines()
              if line.startswith("worker ")]
    assert len(served) == 2 and all(n > 0 for n in served), result.stdout  # both answered requests
    requests = int(result.stdout.split("this run: ")[1].split()[0])
    assert sum(served) == requests  # every request of the loop went through a worker
    sent = server.count()
    assert sent == len(_stored(tmp_path / "ray")) == 24 * 2 * 2 and len(set(server.body_hashes())) == sent
    run = json.loads((tmp_path / "ray" / "run.json").read_text())
    assert [w["requests"] for w in run["workers"]] == served

    # The same run without workers stores the same keys and texts: workers change who sends, nothing else.
    alone = run_ftcot(*_teach(task, tmp_path / "alone", server.base_url), env=_env())
    assert alone.returncode == 0, alone.stderr
    assert _stored(tmp_path / "ray") == _stored(tmp_path / "alone")
    with TeachStore.open_readonly(tmp_path / "ray") as store:  # the workers' teachers asked for the top-K too
        assert set(store.logprobs_k(_stored(tmp_path / "ray")).values()) == {2}
    # A rerun of the workers' run directory, with or without workers, sends nothing.
    before = server.count()
    again = run_ftcot(*_teach(task, tmp_path / "ray", server.base_url), env=_env())
    assert again.returncode == 0 and server.count() == before, again.stdout


def test_a_worker_killed_mid_run_loses_only_its_requests_in_flight(stub, tmp_path):
    server = stub(delay_s=0.25)
    task = coin_task_file(tmp_path, 30)
    out = tmp_path / "run"
    concurrency = 4
    process = subprocess.Popen(ftcot_command(*_teach(task, out, server.base_url, "--teacher-args",
                                                     f"workers=2,worker_cpus=0.5,concurrency={concurrency}")),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.monotonic() + 180
        while server.count() < 12 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        victims = _worker_pids()
        assert len(victims) == 2 and process.poll() is None, "the run ended before a worker could be killed"
        os.kill(victims[0], signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert "died 1 times" in stdout, stdout
    stored = _stored(out)
    assert len(stored) == 30 * 2 * 2  # every chain complete: the killed worker's requests went to the other
    # Sent twice: at most the requests the dead worker had in flight (never more than the run's concurrency).
    repeats = sum(n - 1 for n in Counter(server.body_hashes()).values())
    assert repeats <= concurrency, repeats
    assert server.count() == len(stored) + repeats


def test_workers_of_an_hf_teacher_score_a_store_sampled_without_them(tmp_path):
    """hf: workers fill the top-K of sampled completions stored without them by scoring the stored text (the
    pool forwards ``score``): every row gets them, no text changes, no completion is added."""
    task = coin_task_file(tmp_path, 6)
    teach = ["teach", "--task", str(task), "--split", "test", "--teacher", "hf:tiny-gpt2", "--out",
             str(tmp_path / "run"), "--answer-type", "yes/no", "--samples", "2", "--temperature", "0.7",
             "--teacher-args", "max_tokens=6"]
    first = run_ftcot(*teach, env=_env())
    assert first.returncode == 0, first.stderr
    before = _stored(tmp_path / "run")
    scored = run_ftcot(*teach[:-1], "max_tokens=6,workers=1,worker_cpus=0.5,top_logprobs=2", env=_env())
    assert scored.returncode == 0, scored.stderr
    assert f"scoring {len(before)} stored completions" in " ".join(scored.stderr.split())  # however it wraps
    assert _stored(tmp_path / "run") == before
    with TeachStore.open_readonly(tmp_path / "run") as store:
        assert store.logprobs_k(before) == {key: 2 for key in before}


def test_the_budget_is_the_run_directorys_across_workers(stub, tmp_path):
    server = stub(completion_tokens=50)
    task = coin_task_file(tmp_path, 40)
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"stub": {"prompt": 1000.0, "completion": 1000.0}}))  # USD per 1M tokens
    cap = 0.5
    result = run_ftcot(*_teach(task, tmp_path / "run", server.base_url, "--max-cost", str(cap), "--teacher-args",
                               f"workers=2,worker_cpus=0.5,concurrency=8,prices={prices}"), env=_env())
    assert result.returncode == 0, result.stderr
    assert "--max-cost cap" in result.stdout
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert 0 < report["cost_usd"] <= cap


@pytest.mark.parametrize("args, fragments", [
    (("--teacher-args", "workers=2", "--batch"), ("batch does not combine with workers",)),
    (("--teacher-args", "ray_address=auto"), ("ray_address", "set workers")),
    (("--teacher-args", "worker_gpus=1"), ("worker_gpus", "set workers")),
    (("--teacher-args", "workers=-1"), ("--teacher-args workers: must be at least 0",)),
    (("--teacher-args", "workers=2,worker_cpus=nan"), ("--teacher-args worker_cpus",)),
    (("--teacher-args", "workers=2,ray_address=127.0.0.1:1"), ("127.0.0.1:1", "no Ray cluster answers")),
    (("--teacher-args", "workers=50"), ("50 teach workers × worker_cpus 1 need 50 CPUs; the Ray cluster has",)),
    (("--teacher-args", "workers=1,worker_gpus=1"), ("need 1 GPUs; the Ray cluster has 0",)),
])
def test_bad_worker_settings_are_one_line_before_the_run_directory_exists(stub, tmp_path, args, fragments):
    server = stub()
    task = coin_task_file(tmp_path, 4)
    result = run_ftcot(*_teach(task, tmp_path / "run", server.base_url, *args), env=_env())
    if "need" in fragments[0]:  # found once the cluster is there: after the line that says it is starting
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("error: ") and fragments[0] in result.stderr
    else:
        assert_one_line_error(result, *fragments)
    assert not (tmp_path / "run").exists() and server.count() == 0


def test_workers_are_not_part_of_an_experiments_teach_stage_key(tmp_path, data_root):
    from rich.console import Console

    from ftcot.experiment.config import load_config
    from ftcot.experiment.runner import Experiment

    def keys(teacher: str) -> set[str]:
        path = tmp_path / "c.yaml"
        path.write_text(f"tasks: [coin_flip]\nteachers: [{teacher}]\nmethods: [ft_cot]\nstudents: [tiny-gpt2]\n")
        return set(Experiment(load_config(path), tmp_path / "out", data_root, Console(quiet=True)).plan.stages)

    assert keys("{spec: replay:text-davinci-002, workers: 2, worker_cpus: 0.5}") == keys("replay:text-davinci-002")


def test_listed_servers_are_shared_out_among_the_workers():
    from ftcot.teach.workers import endpoint_of

    servers = {"base_url": ["a", "b", "c", "d"], "chat": False}
    assert endpoint_of(servers, 0, 1) == servers  # one worker drives them all
    assert [endpoint_of(servers, i, 2)["base_url"] for i in range(2)] == [["a", "c"], ["b", "d"]]
    assert [endpoint_of(servers, i, 4)["base_url"] for i in range(4)] == ["a", "b", "c", "d"]  # one each
    assert [endpoint_of(servers, i, 6)["base_url"] for i in range(6)] == ["a", "b", "c", "d", "a", "b"]
    assert endpoint_of({"base_url": "x"}, 2, 3) == {"base_url": "x"}  # one URL: every worker's (each node's own)
