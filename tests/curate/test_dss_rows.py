"""Distilling step-by-step rows (``--template ft_dss``): a label row and a rationale row per curated example.

Built from the recorded text-davinci-002 Zero-shot-CoT outputs (coin_flip: yes/no, multiarith: numbers),
by the same ``curate`` as Fine-tune-CoT, so both methods train on the same questions and rationales.
"""

from __future__ import annotations

import json

import pytest

from ftcot.curate import curate
from ftcot.curate.dataset import write_data_dir
from ftcot.errors import FtcotError
from ftcot.tasks import load_task
from ftcot.templates import LABEL, RATIONALE, get_template
from ftcot.train.data import read_data_dir, student_texts
from tests.cli import assert_one_line_error, run_ftcot
from tests.conftest import TEACHER_DIR


def _records(task: str) -> list[dict]:
    return [json.loads(line) for line in (TEACHER_DIR / "zs_cot" / f"{task}.jsonl").open()]


def _lineage(row) -> tuple:
    return row.sample_index, row.sample_number, row.teacher_record


@pytest.mark.parametrize("key", ["coin_flip", "multiarith"])
def test_each_fine_tune_cot_example_becomes_a_label_and_a_rationale_row(data_root, key):
    task, records = load_task(key, data_root), _records(key)
    cot_train, cot_val, cot_summary = curate(task, get_template("ft_cot"), records)
    train, val, summary = curate(task, get_template("ft_dss"), records)

    # The same curated data as Fine-tune-CoT: same examples, same validation questions, twice the rows.
    assert summary["kept"] == cot_summary["kept"] and summary["val_questions"] == cot_summary["val_questions"]
    assert summary["train_examples"] == 2 * len(cot_train) == len(train)
    assert len(val) == 2 * len(cot_val)
    for rows, cot_rows in ((train, cot_train), (val, cot_val)):
        assert [_lineage(r) for r in rows[0::2]] == [_lineage(r) for r in cot_rows]
        assert [_lineage(r) for r in rows[1::2]] == [_lineage(r) for r in cot_rows]
    for cot, label, rationale in zip(cot_train, train[0::2], train[1::2]):
        assert (label.objective, rationale.objective) == (LABEL, RATIONALE)
        assert label.prompt == f"[label] {cot.question} ###"
        assert label.completion == f" {cot.answer}"  # the answer alone: what the student says at test time
        assert rationale.prompt == f"[rationale] {cot.question} ###"
        assert rationale.completion == f" {cot.rationale}"  # the rationale alone, no answer (the paper's task)
        assert label.answer == rationale.answer == cot.answer and label.rationale == rationale.rationale
        assert cot.completion == f" {cot.rationale} --> {cot.answer}"


def test_encoder_decoder_layouts_drop_the_separator(data_root):
    train, _, _ = curate(load_task("coin_flip", data_root), get_template("ft_dss"), _records("coin_flip"))
    template = get_template("ft_dss")
    label, rationale = train[0], train[1]
    assert student_texts(label, template, True) == (f"[label] {label.question}", label.answer)
    assert student_texts(rationale, template, True) == (f"[rationale] {rationale.question}", rationale.rationale)
    assert student_texts(label, template, False) == (label.prompt, label.completion)
    assert student_texts(rationale, template, False) == (rationale.prompt, rationale.completion)


def test_cli_writes_both_tasks_and_single_task_rows_have_none(data_root, tmp_path):
    source = TEACHER_DIR / "zs_cot" / "coin_flip.jsonl"
    dss = run_ftcot("curate", source, "--task", "coin_flip", "--template", "ft_dss", "--out", tmp_path / "dss",
                    "--data-dir", data_root)
    assert dss.returncode == 0, dss.stderr
    rows = [json.loads(line) for line in (tmp_path / "dss" / "train.jsonl").open()]
    assert [r["objective"] for r in rows[:4]] == [LABEL, RATIONALE, LABEL, RATIONALE]
    assert json.loads((tmp_path / "dss" / "curation.json").read_text())["template"] == "ft_dss"
    chat = [json.loads(line) for line in (tmp_path / "dss" / "openai_chat.jsonl").open()]
    assert chat[0]["messages"][0]["content"].startswith("[label] ")
    assert chat[1]["messages"][0]["content"].startswith("[rationale] ")
    data = read_data_dir(tmp_path / "dss")
    assert data.template.multi_task and len(data.train) == len(rows)

    cot = run_ftcot("curate", source, "--task", "coin_flip", "--out", tmp_path / "cot", "--data-dir", data_root)
    assert cot.returncode == 0, cot.stderr
    assert all(json.loads(line)["objective"] is None for line in (tmp_path / "cot" / "train.jsonl").open())

    no_teacher = run_ftcot("curate", "--task", "coin_flip", "--template", "ft_dss", "--out", tmp_path / "none",
                           "--data-dir", data_root)
    assert_one_line_error(no_teacher, "ft_dss", "needs teacher rationales")


def _rewrite(data_dir, name, change) -> None:
    path = data_dir / name
    rows = [json.loads(line) for line in path.open()]
    path.write_text("".join(json.dumps(change(i, r)) + "\n" for i, r in enumerate(rows)))


def test_a_row_whose_task_its_template_lacks_is_one_line(data_root, tmp_path):
    task, records = load_task("coin_flip", data_root), _records("coin_flip")
    write_data_dir(tmp_path / "cot", *curate(task, get_template("ft_cot"), records))
    _rewrite(tmp_path / "cot", "train.jsonl", lambda i, r: {**r, "objective": RATIONALE} if i == 3 else r)
    with pytest.raises(FtcotError, match=r"train.jsonl: sample_index \d+ has objective 'rationale'; template "
                                         r"'ft_cot' has one task"):
        read_data_dir(tmp_path / "cot")

    write_data_dir(tmp_path / "dss", *curate(task, get_template("ft_dss"), records))
    _rewrite(tmp_path / "dss", "val.jsonl", lambda i, r: {**r, "objective": "explain"} if i == 0 else r)
    with pytest.raises(FtcotError, match="val.jsonl: .* objective 'explain'; template 'ft_dss' has the tasks "
                                         "label, rationale"):
        read_data_dir(tmp_path / "dss")
    _rewrite(tmp_path / "dss", "val.jsonl", lambda i, r: {**r, "objective": RATIONALE})
    with pytest.raises(FtcotError, match="val.jsonl: only rationale rows; the label task"):
        read_data_dir(tmp_path / "dss")
