"""Which teacher rationales become training data (as in the paper).

A rationale is kept when its stage-2 answer, extracted with no prefix (first
candidate), equals the gold answer; every correct sample of a question is kept
up to ``max_per_question``; exact duplicates of a kept rationale are dropped.
Beyond the paper, the answer to reach may be the question's majority answer
(:mod:`ftcot.curate.labels`), and rationalized records (a hinted teacher,
:mod:`ftcot.teach.rationalize`) fill the questions left without an example.
Pure functions over teacher records in the shared JSONL format.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ftcot.scoring import Vote, agrees, record_answer
from ftcot.scoring import score
from ftcot.tasks import TaskSpec

# Why a teacher record did not become a training example.
NOT_TRAIN = "not a training question"
OUTSIDE_SUBSET = "outside the training subset (train_size)"
NO_RATIONALE = "no rationale"
WRONG_ANSWER = "wrong answer"
DUPLICATE = "duplicate rationale"
OVER_LIMIT = "over max per question"
TOO_LONG = "rationale too long"
NO_GOLD = "no gold answer"
NO_MAJORITY = "no majority answer"
DISAGREES = "disagrees with the majority"
RATIONALIZED_OFF = "rationalized (left out)"
ALREADY_COVERED = "rationalized, question has an example"


@dataclass
class Selection:
    kept: list[dict] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)


def rationale_tokens(record: dict) -> int:
    """Tokens of a rationale: the teacher's own count when stored, else ~4 characters a token."""
    if record.get("reasoning_tokens"):
        return int(record["reasoning_tokens"])
    return (len(record["reasoning_completion"]) + 3) // 4


def _label_reason(record: dict, spec: TaskSpec, mode: str, votes: dict[int, Vote] | None) -> str | None:
    """Why a rationale does not reach the answer it must (None: it does); rationalized ones must reach gold."""
    gold = str(record.get("answer") or "").strip()
    needs_gold = mode != "majority" or record.get("rationalized")
    if needs_gold and not gold:
        return NO_GOLD
    if needs_gold and not score(record.get("answer_completion") or "", gold, spec, "zs_cot").correct:
        return WRONG_ANSWER
    if mode == "gold" or record.get("rationalized"):
        return None
    vote = (votes or {}).get(record["sample_index"])
    if vote is None or not vote.label:
        return NO_MAJORITY
    return None if agrees(record_answer(record, spec), vote.label, spec) else DISAGREES


def select_rationales(records: Iterable[dict], spec: TaskSpec, train_indices: Iterable[int],
                      max_per_question: int | None = None,
                      max_rationale_tokens: int | None = None,
                      reject: Callable[[dict], str | None] | None = None, *, label: str = "gold",
                      votes: dict[int, Vote] | None = None, rationalized: bool = True) -> Selection:
    """``reject``: a quality filter asked about each correct, new rationale; a reason it returns drops it.

    ``label``: the answer a rationale must reach (:data:`ftcot.curate.labels.LABEL_MODES`; ``votes`` are the
    majority answers). Rationalized records come after the others and only fill questions left without an
    example (``rationalized=False`` leaves them all out).
    """
    train = set(train_indices)
    selection = Selection()
    seen: dict[int, set[str]] = {}
    ordered = sorted(records, key=lambda r: (bool(r.get("rationalized")), r["sample_index"],
                                             r.get("sample_number", 0)))
    covered: set[int] | None = None  # questions with an example before rationalization
    for record in ordered:
        index = record["sample_index"]
        rationale = (record.get("reasoning_completion") or "").strip()
        reason = None
        if record.get("rationalized") and covered is None:
            covered = set(seen)
        if index not in train:
            reason = NOT_TRAIN
        elif record.get("rationalized") and not rationalized:
            reason = RATIONALIZED_OFF
        elif record.get("rationalized") and index in (covered or ()):
            reason = ALREADY_COVERED
        elif not rationale:
            reason = NO_RATIONALE
        elif (why := _label_reason(record, spec, label, votes)) is not None:
            reason = why
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
