"""Answer extraction and scoring: the paper's evaluator and Kojima's cleansing.

Candidates are found by answer type (not by dataset name), so a user's own
task scores through the same code as a built-in one. The two rules differ only
where the paper's rule says they do:

- ``paper`` (reasoning-teacher): numbers ``-?\\d+(?:\\.\\d+)?``; with the
  template's prefix present, the first candidate after it; prefix absent, the
  last candidate of the whole text; no prefix defined, the first candidate.
  Gold numbers compare as floats where the task says so.
- ``kojima`` (zero_shot_cot): numbers ``-?\\d+\\.?\\d*``, one trailing ``.``
  stripped; few-shot templates split on the prefix and take the first
  candidate of the last part if the prefix occurred, else its last candidate;
  other templates take the first candidate; string equality.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from ftcot.errors import FtcotError
from ftcot.tasks.spec import AnswerType, TaskSpec
from ftcot.templates import Template, get_template

RULES = ("paper", "kojima")

# Public: the lm-eval export writes them into its standalone utils.py (ftcot/export/lm_eval.py).
NUMBER_PATTERNS = {"paper": re.compile(r"-?\d+(?:\.\d+)?"), "kojima": re.compile(r"-?\d+\.?\d*")}
YES_NO_SEPARATORS = re.compile(r"[\"'\n.\s:,]")
TEXT_REMOVED = re.compile(r"[\"'\n.\s]")


def candidates(text: str, spec: TaskSpec, rule: str = "paper") -> list[str]:
    """Every answer candidate in ``text``, in order."""
    kind = spec.answer_type
    if kind is AnswerType.NUMBER:
        return NUMBER_PATTERNS[rule].findall(text.replace(",", ""))
    if kind is AnswerType.LETTER:
        return re.findall(f"[{spec.letters}]", text)
    if kind is AnswerType.YES_NO:
        return [t for t in YES_NO_SEPARATORS.sub(" ", text.lower()).split(" ") if t in ("yes", "no")]
    return [TEXT_REMOVED.sub("", text)]


def extract_answer(text: str, spec: TaskSpec, template: str | Template = "zs_cot",
                   rule: str = "paper") -> str:
    """The predicted answer in a completion, or ``""`` when there is none."""
    if rule not in RULES:
        raise FtcotError(f"Unknown rule '{rule}'. Valid: {', '.join(RULES)}.")
    template = get_template(template) if isinstance(template, str) else template
    return _paper(text, spec, template) if rule == "paper" else _kojima(text, spec, template)


def _paper(text: str, spec: TaskSpec, template: Template) -> str:
    prefix = template.answer_prefix
    if prefix is None:
        found = candidates(text, spec, "paper")
        return found[0] if found else ""
    if prefix in text:
        found = candidates(text.split(prefix, 1)[1], spec, "paper")
        return found[0] if found else ""
    found = candidates(text, spec, "paper")
    return found[-1] if found else ""


def _kojima(text: str, spec: TaskSpec, template: Template) -> str:
    prefix_seen = False
    if template.few_shot and template.answer_prefix:
        parts = text.split(template.answer_prefix)
        prefix_seen = len(parts) > 1
        text = parts[-1]
    found = candidates(text, spec, "kojima")
    if not found:
        return ""
    answer = found[-1] if template.few_shot and not prefix_seen else found[0]
    return answer[:-1] if answer.endswith(".") else answer


def normalize_gold(answer: str, spec: TaskSpec, rule: str = "paper") -> str:
    answer = answer.strip()
    if rule == "kojima":  # Kojima compares the raw gold string (GSM8K keeps "2,125")
        return answer
    if spec.answer_type is AnswerType.NUMBER:
        return answer.replace(",", "")
    if spec.answer_type is AnswerType.YES_NO:
        return answer.lower()
    return answer


def is_correct(prediction: str, gold: str, spec: TaskSpec, rule: str = "paper") -> bool:
    gold = normalize_gold(gold, spec, rule)
    if rule == "paper" and spec.float_compare and prediction:
        try:
            return abs(float(prediction) - float(gold)) <= 1e-6
        except ValueError:
            return False
    return prediction == gold


@dataclass(frozen=True)
class Scored:
    prediction: str
    correct: bool


def score(text: str, gold: str, spec: TaskSpec, template: str | Template = "zs_cot",
          rule: str = "paper") -> Scored:
    prediction = extract_answer(text, spec, template, rule)
    return Scored(prediction, is_correct(prediction, gold, spec, rule))


# ---- self-consistency votes (Wang et al. 2023): the majority of a question's answers ----------------------------
MIN_VOTES = 2  # chains that must give the majority answer (1: a single chain's answer is its question's label)


def record_answer(record: dict, spec: TaskSpec) -> str:
    """The answer a chain gave (the paper's rule on its stage-2 completion), or ``""``."""
    return extract_answer(record.get("answer_completion") or "", spec, "zs_cot")


def vote_key(answer: str, spec: TaskSpec) -> str:
    """Answers that score alike vote alike: ``2.50`` and ``2.5`` are one vote on a value-compared task."""
    if spec.float_compare and answer:
        try:
            return repr(float(answer))
        except ValueError:
            return answer
    return answer


@dataclass(frozen=True)
class Vote:
    """One question's answers: the majority (``""`` when there is none), its votes, all chains that answered."""

    label: str
    votes: int
    answered: int
    chains: int

    @property
    def agreement(self) -> float:
        return self.votes / self.answered if self.answered else 0.0


def majority_votes(records: Iterable[dict], spec: TaskSpec, min_votes: int = MIN_VOTES) -> dict[int, Vote]:
    """Per question (sample index), its chains' majority answer; rationalized records do not vote."""
    answers: dict[int, list[str]] = defaultdict(list)
    chains: Counter = Counter()
    for record in records:
        if record.get("rationalized"):
            continue
        index = record["sample_index"]
        chains[index] += 1
        answer = record_answer(record, spec)
        if answer:
            answers[index].append(answer)
    votes = {}
    for index in chains:
        counted = Counter(vote_key(a, spec) for a in answers[index])
        ranked = counted.most_common(2)
        label, top = "", 0
        if ranked and ranked[0][1] >= min_votes and (len(ranked) == 1 or ranked[1][1] < ranked[0][1]):
            top = ranked[0][1]
            # The label as the teacher wrote it (its first spelling), not the vote key.
            label = next(a for a in answers[index] if vote_key(a, spec) == ranked[0][0])
        votes[index] = Vote(label, top, len(answers[index]), chains[index])
    return votes


def agrees(answer: str, label: str, spec: TaskSpec) -> bool:
    return bool(answer) and bool(label) and vote_key(answer, spec) == vote_key(label, spec)
