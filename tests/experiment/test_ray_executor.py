"""``ftcot run --executor ray``: the same stages on a real local Ray cluster (2 CPUs, this machine).

Serial and Ray runs share stage keys and directories, so a run resumes from one executor to the other; a
stage that fails is tried again, then blocks what reads it; a worker killed mid-training is restarted by
Ray and the training resumes after its last epoch; Ctrl-C stops the driver and its workers.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from ftcot.experiment.config import load_config
from ftcot.experiment.runner import Experiment
from tests.cli import assert_one_line_error, run_ftcot
from tests.experiment.test_run import STUDENT, TINY, _write, signal_run_once

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

RAY = {"kind": "ray", "local_cpus": 2}


def _stage_dirs(out: Path) -> set[str]:
    return {f"{p.parent.name}/{p.name}" for p in out.glob("stages/*/*") if (p / "done.json").is_file()}


def test_a_grid_runs_on_ray_and_resumes_from_serial_and_back(data_root, tmp_path):
    out = tmp_path / "out"
    # Half the grid serially (the Fine-tune cells), then the whole grid on Ray: the finished stages are
    # skipped, the rest run as Ray tasks into the same stage directories.
    grid = {**TINY, "seeds": [0, 1]}  # 8 cells: 2 tasks × 2 methods × 2 seeds
    half = _write(tmp_path, {**grid, "methods": ["ft"]}, "half.yaml")
    assert run_ftcot("run", half, "--out", out, "--data-dir", data_root).returncode == 0
    serial = _stage_dirs(out)

    whole = _write(tmp_path, {**grid, "executor": RAY}, "whole.yaml")
    result = run_ftcot("run", whole, "--out", out, "--data-dir", data_root)
    assert result.returncode == 0, result.stderr[-3000:]
    experiment = Experiment(load_config(whole), out, data_root)
    planned = {f"{s.kind}/{s.key}" for s in experiment.plan.ordered()}
    assert _stage_dirs(out) == planned and serial < planned
    assert f"{len(planned) - len(serial)} stages ran" in result.stdout
    assert f"{len(serial)} were done earlier" in result.stdout
    assert "ray: " in result.stderr and "✓ train tiny-gpt2 seed 0 on coin_flip ft_cot" in result.stderr
    # Cell by cell, as serially: the first cell's evaluation is sent as soon as its training ends, not after
    # every training sent before it (4 trainings here, 2 at a time: it ran after the fourth).
    done = [line.split()[1] for line in result.stderr.splitlines() if line.startswith("✓ ")]
    assert done.index("evaluate") < len(done) - 1 - done[::-1].index("train"), done
    # What each stage printed is in its log, not interleaved on the terminal.
    ran = planned - serial
    assert {f"{p.stem.replace('-', '/', 1)}" for p in (out / "logs").glob("*.log")} == ran
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sorted((r["task"], r["method"], r["seed"]) for r in rows) == [
        (task, method, seed) for task in ("coin_flip", "last_letter_concatenation") for method in ("ft", "ft_cot")
        for seed in ("0", "1")]

    # And back: the serial executor finds everything done (the executor is not part of any key).
    serial_config = _write(tmp_path, grid, "serial.yaml")
    again = run_ftcot("run", serial_config, "--out", out, "--data-dir", data_root)
    assert again.returncode == 0 and "0 stages ran" in again.stdout and f"{len(planned)} were done earlier" \
        in again.stdout
    # The same grid all serially, elsewhere: the same table, byte for byte (who ran a stage changes nothing).
    alone = run_ftcot("run", serial_config, "--out", tmp_path / "alone", "--data-dir", data_root)
    assert alone.returncode == 0, alone.stderr[-2000:]
    assert (tmp_path / "alone" / "results.csv").read_bytes() == (out / "results.csv").read_bytes()


def test_a_failing_stage_is_tried_again_then_blocks_what_reads_it(data_root, tmp_path):
    """The recorded teacher has no gsm8k training rationales: its teach stage fails on every try."""
    config = {**TINY, "tasks": ["gsm8k", "coin_flip"], "methods": ["ft_cot"], "teacher_row": False,
              "students": [{**STUDENT, "epochs": 1}], "executor": {**RAY, "retries": 1}}
    path, out = _write(tmp_path, config), tmp_path / "out"
    result = run_ftcot("run", path, "--out", out, "--data-dir", data_root)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "teach gsm8k, replay:text-davinci-002 T=0: trying again (1 of 2 tries failed)" in result.stderr
    assert "1 stage(s) failed, e.g. teach gsm8k" in result.stderr.strip().splitlines()[-1]
    assert "3 blocked" in result.stdout
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["task"], r["method"]) for r in rows] == [("coin_flip", "ft_cot")]


def test_a_worker_killed_mid_training_is_restarted_and_resumes_after_its_last_epoch(data_root, tmp_path):
    # 12 epochs: on a loaded machine a few epochs can pass between the first checkpoint and the kill (as in
    # test_run's kill -9 test, 4 could all pass, leaving no worker to kill).
    config = {**TINY, "tasks": ["coin_flip"], "methods": ["ft"], "teacher_row": False,
              "students": [{**STUDENT, "epochs": 12}], "executor": RAY}
    path, out = _write(tmp_path, config), tmp_path / "out"
    killed = []

    def kill_the_training_worker() -> None:
        # Ray names a worker's process after the task it runs ("ray::train tiny-gpt2 …").
        for process in psutil.process_iter(["cmdline"]):
            if any("ray::train" in part for part in process.info["cmdline"] or ()):
                process.kill()
                killed.append(process.pid)

    with open(tmp_path / "stderr", "w+") as stderr:
        run = subprocess.Popen([sys.executable, "-m", "ftcot", "run", str(path), "--out", str(out), "--data-dir",
                                str(data_root)], stdout=subprocess.PIPE, stderr=stderr, text=True)
        deadline = time.monotonic() + 600
        while not list(out.glob("stages/train/*/checkpoints/epoch-0001/state.json")):
            assert run.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        kill_the_training_worker()
        stdout, _ = run.communicate(timeout=600)
        stderr.seek(0)
        log = stderr.read()
    assert killed and run.returncode == 0, log[-3000:]
    [train_dir] = out.glob("stages/train/*")
    record = json.loads((train_dir / "train.json").read_text())
    assert record["finished"] and [e["epoch"] for e in record["epochs"]] == list(range(1, 13))
    # The second try continued after the epoch the first one finished instead of starting again.
    assert "resuming after epoch" in (out / "logs" / f"train-{train_dir.name}.log").read_text()


@pytest.mark.parametrize("signum, group", [(signal.SIGINT, True), (signal.SIGINT, False), (signal.SIGTERM, False)],
                         ids=["ctrl-c", "kill -INT driver", "kill driver"])
def test_ctrl_c_stops_the_driver_and_its_workers_and_a_rerun_resumes(data_root, tmp_path, signum, group):
    """Ctrl-C reaches the whole process group; `kill PID` the driver only."""
    config = {**TINY, "tasks": ["coin_flip"], "methods": ["ft"], "teacher_row": False,
              "students": [{**STUDENT, "epochs": 30}], "executor": RAY}
    path, out = _write(tmp_path, config), tmp_path / "out"
    stopped = signal_run_once([path, "--out", out, "--data-dir", data_root], out,
                              "stages/train/*/checkpoints/epoch-0001/state.json", signum, group)
    # As serially: the shell's code for the signal, and the line that says what was kept (Ray's own SIGTERM
    # handler aborted the driver instead: no results, no archive).
    words = "terminated" if signum == signal.SIGTERM else "interrupted"
    assert stopped.returncode == 128 + signum, stopped.stderr[-2000:]
    assert f"{words}; everything stored so far is kept." in stopped.stderr and "Traceback" not in stopped.stderr
    [train_dir] = out.glob("stages/train/*")
    assert not (train_dir / "done.json").exists()
    time.sleep(2)
    assert not any("ray::" in " ".join(p.info["cmdline"] or ()) for p in psutil.process_iter(["cmdline"])
                   if p.info["cmdline"] and str(out) in " ".join(p.info["cmdline"]))
    checkpoints = sorted(p.name for p in (train_dir / "checkpoints").iterdir())
    time.sleep(2)  # nothing keeps training behind the stopped driver's back
    assert sorted(p.name for p in (train_dir / "checkpoints").iterdir()) == checkpoints


def test_executor_options_are_checked_before_anything_runs(data_root, tmp_path):
    path, out = _write(tmp_path, TINY), tmp_path / "out"
    assert_one_line_error(run_ftcot("run", path, "--out", out, "--data-dir", data_root, "--executor", "ray",
                                    "--address", "127.0.0.1:1"), "127.0.0.1:1", "no Ray cluster answers")
    assert_one_line_error(run_ftcot("run", path, "--out", out, "--data-dir", data_root, "--address", "h:1"),
                          "--address h:1", "--executor ray")
    assert_one_line_error(run_ftcot("run", path, "--out", out, "--data-dir", data_root, "--executor", "dask"),
                          "--executor must be serial or ray")
    # A config made for a cluster runs serially when asked: its cluster settings are not used this time.
    on_ray = _write(tmp_path, {**TINY, "executor": {"kind": "ray", "address": "h:1", "local_cpus": 2}}, "ray.yaml")
    serially = run_ftcot("run", on_ray, "--out", out, "--data-dir", data_root, "--executor", "serial", "--plan")
    assert serially.returncode == 0, serially.stderr
    for executor, fragment in (({"kind": "ray", "retries": -1}, "executor.retries"),
                               ({"kind": "ray", "gpus": {"train": float("nan")}}, "executor.gpus.train"),
                               ({"kind": "ray", "cpus": {"tarin": 1}}, "executor.cpus.tarin"),
                               ({"kind": "serial", "address": "h:1"}, "address is for kind: ray")):
        bad = _write(tmp_path, {**TINY, "executor": executor}, "bad.yaml")
        assert_one_line_error(run_ftcot("run", bad, "--out", out, "--data-dir", data_root), fragment)
    assert not out.exists()
