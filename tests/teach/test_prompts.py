"""The prompt builders reproduce every recorded text-davinci-002 prompt exactly."""

from __future__ import annotations

import pytest

from ftcot.errors import FtcotError
from ftcot.jsonl import read_jsonl
from ftcot.tasks import BUILTIN_TASKS, get_spec
from ftcot.teach.prompts import (
    answer_prompt,
    few_shot_cot_prompt,
    load_few_shot_exemplars,
    reasoning_prompt,
    zero_shot_prompt,
)
from tests.conftest import TEACHER_DIR


@pytest.mark.parametrize("key", sorted(BUILTIN_TASKS))
def test_zero_shot_cot_prompts_match_every_record(key):
    trigger = get_spec(key).trigger
    count = 0
    for line, record in read_jsonl(TEACHER_DIR / "zs_cot" / f"{key}.jsonl"):
        stage1 = reasoning_prompt(record["question"])
        assert stage1 == record["prompt"], f"{key}:{line} stage-1 prompt differs"
        assert answer_prompt(stage1, record["reasoning_completion"], trigger) == record["answer_prompt"], (
            f"{key}:{line} stage-2 prompt differs")
        count += 1
    assert count > 0


@pytest.mark.parametrize("key", sorted(BUILTIN_TASKS))
def test_zero_shot_prompts_match_every_record(key):
    trigger = get_spec(key).trigger
    count = 0
    for line, record in read_jsonl(TEACHER_DIR / "zs" / f"{key}.jsonl"):
        assert zero_shot_prompt(record["question"], trigger) == record["prompt"], f"{key}:{line} differs"
        count += 1
    assert count > 0


def test_zero_shot_trigger_is_capitalised_without_therefore():
    assert zero_shot_prompt("2+2?", get_spec("addsub").trigger) == "Q: 2+2?\nA: The answer (arabic numerals) is"
    assert zero_shot_prompt("x", get_spec("aqua").trigger) == "Q: x\nA: Among A through E, the answer is"


def test_few_shot_cot_prompt_appends_question_to_exemplars(data_root):
    exemplars = load_few_shot_exemplars(data_root, "coin_flip")
    assert exemplars.startswith("Q: ") and exemplars.rstrip().endswith("The answer is yes.")
    prompt = few_shot_cot_prompt("A coin is heads up. Is it?", exemplars)
    assert prompt == exemplars + "\nQ: A coin is heads up. Is it?\nA:"


@pytest.mark.parametrize("key", sorted(set(BUILTIN_TASKS) - {"tracking_shuffled_objects"}))
def test_every_task_but_shuffled_objects_has_exemplars(data_root, key):
    assert "The answer is" in load_few_shot_exemplars(data_root, key)


def test_shuffled_objects_has_no_few_shot_exemplars(data_root):
    with pytest.raises(FtcotError, match="No Few-shot-CoT exemplars for task 'tracking_shuffled_objects'") as info:
        load_few_shot_exemplars(data_root, "tracking_shuffled_objects")
    assert "\n" not in str(info.value)
