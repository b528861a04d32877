"""A real two-node Ray cluster, started with ``ray start`` as a user starts one: a head node without GPUs and a
second node that declares two (Ray schedules by what a node declares; this machine has none, so torch runs on
the CPU there, under the CUDA_VISIBLE_DEVICES Ray sets). Both nodes are on this machine.

What a cluster user relies on: ``ftcot run --executor ray --address`` puts a stage that asks for a GPU on the
node that has one and the others anywhere; teach workers with ``worker_gpus: 1`` each hold a GPU of their own.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from ftcot.experiment.config import load_config
from ftcot.experiment.runner import Experiment
from tests.cli import run_ftcot
from tests.experiment.test_run import STUDENT, TINY, _write
from tests.teach.servers import free_port

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

# Token authentication (Ray's default) would need the head's token on the second node and the driver;
# the test cluster is on loopback only.
ENV = {"RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": ""}


@contextlib.contextmanager
def _cluster(temp_dir: str) -> Iterator[str]:
    """A head with 1 CPU and no GPU, and a second node with 2 CPUs and 2 GPUs; yields the head's address."""
    command = str(Path(sys.executable).parent / "ray")  # the venv's ray, beside its python
    env = {**os.environ, **ENV}
    port = free_port()
    common = ["--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    try:
        subprocess.run([command, "start", "--head", "--port", str(port), "--num-cpus", "1", "--num-gpus", "0",
                        "--include-dashboard", "false", "--temp-dir", temp_dir, *common], env=env, check=True,
                       capture_output=True, timeout=180)
        subprocess.run([command, "start", "--address", f"127.0.0.1:{port}", "--num-cpus", "2", "--num-gpus", "2",
                        *common], env=env, check=True, capture_output=True, timeout=180)
        yield f"127.0.0.1:{port}"
    finally:
        _stop(temp_dir)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # A temp dir of its own, so that the teardown stops this cluster's processes only (`ray stop` stops all).
    with _cluster(str(tmp_path_factory.mktemp("ray"))) as address:
        yield address


def _stop(temp_dir: str) -> None:
    """End the processes of the cluster whose session lives in ``temp_dir``, and what they started."""
    roots = [p for p in psutil.process_iter(["cmdline"])
             if temp_dir in " ".join(p.info["cmdline"] or ()) and p.pid != os.getpid()]
    processes = {p for root in roots for p in [root, *_children(root)]}
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=20)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []


def _placement(log: Path) -> tuple[str, str]:
    """(node id, GPUs) from the first line of a stage's log."""
    found = re.match(r"ray: node (\S+) \(.*\), GPUs (\S+)", log.read_text().splitlines()[0])
    assert found, log.read_text()[:300]
    return found.group(1), found.group(2)


def test_a_training_that_asks_for_a_gpu_runs_on_the_node_that_has_one(cluster, data_root, tmp_path):
    config = {**TINY, "tasks": ["coin_flip"], "methods": ["ft_cot"],
              "executor": {"kind": "ray", "address": cluster, "gpus": {"train": 1}}}
    out = tmp_path / "out"
    result = run_ftcot("run", _write(tmp_path, config), "--out", out, "--data-dir", data_root, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    placed = {log.stem: _placement(log) for log in (out / "logs").glob("*.log")}
    trains = {key: where for key, where in placed.items() if key.startswith("train-")}
    others = {key: where for key, where in placed.items() if not key.startswith("train-")}
    assert trains and others
    assert all(gpus in ("0", "1") for _, gpus in trains.values()), trains  # one GPU each, of the GPU node
    assert all(gpus == "none" for _, gpus in others.values()), others
    gpu_node = {node for node, _ in trains.values()}
    assert len(gpu_node) == 1  # the second node: the head declares no GPU


def test_teach_workers_each_hold_a_gpu_of_the_cluster(cluster, tmp_path):
    from tests.teach.stub_openai import StubOpenAI
    from tests.teach.test_cli_teach import coin_task_file

    server = StubOpenAI()
    task = coin_task_file(tmp_path, 8)
    try:
        result = run_ftcot("teach", "--task", task, "--answer-type", "yes/no", "--split", "test", "--teacher",
                           "openai:stub", "--out", tmp_path / "run", "--teacher-args",
                           f"base_url={server.base_url},workers=2,worker_gpus=1,worker_cpus=0.5,"
                           f"ray_address={cluster}", env=ENV)
    finally:
        server.close()
    assert result.returncode == 0, result.stderr[-3000:]
    gpus = sorted(re.findall(r"^worker \d \(.*, GPU (\d)\)", result.stdout, re.MULTILINE))
    assert gpus == ["0", "1"], result.stdout  # both workers on the GPU node, one GPU each


def _second_raylet(temp_dir: str) -> tuple[psutil.Process, str]:
    """The raylet of the cluster's second node (the one that is not the head) and its node id."""
    for process in psutil.process_iter(["name", "cmdline"]):
        line = " ".join(process.info["cmdline"] or ())
        if process.info["name"] == "raylet" and temp_dir in line and "__internal_head__" not in line:
            return process, re.search(r"--node_id=(\w+)", line).group(1)
    raise AssertionError(f"no second raylet under {temp_dir}")


def test_a_node_lost_mid_run_its_stages_run_again_on_the_head_and_nothing_is_paid_twice(
        data_root, tmp_path, tmp_path_factory):
    from tests.teach.stub_openai import StubOpenAI

    server = StubOpenAI(delay_s=0.3)  # slow enough that the teach stage is still asking when the node goes
    temp_dir = str(tmp_path_factory.mktemp("ray"))
    # Trainings of 12 epochs (several seconds each), so that the one found on the second node is still running
    # when its node goes (with 2 epochs it could finish in between: nothing to run again).
    config = {**TINY, "tasks": ["coin_flip"], "methods": ["ft_cot"], "seeds": [0, 1, 2], "teacher_row": False,
              "students": [{**STUDENT, "epochs": 12}],
              "teachers": [{"spec": "openai:stub", "name": "stub", "base_url": server.base_url, "concurrency": 2}]}
    out = tmp_path / "out"
    try:
        with _cluster(temp_dir) as address:
            path = _write(tmp_path, {**config, "executor": {"kind": "ray", "address": address, "retries": 2}})
            raylet, node = _second_raylet(temp_dir)
            stderr = tmp_path / "stderr.txt"
            with stderr.open("w") as sink:
                process = subprocess.Popen([sys.executable, "-m", "ftcot", "run", str(path), "--out", str(out),
                                            "--data-dir", str(data_root)], env={**os.environ, **ENV},
                                           stdout=subprocess.DEVNULL, stderr=sink)
                try:
                    # As soon as a training runs on the second node, its raylet is killed: the node is lost.
                    deadline = time.monotonic() + 300
                    while not any(_first_line(log).startswith(f"ray: node {node}")
                                  for log in out.glob("logs/train-*.log")):
                        assert process.poll() is None, stderr.read_text()[-3000:]
                        assert time.monotonic() < deadline, "no training ran on the second node"
                        time.sleep(0.05)
                    finished = {p: p.stat().st_mtime_ns for p in out.glob("stages/*/*/done.json")}
                    raylet.kill()
                    sent_before = server.count()
                    assert process.wait(timeout=600) == 0, stderr.read_text()[-3000:]
                finally:
                    process.kill()
    finally:
        server.close()
    planned = {f"{s.kind}/{s.key}" for s in Experiment(load_config(path), out, data_root).plan.ordered()}
    assert {f"{p.parent.parent.name}/{p.parent.name}" for p in out.glob("stages/*/*/done.json")} == planned
    # The stages done before the node was lost are kept, not run again.
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    assert "trying again" in stderr.read_text()  # what ran on the lost node failed and ran again
    # Every teacher request answered once, but those in flight when the node went (at most concurrency).
    hashes = server.body_hashes()
    assert len(hashes) - len(set(hashes)) <= 2, (sent_before, len(hashes))
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 3 and all(r["accuracy"] for r in rows)


def _first_line(log: Path) -> str:
    with log.open() as handle:
        return handle.readline()
