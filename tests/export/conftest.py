"""Fixtures for the export tests: a real teach run and DATA_DIR, made by the real ``ftcot`` commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli import run_ftcot

THREADS = {"OMP_NUM_THREADS": "1"}  # see tests/train/helpers.py: 2 shared cores


def ok(result):
    assert result.returncode == 0, result.stderr + result.stdout
    return result


@pytest.fixture(scope="session")
def coin_flip_data(data_root, tmp_path_factory) -> Path:
    """``ftcot teach`` (the recorded text-davinci-002, replayed) then ``ftcot curate`` on coin_flip's train split."""
    root = tmp_path_factory.mktemp("coin")
    ok(run_ftcot("teach", "--task", "coin_flip", "--split", "train", "--teacher", "replay:text-davinci-002",
                 "--out", root / "teach", "--data-dir", data_root, env=THREADS))
    ok(run_ftcot("curate", root / "teach", "--out", root / "data", "--data-dir", data_root, env=THREADS))
    return root / "data"
