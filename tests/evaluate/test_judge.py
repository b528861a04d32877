"""Extraction and the per-sample flags against hand-built outputs (pure functions, no model)."""

from __future__ import annotations

import pytest

from ftcot.evaluate.judge import judge
from ftcot.tasks import get_spec
from ftcot.templates import get_template

STOP, LENGTH = ["stop"], ["length"]


@pytest.mark.parametrize(
    ("task", "template", "output", "gold", "prediction", "correct", "format_ok"),
    [
        # Fine-tune-CoT: the answer after "-->".
        ("coin_flip", "ft_cot", " Whitney flips once, so it is tails. --> no", "no", "no", True, True),
        ("coin_flip", "ft_cot", " Flipped twice: yes. --> no", "yes", "no", False, True),
        # Prefix missing: scored by the last candidate, but not format-correct.
        ("coin_flip", "ft_cot", " it is no, so the coin is yes", "yes", "yes", True, False),
        # Prefix present with nothing after it: no prediction at all.
        ("coin_flip", "ft_cot", " I am not sure -->", "yes", "", False, False),
        ("multiarith", "ft_cot", " 3 + 4 = 7, minus 2 is 5 --> 5", "5", "5", True, True),
        ("addsub", "ft_cot", " --> 5.0", "5", "5.0", True, True),  # addsub compares as floats
        ("gsm8k", "ft_cot", " 1,000 + 125 --> 1,125", "1,125", "1125", True, True),
        ("date_understanding", "ft_cot", " one day before 01/02 --> (B)", "B", "B", True, True),
        ("last_letter_concatenation", "ft_cot", ' "e" and "y" --> ey.', "ey", "ey", True, True),
        ("last_letter_concatenation", "ft_cot", " nothing --> ", "ey", "", False, False),
        # Vanilla fine-tune and zero-shot: no prefix, first candidate.
        ("coin_flip", "ft", " yes", "yes", "yes", True, True),
        ("coin_flip", "ft", " no, yes", "yes", "no", False, True),
        ("coin_flip", "ft", " maybe", "yes", "", False, False),
        ("svamp", "zs", " 12 apples, then 4", "12", "12", True, True),
        ("tracking_shuffled_objects", "zs_cot", " (C) the ball", "C", "C", True, True),
        # Few-shot-CoT: after "The answer is"; without it, the last candidate.
        ("multiarith", "fs_cot", " 5 + 3 = 8. The answer is 8.", "8", "8", True, True),
        ("multiarith", "fs_cot", " 5 + 3 = 8. The answer is eight.", "8", "", False, False),
        ("multiarith", "fs_cot", " 5 + 3 = 8, so 8", "8", "8", True, False),
        # Natural-language student layout.
        ("strategy_qa", "ft_cot_natural", " Cats are mammals.\n\nTherefore the answer is Yes", "Yes", "yes", True,
         True),
    ],
)
def test_prediction_correct_and_format(task, template, output, gold, prediction, correct, format_ok):
    verdict = judge(output, gold, get_spec(task), get_template(template), STOP)
    assert (verdict.prediction, verdict.correct, verdict.format_correct) == (prediction, correct, format_ok)


@pytest.mark.parametrize(("reasons", "complete"), [
    (STOP, True), (LENGTH, False), (["stop", "stop"], True), (["length", "stop"], False), (["stop", "length"], False),
])
def test_complete_means_every_stage_ended_by_itself(reasons, complete):
    verdict = judge(" --> yes", "yes", get_spec("coin_flip"), get_template("ft_cot"), reasons)
    assert verdict.complete is complete
    assert verdict.correct  # completeness never changes the score
