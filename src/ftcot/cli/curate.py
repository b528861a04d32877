"""``ftcot curate``: turn teacher rationales into a student's training data."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from ftcot.cli.options import DataDir, data_root_option, output_path
from ftcot.curate.report import contamination_lines, table_rows


def _curate(source: Optional[Path], out: Path, data_root: Optional[Path], **options: Any) -> None:
    """Keep correct rationales, format them for the student, write train/val files."""
    from ftcot.curate.config import COMPOUNDS, CurateConfig
    from ftcot.curate.run import run_curate
    from ftcot.settings import build, cli_values

    config = build(CurateConfig, cli_values(options, COMPOUNDS), surface="cli")
    outcome = run_curate(config, source, out, data_root=data_root)
    summary = outcome.summary
    table = Table(title=f"Curation of {outcome.task.key} ({config.template})")
    table.add_column("")
    table.add_column("count", justify="right")
    table.add_row("training questions", str(summary["train_questions"]))
    table.add_row("questions with an example", str(summary["questions_with_examples"]))
    table.add_row("examples kept", str(summary["kept"]))
    for reason, count in summary["dropped"].items():
        table.add_row(f"dropped: {reason}", str(count))
    table.add_row("train / val examples", f"{len(outcome.train)} / {len(outcome.val)}")
    for label, value in table_rows(summary):
        table.add_row(label, value)
    Console().print(table)
    for line in contamination_lines(summary):
        Console(stderr=True, soft_wrap=True).print(line, markup=False, highlight=False)
    Console().print(f"wrote {out}/train.jsonl, val.jsonl, openai_chat.jsonl, curation.json")


def _curate_command() -> Any:
    """``ftcot curate``'s options: CurateConfig's fields (:mod:`ftcot.settings`), SOURCE and --out first."""
    from ftcot.curate.config import COMPOUNDS, CurateConfig
    from ftcot.settings import cli_options

    def command(**options: Any) -> None:
        source, out, data_dir = options.pop("source"), options.pop("out"), options.pop("data_dir")
        _curate(source, out, data_root_option(data_dir), **options)

    source = inspect.Parameter("source", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=Annotated[
        Optional[Path], typer.Argument(metavar="SOURCE", help="A teach RUN_DIR, or a JSONL of teacher records (shared format). Not "
                                            "needed for --template ft.")])
    out = inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, default=Path("data"), annotation=Annotated[
        Path, typer.Option(help="DATA_DIR to write", parser=output_path("--out"))])
    data_dir = inspect.Parameter("data_dir", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=DataDir)
    command.__signature__ = inspect.Signature([source, out, *cli_options(CurateConfig, COMPOUNDS), data_dir])
    command.__doc__ = _curate.__doc__
    return command


curate_command = _curate_command()
