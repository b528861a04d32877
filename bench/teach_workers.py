"""A teach run sent by Ray workers (``--teacher-args workers=N``) against one sent by the run's own process.

The fixed-latency server of ``bench/teach_throughput.py`` (its own process, 200 ms a reply, any number at
once) answers ``ftcot teach`` on coin flip's 350 training questions, D=4 (2,800 completions), at 64 requests
in flight, with 0 (the baseline), 1 and 2 workers on a local Ray cluster; each run into a fresh directory.
Printed: each run's rate in completions/s (between its first and last stored completion, from the
store's timestamps: the loop, not Ray's start-up) over the baseline's, and the command's whole wall time. On one machine workers add a hop per
request; they pay where each worker's node has its own teacher (a GPU, a local server) or its own network.

    .venv/bin/python bench/teach_workers.py      # ~2 min
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from teach_throughput import serving  # this folder's: the same fixed-latency server

ROOT = Path(__file__).resolve().parent.parent


def teach(url: str, out: Path, workers: int, concurrency: int = 64,
          server_concurrency: int | None = None) -> tuple[float, float]:
    """(completions/s of the run, wall seconds of the command)."""
    extra = f",server_concurrency={server_concurrency}" if server_concurrency else ""
    args = [sys.executable, "-m", "ftcot", "teach", "--task", "coin_flip", "--teacher", "openai:bench-model",
            "--samples", "4", "--temperature", "0.7", "--out", str(out),
            "--teacher-args", f"base_url={url},concurrency={concurrency}{extra}"]
    if workers:
        args += ["--teacher-args", f"workers={workers},worker_cpus=0.1"]
    started = time.monotonic()
    result = subprocess.run(args, capture_output=True, text=True, check=False, cwd=ROOT,
                            env={**os.environ, "RAY_ADDRESS": "", "COLUMNS": "200"})
    wall = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"ftcot teach failed: {result.stderr.strip().splitlines()[-1]}")
    return _store_rate(out / "teach.sqlite"), wall


def _store_rate(store: Path) -> float:
    """Completions/s between the run's first and last stored completion (the store's own timestamps: the
    summary's elapsed time is rounded to 0.1 s, too coarse for runs of 2-3 s)."""
    with contextlib.closing(sqlite3.connect(store)) as db:
        count, first, last = db.execute("SELECT COUNT(*), MIN(created), MAX(created) FROM completions").fetchone()
    if not count or last <= first:
        sys.exit(f"{store}: no completions stored over a measurable time")
    return (count - 1) / (last - first)


def scaling(servers: int = 4, capacity: int = 16) -> dict[str, float]:
    """Workers that each drive a server of their own (base_url lists are shared out among the workers): 1 worker
    on one server against ``servers`` workers on one each, every server answering ``capacity`` requests at once
    after 200 ms (the rest queue), the run keeping them full."""
    with serving(servers, capacity) as served, tempfile.TemporaryDirectory() as work:
        urls = [url for url, _ in served]
        rates = {}
        for count in (1, servers):
            listed = urls[0] if count == 1 else "[" + ",".join(urls[:count]) + "]"
            rates[count], _ = teach(listed, Path(work) / f"s{count}", count,
                                    concurrency=capacity * count, server_concurrency=capacity)
    ratio = rates[servers] / rates[1]
    print(f"1 worker on 1 server: {rates[1]:.1f} completions/s; {servers} workers on {servers} servers: "
          f"{rates[servers]:.1f} ({ratio:.2f}x)", flush=True)
    return {"one_worker_one_server_rate": round(rates[1], 1),
            f"{servers}_workers_{servers}_servers_rate": round(rates[servers], 1), "scaling": round(ratio, 2)}


def main() -> None:
    figures: dict[str, float] = {}
    with serving(1) as [(url, _)], tempfile.TemporaryDirectory() as work:
        baseline = 0.0
        for workers in (0, 1, 2):
            rate, wall = teach(url, Path(work) / f"w{workers}", workers)
            baseline = baseline or rate
            figures[f"workers_{workers}_rate"] = round(rate, 1)
            figures[f"workers_{workers}_ratio"] = round(rate / baseline, 2)
            figures[f"workers_{workers}_wall_s"] = round(wall, 1)
            print(f"{workers} workers: {rate:7.1f} completions/s, {rate / baseline:4.2f}x the run's own "
                  f"process; the command took {wall:.1f} s", flush=True)
    figures.update(scaling())
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
