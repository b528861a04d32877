"""``ftcot curate`` with bad numbers, a read-only or full --out (issue 14): one line, and an older DATA_DIR whole."""

from __future__ import annotations

import hashlib
import os

import pytest

from tests.cli import assert_one_line_error, run_ftcot
from tests.conftest import TEACHER_DIR
from tests.mounts import read_only_dir, small_disk  # noqa: F401  (fixtures)

RECORDS = TEACHER_DIR / "zs_cot" / "coin_flip.jsonl"


def curate(*args, data_root):
    return run_ftcot("curate", RECORDS, "--task", "coin_flip", *args, "--data-dir", data_root)


def files(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


@pytest.mark.parametrize(("flag", "value", "fragment"), [
    ("--val-fraction", "nan", "finite number in [0, 1)"),
    ("--val-fraction", "1", "finite number in [0, 1)"),
    ("--val-fraction", "-0.1", "finite number in [0, 1)"),
    ("--max-per-question", "0", "at least 1"),
    ("--max-rationale-tokens", "-5", "at least 1"),
    ("--val-seed", "-1", "at least 0"),
])
def test_a_number_out_of_range_is_one_line(flag, value, fragment, data_root, tmp_path):
    result = curate(flag, value, "--out", tmp_path / "data", data_root=data_root)
    assert_one_line_error(result, flag, fragment)
    assert not (tmp_path / "data").exists()


def test_a_read_only_out_is_one_line(read_only_dir, data_root):
    result = curate("--out", read_only_dir / "data", data_root=data_root)
    assert_one_line_error(result, str(read_only_dir / "data"), "not writable")


def test_a_full_disk_leaves_the_older_data_dir_whole(small_disk, data_root):
    disk = small_disk(1024)
    out = disk / "data"
    first = curate("--out", out, data_root=data_root)
    assert first.returncode == 0, first.stderr
    before = files(out)
    # Fill the disk but for a few pages: the rewrite (a new validation seed) cannot fit.
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "filler").write_bytes(b"\0" * (free - 64 * 1024))
    result = curate("--val-seed", "7", "--out", out, data_root=data_root)
    assert_one_line_error(result, str(out), "the disk is full", "free some space")
    assert files(out) == before  # every file the old one: no mix of old and new, no temporary left
