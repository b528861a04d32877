"""How much does picking the best of 20 epochs on the test set add to a student that only guesses?

The paper's reference code scored open students on the test split after each of 20 epochs and reported the
best epoch (spec §4, caveat). For a student at chance on a multiple-choice task, each epoch's test accuracy is
a binomial draw; the expected best of 20 independent draws is what that protocol reports for pure guessing.
(Epochs of one run are correlated, so the real inflation is smaller: this is an upper bound.) ftcot picks the
epoch on a validation slice of training questions and scores the test set once, so it has no such term.

Usage: python test_selection.py   (seeded Monte Carlo, 20,000 repetitions; a few seconds)
"""

import numpy as np

TASKS = {  # test questions, chance accuracy, the paper's GPT-2 124M Fine-tune-CoT
    "date_understanding": (111, 1 / 6, 25.23),
    "tracking_shuffled_objects": (225, 1 / 3, 38.67),
}
rng = np.random.default_rng(0)
for task, (n, chance, paper) in TASKS.items():
    draws = rng.binomial(n, chance, size=(20_000, 20)) / n * 100
    print(f"{task}: chance {100 * chance:.2f}; expected best of 20 epochs on test {draws.max(axis=1).mean():.2f} "
          f"(of 3: {draws[:, :3].max(axis=1).mean():.2f}); paper GPT-2 Fine-tune-CoT {paper:.2f}")
