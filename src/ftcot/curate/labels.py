"""Which answer a rationale must reach: the gold label, or the majority of the teacher's own answers.

Self-consistency (Wang et al. 2023) as a label source: with D ≥ 2 rationales
per question, the most common stage-2 answer is a *pseudo-label*, and the
rationales that reach it are kept — no gold answer needed (Huang et al. 2022,
"Large Language Models Can Self-Improve"). Label modes of ``ftcot curate --label``:

- ``gold`` (the paper): a rationale is kept when its answer equals the gold answer;
- ``majority``: when it equals the question's majority answer (gold is not read);
- ``majority_and_gold``: both (the questions whose majority is right, their rationales
  that reach it: the cleanest data, where gold exists).

A question has a majority answer when its most common answer is unique (no tie)
and at least ``min_votes`` chains gave it (2; ``--min-votes 1`` makes a single
chain's answer its question's label: the teacher trusted, without gold).
Answers are compared as the scorer compares them (numbers by value where the
task says so). Pure functions over teacher records in the shared JSONL format.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from ftcot.errors import unknown_name
from ftcot.scoring import extract_answer, is_correct
from ftcot.tasks import TaskSpec

LABEL_MODES = ("gold", "majority", "majority_and_gold")
MIN_VOTES = 2


def check_label_mode(mode: str) -> str:
    if mode not in LABEL_MODES:
        raise unknown_name("--label", mode, LABEL_MODES)
    return mode


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


def pseudo_label_report(votes: dict[int, Vote], gold: dict[int, str], spec: TaskSpec, train: set[int],
                        mode: str, min_votes: int = MIN_VOTES) -> dict:
    """How the majority labels came out on the training questions; where gold exists, how often they are right.

    ``questions``: training questions with ``min_votes`` chains or more (a vote could happen); ``labelled``: with a
    majority; ``answered``: share of their chains with an answer; ``agreement``: mean share of a labelled
    question's answers that are the majority's.
    """
    voted = {i: v for i, v in votes.items() if i in train and v.chains >= min_votes}
    labelled = {i: v for i, v in voted.items() if v.label}
    with_gold = [i for i in labelled if gold.get(i)]
    right = sum(is_correct(labelled[i].label, gold[i], spec) for i in with_gold)
    return {
        "label": mode,
        "min_votes": min_votes,
        "questions": len(voted),
        "labelled": len(labelled),
        "no_majority": len(voted) - len(labelled),
        # Of the chains of the questions voted on, how many gave an answer at all (the rest cannot vote).
        "answered": round(sum(v.answered for v in voted.values()) / max(1, sum(v.chains for v in voted.values())), 4),
        "agreement": round(sum(v.agreement for v in labelled.values()) / len(labelled), 4) if labelled else None,
        "labelled_with_gold": len(with_gold),
        "majority_correct": right,
        "majority_accuracy": round(right / len(with_gold), 4) if with_gold else None,
    }
