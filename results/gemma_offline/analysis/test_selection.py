"""How much does picking the best of 20 epochs on the test set add to a student with no skill?

The paper's reference code scored open students on the test split after each of 20 epochs and reported the
best epoch (spec §4, caveat). ftcot picks the epoch on a validation slice of training questions and scores the
test set once, so it has no such term. Two bounds for what that protocol reports for a student with no skill:

- independent guesses: each epoch's test accuracy a fresh binomial draw at chance, best of 20 (seeded Monte
  Carlo). Epochs of one run are correlated, so this is a loose upper bound on the inflation;
- one letter to everything (what the students here do: shuffled objects "A" to 225 of 225): whichever letter
  each epoch picks, the best of 20 epochs is at most the best constant answer's share of the test split's gold
  answers (printed from the split itself).

With RUN_DIR, also prints the answers of each archived Fine-tune / Fine-tune-CoT evaluation of these tasks on
the full training set (how close each student is to one answer for everything).

Usage: FTCOT_DATA=../shared/data python test_selection.py [RUN_DIR]   (a second or so)
"""

import collections
import json
import os
import sys
from pathlib import Path

import numpy as np

from ftcot.tasks import load_task

TASKS = {  # chance accuracy, the paper's GPT-2 124M Fine-tune-CoT
    "date_understanding": (1 / 6, 25.23),
    "tracking_shuffled_objects": (1 / 3, 38.67),
    "strategy_qa": (1 / 2, 55.75),
}
root = Path(os.environ.get("FTCOT_DATA", "../shared/data"))
rng = np.random.default_rng(0)
for name, (chance, paper) in TASKS.items():
    task = load_task(name, root)
    gold = collections.Counter(task.samples[i].answer for i in task.split_indices("test"))
    n = sum(gold.values())
    draws = rng.binomial(n, chance, size=(20_000, 20)) / n * 100
    count = max(gold.values())
    best = " or ".join(f"'{a}'" for a in sorted(gold) if gold[a] == count)
    print(f"{name} ({n} test questions): chance {100 * chance:.2f}; independent guesses, expected best of 20 epochs "
          f"{draws.max(axis=1).mean():.2f} (of 3: {draws[:, :3].max(axis=1).mean():.2f}); one answer to everything, "
          f"best of any epochs at most {100 * count / n:.2f} ({best}: the gold answer of {count}; all: "
          f"{', '.join(f'{a} {c}' for a, c in sorted(gold.items()))}); paper GPT-2 Fine-tune-CoT {paper:.2f}")

if len(sys.argv) > 1:
    stages = {json.loads((s / "stage.json").read_text())["label"]: s
              for s in (Path(sys.argv[1]) / "stages" / "evaluate").iterdir()}
    for label, stage in sorted(stages.items()):
        if label.split(" ")[0] not in TASKS or label.split(" ")[1] not in ("ft", "ft_cot") or "questions (seed" in label:
            continue
        rows = [json.loads(line) for line in (stage / "predictions.jsonl").open()]
        answers = collections.Counter(r["prediction"] or "(none)" for r in rows)
        top, top_count = answers.most_common(1)[0]
        print(f"  {label.split(', from')[0]}: {sum(r['correct'] for r in rows)}/{len(rows)} right; "
              f"'{top}' to {top_count} ({100 * top_count / len(rows):.0f}%); {dict(answers.most_common())}")
