"""A curate run, from its :class:`~ftcot.curate.config.CurateConfig`: the one function ``ftcot curate``,
``ftcot.curate()`` and ``ftcot run``'s curate stages call.

It reads the teacher's records (a teach RUN_DIR or a JSONL in the shared
format; none for vanilla fine-tuning), keeps the correct rationales by the
config's rules, and writes DATA_DIR — after checking that DATA_DIR is none of
its inputs and lies inside none of them (the teach run, the task file, the
data root).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftcot.curate.config import CurateConfig
from ftcot.errors import FtcotError
from ftcot.tasks import Task


@dataclass
class CurateOutcome:
    out: Path
    task: Task
    train: list[Any]  # TrainingExample
    val: list[Any]
    summary: dict[str, Any]  # curation.json


def run_curate(config: CurateConfig, source: Path | None, out: Path, *, data_root: Path | None = None,
               task: Task | None = None, source_name: str | None = None) -> CurateOutcome:
    """Curate ``source`` into DATA_DIR ``out`` by ``config``; ``task``: already loaded; ``source_name``: what
    curation.json records as the source (default: its path)."""
    from ftcot.curate import curate
    from ftcot.curate.dataset import write_data_dir
    from ftcot.curate.report import settings
    from ftcot.curate.sources import check_same_questions, load_teacher_records, recorded_task_source
    from ftcot.data_root import resolve_data_root
    from ftcot.paths import check_output, task_inputs
    from ftcot.tasks import BUILTIN_TASKS, load_task
    from ftcot.tasks.custom import load_recorded_task, task_source
    from ftcot.templates import get_template

    template = get_template(config.template)
    if template.uses_rationale and source is None:
        raise FtcotError(f"Template '{config.template}' needs teacher rationales: pass a teach RUN_DIR or a JSONL "
                         f"file.")
    records, run_task = ([], None) if source is None else load_teacher_records(Path(source), config.rationale)
    if task is None:
        name = config.task or run_task
        if name is None:
            raise FtcotError("Which task? Name it (--task, task=): a JSONL of teacher records does not say.")
        if config.task is None and name not in BUILTIN_TASKS and Path(source).is_dir():
            # A run of the user's own task: the file it taught, found by what the run recorded.
            task = load_recorded_task(name, recorded_task_source(Path(source)), str(source))
        else:
            task = load_task(name, resolve_data_root(data_root), config.answer_type)
    check_output(out, [source, *task_inputs(task)])
    if source is not None:
        check_same_questions(records, task, Path(source), run_task)
    if config.samples is not None:  # the rationales a teacher run with D samples would have drawn
        records = [r for r in records if r.get("sample_number", 0) < config.samples]
    if source is not None and not records:
        raise FtcotError(f"The teacher answered none of {task.key}'s training questions (see {source}/report.json); "
                         f"a recorded teacher covers only the questions it was run on.")
    # A user's task has no data root of its own: its training questions are checked against the benchmarks
    # of the data root there is (those on disk; curation.json names the others).
    benchmarks = task.data_root or _benchmarks_root(data_root)
    extra = settings(benchmarks, **config.model_dump(include={
        "decontaminate", "decontaminate_against", "decontaminate_ngram", "decontaminate_max_df",
        "decontaminate_min_overlap", "drop_truncated", "drop_repetitive", "drop_no_reasoning", "min_rationale_words",
        "teacher_token_limit", "label", "min_votes", "rationalized"}))  # the rest of curate()'s, by name below
    train, val, summary = curate(task, template, records, split_scheme=config.split_scheme,
                                 max_per_question=config.max_per_question,
                                 max_rationale_tokens=config.max_rationale_tokens, val_fraction=config.val_fraction,
                                 seed=config.val_seed, train_size=config.train_size, subset_seed=config.subset_seed,
                                 **extra)
    if not train:
        raise FtcotError(f"No training examples for '{task.key}' (dropped: {summary['dropped']}); check the teacher "
                         f"run covers the train split.")
    summary["source"] = source_name if source_name is not None else str(source) if source is not None else None
    source_of_task = task_source(task)  # hashes the file: once
    if source_of_task is not None:  # a user's task: train finds its file by this
        summary["task_source"] = source_of_task
    top = None
    if template.uses_rationale and not template.multi_task and source is not None:
        # Logit distillation's data (ftcot train --kd-weight): the teacher's top-K of each training example's
        # rationale, carried whenever the teacher stored them (--teacher-args top_logprobs=K).
        from ftcot.curate.logprobs import carried

        top, summary["teacher_logprobs"] = carried(Path(source), records, train)
        if summary["teacher_logprobs"] is None:
            del summary["teacher_logprobs"]
    write_data_dir(out, train, val, summary, teacher_logprobs=top)
    return CurateOutcome(Path(out), task, train, val, summary)


def _benchmarks_root(data_root: Path | None) -> Path | None:
    from ftcot.data_root import resolve_data_root

    try:
        root = resolve_data_root(data_root)
    except FtcotError:
        return None
    return root if Path(root).is_dir() else None
