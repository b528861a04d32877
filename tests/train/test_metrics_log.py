"""CKPT_DIR/metrics.jsonl (and TensorBoard events): every step and epoch of a real ``ftcot train`` run, live."""

from __future__ import annotations

import json

import pytest

from ftcot.train.metrics_log import MetricsLog
from tests.train.helpers import record, run_train


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_training_run_logs_every_step_and_epoch_as_train_json_records_them(coin_flip_16, tmp_path):
    out = tmp_path / "ckpt"
    result = run_train(coin_flip_16, "--student", "tiny-gpt2", "--epochs", "2", "--batch-size", "8",
                       "--max-length", "1024", "--max-new-tokens", "8", "--out", out)
    assert result.returncode == 0, result.stderr
    logged = lines(out / "metrics.jsonl")
    epochs = record(out)["epochs"]
    steps = [line for line in logged if line["kind"] == "step"]
    assert [s["train_loss"] for s in steps] == [loss for e in epochs for loss in e["step_losses"]]
    assert [s["step"] for s in steps] == list(range(1, len(steps) + 1)) and len(steps) == 4  # 16 rows / 8, twice
    assert [s["epoch"] for s in steps] == [1, 1, 2, 2]
    ends = [line for line in logged if line["kind"] == "epoch"]
    assert [{k: e[k] for k in ("epoch", "step", "train_loss", "val_loss", "val_accuracy")} for e in ends] == [
        {k: e[k] for k in ("epoch", "step", "train_loss", "val_loss", "val_accuracy")} for e in epochs]
    assert [line["kind"] for line in logged] == ["step", "step", "epoch", "step", "step", "epoch"]

    # TensorBoard: the same scalars, readable by TensorBoard itself.
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = event_accumulator.EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx([s["train_loss"] for s in steps])
    assert [e.step for e in events.Scalars("epoch/val_loss")] == [1, 2]
    assert [e.value for e in events.Scalars("epoch/val_loss")] == pytest.approx([e["val_loss"] for e in epochs])


def test_a_resumed_run_drops_the_lines_past_its_checkpoint(tmp_path):
    # What a kill leaves: epoch 1 (steps 1-2) checkpointed, step 3 of epoch 2 logged, a line cut short.
    path = tmp_path / "metrics.jsonl"
    done = [{"kind": "step", "epoch": 1, "step": 1}, {"kind": "step", "epoch": 1, "step": 2},
            {"kind": "epoch", "epoch": 1, "step": 2}]
    path.write_text("".join(json.dumps(x) + "\n" for x in [*done, {"kind": "step", "epoch": 2, "step": 3}])
                    + '{"kind": "step", "ep')
    log = MetricsLog(tmp_path, resumed_step=2)
    log.step(2, 3, 0.5, 100.0)
    log.close()
    after = lines(path)
    assert after[:3] == done
    assert [(x["kind"], x["step"], x["train_loss"]) for x in after[3:]] == [("step", 3, 0.5)]
