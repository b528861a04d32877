"""``ftcot data synth``: coin flip and last-letter questions with any number of names."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ftcot.cli.options import DataDir
from ftcot.data_root import resolve_data_root
from ftcot.errors import FtcotError
from ftcot.jsonl import write_jsonl
from ftcot.tasks.synthetic import KINDS, generate, load_name_pool

ANSWER_TYPES = {"coin_flip": "yes/no", "last_letter_concatenation": "text"}


def synth_command(
    kind: Annotated[str, typer.Argument(help=f"What to generate: {' or '.join(KINDS)}")],
    names: Annotated[int, typer.Option(help="Names per question (the originals use 4); vary it to test length generalisation")] = 4,
    n: Annotated[int, typer.Option("--n", help="Number of questions")] = 500,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed and name list give the same questions")] = 0,
    out: Annotated[Optional[Path], typer.Option(help="Write the JSONL here (default: stdout)")] = None,
    data_dir: DataDir = None,
) -> None:
    """JSONL of generated questions with computed answers, usable as your own task file."""
    pool = load_name_pool(resolve_data_root(data_dir))
    records = generate(kind, names, n, seed, pool)
    # The questions depend on the name list as well as the seed, so say which one was used.
    note = (f"{len(records)} {kind} questions, {names} names each, seed {seed}, "
            f"{len(pool.names)} names from {pool.source}; use it with --answer-type {ANSWER_TYPES[kind]}")
    if out is None:
        write_jsonl(records, sys.stdout)
        typer.echo(note, err=True)
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8") as handle:
            write_jsonl(records, handle)
    except OSError as exc:
        raise FtcotError(f"--out {out}: cannot write ({exc.strerror}); choose another path.") from None
    typer.echo(f"wrote {out}: {note}", err=True)
