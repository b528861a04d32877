"""One writer per output directory (a teach run, an evaluation, a training, an experiment).

An exclusive ``flock`` on a lock file in the directory: the kernel releases it
when the holder's descriptor closes, on SIGKILL too, so a crashed run never
leaves a stale lock behind. The holder writes its pid into the file, so the
refusal can say who holds it, and removes the file when it finishes (a finished
run leaves no lock file; one killed leaves a file that locks nothing).

Removing a lock file is safe only because a taker checks, once it holds the
flock, that the file it locked is still the one at the path: a process that
opened the file just before the holder removed it would otherwise hold a lock
on a file no one else can see.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

from ftcot.errors import FtcotError


class DirLock:
    """A held lock; :meth:`close` removes its file and releases it."""

    def __init__(self, handle: IO[str], path: Path) -> None:
        self._handle: IO[str] | None = handle
        self.path = path

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is None:
            return
        try:
            if _same_file(self.path, handle):
                self.path.unlink()  # while still holding it: a taker that opened it now sees it gone and retries
        except OSError:
            pass  # a read-only directory keeps its lock file; it locks nothing once released
        handle.close()  # closing the descriptor releases the flock


def _same_file(path: Path, handle: IO[str]) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False


def lock_directory(lock_path: Path, busy: Callable[[str], str]) -> DirLock:
    """Hold ``lock_path``'s lock until the returned lock is closed; held elsewhere → ``FtcotError(busy(holder))``."""
    for _ in range(5):
        handle = lock_path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise FtcotError(busy(holder)) from None
        if _same_file(lock_path, handle):
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            return DirLock(handle, lock_path)
        handle.close()  # the holder before us removed this file as we opened it: lock the one there now
    raise FtcotError(busy("another process"))
