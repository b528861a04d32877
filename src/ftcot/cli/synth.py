"""``ftcot data synth``: coin flip and last-letter questions with any number of names."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ftcot.cli.options import DataDir, data_root_option
from ftcot.data_root import resolve_data_root
from ftcot.errors import check_int
from ftcot.jsonl import write_jsonl
from ftcot.paths import atomic_file, check_output, write_stdout
from ftcot.tasks.synthetic import KINDS, generate, load_name_pool

ANSWER_TYPES = {"coin_flip": "yes/no", "last_letter_concatenation": "text"}
MAX_QUESTIONS = 1_000_000
DATA_PARTS = ("raw", "splits", "prompts", "teacher")  # what `ftcot data download` writes under the data root


def synth_command(
    kind: Annotated[str, typer.Argument(help=f"What to generate: {' or '.join(KINDS)}")],
    names: Annotated[int, typer.Option(help="Names per question (the originals use 4); vary it to test length generalisation")] = 4,
    n: Annotated[int, typer.Option("--n", help="Number of questions")] = 500,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed and name list give the same questions")] = 0,
    out: Annotated[Optional[Path], typer.Option(help="Write the JSONL here (default: stdout)")] = None,
    data_dir: DataDir = None,
) -> None:
    """JSONL of generated questions with computed answers, usable as your own task file."""
    root = resolve_data_root(data_root_option(data_dir))
    # The questions are held in memory before writing: a typo of a few zeros should not exhaust it.
    check_int("--n", n, 1, MAX_QUESTIONS)
    if out is not None:
        # The names are read from the benchmarks under the data root; a task file of one's own may sit beside them.
        check_output(out, [root / part for part in DATA_PARTS], kind="file")
    pool = load_name_pool(root)
    records = generate(kind, names, n, seed, pool)
    # The questions depend on the name list as well as the seed, so say which one was used.
    note = (f"{len(records)} {kind} questions, {names} names each, seed {seed}, "
            f"{len(pool.names)} names from {pool.source}; use it with --answer-type {ANSWER_TYPES[kind]}")
    if out is None:
        write_stdout(lambda handle: write_jsonl(records, handle))
        typer.echo(note, err=True)
        return
    with atomic_file(out, option="--out") as handle:
        write_jsonl(records, handle)
    typer.echo(f"wrote {out}: {note}", err=True)
