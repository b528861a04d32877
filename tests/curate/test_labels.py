"""Majority labels (self-consistency): curate --label majority|majority_and_gold on real teacher records and stores.

Sampled rationales come from tests/teach/coin_teacher.py (a real HTTP server whose every sample is computable:
see why there) through the real ``ftcot teach``; the one-sample case is the recorded text-davinci-002 outputs.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from ftcot.curate import curate
from ftcot.scoring import majority_votes
from ftcot.curate.select import DISAGREES, NO_GOLD, NO_MAJORITY
from ftcot.curate.sources import load_teacher_records
from ftcot.tasks import load_task
from ftcot.templates import get_template
from tests.cli import assert_one_line_error, run_ftcot
from tests.conftest import TEACHER_DIR
from tests.teach.coin_teacher import CoinTeacher, gold, sampled_answer
from tests.teach.test_adaptive import coin_train_file, teach_args


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    """A real store: 24 coin-flip training questions, D = 4 sampled rationales each, and the task."""
    tmp = tmp_path_factory.mktemp("labels")
    server = CoinTeacher()
    try:
        task_file, out = coin_train_file(tmp, 24), tmp / "run"
        result = run_ftcot(*teach_args(task_file, server, out, "--samples", "4"))
        assert result.returncode == 0, result.stderr
    finally:
        server.close()
    return load_task(str(task_file), answer_type="yes/no"), load_teacher_records(out)[0], task_file, out


def expected_label(question: str) -> str:
    votes = Counter(sampled_answer(question, m) for m in range(4)).most_common()
    return votes[0][0] if votes[0][1] >= 2 and (len(votes) == 1 or votes[1][1] < votes[0][1]) else ""


def test_majority_labels_keep_the_rationales_that_agree_and_report_how_often_they_are_right(sampled):
    task, records, _, _ = sampled
    questions = {s.index: s.question for s in task.split("train")}
    labels = {i: expected_label(q) for i, q in questions.items()}
    assert {i: v.label for i, v in majority_votes(records, task.spec).items()} == labels
    labelled = [i for i in labels if labels[i]]
    right = [i for i in labelled if labels[i] == gold(questions[i])]
    assert 0 < len(right) < len(labelled) < len(questions)  # right, wrong and tied majorities all occur

    train, _, summary = curate(task, get_template("ft_cot"), records, val_fraction=0, label="majority")
    agreeing = sum(sampled_answer(questions[i], m) == labels[i] for i in labelled for m in range(4))
    assert summary["kept"] == agreeing
    assert all(e.answer == labels[e.sample_index] and e.label == "majority" for e in train)
    assert summary["dropped"][NO_MAJORITY] == 4 * (len(questions) - len(labelled))
    assert summary["dropped"][DISAGREES] == 4 * len(labelled) - agreeing
    report = summary["pseudo_labels"]
    assert (report["questions"], report["labelled"], report["majority_correct"]) == (
        len(questions), len(labelled), len(right))
    assert report["majority_accuracy"] == pytest.approx(len(right) / len(labelled), abs=1e-4)
    assert report["answered"] == 1.0

    both, _, summary = curate(task, get_template("ft_cot"), records, val_fraction=0, label="majority_and_gold")
    assert {e.sample_index for e in both} == set(right)
    assert all(e.answer == gold(questions[e.sample_index]) and e.label == "gold" for e in both)
    gold_only, _, _ = curate(task, get_template("ft_cot"), records, val_fraction=0)
    assert {(e.sample_index, e.sample_number) for e in both} <= {(e.sample_index, e.sample_number) for e in gold_only}


def test_a_task_without_training_answers_trains_on_majority_labels_only(sampled, tmp_path):
    _, _, _, out = sampled
    unlabelled = coin_train_file(tmp_path, 24, answers=False)
    common = ["curate", out, "--task", unlabelled, "--answer-type", "yes/no", "--val-fraction", "0"]
    refused = run_ftcot(*common, "--out", tmp_path / "gold")
    assert_one_line_error(refused, "No training examples", NO_GOLD)
    result = run_ftcot(*common, "--label", "majority", "--out", tmp_path / "majority")
    assert result.returncode == 0, result.stderr
    assert "majority answers (--label majority)" in result.stdout
    rows = [json.loads(line) for line in (tmp_path / "majority" / "train.jsonl").open()]
    questions = {s.index: s.question for s in load_task(str(unlabelled), answer_type="yes/no").split("train")}
    assert rows and all(r["answer"] == expected_label(questions[r["sample_index"]]) for r in rows)
    curation = json.loads((tmp_path / "majority" / "curation.json").read_text())
    assert curation["pseudo_labels"]["labelled_with_gold"] == 0 and curation["pseudo_labels"]["majority_accuracy"] is None


def test_one_recorded_sample_per_question_gives_no_majority(data_root):
    task = load_task("coin_flip", data_root)
    records = [json.loads(line) for line in (TEACHER_DIR / "zs_cot" / "coin_flip.jsonl").open()]
    train, _, summary = curate(task, get_template("ft_cot"), records, label="majority")
    assert train == [] and summary["dropped"][NO_MAJORITY] == len(task.split_indices("train"))
    assert summary["pseudo_labels"]["questions"] == 0
    _, _, paper = curate(task, get_template("ft_cot"), records)
    assert paper["kept"] == 320 and paper["label"] == "gold"  # the default is the paper's rule, unchanged


def test_min_votes_1_labels_each_question_with_its_one_chains_answer(data_root, tmp_path):
    """The recorded teacher, one rationale a question, no gold read: last letter keeps all 350 training
    rationales, and the report says 205 of those labels (58.6%) are right."""
    result = run_ftcot("curate", TEACHER_DIR / "zs_cot" / "last_letter_concatenation.jsonl", "--task",
                       "last_letter_concatenation", "--label", "majority:1", "--out",
                       tmp_path / "d", "--data-dir", data_root)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "d" / "curation.json").read_text())
    assert summary["kept"] == 350 and summary["pseudo_labels"]["min_votes"] == 1
    assert (summary["pseudo_labels"]["labelled"], summary["pseudo_labels"]["majority_correct"]) == (350, 205)
    rows = [json.loads(line) for d in ("train", "val") for line in (tmp_path / "d" / f"{d}.jsonl").open()]
    assert [r["label"] for r in rows] == ["majority"] * 350
    assert_one_line_error(run_ftcot("curate", TEACHER_DIR / "zs_cot" / "coin_flip.jsonl", "--task", "coin_flip",
                                    "--label", "majority:0", "--out", tmp_path / "e"), "--label min_votes: must be at least 1")


def test_an_unknown_label_is_one_line(tmp_path):
    result = run_ftcot("curate", TEACHER_DIR / "zs_cot" / "coin_flip.jsonl", "--task", "coin_flip", "--label",
                       "majorty", "--out", tmp_path / "d")
    assert_one_line_error(result, "--label: Unknown label 'majorty'", "Did you mean 'majority'")
