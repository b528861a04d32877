"""Stage 3: fine-tune a student on a curated DATA_DIR (as in the paper).

- ``train(data_dir, out, TrainConfig(...))``: the ``ftcot train`` command's work.
- ``load_student(ckpt_dir, dtype=, device=) -> (LoadedModel, Template)``: what evaluation loads.

Modules: config (settings), data (DATA_DIR, tokenization, batches, padding),
preflight (checks before training), loss (completion-only chunked loss),
checkpoint (CKPT_DIR layout, resume, best export), trainer (the loop), progress (display).
"""

from __future__ import annotations

from ftcot.train.checkpoint import load_student
from ftcot.train.config import TrainConfig
from ftcot.train.trainer import train

__all__ = ["TrainConfig", "load_student", "train"]
