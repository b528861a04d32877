"""``ftcot run`` end to end on tiny configs: results, reruns that do no work, resumption, changed settings.

The student is tiny-gpt2 (built from a config) and the teacher the recorded
text-davinci-002 outputs (replay), on 8-question training subsets so that each
run takes seconds; the diverse-reasoning test samples a real local teacher
(Gemma 3 270M through transformers).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from ftcot.experiment.config import load_config
from ftcot.experiment.results import write_results
from ftcot.experiment.runner import Experiment
from tests.cli import assert_one_line_error, run_ftcot

pytestmark = pytest.mark.slow

STUDENT = {"spec": "tiny-gpt2", "epochs": 2, "batch_size": 4, "max_length": 1024, "max_new_tokens": 8,
           "dropout": 0.0, "device": "cpu"}
TINY = {"name": "tiny", "tasks": ["coin_flip", "last_letter_concatenation"], "teachers": ["replay:text-davinci-002"],
        "methods": ["ft", "ft_cot"], "students": [STUDENT], "train_sizes": [8],
        "evaluate": {"limit": 4, "max_new_tokens": 8, "device": "cpu"}}


def _write(tmp_path: Path, config: dict, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _rerun(path: Path, out: Path, data_root: Path) -> dict[str, list[str]]:
    """Run again through the Python API; stage kind -> statuses."""
    experiment = Experiment(load_config(path), out, data_root)
    statuses: dict[str, list[str]] = {}
    for outcome in experiment.run():
        statuses.setdefault(outcome.stage.kind, []).append(outcome.status)
    write_results(experiment)
    return statuses


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_root) -> tuple[Path, Path]:
    """The tiny experiment, run once through the real CLI."""
    tmp = tmp_path_factory.mktemp("run")
    path, out = _write(tmp, TINY), tmp / "out"
    result = run_ftcot("run", path, "--out", out, "--data-dir", data_root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Fine-tune-CoT" in result.stdout and "14 stages ran" in result.stdout
    return path, out


def test_a_run_writes_the_tables_plots_report_and_lineage(finished, data_root):
    _, out = finished
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sorted((r["task"], r["method"]) for r in rows) == [
        ("coin_flip", "ft"), ("coin_flip", "ft_cot"), ("last_letter_concatenation", "ft"),
        ("last_letter_concatenation", "ft_cot")]
    assert all(r["n"] == "4" and r["train_size"] == "8" for r in rows)
    # Precision is part of a result's identity: what this machine resolved, recorded per row.
    assert {(r["train_precision"], r["eval_precision"]) for r in rows} <= {
        (f"{t} (cpu)", f"{e} (cpu)") for t in ("bfloat16", "float32") for e in ("bfloat16", "float32")}
    assert "Precision: trained in " in (out / "results.md").read_text()
    # Each accuracy with its interval, and Fine-tune-CoT against Fine-tune on the same questions, from the
    # predictions: the counts of questions right by one alone agree with the two prediction files.
    assert all(float(r["ci_low"]) <= float(r["accuracy"]) <= float(r["ci_high"]) for r in rows)
    how_sure = (out / "results.md").read_text().split("## How sure", 1)[1]
    assert "McNemar" in how_sure and "| tiny-gpt2, 8 questions | Coin Flip | 0 | Fine-tune-CoT " in how_sure
    experiment = Experiment(load_config(finished[0]), out, data_root)
    by_method = {}
    for cell in experiment.plan.cells:
        if cell.task == "coin_flip":
            predictions = experiment.stage_dir(experiment.plan.stages[cell.evaluate]) / "predictions.jsonl"
            by_method[cell.method] = {r["sample_index"]: r["correct"] for r in map(json.loads, predictions.open())}
    only_cot = sum(by_method["ft_cot"][q] and not by_method["ft"][q] for q in by_method["ft"])
    only_ft = sum(by_method["ft"][q] and not by_method["ft_cot"][q] for q in by_method["ft"])
    line = next(line for line in how_sure.splitlines() if "| Coin Flip |" in line and "Fine-tune-CoT" in line)
    assert f"| {only_cot} / {only_ft} |" in line
    table = (out / "results.md").read_text()
    # The teacher row is the replay teacher's recorded test accuracy (paper rule) on coin flip.
    assert "| teacher: replay:text-davinci-002, Zero-shot-CoT | " in table and "91.33" in table
    assert (out / "plots" / "accuracy_by_task.png").is_file() and list((out / "plots" / "training").glob("*.png"))
    html = (out / "report.html").read_text()
    assert "Curation" in html and "Student correct" in html and "data:image/png;base64," in html
    lineage = json.loads((out / "lineage.json").read_text())
    cot = next(e for e in lineage if e["task"] == "coin_flip" and e["method"] == "ft_cot")
    for link in ("predictions", "checkpoint", "training_rows", "teacher_completions"):
        assert (out / cot[link]).exists(), link
    assert cot["train_precision"].endswith("(cpu)") and cot["eval_precision"].endswith("(cpu)")
    assert "Precision: trained in " in html and "id='how-sure'" in html
    trained_on = [json.loads(line) for line in (out / cot["training_rows"]).open()]
    assert 0 < cot["teacher_records_used"] == len({r["teacher_record"] for r in trained_on}) <= 8


def test_explain_prints_where_an_accuracy_came_from(finished, data_root):
    path, out = finished
    result = run_ftcot("run", path, "--out", out, "--data-dir", data_root, "--explain", "coin_flip", "ft_cot")
    assert result.returncode == 0, result.stderr
    for fragment in ("coin_flip ft_cot (tiny-gpt2, teacher replay:text-davinci-002, seed 0, 8 questions)",
                     "checkpoint: ", "training rows: ", "teacher completions: ", "teach.sqlite"):
        assert fragment in result.stdout
    assert_one_line_error(run_ftcot("run", path, "--out", out, "--data-dir", data_root, "--explain", "coin_flip",
                                    "zs"), "no such cell")


def test_a_rerun_does_no_work(finished, data_root):
    path, out = finished
    predictions = sorted(out.glob("stages/evaluate/*/predictions.jsonl"))
    before = [p.stat().st_mtime_ns for p in predictions]
    statuses = _rerun(path, out, data_root)
    assert {s for kind in statuses.values() for s in kind} == {"done earlier"}
    assert [p.stat().st_mtime_ns for p in predictions] == before


def test_a_changed_learning_rate_reruns_train_and_evaluate_only(finished, data_root, tmp_path):
    path, out = finished
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    changed = _write(tmp_path, {**TINY, "students": [{**STUDENT, "lr": 1e-3}]})
    statuses = _rerun(changed, copy, data_root)
    assert set(statuses["teach"]) == set(statuses["curate"]) == {"done earlier"}
    assert set(statuses["train"]) == set(statuses["evaluate"]) == {"ran"}


def test_plan_shows_what_is_done_and_the_teacher_cost(finished, data_root, tmp_path):
    path, out = finished
    result = run_ftcot("run", path, "--out", out, "--data-dir", data_root, "--plan")
    assert result.returncode == 0, result.stderr
    assert "to run" not in result.stdout and "4 result cells; estimated teacher cost $0.0000" in result.stdout
    fresh = run_ftcot("run", path, "--out", tmp_path / "fresh", "--data-dir", data_root, "--plan")
    assert fresh.stdout.count("to run") == 14 and "free (recorded)" in fresh.stdout
    assert not (tmp_path / "fresh").exists()  # a plan runs and writes nothing


def signal_run_once(args: list[str], folder: Path, pattern: str, signum: int,
                    group: bool = True) -> subprocess.CompletedProcess:
    """Start ``ftcot run ARGS`` (its own process group), send ``signum`` as soon as ``folder`` holds a file
    matching ``pattern`` (to the group, as a terminal's Ctrl-C does, or to the run's process only, as
    ``kill PID`` does), and return how the run ended (stderr captured in a file: a pipe nobody reads
    while the run works could fill and stall it)."""
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "ftcot", "run", *map(str, args)],
                                   stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
        try:
            deadline = time.monotonic() + 600
            while not list(folder.glob(pattern)):
                assert process.poll() is None, f"the run ended before {pattern} appeared"
                assert time.monotonic() < deadline
                time.sleep(0.05)
            (os.killpg if group else os.kill)(process.pid, signum)
            process.wait(timeout=300)
        finally:
            process.kill()
        stderr.seek(0)
        return subprocess.CompletedProcess(process.args, process.returncode, "", stderr.read())


def test_kill_9_in_the_train_stage_resumes_it(data_root, tmp_path):
    # 12 epochs: the kill lands after the first checkpoint, but a loaded machine can let a few more epochs
    # pass first (with 4, a busy CPU once let all of them finish before the kill: nothing left to resume).
    config = {**TINY, "tasks": ["coin_flip"], "methods": ["ft_cot"], "teacher_row": False,
              "students": [{**STUDENT, "epochs": 12}]}
    path, out = _write(tmp_path, config), tmp_path / "out"
    signal_run_once([path, "--out", out, "--data-dir", data_root], out,
                    "stages/train/*/checkpoints/epoch-0001/state.json", signal.SIGKILL)
    [train_dir] = out.glob("stages/train/*")
    assert not (train_dir / "done.json").exists()
    killed_after = max(int(c.name.split("-")[1]) for c in (train_dir / "checkpoints").glob("epoch-*"))
    assert killed_after < 12, "the training finished before the kill: nothing to resume"

    result = run_ftcot("run", path, "--out", out, "--data-dir", data_root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming after epoch {killed_after}" in result.stderr
    record = json.loads((train_dir / "train.json").read_text())
    assert record["finished"] and [e["epoch"] for e in record["epochs"]] == list(range(1, 13))
    assert (train_dir / "done.json").is_file() and list(out.glob("stages/evaluate/*/metrics.json"))


def test_a_replay_teacher_asked_for_several_rationales_is_a_clear_error(data_root, tmp_path):
    path = _write(tmp_path, {**TINY, "diverse": {"D": [1, 2]}})
    result = run_ftcot("run", path, "--out", tmp_path / "out", "--data-dir", data_root)
    assert_one_line_error(result, "teach coin_flip, replay:text-davinci-002 T=0.7", "cannot sample",
                          "live teacher")
    assert not (tmp_path / "out").exists()


def test_diverse_reasoning_from_a_local_teacher(data_root, tmp_path):
    """D ∈ {1, 2} at T = 0.7 from Gemma 3 270M (hf:), beside its greedy rationale, on 8 training questions."""
    config = {**TINY, "tasks": ["coin_flip"], "teacher_row": False, "methods": ["ft_cot"],
              "teachers": [{"spec": "hf:gemma-270m", "max_tokens": 48}], "diverse": {"D": [1, 2]},
              "evaluate": {"limit": 2, "max_new_tokens": 8, "device": "cpu"}}
    path, out = _write(tmp_path, config), tmp_path / "out"
    result = run_ftcot("run", path, "--out", out, "--data-dir", data_root)
    assert result.returncode == 0, result.stderr[-3000:]
    experiment = Experiment(load_config(path), out, data_root)
    sampled = next(s for s in experiment.plan.of_kind("teach") if s.inputs["temperature"] == 0.7)
    assert experiment.done(sampled)["samples"] == 2
    by_d = {}
    for stage in experiment.plan.of_kind("curate"):
        rows = [json.loads(line) for line in (experiment.stage_dir(stage) / "train.jsonl").open()]
        rows += [json.loads(line) for line in (experiment.stage_dir(stage) / "val.jsonl").open()]
        by_d[stage.inputs["D"]] = rows
    assert {r["sample_number"] for r in by_d[1]} == {0}  # D = 1: the first sample of each question only
    assert {r["sample_number"] for r in by_d[2]} <= {0, 1} and len(by_d[2]) >= len(by_d[1])
    assert {r["sample_index"] for r in by_d[2]} <= set(sampled.questions)
    cells = list(csv.DictReader((out / "results.csv").open()))
    assert sorted(r["D"] for r in cells) == ["", "1", "2"]


def test_a_failed_stage_blocks_its_dependents_and_the_rest_goes_on(data_root, tmp_path):
    """The recorded teacher has no gsm8k training rationales: its teach stage fails (every item did), the
    cell's curate, train and evaluate are blocked, and coin flip's cell is still made."""
    config = {**TINY, "tasks": ["gsm8k", "coin_flip"], "methods": ["ft_cot"], "teacher_row": False,
              "students": [{**STUDENT, "epochs": 1}]}
    path, out = _write(tmp_path, config), tmp_path / "out"
    result = run_ftcot("run", path, "--out", out, "--data-dir", data_root)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "1 stage(s) failed, e.g. teach gsm8k, replay:text-davinci-002 T=0" in last
    assert "0/8 chains complete; 8 items failed" in last and "no recorded completion" in last
    assert "3 blocked" in result.stdout
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["task"], r["method"]) for r in rows] == [("coin_flip", "ft_cot")]


def test_a_launcher_runs_the_train_stage_as_its_own_command_with_the_same_settings(data_root, tmp_path):
    """`launcher: accelerate launch …` on a cluster; here the plain interpreter (one process, same code path)."""
    config = {**TINY, "tasks": ["coin_flip"], "methods": ["ft"], "teacher_row": False,
              "students": [{**STUDENT, "epochs": 1, "lr": 2e-3, "bf16": False}], "launcher": sys.executable}
    path, out = _write(tmp_path, config), tmp_path / "out"
    result = run_ftcot("run", path, "--out", out, "--data-dir", data_root)
    assert result.returncode == 0, result.stderr[-3000:]
    experiment = Experiment(load_config(path), out, data_root)
    [train] = experiment.plan.of_kind("train")
    record = json.loads((experiment.stage_dir(train) / "train.json").read_text())
    expected = experiment.config.train_config(experiment.config.students[0], 0).to_dict()
    assert record["config"] == expected and record["finished"]


def test_raising_epochs_continues_the_shorter_run_and_matches_a_fresh_longer_one(data_root, tmp_path):
    """epochs 2 → 3: the new train stage starts from the 2-epoch stage's checkpoint (epochs 1–2 copied with
    their records, one epoch trained) and ends where a 3-epoch run from scratch ends, epoch by epoch."""
    config = {**TINY, "tasks": ["coin_flip"], "methods": ["ft_cot"], "teacher_row": False,
              "students": [{**STUDENT, "epochs": 2}]}
    two, out = _write(tmp_path, config, "two.yaml"), tmp_path / "out"
    assert _rerun(two, out, data_root)["train"] == ["ran"]
    three = _write(tmp_path, {**config, "students": [{**STUDENT, "epochs": 3}]}, "three.yaml")
    plan = run_ftcot("run", three, "--out", out, "--data-dir", data_root, "--plan")
    assert "continues after epoch 2" in plan.stdout
    experiment = Experiment(load_config(three), out, data_root)
    outcomes = [o for o in experiment.run() if o.stage.kind == "train"]
    assert [o.status for o in outcomes] == ["ran"] and "epochs 1–2 from" in outcomes[0].note
    continued = json.loads((experiment.stage_dir(outcomes[0].stage) / "train.json").read_text())
    shorter = json.loads(next(p for p in out.glob("stages/train/*/train.json") if p.parent.name != outcomes[0].stage.key)
                         .read_text())
    assert shorter["config"]["epochs"] == 2 and len(shorter["epochs"]) == 2  # the 2-epoch stage is left as it was
    assert continued["finished"] and continued["config"]["epochs"] == 3
    assert continued["epochs"][:2] == shorter["epochs"]  # copied (their timings too), not trained again

    fresh = Experiment(load_config(three), tmp_path / "fresh", data_root)
    list(fresh.run())
    [fresh_train] = fresh.plan.of_kind("train")
    scratch = json.loads((fresh.stage_dir(fresh_train) / "train.json").read_text())
    assert [round(e["val_loss"], 5) for e in continued["epochs"]] == [round(e["val_loss"], 5) for e in scratch["epochs"]]
    assert [round(e["train_loss"], 5) for e in continued["epochs"]] == \
        [round(e["train_loss"], 5) for e in scratch["epochs"]]


@pytest.mark.parametrize(("launcher", "fragment"), [
    ("no-such-launcher-cmd", "launcher: 'no-such-launcher-cmd' cannot run"),
    ("true", "finished without writing it"),  # exits 0, trains nothing
])
def test_a_launcher_that_cannot_train_fails_its_stage_in_one_line(data_root, tmp_path, launcher, fragment):
    config = {**TINY, "tasks": ["coin_flip"], "methods": ["ft"], "teacher_row": False,
              "students": [{**STUDENT, "epochs": 1}], "launcher": launcher}
    result = run_ftcot("run", _write(tmp_path, config), "--out", tmp_path / "out", "--data-dir", data_root)
    assert result.returncode == 2 and "Traceback" not in result.stderr + result.stdout, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "1 stage(s) failed, e.g. train" in last and fragment in last


def test_a_launcher_with_unbalanced_quotes_is_refused_before_anything_runs(data_root, tmp_path):
    path = _write(tmp_path, {**TINY, "launcher": "accelerate launch 'unbalanced"})
    assert_one_line_error(run_ftcot("run", path, "--out", tmp_path / "out", "--data-dir", data_root),
                          "launcher: not a command line", "quotes")
    assert not (tmp_path / "out").exists()
