"""Options shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

from ftcot.paths import given_path

DATA_DIR_HELP = "Data root (raw/, splits/, teacher/, …). Default: $FTCOT_DATA, else the user cache."

# `ftcot --data-dir DIR COMMAND …` (the root callback) sets it for every command; each command also takes it after
# its name, not listed in its --help (which keeps the stage commands' option lists short).
DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help=DATA_DIR_HELP, hidden=True)]

_root: list[Optional[Path]] = [None]


def set_root_data_dir(path: Optional[Path]) -> None:
    _root[0] = path


def data_root_option(data_dir: Optional[Path] = None) -> Optional[Path]:
    """The data root a command was given: its own --data-dir, else the root one, else None (the default)."""
    return data_dir if data_dir is not None else _root[0]


def output_path(option: str) -> Callable[[str], Path]:
    """The parser of an output folder's option (``typer.Option(parser=output_path("--out"))``): typer reads
    ``--out ''`` as Path(''), the current folder, where a run would then write; the text is checked first."""
    return lambda text: given_path(text, option)
