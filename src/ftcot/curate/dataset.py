"""Curated training data: examples, the validation slice, and the files of a DATA_DIR.

DATA_DIR layout (read by ``ftcot train``):

- ``train.jsonl`` / ``val.jsonl``: one example per line — ``prompt`` and
  ``completion`` in the decoder layout, the parts they were made from
  (``question``, ``rationale``, ``answer``), and lineage (``task``,
  ``sample_index``, ``sample_number``, ``teacher_record``), ``label`` (``gold``,
  or ``majority``: the answer is the teacher's majority answer, not gold) and
  ``rationalized`` (the teacher wrote it with the gold answer as a hint). The trainer
  re-formats from the parts for encoder-decoder students.
- Multi-task templates (``ft_dss``) give two rows per curated example, told
  apart by ``objective`` (``label`` or ``rationale``, each row in its task's
  layout); single-task rows have ``objective`` null.
- ``openai_chat.jsonl``: the training examples in OpenAI's chat fine-tuning
  format (the assistant turn ends the sequence, so no ``END`` marker).
- ``teacher_logprobs.jsonl.gz`` (when the teacher stored them all): the teacher's top-K log-probabilities of
  each training example's rationale, keyed by ``teacher_record`` (:mod:`ftcot.curate.logprobs`).
- ``curation.json``: template, kept and dropped by reason, per task, and the
  validation questions; ``contamination.jsonl``: every training/test pair that
  decontamination flagged (curation.json shows the first 100).
"""

from __future__ import annotations

import json
import random
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ftcot.errors import FtcotError
from ftcot.paths import atomic_file, os_error
from ftcot.jsonl import read_jsonl, require_field, write_jsonl
from ftcot.templates import LABEL, RATIONALE, Template

# API students that complete a prompt (the legacy fine-tuning API) learn to stop at this marker.
API_STOP = " END"


@dataclass(frozen=True)
class TrainingExample:
    prompt: str
    completion: str
    question: str
    rationale: str
    answer: str
    task: str
    sample_index: int
    sample_number: int = 0
    teacher_record: str | None = None
    objective: str | None = None  # a multi-task template's task: label or rationale (None: single-task)
    label: str = "gold"  # where ``answer`` comes from: gold, or majority (self-consistency)
    rationalized: bool = False  # written by a teacher given the gold answer as a hint (STaR)


def make_example(template: Template, task: str, question: str, answer: str, sample_index: int,
                 rationale: str = "", sample_number: int = 0, teacher_record: str | None = None,
                 label: str = "gold", rationalized: bool = False) -> TrainingExample:
    return TrainingExample(
        prompt=template.format_prompt(question),
        completion=template.format_completion(answer, rationale),
        question=question.strip(), rationale=rationale.strip(), answer=answer.strip(),
        task=task, sample_index=sample_index, sample_number=sample_number, teacher_record=teacher_record,
        label=label, rationalized=rationalized,
    )


def task_rows(template: Template, example: TrainingExample) -> list[TrainingExample]:
    """The training rows of one curated example: itself, or for a multi-task template (distilling
    step-by-step) a label row and a rationale row, each in its task's layout."""
    if not template.multi_task:
        return [example]
    return [replace(example, objective=objective,
                    prompt=template.format_prompt(example.question, objective=objective),
                    completion=template.format_completion(example.answer, example.rationale, objective=objective))
            for objective in (LABEL, RATIONALE)]


def validation_questions(train_indices: list[int], fraction: float, seed: int) -> set[int]:
    """A seeded slice of the *training* questions; test questions never enter model selection."""
    if fraction <= 0 or len(train_indices) < 2:
        return set()
    count = max(1, round(fraction * len(train_indices)))
    return set(random.Random(seed).sample(sorted(train_indices), count))


def question_subset(train_indices: list[int], size: int, seed: int, task: str) -> list[int]:
    """A seeded subset of ``size`` training questions, in split order."""
    if size > len(train_indices):
        raise FtcotError(f"A training-set size of {size} needs {size} training questions; '{task}' has "
                         f"{len(train_indices)}. Use a smaller train_sizes entry.")
    chosen = set(random.Random(seed).sample(sorted(train_indices), size))
    return [i for i in train_indices if i in chosen]


def chat_record(example: TrainingExample) -> dict:
    return {"messages": [{"role": "user", "content": example.prompt},
                         {"role": "assistant", "content": example.completion.strip()}]}


CONTAMINATION_FILE = "contamination.jsonl"
FLAGS_SHOWN = 100  # flagged pairs kept in curation.json; all of them are in CONTAMINATION_FILE


def write_data_dir(out: Path, train: list[TrainingExample], val: list[TrainingExample], summary: dict,
                   teacher_logprobs: list[dict] | None = None) -> None:
    """``teacher_logprobs``: the teacher's top-K rows of the training examples (ftcot.curate.logprobs), written
    gzipped beside them; without them, a stale file of an earlier curation is removed."""
    import gzip

    from ftcot.curate.logprobs import TEACHER_LOGPROBS_FILE

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FtcotError(f"--out {out} is a file; give a directory path for the DATA_DIR.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, out, "--out") from None
    files = {
        "train.jsonl": [asdict(e) for e in train],
        "val.jsonl": [asdict(e) for e in val],
        "openai_chat.jsonl": [chat_record(e) for e in train],
    }
    contamination = summary.get("contamination") or {}
    if "flags" in contamination:
        # Every flagged pair goes to its own file; curation.json, a report read whole by people and by
        # report.html, keeps the first few: a templated benchmark flags thousands (shuffled objects: 10,951).
        files[CONTAMINATION_FILE] = contamination["flags"]
        summary = {**summary, "contamination": {**contamination, "flags": contamination["flags"][:FLAGS_SHOWN],
                                                "all_flags_in": CONTAMINATION_FILE}}
    # Every file is written in full under a temporary name before any is renamed (the stack renames on
    # exit, last entered first, so curation.json, which marks a DATA_DIR, comes last): a kill or a full
    # disk leaves the old DATA_DIR or the new one, not train.jsonl of one and val.jsonl of the other.
    with ExitStack() as stack:
        stack.enter_context(atomic_file(out / "curation.json", option="--out")).write(
            json.dumps(summary, indent=2) + "\n")
        for name, rows in files.items():
            write_jsonl(rows, stack.enter_context(atomic_file(out / name, option="--out")))
        if teacher_logprobs is not None:
            handle = stack.enter_context(atomic_file(out / TEACHER_LOGPROBS_FILE, "wb", option="--out"))
            # mtime 0: the same rows give the same bytes (stage outputs are compared byte for byte)
            with gzip.GzipFile(fileobj=handle, mode="wb", mtime=0) as packed:
                packed.write("".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n"
                                     for r in teacher_logprobs).encode("utf-8"))
    if teacher_logprobs is None and (out / TEACHER_LOGPROBS_FILE).exists():
        (out / TEACHER_LOGPROBS_FILE).unlink()


# Fields a row must carry; lineage fields past these are optional (older or hand-made files).
REQUIRED_FIELDS = ("prompt", "completion", "question", "rationale", "answer", "task", "sample_index")


def read_examples(path: Path) -> list[TrainingExample]:
    """The examples of a DATA_DIR file; a row missing a field is a one-line error naming it."""
    if not path.is_file():
        raise FtcotError(f"{path}: missing; DATA_DIR must be written by 'ftcot curate'.")
    rows = []
    for line, row in read_jsonl(path):
        for name in REQUIRED_FIELDS:
            require_field(row, name, path, line)
        rows.append(TrainingExample(**{k: row[k] for k in TrainingExample.__dataclass_fields__ if k in row}))
    return rows
