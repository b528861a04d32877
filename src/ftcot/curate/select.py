"""Which teacher rationales become training data (spec §3).

A rationale is kept when its stage-2 answer, extracted with no prefix (first
candidate), equals the gold answer; every correct sample of a question is kept
up to ``max_per_question``; exact duplicates of a kept rationale are dropped.
Pure functions over teacher records in the shared JSONL format.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ftcot.scoring import score
from ftcot.tasks import TaskSpec

# Why a teacher record did not become a training example.
NOT_TRAIN = "not a training question"
NO_RATIONALE = "no rationale"
WRONG_ANSWER = "wrong answer"
DUPLICATE = "duplicate rationale"
OVER_LIMIT = "over max per question"
TOO_LONG = "rationale too long"


@dataclass
class Selection:
    kept: list[dict] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)


def rationale_tokens(record: dict) -> int:
    """Tokens of a rationale: the teacher's own count when stored, else ~4 characters a token."""
    if record.get("reasoning_tokens"):
        return int(record["reasoning_tokens"])
    return (len(record["reasoning_completion"]) + 3) // 4


def select_rationales(records: Iterable[dict], spec: TaskSpec, train_indices: Iterable[int],
                      max_per_question: int | None = None,
                      max_rationale_tokens: int | None = None,
                      reject: Callable[[dict], str | None] | None = None) -> Selection:
    """``reject``: a quality filter asked about each correct, new rationale; a reason it returns drops it."""
    train = set(train_indices)
    selection = Selection()
    seen: dict[int, set[str]] = {}
    ordered = sorted(records, key=lambda r: (r["sample_index"], r.get("sample_number", 0)))
    for record in ordered:
        index = record["sample_index"]
        rationale = (record.get("reasoning_completion") or "").strip()
        reason = None
        if index not in train:
            reason = NOT_TRAIN
        elif not rationale:
            reason = NO_RATIONALE
        elif not score(record.get("answer_completion") or "", record["answer"], spec, "zs_cot").correct:
            reason = WRONG_ANSWER
        elif rationale in seen.get(index, ()):
            reason = DUPLICATE
        elif reject is not None and (filtered := reject(record)) is not None:
            reason = filtered
        elif max_rationale_tokens is not None and rationale_tokens(record) > max_rationale_tokens:
            reason = TOO_LONG
        elif max_per_question is not None and len(seen.get(index, ())) >= max_per_question:
            reason = OVER_LIMIT
        if reason:
            selection.dropped[reason] += 1
        else:
            seen.setdefault(index, set()).add(rationale)
            selection.kept.append(record)
    return selection
