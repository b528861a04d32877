"""``ftcot evaluate`` with bad numbers, damaged EVAL_DIR files, a read-only or full EVAL_DIR (issue 14).

Real tiny-gpt2 evaluations and real files; the disk faults use a real tmpfs (tests/mounts.py).
"""

from __future__ import annotations

import json
import time

import pytest

from ftcot.errors import FtcotError
from ftcot.evaluate import evaluate
from ftcot.evaluate.store import read_metrics
from ftcot.tasks import load_task
from tests.cli import assert_one_line_error
from tests.evaluate.cli import run_evaluate
from tests.mounts import read_only_dir, resize, small_disk  # noqa: F401  (fixtures)

SETTINGS = dict(method="ft", max_new_tokens=4, batch_size=2)


@pytest.fixture(scope="module")
def coin_flip(data_root):
    return load_task("coin_flip", data_root)


@pytest.mark.parametrize(("flag", "value"), [("--batch-size", "0"), ("--max-new-tokens", "0")])
def test_a_number_out_of_range_is_one_line(flag, value, data_root, tmp_path):
    result = run_evaluate("--model", "tiny-gpt2", "--task", "coin_flip", "--method", "ft", flag, value,
                          "--out", tmp_path / "eval", "--data-dir", data_root)
    assert_one_line_error(result, flag, "at least 1")
    assert not (tmp_path / "eval").exists()


def test_a_truncated_metrics_json_is_one_line_and_a_rerun_rewrites_it(coin_flip, tmp_path):
    out = tmp_path / "eval"
    first = evaluate(coin_flip, "tiny-gpt2", out, limit=2, **SETTINGS)
    path = out / "metrics.json"
    path.write_text(path.read_text()[:30])
    with pytest.raises(FtcotError) as info:
        read_metrics(out)
    message = str(info.value)
    assert message.startswith(f"{path}: truncated") and f"ftcot evaluate --out {out}" in message
    again = evaluate(coin_flip, "tiny-gpt2", out, limit=2, **SETTINGS)
    assert again.metrics["generated_this_run"] == 0  # the fix costs no generation
    assert read_metrics(out)["accuracy"] == first.metrics["accuracy"]


def test_a_prediction_line_that_is_not_utf8_is_one_line(coin_flip, tmp_path):
    out = tmp_path / "eval"
    evaluate(coin_flip, "tiny-gpt2", out, limit=2, **SETTINGS)
    with (out / "predictions.jsonl").open("ab") as handle:
        handle.write(b'{"sample_index": "\xff\xfe"}\n')
    with pytest.raises(FtcotError, match=r"predictions.jsonl:3: not a prediction record"):
        evaluate(coin_flip, "tiny-gpt2", out, limit=3, **SETTINGS)


def test_a_read_only_eval_dir_fails_before_the_model_loads(read_only_dir, data_root):
    started = time.monotonic()
    result = run_evaluate("--model", "tiny-gpt2", "--task", "coin_flip", "--method", "ft",
                          "--out", read_only_dir / "eval", "--data-dir", data_root)
    assert_one_line_error(result, str(read_only_dir / "eval"), "not writable")
    assert time.monotonic() - started < 60


def test_a_full_disk_keeps_finished_batches_and_a_rerun_completes(small_disk, data_root):
    disk = small_disk(12)  # three pages: .lock, settings.json and a few predictions
    out = disk / "eval"
    args = ("--model", "tiny-gpt2", "--task", "coin_flip", "--method", "ft", "--max-new-tokens", "4",
            "--batch-size", "2", "--limit", "24", "--no-progress", "--data-dir", data_root)
    result = run_evaluate(*args, "--out", out)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {out / 'predictions.jsonl'}: the disk is full")
    kept = len([line for line in (out / "predictions.jsonl").read_bytes().split(b"\n") if line.strip()])
    assert kept > 0
    resize(disk, 1024)
    again = run_evaluate(*args, "--json", "--out", out)
    assert again.returncode == 0, again.stderr
    metrics = json.loads(again.stdout)
    assert metrics["n"] == 24 and 0 < metrics["generated_this_run"] < 24


def _save_tiny(directory, seed: int) -> None:
    from ftcot.models import load_model

    loaded = load_model("tiny-gpt2", dtype="float32", device="cpu", seed=seed)
    loaded.model.save_pretrained(directory)
    loaded.tokenizer.save_pretrained(directory)


def test_an_eval_dir_is_not_reused_for_other_weights_under_the_same_path(data_root, tmp_path):
    """The path is not the model: weights trained further (or replaced) under it are a new evaluation."""
    model, out = tmp_path / "model", tmp_path / "eval"
    _save_tiny(model, seed=1)
    args = ("--model", model, "--task", "coin_flip", "--method", "zs", "--limit", "2", "--max-new-tokens", "4",
            "--out", out, "--data-dir", data_root)
    first = run_evaluate(*args)
    assert first.returncode == 0, first.stderr
    assert json.loads((out / "settings.json").read_text())["weights"]

    _save_tiny(model, seed=2)  # other weights, same path
    refused = run_evaluate(*args)
    assert_one_line_error(refused, f"{out} holds an evaluation of other weights than {model} holds now")
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 2  # kept as they were

    _save_tiny(model, seed=1)  # the same weights again: the finished evaluation is reused
    again = run_evaluate(*args)
    assert again.returncode == 0 and "generated this run" in again.stdout, again.stderr
    assert json.loads((out / "metrics.json").read_text())["generated_this_run"] == 0


def test_a_binary_train_json_is_one_line(data_root, tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "train.json").write_bytes(bytes(range(128, 256)))
    result = run_evaluate("--model", tmp_path / "ckpt", "--task", "coin_flip", "--out", tmp_path / "eval",
                          "--data-dir", data_root)
    assert_one_line_error(result, "train.json: truncated or unreadable", "rerun 'ftcot train'")


def test_a_moved_model_with_the_same_weights_resumes_its_evaluation(coin_flip, tmp_path):
    """The weights are the model: a partial evaluation of a model whose directory moved (an experiment's stages
    copied into another --out) resumes with the new path, generating only what is missing; a model at the new
    path with other weights is still refused."""
    import shutil

    model, out = tmp_path / "model", tmp_path / "eval"
    _save_tiny(model, seed=1)
    evaluate(coin_flip, str(model), out, limit=2, **SETTINGS)
    moved = tmp_path / "elsewhere" / "model"
    shutil.copytree(model, moved)
    again = evaluate(coin_flip, str(moved), out, limit=4, **SETTINGS)
    assert again.metrics["n"] == 4 and again.metrics["generated_this_run"] == 2
    assert json.loads((out / "settings.json").read_text())["model"] == str(moved)
    other = tmp_path / "other"
    _save_tiny(other, seed=2)
    with pytest.raises(FtcotError, match="holds an evaluation of other weights"):
        evaluate(coin_flip, str(other), out, limit=4, **SETTINGS)
    # An evaluation recorded before weights were has only its path to go by: another path is another model.
    legacy = {k: v for k, v in json.loads((out / "settings.json").read_text()).items() if k != "weights"}
    (out / "settings.json").write_text(json.dumps({**legacy, "model": str(model)}))
    with pytest.raises(FtcotError, match="holds an evaluation with model"):
        evaluate(coin_flip, str(moved), out, limit=4, **SETTINGS)
