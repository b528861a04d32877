"""Stage 2: curate teacher rationales into a student's training data."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from ftcot.curate.dataset import TrainingExample, make_example, question_subset, task_rows, validation_questions
from ftcot.curate.decontaminate import Decontamination
from ftcot.curate.filters import QualityFilters
from ftcot.curate.labels import check_label_mode, pseudo_label_report
from ftcot.scoring import MIN_VOTES, majority_votes, record_answer
from ftcot.curate.report import FilterProbe, decontaminate_questions, report
from ftcot.curate.select import NO_GOLD, OUTSIDE_SUBSET, select_rationales
from ftcot.errors import FtcotError, check_float, check_int
from ftcot.tasks import Task
from ftcot.templates import Template

__all__ = ["curate", "TrainingExample"]


def _record_id(record: dict) -> str:
    if record.get("record_id"):
        return str(record["record_id"])
    return f"{record.get('teacher', 'teacher')}/{record['sample_index']}/{record.get('sample_number', 0)}"


def curate(task: Task, template: Template, records: Iterable[dict] = (), *, split_scheme: str = "default",
           max_per_question: int | None = None, max_rationale_tokens: int | None = None,
           val_fraction: float = 0.1, seed: int = 0, train_size: int | None = None, subset_seed: int = 0,
           filters: QualityFilters | None = None, decontamination: Decontamination | None = None,
           label: str = "gold", min_votes: int = MIN_VOTES, rationalized: bool = True
           ) -> tuple[list[TrainingExample], list[TrainingExample], dict]:
    """Training and validation examples of one task, and a summary of what was kept and why not.

    Fine-tune-CoT templates take the teacher's correct rationales; vanilla
    fine-tuning takes every training question with its gold answer.
    ``train_size`` keeps a seeded subset of that many training questions (the
    paper's training-set-size ablation); the validation slice is taken from it.
    ``filters`` and ``decontamination`` go beyond the paper (:mod:`ftcot.curate.report`; none by default).
    ``label``: the answer a rationale must reach, gold (the paper), the majority of the teacher's answers or
    both (:mod:`ftcot.curate.labels`), a majority needing ``min_votes`` chains (1: a single chain's answer is
    its question's label, the teacher trusted without gold); ``rationalized``: whether rationalized records
    (a hinted teacher) may fill questions left without an example.
    """
    if template.decoder is None:
        raise FtcotError(f"Template '{template.name}' is a prompting method, not a fine-tuning format; "
                         f"use ft_cot, ft, ft_cot_natural or ft_dss.")
    check_int("--max-per-question", max_per_question, 1, optional=True)
    check_int("--max-rationale-tokens", max_rationale_tokens, 1, optional=True)
    check_float("--val-fraction", val_fraction, 0, 1, high_open=True)
    check_int("--seed", seed, 0)
    check_int("train_size", train_size, 1, optional=True)
    check_int("subset_seed", subset_seed, 0)
    check_label_mode(label)
    check_int("--min-votes", min_votes, 1)
    train_indices = task.split_indices("train", split_scheme)
    outside: Counter = Counter()
    if train_size is not None:
        subset = question_subset(train_indices, train_size, subset_seed, task.key)
        # Training questions left out of the subset are dropped as that, not as "not a training question".
        left_out = set(train_indices) - set(subset)
        outside[OUTSIDE_SUBSET] = sum(1 for r in records if r["sample_index"] in left_out)
        records = [r for r in records if r["sample_index"] not in left_out]
        train_indices = subset
    train_indices, records, flags, decontaminated = decontaminate_questions(decontamination, task, train_indices,
                                                                            split_scheme, records)
    probe = FilterProbe(filters or QualityFilters())
    dropped: Counter = Counter()
    gold = {s.index: s for s in task.split("train", split_scheme)}
    # The curated task's gold answer is the one to reach (a store taught before the answers were known,
    # or without them, holds other or none).
    records = [{**r, "answer": gold[r["sample_index"]].answer} if r["sample_index"] in gold else r for r in records]
    votes = majority_votes(records, task.spec, min_votes)
    if template.uses_rationale:
        selection = select_rationales(records, task.spec, train_indices, max_per_question, max_rationale_tokens,
                                      probe, label=label, votes=votes, rationalized=rationalized)
        dropped = selection.dropped + decontaminated + outside

        def example(r: dict) -> TrainingExample:
            by_majority = label == "majority" and not r.get("rationalized")
            # A majority label is the answer as the teacher wrote it; gold stays gold where it was required.
            answer = record_answer(r, task.spec) if by_majority else gold[r["sample_index"]].answer
            return make_example(template, task.key, gold[r["sample_index"]].question, answer, r["sample_index"],
                                r["reasoning_completion"], r.get("sample_number", 0), _record_id(r),
                                "majority" if by_majority else "gold", bool(r.get("rationalized")))

        examples = [example(r) for r in selection.kept]
    else:
        chosen = set(train_indices)
        examples = [make_example(template, task.key, s.question, s.answer, s.index)
                    for s in task.split("train", split_scheme) if s.index in chosen and s.answer.strip()]
        dropped = +Counter({NO_GOLD: sum(1 for i in chosen if not gold[i].answer.strip())})
    # Held out among the questions that yielded examples: a question the teacher got wrong has none to validate on.
    questions = {e.sample_index for e in examples}
    val = validation_questions(sorted(questions), val_fraction, seed)
    # Rows: one per example, or a label and a rationale row each for distilling step-by-step (ft_dss).
    train = [row for e in examples if e.sample_index not in val for row in task_rows(template, e)]
    held_out = [row for e in examples if e.sample_index in val for row in task_rows(template, e)]
    summary = {
        "task": task.key,
        "template": template.name,
        "split_scheme": split_scheme,
        "max_per_question": max_per_question,
        "max_rationale_tokens": max_rationale_tokens,
        "label": label,
        "train_questions": len(train_indices),
        "train_size": train_size,
        "subset_seed": subset_seed if train_size is not None else None,
        "questions_with_examples": len(questions),
        "kept": len(examples),
        "dropped": dict(sorted(dropped.items())),
        "train_examples": len(train),
        "val_examples": len(held_out),
        "val_fraction": val_fraction,
        "seed": seed,
        "val_questions": sorted(val),
    }
    summary.update(report(task, train_indices, records, examples, probe, flags, decontamination))
    in_train = set(train_indices)  # once: a set per record took 10 s on StrategyQA × D=64
    summary["pseudo_labels"] = pseudo_label_report(votes, {i: s.answer for i, s in gold.items()}, task.spec,
                                                   in_train, label, min_votes)
    summary["rationalized"] = {"records": sum(bool(r.get("rationalized")) for r in records
                                              if r["sample_index"] in in_train),
                               "used": rationalized,
                               "kept": sum(e.rationalized for e in examples),
                               "questions": len({e.sample_index for e in examples if e.rationalized})}
    return train, held_out, summary
