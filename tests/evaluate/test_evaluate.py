"""End-to-end evaluation on real tiny models (random init): files, resume, stages, batching, API."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from ftcot.errors import FtcotError
from ftcot.evaluate import evaluate
from ftcot.models import load_model
from ftcot.tasks import load_task
from tests.evaluate.cli import evaluate_argv, run_evaluate
from tests.evaluate.model_server import ModelServer


def read_predictions(out):
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def coin_flip(data_root):
    return load_task("coin_flip", data_root)


def test_student_spec_writes_predictions_and_metrics_that_agree(data_root, tmp_path):
    out = tmp_path / "eval"
    result = run_evaluate("--model", "tiny-gpt2", "--task", "coin_flip", "--method", "ft_cot", "--limit", "4",
                          "--batch-size", "2", "--max-new-tokens", "8", "--out", out, "--data-dir", data_root)
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout and "random guess" in result.stdout  # the summary table

    rows = read_predictions(out)
    metrics = json.loads((out / "metrics.json").read_text())
    test_indices = json.loads((data_root / "splits" / "coin_flip__default.json").read_text())["test"]
    assert sorted(r["sample_index"] for r in rows) == sorted(test_indices[:4])
    assert set(rows[0]) == {"sample_index", "question", "answer", "prompt", "output", "prediction", "correct",
                            "format_correct", "complete", "finish_reason", "prompt_tokens", "completion_tokens",
                            "generation_s", "dtype", "device"}
    # What each prediction was generated in: tiny-gpt2 auto-resolves to this CPU's precision.
    assert {(r["dtype"], r["device"]) for r in rows} <= {("bfloat16", "cpu"), ("float32", "cpu")}
    assert metrics["precision"] == rows[0]["dtype"] and metrics["device"] == "cpu"
    for row in rows:
        assert row["prompt"] == row["question"].strip() + " ###"  # the ft_cot training prompt
        assert row["completion_tokens"] <= 8
        assert row["complete"] == (row["finish_reason"] == "stop")
    assert metrics["n"] == len(rows) == 4
    assert metrics["correct"] == sum(r["correct"] for r in rows)
    assert metrics["accuracy"] == metrics["correct"] / 4
    assert metrics["format_rate"] == sum(r["format_correct"] for r in rows) / 4
    assert metrics["complete_rate"] == sum(r["complete"] for r in rows) / 4
    assert metrics["completion_tokens"] == sum(r["completion_tokens"] for r in rows)
    assert metrics["tokens_per_s"] > 0
    assert (metrics["task"], metrics["method"], metrics["model"], metrics["split"]) == (
        "coin_flip", "ft_cot", "tiny-gpt2", "test")
    assert metrics["random_accuracy"] == 0.5


def test_a_rerun_skips_finished_samples_and_regenerates_a_torn_line(coin_flip, tmp_path):
    out = tmp_path / "eval"
    settings = dict(method="ft", max_new_tokens=4, batch_size=2)
    first = evaluate(coin_flip, "tiny-gpt2", out, limit=3, **settings)
    assert first.metrics["generated_this_run"] == 3

    # A larger limit extends the evaluation: only the new samples are generated.
    second = evaluate(coin_flip, "tiny-gpt2", out, limit=5, **settings)
    assert second.metrics["generated_this_run"] == 2
    assert len(read_predictions(out)) == 5 and second.metrics["n"] == 5

    # A kill in the middle of a write leaves a line without its newline: it is dropped and redone.
    path = out / "predictions.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    torn_index = json.loads(lines[-1])["sample_index"]
    path.write_text("".join(lines[:-1]) + lines[-1][:40])
    third = evaluate(coin_flip, "tiny-gpt2", out, limit=5, **settings)
    assert third.metrics["generated_this_run"] == 1
    rows = read_predictions(out)
    assert len(rows) == 5 and rows[-1]["sample_index"] == torn_index
    assert third.metrics == {**second.metrics, "generated_this_run": 1, "generation_s": third.metrics["generation_s"],
                             "tokens_per_s": third.metrics["tokens_per_s"]}

    # Other settings never mix into the same EVAL_DIR.
    with pytest.raises(FtcotError, match="holds an evaluation with max_new_tokens '4', not '5'"):
        evaluate(coin_flip, "tiny-gpt2", out, method="ft", max_new_tokens=5, limit=5)


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-t5"])
def test_batched_greedy_equals_one_at_a_time(coin_flip, tmp_path, model):
    batched = evaluate(coin_flip, model, tmp_path / "b", method="ft_cot", max_new_tokens=10, limit=5, batch_size=5)
    single = evaluate(coin_flip, model, tmp_path / "s", method="ft_cot", max_new_tokens=10, limit=5, batch_size=1)
    assert [r["output"] for r in batched.records] == [r["output"] for r in single.records]
    assert [r["prediction"] for r in batched.records] == [r["prediction"] for r in single.records]
    assert [r["completion_tokens"] for r in batched.records] == [r["completion_tokens"] for r in single.records]
    if model == "tiny-gpt2":  # random tiny-t5 mostly emits sentinel tokens, which decode to nothing
        assert any(r["output"].strip() for r in batched.records)


def test_encoder_decoder_student_gets_the_prompt_without_separator(coin_flip, tmp_path):
    result = evaluate(coin_flip, "tiny-t5", tmp_path / "t5", method="ft_cot", max_new_tokens=6, limit=3)
    assert [r["prompt"] for r in result.records] == [r["question"].strip() for r in result.records]
    assert result.metrics["n"] == 3
    assert all(0 < r["completion_tokens"] <= 6 for r in result.records)


def test_zero_shot_cot_baseline_runs_two_stages_with_the_trigger(coin_flip, tmp_path):
    result = evaluate(coin_flip, "tiny-gpt2", tmp_path / "zs_cot", method="zs_cot", max_new_tokens=6, limit=2)
    trigger = coin_flip.spec.trigger
    assert trigger == "\nTherefore, the answer (Yes or No) is"
    for row in result.records:
        assert row["prompt"] == f"Q: {row['question']}\nA: Let's think step by step."
        assert trigger in row["answer_prompt"]
        assert row["answer_prompt"] == row["prompt"] + row["rationale"] + " " + trigger
        # Both stages are counted: a 6-token rationale plus a (≤ 32-token) answer.
        assert 6 < row["completion_tokens"] <= 6 + 32
    assert result.metrics["template"] == "zs_cot"


def test_few_shot_cot_baseline_prompts_with_the_exemplars(data_root, tmp_path):
    aqua = load_task("aqua", data_root)
    result = evaluate(aqua, "tiny-gpt2", tmp_path / "fs", method="fs_cot", max_new_tokens=4, limit=2)
    for row in result.records:
        assert row["prompt"].startswith("Q: ") and row["prompt"].endswith(f"\nQ: {row['question']}\nA:")
        assert "The answer is" in row["prompt"]
    assert json.loads((tmp_path / "fs" / "settings.json").read_text())["stop"] == ["\nQ:"]


def test_api_student_sends_the_prompt_with_stop_end_and_matches_the_local_model(coin_flip, tmp_path):
    server = ModelServer(load_model("tiny-gpt2"))
    try:
        remote = evaluate(coin_flip, "openai:tiny-gpt2", tmp_path / "api", method="ft_cot", max_new_tokens=8,
                          limit=3, batch_size=3, base_url=server.base_url)
    finally:
        server.close()
    assert len(server.requests) == 3
    assert all(r["stop"] == [" END"] and r["temperature"] == 0 and r["max_tokens"] == 8 for r in server.requests)
    assert sorted(r["prompt"] for r in server.requests) == sorted(r["prompt"] for r in remote.records)
    local = evaluate(coin_flip, "tiny-gpt2", tmp_path / "local", method="ft_cot", max_new_tokens=8, limit=3)
    assert [r["output"] for r in remote.records] == [r["output"] for r in local.records]
    assert remote.metrics["model"] == "openai:tiny-gpt2" and remote.metrics["n"] == 3


def test_a_saved_model_directory_with_a_method_is_evaluated_as_a_plain_model(coin_flip, tmp_path):
    loaded = load_model("tiny-gpt2")
    loaded.model.save_pretrained(tmp_path / "model")
    loaded.tokenizer.save_pretrained(tmp_path / "model")
    from_dir = evaluate(coin_flip, str(tmp_path / "model"), tmp_path / "dir", method="ft", max_new_tokens=6, limit=2)
    by_spec = evaluate(coin_flip, "tiny-gpt2", tmp_path / "spec", method="ft", max_new_tokens=6, limit=2)
    assert [r["output"] for r in from_dir.records] == [r["output"] for r in by_spec.records]
    assert from_dir.metrics["template"] == "ft"


def test_a_training_checkpoint_brings_its_template(coin_flip, tmp_path):
    from ftcot.train.checkpoint import save_best

    ckpt = tmp_path / "ckpt"
    save_best(ckpt, load_model("tiny-gpt2"), lora=False,
              info={"student": "tiny-gpt2", "seed": 0, "template": "ft_cot", "task": "coin_flip", "epoch": 1})
    result = evaluate(coin_flip, str(ckpt), tmp_path / "eval", max_new_tokens=6, limit=2)  # no method given
    assert (result.metrics["method"], result.metrics["template"]) == ("ft_cot", "ft_cot")
    assert all(r["prompt"].endswith(" ###") for r in result.records)
    with pytest.raises(FtcotError, match="is a 'ft_cot' student; drop --method ft"):
        evaluate(coin_flip, str(ckpt), tmp_path / "other", method="ft", limit=2)


def test_a_killed_evaluation_keeps_its_finished_batches(data_root, tmp_path):
    out = tmp_path / "eval"
    args = ["--model", "tiny-gpt2", "--task", "coin_flip", "--method", "ft", "--limit", "5", "--batch-size", "1",
            "--max-new-tokens", "6", "--out", out, "--data-dir", data_root, "--no-progress", "--json"]
    process = subprocess.Popen(evaluate_argv(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            path = out / "predictions.jsonl"
            if path.is_file() and path.read_text().count("\n") >= 2:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(30)
    kept = {r["sample_index"] for r in read_predictions(out)}  # every stored line is whole
    assert 2 <= len(kept) < 5, "the kill came too late to test anything"
    assert not (out / "metrics.json").exists()

    result = run_evaluate(*args)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["n"] == 5 and metrics["generated_this_run"] == 5 - len(kept)
    rows = read_predictions(out)
    assert len(rows) == 5 and kept <= {r["sample_index"] for r in rows}
