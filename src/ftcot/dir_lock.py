"""One writer per output directory (a teach run, an evaluation, an API training job).

An exclusive ``flock`` on a lock file in the directory: the kernel releases it
when the holder's descriptor closes, on SIGKILL too, so a crashed run never
leaves a stale lock behind. The holder writes its pid into the file, so the
refusal can say who holds it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

from ftcot.errors import FtcotError


def lock_directory(lock_path: Path, busy: Callable[[str], str]) -> IO[str]:
    """Hold ``lock_path``'s lock until the returned handle is closed; held elsewhere → ``FtcotError(busy(holder))``."""
    handle = lock_path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise FtcotError(busy(holder)) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
