"""Real file-system faults for the reliability tests: a small tmpfs (a disk that fills up) and a read-only folder.

A tmpfs needs ``mount`` (root with CAP_SYS_ADMIN, as in the development container); a read-only folder
is a read-only tmpfs there, else ``chmod`` (which does not stop root). Each fixture skips, saying why,
where the machine offers neither.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def _mount_tmpfs(where: Path, options: str) -> str | None:
    """Mount a tmpfs at ``where``; None, or why it could not be mounted."""
    where.mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"mount is not available ({exc})"
    return None if result.returncode == 0 else f"cannot mount a tmpfs here ({result.stderr.strip()})"


def _unmount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """``small_disk(kib)``: a folder on a real tmpfs of that size, to fill up; ``resize(path, kib)`` grows it."""
    mounted: list[Path] = []

    def make(kib: int) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        why = _mount_tmpfs(where, f"size={kib}k")
        if why:
            pytest.skip(f"no real small disk: {why}")
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        _unmount(where)


def resize(where: Path, kib: int) -> None:
    """Free space on a ``small_disk`` (what a user does after the full-disk error)."""
    subprocess.run(["mount", "-o", f"remount,size={kib}k", str(where)], check=True, capture_output=True, timeout=30)


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder nobody can write into: a read-only tmpfs as root, ``chmod 555`` for everyone else."""
    where = tmp_path / "read-only"
    if os.geteuid() != 0:
        where.mkdir()
        where.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        yield where
        where.chmod(stat.S_IRWXU)
        return
    why = _mount_tmpfs(where, "ro,size=64k")  # chmod does not stop root; a read-only mount does
    if why:
        pytest.skip(f"running as root, where chmod does not block writes, and {why}")
    yield where
    _unmount(where)
