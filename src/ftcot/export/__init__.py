"""Take what ftcot makes elsewhere: students as plain transformers models, training data as Hub datasets.

- :func:`export_model` (``ftcot export model CKPT_DIR --to DIR``): the best epoch of a
  training run, LoRA merged, as a standard transformers directory with a model card.
- :func:`export_dataset` (``ftcot export dataset DATA_DIR --to DIR``): a DATA_DIR's rows as
  Parquet, prompt/completion JSONL and chat JSONL, with a dataset card.

Both refuse a ``--to`` inside an input and write under a temporary name, renamed
when complete. Heavy imports (torch, pyarrow) happen inside the functions.
"""

from __future__ import annotations

from typing import Any

__all__ = ["export_dataset", "export_model"]


def __getattr__(name: str) -> Any:
    if name == "export_dataset":
        from ftcot.export.dataset import export_dataset

        return export_dataset
    if name == "export_model":
        from ftcot.export.model import export_model

        return export_model
    raise AttributeError(f"module 'ftcot.export' has no attribute '{name}'")
