"""User-facing errors.

Anything a user can fix (a bad file, a missing field, an unknown name, missing
data) raises :class:`FtcotError` with a one-line message that names the file,
line or field and the fix. The CLI prints that line and exits with code 2; it
never shows a traceback for these.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FtcotError(Exception):
    """An error the user can fix; its message is one line that says how."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # One line, always: multi-line messages break the "one clear line" contract.
        super().__init__(" ".join(str(message).split()))


class DataMissingError(FtcotError):
    """A benchmark's raw files are not under the data root."""


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> FtcotError:
    """An error for an unknown key that suggests near misses and lists the valid ones."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return FtcotError(f"Unknown {kind} '{name}'.{hint} Valid: {', '.join(valid)}.")
