"""How sure a reported accuracy is: a 95% interval per accuracy, and a paired test between two methods.

One test set of 150 questions makes one question 0.67 points and a 95% interval roughly ±8 points, so a
table shows each accuracy with its interval, and each Fine-tune-CoT vs Fine-tune pair evaluated on the
same questions with McNemar's exact test: only the questions the two got differently carry information.
Pure functions, no dependencies (math.comb is exact for test-set sizes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``correct`` of ``n``, as fractions (it stays inside [0, 1] and is
    honest at 0 or n correct, where the normal approximation collapses to a point)."""
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class PairedTest:
    """Two methods on the same questions: ``only_a`` questions right by A alone, ``only_b`` by B alone."""

    n: int  # questions both were scored on
    only_a: int
    only_b: int

    @property
    def p_value(self) -> float:
        return mcnemar_exact(self.only_a, self.only_b)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """McNemar's exact two-sided test: under no difference each discordant question is a fair coin."""
    discordant = only_a + only_b
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, k) for k in range(min(only_a, only_b) + 1)) / 2 ** discordant
    return min(1.0, 2 * tail)


def paired_test(a: dict[int, bool], b: dict[int, bool]) -> PairedTest:
    """``a`` and ``b``: question -> correct; compared on the questions both answered."""
    shared = a.keys() & b.keys()
    return PairedTest(len(shared), sum(a[q] and not b[q] for q in shared), sum(b[q] and not a[q] for q in shared))


def p_text(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"
