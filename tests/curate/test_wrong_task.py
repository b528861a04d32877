"""Curating one task's rationales as another's is refused on every path (issue 26, item 3).

A record names its question by index: curating a coin-flip run as StrategyQA wrote 125 rows pairing
StrategyQA's questions with coin-flip rationales. Each record's question must be the task's.
"""

from __future__ import annotations

import json

import pytest

import ftcot
from ftcot.errors import FtcotError
from tests.cli import assert_one_line_error, run_ftcot
from tests.conftest import TEACHER_DIR

RECORDS = TEACHER_DIR / "zs_cot" / "coin_flip.jsonl"


def _user_task(path, prefix: str, n: int = 30):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"question": f"{prefix}: what is {i} + 1?", "answer": str(i + 1)}) + "\n"
                            for i in range(n)), encoding="utf-8")
    return path


def _teacher_records(task_file, path):
    """A teacher's records for a user task, in the shared JSONL format (every answer right), with the prompts a
    replay teacher answers by (a number task's trigger)."""
    from ftcot.tasks.custom import TRIGGERS
    from ftcot.tasks.spec import AnswerType
    from ftcot.teach.prompts import answer_prompt, reasoning_prompt

    rows = [json.loads(line) for line in task_file.read_text().splitlines()]
    records = []
    for i, row in enumerate(rows):
        prompt, rationale = reasoning_prompt(row["question"]), f" {i} plus one is {row['answer']}."
        records.append({"sample_index": i, "question": row["question"], "answer": row["answer"], "prompt": prompt,
                        "reasoning_completion": rationale,
                        "answer_prompt": answer_prompt(prompt, rationale, TRIGGERS[AnswerType.NUMBER]),
                        "answer_completion": f" {row['answer']}"})
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def coin_flip_run(tmp_path_factory, data_root):
    run = tmp_path_factory.mktemp("teach") / "run"
    result = run_ftcot("teach", "--task", "coin_flip", "--teacher", "replay:text-davinci-002", "--split", "train",
                       "--out", run, "--data-dir", data_root)
    assert result.returncode == 0, result.stderr
    return run


def test_a_run_curated_as_another_builtin_task_is_refused(coin_flip_run, data_root, tmp_path):
    result = run_ftcot("curate", coin_flip_run, "--task", "strategy_qa", "--out", tmp_path / "data",
                       "--data-dir", data_root)
    assert_one_line_error(result, "answers another task's questions", "A coin is heads up",
                          "strategy_qa's question", "taught on coin_flip: curate it with --task coin_flip")
    assert not (tmp_path / "data").exists()
    ok = run_ftcot("curate", coin_flip_run, "--out", tmp_path / "data", "--data-dir", data_root)
    assert ok.returncode == 0, ok.stderr


def test_a_builtin_run_curated_as_a_user_file_of_the_same_name_is_refused(coin_flip_run, data_root, tmp_path):
    lookalike = _user_task(tmp_path / "coin_flip.jsonl", "not a coin")
    result = run_ftcot("curate", coin_flip_run, "--task", lookalike, "--answer-type", "number",
                       "--out", tmp_path / "data", "--data-dir", data_root)
    assert_one_line_error(result, "answers another task's questions", "coin_flip's question 1 is 'not a coin: what",
                          "taught on another task named 'coin_flip'")


def test_a_jsonl_of_one_task_curated_as_another_is_refused(data_root, tmp_path):
    result = run_ftcot("curate", RECORDS, "--task", "last_letter_concatenation", "--out", tmp_path / "data",
                       "--data-dir", data_root)
    assert_one_line_error(result, f"{RECORDS} answers another task's questions",
                          "last_letter_concatenation's question 0")
    with pytest.raises(FtcotError, match="answers another task's questions"):
        ftcot.curate(RECORDS, tmp_path / "api", task="strategy_qa", data_dir=data_root)
    assert not (tmp_path / "data").exists() and not (tmp_path / "api").exists()


def test_a_user_tasks_records_curated_with_another_user_file_of_the_same_name_are_refused(data_root, tmp_path):
    mine = _user_task(tmp_path / "a" / "t.jsonl", "a")
    other = _user_task(tmp_path / "b" / "t.jsonl", "b")
    records = _teacher_records(mine, tmp_path / "records.jsonl")
    refused = run_ftcot("curate", records, "--task", other, "--answer-type", "number", "--out", tmp_path / "bad",
                        "--data-dir", data_root, "--decontaminate", "off")
    assert_one_line_error(refused, "its question 0 is 'a: what is 0 + 1?'", "t's question 0 is 'b: what is 0 + 1?'")
    kept = run_ftcot("curate", records, "--task", mine, "--answer-type", "number", "--out", tmp_path / "good",
                     "--data-dir", data_root, "--decontaminate", "off")
    assert kept.returncode == 0, kept.stderr
    rows = [json.loads(line) for line in (tmp_path / "good" / "train.jsonl").read_text().splitlines()]
    assert rows and all(r["prompt"].startswith("a: what is") for r in rows)


def test_a_binary_decontamination_file_is_one_line(data_root, tmp_path):
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(bytes(range(128, 256)) * 4)
    result = run_ftcot("curate", RECORDS, "--task", "coin_flip", "--decontaminate", f"warn,against={binary}",
                       "--out", tmp_path / "data", "--data-dir", data_root)
    assert_one_line_error(result, f"against={binary}: not UTF-8 text")


def test_a_user_task_is_checked_against_the_benchmarks_on_disk_and_names_the_others(data_root, tmp_path):
    """A user's task was checked against no benchmark at all (it has no data root of its own); with a data root
    holding only coin flip it is checked against coin flip, and the 11 missing are named, not an error."""
    import shutil

    partial = tmp_path / "partial"
    (partial / "raw").mkdir(parents=True)
    for part in ("splits", "prompts"):
        shutil.copytree(data_root / part, partial / part)
    shutil.copytree(data_root / "raw" / "coin_flip", partial / "raw" / "coin_flip")
    coin = [json.loads(line) for line in RECORDS.read_text().splitlines()]
    task_file = tmp_path / "mine.jsonl"  # two coin-flip test questions among a user's own
    rows = [{"question": f"mine {i}: is it heads?", "answer": "yes"} for i in range(20)]
    rows += [{"question": coin[i]["question"], "answer": coin[i]["answer"]} for i in (0, 2)]
    task_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = tmp_path / "records.jsonl"
    records.write_text("".join(json.dumps({
        "sample_index": i, "question": r["question"], "answer": r["answer"],
        "reasoning_completion": " The coin was flipped an even number of times, so it is still heads up.",
        "answer_completion": f" {r['answer']}"}) + "\n" for i, r in enumerate(rows)))
    result = run_ftcot("curate", records, "--task", task_file, "--answer-type", "yes/no", "--out", tmp_path / "data",
                       "--data-dir", partial)
    assert result.returncode == 0, result.stderr
    contamination = json.loads((tmp_path / "data" / "curation.json").read_text())["contamination"]
    assert len(contamination["benchmarks_not_checked"]) == 11 and "coin_flip" not in contamination["benchmarks_not_checked"]
    assert contamination["per_test_task"].get("coin_flip", 0) >= 1  # the copied test questions are found
    assert "benchmarks not on disk, not checked" in result.stdout


def test_a_user_tasks_file_is_found_by_the_next_stages_and_a_changed_file_is_refused(data_root, tmp_path):
    """teach records the task file (path, SHA-256, answer type): curate and train find it without --task."""
    task_file = _user_task(tmp_path / "mine" / "sums.jsonl", "sum")
    records = _teacher_records(task_file, tmp_path / "records.jsonl")
    run, data = tmp_path / "run", tmp_path / "data"
    taught = run_ftcot("teach", "--task", task_file, "--answer-type", "number", "--split", "all",
                       "--teacher", f"replay:{records}", "--out", run, "--data-dir", data_root)
    assert taught.returncode == 0, taught.stderr
    assert json.loads((run / "run.json").read_text())["settings"]["task_source"]["file"] == str(task_file)
    curated = run_ftcot("curate", run, "--out", data, "--data-dir", data_root)  # no --task
    assert curated.returncode == 0, curated.stderr
    assert json.loads((data / "curation.json").read_text())["task_source"]["answer_type"] == "number"
    trained = run_ftcot("train", data, "--student", "tiny-gpt2", "--epochs", "1", "--max-length", "256",
                        "--max-new-tokens", "4", "--out", tmp_path / "ckpt", env={"OMP_NUM_THREADS": "1"})
    assert trained.returncode == 0, trained.stderr  # no --task, no --answer-type

    original = task_file.read_text()
    task_file.write_text(original.replace("sum: what is 3", "sum: what is 30"))
    assert_one_line_error(run_ftcot("curate", run, "--out", tmp_path / "d2", "--data-dir", data_root),
                          f"{run} was made from {task_file} as it was then", "has changed since")
    assert_one_line_error(run_ftcot("train", data, "--student", "tiny-gpt2", "--out", tmp_path / "c2"),
                          "has changed since")
    task_file.unlink()
    assert_one_line_error(run_ftcot("curate", run, "--out", tmp_path / "d2", "--data-dir", data_root),
                          f"{task_file}, which is gone", "--task")
    assert not (tmp_path / "d2").exists() and not (tmp_path / "c2").exists()
