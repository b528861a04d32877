"""``ftcot score``: score a JSONL of completions against gold answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from ftcot.cli.options import DataDir, data_root_option
from ftcot.data_root import resolve_data_root
from ftcot.jsonl import read_jsonl, require_field, write_jsonl
from ftcot.paths import atomic_file, check_output, task_inputs
from ftcot.scoring import RULES, score
from ftcot.tasks import load_task
from ftcot.templates import get_template


def score_command(
    file: Annotated[Path, typer.Argument(help="JSONL with 'answer' and a completion field")],
    task: Annotated[str, typer.Option(help="Task key (answer rules), or your own task file")],
    rule: Annotated[str, typer.Option(help=f"Extraction rule: {' or '.join(RULES)}")] = "paper",
    template: Annotated[str, typer.Option(
        help="zs, zs_cot, fs_cot, ft, ft_cot or ft_dss (sets the answer prefix)")] = "zs_cot",
    field: Annotated[str, typer.Option(help="Field holding the completion text")] = "answer_completion",
    answer_type: Annotated[Optional[str], typer.Option(help="For your own task: number, letter, yes/no, text")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
    details: Annotated[Optional[Path], typer.Option(help="Write per-record predictions to this JSONL")] = None,
    data_dir: DataDir = None,
) -> None:
    """Print n, correct and accuracy of the completions in FILE."""
    loaded = load_task(task, resolve_data_root(data_root_option(data_dir)), answer_type)
    spec = loaded.spec
    chosen = get_template(template)
    if rule not in RULES:
        from ftcot.errors import unknown_name

        raise unknown_name("rule", rule, RULES)
    if details:
        # Checked before scoring: --details FILE would replace the very completions being scored.
        check_output(details, [file, *task_inputs(loaded)], option="--details", kind="file")
    rows = []
    for line, record in read_jsonl(file):
        gold = str(require_field(record, "answer", file, line))
        text = require_field(record, field, file, line)
        if not isinstance(text, str):
            raise _not_text(file, line, field, text)
        result = score(text, gold, spec, chosen, rule)
        rows.append({"line": line, "answer": gold, "prediction": result.prediction, "correct": result.correct})
    if not rows:  # an accuracy of 0.00% over nothing would pass for a measurement
        raise _no_records(file)
    correct = sum(r["correct"] for r in rows)
    summary = {"n": len(rows), "correct": correct, "accuracy": correct / len(rows) if rows else 0.0}
    if details:
        with atomic_file(details, option="--details") as handle:
            write_jsonl(rows, handle)
    if as_json:
        print(json.dumps(summary))
    else:
        Console().print(f"{spec.key} ({rule} rule, {template}): n={summary['n']} correct={correct} "
                        f"accuracy={100 * summary['accuracy']:.2f}%")


def _not_text(file: Path, line: int, field: str, value: object):
    from ftcot.errors import FtcotError

    return FtcotError(f"{file}:{line}: field '{field}' must be a string, got {type(value).__name__}.")


def _no_records(file: Path):
    from ftcot.errors import FtcotError

    return FtcotError(f"{file}: no records to score (the file is empty or blank); nothing was written.")
