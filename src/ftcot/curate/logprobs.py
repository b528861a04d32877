"""The teacher's top-K log-probabilities of each kept rationale, carried into DATA_DIR for logit distillation.

``ftcot curate`` writes, for Fine-tune-CoT data whose teacher stored them,
``DATA_DIR/teacher_logprobs.jsonl.gz`` (:data:`TEACHER_LOGPROBS_FILE`): one line per
training example's teacher record, ``{"teacher_record", "teacher", "k", "ids" | "tokens", "logprobs"}`` in
the layout of ``ftcot teach export --logprobs`` (:func:`ftcot.teach.export.logprobs_json`), gzipped (about a
third of the JSON). They come from the teach store (a RUN_DIR made with ``--teacher-args top_logprobs=K``,
and its rationalize/ store) or from the ``logprobs`` of an exported JSONL. ``ftcot train --kd-weight`` reads
them and aligns them with the student's tokens (:mod:`ftcot.train.distill`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

FIX = "--teacher-args top_logprobs=5"
TEACHER_LOGPROBS_FILE = "teacher_logprobs.jsonl.gz"


def carried(source: Path, records: list[dict], examples: list[Any]) -> tuple[list[dict] | None, Any]:
    """(the top-K row of each of ``examples``' teacher records, what curation.json says of them): the rows when
    ``source`` (a teach run's store, or an exported JSONL's ``logprobs``) has one for every example; None and
    why when it has some only; (None, None) when it has none (a teacher asked without top_logprobs)."""
    from ftcot.teach.export import logprobs_json

    wanted = list(dict.fromkeys(e.teacher_record for e in examples if e.teacher_record))
    by_id = {r.get("record_id"): r for r in records}
    found: dict[str, dict] = {}
    if source.is_dir():
        from ftcot.teach.store import RATIONALIZE_DIR, STORE_FILE, TeachStore

        for run in (source, source / RATIONALIZE_DIR):
            if (run / STORE_FILE).is_file():
                with TeachStore.open_readonly(run) as store:
                    for key, top in store.top_logprobs(k for k in wanted if k not in found).items():
                        found[key] = logprobs_json(top)
    else:
        for key in wanted:
            stages = (by_id.get(key) or {}).get("logprobs")
            if isinstance(stages, dict):  # the chain's first completion: its rationale
                first = stages.get("reasoning") or stages.get("ft_cot")
                if isinstance(first, dict):
                    found[key] = first
    if not found:
        return None, None
    missing = len(wanted) - len(found)
    if missing:  # a store topped up after top_logprobs was set: distilling on part of the data would mislead
        return None, {"carried": False, "why": f"{missing} of the {len(wanted)} kept rationales have no stored "
                                                f"log-probabilities (taught before {FIX} was set?)"}
    rows = [{"teacher_record": key, "teacher": (by_id.get(key) or {}).get("teacher"), **found[key]}
            for key in wanted]
    return rows, summary_of(rows)


def summary_of(rows: list[dict]) -> dict[str, Any]:
    """What curation.json says about them."""
    return {"file": TEACHER_LOGPROBS_FILE, "records": len(rows), "k": max((r["k"] for r in rows), default=0),
            "token_ids": all("ids" in r for r in rows),
            "teachers": sorted({str(r["teacher"]) for r in rows if r.get("teacher")})}
