"""The paper-style results table and the tidy CSV."""

from __future__ import annotations

import csv

import pytest

from ftcot.report.results import ResultRow, mean_interval, results_markdown, write_csv


def _row(method, task, accuracy, seed=0, D=None, student="gemma-270m"):
    return ResultRow(method, student, "text-davinci-002", task, D, seed, 150, accuracy)


def test_mean_interval_uses_student_t():
    cell = mean_interval([90.0, 92.0, 94.0])
    assert cell.mean == pytest.approx(92.0)
    assert cell.half_width == pytest.approx(4.303 * 2.0 / 3 ** 0.5)
    assert str(cell) == "92.00 ± 4.97"
    assert str(mean_interval([91.3])) == "91.30"


def test_table_has_random_teacher_and_one_row_per_method_and_student():
    rows = [_row("ft_cot", "coin_flip", a, seed=s) for s, a in enumerate([90.0, 92.0])]
    rows += [_row("ft", "coin_flip", 76.0), _row("ft", "date_understanding", 49.5),
             _row("ft_cot", "coin_flip", 95.0, D=8)]
    teacher = [ResultRow("zs_cot", "text-davinci-002", "text-davinci-002", "coin_flip", None, 0, 500, 91.4)]
    lines = results_markdown(rows, teacher).splitlines()
    assert lines[0] == "| | Date Understanding | Coin Flip |"  # the paper's column order
    assert lines[2] == "| Random | 16.67 | 50.00 |"
    assert lines[3] == "| teacher: text-davinci-002, Zero-shot-CoT | – | 91.40 |"
    assert "| gemma-270m, Fine-tune-CoT | – | 91.00 ± 12.71 |" in lines
    assert "| gemma-270m, Fine-tune | 49.50 | 76.00 |" in lines
    assert "| gemma-270m, Fine-tune-CoT (D=8) | – | 95.00 |" in lines


def test_csv_is_tidy(tmp_path):
    path = tmp_path / "results.csv"
    write_csv([_row("ft", "coin_flip", 76.0), _row("ft_cot", "coin_flip", 95.0, D=8)], path)
    rows = list(csv.DictReader(path.open()))
    # The columns, then the training-set size (empty unless a subset was trained on).
    assert list(rows[0]) == ["method", "student", "teacher", "task", "D", "seed", "n", "accuracy", "train_size"]
    assert rows[0]["D"] == "" and rows[1]["D"] == "8" and rows[1]["accuracy"] == "95.0"
