"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

DataDir = Annotated[
    Optional[Path],
    typer.Option("--data-dir", help="Data root (raw/, splits/, …). Default: $FTCOT_DATA, else the user cache."),
]
