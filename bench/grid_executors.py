"""``ftcot run`` serially against ``--executor ray`` on the same grid, each into a fresh directory.

The grid: the recorded teacher, tiny-gpt2 (built from a config, 2 epochs) on coin flip and last letter,
Fine-tune and Fine-tune-CoT, 8 training questions, 4 test questions, ``--seeds`` seeds (1: 14 stages of about
a second, so the figure is the executors' own cost — Ray's start-up, a task per stage — against their
parallelism; 2: the 8-cell grid of the tests, 26 stages; ``--epochs`` lengthens each training). Printed: each
run's wall time, Ray's over the serial one's, and Ray's cost per stage ((Ray − serial) / stages), measured in
this run; then both tables are compared (they must be equal: who runs a stage changes nothing).

    FTCOT_DATA=../shared/data .venv/bin/python bench/grid_executors.py [--cpus N] [--repeat 2] [--seeds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

STUDENT = {"spec": "tiny-gpt2", "epochs": 2, "batch_size": 4, "max_length": 1024, "max_new_tokens": 8,
           "dropout": 0.0, "device": "cpu"}
GRID = {"name": "grid", "tasks": ["coin_flip", "last_letter_concatenation"], "teachers": ["replay:text-davinci-002"],
        "methods": ["ft", "ft_cot"], "students": [STUDENT], "train_sizes": [8],
        "evaluate": {"limit": 4, "max_new_tokens": 8, "device": "cpu"}}


def run(config: dict, out: Path) -> float:
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "ftcot", "run", str(path), "--out", str(out)],
                            capture_output=True, text=True, check=False, env={**os.environ, "RAY_ADDRESS": ""})
    if result.returncode != 0:
        sys.exit(f"ftcot run failed: {result.stderr.strip().splitlines()[-1]}")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray cluster")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each executor")
    parser.add_argument("--seeds", type=int, default=1, help="seeds of each cell (2: 8 cells)")
    parser.add_argument("--epochs", type=int, default=STUDENT["epochs"], help="epochs of each training")
    args = parser.parse_args()
    grid = {**GRID, "seeds": list(range(args.seeds)), "students": [{**STUDENT, "epochs": args.epochs}]}
    stages = None
    figures: dict[str, list[float]] = {"serial_s": [], "ray_s": []}
    with tempfile.TemporaryDirectory() as work:
        for attempt in range(args.repeat):
            serial = Path(work) / f"serial{attempt}"
            ray = Path(work) / f"ray{attempt}"
            figures["serial_s"].append(round(run(grid, serial), 1))
            figures["ray_s"].append(round(run({**grid, "executor": {"kind": "ray", "local_cpus": args.cpus}}, ray), 1))
            same = (serial / "results.csv").read_bytes() == (ray / "results.csv").read_bytes()
            stages = len([p for p in (serial / "stages").glob("*/*") if p.is_dir()])
            per_stage = (figures["ray_s"][-1] - figures["serial_s"][-1]) / stages
            print(f"run {attempt + 1}: serial {figures['serial_s'][-1]} s, ray ({args.cpus} CPUs) "
                  f"{figures['ray_s'][-1]} s: {figures['ray_s'][-1] / figures['serial_s'][-1]:.2f}x, "
                  f"{per_stage:+.2f} s a stage over {stages} stages; "
                  f"results.csv {'identical' if same else 'DIFFERENT'}", flush=True)
            if not same:
                sys.exit("the two executors wrote different tables")
    print(json.dumps({**figures, "stages": stages}))


if __name__ == "__main__":
    main()
