"""Epoch selection, measured on validation only (results/epoch_selection/README.md).

Gemma 3 270M, LoRA, Fine-tune-CoT on the recorded teacher (the settings of configs/gemma_offline.yaml) on the
multi-step tasks, with two changes: a validation slice of 35% of the kept questions (--val-fraction 0.35; the
config's 10% gives 18-33 questions) and 6 epochs. Each training writes validation.jsonl: every validation
row's loss and, for every question, the generated answer and whether it is right, at every epoch. analyse.py
then draws many selector/judge splits of that slice and compares selection rules by the judge's accuracy of the
epoch each rule picks. The test split is not read.

Usage (resumable: a rerun skips what is done, and a training resumes after its last finished epoch):
    FTCOT_DATA=../shared/data .venv/bin/python results/epoch_selection/run.py [RUN_DIR]
RUN_DIR defaults to ~/.cache/ftcot-runs/epoch_selection; each finished training's train.json and
validation.jsonl are copied to results/epoch_selection/runs/TASK-seedS/.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import ftcot

# shortest training first (last letter ~25 min here, SingleEq ~80), so a stopped run has the most trainings
TASKS = ("last_letter_concatenation", "date_understanding", "multiarith", "single_eq")
SEEDS = (0, 1)
TRAIN = {"student": "gemma-270m", "lora": True, "lr": 3e-4, "batch_size": 8, "max_length": 512, "epochs": 6}
HERE = Path(__file__).resolve().parent


def main() -> None:
    run_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.home() / ".cache/ftcot-runs/epoch_selection"
    for seed in SEEDS:  # every task's first seed before any second one: a stopped run has all tasks once
        for task in TASKS:
            kept = HERE / "runs" / f"{task}-seed{seed}"
            if (kept / "train.json").is_file():
                continue
            started = time.time()
            teach = run_dir / "teach" / task
            ftcot.teach(task, "replay:text-davinci-002", teach, split="train", method="zs_cot")
            data = run_dir / "data" / f"{task}-seed{seed}"
            if not (data / "curation.json").is_file():
                ftcot.curate(teach, data, template="ft_cot", val_fraction=0.35, val_seed=seed)
            ckpt = run_dir / "train" / f"{task}-seed{seed}"
            result = ftcot.train(data, ckpt, seed=seed, **TRAIN)
            kept.mkdir(parents=True, exist_ok=True)
            record = {**result.record, "data_dir": f"RUN_DIR/data/{data.name}"}  # no home path in the repository
            (kept / "train.json").write_text(json.dumps(record, indent=1) + "\n")
            shutil.copy2(ckpt / "validation.jsonl", kept / "validation.jsonl")
            accuracy = [round(100 * e["val_accuracy"], 1) for e in result.epochs]
            print(f"{task} seed {seed}: val accuracy by epoch {accuracy} ({time.time() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
