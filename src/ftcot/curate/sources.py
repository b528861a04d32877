"""Where teacher records come from: a teach RUN_DIR, or a JSONL in the shared format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftcot.errors import FtcotError
from ftcot.jsonl import read_jsonl, require_field

# The shared format's fields and their types (None: any; the gold answer may be a number).
REQUIRED = {"sample_index": int, "answer": None, "reasoning_completion": (str, type(None)), "answer_completion": str}


def load_teacher_records(source: Path, rationale: str | None = None) -> tuple[list[dict], str | None]:
    """Teacher records and, when the source knows it, the task they answer. ``rationale``
    (answer|reasoning|both) overrides a run directory's own (:mod:`ftcot.teach.reasoning`)."""
    if source.is_dir():
        return _run_dir_records(source, rationale)
    if not source.is_file():
        raise FtcotError(f"{source}: no such teach run directory or JSONL file.")
    records = []
    for line, record in read_jsonl(source):
        for name, kind in REQUIRED.items():
            require_field(record, name, source, line, kind)
        records.append({**record, "record_id": record.get("record_id") or f"{source.name}:{line}"})
    if not records:  # else: "the teacher answered none of the questions", as if it had been asked
        raise FtcotError(f"{source}: no records (the file is empty); give a JSONL of teacher records (one JSON "
                         f"object a line: {', '.join(REQUIRED)}).")
    return records, None


def recorded_task_source(run_dir: Path) -> dict | None:
    """The user task file a teach run was made from, as its settings recorded it (None: not recorded)."""
    from ftcot.teach.plan import settings_of
    from ftcot.teach.store import STORE_FILE, TeachStore

    if not (run_dir / STORE_FILE).is_file():
        return None
    with TeachStore.open_readonly(run_dir) as store:
        return settings_of(store).task_source


def _run_dir_records(run_dir: Path, rationale: str | None = None) -> tuple[list[dict], str]:
    """Complete Zero-shot-CoT chains of a teach run, with their store keys as lineage; then the rationalized
    chains of ``RUN_DIR/rationalize/`` (:mod:`ftcot.teach.rationalize`), if any, marked ``rationalized``."""
    from ftcot.teach.store import RATIONALIZE_DIR, STORE_FILE

    records, task = _store_records(run_dir, rationale)
    if (run_dir / RATIONALIZE_DIR / STORE_FILE).is_file():
        hinted, _ = _store_records(run_dir / RATIONALIZE_DIR, rationale)
        records += [{**r, "rationalized": True} for r in hinted]
    return records, task


def _store_records(run_dir: Path, rationale: str | None = None) -> tuple[list[dict], str]:
    from ftcot.teach.export import chain_record, plan_of
    from ftcot.teach.plan import RATIONALE_METHODS
    from ftcot.teach.store import TeachStore

    with TeachStore.open_readonly(run_dir) as store:
        plan = plan_of(store, rationale)
        if plan.settings.method not in RATIONALE_METHODS:
            raise FtcotError(f"{run_dir}: a '{plan.settings.method}' run has no rationales; "
                             f"curate a zs_cot run (ftcot teach --method zs_cot) or a student's ft_cot run.")
        records = [
            {**chain_record(chain, plan), "record_id": chain.first.key,
             "reasoning_tokens": chain.first.completion_tokens}
            for chain in plan.chains(store) if chain.complete
        ]
    return records, plan.settings.task


def check_same_questions(records: list[dict], task: Any, source: Path, taught_on: str | None) -> None:
    """Refuse teacher records that answer another task's questions.

    A record names its question by index, so curating a coin-flip run as StrategyQA would pair StrategyQA's
    question 12 with the rationale for coin flip's question 12. Each record that carries its question text
    must carry the task's text at that index (whitespace aside: every recorded text-davinci-002 file
    matches its task exactly), which also tells apart two user files of the same name.
    """
    from ftcot.teach.prompts import unhinted_question

    def same(a: str, b: str) -> bool:
        return " ".join(a.split()) == " ".join(b.split())

    for record in records:
        question = record.get("question")
        if not isinstance(question, str):
            continue
        if record.get("rationalized"):  # asked with the gold answer as a hint at its end
            question = unhinted_question(question)
        index = record["sample_index"]
        sample = task.samples.get(index) if isinstance(index, int) else None
        if sample is not None and same(sample.question, question):
            continue
        theirs = f"{task.key}'s question {index} is '{_clip(sample.question)}'" if sample is not None else \
            f"{task.key} has no question {index}"
        if not taught_on:
            hint = "curate it with the task it was taught on"
        elif taught_on != task.key:
            hint = f"it was taught on {taught_on}: curate it with --task {taught_on}"
        else:  # the same name, other questions: the built-in task and a file named like it, or two files
            hint = f"it was taught on another task named '{taught_on}' (the built-in one or another file of that " \
                   f"name): curate it with that one"
        raise FtcotError(f"{source} answers another task's questions: its question {index} is '{_clip(question)}', "
                         f"but {theirs}; {hint}.")


def _clip(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"
