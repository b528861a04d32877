"""The paper's splits: shipped index files, and the seeded 70/30 rule that made them."""

from __future__ import annotations

import json

import pytest

from ftcot.errors import FtcotError
from ftcot.tasks import load_task
from ftcot.tasks.splits import derive_split

SEVENTY_THIRTY = ["single_eq", "addsub", "multiarith", "svamp", "date_understanding",
                  "tracking_shuffled_objects", "last_letter_concatenation", "coin_flip", "strategy_qa"]


@pytest.mark.parametrize("key", SEVENTY_THIRTY)
def test_rederived_default_split_equals_the_shipped_file(data_root, key):
    shipped = json.loads((data_root / "splits" / f"{key}__default.json").read_text())
    task = load_task(key, data_root)
    assert derive_split(sorted(task.samples)) == {"train": sorted(shipped["train"]), "test": sorted(shipped["test"])}


@pytest.mark.parametrize("key", ["gsm8k", "commonsense_qa"])
def test_official_splits_follow_the_file_boundary(data_root, key):
    task = load_task(key, data_root)
    train, test = task.split_indices("train"), task.split_indices("test")
    assert max(train) < min(test)
    assert len(train) + len(test) == len(task.samples)


@pytest.mark.parametrize("key", ["multiarith", "date_understanding"])
def test_template_split_shares_no_sample_between_train_and_test(data_root, key):
    task = load_task(key, data_root)
    train, test = task.split("train", "template"), task.split("test", "template")
    assert train and test
    assert not {s.index for s in train} & {s.index for s in test}
    assert task.split_indices("train", "template") != task.split_indices("train", "default")


def test_template_split_of_another_task_is_a_clear_error(data_root):
    with pytest.raises(FtcotError, match="no 'template' split"):
        load_task("coin_flip", data_root).split("train", "template")


def test_all_is_train_then_test(data_root):
    task = load_task("coin_flip", data_root)
    assert task.split_indices("all") == task.split_indices("train") + task.split_indices("test")
    assert len(task.split("all")) == 500
