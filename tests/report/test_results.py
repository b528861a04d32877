"""The paper-style results table and the tidy CSV."""

from __future__ import annotations

import csv

import pytest

from ftcot.report.results import ResultRow, mean_interval, precision_note, results_markdown, write_csv


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
    # The columns, then the training-set size (empty unless a subset was trained on) and the
    # precisions (empty where not recorded).
    assert list(rows[0]) == ["method", "student", "teacher", "task", "D", "seed", "n", "accuracy", "train_size",
                             "train_precision", "eval_precision", "ci_low", "ci_high"]
    # 76% of 150 questions (114): its Wilson 95% interval (tests/report/test_statistics.py checks the formula).
    assert (rows[0]["ci_low"], rows[0]["ci_high"]) == ("68.57", "82.13")
    assert rows[0]["D"] == "" and rows[1]["D"] == "8" and rows[1]["accuracy"] == "95.0"


def test_a_pipe_in_a_name_stays_in_its_cell_in_the_markdown_and_the_html():
    import re

    from ftcot.report.html import markdown_table_html

    rows = [ResultRow("ft", "tiny|gpt2", "", "coin_flip", None, 0, 150, 61.0),
            ResultRow("ft", "tiny|gpt2", "", "my|task", None, 0, 20, 35.0)]
    teacher = [ResultRow("zs_cot", "stub|teacher", "stub|teacher", "my|task", None, 0, 20, 80.0)]
    markdown = results_markdown(rows, teacher)
    separators = [len(re.findall(r"(?<!\\)\|", line)) for line in markdown.splitlines()]
    assert separators == [4] * 5  # every line: label + 2 tasks, nothing shifted
    assert "| tiny\\|gpt2, Fine-tune | 61.00 | 35.00 |" in markdown
    html = markdown_table_html(markdown)
    assert "<th>my|task</th>" in html
    assert "<tr><th>tiny|gpt2, Fine-tune</th><td class='num'>61.00</td><td class='num'>35.00</td></tr>" in html
    assert "<tr><th>teacher: stub|teacher, Zero-shot-CoT</th><td class='num'>–</td><td class='num'>80.00</td>" in html


def test_a_teacher_row_over_fewer_questions_than_planned_says_so(tmp_path):
    partial = ResultRow("zs_cot", "t", "t", "coin_flip", None, 0, 11, 100.0, planned=12)
    whole = ResultRow("zs_cot", "t", "t", "date_understanding", None, 0, 12, 50.0, planned=None)
    lines = results_markdown([], [partial, whole]).splitlines()
    assert lines[3] == "| teacher: t, Zero-shot-CoT | 50.00 | 100.00 (11 of 12 questions) |"
    write_csv([partial], tmp_path / "results.csv")  # the coverage is the table's, not a CSV column
    assert (tmp_path / "results.csv").read_text().splitlines()[0] == \
        "method,student,teacher,task,D,seed,n,accuracy,train_size,train_precision,eval_precision,ci_low,ci_high"


def test_a_column_over_different_numbers_of_questions_is_said():
    from ftcot.report.results import sample_size_note

    students = [ResultRow("ft_cot", "tiny-gpt2", "t", "coin_flip", None, 0, 50, 40.0)]
    teacher = [ResultRow("zs_cot", "t", "t", "coin_flip", None, 0, 150, 91.33)]
    note = sample_size_note(students, teacher)
    assert "Coin Flip: teacher on 150, students on 50" in note
    assert sample_size_note(students, [ResultRow("zs_cot", "t", "t", "coin_flip", None, 0, 50, 90.0)]) == ""


def test_the_precision_note_says_what_is_not_recorded_in_words():
    def row(train, evaluate):
        return ResultRow("ft_cot", "gemma", "t", "coin_flip", None, 0, 150, 50.0, train_precision=train,
                         eval_precision=evaluate)

    assert precision_note([row(None, None)]) == ""
    assert precision_note([row("bfloat16", None)]).startswith(
        "Precision: trained in bfloat16; evaluation precision not recorded. The same config")
    assert precision_note([row("float32", "float32 (cpu)"), row("float32", None)]).startswith(
        "Precision: trained in float32; evaluated in float32 (cpu) (some not recorded).")
    assert precision_note([row(None, "bfloat16 (cpu)")]).startswith(
        "Precision: training precision not recorded; evaluated in bfloat16 (cpu).")
