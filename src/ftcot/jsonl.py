"""JSON Lines in and out, with errors that name the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from ftcot.errors import FtcotError


class _RepeatedKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's keys, each once: json keeps a repeated key's last value, and drops the first unsaid."""
    value = dict(pairs)
    if len(value) < len(pairs):
        seen: set[str] = set()
        raise _RepeatedKey(next(key for key, _ in pairs if key in seen or seen.add(key)))  # type: ignore[func-returns-value]
    return value


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; a bad line is a one-line error."""
    try:
        handle = path.open("rb")  # bytes, so an encoding error names its own line
    except OSError as exc:
        raise FtcotError(f"{path}: cannot read ({exc.strerror}).") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            try:
                # utf-8-sig on the first line: editors on Windows start a file with a byte-order mark.
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise FtcotError(f"{path}:{number}: not UTF-8 text; save the file as UTF-8.") from None
            if not line.strip():
                continue
            try:
                value = json.loads(line, object_pairs_hook=_unique_keys)
            except json.JSONDecodeError as exc:
                raise FtcotError(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno}); "
                                 f"fix or remove that line.") from None
            except _RepeatedKey as exc:
                raise FtcotError(f"{path}:{number}: the key '{exc}' is given twice in one object; keep the one "
                                 f"you mean.") from None
            if not isinstance(value, dict):
                raise FtcotError(f"{path}:{number}: expected a JSON object, got {type(value).__name__}.")
            yield number, value


def json_object(path: Path) -> tuple[dict[str, Any], str | None]:
    """A JSON file's object, or ``({}, what is wrong)``: missing, cut short, not UTF-8, not an object."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, "missing"
    except (ValueError, OSError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return {}, f"truncated or unreadable ({getattr(exc, 'msg', None) or getattr(exc, 'strerror', None) or exc})"
    return (value, None) if isinstance(value, dict) else ({}, "not a JSON object")


def read_json_object(path: Path, hint: str) -> dict[str, Any]:
    """``json_object``, with what is wrong as a one-line error naming the file, then ``hint`` (what to do)."""
    value, problem = json_object(path)
    if problem:
        raise FtcotError(f"{path}: {problem}; {hint}.")
    return value


_KINDS = {int: "a whole number", str: "text", type(None): "null"}


def require_field(record: dict[str, Any], name: str, path: Path, line: int,
                  kind: type | tuple[type, ...] | None = None) -> Any:
    """``record[name]``, or one line naming the file, line and field: missing, or (``kind``: the types it may
    have) of another type. A boolean is no whole number: ``true`` would be read as question 1."""
    if name not in record:
        present = ", ".join(sorted(record)) or "none"
        raise FtcotError(f"{path}:{line}: missing field '{name}' (fields present: {present}).")
    value = record[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if kind is not None and (not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)):
        wanted = " or ".join(_KINDS.get(k, k.__name__) for k in kinds)
        raise FtcotError(f"{path}:{line}: field '{name}' must be {wanted} (got {value!r}); fix that line.")
    return value


def write_jsonl(records: Iterable[dict[str, Any]], handle: IO[str]) -> int:
    count = 0
    for record in records:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        count += 1
    return count
