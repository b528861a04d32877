"""Shared fixtures. The reference data is read from ../shared/data (never copied)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FTCOT_DATA") or PROJECT_ROOT.parent / "shared" / "data").resolve()
TEACHER_DIR = SHARED_DATA / "teacher" / "text-davinci-002"


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not (SHARED_DATA / "raw").is_dir():
        pytest.fail(f"reference data not found at {SHARED_DATA}; set FTCOT_DATA")
    return SHARED_DATA
