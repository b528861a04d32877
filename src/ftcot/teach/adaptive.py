"""Adaptive sampling: sample each question until it has K correct rationales or M samples.

A fixed D pays D rationales for every question: the easy ones need one, the
hard ones may need more than D. ``ftcot teach --until-correct K --max-samples M``
samples in rounds instead: a question with ``n`` complete chains of which ``c``
are correct, ``c < K`` and ``n < M``, is topped up to ``min(M, n + K - c)``
samples (the fewest that could reach K), until no question needs more.

A layer over the engine: each round is :func:`ftcot.teach.engine.teach` on the
unfinished questions with a larger ``samples`` (the questions that need the
same total together), so samples keep their numbers and seeds, the store stays
the run's one store (resumable, never paid twice), and a fixed-D run of the
same settings shares the first rationales. A question without a gold answer
counts the chains that agree with its majority answer as correct
(:func:`ftcot.scoring.majority_votes`). At the end the run's settings record the largest
number of samples drawn, so export and curate read every chain.

Because the numbering is shared, the store also answers what a fixed D would
have done: the questions with K correct among their first D samples, for every
D ≤ M. ``RUN_DIR/adaptive.json`` compares the samples spent with the smallest
fixed D that covers as many questions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from typing import Any

from ftcot.errors import FtcotError, check_int
from ftcot.scoring import agrees, extract_answer, is_correct, majority_votes
from ftcot.tasks import Task
from ftcot.tasks.spec import TaskSpec
from ftcot.teach.plan import Plan, TeachSettings
from ftcot.teach.records import Teacher
from ftcot.teach.store import TeachStore

REPORT_FILE = "adaptive.json"


@dataclass
class AdaptiveSummary:
    until_correct: int
    max_samples: int
    questions: int
    rounds: list[dict[str, Any]] = field(default_factory=list)  # per round: questions asked, samples up to, new
    samples_spent: int = 0  # complete chains (rationales) over the questions, cached ones included
    covered: int = 0  # questions with K correct
    with_correct: int = 0  # questions with at least one correct
    coverage_by_D: list[int] = field(default_factory=list)  # [D-1]: questions with K correct in their first D
    fixed_D: int | None = None  # the smallest fixed D covering as many questions
    fixed_samples: int | None = None  # its cost: fixed_D × questions
    failed: int = 0
    stopped: str | None = None  # why rounds ended before every question was done
    interrupted: bool = False  # Ctrl-C

    @property
    def saved(self) -> float | None:
        if not self.fixed_samples:
            return None
        return round(1 - self.samples_spent / self.fixed_samples, 4)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "saved": self.saved}

    def line(self) -> str:
        fixed = (f"a fixed D={self.fixed_D} covering as many would take {self.fixed_samples} "
                 f"({100 * self.saved:.1f}% saved)" if self.fixed_samples else "no fixed D ≤ M covers as many")
        stopped = f" Stopped early: {self.stopped}." if self.stopped else ""
        return (f"adaptive sampling (until {self.until_correct} correct, at most {self.max_samples}): "
                f"{len(self.rounds)} rounds, {self.samples_spent} rationales for {self.questions} questions, "
                f"{self.covered} with {self.until_correct} correct; {fixed}.{stopped}")


def check_options(until_correct: int | None, max_samples: int | None, samples: int, temperature: float) -> None:
    """``--until-correct``/``--max-samples`` as given to ``ftcot teach`` (or ``ftcot.teach()``), before anything runs."""
    if until_correct is None or max_samples is None:
        raise FtcotError("adaptive sampling needs both --until-correct K and --max-samples M "
                         "(e.g. --until-correct 1 --max-samples 8).")
    if samples != 1:
        raise FtcotError("--samples is a fixed D; adaptive sampling (--until-correct, --max-samples) decides D per "
                         "question: give one or the other.")
    check_adaptive(until_correct, max_samples, temperature)


def check_adaptive(until_correct: int, max_samples: int, temperature: float) -> None:
    check_int("--until-correct", until_correct, 1)
    check_int("--max-samples", max_samples, 1)
    if max_samples < until_correct:
        raise FtcotError(f"--max-samples {max_samples} is below --until-correct {until_correct}: a question could "
                         f"never have {until_correct} correct rationales; raise --max-samples.")
    if max_samples > 1 and temperature <= 0:
        raise FtcotError("--until-correct samples again where the teacher was wrong: greedy would repeat the same "
                         "rationale; sample with --temperature 0.7 (the paper's).")


@dataclass(frozen=True)
class QuestionChains:
    """One question's gold answer (``""`` without a label) and its complete chains' answer texts, in order."""

    gold: str
    texts: tuple[str, ...]

    def judged(self, spec: TaskSpec, first: int | None = None) -> list[bool]:
        """Whether each of the first ``first`` chains is correct; without gold, whether it agrees with the majority
        of those chains (what a run that drew only them would take for the label)."""
        texts = self.texts[:first]
        answers = [extract_answer(t, spec, "zs_cot") for t in texts]
        if self.gold.strip():
            return [is_correct(a, self.gold, spec) for a in answers]
        vote = majority_votes([{"sample_index": 0, "answer_completion": t} for t in texts], spec).get(0)
        return [agrees(a, vote.label if vote else "", spec) for a in answers]


def chain_results(store: TeachStore, settings: TeachSettings, task: Task, questions: Collection[int]
                  ) -> dict[int, QuestionChains]:
    """Per question, its complete chains among sample numbers < ``settings.samples``, in sample-number order."""
    plan = Plan(settings)
    wanted = set(questions)
    texts: dict[int, list[str]] = {i: [] for i in wanted}
    for chain in plan.chains(store, [q for q in store.questions() if q.sample_index in wanted]):
        if chain.complete:
            texts[chain.question.sample_index].append(chain.answer_text or "")
    return {i: QuestionChains(task.samples[i].answer, tuple(t)) for i, t in texts.items()}


def coverage(results: dict[int, QuestionChains], spec: TaskSpec, until_correct: int, max_samples: int) -> list[int]:
    """[D-1] = questions with ``until_correct`` correct among their first D chains, for D = 1..max_samples, as a
    fixed-D run would judge them (without gold: against the majority of those D chains, not of all)."""
    return [sum(sum(q.judged(spec, D)) >= until_correct for q in results.values()) for D in range(1, max_samples + 1)]


def adaptive_teach(task: Task, split: str, make_teacher: Callable[[], Teacher], store: TeachStore, *,
                   until_correct: int, max_samples: int, temperature: float, max_tokens: int | None = None,
                   only: Collection[int] | None = None, rationale: str = "answer", method: str = "zs_cot",
                   **teach_options: Any) -> AdaptiveSummary:
    """Sample ``split``'s questions in rounds (see the module docstring); writes ``RUN_DIR/adaptive.json``.

    ``make_teacher``: a new backend per round (the engine closes the one it is given); ``teach_options`` go to
    :func:`ftcot.teach.engine.teach` (concurrency, max_cost — the run directory's, across rounds —, prices,
    secrets, console, progress).
    ``rationale`` is recorded with the run's settings, as the engine records it (export reads it; rounds
    judge correctness on the stage-2 answers, which it does not change).
    """
    from ftcot.paths import atomic_write_text
    from ftcot.teach.engine import questions_of, resolve_settings, teach

    check_adaptive(until_correct, max_samples, temperature)
    teacher = make_teacher()
    settings, _ = resolve_settings(task, split, teacher, method, max_samples, temperature, max_tokens,
                                   rationale=rationale)
    questions = [s.index for s in questions_of(task, split, only)]
    summary = AdaptiveSummary(until_correct, max_samples, len(questions))
    drawn = 0
    while True:
        results = {i: q.judged(task.spec) for i, q in chain_results(store, settings, task, questions).items()}
        targets: dict[int, list[int]] = {}
        for index in questions:
            chains = results.get(index, [])
            if sum(chains) < until_correct and len(chains) < max_samples:
                targets.setdefault(min(max_samples, len(chains) + until_correct - sum(chains)), []).append(index)
        if not targets:
            break
        new = 0
        for total, group in sorted(targets.items()):
            run = teach(task, split, teacher or make_teacher(), method, total, temperature, max_tokens,
                        store=store, only=group, rationale=rationale, **teach_options)
            teacher = None  # the engine closed it
            drawn = max(drawn, total)
            new += run.new
            summary.failed += run.failed
            summary.interrupted = summary.interrupted or run.interrupted
            if run.stopped_by_cost_cap or run.interrupted or run.credentials_refused:
                summary.stopped = run.stop_reason() or "the teacher stopped"
                break
        summary.rounds.append({"questions": sum(len(g) for g in targets.values()),
                               "samples": {str(k): len(v) for k, v in sorted(targets.items())}, "new": new})
        if summary.stopped:
            break
        if new == 0:  # every request failed: another round would ask the same again
            summary.stopped = "a round got nothing new (failed items are recorded; rerun to ask again)"
            break
    # The run's settings say how many samples to read back: the most any question got.
    chains = chain_results(store, settings, task, questions)
    results = {i: q.judged(task.spec) for i, q in chains.items()}
    final = max([drawn] + [len(c) for c in results.values()] + [_last_samples(store)])
    teach(task, split, teacher or make_teacher(), method, final, temperature, max_tokens, store=store, only=[],
          rationale=rationale, **{k: v for k, v in teach_options.items() if k in ("prices", "secrets", "console")})
    summary.samples_spent = sum(len(c) for c in results.values())
    summary.covered = sum(sum(c) >= until_correct for c in results.values())
    summary.with_correct = sum(any(c) for c in results.values())
    summary.coverage_by_D = coverage(chains, task.spec, until_correct, max_samples)
    fixed = next((D for D, n in enumerate(summary.coverage_by_D, 1) if n >= summary.covered), None)
    if fixed is not None:
        summary.fixed_D, summary.fixed_samples = fixed, fixed * len(questions)
    atomic_write_text(store.path.parent / REPORT_FILE, json.dumps(summary.to_json(), indent=2) + "\n")
    return summary


def _last_samples(store: TeachStore) -> int:
    last = store.last_run()
    return int(last.get("samples", 1)) if last else 1
