"""A teach run sent by Ray workers (``--teacher-args workers=N``) against one sent by the run's own process.

The fixed-latency server of ``bench/teach_throughput.py`` (its own process, 200 ms a reply, any number at
once) answers ``ftcot teach`` on coin flip's 350 training questions, D=4 (2,800 completions), at 64 requests
in flight, with 0 (the baseline), 1 and 2 workers on a local Ray cluster; each run into a fresh directory.
Printed: each run's rate in completions/s (the run's own elapsed time, from its summary: the loop, not
Ray's start-up) over the baseline's, and the command's whole wall time. On one machine workers add a hop per
request; they pay where each worker's node has its own teacher (a GPU, a local server) or its own network.

    .venv/bin/python bench/teach_workers.py      # ~2 min
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def teach(url: str, out: Path, workers: int) -> tuple[float, float]:
    """(completions/s of the run, wall seconds of the command)."""
    args = [sys.executable, "-m", "ftcot", "teach", "--task", "coin_flip", "--teacher", "openai:bench-model",
            "--samples", "4", "--temperature", "0.7", "--out", str(out),
            "--teacher-args", f"base_url={url},concurrency=64"]
    if workers:
        args += ["--teacher-args", f"workers={workers},worker_cpus=0.1"]
    started = time.monotonic()
    result = subprocess.run(args, capture_output=True, text=True, check=False, cwd=ROOT,
                            env={**os.environ, "RAY_ADDRESS": "", "COLUMNS": "200"})
    wall = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"ftcot teach failed: {result.stderr.strip().splitlines()[-1]}")
    found = re.search(r"(\d+) new completions.*; ([\d.]+) s\.", result.stdout)
    if found is None:
        sys.exit(f"no summary in: {result.stdout[:500]}")
    return int(found.group(1)) / float(found.group(2)), wall


def main() -> None:
    server = subprocess.Popen([sys.executable, str(ROOT / "bench" / "teach_throughput.py"), "--serve"],
                              stdout=subprocess.PIPE, text=True)
    figures: dict[str, float] = {}
    try:
        url = f"http://127.0.0.1:{int(server.stdout.readline())}/v1"  # type: ignore[union-attr]
        with tempfile.TemporaryDirectory() as work:
            baseline = 0.0
            for workers in (0, 1, 2):
                rate, wall = teach(url, Path(work) / f"w{workers}", workers)
                baseline = baseline or rate
                figures[f"workers_{workers}_rate"] = round(rate, 1)
                figures[f"workers_{workers}_ratio"] = round(rate / baseline, 2)
                figures[f"workers_{workers}_wall_s"] = round(wall, 1)
                print(f"{workers} workers: {rate:7.1f} completions/s, {rate / baseline:4.2f}x the run's own "
                      f"process; the command took {wall:.1f} s", flush=True)
    finally:
        server.terminate()
        server.wait(10)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
