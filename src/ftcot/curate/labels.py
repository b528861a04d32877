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
task says so); the votes themselves are counted by :func:`ftcot.scoring.majority_votes`
(the teach stage's adaptive sampling counts them too). Pure functions over teacher
records in the shared JSONL format.
"""

from __future__ import annotations

from ftcot.errors import unknown_name
from ftcot.scoring import MIN_VOTES, Vote, is_correct
from ftcot.tasks import TaskSpec

LABEL_MODES = ("gold", "majority", "majority_and_gold")


def check_label_mode(mode: str) -> str:
    if mode not in LABEL_MODES:
        raise unknown_name("--label", mode, LABEL_MODES)
    return mode


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
