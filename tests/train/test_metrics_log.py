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

    # validation.jsonl: each epoch's validation rows, which make up its val_loss and val_correct.
    rows = lines(out / "validation.jsonl")
    val = [json.loads(line) for line in (coin_flip_16 / "val.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * len(val)
    for e in epochs:
        mine = [r for r in rows if r["epoch"] == e["epoch"]]
        assert [r["sample_index"] for r in mine] == [v["sample_index"] for v in val]
        assert {r["step"] for r in mine} == {e["step"]}
        assert sum(r["loss"] for r in mine) / sum(r["loss_units"] for r in mine) == pytest.approx(e["val_loss"])
        assert sum(r["correct"] for r in mine) == e["val_correct"]
        assert all(isinstance(r["output"], str) and r["loss_units"] > 0 for r in mine)

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
    validation = tmp_path / "validation.jsonl"
    validation.write_text(json.dumps({"epoch": 1, "step": 2, "sample_index": 0}) + "\n"
                          + json.dumps({"epoch": 2, "step": 4, "sample_index": 0}) + "\n" + '{"epoch": 3')
    log = MetricsLog(tmp_path, resumed_step=2)
    log.step(2, 3, 0.5, 100.0)
    log.validation(2, 3, [{"sample_index": 0, "loss": 1.0}])
    log.close()
    after = lines(path)
    assert after[:3] == done
    assert [(x["kind"], x["step"], x["train_loss"]) for x in after[3:]] == [("step", 3, 0.5)]
    assert [(x["epoch"], x["step"]) for x in lines(validation)] == [(1, 2), (2, 3)]
