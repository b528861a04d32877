"""``ftcot run`` with the teachers and labels beyond the paper, end to end through the real command.

Adaptive sampling (a teacher's ``until_correct``/``max_samples``), rationalization (``rationalize: true``)
and the curate label axis (``curate: {label: [gold, majority]}``), each through teach → curate → train →
evaluate → results. The teacher is tests/teach/coin_teacher.py: a real HTTP server on 127.0.0.1 whose every
sample is computable (see why there), so a test knows which questions are easy, which the teacher never
solves, and how many requests a run must send. The student is tiny-gpt2 (built from a config), one epoch,
on a task file of 12 coin-flip training questions (three of each difficulty) and 2 test questions; each
test trains one to three students (slow: tens of seconds each on a busy 2-core machine).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from ftcot.curate.sources import load_teacher_records
from ftcot.experiment.config import load_config
from ftcot.experiment.results import write_results
from ftcot.experiment.runner import Experiment
from ftcot.tasks import load_task
from tests.cli import run_ftcot
from tests.teach.coin_teacher import CoinTeacher, difficulty, expected_samples, follows_hint, gold, sampled_answer

pytestmark = pytest.mark.slow

TRAIN, TEST = 12, 2
STUDENT = {"spec": "tiny-gpt2", "epochs": 1, "batch_size": 4, "max_length": 256, "max_new_tokens": 8,
           "dropout": 0.0, "bf16": False, "device": "cpu"}


@pytest.fixture
def teacher():
    server = CoinTeacher()
    yield server
    server.close()


def _task_file(tmp_path: Path, data_root: Path) -> Path:
    """A task of one's own: the first three coin-flip training questions of each difficulty for the coin
    teacher (always right, right half or a quarter of the time, never), and the first test questions."""
    task = load_task("coin_flip", data_root)
    train = [s for level in range(4) for s in [s for s in task.split("train") if difficulty(s.question) == level][:3]]
    rows = [{"question": s.question, "answer": s.answer, "split": "train"} for s in train]
    rows += [{"question": s.question, "answer": s.answer, "split": "test"} for s in task.split("test")[:TEST]]
    path = tmp_path / "coins.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _config(task_file: Path, teacher: dict, **extra) -> dict:
    return {"name": "beyond", "tasks": [{"spec": str(task_file), "answer_type": "yes/no"}], "teachers": [teacher],
            "methods": ["ft_cot"], "students": [STUDENT], "teacher_row": False,
            "evaluate": {"limit": TEST, "max_new_tokens": 8, "device": "cpu"}, **extra}


def _run(tmp_path: Path, config: dict, data_root: Path) -> tuple[Path, Path, str]:
    """The experiment through the real command: its config, OUT, and what it printed."""
    path, out = tmp_path / "exp.yaml", tmp_path / "out"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = run_ftcot("run", path, "--out", out, "--data-dir", data_root)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "Traceback" not in result.stderr
    return path, out, result.stdout + result.stderr


def _rerun_sends_nothing(path: Path, out: Path, data_root: Path, teacher: CoinTeacher) -> None:
    """Run again (the Python API, as tests/experiment/test_run.py): every stage done earlier, no request sent."""
    sent = teacher.count()
    experiment = Experiment(load_config(path), out, data_root)
    assert {outcome.status for outcome in experiment.run()} == {"done earlier"}
    write_results(experiment)
    assert teacher.count() == sent


def _questions(task_file: Path) -> dict[int, str]:
    return {s.index: s.question for s in load_task(str(task_file), answer_type="yes/no").split("train")}


def _rows(directory: Path) -> list[dict]:
    return [json.loads(line) for name in ("train.jsonl", "val.jsonl") for line in (directory / name).open()]


def test_an_adaptive_teacher_samples_easy_questions_less_and_a_rerun_sends_nothing(tmp_path, data_root, teacher):
    task_file = _task_file(tmp_path, data_root)
    coin = {"spec": "openai:coin", "name": "coin", "base_url": teacher.base_url, "max_tokens": 32,
            "until_correct": 1, "max_samples": 3}
    path, out, printed = _run(tmp_path, _config(task_file, coin), data_root)
    experiment = Experiment(load_config(path), out, data_root)
    [adaptive] = [s for s in experiment.plan.of_kind("teach") if s.inputs["temperature"] > 0]
    assert adaptive.inputs["temperature"] == 0.7 and experiment.done(adaptive)["samples"] == 3

    questions = _questions(task_file)
    drawn = {i: expected_samples(q, 1, 3) for i, q in questions.items()}
    per_question: dict[int, int] = {}
    for record in load_teacher_records(experiment.stage_dir(adaptive))[0]:
        per_question[record["sample_index"]] = per_question.get(record["sample_index"], 0) + 1
    assert per_question == drawn
    easy = [i for i, q in questions.items() if difficulty(q) == 0]
    never = [i for i, q in questions.items() if difficulty(q) == 3]
    assert easy and never and {drawn[i] for i in easy} == {1} and {drawn[i] for i in never} == {3}
    summary = json.loads((experiment.stage_dir(adaptive) / "adaptive.json").read_text())
    assert summary["samples_spent"] == sum(drawn.values()) < 3 * TRAIN
    assert f"(adaptive: {sum(drawn.values())} samples for {TRAIN} questions)" in printed

    # Only the adaptive stage is read by the cell: what it sampled is what trained the student.
    [curate] = experiment.plan.of_kind("curate")
    assert curate.deps == (adaptive.key,)
    assert {r["sample_index"] for r in _rows(experiment.stage_dir(curate))} <= {
        i for i, q in questions.items() if difficulty(q) < 3}
    assert teacher.count() == 2 * sum(drawn.values())  # a rationale and its answer each; no unread stage paid

    [cell] = list(csv.DictReader((out / "results.csv").open()))
    assert (cell["method"], cell["teacher"], cell["n"]) == ("ft_cot", "coin", str(TEST))
    assert "| tiny-gpt2, Fine-tune-CoT | " in (out / "results.md").read_text()  # one teacher: not named
    _rerun_sends_nothing(path, out, data_root, teacher)


def test_a_rationalizing_teacher_fills_the_unsolved_questions_and_a_rerun_sends_nothing(tmp_path, data_root,
                                                                                          teacher):
    task_file = _task_file(tmp_path, data_root)
    coin = {"spec": "openai:coin", "name": "coin", "base_url": teacher.base_url, "max_tokens": 32,
            "rationalize": True}
    path, out, printed = _run(tmp_path, _config(task_file, coin), data_root)
    experiment = Experiment(load_config(path), out, data_root)
    [teach] = experiment.plan.of_kind("teach")
    questions = _questions(task_file)
    unsolved = sorted(i for i, q in questions.items() if sampled_answer(q, None) != gold(q))  # greedy: wrong
    assert 0 < len(unsolved) < TRAIN
    # The teacher ignores the hint on its hardest questions: those stay unsolved, and out of the data.
    followed = [i for i in unsolved if follows_hint(questions[i])]
    report = json.loads((experiment.stage_dir(teach) / "rationalize.json").read_text())
    assert (report["asked"], report["rationalized"]) == (len(unsolved), len(followed))
    assert teacher.count() == 2 * TRAIN + 2 * len(unsolved)
    assert f"rationalized {len(followed)} of {len(unsolved)} unsolved" in printed

    [curate] = experiment.plan.of_kind("curate")
    rows = _rows(experiment.stage_dir(curate))
    marked = sorted(r["sample_index"] for r in rows if r["rationalized"])
    assert marked == followed and all("Hint" not in r["prompt"] for r in rows)
    assert all(r["answer"] == gold(questions[r["sample_index"]]) for r in rows)
    curation = json.loads((experiment.stage_dir(curate) / "curation.json").read_text())
    assert curation["rationalized"]["kept"] == len(followed)
    assert [r["teacher"] for r in csv.DictReader((out / "results.csv").open())] == ["coin"]
    _rerun_sends_nothing(path, out, data_root, teacher)


def test_a_label_axis_gives_a_cell_per_label(tmp_path, data_root, teacher):
    task_file = _task_file(tmp_path, data_root)
    coin = {"spec": "openai:coin", "name": "coin", "base_url": teacher.base_url, "max_tokens": 32}
    config = _config(task_file, coin, diverse={"D": [3]}, curate={"label": ["gold", "majority"]})
    path, out, _ = _run(tmp_path, config, data_root)
    assert teacher.count() == 2 * TRAIN * (1 + 3)  # greedy and D = 3, each label curating from the same stores
    # The greedy data (one rationale a question) can have no majority: gold only, said once in the results.
    cells = sorted((r["teacher"], r["D"]) for r in csv.DictReader((out / "results.csv").open()))
    assert cells == [("coin", ""), ("coin", "3"), ("coin (majority labels)", "3")]
    assert ("- not run: coins ft_cot: majority labels need 2 or more rationales a question (min_votes); coin's greedy data is "
            "curated with gold only") in (out / "results.md").read_text()

    experiment = Experiment(load_config(path), out, data_root)
    questions = _questions(task_file)
    by_label = {s.inputs.get("label", "gold"): _rows(experiment.stage_dir(s))
                for s in experiment.plan.of_kind("curate") if s.inputs["D"] == 3}
    # Gold keeps the rationales that reach the gold answer; majority those that reach the teacher's own
    # majority, which is wrong on the questions the teacher never solves.
    assert all(r["answer"] == gold(questions[r["sample_index"]]) for r in by_label["gold"])
    assert {r["label"] for r in by_label["majority"]} == {"majority"}
    wrong = [r for r in by_label["majority"] if difficulty(questions[r["sample_index"]]) == 3]
    assert wrong and all(r["answer"] != gold(questions[r["sample_index"]]) for r in wrong)
    _rerun_sends_nothing(path, out, data_root, teacher)
