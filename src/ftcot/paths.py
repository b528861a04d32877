"""Where a command writes: never over what it reads, whole or not at all, and OS errors as one line.

Every command that writes checks its output with :func:`check_output` before it
does any work: an output that is, contains or lies inside one of its inputs (the
source file or directory, a task file, the data root) is refused, because
writing there would overwrite, or later be read back as part of, that input.
:func:`check_writable_dir` finds a read-only or missing output folder before a
long run rather than after it. Files are written through :func:`atomic_file`
(a temporary file in the same folder, renamed into place), so a crash or a full
disk leaves the old file or the new one, never half of one. :func:`os_error`
turns an ``OSError`` into a one-line :class:`FtcotError` that names the file.
"""

from __future__ import annotations

import errno
import json
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from ftcot.errors import FtcotError

_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def given_path(value: Any, name: str) -> Path:
    """``value`` as a Path, or one line naming ``name``: the one rule that a path given is a path. Not the
    empty string either: ``Path("")`` is the current folder, and a value left empty by mistake (``--out
    "$UNSET"``) would write there."""
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        hint = "; give one ('.' is the current folder)" if value == "" else ""
        raise FtcotError(f"{name} must be a path (got {value!r}){hint}.")
    return Path(value)


def check_output(out: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str] | None],
                 option: str = "--out", kind: str = "dir") -> Path:
    """``out`` resolved, or a one-line error if it overlaps an input or is the wrong kind of path.

    ``kind``: ``"dir"`` (the command writes a folder) or ``"file"``. ``None`` inputs are skipped, so
    callers can pass "the task file, if the task is one" as it is.
    """
    target = Path(out).expanduser().resolve()
    if kind == "file" and target.is_dir():
        raise FtcotError(f"{option} {out} is a directory; give a file path, e.g. {Path(out) / 'out.jsonl'}.")
    for source in inputs:
        if source is None:
            continue
        resolved = Path(source).expanduser().resolve()
        if target == resolved or _same_file(target, resolved):
            raise FtcotError(f"{option} {out} is the input {source}; writing there would destroy it. "
                             f"Choose another path.")
        if resolved in target.parents:
            raise FtcotError(f"{option} {out} lies inside the input {source}; choose a path outside it.")
        if target in resolved.parents:
            raise FtcotError(f"{option} {out} contains the input {source}; choose a path that does not.")
    if kind == "dir" and target.exists() and not target.is_dir():
        raise FtcotError(f"{option} {out} is a file; give a directory path.")
    return target


def _same_file(a: Path, b: Path) -> bool:
    """Hard links: two names, one file."""
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_writable_dir(directory: str | os.PathLike[str], option: str = "--out") -> None:
    """Create ``directory`` and write a probe file in it: a read-only folder fails here, not an epoch later."""
    directory = Path(directory)
    probe = directory / f".write-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise os_error(exc, probe if exc.filename == str(probe) else directory, option) from None


def os_error(exc: OSError, path: str | os.PathLike[str], option: str | None = None) -> FtcotError:
    """One line for a failed read or write: the file, the system's reason, and what to do."""
    where = f"{option} {path}" if option else str(path)
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return FtcotError(f"{where}: the disk is full ({reason}); free some space there and rerun "
                          f"(finished work is kept).")
    if exc.errno in _NOT_WRITABLE:
        return FtcotError(f"{where}: not writable ({reason}); make it writable or choose another output path.")
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):  # EEXIST: mkdir of a parent that is a file
        return FtcotError(f"{where}: a part of this path is a file, not a folder ({reason}); choose another path.")
    return FtcotError(f"{where}: cannot write ({reason}); check the path and rerun.")


def find_os_error(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc``: torch.save, for one, reports a full disk as a RuntimeError raised while
    handling the OSError of the file it was writing to, and safetensors as a message."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        # Rust-backed writers (safetensors, tokenizers) keep only the message: "... (os error 28)".
        code = re.search(r"\(os error (\d+)\)", str(exc))
        if code:
            return OSError(int(code[1]), os.strerror(int(code[1])))
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


@contextmanager
def atomic_file(path: str | os.PathLike[str], mode: str = "w", option: str | None = None) -> Iterator[IO]:
    """A handle on a temporary file next to ``path`` that replaces ``path`` when the block ends without error.

    On any error the temporary file is removed and ``path`` is left as it was; an OSError (also one
    hidden behind another exception, see :func:`find_os_error`) becomes a one-line FtcotError.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open(mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException as exc:
        with suppress(OSError):  # e.g. a parent that is a file: there is no temporary to remove
            tmp.unlink(missing_ok=True)
        error = write_error(exc, path, option)
        if error is not None:
            raise error from None
        raise


def write_error(exc: BaseException, path: str | os.PathLike[str], option: str | None = None) -> FtcotError | None:
    """The one line for a write that ``exc`` stopped, where an OSError is behind it (a full or read-only disk,
    however the writer reported it); None for anything else (a one-line error already, Ctrl-C, a bug)."""
    if isinstance(exc, (FtcotError, KeyboardInterrupt)):
        return None
    cause = find_os_error(exc)
    return None if cause is None else os_error(cause, path, option)


def write_stdout(write: Callable[[IO[str]], object]) -> None:
    """``write(sys.stdout)`` and flush, with a full disk behind a redirect as one line. A closed pipe
    (``| head``) is left to the caller's usual quiet exit."""
    if sys.stdout is None:  # started with stdout closed (`ftcot … >&-`): Python has no stream to write to
        raise FtcotError("standard output is closed; redirect it to a file, or write the output with --out.")
    try:
        write(sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise os_error(exc, "standard output") from None


def atomic_write_text(path: str | os.PathLike[str], text: str, option: str | None = None) -> None:
    with atomic_file(path, option=option) as handle:
        handle.write(text)


def atomic_write_json(path: str | os.PathLike[str], value: Any, *, sort_keys: bool = False,
                      option: str | None = None) -> None:
    """``value`` as indented JSON, written whole or not at all (the one JSON writer of ftcot's records)."""
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=sort_keys) + "\n", option)


def task_inputs(task: object) -> list[Path | None]:
    """What a loaded task reads: the data root of a built-in task, the file of one's own."""
    reader = getattr(getattr(task, "spec", None), "reader", None)
    return [getattr(task, "data_root", None), getattr(reader, "path", None)]


def existing_path(value: str | os.PathLike[str] | None) -> Path | None:
    """``value`` as a Path when it names something on disk (a model spec or task key may be either)."""
    if value is None:
        return None
    path = Path(value).expanduser()
    return path if path.exists() else None
