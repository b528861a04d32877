"""The one-writer lock: refused while held, released by a kill, and no lock file left by a finished run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ftcot.dir_lock import lock_directory
from ftcot.errors import FtcotError


def test_held_refused_released_and_removed(tmp_path):
    path = tmp_path / ".run.lock"
    lock = lock_directory(path, lambda holder: f"busy: {holder}")
    assert path.read_text() == str(__import__("os").getpid())
    with pytest.raises(FtcotError, match="busy: "):
        lock_directory(path, lambda holder: f"busy: {holder}")
    lock.close()
    assert not path.exists()  # a finished run leaves no lock file (.run.lock stayed)
    again = lock_directory(path, lambda holder: "busy")
    again.close()
    again.close()  # closing twice is harmless


def test_a_killed_holder_leaves_a_file_that_locks_nothing(tmp_path):
    path = tmp_path / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", f"""
import time
from pathlib import Path
from ftcot.dir_lock import lock_directory
lock = lock_directory(Path({str(path)!r}), lambda h: "busy")
print("held", flush=True)
time.sleep(60)
"""], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(FtcotError):
        lock_directory(path, lambda h: "busy")
    holder.kill()
    holder.wait()
    assert path.exists()
    lock_directory(path, lambda h: "busy").close()  # the kernel released it with the process
    assert not path.exists()


def test_a_taker_that_opened_the_file_as_its_holder_removed_it_locks_the_new_one(tmp_path):
    path = tmp_path / ".lock"
    first = lock_directory(path, lambda h: "busy")
    stale = path.open("a+")  # opened before the holder finishes, as a racing taker would
    first.close()
    second = lock_directory(path, lambda h: "busy")  # creates and locks a new file at the path
    import fcntl

    fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the old, unlinked file: lockable, and locks nothing
    with pytest.raises(FtcotError):
        lock_directory(path, lambda h: "busy")  # the path's file is still held by `second`
    stale.close()
    second.close()
