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

from ftcot.report.statistics import PairedTest, p_text, wilson_interval
from ftcot.tasks import BUILTIN_TASKS

METHOD_NAMES = {"zs": "Zero-shot", "zs_cot": "Zero-shot-CoT", "fs_cot": "Few-shot-CoT",
                "ft": "Fine-tune", "ft_cot": "Fine-tune-CoT", "ft_cot_natural": "Fine-tune-CoT (natural)",
                "ft_dss": "Distilling step-by-step", "ft_cot_kd": "Fine-tune-CoT + logit KD"}


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


def task_title(task: str) -> str:
    return BUILTIN_TASKS[task].title if task in BUILTIN_TASKS else task


def seed_groups(rows: Sequence[ResultRow]) -> dict[tuple[str, str], list[ResultRow]]:
    """(row label, task) -> the rows of that cell, one per seed."""
    with_teacher = several_teachers(rows)
    groups: dict[tuple[str, str], list[ResultRow]] = defaultdict(list)
    for row in rows:
        groups[(row_label(row, with_teacher), row.task)].append(row)
    return groups


def aggregate(rows: Sequence[ResultRow]) -> dict[tuple[str, str], Cell]:
    """(row label, task) -> the cell over seeds."""
    return {key: mean_interval([r.accuracy for r in group]) for key, group in seed_groups(rows).items()}


def markdown_cell(text: str) -> str:
    """``text`` as one cell of a pipe table: on one line, its ``|`` escaped (``\\|``, GitHub's way)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _table_head(tasks: Sequence[str]) -> list[str]:
    """A pipe table's header lines: an empty corner, then one column per task."""
    return ["| | " + " | ".join(markdown_cell(task_title(t)) for t in tasks) + " |", "|---|" + "---|" * len(tasks)]


def results_markdown(rows: Sequence[ResultRow], teacher_rows: Sequence[ResultRow] = ()) -> str:
    tasks = task_order({r.task for r in rows} | {r.task for r in teacher_rows})
    lines = _table_head(tasks)

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
    rows = list(rows)
    trained = sorted({r.train_precision for r in rows if r.train_precision})
    evaluated = sorted({r.eval_precision for r in rows if r.eval_precision})
    if not trained and not evaluated:
        return ""

    def said(values: list[str], done: str, what: str) -> str:
        # A stage made before precision was recorded has none: said as such, not as a precision.
        return f"{done} in {', '.join(values)}" if values else f"{what} precision not recorded"

    unrecorded = " (some not recorded)" if evaluated and any(not r.eval_precision for r in rows) else ""
    return (f"Precision: {said(trained, 'trained', 'training')}; {said(evaluated, 'evaluated', 'evaluation')}"
            f"{unrecorded}. The same config trains in bf16 where the CPU or GPU has native bf16 and in fp32 "
            f"elsewhere, so a rerun on other hardware may differ by a few points.")


def sample_size_note(rows: Sequence[ResultRow], teacher_rows: Sequence[ResultRow] = ()) -> str:
    """One sentence where a column's accuracies are over different numbers of test questions (a teacher row on
    the whole test split beside students evaluated with a limit), so that nobody compares them unawares."""
    parts = []
    for task in task_order({r.task for r in [*rows, *teacher_rows]}):
        sizes = {"teacher": sorted({r.n for r in teacher_rows if r.task == task}),
                 "students": sorted({r.n for r in rows if r.task == task})}
        if len({n for ns in sizes.values() for n in ns}) > 1:
            parts.append(f"{task_title(task)}: " + ", ".join(
                f"{who} on {' / '.join(map(str, ns))}" for who, ns in sizes.items() if ns))
    if not parts:
        return ""
    return ("Test questions per accuracy differ — " + "; ".join(parts)
            + " (an evaluation limit, or a teacher that answered fewer): compare such rows with care.")


def row_interval(row: ResultRow) -> tuple[float, float]:
    """The 95% Wilson interval of one evaluation's accuracy over its questions, in percent."""
    low, high = wilson_interval(round(row.accuracy * row.n / 100), row.n)
    return 100 * low, 100 * high


def group_interval(rows: Sequence[ResultRow]) -> tuple[float, float, float]:
    """(mean, low, high) in percent of one cell's seeds: Wilson over the test questions for one seed; for several,
    the wider of the spread over seeds (t) and the test set's own (Wilson at the mean: every seed answers the
    same questions, so seeds that agree do not make a 150-question test set exact), within [0, 100]."""
    if len(rows) == 1:
        return (rows[0].accuracy, *row_interval(rows[0]))
    cell = mean_interval([r.accuracy for r in rows])
    n = min(r.n for r in rows)
    low, high = wilson_interval(round(cell.mean * n / 100), n)
    return (cell.mean, max(0.0, min(cell.mean - cell.half_width, 100 * low)),
            min(100.0, max(cell.mean + cell.half_width, 100 * high)))


def intervals_markdown(rows: Sequence[ResultRow]) -> str:
    """The table's cells with their 95% intervals (:func:`group_interval`); one test question is 100/n points,
    so on 150 questions a difference under ~8 points may be noise."""
    tasks = task_order({r.task for r in rows})
    groups = seed_groups(rows)
    lines = _table_head(tasks)
    for label in dict.fromkeys(label for label, _ in groups):
        cells = []
        for task in tasks:
            group = groups.get((label, task))
            if not group:
                cells.append("–")
            else:
                mean, low, high = group_interval(group)
                cells.append(f"{mean:.2f} [{low:.1f}, {high:.1f}]")
        lines.append(f"| {markdown_cell(label)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PairedRow:
    """Two methods' evaluations of one student on the same test questions (same task, seed and training size)."""

    student: str
    task: str
    seed: int
    train_size: int | None
    first: str  # method labels, as the table names them
    second: str
    first_accuracy: float
    second_accuracy: float
    test: PairedTest


def paired_markdown(pairs: Sequence[PairedRow]) -> str:
    lines = ["| student | task | seed | A | B | A − B | right only by A / only by B | McNemar p |",
             "|---|---|---|---|---|---|---|---|"]
    for pair in pairs:
        size = f", {pair.train_size} questions" if pair.train_size is not None else ""
        lines.append("| " + " | ".join(markdown_cell(c) for c in (
            pair.student + size, task_title(pair.task),
            str(pair.seed), f"{pair.first} {pair.first_accuracy:.2f}", f"{pair.second} {pair.second_accuracy:.2f}",
            f"{pair.first_accuracy - pair.second_accuracy:+.2f}", f"{pair.test.only_a} / {pair.test.only_b}",
            p_text(pair.test.p_value))) + " |")
    return "\n".join(lines) + "\n"


# The "How sure" section's words, in results.md and report.html alike.
INTERVALS_NOTE = ("Each accuracy with its 95% interval: over the test questions (Wilson) for one seed; for several, "
                  "the wider of the spread over seeds (t) and the test set's own.")
PAIRED_NOTE = ("Fine-tune-CoT against Fine-tune on the same test questions: McNemar's exact test counts only the "
               "questions one got right and the other wrong (p < 0.05: unlikely to be noise).")


def uncertainty_markdown(rows: Sequence[ResultRow], pairs: Sequence[PairedRow]) -> str:
    """results.md's section on how sure each number is (empty without rows)."""
    if not rows:
        return ""
    text = f"\n## How sure\n\n{INTERVALS_NOTE}\n\n" + intervals_markdown(rows)
    if pairs:
        text += f"\n{PAIRED_NOTE}\n\n" + paired_markdown(pairs)
    return text


CSV_COLUMNS = [f.name for f in fields(ResultRow) if f.name != "planned"] + ["ci_low", "ci_high"]


def write_csv(rows: Iterable[ResultRow], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            record = {k: v for k, v in asdict(row).items() if k in CSV_COLUMNS}
            low, high = row_interval(row)  # over this row's questions
            writer.writerow({**record, "D": "" if row.D is None else row.D,
                             "train_size": "" if row.train_size is None else row.train_size,
                             "ci_low": round(low, 2), "ci_high": round(high, 2)})
