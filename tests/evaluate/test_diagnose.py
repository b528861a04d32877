"""Failure modes read off predictions: the pure functions, and `ftcot diagnose` on evaluation and run dirs."""

from __future__ import annotations

import json

from ftcot.evaluate.diagnose import diagnose, looping
from tests.cli import assert_one_line_error, run_ftcot


def _record(output, prediction, answer, correct, finish="stop", format_correct=True):
    return {"output": output, "prediction": prediction, "answer": answer, "correct": correct,
            "finish_reason": finish, "format_correct": format_correct}


RECORDS = [
    _record(" Today is May 1. Tomorrow is May 2. --> C", "C", "C", True),
    _record(" The 16th is October. The 16th is October. The 16th is October. The 16th is", "A", "B", False,
            finish="length", format_correct=False),
    _record(" 10 days ago was 11/22/2019. --> A", "A", "C", False),
    _record(" --> A", "A", "A", True),
]


def test_looping_is_one_sentence_three_times():
    assert looping(RECORDS[1]["output"])
    assert not looping("Step one is done. Step two is done. Step one is done.")
    assert not looping("Yes. Yes. Yes.")  # short answers repeat without looping


def test_diagnose_counts_each_failure_mode():
    d = diagnose(RECORDS)
    assert (d.n, d.accuracy, d.cut, d.looping, d.no_answer) == (4, 0.5, 0.25, 0.25, 0.25)
    assert d.accuracy_when_complete == 2 / 3
    assert (d.top_prediction, d.top_prediction_share, d.top_gold_share) == ("A", 0.75, 0.5)


def test_cli_reads_an_evaluation_dir_and_a_run_dir(tmp_path):
    stage = tmp_path / "run" / "stages" / "evaluate" / "abc"
    stage.mkdir(parents=True)
    (stage / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    (stage / "stage.json").write_text(json.dumps({"label": "date ft_cot (test): gemma"}))
    for path in (stage, tmp_path / "run"):
        result = run_ftcot("diagnose", path, "--json")
        assert result.returncode == 0, result.stderr
        row = json.loads(result.stdout)
        assert row["cut"] == 0.25 and row["top_prediction"] == "A"
    assert json.loads(run_ftcot("diagnose", tmp_path / "run", "--json").stdout)["evaluation"] == "date ft_cot (test): gemma"
    table = run_ftcot("diagnose", tmp_path / "run").stdout
    assert "date ft_cot (test): gemma" in table and "75.0" in table


def test_cli_without_predictions_is_a_one_line_error(tmp_path):
    assert_one_line_error(run_ftcot("diagnose", tmp_path), str(tmp_path), "no predictions.jsonl")
