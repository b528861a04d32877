"""Curation: which rationales are kept, how they are laid out, where they are written."""

from __future__ import annotations

import json

import pytest

from ftcot.curate import curate
from ftcot.curate.select import DUPLICATE, NOT_TRAIN, OUTSIDE_SUBSET, OVER_LIMIT, TOO_LONG, WRONG_ANSWER
from ftcot.scoring import score
from ftcot.tasks import load_task
from ftcot.templates import get_template
from tests.cli import assert_one_line_error, run_ftcot
from tests.conftest import TEACHER_DIR


@pytest.fixture(scope="module")
def coin_flip(data_root):
    return load_task("coin_flip", data_root)


@pytest.fixture(scope="module")
def records():
    return [json.loads(line) for line in (TEACHER_DIR / "zs_cot" / "coin_flip.jsonl").open()]


def test_keeps_exactly_the_correct_training_rationales(coin_flip, records):
    train, val, summary = curate(coin_flip, get_template("ft_cot"), records)
    train_indices = set(coin_flip.split_indices("train"))
    correct = {r["sample_index"] for r in records
               if r["sample_index"] in train_indices and score(r["answer_completion"], r["answer"], coin_flip.spec).correct}
    assert {e.sample_index for e in train + val} == correct
    assert summary["kept"] == len(correct) == 320  # as in the offline pilot
    assert summary["dropped"] == {NOT_TRAIN: 150, WRONG_ANSWER: 30}


def test_a_training_subset_says_its_left_out_questions_are_outside_it(coin_flip, records):
    """Records of training questions outside a train_size subset are not 'not a training question'."""
    train, val, summary = curate(coin_flip, get_template("ft_cot"), records, train_size=16)
    kept = {e.sample_index for e in train + val}
    assert len(kept) <= 16
    assert summary["dropped"][NOT_TRAIN] == 150  # the test questions, as without a subset
    assert summary["dropped"][OUTSIDE_SUBSET] == 350 - 16
    assert summary["kept"] + sum(summary["dropped"].values()) == len(records)


def test_layout_follows_the_spec_and_carries_the_gold_answer(coin_flip, records):
    train, _, _ = curate(coin_flip, get_template("ft_cot"), records)
    example = train[0]
    record = next(r for r in records if r["sample_index"] == example.sample_index)
    assert example.prompt == record["question"].strip() + " ###"
    assert example.completion == f" {record['reasoning_completion'].strip()} --> {record['answer']}"
    template = get_template("ft_cot")
    assert template.format_prompt(example.question, encoder_decoder=True) == record["question"].strip()
    assert template.format_completion(example.answer, example.rationale, encoder_decoder=True) == \
        f"{record['reasoning_completion'].strip()} --> {record['answer']}"


def test_gold_answer_not_teacher_wording(data_root):
    task = load_task("multiarith", data_root)
    index = task.split_indices("train")[0]
    gold = task.samples[index].answer
    record = {"sample_index": index, "answer": gold, "reasoning_completion": "So it is x.",
              "answer_completion": f" {gold} apples, I think."}
    train, val, _ = curate(task, get_template("ft_cot"), [record], val_fraction=0)
    assert train[0].completion.endswith(f"--> {gold}")


def test_diverse_samples_dedupe_and_cap(coin_flip):
    index = coin_flip.split_indices("train")[0]
    sample = coin_flip.samples[index]
    flip = "yes" if sample.answer == "no" else "no"

    def rec(n, rationale, answer):
        return {"sample_index": index, "sample_number": n, "answer": sample.answer,
                "reasoning_completion": rationale, "answer_completion": f" {answer}"}

    records = [rec(0, "a", sample.answer), rec(1, " a ", sample.answer), rec(2, "b", flip),
               rec(3, "c", sample.answer), rec(4, "d", sample.answer), rec(5, "e" * 400, sample.answer)]
    train, _, summary = curate(coin_flip, get_template("ft_cot"), records, max_per_question=2,
                               max_rationale_tokens=50, val_fraction=0)
    assert [e.rationale for e in train] == ["a", "c"]
    assert [e.sample_number for e in train] == [0, 3]
    assert summary["dropped"] == {DUPLICATE: 1, WRONG_ANSWER: 1, OVER_LIMIT: 1, TOO_LONG: 1}


def test_validation_is_a_seeded_slice_of_training_questions(coin_flip, records):
    train, val, summary = curate(coin_flip, get_template("ft_cot"), records, val_fraction=0.1, seed=3)
    test = set(coin_flip.split_indices("test"))
    val_questions = set(summary["val_questions"])
    # 10% of the 320 questions with a correct rationale: every held-out question has an example.
    assert summary["questions_with_examples"] == 320
    assert len(val_questions) == 32 and not val_questions & test
    assert {e.sample_index for e in val} == val_questions
    assert not {e.sample_index for e in train} & val_questions
    again = curate(coin_flip, get_template("ft_cot"), records, val_fraction=0.1, seed=3)[2]
    assert again["val_questions"] == summary["val_questions"]


def test_vanilla_fine_tune_uses_every_training_question(coin_flip):
    train, val, _ = curate(coin_flip, get_template("ft"), val_fraction=0)
    assert len(train) == 350 and not val
    assert all(e.completion in (" yes", " no") and e.prompt.endswith(" ###") for e in train)


def test_cli_writes_the_data_dir(tmp_path, data_root):
    out = tmp_path / "data"
    result = run_ftcot("curate", TEACHER_DIR / "zs_cot" / "coin_flip.jsonl", "--task", "coin_flip",
                       "--out", out, "--data-dir", data_root)
    assert result.returncode == 0, result.stderr
    train = [json.loads(line) for line in (out / "train.jsonl").open()]
    val = [json.loads(line) for line in (out / "val.jsonl").open()]
    chat = [json.loads(line) for line in (out / "openai_chat.jsonl").open()]
    summary = json.loads((out / "curation.json").read_text())
    assert len(train) + len(val) == summary["kept"] == 320
    assert len(chat) == len(train)
    assert chat[0]["messages"][0] == {"role": "user", "content": train[0]["prompt"]}
    assert chat[0]["messages"][1]["content"] == train[0]["completion"].strip()
    assert train[0]["teacher_record"].startswith("coin_flip.jsonl:")


def test_cli_needs_rationales_for_cot_and_a_task_for_jsonl(tmp_path, data_root):
    assert_one_line_error(run_ftcot("curate", "--task", "coin_flip", "--out", tmp_path, "--data-dir", data_root),
                          "needs teacher rationales")
    assert_one_line_error(run_ftcot("curate", TEACHER_DIR / "zs_cot" / "coin_flip.jsonl", "--out", tmp_path,
                                    "--data-dir", data_root), "--task")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"sample_index": 1, "answer": "yes"}\n')
    assert_one_line_error(run_ftcot("curate", bad, "--task", "coin_flip", "--out", tmp_path / "o",
                                    "--data-dir", data_root), f"{bad}:1", "reasoning_completion")
