"""How good the teacher was: the numbers that decide how much training data a run yields.

Computed from a run's store (or from an export JSONL), scoring each chain's
answer with the paper's rule (:func:`ftcot.scoring.score`, template = the
method: ``zs_cot``, ``zs`` or ``fs_cot``):

- ``accuracy``: correct / scored chains (with D = 1, per-question accuracy);
- ``share_with_correct``: questions with at least one correct chain / questions
  — the share of questions that yield training data;
- ``correct_per_question``: mean correct chains per question;
- ``truncation_rate``: rationales (zs_cot) or completions that stopped at
  ``max_tokens`` (``finish_reason == "length"``), among those whose finish
  reason is known (recorded replays have none: then it is None);
- ``distinct_per_question``: mean number of distinct rationale texts per
  question — what diverse reasoning buys.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from ftcot.errors import FtcotError
from ftcot.jsonl import read_jsonl, require_field
from ftcot.scoring import score
from ftcot.tasks.spec import TaskSpec
from ftcot.teach.plan import Plan, settings_of
from ftcot.teach.pricing import PriceTable
from ftcot.teach.store import TeachStore


@dataclass(frozen=True)
class _Row:
    sample_index: int
    gold: str
    rationale: str | None  # None for zs (no rationale)
    answer: str | None  # None: the chain is incomplete
    finish_reason: str | None


@dataclass
class TeacherReport:
    task: str
    teacher: str
    method: str
    questions: int
    chains: int
    scored: int
    correct: int
    accuracy: float | None
    questions_with_correct: int
    share_with_correct: float | None
    correct_per_question: float | None
    truncated: int
    truncation_rate: float | None
    distinct_per_question: float | None
    failures: int = 0  # items that failed and are still missing (the next run retries them)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> Table:
        table = Table(title=escape(f"Teacher {self.teacher} on {self.task} ({self.method})"))
        table.add_column("metric")
        table.add_column("value", justify="right")

        def pct(x: float | None) -> str:
            return "n/a" if x is None else f"{100 * x:.2f}%"

        def num(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.2f}"

        table.add_row("questions", str(self.questions))
        table.add_row("chains scored / planned", f"{self.scored} / {self.chains}")
        table.add_row("accuracy (paper rule)", f"{pct(self.accuracy)} ({self.correct}/{self.scored})")
        table.add_row("questions with ≥ 1 correct", f"{pct(self.share_with_correct)} ({self.questions_with_correct})")
        table.add_row("correct chains per question", num(self.correct_per_question))
        table.add_row("distinct rationales per question", num(self.distinct_per_question))
        table.add_row("truncated (finish_reason=length)", f"{pct(self.truncation_rate)} ({self.truncated})")
        table.add_row("failed items still missing", str(self.failures))
        table.add_row("tokens (prompt + completion)", f"{self.prompt_tokens} + {self.completion_tokens}")
        table.add_row("cost", "unknown" if self.cost_usd is None else f"${self.cost_usd:.4f}")
        return table


def _compute(rows: list[_Row], spec: TaskSpec, method: str, teacher: str, questions: int) -> TeacherReport:
    per_question_correct: dict[int, int] = defaultdict(int)
    rationales: dict[int, set[str]] = defaultdict(set)
    scored = correct = truncated = known_finish = 0
    for row in rows:
        per_question_correct.setdefault(row.sample_index, 0)
        if row.rationale is not None:
            rationales[row.sample_index].add(row.rationale)
        if row.finish_reason is not None and row.finish_reason != "unknown":
            known_finish += 1
            truncated += row.finish_reason == "length"
        if row.answer is None:
            continue
        scored += 1
        if score(row.answer, row.gold, spec, method, "paper").correct:
            correct += 1
            per_question_correct[row.sample_index] += 1
    with_correct = sum(1 for n in per_question_correct.values() if n > 0)
    return TeacherReport(
        task=spec.key, teacher=teacher, method=method, questions=questions, chains=len(rows), scored=scored,
        correct=correct, accuracy=correct / scored if scored else None, questions_with_correct=with_correct,
        share_with_correct=with_correct / questions if questions else None,
        correct_per_question=correct / questions if questions else None, truncated=truncated,
        truncation_rate=truncated / known_finish if known_finish else None,
        distinct_per_question=(sum(len(v) for v in rationales.values()) / questions
                               if method != "zs" and questions else None))


def report_from_store(store: TeachStore, spec: TaskSpec | None = None, prices: PriceTable | None = None,
                      split: str = "all") -> TeacherReport:
    settings = settings_of(store)
    if spec is not None and spec.key != settings.task:
        # Scored against another task's gold answers, question by index: a report of nothing real.
        raise FtcotError(f"{store.path.parent} was taught on {settings.task}, another task than {spec.key}; report on "
                         f"it with --task {settings.task}, or without --task for a built-in task.")
    spec = spec or _builtin_spec(settings.task)
    plan = Plan(settings)
    questions = store.questions(split)
    rows = []
    for chain in plan.chains(store, questions):
        rationale = chain.first.text if chain.first is not None and settings.method != "zs" else None
        rows.append(_Row(chain.question.sample_index, chain.question.answer, rationale, chain.answer_text,
                         chain.first.finish_reason if chain.first is not None else None))
    report = _compute(rows, spec, settings.method, settings.teacher, len(questions))
    report.failures = len({f.key for f in store.failures() if store.get(f.key) is None})
    report.prompt_tokens, report.completion_tokens = store.totals()
    # What the runs paid, as they recorded it (a batch at its discount); a store made before the ledger, or
    # by runs that knew no price, is priced at the list price now.
    spent = store.spent_usd()
    price = (prices or PriceTable()).price_for(settings.teacher)
    report.cost_usd = spent if spent > 0 else (
        price.cost(report.prompt_tokens, report.completion_tokens) if price is not None else None)
    return report


def report_from_export(path: Path, spec: TaskSpec | None = None, method: str | None = None) -> TeacherReport:
    """The same report from an export JSONL (or a shared teacher file: zs_cot if it has rationales)."""
    rows, teacher, found_method = [], "?", method
    for line, record in read_jsonl(Path(path)):
        found_method = found_method or record.get("method") or (
            "zs_cot" if "reasoning_completion" in record else "zs")
        teacher = record.get("teacher", teacher)
        rows.append(_Row(int(require_field(record, "sample_index", path, line)),
                         str(require_field(record, "answer", path, line)),
                         record.get("reasoning_completion") if found_method == "zs_cot" else (
                             record.get("answer_completion") if found_method == "fs_cot" else None),
                         require_field(record, "answer_completion", path, line),
                         record.get("finish_reason")))
    if spec is None:
        raise FtcotError(f"{path}: pass the task (--task KEY) to score an export.")
    return _compute(rows, spec, found_method or "zs_cot", teacher, len({r.sample_index for r in rows}))


def _builtin_spec(key: str) -> TaskSpec:
    from ftcot.tasks import BUILTIN_TASKS

    if key not in BUILTIN_TASKS:
        raise FtcotError(f"task '{key}' is not built in; pass --task FILE (and --answer-type) to score it.")
    return BUILTIN_TASKS[key]
