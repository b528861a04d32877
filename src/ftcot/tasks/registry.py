"""The 12 benchmarks of the paper, declared once each.

Adding a benchmark is one entry here (and a reader in ``readers.py`` if its
raw layout is new). Keys match the shared data's directory names.
"""

from __future__ import annotations

from ftcot.errors import unknown_name
from ftcot.tasks import readers
from ftcot.tasks.spec import AnswerType, Category, TaskSpec

ARABIC = "\nTherefore, the answer (arabic numerals) is"
YES_NO = "\nTherefore, the answer (Yes or No) is"


def among_trigger(letters: str) -> str:
    return f"\nTherefore, among A through {letters[-1]}, the answer is"


def _arithmetic(key: str, title: str, reader, files, float_compare: bool) -> TaskSpec:
    return TaskSpec(key, title, Category.ARITHMETIC, AnswerType.NUMBER, ARABIC, reader, files,
                    float_compare=float_compare)


def _multiple_choice(key, title, category, letters, reader, files, **extra) -> TaskSpec:
    return TaskSpec(key, title, category, AnswerType.LETTER, among_trigger(letters), reader, files,
                    letters=letters, **extra)


BUILTIN_TASKS: dict[str, TaskSpec] = {
    spec.key: spec
    for spec in [
        _arithmetic("single_eq", "SingleEq", readers.mawps("questions.json"), ("questions.json",), True),
        _arithmetic("addsub", "AddSub", readers.mawps("AddSub.json"), ("AddSub.json",), True),
        _arithmetic("multiarith", "MultiArith", readers.mawps("MultiArith.json"), ("MultiArith.json",), False),
        _arithmetic("gsm8k", "GSM8K", readers.read_gsm8k, ("train.jsonl", "test.jsonl"), False),
        _multiple_choice(
            "aqua", "AQuA", Category.ARITHMETIC, "ABCDE", readers.read_aqua, ("test.json",),
            unavailable=((range(0, readers.AQUA_TRAIN_SIZE),
                          "AQuA's train file (train.json, 97,467 lines) is not part of the data; "
                          "use --split test"),),
        ),
        _arithmetic("svamp", "SVAMP", readers.read_svamp, ("SVAMP.json",), True),
        _multiple_choice("date_understanding", "Date Understanding", Category.OTHER, "ABCDEF",
                         readers.read_date_understanding, ("task.json",)),
        _multiple_choice("tracking_shuffled_objects", "Tracking Shuffled Objects", Category.OTHER, "ABC",
                         readers.read_tracking_shuffled_objects, ("task.json",)),
        TaskSpec("last_letter_concatenation", "Last Letter Concatenation", Category.SYMBOLIC,
                 AnswerType.TEXT, "\nTherefore, the answer is",
                 readers.symbolic("last_letters.json"), ("last_letters.json",)),
        TaskSpec("coin_flip", "Coin Flip", Category.SYMBOLIC, AnswerType.YES_NO, YES_NO,
                 readers.symbolic("coin_flip.json"), ("coin_flip.json",)),
        _multiple_choice("commonsense_qa", "CommonsenseQA", Category.COMMON_SENSE, "ABCDE",
                         readers.read_commonsense_qa, ("train_rand_split.jsonl", "dev_rand_split.jsonl")),
        TaskSpec("strategy_qa", "StrategyQA", Category.COMMON_SENSE, AnswerType.YES_NO, YES_NO,
                 readers.read_strategy_qa, ("task.json",)),
    ]
}


def get_spec(key: str) -> TaskSpec:
    try:
        return BUILTIN_TASKS[key]
    except KeyError:
        raise unknown_name("task", key, BUILTIN_TASKS) from None
