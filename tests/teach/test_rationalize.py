"""Rationalization (ftcot teach --rationalize): hinted rationales for the questions the teacher got wrong.

The teacher is tests/teach/coin_teacher.py (a real HTTP server whose every sample is computable: see why
there); the slow test runs Gemma 3 270M on llama.cpp.
"""

from __future__ import annotations

import json

import pytest

from ftcot.curate import curate
from ftcot.curate.select import ALREADY_COVERED, RATIONALIZED_OFF
from ftcot.curate.sources import load_teacher_records
from ftcot.tasks import load_task
from ftcot.teach.prompts import hinted_question, reasoning_prompt, strip_hint
from ftcot.templates import get_template
from tests.cli import run_ftcot
from tests.teach.coin_teacher import CoinTeacher, follows_hint, gold, sampled_answer
from tests.teach.test_adaptive import coin_train_file, teach_args


@pytest.fixture
def teacher():
    server = CoinTeacher()
    yield server
    server.close()


def test_the_hint_is_in_the_rationale_prompt_only():
    prompt = reasoning_prompt(hinted_question("Is the coin still heads up?", "no"))
    assert prompt == "Q: Is the coin still heads up? (Hint: the answer is no.)\nA: Let's think step by step."
    assert strip_hint(prompt) == reasoning_prompt("Is the coin still heads up?")
    plain = reasoning_prompt("What is (Hint: the answer is 3.) in words?")
    assert strip_hint(plain) == plain  # only a hint at the end of the question is one


def test_unsolved_training_questions_are_asked_again_with_the_hint_and_curated_as_rationalized(tmp_path, teacher):
    task_file, out = coin_train_file(tmp_path, 16), tmp_path / "run"
    task = load_task(str(task_file), answer_type="yes/no")
    questions = {s.index: s.question for s in task.split("train")}
    result = run_ftcot(*teach_args(task_file, teacher, out, "--samples", "2", "--rationalize", "1"))
    assert result.returncode == 0, result.stderr

    unsolved = [i for i, q in questions.items() if all(sampled_answer(q, m) != gold(q) for m in range(2))]
    assert 0 < len(unsolved) < 16
    hinted = [b for b in teacher.requests() if "(Hint:" in b["prompt"]]
    # One hinted rationale per unsolved question (T=0.7, seed 0); its answer is asked without the hint.
    assert len(hinted) == len(unsolved)
    assert teacher.count() == 16 * 2 * 2 + 2 * len(unsolved)
    answers = [b for b in teacher.requests() if b["prompt"].rstrip().endswith(" is")]
    assert not any("(Hint:" in b["prompt"] for b in answers)
    # The teacher ignores the hint on its hardest questions: those hinted rationales are wrong, and stay out.
    followed = [i for i in unsolved if follows_hint(questions[i])]
    assert 0 < len(followed) < len(unsolved)
    report = json.loads((out / "rationalize.json").read_text())
    assert (report["asked"], report["rationalized"]) == (len(unsolved), len(followed))
    assert report["solved_after"] == 16 - (len(unsolved) - len(followed)) and "rationalization:" in result.stdout

    records, _ = load_teacher_records(out)
    marked = [r for r in records if r.get("rationalized")]
    assert sorted(r["sample_index"] for r in marked) == sorted(unsolved)  # every hinted chain is a record
    train, val, summary = curate(task, get_template("ft_cot"), records, val_fraction=0)
    rows = {e.sample_index: e for e in train if e.rationalized}
    assert sorted(rows) == sorted(followed)  # only the right ones are training data
    for index, row in rows.items():
        assert row.question == questions[index] and "Hint" not in row.prompt  # trained without the hint
        assert row.answer == gold(questions[index])
    assert summary["rationalized"] == {"records": len(unsolved), "used": True, "kept": len(followed),
                                       "questions": len(followed)}
    assert summary["yield_histogram"].get("0", 0) == len(unsolved) - len(followed)

    left_out, _, without = curate(task, get_template("ft_cot"), records, val_fraction=0, rationalized=False)
    assert not any(e.rationalized for e in left_out) and without["dropped"][RATIONALIZED_OFF] == len(unsolved)
    assert without["yield_histogram"]["0"] == len(unsolved)

    again = run_ftcot(*teach_args(task_file, teacher, out, "--samples", "2", "--rationalize", "1"))
    assert again.returncode == 0, again.stderr
    assert teacher.count() == 16 * 2 * 2 + 2 * len(unsolved)  # stored, never asked twice

    # Data written through the command carries the mark, so a user can leave those rows out.
    data = tmp_path / "data"
    assert run_ftcot("curate", out, "--task", task_file, "--answer-type", "yes/no", "--out", data,
                     "--val-fraction", "0").returncode == 0
    rows = [json.loads(line) for line in (data / "train.jsonl").open()]
    assert sum(r["rationalized"] for r in rows) == len(followed)


def test_a_question_solved_by_a_later_top_up_keeps_only_its_own_rationales(tmp_path, teacher):
    task_file, out = coin_train_file(tmp_path, 16), tmp_path / "run"
    task = load_task(str(task_file), answer_type="yes/no")
    assert run_ftcot(*teach_args(task_file, teacher, out, "--rationalize", "1")).returncode == 0
    assert run_ftcot(*teach_args(task_file, teacher, out, "--samples", "4")).returncode == 0
    records, _ = load_teacher_records(out)
    train, _, summary = curate(task, get_template("ft_cot"), records, val_fraction=0)
    solved_later = {s.index for s in task.split("train")
                    if sampled_answer(s.question, 0) != gold(s.question)
                    and any(sampled_answer(s.question, m) == gold(s.question) for m in range(1, 4))}
    assert solved_later and summary["dropped"][ALREADY_COVERED] == len(solved_later)
    assert not any(e.rationalized for e in train if e.sample_index in solved_later)


@pytest.mark.slow
def test_rationalization_with_gemma_on_llama_cpp(tmp_path, llama_server):
    """A real small teacher: hinted requests go out only for unsolved questions, their answers unhinted."""
    task_file, out = coin_train_file(tmp_path, 4), tmp_path / "run"
    common = ["teach", "--task", task_file, "--answer-type", "yes/no", "--split", "train", "--teacher",
              "openai:gemma", "--teacher-args", f"base_url={llama_server}", "--teacher-args", "max_tokens=24", "--out", out]
    result = run_ftcot(*common, "--rationalize", "1")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "rationalize.json").read_text())
    assert report["training_questions"] == 4 and report["asked"] == 4 - report["solved_before"]
    records, _ = load_teacher_records(out)
    hinted = [r for r in records if r.get("rationalized")]
    assert len(hinted) == report["asked"]
    assert all("(Hint: the answer is" in r["prompt"] and "Hint" not in r["answer_prompt"] for r in hinted)
    again = run_ftcot(*common, "--rationalize", "1")
    assert again.returncode == 0 and "0 requests" in again.stdout
