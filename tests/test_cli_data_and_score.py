"""`ftcot data list/export` and `ftcot score` through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.cli import assert_one_line_error, run_ftcot
from tests.conftest import TEACHER_DIR
from tests.mounts import small_disk  # noqa: F401  (fixture)


def test_data_list_shows_every_task_with_split_sizes(data_root):
    result = run_ftcot("data", "list", "--data-dir", data_root)
    assert result.returncode == 0, result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 5}
    assert "coin_flip" in rows and "strategy_qa" in rows and len(rows) == 12
    cells = [c.strip() for c in rows["coin_flip"].split("│")]
    assert cells[4:7] == ["500", "350", "150"]
    # AQuA's paper split names 10,000 training questions whose file is not part of the data: none are here
    # (it showed "train 10000" beside "samples 254").
    aqua = [c.strip() for c in rows["aqua"].split("│")]
    assert aqua[4:7] == ["254", "0 of 10000*", "254"] and "AQuA's train file" in result.stdout


def test_data_export_writes_one_object_per_sample(data_root):
    result = run_ftcot("data", "export", "coin_flip", "--split", "test", "--data-dir", data_root)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 150
    assert set(rows[0]) == {"sample_index", "question", "answer", "split"}
    assert {r["split"] for r in rows} == {"test"}
    shipped = json.loads((data_root / "splits" / "coin_flip__default.json").read_text())
    assert [r["sample_index"] for r in rows] == shipped["test"]


def test_data_export_of_a_task_with_an_unpublished_split_exports_what_there_is(data_root):
    """AQuA's train file is not part of the data: the default (all) exports its 254 test samples and says so
    (it failed); asking for the train split by name stays an error."""
    result = run_ftcot("data", "export", "aqua", "--data-dir", data_root)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 254 and {r["split"] for r in rows} == {"test"}
    assert "exporting the 254 samples there are" in result.stderr
    train = run_ftcot("data", "export", "aqua", "--split", "train", "--data-dir", data_root)
    assert train.returncode == 2 and "AQuA's train file" in train.stderr


def test_score_json_reproduces_teacher_accuracy(data_root, tmp_path):
    details = tmp_path / "details.jsonl"
    result = run_ftcot("score", TEACHER_DIR / "zs_cot" / "coin_flip.jsonl", "--task", "coin_flip",
                       "--rule", "kojima", "--json", "--details", details, "--data-dir", data_root)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary == {"n": 500, "correct": 457, "accuracy": pytest.approx(0.914)}
    rows = [json.loads(line) for line in details.open()]
    assert len(rows) == 500 and sum(r["correct"] for r in rows) == 457
    assert {"prediction", "answer", "correct"} <= set(rows[0])


def test_score_with_another_field_and_template(tmp_path, data_root):
    path = tmp_path / "student.jsonl"
    path.write_text(json.dumps({"answer": "7", "output": "3 + 4 = 7 --> 7"}) + "\n"
                    + json.dumps({"answer": "8", "output": "I think 8 --> 9"}) + "\n")
    result = run_ftcot("score", path, "--task", "multiarith", "--template", "ft_cot", "--field", "output",
                       "--json", "--data-dir", data_root)
    assert json.loads(result.stdout) == {"n": 2, "correct": 1, "accuracy": 0.5}


@pytest.mark.parametrize("content", ["", "\n  \n\n"])
def test_scoring_nothing_is_an_error_not_zero_percent(tmp_path, data_root, content):
    """An empty or blank-lines file exited 0 with accuracy=0.00%."""
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    details = tmp_path / "details.jsonl"
    result = run_ftcot("score", path, "--task", "coin_flip", "--details", details, "--data-dir", data_root)
    assert_one_line_error(result, str(path), "no records to score")
    assert not details.exists()


def test_a_jsonl_file_may_start_with_a_byte_order_mark(tmp_path, data_root):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"answer": "yes", "answer_completion": " Yes."}).encode() + b"\n")
    result = run_ftcot("score", path, "--task", "coin_flip", "--json", "--data-dir", data_root)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"n": 1, "correct": 1, "accuracy": 1.0}


def test_malformed_jsonl_names_the_line(tmp_path, data_root):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"answer": "yes", "answer_completion": "yes"}\n{"answer": "no", \n')
    assert_one_line_error(run_ftcot("score", path, "--task", "coin_flip", "--data-dir", data_root),
                          f"{path}:2", "not valid JSON")


def test_missing_field_names_the_field_and_line(tmp_path, data_root):
    path = tmp_path / "missing.jsonl"
    path.write_text('{"answer": "yes", "answer_completion": "yes"}\n{"answer": "no"}\n')
    assert_one_line_error(run_ftcot("score", path, "--task", "coin_flip", "--data-dir", data_root),
                          f"{path}:2", "missing field 'answer_completion'")


def test_unknown_task_lists_valid_keys(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text("")
    assert_one_line_error(run_ftcot("score", path, "--task", "coinflip"),
                          "Unknown task 'coinflip'", "Did you mean 'coin_flip'", "strategy_qa")


def test_unknown_template_and_rule(tmp_path, data_root):
    path = tmp_path / "x.jsonl"
    path.write_text("")
    assert_one_line_error(run_ftcot("score", path, "--task", "coin_flip", "--template", "ftcot",
                                    "--data-dir", data_root), "Unknown template 'ftcot'", "ft_cot")
    assert_one_line_error(run_ftcot("score", path, "--task", "coin_flip", "--rule", "strict",
                                    "--data-dir", data_root), "Unknown rule 'strict'", "kojima")


def test_missing_data_names_both_fixes(tmp_path):
    result = run_ftcot("data", "export", "coin_flip", env={"FTCOT_DATA": str(tmp_path / "nowhere")})
    assert_one_line_error(result, "ftcot data download", "FTCOT_DATA")


# ---- issue 14: outputs, disks and numbers (the output-over-input cases are in tests/test_output_guards.py) ----


def test_score_details_on_a_full_disk_is_one_line_and_keeps_the_older_file(small_disk, data_root):
    disk = small_disk(16)
    details = disk / "details.jsonl"
    details.write_text("older details\n")
    result = run_ftcot("score", TEACHER_DIR / "zs_cot" / "coin_flip.jsonl", "--task", "coin_flip",
                       "--details", details, "--data-dir", data_root)
    assert_one_line_error(result, f"--details {details}", "the disk is full")
    assert details.read_text() == "older details\n" and [p.name for p in disk.iterdir()] == ["details.jsonl"]


@pytest.mark.parametrize("command", [["data", "export", "coin_flip"], ["data", "synth", "coin_flip", "--n", "5"]])
def test_stdout_on_a_full_disk_is_one_line(command, data_root):
    """/dev/full: a real device whose every write fails with ENOSPC, as a redirect to a full disk does."""
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "ftcot", *command, "--data-dir", str(data_root)],
                                stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: standard output: the disk is full (No space left on device); free some space there and rerun "
        "(finished work is kept)."]


@pytest.mark.parametrize("n", ["0", "10000000"])
def test_synth_question_count_out_of_range_is_one_line(n, tmp_path, data_root):
    result = run_ftcot("data", "synth", "coin_flip", "--n", n, "--out", tmp_path / "s.jsonl", "--data-dir", data_root)
    assert_one_line_error(result, "--n must be between 1 and 1000000", f"(got {n})")
    assert not (tmp_path / "s.jsonl").exists()
