"""Epoch-selection rules compared on validation only (results/epoch_selection/README.md).

For every training in runs/ (run.py), the validation questions are split at random, many times, into a judge
set and a selector set. Each rule picks an epoch from the selector set alone; the judge set's accuracy of that
epoch is the rule's score for that split (the judge stands in for the test split, which is never read). The
selector set has the size the default validation slice has (10% of the kept questions) or twice that; the judge
set is what is left once both fit, the same questions for every rule of a split.

Rules: accuracy on the selector set, ties to the lower loss (ftcot train's rule); loss alone; the same two on
twice as many questions; the last epoch; and the oracle (the judge's own best epoch: a ceiling, not a rule).

Usage: python results/epoch_selection/analyse.py [--epochs N] [--splits B]   (prints Markdown tables)
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path
from statistics import mean

HERE = Path(__file__).resolve().parent
DEFAULT_VAL_FRACTION = 0.1  # ftcot curate's --val-fraction default


def load_run(path: Path, epochs: int) -> tuple[dict, dict[int, dict[int, tuple[float, float, bool]]]]:
    """train.json, and by epoch (≤ ``epochs``) and question: (summed loss, loss units, correct)."""
    record = json.loads((path / "train.json").read_text())
    by_epoch: dict[int, dict[int, tuple[float, float, bool]]] = defaultdict(dict)
    for line in (path / "validation.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["epoch"] <= epochs and "correct" in row:
            by_epoch[row["epoch"]][row["sample_index"]] = (row["loss"], row["loss_units"], bool(row["correct"]))
    return record, dict(by_epoch)


def accuracy(rows: dict[int, tuple[float, float, bool]], questions: list[int]) -> float:
    return mean(rows[q][2] for q in questions)


def loss(rows: dict[int, tuple[float, float, bool]], questions: list[int]) -> float:
    return sum(rows[q][0] for q in questions) / sum(rows[q][1] for q in questions)


def by_accuracy(by_epoch: dict, questions: list[int]) -> int:
    """ftcot train's rule: highest accuracy, then lowest loss, then the earliest."""
    return min(by_epoch, key=lambda e: (-accuracy(by_epoch[e], questions), loss(by_epoch[e], questions), e))


def by_loss(by_epoch: dict, questions: list[int]) -> int:
    return min(by_epoch, key=lambda e: (loss(by_epoch[e], questions), e))


def small_size(record: dict) -> int:
    """The questions the default validation slice holds for this task (10% of the kept questions)."""
    kept = record["train_examples"] + record["val_examples"]
    return max(1, round(DEFAULT_VAL_FRACTION * kept))


RULES = ("accuracy, default slice", "loss, default slice", "accuracy, 2× slice", "loss, 2× slice", "last epoch",
         "oracle (judge's best)")


def judge_scores(by_epoch: dict, small: int, splits: int, seed: int = 0) -> tuple[dict[str, list[float]], int]:
    """Each rule's judge accuracy (%) on every split, and the judge set's size."""
    questions = sorted(set.intersection(*(set(rows) for rows in by_epoch.values())))
    judge_size = len(questions) - 2 * small
    if judge_size < 10:
        raise SystemExit(f"{len(questions)} validation questions leave {judge_size} to judge with; need ≥ 10")
    rng = random.Random(seed)
    scores: dict[str, list[float]] = {rule: [] for rule in RULES}
    last = max(by_epoch)
    for _ in range(splits):
        order = questions[:]
        rng.shuffle(order)
        judge, one, two = order[:judge_size], order[judge_size:judge_size + small], order[judge_size:]
        picks = {
            RULES[0]: by_accuracy(by_epoch, one), RULES[1]: by_loss(by_epoch, one),
            RULES[2]: by_accuracy(by_epoch, two), RULES[3]: by_loss(by_epoch, two), RULES[4]: last,
            RULES[5]: max(by_epoch, key=lambda e: (accuracy(by_epoch[e], judge), -e)),
        }
        for rule, epoch in picks.items():
            scores[rule].append(100 * accuracy(by_epoch[epoch], judge))
    return scores, judge_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6, help="choose among epochs 1..N (3: the configs' default)")
    parser.add_argument("--splits", type=int, default=2000)
    args = parser.parse_args()
    runs = sorted(p for p in (HERE / "runs").iterdir() if (p / "validation.jsonl").is_file())
    print(f"Epochs 1–{args.epochs}; {args.splits} selector/judge splits per training; judge accuracy (%) of the "
          f"epoch each rule picks, mean over splits.\n")
    print("| training | questions: validation / default slice / judge | val accuracy by epoch | "
          + " | ".join(RULES) + " |")
    print("|---" * (3 + len(RULES)) + "|")
    differences: dict[str, list[float]] = {rule: [] for rule in RULES[1:]}
    for run in runs:
        record, by_epoch = load_run(run, args.epochs)
        small = small_size(record)
        scores, judge_size = judge_scores(by_epoch, small, args.splits)
        all_questions = sorted(by_epoch[1])
        curve = " / ".join(f"{100 * accuracy(by_epoch[e], all_questions):.0f}" for e in sorted(by_epoch))
        cells = [f"{mean(scores[rule]):.1f}" for rule in RULES]
        print(f"| {run.name} | {len(all_questions)} / {small} / {judge_size} | {curve} | " + " | ".join(cells) + " |")
        for rule in RULES[1:]:
            differences[rule].append(mean(s - d for s, d in zip(scores[rule], scores[RULES[0]])))
    print(f"\nAgainst ftcot train's rule (accuracy on the default slice), mean difference in judge accuracy over "
          f"the {len(runs)} trainings (points; the range: the trainings' lowest and highest):\n")
    print("| rule | mean difference | lowest | highest |")
    print("|---|---|---|---|")
    for rule, values in differences.items():
        print(f"| {rule} | {mean(values):+.2f} | {min(values):+.2f} | {max(values):+.2f} |")


if __name__ == "__main__":
    main()
