"""The interval and the paired test against published values, not against the code's own output."""

from __future__ import annotations

import math

import pytest

from ftcot.report.statistics import mcnemar_exact, paired_test, wilson_interval


@pytest.mark.parametrize(("correct", "n", "low", "high"), [
    (81, 263, 0.2553, 0.3662),  # Newcombe (1998), Statistics in Medicine 17:857, Table I, example (a), method 3
    (15, 148, 0.0624, 0.1605),  # ibid., example (b)
    (0, 20, 0.0, 0.1611),  # ibid., example (c): 0 of 20, where the normal interval is the point 0
    (1, 29, 0.0061, 0.1718),  # ibid., example (d)
])
def test_wilson_matches_newcombes_published_intervals(correct, n, low, high):
    got = wilson_interval(correct, n)
    assert got == pytest.approx((low, high), abs=5e-5)


def test_mcnemar_exact_is_the_binomial_tail_of_the_discordant_questions():
    # 1 question right only by A, 9 only by B: P(X <= 1 | 10, 1/2) doubled = 2 * 11 / 1024.
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)
    assert mcnemar_exact(5, 5) == 1.0 and mcnemar_exact(0, 0) == 1.0
    # 0 of 12 discordant the other way: 2 / 2^12.
    assert mcnemar_exact(0, 12) == pytest.approx(2 / 4096)
    assert 0 < mcnemar_exact(30, 60) < 0.01


def test_the_paired_test_counts_only_shared_questions_answered_differently():
    a = {1: True, 2: True, 3: False, 4: True, 5: False}
    b = {1: True, 2: False, 3: True, 4: False, 6: True}  # 5 and 6 are not shared
    test = paired_test(a, b)
    assert (test.n, test.only_a, test.only_b) == (4, 2, 1)
    assert test.p_value == pytest.approx(1.0)
    assert math.isclose(paired_test({i: True for i in range(10)}, {i: False for i in range(10)}).p_value,
                        2 / 1024)


def test_a_cell_over_seeds_is_never_narrower_than_its_test_set_nor_outside_0_to_100():
    from ftcot.report.results import ResultRow, group_interval

    def row(seed, accuracy):
        return ResultRow("ft", "s", "", "coin_flip", None, seed, 150, accuracy)

    # Three seeds that agree exactly: the t-interval is a point, the 150 questions are not.
    mean, low, high = group_interval([row(0, 55.33), row(1, 55.33), row(2, 55.33)])
    assert (low, high) == pytest.approx((100 * wilson_interval(83, 150)[0], 100 * wilson_interval(83, 150)[1]))
    # Seeds far apart near 100: the t-interval would pass 100.
    mean, low, high = group_interval([row(0, 100.0), row(1, 100.0), row(2, 78.0)])
    assert high == 100.0 and low < mean
