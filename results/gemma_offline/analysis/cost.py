"""What the table cost: wall time of every finished stage, summed by part of the experiment (README, cost).

Reads the archived training and evaluation records (done.json's `seconds`; a training's train.json for its tokens/s and peak
RSS). Some stages shared the 2-core CPU with another job and ran several times slower; a training counts as
shared when its median epoch ran below half its student's median tokens/s, and its quiet time is estimated by
scaling its wall time to that median. Evaluations carry no rate and are summed as measured.

Usage: python cost.py [ARCHIVE_DIR]   (default: results/gemma_offline)
"""

import collections
import json
import statistics
import sys
from pathlib import Path

archive = Path(sys.argv[1] if len(sys.argv) > 1 else "results/gemma_offline")
stages = []
for done in sorted(archive.glob("stages/*/*/done.json")):
    stage = json.loads((done.parent / "stage.json").read_text())
    record = json.loads(done.read_text())
    train = done.parent / "train.json"
    stages.append((stage["label"], record["seconds"], json.loads(train.read_text()) if train.is_file() else None))


def rate(train: dict) -> float:
    return statistics.median(e["train_tokens_per_s"] for e in train["epochs"])


quiet_rate = {student: statistics.median(rate(t) for _, _, t in stages if t and t["student"] == student)
              for student in {t["student"] for _, _, t in stages if t}}


def part(label: str) -> str:
    student = "smollm2-135m" if "smollm2" in label else "gemma-270m"
    if "as is" in label:
        return f"{student} prompting baselines"
    if "questions (seed" in label:
        return f"{student} training-set subsets"
    if " seed 0 " not in label:
        return f"{student} seeds 1-2"
    return f"{student} main table (seed 0)"


wall, quiet, shared, peak = collections.Counter(), collections.Counter(), collections.Counter(), 0.0
for label, seconds, train in stages:
    key = part(label)
    wall[key] += seconds
    estimate = seconds
    if train:
        peak = max(peak, train.get("peak_rss_gb") or 0.0)
        if rate(train) < quiet_rate[train["student"]] / 2:
            shared[key] += 1
            estimate = seconds * rate(train) / quiet_rate[train["student"]]
    quiet[key] += estimate
print(f"{len(stages)} finished stages; median training rate: "
      + ", ".join(f"{s} {r:.0f} tokens/s" for s, r in sorted(quiet_rate.items())))
print(f"{'part':42} {'measured h':>10} {'quiet h':>8} {'shared trainings':>17}")
for key in sorted(wall):
    print(f"{key:42} {wall[key] / 3600:10.2f} {quiet[key] / 3600:8.2f} {shared[key]:17}")
print(f"{'all':42} {sum(wall.values()) / 3600:10.2f} {sum(quiet.values()) / 3600:8.2f} {sum(shared.values()):17}")
# A training records the peak of its process so far (ru_maxrss), and `ftcot run` runs every stage in one
# process: this is the run process's peak over the experiment, not one stage's.
print(f"peak RSS: {peak:.1f} GB")
