"""Why a student is wrong: failure modes read off an evaluation's predictions.

Pure functions over ``predictions.jsonl`` records. The modes are the usual
suspects when a fine-tuned student underperforms:

- ``cut``: generation hit ``max_new_tokens`` (the output never ended by itself);
- ``looping``: the output repeats one sentence three times or more (degenerate repetition);
- ``no_answer``: the template's answer (``--> X``) was never written;
- ``collapse``: the most frequent prediction and its share, against the most
  frequent gold answer's share (a student answering "A" to everything);
- ``accuracy_when_complete``: accuracy over the outputs that ended by themselves.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

LOOP_REPEATS = 3
_SENTENCE = re.compile(r"[^.\n!?]+[.\n!?]")


@dataclass(frozen=True)
class Diagnosis:
    n: int
    accuracy: float
    cut: float
    looping: float
    no_answer: float
    accuracy_when_complete: float | None
    top_prediction: str
    top_prediction_share: float
    top_gold_share: float

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def looping(text: str, repeats: int = LOOP_REPEATS) -> bool:
    """Whether one sentence (of more than two words) occurs ``repeats`` times or more."""
    sentences = Counter(s.strip().lower() for s in _SENTENCE.findall(text) if len(s.split()) > 2)
    return bool(sentences) and sentences.most_common(1)[0][1] >= repeats


def diagnose(records: list[dict[str, Any]]) -> Diagnosis:
    if not records:
        raise ValueError("no predictions to diagnose")
    n = len(records)
    complete = [r for r in records if r.get("finish_reason") == "stop"]
    predictions = Counter(r.get("prediction", "") for r in records)
    golds = Counter(str(r.get("answer", "")) for r in records)
    top, top_count = predictions.most_common(1)[0]
    return Diagnosis(
        n=n,
        accuracy=sum(bool(r.get("correct")) for r in records) / n,
        cut=1 - len(complete) / n,
        looping=sum(looping(r.get("output", "")) for r in records) / n,
        no_answer=sum(not r.get("format_correct", True) for r in records) / n,
        accuracy_when_complete=sum(bool(r.get("correct")) for r in complete) / len(complete) if complete else None,
        top_prediction=top,
        top_prediction_share=top_count / n,
        top_gold_share=golds.most_common(1)[0][1] / n,
    )
