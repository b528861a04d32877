"""The paper's headline numbers (Ho et al., ACL 2023, test accuracy %), to read a run's table against.

From the authors' results notebook. The teacher row is over train + test
questions, as the paper reports it; a run's teacher row is over the test questions only.
"""

from __future__ import annotations

from collections.abc import Iterable

from ftcot.report.results import task_order
from ftcot.tasks import BUILTIN_TASKS

_TASKS = ("single_eq", "addsub", "multiarith", "gsm8k", "aqua", "svamp", "date_understanding",
          "tracking_shuffled_objects", "last_letter_concatenation", "coin_flip", "commonsense_qa", "strategy_qa")

# Row label -> accuracies in _TASKS order; None where the paper has no number.
PAPER_ROWS: dict[str, tuple[float | None, ...]] = {
    "teacher: text-davinci-002, Zero-shot-CoT (train + test)": (
        81.50, 76.71, 78.79, 42.17, 29.74, 64.20, 67.58, 53.20, 57.71, 90.04, 60.07, 53.45),
    "GPT-3 curie 6.7B, Fine-tune": (
        24.34, 25.21, 15.00, 6.14, 15.35, 20.67, 14.41, 33.78, 32.67, 72.00, 76.17, 65.21),
    "GPT-3 curie 6.7B, Fine-tune-CoT": (
        20.39, 21.01, 33.33, 6.75, 24.02, 12.67, 60.36, 64.44, 52.67, 98.67, 56.76, 55.02),
    "GPT-2 124M, Fine-tune": (5.26, 9.24, 12.22, 2.73, 24.80, 10.33, 27.93, 33.78, 1.33, 60.00, 20.88, 54.44),
    "GPT-2 124M, Fine-tune-CoT": (3.95, 5.88, 8.33, 3.03, 22.44, 4.33, 25.23, 38.67, 4.67, 77.33, 22.69, 55.75),
    "Flan-T5 220M, Fine-tune-CoT": (
        4.61, 9.24, 12.22, 4.40, 29.13, 6.00, 83.78, 48.89, 50.00, 100.0, 59.05, 59.97),
}


def paper_accuracy(row: str, task: str) -> float | None:
    return PAPER_ROWS[row][_TASKS.index(task)] if task in _TASKS else None


def paper_markdown(tasks: Iterable[str]) -> str:
    """The paper's rows for the built-in tasks among ``tasks``, in the run table's column order."""
    shown = [t for t in task_order(tasks) if t in _TASKS]
    if not shown:
        return ""
    lines = ["| paper (Ho et al., 2023) | " + " | ".join(BUILTIN_TASKS[t].title for t in shown) + " |",
             "|---|" + "---|" * len(shown)]
    for label in PAPER_ROWS:
        values = [paper_accuracy(label, t) for t in shown]
        lines.append(f"| {label} | " + " | ".join("–" if v is None else f"{v:.2f}" for v in values) + " |")
    return "\n".join(lines) + "\n"
