"""Two processes under ``accelerate launch`` follow the loss trajectory of one process at the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.train.helpers import THREADS, record, run_train

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "accelerate" / "ddp_cpu.yaml"
# fp32 and no dropout, so the two runs compute the same function; global batch 4 (2 rows per process).
ARGS = ("--student", "tiny-gpt2", "--epochs", "2", "--batch-size", "4", "--lr", "1e-3", "--no-bf16",
        "--dropout", "0", "--max-length", "768", "--max-new-tokens", "8")
# Relative tolerance on each step's loss: DDP sums gradients in another order (fp32 rounding),
# and Adam carries that through later steps; the largest difference measured here was 8.8e-7.
TOLERANCE = 1e-4


def test_two_processes_match_one(coin_flip_16, tmp_path):
    one = run_train(coin_flip_16, *ARGS, "--out", tmp_path / "one")
    assert one.returncode == 0, one.stderr[-2000:]
    accelerate = Path(sys.executable).with_name("accelerate")
    two = subprocess.run([str(accelerate), "launch", "--config_file", str(CONFIG), "-m", "ftcot", "train",
                          str(coin_flip_16), *ARGS, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=900, env={**os.environ, **THREADS})
    assert two.returncode == 0, two.stderr[-3000:]

    single, double = record(tmp_path / "one"), record(tmp_path / "two")
    assert (single["processes"], double["processes"]) == (1, 2)
    losses_1 = [loss for m in single["epochs"] for loss in m["step_losses"]]
    losses_2 = [loss for m in double["epochs"] for loss in m["step_losses"]]
    assert len(losses_1) == len(losses_2) == 8  # 16 examples / 4 per step × 2 epochs
    assert losses_2 == pytest.approx(losses_1, rel=TOLERANCE)
    assert losses_1[-1] < losses_1[0]  # it trained
    for a, b in zip(single["epochs"], double["epochs"]):
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=TOLERANCE)


def test_a_sharded_run_exports_its_best_epoch_not_its_last(coin_flip_16, tmp_path, monkeypatch):
    """FSDP and DeepSpeed checkpoint through accelerate's save_state/load_state, and best/ was the last epoch's
    weights while student.json named the best. Neither runs on a CPU (accelerate turns FSDP on only for GPU
    process groups), so this takes that path on one CPU process by declaring the state sharded: the same
    save_state/load_state calls, for real, on an unsharded model. lr 0.3 diverges after the first epoch (its
    validation loss rises at every epoch after), so the best epoch is an early one, not the third and last."""
    import ftcot
    from safetensors.torch import load_file

    from ftcot.train import trainer

    monkeypatch.setattr(trainer, "_shards_state", lambda accelerator: True)
    out = tmp_path / "ckpt"
    result = ftcot.train(coin_flip_16, out, student="tiny-gpt2", epochs=3, batch_size=4, lr=0.3, bf16=False,
                         dropout=0.0, max_length=768, max_new_tokens=8)
    best = result.best_epoch
    assert best < 3 and len(result.epochs) == 3  # (1 here: validation loss 38, 48, 59)
    assert json.loads((out / "best" / "student.json").read_text())["epoch"] == best

    def weights(file: Path, prefix: str = "") -> dict:
        # The checkpoint holds the training wrapper's keys (model.transformer.…), best/ the model's.
        return {k.removeprefix(prefix): v for k, v in load_file(file).items()}

    exported = weights(out / "best" / "model" / "model.safetensors")
    epochs = {e: weights(out / "checkpoints" / f"epoch-{e:04d}" / "accelerate" / "model.safetensors", "model.")
              for e in (best, 3)}
    assert set(exported) == set(epochs[best]) and len(exported) > 10
    assert all(torch.equal(value, epochs[best][name]) for name, value in exported.items())
    assert not all(torch.equal(value, epochs[3][name]) for name, value in exported.items())  # not the last's
