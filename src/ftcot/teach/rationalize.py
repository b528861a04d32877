"""Rationalization (STaR, Zelikman et al. 2022): a second chance for the questions the teacher got wrong.

After sampling, a training question with a gold answer and no correct rationale
is asked again with the gold answer as a hint after the question
(:data:`ftcot.teach.prompts.HINT`). The hinted rationale's answer is then read
*without* the hint (stage 2 of Zero-shot-CoT on the plain prompt), so a
rationale counts only when it reaches the gold answer by itself.

A layer over the engine: the hinted questions are a task of their own, run by
:func:`ftcot.teach.engine.teach` into ``RUN_DIR/rationalize/`` — a store of
its own, so the run's chains and settings are untouched, and like every store
resumable and never paid twice. ``ftcot curate RUN_DIR`` reads those chains
too, marked ``rationalized`` (``--no-rationalized`` leaves them out);
``RUN_DIR/rationalize.json`` says what it gained.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ftcot.errors import FtcotError
from ftcot.scoring import score
from ftcot.tasks import Sample, Task
from ftcot.teach.plan import Plan, settings_of
from ftcot.teach.prompts import hinted_question
from ftcot.teach.records import Teacher
from ftcot.teach.store import RATIONALIZE_DIR, TeachStore

REPORT_FILE = "rationalize.json"


@dataclass
class RationalizeSummary:
    training_questions: int  # training questions of the run with a complete chain and a gold answer
    solved_before: int  # of those, with a correct rationale from sampling
    asked: int  # without one: asked again with the hint
    rationalized: int  # of those asked, with a hinted rationale that reaches the gold answer unhinted
    chains: int = 0  # hinted chains complete
    correct_chains: int = 0
    samples: int = 1
    temperature: float = 0.0
    teach: dict[str, Any] = field(default_factory=dict)  # the engine's summary of the hinted run

    @property
    def solved_after(self) -> int:
        return self.solved_before + self.rationalized

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "solved_after": self.solved_after,
                "yield_before": _share(self.solved_before, self.training_questions),
                "yield_after": _share(self.solved_after, self.training_questions)}

    def line(self) -> str:
        return (f"rationalization: {self.asked} training questions without a correct rationale asked again with "
                f"the answer as a hint; {self.rationalized} now have one ({self.correct_chains} of {self.chains} "
                f"hinted rationales reach it without the hint): questions with a correct rationale "
                f"{self.solved_before} → {self.solved_after} of {self.training_questions}.")


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def correct_by_question(store: TeachStore, task: Task) -> dict[int, list[bool]]:
    """Per training question with a gold answer, whether each complete chain (by sample number) is right."""
    plan = Plan(settings_of(store))
    train = set(task.split_indices("train"))
    found: dict[int, list[bool]] = {}
    for chain in plan.chains(store, [q for q in store.questions() if q.sample_index in train]):
        gold = task.samples[chain.question.sample_index].answer
        if not gold.strip():
            continue
        found.setdefault(chain.question.sample_index, [])
        if chain.complete:
            found[chain.question.sample_index].append(
                score(chain.answer_text or "", gold, task.spec, "zs_cot").correct)
    return {i: v for i, v in found.items() if v}


def hinted_task(task: Task, indices: Collection[int]) -> Task:
    """Those training questions, each with its gold answer as a hint: a task of their own for the engine."""
    chosen = sorted(indices)
    samples = {i: Sample(i, hinted_question(task.samples[i].question, task.samples[i].answer),
                         task.samples[i].answer) for i in chosen}
    return Task(task.spec, samples, {"default": {"train": chosen, "test": []}}, task.data_root)


def rationalize(task: Task, run_dir: Path, make_teacher: Callable[[], Teacher], *, samples: int = 1,
                temperature: float | None = None, **teach_options: Any) -> RationalizeSummary:
    """Ask again, with the hint, for the training questions of ``run_dir`` that have no correct rationale.

    ``make_teacher``: a new backend (the engine closes the one it is given). ``temperature`` defaults to the
    run's; ``teach_options`` go to :func:`ftcot.teach.engine.teach` (max_tokens, concurrency, max_cost,
    prices, secrets, console, progress). Writes ``RUN_DIR/rationalize.json``.
    """
    from ftcot.paths import atomic_write_text
    from ftcot.teach.engine import teach

    run_dir = Path(run_dir)
    with TeachStore.open_readonly(run_dir) as store:
        settings = settings_of(store)
        if settings.method != "zs_cot":
            raise FtcotError(f"{run_dir}: rationalization needs a zs_cot run (this one is {settings.method}).")
        results = correct_by_question(store, task)
    if not results:
        raise FtcotError(f"{run_dir}: no training question with a gold answer has a complete chain; "
                         f"rationalization asks again about training questions the teacher got wrong "
                         f"(teach --split train first).")
    unsolved = [i for i, correct in results.items() if not any(correct)]
    temperature = settings.temperature if temperature is None else temperature
    if teach_options.get("max_tokens") is None:
        teach_options["max_tokens"] = settings.max_tokens
    teach_options.setdefault("rationale", settings.rationale)  # hinted chains export the part the run's do
    summary = RationalizeSummary(len(results), len(results) - len(unsolved), len(unsolved), 0,
                                 samples=samples, temperature=temperature)
    if unsolved:
        with TeachStore.open(run_dir / RATIONALIZE_DIR) as hinted_store:
            hinted_store.lock_for_writing()
            run = teach(hinted_task(task, unsolved), "train", make_teacher(), "zs_cot", samples, temperature,
                        store=hinted_store, **teach_options)
            summary.teach = run.to_json()
            hinted = correct_by_question(hinted_store, task)
        summary.chains = sum(len(v) for v in hinted.values())
        summary.correct_chains = sum(sum(v) for v in hinted.values())
        summary.rationalized = sum(any(v) for v in hinted.values())
    atomic_write_text(run_dir / REPORT_FILE, json.dumps(summary.to_json(), indent=2) + "\n")
    return summary
