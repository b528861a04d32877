"""CKPT_DIR/metrics.jsonl: training metrics as they happen, one line per optimizer step and per epoch.

Lines (JSON objects, appended and flushed as training goes, so ``tail -f`` or a
notebook can follow a run)::

    {"kind": "step", "epoch": 1, "step": 7, "train_loss": 1.93, "tokens_per_s": 3120.5, "time": 1764390000.1}
    {"kind": "epoch", "epoch": 1, "step": 36, "train_loss": …, "val_loss": …, "val_accuracy": …,
     "val_correct": …, "val_total": …, "train_seconds": …, "train_tokens": …, "train_tokens_per_s": …, "time": …}

Logit distillation (``--kd-weight``) adds ``kd_loss`` to the step lines and ``train_kd_loss`` to the epoch
lines: the KL term per completion token, unweighted (``train_loss`` is the whole objective, CE + λ·KL).

A resumed run first drops the lines past the checkpoint it resumes from (that
part is trained again), so every step appears once. train.json keeps the
per-epoch record as before; this file is its live, step-level companion.

CKPT_DIR/validation.jsonl has one line per validation row and epoch, what the
epoch's val_loss and val_accuracy are made of (``correct`` and ``output`` for the
rows answered by generation)::

    {"epoch": 1, "step": 36, "sample_index": 12, "objective": null, "loss": 41.7, "loss_units": 57.0,
     "correct": true, "output": "… --> 43", "time": …}

so that an epoch can be chosen by another rule afterwards (the loss alone, a
subset), without training again.

With the ``tensorboard`` package installed, the same scalars also go to
CKPT_DIR/tensorboard/ (``tensorboard --logdir CKPT_DIR``): ``train/loss`` per
step, ``epoch/train_loss``, ``epoch/val_loss``, ``epoch/val_accuracy`` per epoch.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from typing import IO, Any

from ftcot.paths import atomic_write_text

METRICS_FILE = "metrics.jsonl"
VALIDATION_FILE = "validation.jsonl"
TENSORBOARD_DIR = "tensorboard"
EPOCH_SCALARS = ("train_loss", "train_kd_loss", "val_loss", "val_accuracy")


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


class MetricsLog:
    """Appends step and epoch lines to CKPT_DIR/metrics.jsonl (main process only: ``enabled``)."""

    def __init__(self, ckpt_dir: Path, resumed_step: int, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = Path(ckpt_dir) / METRICS_FILE
        self.validation_path = Path(ckpt_dir) / VALIDATION_FILE
        self._handle: IO[str] | None = None
        self._validation: IO[str] | None = None
        self._writer: Any = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _keep_until(self.path, resumed_step)
        _keep_until(self.validation_path, resumed_step)
        self._handle = self.path.open("a", encoding="utf-8")
        if tensorboard_available():
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(Path(ckpt_dir) / TENSORBOARD_DIR))

    def step(self, epoch: int, step: int, loss: float, tokens_per_s: float, kd_loss: float | None = None) -> None:
        line = {"kind": "step", "epoch": epoch, "step": step, "train_loss": loss, "tokens_per_s": tokens_per_s}
        self._write({**line, **({"kd_loss": kd_loss} if kd_loss is not None else {})})
        if self._writer is not None:
            self._writer.add_scalar("train/loss", loss, step)
            if kd_loss is not None:
                self._writer.add_scalar("train/kd_loss", kd_loss, step)

    def epoch(self, metrics: dict[str, Any]) -> None:
        # step_losses are the step lines already written; train.json keeps them with the epoch.
        self._write({"kind": "epoch", **{k: v for k, v in metrics.items() if k != "step_losses"}})
        if self._writer is not None:
            for name in EPOCH_SCALARS:
                if metrics.get(name) is not None:
                    self._writer.add_scalar(f"epoch/{name}", metrics[name], metrics["epoch"])
            self._writer.flush()

    def validation(self, epoch: int, step: int, rows: list[dict[str, Any]]) -> None:
        if not self.enabled:
            return
        if self._validation is None:
            self._validation = self.validation_path.open("a", encoding="utf-8")
        stamp = round(time.time(), 3)
        self._validation.write("".join(json.dumps({"epoch": epoch, "step": step, **row, "time": stamp}) + "\n"
                                       for row in rows))
        self._validation.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._validation is not None:
            self._validation.close()
            self._validation = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _write(self, line: dict[str, Any]) -> None:
        if self._handle is None:
            return
        self._handle.write(json.dumps({**line, "time": round(time.time(), 3)}) + "\n")
        self._handle.flush()


def _keep_until(path: Path, step: int) -> None:
    """Drop the lines past ``step`` (and a last line cut short by a kill) before a run appends to ``path``."""
    if not path.is_file():
        return
    kept = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if isinstance(line, dict) and int(line.get("step", 0)) <= step:
            kept.append(raw)
    atomic_write_text(path, "".join(f"{raw}\n" for raw in kept))
