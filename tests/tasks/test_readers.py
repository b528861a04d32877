"""Every built-in task reproduces, sample by sample, what the paper's teacher saw."""

from __future__ import annotations

import json

import pytest

from ftcot.errors import FtcotError
from ftcot.tasks import BUILTIN_TASKS, Category, load_task
from tests.conftest import TEACHER_DIR

SIZES = {  # samples in unified order that ship with the data (AQuA: test only)
    "single_eq": 508, "addsub": 395, "multiarith": 600, "gsm8k": 8792, "aqua": 254, "svamp": 1000,
    "date_understanding": 369, "tracking_shuffled_objects": 750, "last_letter_concatenation": 500,
    "coin_flip": 500, "commonsense_qa": 10962, "strategy_qa": 2290,
}


def test_registry_has_the_twelve_tasks_in_four_groups():
    assert set(BUILTIN_TASKS) == set(SIZES)
    groups = {}
    for spec in BUILTIN_TASKS.values():
        groups.setdefault(spec.category, set()).add(spec.key)
    assert groups[Category.SYMBOLIC] == {"coin_flip", "last_letter_concatenation"}
    assert groups[Category.COMMON_SENSE] == {"commonsense_qa", "strategy_qa"}
    assert groups[Category.OTHER] == {"date_understanding", "tracking_shuffled_objects"}
    assert len(groups[Category.ARITHMETIC]) == 6


@pytest.mark.parametrize("key", sorted(SIZES))
@pytest.mark.parametrize("method", ["zs_cot", "zs"])
def test_question_and_answer_match_every_teacher_record(data_root, key, method):
    task = load_task(key, data_root)
    assert len(task.samples) == SIZES[key]
    records = [json.loads(line) for line in (TEACHER_DIR / method / f"{key}.jsonl").open()]
    assert records
    for record in records:
        sample = task.samples[record["sample_index"]]
        assert (sample.question, sample.answer) == (record["question"], record["answer"]), record["sample_index"]


def test_date_choices_are_shuffled_not_always_a(data_root):
    answers = [s.answer for s in load_task("date_understanding", data_root).samples.values()]
    assert set(answers) == set("ABCDEF")


def test_aqua_train_split_is_a_clear_error_and_test_split_works(data_root):
    task = load_task("aqua", data_root)
    assert len(task.split("test")) == 254
    with pytest.raises(FtcotError, match="AQuA's train file.*use --split test"):
        task.split("train")
