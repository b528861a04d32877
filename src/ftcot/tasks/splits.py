"""Train/test splits: the paper's frozen index files, and how they were made."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ftcot.data_root import require_file
from ftcot.errors import FtcotError

SPLIT_PARTS = ("train", "test", "all")
SPLIT_SCHEMES = ("default", "template")


def derive_split(indices: list[int], train_fraction: float = 0.7, seed: int = 0) -> dict[str, list[int]]:
    """The reference's 70/30 split: a seeded permutation, the first round(0.7·N) are train."""
    order = np.random.RandomState(seed).permutation(len(indices))
    n_train = round(train_fraction * len(indices))
    return {
        "train": sorted(indices[i] for i in order[:n_train]),
        "test": sorted(indices[i] for i in order[n_train:]),
    }


def load_split_file(data_root: Path, key: str, scheme: str) -> dict[str, list[int]]:
    if scheme not in SPLIT_SCHEMES:
        raise FtcotError(f"Unknown split scheme '{scheme}'. Valid: {', '.join(SPLIT_SCHEMES)}.")
    path = data_root / "splits" / f"{key}__{scheme}.json"
    if scheme != "default" and not path.is_file() and (data_root / "splits").is_dir():
        raise FtcotError(f"Task '{key}' has no '{scheme}' split (only multiarith and "
                         f"date_understanding do); use --split-scheme default.")
    path = require_file(data_root, f"splits/{key}__{scheme}.json", f"Split of '{key}'")
    with path.open(encoding="utf-8") as handle:
        data = json.load(handle)
    return {"train": list(data["train"]), "test": list(data["test"])}
