"""Running ``ftcot train`` as a user would: a real subprocess (``python -m ftcot train``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# Keep subprocess training single-threaded: on a shared 2-core machine OpenMP threads that
# wait for each other made small ops ~15x slower (tiny-gpt2 generation 34 s vs 2 s).
THREADS = {"OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def train_command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "ftcot", "train", *map(str, args)]


def run_train(*args: str | Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(train_command(*args), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **THREADS})


def record(ckpt_dir: Path) -> dict:
    return json.loads((ckpt_dir / "train.json").read_text(encoding="utf-8"))
