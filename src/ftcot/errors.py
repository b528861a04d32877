"""User-facing errors.

Anything a user can fix (a bad file, a missing field, an unknown name, missing
data) raises :class:`FtcotError` with a one-line message that names the file,
line or field and the fix. The CLI prints that line and exits with code 2; it
never shows a traceback for these.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any


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


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None, *,
              optional: bool = False) -> None:
    """A whole number in [low, high] (``None`` allowed when ``optional``), else a one-line error naming ``name``."""
    if value is None and optional:
        return
    # bool is an int in Python; `epochs: true` in a YAML file is a mistake, not 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise FtcotError(f"{name} must be a whole number (got {value!r}).")
    if (low is not None and value < low) or (high is not None and value > high):
        bound = (f"between {low} and {high}" if low is not None and high is not None
                 else f"at least {low}" if low is not None else f"at most {high}")
        raise FtcotError(f"{name} must be {bound} (got {value}).")


def check_float(name: str, value: Any, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False, optional: bool = False) -> None:
    """A finite number within the bounds (``*_open``: the bound itself excluded), else a one-line error.

    NaN compares false with everything, so a bare ``value > 0`` check lets it through: finiteness first.
    """
    if value is None and optional:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise FtcotError(f"{name} must be a number (got {value!r}).")
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if not math.isfinite(value) or below or above:
        left = "(" if low_open or low is None else "["
        right = ")" if high_open or high is None else "]"
        span = f"{left}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}{right}"
        raise FtcotError(f"{name} must be a finite number in {span} (got {value}).")
