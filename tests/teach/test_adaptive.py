"""Adaptive sampling (ftcot teach --until-correct K --max-samples M) on a real store through the real command.

The teacher is tests/teach/coin_teacher.py (a real HTTP server whose every sample is computable: see why
there); the slow test runs Gemma 3 270M on llama.cpp.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftcot.curate import curate
from ftcot.curate.sources import load_teacher_records
from ftcot.tasks import load_task
from ftcot.teach.adaptive import QuestionChains, coverage
from ftcot.templates import get_template
from tests.cli import assert_one_line_error, run_ftcot
from tests.conftest import SHARED_DATA
from tests.teach.coin_teacher import CoinTeacher, difficulty, expected_samples, gold, sampled_answer


def coin_train_file(tmp_path: Path, n: int, answers: bool = True) -> Path:
    """The first ``n`` coin-flip training questions as a task of one's own (all training questions)."""
    path = tmp_path / "coins.jsonl"
    with path.open("w") as handle:
        for sample in load_task("coin_flip", SHARED_DATA).split("train")[:n]:
            row = {"question": sample.question, "split": "train"}
            if answers:
                row["answer"] = sample.answer
            handle.write(json.dumps(row) + "\n")
    return path


@pytest.fixture
def teacher():
    server = CoinTeacher()
    yield server
    server.close()


def teach_args(task: Path, server: CoinTeacher, out: Path, *extra: str) -> list:
    return ["teach", "--task", task, "--answer-type", "yes/no", "--split", "train", "--teacher", "openai:coin",
            "--teacher-args", f"base_url={server.base_url}", "--temperature", "0.7", "--out", out, *extra]


def test_each_question_is_sampled_until_it_has_k_correct_and_the_store_answers_for_fixed_d(tmp_path, teacher):
    task_file, out = coin_train_file(tmp_path, 16), tmp_path / "run"
    questions = [s.question for s in load_task(str(task_file), answer_type="yes/no").split("train")]
    assert {difficulty(q) for q in questions} == {0, 1, 2, 3}  # easy, hard and unsolvable questions

    result = run_ftcot(*teach_args(task_file, teacher, out, "--adaptive", "2/6"))
    assert result.returncode == 0, result.stderr

    drawn = [expected_samples(q, 2, 6) for q in questions]
    summary = json.loads((out / "adaptive.json").read_text())
    assert summary["samples_spent"] == sum(drawn)
    assert teacher.count() == 2 * sum(drawn)  # a rationale and its answer each, nothing asked twice
    assert min(drawn) == 2 and max(drawn) == 6  # easy questions stop at K, the rest go on to M
    # The fixed-D comparison, recomputed from the teacher's own answers for every D.
    right = {i: [sampled_answer(q, m) == gold(q) for m in range(6)] for i, q in enumerate(questions)}
    spec = load_task(str(task_file), answer_type="yes/no").spec
    by_D = coverage({i: QuestionChains(gold(q), tuple(f" {sampled_answer(q, m)}." for m in range(6)))
                     for i, q in enumerate(questions)}, spec, 2, 6)
    assert by_D == [sum(sum(r[:D]) >= 2 for r in right.values()) for D in range(1, 7)]
    assert summary["coverage_by_D"] == by_D and summary["covered"] == by_D[-1]
    fixed = next(D for D, n in enumerate(by_D, 1) if n >= by_D[-1])
    assert (summary["fixed_D"], summary["fixed_samples"]) == (fixed, fixed * 16)
    assert summary["samples_spent"] < summary["fixed_samples"]

    # Export and curate read every chain, however many a question got.
    records, _ = load_teacher_records(out)
    assert len(records) == sum(drawn)
    train, val, curation = curate(load_task(str(task_file), answer_type="yes/no"), get_template("ft_cot"), records)
    assert curation["kept"] == sum(sum(r[:n]) for r, n in zip(right.values(), drawn))
    assert curation["yield_histogram"].get("0", 0) == sum(not any(r) for r in right.values())

    again = run_ftcot(*teach_args(task_file, teacher, out, "--adaptive", "2/6"))
    assert again.returncode == 0, again.stderr
    assert teacher.count() == 2 * sum(drawn)  # a rerun sends nothing
    # A larger M tops up only the questions that still need it.
    more = run_ftcot(*teach_args(task_file, teacher, out, "--adaptive", "2/8"))
    assert more.returncode == 0, more.stderr
    assert teacher.count() == 2 * sum(expected_samples(q, 2, 8) for q in questions)


def test_a_fixed_d_run_shares_its_samples_with_adaptive_sampling(tmp_path, teacher):
    task_file, out = coin_train_file(tmp_path, 8), tmp_path / "run"
    assert run_ftcot(*teach_args(task_file, teacher, out, "--samples", "3")).returncode == 0
    assert teacher.count() == 8 * 3 * 2
    result = run_ftcot(*teach_args(task_file, teacher, out, "--adaptive", "1/5"))
    assert result.returncode == 0, result.stderr
    questions = [s.question for s in load_task(str(task_file), answer_type="yes/no").split("train")]
    assert teacher.count() == 2 * sum(max(3, expected_samples(q, 1, 5)) for q in questions)


def test_questions_without_gold_count_agreement_with_their_majority(tmp_path, teacher):
    task_file, out = coin_train_file(tmp_path, 8, answers=False), tmp_path / "run"
    result = run_ftcot(*teach_args(task_file, teacher, out, "--adaptive", "2/4"))
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "adaptive.json").read_text())
    # Two samples that agree are a majority of two: done. Two that disagree have no majority (0 "correct"),
    # so the question goes on to M.
    questions = [s.question for s in load_task(str(task_file), answer_type="yes/no").split("train")]
    drawn = [2 if sampled_answer(q, 0) == sampled_answer(q, 1) else 4 for q in questions]
    assert 2 in drawn and 4 in drawn
    assert summary["samples_spent"] == sum(drawn) and teacher.count() == 2 * sum(drawn)


@pytest.mark.parametrize("extra,fragment", [
    (["--adaptive", "2"], "--adaptive '2': expected K/M"),
    (["--adaptive", "3/2"], "max_samples 2 is below until_correct 3"),
    (["--adaptive", "1/4", "--samples", "2"], "give one or the other"),
])
def test_bad_adaptive_options_are_one_line_before_anything_is_sent(tmp_path, teacher, extra, fragment):
    result = run_ftcot(*teach_args(coin_train_file(tmp_path, 2), teacher, tmp_path / "run", *extra))
    assert_one_line_error(result, fragment)
    assert teacher.count() == 0 and not (tmp_path / "run").exists()


def test_greedy_adaptive_sampling_is_refused(tmp_path, teacher):
    args = teach_args(coin_train_file(tmp_path, 2), teacher, tmp_path / "run", "--adaptive", "1/4")
    args[args.index("0.7")] = "0"
    assert_one_line_error(run_ftcot(*args), "temperature 0.7")


@pytest.mark.slow
def test_adaptive_sampling_with_gemma_on_llama_cpp(tmp_path, llama_server):
    """A real small teacher: it stops early where Gemma is right, and every sample is stored once."""
    task_file, out = coin_train_file(tmp_path, 4), tmp_path / "run"
    result = run_ftcot("teach", "--task", task_file, "--answer-type", "yes/no", "--split", "train", "--teacher",
                       "openai:gemma", "--teacher-args", f"base_url={llama_server}", "--temperature", "0.7", "--teacher-args", "max_tokens=24",
                       "--adaptive", "1/3", "--out", out)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "adaptive.json").read_text())
    records, _ = load_teacher_records(out)
    assert len(records) == summary["samples_spent"] <= 12
    per_question: dict[int, list[dict]] = {}
    for record in records:
        per_question.setdefault(record["sample_index"], []).append(record)
    for chains in per_question.values():
        numbers = sorted(r["sample_number"] for r in chains)
        assert numbers == list(range(len(numbers)))
        # Sampling stopped at the first correct rationale, or at M.
        from ftcot.scoring import score
        from ftcot.tasks import get_spec
        correct = [score(r["answer_completion"], r["answer"], get_spec("coin_flip")).correct
                   for r in sorted(chains, key=lambda r: r["sample_number"])]
        assert len(correct) == 3 or (correct[-1] and not any(correct[:-1]))


def test_without_gold_the_fixed_D_comparison_judges_each_D_by_its_own_majority(data_root):
    """A fixed-D run without gold labels takes the majority of its D chains for the label (2 votes at least):
    one chain, or a 1–1 tie, gives none. Judged against the majority of all 5 chains instead, adaptive.json
    counted questions covered at small D that a real fixed-D run does not (here [1, 2, …] for [0, 1, …])."""
    spec = load_task("coin_flip", data_root).spec
    yes_then_no = QuestionChains("", (" yes.", " no.", " no.", " no.", " no."))
    assert yes_then_no.judged(spec, 2) == [False, False]  # yes / no: no majority yet
    assert yes_then_no.judged(spec, 3) == [False, True, True]  # "no", 2 votes
    assert yes_then_no.judged(spec) == [False, True, True, True, True]
    always_yes = QuestionChains("", (" yes.",) * 5)
    assert always_yes.judged(spec, 1) == [False] and always_yes.judged(spec, 2) == [True, True]
    assert coverage({0: yes_then_no, 1: always_yes}, spec, 1, 5) == [0, 1, 2, 2, 2]
    # With gold the first D chains are judged against it, whatever their majority.
    assert coverage({0: QuestionChains("no", yes_then_no.texts)}, spec, 1, 5) == [0, 1, 1, 1, 1]
