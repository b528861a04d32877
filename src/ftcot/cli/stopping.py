"""How a stopped command ends: SIGTERM unwinds like Ctrl-C, and the exit code says which it was."""

from __future__ import annotations

_terminated: list[int] = []  # the SIGTERM received, if any


def on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (a cluster's time limit, ``kill``, a container stopping) unwinds like Ctrl-C: the ``finally``
    blocks run, so a stopped ``ftcot run`` still writes its results and archive and releases its locks."""
    _terminated.append(signum)
    raise KeyboardInterrupt


def terminated() -> bool:
    return bool(_terminated)


def stop_exit_code() -> int:
    """143 after SIGTERM, 130 after Ctrl-C (the shells' 128 + signal)."""
    return 143 if _terminated else 130
