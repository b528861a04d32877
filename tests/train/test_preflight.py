"""Each pre-flight failure stops ``ftcot train`` before any training with one line and exit code 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.cli import assert_one_line_error
from tests.train.helpers import run_train

pytestmark = pytest.mark.slow  # each case is a real subprocess (~5-10 s of imports)

TINY = ("--student", "tiny-gpt2", "--epochs", "1", "--max-length", "768")


def _edited(source: Path, tmp_path: Path, edit) -> Path:
    """A copy of a DATA_DIR whose first training row is changed by ``edit(row)``."""
    target = tmp_path / "data"
    shutil.copytree(source, target)
    rows = [json.loads(line) for line in (target / "train.jsonl").open()]
    edit(rows[0])
    (target / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return target


def test_unscorable_target(coin_flip_16, tmp_path):
    def edit(row):
        # A rationale that states another answer after the "-->" prefix: the scorer reads the first one.
        row["rationale"] = "So the coin ends --> no, I think. Then again it does not."
        row["answer"] = "yes"
        row["completion"] = f" {row['rationale']} --> yes"

    result = run_train(_edited(coin_flip_16, tmp_path, edit), *TINY, "--out", tmp_path / "ck")
    assert_one_line_error(result, "train.jsonl", "does not recover the gold answer", "1 of 16")
    assert not (tmp_path / "ck").exists()  # failed before anything was written


def test_eos_inside_target(coin_flip_16, tmp_path):
    def edit(row):
        row["rationale"] += " </s>"  # ByT5's EOS written out: the model would learn to stop here
        row["completion"] = f" {row['rationale']} --> {row['answer']}"

    result = run_train(_edited(coin_flip_16, tmp_path, edit), *TINY, "--out", tmp_path / "ck")
    assert_one_line_error(result, "train.jsonl", "EOS token inside the target")


def test_truncated_targets_fail_unless_allowed(coin_flip_16, tmp_path):
    result = run_train(coin_flip_16, "--student", "tiny-gpt2", "--max-length", "200", "--out", tmp_path / "ck")
    assert_one_line_error(result, "train.jsonl", "exceed --max-length 200", "--allow-truncation", "sample_index")


def test_prompt_not_in_the_inference_format(coin_flip_16, tmp_path):
    def edit(row):
        row["prompt"] = "Q: " + row["prompt"]  # not what template ft_cot gives generation

    result = run_train(_edited(coin_flip_16, tmp_path, edit), *TINY, "--out", tmp_path / "ck")
    assert_one_line_error(result, "train.jsonl", "differ from template 'ft_cot'", "re-curate")


def test_bad_settings_and_missing_data(tmp_path, coin_flip_16):
    assert_one_line_error(run_train(tmp_path / "nowhere", "--out", tmp_path / "ck"), "does not exist", "ftcot curate")
    assert_one_line_error(run_train(coin_flip_16, *TINY, "--batch-size", "0", "--out", tmp_path / "ck"),
                          "--batch-size must be at least 1")
