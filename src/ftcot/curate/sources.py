"""Where teacher records come from: a teach RUN_DIR, or a JSONL in the shared format."""

from __future__ import annotations

from pathlib import Path

from ftcot.errors import FtcotError
from ftcot.jsonl import read_jsonl, require_field

REQUIRED = ("sample_index", "answer", "reasoning_completion", "answer_completion")


def load_teacher_records(source: Path) -> tuple[list[dict], str | None]:
    """Teacher records and, when the source knows it, the task they answer."""
    if source.is_dir():
        from ftcot.teach.store import run_records

        return run_records(source)
    if not source.is_file():
        raise FtcotError(f"{source}: no such teach run directory or JSONL file.")
    records = []
    for line, record in read_jsonl(source):
        for name in REQUIRED:
            require_field(record, name, source, line)
        records.append({**record, "record_id": record.get("record_id") or f"{source.name}:{line}"})
    return records, None
