"""Where the benchmark data lives.

The data root has the layout of the project's shared data: ``raw/``,
``splits/``, ``prompts/`` and ``teacher/``. It is chosen by, in order: an
explicit ``--data-dir``, the ``FTCOT_DATA`` environment variable, or the user
cache dir (where ``ftcot data download`` puts files by default).
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from ftcot.errors import DataMissingError

ENV_VAR = "FTCOT_DATA"


def default_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("ftcot")) / "data"


def resolve_data_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return default_cache_dir()


def require_file(root: Path, relative: str, what: str) -> Path:
    """The path of a data file, or a one-line error naming both ways to get it."""
    path = root / relative
    if not path.is_file():
        raise DataMissingError(
            f"{what}: {path} is missing. Run 'ftcot data download' "
            f"(or 'ftcot data download --to DIR'), or set {ENV_VAR} to a directory "
            f"that holds raw/, splits/, prompts/ and teacher/."
        )
    return path
