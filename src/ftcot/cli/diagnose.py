"""``ftcot diagnose``: why a student is wrong — failure modes of evaluations, one row each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ftcot.errors import FtcotError
from ftcot.evaluate.diagnose import diagnose
from ftcot.evaluate.store import PREDICTIONS_FILE
from ftcot.jsonl import read_jsonl

_stdout = Console(highlight=False, soft_wrap=True)


def diagnose_command(
    paths: Annotated[list[Path], typer.Argument(metavar="EVAL_DIR|RUN_DIR...",
                                                help="Evaluation directories, or `ftcot run` directories")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per evaluation")] = False,
) -> None:
    """Cut at the token limit, looping, answer never written, answer collapse — per evaluation."""
    found = [e for path in paths for e in _evaluations(path)]
    table = Table(title="Failure modes (% of test questions)")
    for column in ("evaluation", "n", "acc", "acc if ended", "cut", "looping", "no answer", "top prediction",
                   "top gold"):
        table.add_column(column, justify="left" if column in ("evaluation", "top prediction") else "right")
    for label, directory in found:
        records = [record for _, record in read_jsonl(directory / PREDICTIONS_FILE)]
        if not records:
            raise FtcotError(f"{directory / PREDICTIONS_FILE}: no predictions yet; run the evaluation first.")
        d = diagnose(records)
        if as_json:
            _stdout.print(json.dumps({"evaluation": label, **d.to_json()}), markup=False)
            continue
        pct = lambda x: "–" if x is None else f"{100 * x:.1f}"  # noqa: E731
        table.add_row(label, str(d.n), pct(d.accuracy), pct(d.accuracy_when_complete), pct(d.cut),
                      pct(d.looping), pct(d.no_answer), f"{d.top_prediction or '(none)'} {pct(d.top_prediction_share)}",
                      pct(d.top_gold_share))
    if not as_json:
        _stdout.print(table)


def _evaluations(path: Path) -> list[tuple[str, Path]]:
    """(label, directory) of the evaluation at ``path``, or of every evaluate stage of a run at ``path``."""
    if (path / PREDICTIONS_FILE).is_file():
        return [(str(path), path)]
    stages = sorted(p.parent for p in (path / "stages" / "evaluate").glob(f"*/{PREDICTIONS_FILE}"))
    if not stages:
        raise FtcotError(f"{path}: no {PREDICTIONS_FILE} here or under stages/evaluate/; give an evaluation "
                         f"directory (ftcot evaluate --out) or an experiment directory (ftcot run --out).")
    return [(_label(stage), stage) for stage in stages]


def _label(stage: Path) -> str:
    try:
        return json.loads((stage / "stage.json").read_text(encoding="utf-8"))["label"]
    except (OSError, ValueError, KeyError):
        return stage.name
