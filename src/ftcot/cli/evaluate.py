"""``ftcot evaluate``: score a student or a prompting baseline on a task's split."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from ftcot.cli.options import DataDir, data_root_option, output_path
from ftcot.errors import FtcotError
from ftcot.evaluate.metrics import summary_table
from ftcot.evaluate.store import METRICS_FILE, PREDICTIONS_FILE


def _evaluate(out: Path, as_json: bool, progress: bool, data_root: Optional[Path], **options: Any) -> None:
    """Generate answers for a task's split, score them, write predictions.jsonl and metrics.json."""
    from ftcot.evaluate.config import EvaluateConfig
    from ftcot.evaluate.run import run_evaluate
    from ftcot.settings import build, cli_values

    config = build(EvaluateConfig, cli_values(options, ()), surface="cli")
    for name, flag in (("model", "--model"), ("task", "--task")):
        if getattr(config, name) is None:
            raise FtcotError(f"ftcot evaluate needs {flag} (see 'ftcot evaluate --help').")
    result = run_evaluate(config, out, data_root=data_root, progress=progress, console=Console(stderr=True))
    if as_json:
        print(json.dumps(result.metrics))
        return
    console = Console()
    console.print(summary_table(result.metrics))
    console.print(f"wrote {out / PREDICTIONS_FILE} and {out / METRICS_FILE}")


def _evaluate_command() -> Any:
    """``ftcot evaluate``'s options: EvaluateConfig's fields (:mod:`ftcot.settings`), with --out after --task."""
    from ftcot.evaluate.config import EvaluateConfig
    from ftcot.settings import cli_options

    def command(**options: Any) -> None:
        out, as_json, progress = options.pop("out"), options.pop("as_json"), options.pop("progress")
        if out is None:
            raise FtcotError("ftcot evaluate needs --out (see 'ftcot evaluate --help').")
        _evaluate(out, bool(as_json), bool(progress), data_root_option(options.pop("data_dir")), **options)

    fields = cli_options(EvaluateConfig)
    extra = [
        inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            Optional[Path], typer.Option(help="EVAL_DIR to write (a rerun into it resumes)",
                                         parser=output_path("--out"))]),
        inspect.Parameter("as_json", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
            bool, typer.Option("--json", help="Print metrics.json's object instead of a table")]),
        inspect.Parameter("progress", inspect.Parameter.KEYWORD_ONLY, default=True, annotation=Annotated[
            bool, typer.Option(help="Show a progress bar on stderr")]),
        inspect.Parameter("data_dir", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=DataDir),
    ]
    command.__signature__ = inspect.Signature([*fields[:2], extra[0], *fields[2:], *extra[1:]])
    command.__doc__ = _evaluate.__doc__
    return command


evaluate_command = _evaluate_command()
