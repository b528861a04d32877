"""The curate stage's settings: one model from which ``ftcot curate``, ``curate:`` in a config and ``ftcot.curate()``
are derived (:mod:`ftcot.settings`).

The command line folds groups of settings into compound options: ``--label
majority:2`` (the label and the votes a majority needs), ``--drop
truncated:128,no-reasoning:5`` (the quality filters on, with their thresholds),
``--decontaminate drop,ngram=8,against=[my_test.jsonl]`` (the mode and the
overlap rule) and ``--train-size 32:1`` (a seeded subset of training
questions). An experiment's ``curate:`` block is this model less what the
experiment plans itself (template, task, training-set size, D).
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from ftcot.curate.decontaminate import DEFAULT_MAX_DF, DEFAULT_MIN_OVERLAP, DEFAULT_NGRAM
from ftcot.curate.filters import MIN_WORDS, TEACHER_TOKEN_LIMIT
from ftcot.settings import Compound, Settings, option, parse_args
from ftcot.teach.reasoning import RATIONALE_SOURCES

LabelMode = Literal["gold", "majority", "majority_and_gold"]
FILTERS = {"truncated": ("drop_truncated", "teacher_token_limit"), "repetitive": ("drop_repetitive", None),
           "no-reasoning": ("drop_no_reasoning", "min_rationale_words")}


def _label(text: str) -> dict[str, Any]:
    mode, sep, votes = text.partition(":")
    values: dict[str, Any] = {"label": mode.strip()}
    if sep:
        try:
            values["min_votes"] = int(votes)
        except ValueError:
            raise ValueError("expected MODE or MODE:VOTES, e.g. majority:2") from None
    return values


def _drop(text: str) -> dict[str, Any]:
    values: dict[str, Any] = {flag: False for flag, _ in FILTERS.values()}
    for part in (p.strip() for p in text.split(",")):
        if not part or part == "none":
            continue
        name, sep, number = part.partition(":")
        if name not in FILTERS:
            raise ValueError(f"unknown filter {name!r}; use truncated[:TOKENS], repetitive, no-reasoning[:WORDS] "
                             f"or none")
        flag, threshold = FILTERS[name]
        values[flag] = True
        if sep:
            if threshold is None:
                raise ValueError(f"{name} takes no number")
            try:
                values[threshold] = int(number)
            except ValueError:
                raise ValueError(f"{name}:{number}: expected a whole number") from None
    return values


def _decontaminate(text: str) -> dict[str, Any]:
    mode, _, rest = text.partition(",")
    args = parse_args(rest, ("against", "ngram", "max_df", "min_overlap"))
    if "against" in args and not isinstance(args["against"], list):
        args["against"] = [args["against"]]
    return {"decontaminate": mode.strip(), **{f"decontaminate_{k}": v for k, v in args.items()}}


def _train_size(text: str) -> dict[str, Any]:
    size, sep, seed = text.partition(":")
    try:
        return {"train_size": int(size), **({"subset_seed": int(seed)} if sep else {})}
    except ValueError:
        raise ValueError("expected N or N:SEED, e.g. 32 or 32:1") from None


COMPOUNDS = (
    Compound("label", "The answer a rationale must reach: gold (the paper), majority (of the teacher's D ≥ 2 answers: "
                      "no gold needed) or majority_and_gold; MODE:VOTES sets the chains a majority needs (default "
                      "2; 1: a single chain's answer is its question's label)", "MODE[:VOTES]", _label),
    Compound("train-size", "Keep a seeded subset of N training questions (the training-set-size ablation); "
                           "N:SEED picks the subset's seed (default 0)", "N[:SEED]", _train_size),
    Compound("decontaminate", "Training questions that overlap a test question (the 12 benchmarks', and against=[FILE,"
                              "…] with a 'question' column): warn, drop or off, then the rule's settings: ngram=13 "
                              "(word n-grams), max_df=10 (ignore n-grams in more test questions), min_overlap=0 "
                              "(0.9: near-copies only)", "MODE[,NAME=VALUE…]", _decontaminate),
    Compound("drop", "The quality filters on: truncated[:TOKENS] (cut at the teacher's limit, default 128), repetitive "
                     "(loops), no-reasoning[:WORDS] (fewer words than that, default 5); none for none (default: "
                     "no-reasoning)", "FILTER[,FILTER…]", _drop),
)


class CurateConfig(Settings):
    """``ftcot curate``: keep the teacher's correct rationales and lay them out for a student."""

    template: Literal["ft_cot", "ft", "ft_cot_natural", "ft_dss"] = option(
        "ft_cot", help="ft_cot, ft, ft_cot_natural or ft_dss (distilling step-by-step: a label and a rationale row "
                       "per correct rationale)")
    task: Optional[str] = option(None, help="Task key or file (default: the teach run's task)")
    label: LabelMode = option("gold", help="The answer a rationale must reach", cli="group:label")
    min_votes: int = option(2, help="Chains that must give the majority answer (1: a single chain's answer is its "
                                    "question's label, the teacher trusted, no gold)", cli="group:label", ge=1)
    max_per_question: Optional[int] = option(None, help="Keep at most this many correct rationales a question", ge=1)
    max_rationale_tokens: Optional[int] = option(None, help="Drop longer rationales", ge=1)
    val_fraction: float = option(0.1, help="Share of training questions held out for validation", ge=0, lt=1)
    val_seed: int = option(0, help="Seed of the validation slice", ge=0)
    train_size: Optional[int] = option(None, help="A seeded subset of this many training questions",
                                       cli="group:train-size", ge=1)
    subset_seed: int = option(0, help="The subset's seed", cli="group:train-size", ge=0)
    split_scheme: Literal["default", "template"] = option("default", help="default or template")
    decontaminate: Literal["warn", "drop", "off"] = option("warn", help="Training questions that overlap a test "
                                                                        "question: warn, drop or off",
                                                           cli="group:decontaminate")
    decontaminate_against: list[str] = option([], help="More test sets to check against (JSONL/CSV with a "
                                                       "'question' column)", cli="group:decontaminate")
    decontaminate_ngram: int = option(DEFAULT_NGRAM, help="Word n-gram length of the overlap rule (open-r1: 8)",
                                      cli="group:decontaminate", ge=1)
    decontaminate_max_df: int = option(DEFAULT_MAX_DF, help="Ignore n-grams found in more test questions than this "
                                                            "(a benchmark's template text)",
                                       cli="group:decontaminate", ge=1)
    decontaminate_min_overlap: float = option(DEFAULT_MIN_OVERLAP, help="Flag a pair only when the training question "
                                              "has this share of the test question's distinctive n-grams",
                                              cli="group:decontaminate", ge=0, le=1)
    drop_truncated: bool = option(False, help="Drop rationales cut at the teacher's token limit", cli="group:drop")
    drop_repetitive: bool = option(False, help="Drop rationales that loop", cli="group:drop")
    drop_no_reasoning: bool = option(True, help="Drop rationales that only state the answer", cli="group:drop")
    min_rationale_words: int = option(MIN_WORDS, help="Words a rationale needs (drop_no_reasoning)",
                                      cli="group:drop", ge=1)
    teacher_token_limit: int = option(TEACHER_TOKEN_LIMIT, help="The teacher's rationale token limit, for "
                                                                "drop_truncated when it gave no finish reason",
                                      cli="group:drop", ge=1)
    rationalized: bool = option(True, help="Use the run's rationalized rationales (teach --rationalize) for "
                                           "questions left without one")
    answer_type: Optional[str] = option(None, help="For your own task file: number, letter, yes/no, text")
    samples: Optional[int] = option(None, help="Use only each question's first D rationales: what a teach run "
                                               "of D samples would have drawn (an experiment's diverse D)",
                                    cli="hidden", ge=1)
    rationale: Optional[Literal[RATIONALE_SOURCES]] = option(  # type: ignore[valid-type]
        None, help="Reasoning teachers: the rationale is the visible answer, the reasoning or both (default: the "
                   "teach run's)", cli="hidden")
