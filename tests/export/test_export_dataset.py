"""``ftcot export dataset``: a DATA_DIR as a Hub dataset that ``datasets.load_dataset`` reads back."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from tests.cli import assert_one_line_error, run_ftcot
from tests.export.conftest import ok
from tests.mounts import read_only_dir, small_disk  # noqa: F401  (fixtures)

datasets = pytest.importorskip("datasets")


def rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def card_metadata(path):
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1]), text


def test_every_format_loads_with_datasets_and_holds_the_data_dirs_rows(coin_flip_data, tmp_path):
    out = tmp_path / "export"
    result = ok(run_ftcot("export", "dataset", coin_flip_data, "--to", out))
    assert "288 train, 32 validation rows" in result.stdout
    train, val = rows(coin_flip_data / "train.jsonl"), rows(coin_flip_data / "val.jsonl")
    cache = tmp_path / "hf-cache"

    full = datasets.load_dataset(str(out), cache_dir=str(cache))  # the default config: Parquet, every field
    assert set(full) == {"train", "validation"}
    assert full["train"].to_list() == train and full["validation"].to_list() == val

    pc = datasets.load_dataset(str(out), "prompt_completion", cache_dir=str(cache))
    assert pc["train"].column_names == ["prompt", "completion"]
    assert pc["train"].to_list() == [{"prompt": r["prompt"], "completion": r["completion"]} for r in train]
    assert pc["train"][0]["completion"].startswith(" ") and pc["train"][0]["completion"].endswith(train[0]["answer"])

    chat = datasets.load_dataset(str(out), "messages", cache_dir=str(cache))
    first = chat["validation"][0]["messages"]
    assert [m["role"] for m in first] == ["user", "assistant"]
    assert first[0]["content"] == val[0]["prompt"] and first[1]["content"] == val[0]["completion"].strip()

    # The JSONL files are the same rows, for tools that take JSONL.
    as_json = datasets.load_dataset("json", data_files={"train": str(out / "messages" / "train.jsonl")},
                                    cache_dir=str(cache))
    assert as_json["train"].to_list() == chat["train"].to_list()


def test_the_card_names_teacher_prompts_filters_counts_splits_and_license(coin_flip_data, tmp_path):
    out = tmp_path / "export"
    ok(run_ftcot("export", "dataset", coin_flip_data, "--to", out))
    meta, text = card_metadata(out / "README.md")
    curation = json.loads((coin_flip_data / "curation.json").read_text())
    ftcot = meta["ftcot"]
    assert meta["license"] == "other" and "synthetic" in meta["license_name"]  # coin flip, per the data README
    assert ftcot["teacher"]["teacher"] == "replay:text-davinci-002" and ftcot["teacher"]["method"] == "zs_cot"
    assert ftcot["template"] == "ft_cot" and ftcot["student_prompt"] == "{question} ###"
    assert ftcot["filters"]["dropped"] == curation["dropped"] and ftcot["filters"]["correct_answers_only"]
    assert ftcot["counts"] == {"train_questions": 350, "questions_with_examples": curation["questions_with_examples"],
                               "kept": curation["kept"], "train_rows": 288, "validation_rows": 32}
    assert ftcot["splits"]["val_questions"] == len(curation["val_questions"])
    assert "kojima-takeshi188/zero_shot_cot" in ftcot["source_files"][0]
    assert "Let's think step by step." in text and "Therefore, the answer (Yes or No) is" in text
    assert json.loads((out / "curation.json").read_text()) == curation


def test_answer_only_data_without_validation_has_one_split_and_the_benchmarks_license(data_root, tmp_path):
    data = tmp_path / "data"
    ok(run_ftcot("curate", "--template", "ft", "--task", "svamp", "--val-fraction", "0", "--out", data,
                 "--data-dir", data_root))
    out = tmp_path / "export"
    ok(run_ftcot("export", "dataset", data, "--to", out))
    loaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf-cache"))
    assert set(loaded) == {"train"} and loaded["train"].num_rows == len(rows(data / "train.jsonl"))
    meta, text = card_metadata(out / "README.md")
    assert meta["license"] == "mit" and "license_name" not in meta
    assert meta["ftcot"]["teacher"] is None and "gold answers only" in text
    assert not (out / "data" / "validation.parquet").exists()


def test_bad_input_and_unsafe_outputs_are_one_line_errors(coin_flip_data, tmp_path):
    assert_one_line_error(run_ftcot("export", "dataset", coin_flip_data, "--to", coin_flip_data / "export"),
                          "lies inside the input")
    assert_one_line_error(run_ftcot("export", "dataset", coin_flip_data, "--to", coin_flip_data.parent, "--force"),
                          "contains the input")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    assert_one_line_error(run_ftcot("export", "dataset", coin_flip_data, "--to", taken), "--force")
    assert (taken / "keep.txt").read_text() == "mine"

    broken = tmp_path / "broken"
    shutil.copytree(coin_flip_data, broken)
    lines = (broken / "train.jsonl").read_text().splitlines()
    del_row = json.loads(lines[2])
    del del_row["completion"]
    (broken / "train.jsonl").write_text("\n".join([*lines[:2], json.dumps(del_row), *lines[3:]]) + "\n")
    assert_one_line_error(run_ftcot("export", "dataset", broken, "--to", tmp_path / "x"),
                          "train.jsonl:3", "completion")
    (broken / "curation.json").unlink()
    assert_one_line_error(run_ftcot("export", "dataset", broken, "--to", tmp_path / "x"), "curation.json")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("command", ["dataset", "tasks", "teach export"])
def test_a_read_only_or_full_target_is_one_line_and_leaves_nothing(coin_flip_data, data_root, read_only_dir,
                                                                    small_disk, command):
    """What `ftcot export dataset|tasks` and `ftcot teach export` write: a folder that refuses writes."""
    def export(to):
        if command == "dataset":
            return run_ftcot("export", "dataset", coin_flip_data, "--to", to)
        if command == "tasks":
            return run_ftcot("export", "tasks", "coin_flip", "--to", to, "--data-dir", data_root)
        return run_ftcot("teach", "export", coin_flip_data.parent / "teach", "--out", to / "records.jsonl")

    option = "--out" if command == "teach export" else "--to"
    target = read_only_dir / "x" if command != "teach export" else read_only_dir / "x" / "records.jsonl"
    assert_one_line_error(export(read_only_dir / "x"), f"{option} {target}: not writable")
    disk = small_disk(16)
    full = disk / "x" if command != "teach export" else disk / "x" / "records.jsonl"
    assert_one_line_error(export(disk / "x"), f"{option} {full}: the disk is full")
    leftovers = [p for p in disk.rglob("*") if p.is_file()]
    assert leftovers == []  # a half-written export is removed
