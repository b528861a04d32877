"""A user's own task from a ``.jsonl`` or ``.csv`` file, loaded as a :class:`Task`.

File format (one sample per JSON line, or one per CSV row under a header):

- ``question`` (required): the question text.
- ``answer`` (required): the gold answer, checked against ``--answer-type``:
  ``number`` (like ``42``, ``-3``, ``2.5``, ``1,000``), ``letter`` (a choice's
  letter or its text), ``yes/no`` (any case, stored lower-case) or ``text``.
  A training question (``split: train``) may leave it out (missing, null or
  empty; in CSV, the column may be left out when every row is ``train``): its
  sample's answer is ``""``, and only curation with majority labels
  (``ftcot curate --label majority``) makes training data from it.
- ``choices`` (optional, letter tasks only): a list of strings in JSONL, a
  ``|``-separated string in CSV. They are appended to the question as
  ``" Answer Choices: (A) x (B) y"``, the text the built-in multiple-choice
  tasks show the teacher.
- ``split`` (optional): ``train`` or ``test`` on every row, or on none (then
  the paper's seeded 70/30 split is derived).

Other fields are ignored. Sample indices are the rows' order in the file.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from string import ascii_uppercase
from typing import Any

from ftcot.errors import FtcotError, unknown_name
from ftcot.jsonl import read_jsonl, require_field
from ftcot.scoring import NUMBER_PATTERNS, TEXT_REMOVED
from ftcot.tasks.registry import ARABIC, YES_NO, among_trigger
from ftcot.tasks.spec import AnswerType, Category, Sample, TaskSpec
from ftcot.tasks.splits import derive_split
from ftcot.tasks.task import Task

SUFFIXES = (".jsonl", ".csv")
SPLIT_VALUES = ("train", "test")
CSV_CHOICE_SEPARATOR = "|"

# Spellings a shell user types for the answer types (``yes/no`` needs no quoting as ``yes_no``).
_ANSWER_TYPE_ALIASES = {t.value: t for t in AnswerType} | {"yes_no": AnswerType.YES_NO}

TRIGGERS = {  # Kojima et al.'s triggers, as the paper; the letter one depends on the number of choices
    AnswerType.NUMBER: ARABIC,
    AnswerType.YES_NO: YES_NO,
    AnswerType.TEXT: "\nTherefore, the answer is",
}

# A gold answer must have the shape the scorer extracts (ftcot.scoring's patterns): a number the paper's
# rule reads (commas dropped; "1e3" or "+3" parse as floats but could never be matched), a text without
# what the text rule deletes from predictions (quotes, newlines, periods, whitespace).
# Inline options a user may have written into the question themselves: "(A) … (B) …".
_INLINE_OPTION = re.compile(r"\(([A-Z])\)")


@dataclass(frozen=True)
class _Row:
    """One record as written, before validation; ``where`` is "file:line" for errors."""

    where: str
    question: Any
    answer: Any
    choices: list[str] | None
    split: str | None


@dataclass(frozen=True)
class CustomReader:
    """The :data:`~ftcot.tasks.spec.Reader` of a user's file (the raw dir is unused)."""

    path: Path
    answer_type: AnswerType

    def __call__(self, raw_dir: Path | None = None) -> list[Sample]:
        return [sample for sample, _, _ in _read(self.path, self.answer_type)]


def parse_answer_type(name: str | None, path: Path | None = None) -> AnswerType:
    valid = ", ".join(t.value for t in AnswerType)
    if not name:
        where = f"{path}: " if path else ""
        raise FtcotError(f"{where}a task of your own needs --answer-type (one of: {valid}).")
    try:
        return answer_type_named(name)
    except ValueError as exc:
        # The file it is for, not a flag: this is read for the command line, a config's tasks: and the API alike.
        raise FtcotError(f"{path}: {exc}" if path else f"answer type: {exc}") from None


def answer_type_named(name: str) -> AnswerType:
    """The answer type called ``name`` (its aliases too); a ValueError listing the valid ones (a config's
    ``answer_type:`` is checked by this as it is read)."""
    try:
        return _ANSWER_TYPE_ALIASES[name.strip().lower()]
    except KeyError:
        raise ValueError(str(unknown_name("answer type", name, _ANSWER_TYPE_ALIASES))) from None


def task_source(task: Task) -> dict[str, str] | None:
    """Where a user's task came from (the file, its SHA-256, its answer type), for the records of the stages
    that read it, so that the next stage finds it without being told again; None for a built-in task."""
    reader = task.spec.reader
    if not isinstance(reader, CustomReader):
        return None
    return {"file": str(reader.path.resolve()), "sha256": _sha256(reader.path),
            "answer_type": task.spec.answer_type.value}


def load_recorded_task(key: str, source: dict[str, Any] | None, where: str) -> Task:
    """The user task ``key`` that ``where`` (a run, a DATA_DIR) was made from, by its recorded
    :func:`task_source`: the same file, unchanged, or a one-line error saying what to pass instead."""
    return load_custom_task(recorded_task_file(key, source, where), (source or {}).get("answer_type"))


def recorded_task_file(key: str, source: dict[str, Any] | None, where: str) -> Path:
    """The file of :func:`load_recorded_task`, checked (there, unchanged) without reading it as a task."""
    if not source or not source.get("file"):
        raise FtcotError(f"{where} was made from your own task '{key}'; name its file again (--task FILE.jsonl).")
    path = Path(source["file"])
    if not path.is_file():
        raise FtcotError(f"{where} was made from the task file {path}, which is gone; pass the file with --task.")
    now = _sha256(path) if source.get("sha256") else None
    if now is not None and now != source["sha256"]:
        raise FtcotError(f"{where} was made from {path} as it was then (sha256 {source['sha256'][:12]}…); the file "
                         f"has changed since (sha256 {now[:12]}…): restore it, or pass --task with the "
                         f"file it was made from.")
    return path


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_custom_task(path: Path, answer_type: str | None) -> Task:
    """A user's task from ``path``, ready for every stage like a built-in one."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise FtcotError(f"{path}: unsupported file type '{path.suffix}'; use a .jsonl or .csv file.")
    kind = parse_answer_type(answer_type, path)
    rows = _read(path, kind)
    samples = [sample for sample, _, _ in rows]
    letters = ""
    if kind is AnswerType.LETTER:
        letters = ascii_uppercase[: max(n for _, _, n in rows)]
    spec = TaskSpec(
        key=path.stem,
        title=path.name,
        category=Category.OTHER,
        answer_type=kind,
        trigger=among_trigger(letters) if kind is AnswerType.LETTER else TRIGGERS[kind],
        reader=CustomReader(path, kind),
        files=(path.name,),
        letters=letters,
        # Answers of one's own data may be written "2.50" or "2.5": compare values.
        float_compare=kind is AnswerType.NUMBER,
    )
    split = _split(path, [(row.where, row.split) for _, row, _ in rows])
    return Task(spec, {s.index: s for s in samples}, splits={"default": split})


def _read(path: Path, kind: AnswerType) -> list[tuple[Sample, _Row, int]]:
    """(sample, raw row, number of choices) for every record; the first bad one is an error."""
    raw = _csv_rows(path) if path.suffix.lower() == ".csv" else _jsonl_rows(path)
    out = []
    try:
        for index, row in enumerate(raw):
            question, answer, n_choices = _validate(row, kind)
            out.append((Sample(index, question, answer), row, n_choices))
    except UnicodeDecodeError as exc:
        raise FtcotError(f"{path}: not UTF-8 text ({exc.reason}); save the file as UTF-8.") from None
    if not out:
        raise FtcotError(f"{path}: no samples; add one record per line with 'question' and 'answer'.")
    _refuse_contradictions(out, kind)
    return out


def _refuse_contradictions(rows: list[tuple[Sample, _Row, int]], kind: AnswerType) -> None:
    """The same question twice with different answers: one of them is wrong, and which one would be gold
    would depend on the split. (The same question with the same answer is allowed: MultiArith has such.)"""
    first: dict[str, tuple[Sample, _Row]] = {}
    for sample, row, _ in rows:
        if not sample.answer:
            continue  # unlabelled
        key = " ".join(sample.question.split())
        if key not in first:
            first[key] = (sample, row)
            continue
        earlier, where = first[key]
        same = earlier.answer.strip() == sample.answer.strip()
        if not same and kind is AnswerType.NUMBER:
            try:
                same = float(earlier.answer.replace(",", "")) == float(sample.answer.replace(",", ""))
            except ValueError:
                pass
        if not same:
            raise FtcotError(f"{row.where}: the question of {where.where} again, with another answer ('{earlier.answer}' "
                             f"there, '{sample.answer}' here); keep the right one.")


def _jsonl_rows(path: Path) -> Iterator[_Row]:
    for line, record in read_jsonl(path):
        where = f"{path}:{line}"
        question = require_field(record, "question", path, line)
        answer = record.get("answer")  # a training question may have none (checked with its split)
        choices = record.get("choices")
        if choices is not None and not (
            isinstance(choices, list) and all(isinstance(c, str) for c in choices)
        ):
            raise FtcotError(f"{where}: field 'choices' must be a list of strings, "
                             f"e.g. [\"red\", \"blue\"]; got {choices!r:.60}.")
        split = record.get("split")
        if split is not None and not isinstance(split, str):
            raise FtcotError(f"{where}: field 'split' must be \"train\" or \"test\", got {split!r:.60}.")
        yield _Row(where, question, answer, choices, split)


def _csv_rows(path: Path) -> Iterator[_Row]:
    try:
        # utf-8-sig: spreadsheet programs often start a CSV with a byte-order mark,
        # which would otherwise become part of the first column's name.
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise FtcotError(f"{path}: cannot read ({exc.strerror}).") from None
    with handle:
        reader = csv.DictReader(handle)
        try:
            header = reader.fieldnames or []
        except csv.Error as exc:
            raise FtcotError(f"{path}:1: not valid CSV ({exc}).") from None
        # "answer" may be left out when a split column marks every row a training question.
        for column in ("question",) + (() if "split" in header else ("answer",)):
            if column not in header:
                present = ", ".join(h for h in header if h) or "none"
                raise FtcotError(f"{path}:1: the header has no column '{column}' (columns: {present}); "
                                 f"the first line must name the columns, e.g. question,answer.")
        while True:
            # The line a record starts on (a quoted field may span several lines).
            line = reader.line_num + 1
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise FtcotError(f"{path}:{reader.line_num}: not valid CSV ({exc}).") from None
            where = f"{path}:{line}"
            if None in record:  # DictReader files surplus cells under the key None
                raise FtcotError(f"{where}: {len(header) + len(record[None])} cells but the header has "
                                 f"{len(header)} columns; quote cells that contain commas.")
            for column in ("question", "answer"):
                if column in header and record[column] is None:  # a short row
                    raise FtcotError(f"{where}: missing field '{column}' (the row has fewer cells "
                                     f"than the header has columns).")
            choices = (record.get("choices") or "").strip()
            yield _Row(
                where,
                record["question"],
                record.get("answer"),
                [c.strip() for c in choices.split(CSV_CHOICE_SEPARATOR)] if choices else None,
                (record.get("split") or "").strip() or None,
            )


def _validate(row: _Row, kind: AnswerType) -> tuple[str, str, int]:
    """The question as the teacher will see it, the stored answer, and the number of choices."""
    where = row.where
    if not isinstance(row.question, str) or not row.question.strip():
        raise FtcotError(f"{where}: field 'question' must be non-empty text, got {row.question!r:.60}.")
    question = row.question.strip()
    if row.choices is not None and kind is not AnswerType.LETTER:
        raise FtcotError(f"{where}: field 'choices' is only for --answer-type letter; "
                         f"use that type or remove the choices.")
    if row.split is not None and row.split.strip().lower() not in SPLIT_VALUES:
        raise FtcotError(f"{where}: field 'split' is '{row.split}'; use train or test.")
    if row.answer is None or (isinstance(row.answer, str) and not row.answer.strip()):
        return _unlabelled(row, question, kind)
    answer = _answer_text(row, kind)
    if kind is AnswerType.NUMBER:
        if not NUMBER_PATTERNS["paper"].fullmatch(answer.replace(",", "")):
            raise FtcotError(f"{where}: field 'answer' is '{answer}', not a number for --answer-type "
                             f"number; write it like 42, -3, 2.5 or 1,000.")
        return question, answer, 0
    if kind is AnswerType.YES_NO:
        if answer.lower() not in ("yes", "no"):
            raise FtcotError(f"{where}: field 'answer' is '{answer}'; --answer-type yes/no needs yes or no.")
        return question, answer.lower(), 0
    if kind is AnswerType.TEXT:
        if TEXT_REMOVED.search(answer):
            raise FtcotError(f"{where}: field 'answer' is '{answer}', which could never be scored correct: "
                             f"the text rule removes spaces, quotes and periods from predictions; "
                             f"write the answer without them.")
        return question, answer, 0
    return _letter(where, question, answer, row.choices)


def _unlabelled(row: _Row, question: str, kind: AnswerType) -> tuple[str, str, int]:
    """A training question without a gold answer: stored with answer ``""`` (majority labels can train on it)."""
    if row.split is None or row.split.strip().lower() != "train":
        raise FtcotError(f"{row.where}: missing field 'answer'; only a training question (split: train) may "
                         f"leave it out — give the answer, or mark the row train (and every row train or test).")
    if kind is not AnswerType.LETTER:
        return question, "", 0
    if row.choices is None:
        found = _INLINE_OPTION.findall(question)
        if not found:
            raise FtcotError(f"{row.where}: --answer-type letter needs field 'choices' or options "
                             f"written in the question as (A) … (B) ….")
        return question, "", ascii_uppercase.index(max(found)) + 1
    text, _, count = _letter(row.where, question, "A", row.choices)
    return text, "", count


def _answer_text(row: _Row, kind: AnswerType) -> str:
    value = row.answer
    # JSON numbers are fine for a number task; 3.0 is written 3 like the built-in readers do.
    if kind is AnswerType.NUMBER and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise FtcotError(f"{row.where}: field 'answer' is {value}, not a finite number.")
        text = str(value)
        return text[:-2] if text.endswith(".0") else text
    if not isinstance(value, str) or not value.strip():
        raise FtcotError(f"{row.where}: field 'answer' must be non-empty text, got {value!r:.60}.")
    return value.strip()


def _letter(where: str, question: str, answer: str, choices: list[str] | None) -> tuple[str, str, int]:
    if choices is None:
        # The user wrote the options into the question; the answer must be one of them.
        found = _INLINE_OPTION.findall(question)
        if not found:
            raise FtcotError(f"{where}: --answer-type letter needs field 'choices' or options "
                             f"written in the question as (A) … (B) ….")
        letters = ascii_uppercase[: ascii_uppercase.index(max(found)) + 1]
        if answer.strip("()") in letters and len(answer.strip("()")) == 1:
            return question, answer.strip("()"), len(letters)
        raise FtcotError(f"{where}: field 'answer' is '{answer}'; use one of the letters "
                         f"{letters[0]}-{letters[-1]} of the options in the question.")
    if len(choices) < 2 or len(choices) > len(ascii_uppercase):
        raise FtcotError(f"{where}: field 'choices' has {len(choices)} choices; give 2 to 26.")
    if not all(choices):
        raise FtcotError(f"{where}: field 'choices' has an empty choice; remove it.")
    letters = ascii_uppercase[: len(choices)]
    text = question + " Answer Choices:" + "".join(f" ({l}) {c}" for l, c in zip(letters, choices))
    # A letter wins over a choice whose text happens to be a letter: "B" means (B).
    bare = answer[1:-1] if re.fullmatch(r"\([A-Z]\)", answer) else answer
    if len(bare) == 1 and bare in letters:
        return text, bare, len(choices)
    for matches in (lambda c: c == answer, lambda c: c.lower() == answer.lower()):
        hits = [l for l, c in zip(letters, choices) if matches(c)]
        if len(hits) == 1:
            return text, hits[0], len(choices)
        if len(hits) > 1:
            raise FtcotError(f"{where}: field 'answer' '{answer}' matches choices {', '.join(hits)}; "
                             f"give the letter instead.")
    raise FtcotError(f"{where}: field 'answer' is '{answer}', neither a letter {letters[0]}-{letters[-1]} "
                     f"nor the text of one of the choices.")


def _split(path: Path, rows: list[tuple[str, str | None]]) -> dict[str, list[int]]:
    labelled = [where for where, split in rows if split is not None]
    unlabelled = [where for where, split in rows if split is None]
    if labelled and unlabelled:
        raise FtcotError(f"{unlabelled[0]}: field 'split' is missing here but set on {labelled[0]}; "
                         f"give every row train or test, or remove the split column.")
    if not labelled:
        return derive_split(list(range(len(rows))))
    split = {"train": [], "test": []}
    for index, (_, value) in enumerate(rows):
        split[value.strip().lower()].append(index)
    return split
