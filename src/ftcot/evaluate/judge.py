"""Judging one output: the extracted answer and the three per-sample flags.

Pure functions over text; no model. Extraction is the paper's evaluator
(:func:`ftcot.scoring.score`) with the template's answer prefix, so a student
is scored exactly as ``ftcot score --template`` would score its outputs.

- ``correct``: the extracted answer equals the gold answer (as in the paper).
- ``format_correct``: the output has the shape the template asks for. With an
  answer prefix (``-->``, ``The answer is``): the prefix occurs and a
  candidate follows its first occurrence. Without one (zs, zs_cot, ft): some
  candidate occurs at all. A student that says ``yes`` somewhere but never
  writes ``--> yes`` is scored by the fallback rule (last candidate) yet is
  not format-correct: that is the point of the flag.
- ``complete``: every generation behind the output ended by itself (EOS or a
  stop string), none was cut at ``max_new_tokens``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ftcot.scoring import candidates, score
from ftcot.tasks.spec import TaskSpec
from ftcot.templates import Template

FINISHED = frozenset({"stop"})


@dataclass(frozen=True)
class Judgement:
    prediction: str
    correct: bool
    format_correct: bool
    complete: bool


def format_correct(output: str, spec: TaskSpec, template: Template) -> bool:
    prefix = template.answer_prefix
    if prefix is not None:
        if prefix not in output:
            return False
        output = output.split(prefix, 1)[1]
    # Text answers (last letters) always yield one candidate, the cleaned rest
    # of the text; an empty one means nothing was answered.
    return any(candidates(output, spec, "paper"))


def judge(output: str, gold: str, spec: TaskSpec, template: Template, finish_reasons: Iterable[str]) -> Judgement:
    """Score ``output`` against ``gold``; ``finish_reasons`` are those of every stage that produced it."""
    scored = score(output, gold, spec, template, "paper")
    return Judgement(
        prediction=scored.prediction,
        correct=scored.correct,
        format_correct=format_correct(output, spec, template),
        complete=all(reason in FINISHED for reason in finish_reasons),
    )
