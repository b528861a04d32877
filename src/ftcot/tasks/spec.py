"""Records of the task layer: a benchmark sample and a task's declaration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class Category(StrEnum):
    ARITHMETIC = "arithmetic"
    OTHER = "other"
    SYMBOLIC = "symbolic"
    COMMON_SENSE = "common sense"


class AnswerType(StrEnum):
    NUMBER = "number"
    LETTER = "letter"
    YES_NO = "yes/no"
    TEXT = "text"


@dataclass(frozen=True)
class Sample:
    """One benchmark question; ``index`` is its place in the task's unified order."""

    index: int
    question: str
    answer: str


# A reader turns a task's raw directory into its samples in unified order.
Reader = Callable[[Path], list[Sample]]


@dataclass(frozen=True)
class TaskSpec:
    """Everything ftcot needs to know about one benchmark, declared in one place.

    ``letters`` are the answer letters of a multiple-choice task (``"ABCDE"``);
    ``float_compare`` compares numeric answers as floats (the reference does so
    for some arithmetic sets and compares strings for the others).
    ``unavailable`` names unified-order ranges whose raw file is not published
    with the data (AQuA's 97k-line train file), with the reason.
    """

    key: str
    title: str
    category: Category
    answer_type: AnswerType
    trigger: str
    reader: Reader
    files: tuple[str, ...]
    letters: str = ""
    float_compare: bool = False
    unavailable: tuple[tuple[range, str], ...] = field(default=())

    @property
    def num_choices(self) -> int:
        """Choices a random guesser picks from (0: open answer, random accuracy 0)."""
        if self.answer_type is AnswerType.LETTER:
            return len(self.letters)
        if self.answer_type is AnswerType.YES_NO:
            return 2
        return 0

    @property
    def random_accuracy(self) -> float:
        return 1.0 / self.num_choices if self.num_choices else 0.0
