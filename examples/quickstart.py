"""Fine-tune-CoT from Python, offline, in about a minute on a laptop CPU.

    FTCOT_DATA=../shared/data python examples/quickstart.py [OUT_DIR]

The paper's teacher (text-davinci-002, replayed from its recorded outputs)
answers coin flip's training questions; its correct rationales for 12 of them
train tiny-gpt2 (a random-init model built from a config) for one epoch; the
student is scored on 8 test questions, then exported as a plain transformers
model and its training data as a Hub dataset. Last, the same pipeline as an
experiment. tiny-gpt2 checks the plumbing, not the method: its accuracy is
chance. Swap in student="gemma-270m" (and more questions and epochs) for a
real result.
"""

from __future__ import annotations

import sys
from pathlib import Path

import ftcot

# Step 6's experiment: what configs/*.yaml files hold, as a dict.
EXPERIMENT = {
    "name": "quickstart",
    "tasks": ["coin_flip"],
    "teachers": ["replay:text-davinci-002"],
    "methods": ["ft_cot"],
    "students": [{"spec": "tiny-gpt2", "epochs": 1, "lr": 1e-3, "max_length": 1024, "max_new_tokens": 32}],
    "train_sizes": [12],
    "evaluate": {"limit": 8, "max_new_tokens": 64},
}


def main(out: Path) -> None:
    # 1. Teacher: Zero-shot-CoT rationales, stored in a resumable run directory (a rerun asks nothing again).
    run = ftcot.teach("coin_flip", "replay:text-davinci-002", out / "teach")
    print(f"teach: {run.complete_chains} chains, teacher accuracy {100 * run.accuracy:.1f}%")

    # 2. Curate: keep the correct rationales of 12 seeded training questions; a quarter of them validate.
    data = ftcot.curate(run.out, out / "data", train_size=12, val_fraction=0.25)
    print(f"curate: {data.train_examples} train / {data.val_examples} val examples, dropped {data.dropped}")

    # 3. Train: any `ftcot train` option by its Python name. tiny-gpt2 reads bytes, hence max_length 1024.
    student = ftcot.train(data.out, out / "ckpt", student="tiny-gpt2", epochs=1, lr=1e-3, batch_size=4,
                          max_length=1024, max_new_tokens=32)
    print(f"train: best epoch {student.best_epoch}, val accuracy {100 * student.val_accuracy:.1f}%")

    # 4. Evaluate the best epoch on 8 test questions (the checkpoint carries its template).
    scores = ftcot.evaluate(student.out, "coin_flip", out / "eval", limit=8, max_new_tokens=64)
    print(f"evaluate: {100 * scores.accuracy:.1f}% ({scores.correct}/{scores.n}); "
          f"first output: {scores.predictions[0]['output'][:60]!r}")

    # 5. Take it elsewhere: a transformers directory (weights, tokenizer, generation config, and a model card
    #    with the evaluation found next to the checkpoint) and a Hub dataset of the training rows.
    model = ftcot.export_model(student.out, out / "export-model", force=True)
    dataset = ftcot.export_dataset(data.out, out / "export-dataset", force=True)
    print(f"export: {model.to} ({len(model.evaluations)} evaluation on its card), {dataset.to} {dataset.rows}")

    # 6. The same as one experiment: stages keyed by their settings, resumable, with results.md and report.html.
    experiment = ftcot.Experiment(EXPERIMENT, out=out / "experiment")
    print("plan:", [(s["kind"], s["status"]) for s in experiment.plan()])
    experiment.run()
    for row in experiment.results():  # pandas.DataFrame(experiment.results()) gives the table
        print(f"result: {row['method']:7} {row['student']:24} {row['task']} n={row['n']} {row['accuracy']:.2f}%")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("ftcot-quickstart"))
