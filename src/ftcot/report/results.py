"""Result tables: tidy rows in, the paper's table layout and a tidy CSV out.

One :class:`ResultRow` is one evaluated cell (a method × student × teacher ×
task × D × seed). Seeds of the same cell are aggregated to a mean with a 95%
t-interval; the Markdown table has rows = method × student and columns =
tasks in the paper's order, plus the Random-guess row and the teacher row.
Names come from users (a student's or teacher's ``name``, a task file's), so
every cell is escaped: a ``|`` in a name stays in its cell instead of shifting
the numbers under another task.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ftcot.tasks import BUILTIN_TASKS

METHOD_NAMES = {"zs": "Zero-shot", "zs_cot": "Zero-shot-CoT", "fs_cot": "Few-shot-CoT",
                "ft": "Fine-tune", "ft_cot": "Fine-tune-CoT", "ft_cot_natural": "Fine-tune-CoT (natural)",
                "ft_dss": "Distilling step-by-step"}


@dataclass(frozen=True)
class ResultRow:
    method: str
    student: str
    teacher: str
    task: str
    D: int | None
    seed: int
    n: int
    accuracy: float  # percent
    train_size: int | None = None  # training questions, when a seeded subset was trained on
    # What the numbers were computed in, e.g. "bfloat16 (cpu)": part of a result's identity, since the same
    # config trains in bf16 on a CPU with native bf16 and in fp32 elsewhere. None: not recorded (an API
    # model, a baseline has no training, or a record older than these fields).
    train_precision: str | None = None
    eval_precision: str | None = None
    # The questions the row is about, when its accuracy covers fewer (n): a teacher stage with
    # failed items. Shown beside the number ("11 of 12 questions"); not a results.csv column.
    planned: int | None = None


@dataclass(frozen=True)
class Cell:
    mean: float
    half_width: float  # of the 95% interval; 0 for a single seed
    seeds: int

    def __str__(self) -> str:
        return f"{self.mean:.2f}" if self.seeds < 2 else f"{self.mean:.2f} ± {self.half_width:.2f}"


# Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom; 1.96 beyond.
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042]


def mean_interval(values: Sequence[float]) -> Cell:
    if len(values) < 2:
        return Cell(values[0], 0.0, len(values))
    t = _T975[len(values) - 2] if len(values) - 1 <= len(_T975) else 1.96
    return Cell(statistics.fmean(values), t * statistics.stdev(values) / math.sqrt(len(values)), len(values))


def method_label(row: ResultRow) -> str:
    """The method as the paper names it, with D for diverse reasoning (None: the greedy rationale)."""
    name = METHOD_NAMES.get(row.method, row.method)
    return f"{name} (D={row.D})" if row.D is not None else name


def row_label(row: ResultRow, with_teacher: bool = False) -> str:
    size = f", {row.train_size} questions" if row.train_size is not None else ""
    teacher = f", teacher {row.teacher}" if with_teacher and row.teacher else ""
    return f"{row.student}, {method_label(row)}{size}{teacher}"


def several_teachers(rows: Iterable[ResultRow]) -> bool:
    """Whether rows must name their teacher to be told apart."""
    return len({r.teacher for r in rows if r.teacher}) > 1


def task_order(tasks: Iterable[str]) -> list[str]:
    """The paper's column order for built-in tasks; a user's tasks after them."""
    known = [key for key in BUILTIN_TASKS if key in set(tasks)]
    return known + sorted(set(tasks) - set(known))


def aggregate(rows: Sequence[ResultRow]) -> dict[tuple[str, str], Cell]:
    """(row label, task) -> the cell over seeds."""
    with_teacher = several_teachers(rows)
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in rows:
        groups[(row_label(row, with_teacher), row.task)].append(row.accuracy)
    return {key: mean_interval(values) for key, values in groups.items()}


def markdown_cell(text: str) -> str:
    """``text`` as one cell of a pipe table: on one line, its ``|`` escaped (``\\|``, GitHub's way)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def results_markdown(rows: Sequence[ResultRow], teacher_rows: Sequence[ResultRow] = ()) -> str:
    tasks = task_order({r.task for r in rows} | {r.task for r in teacher_rows})
    headers = [BUILTIN_TASKS[t].title if t in BUILTIN_TASKS else t for t in tasks]
    lines = ["| | " + " | ".join(map(markdown_cell, headers)) + " |", "|---|" + "---|" * len(tasks)]

    def add(label: str, cells: dict[str, str]) -> None:
        lines.append(f"| {markdown_cell(label)} | " + " | ".join(markdown_cell(cells.get(t, "–")) for t in tasks)
                     + " |")

    add("Random", {t: f"{100 * BUILTIN_TASKS[t].random_accuracy:.2f}" for t in tasks if t in BUILTIN_TASKS})
    teacher_cells = aggregate(teacher_rows)
    # A teacher that answered only some questions says so beside its number, or 100.00 over 11 of
    # 12 questions would read as a perfect teacher.
    partial = {(row_label(r), r.task): f" ({r.n} of {r.planned} questions)" for r in teacher_rows
               if r.planned is not None and r.n < r.planned}
    for label in dict.fromkeys(row_label(r) for r in teacher_rows):
        add(f"teacher: {label}", {t: f"{c}{partial.get((lab, t), '')}" for (lab, t), c in teacher_cells.items()
                                  if lab == label})
    cells = aggregate(rows)
    for label in dict.fromkeys(row_label(r, several_teachers(rows)) for r in rows):
        add(label, {t: str(c) for (lab, t), c in cells.items() if lab == label})
    return "\n".join(lines) + "\n"


def precision_note(rows: Iterable[ResultRow]) -> str:
    """One sentence on what the rows were trained and evaluated in (a rerun elsewhere may differ by a few points)."""
    trained = sorted({r.train_precision for r in rows if r.train_precision})
    evaluated = sorted({r.eval_precision or "not recorded" for r in rows})
    if not trained and evaluated in ([], ["not recorded"]):
        return ""
    return (f"Precision: trained in {', '.join(trained) or '–'}; evaluated in {', '.join(evaluated)}. The same "
            f"config trains in bf16 where the CPU or GPU has native bf16 and in fp32 elsewhere, so a rerun on other "
            f"hardware may differ by a few points.")


CSV_COLUMNS = [f.name for f in fields(ResultRow) if f.name != "planned"]


def write_csv(rows: Iterable[ResultRow], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            record = {k: v for k, v in asdict(row).items() if k in CSV_COLUMNS}
            writer.writerow({**record, "D": "" if row.D is None else row.D,
                             "train_size": "" if row.train_size is None else row.train_size})
