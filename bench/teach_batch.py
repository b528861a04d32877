"""Client-side cost of ``ftcot teach --batch`` against the normal request loop, same questions, same store format.

A provider takes minutes to hours to run a batch; what ftcot adds is building
the input files, recording the batches, downloading the results and storing
them. This measures that against the normal engine sending the same requests
one by one, in the same run: N synthetic coin-flip questions, two-stage
Zero-shot-CoT (2N completions), each against a local server that answers at
once (tests/teach/batch_server.py and tests/teach/stub_openai.py, aiohttp in a
thread of this process, so both figures include the server's own work). The
batch server runs every request on the first poll after validation; the poll
interval is 0.01 s. The last line printed is one JSON object.

    .venv/bin/python bench/teach_batch.py            # N = 2000, ~1 min on 2 cores
    .venv/bin/python bench/teach_batch.py --n 500
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.teach.* servers

from ftcot.tasks import load_task  # noqa: E402
from ftcot.tasks.synthetic import generate  # noqa: E402
from ftcot.teach.backends import make_teacher  # noqa: E402
from ftcot.teach.batch import BatchClient, teach_batch  # noqa: E402
from ftcot.teach.engine import teach  # noqa: E402
from ftcot.teach.store import TeachStore  # noqa: E402
from tests.teach.batch_server import BatchServer  # noqa: E402
from tests.teach.stub_openai import StubOpenAI  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ftcot-bench-batch-"))
    task_file = work / "coins.jsonl"
    task_file.write_text("".join(json.dumps({**r, "split": "test"}) + "\n" for r in generate("coin_flip", n=args.n)))
    task = load_task(str(task_file), work, "yes/no")

    normal = StubOpenAI()
    started = time.perf_counter()
    with TeachStore.open(work / "normal") as store:
        summary = teach(task, "test", make_teacher("openai:gpt-4o-mini", base_url=normal.base_url), "zs_cot",
                        concurrency=args.concurrency, store=store)
    engine_s = time.perf_counter() - started
    normal.close()
    assert summary.complete_chains == summary.chains, summary.lines()

    batches = BatchServer()
    client = BatchClient(batches.base_url, None)
    started = time.perf_counter()
    with TeachStore.open(work / "batch") as store:
        summary = teach_batch(task, "test", make_teacher("openai:gpt-4o-mini", base_url=batches.base_url), "zs_cot",
                              store=store, poll_interval_s=0.01, client=client)
    batch_s = time.perf_counter() - started
    client.close()
    batches.close()
    assert summary.complete_chains == summary.chains, summary.lines()

    completions = 2 * summary.chains
    print(f"{completions} completions: engine ({args.concurrency} in flight) {engine_s:.1f} s, "
          f"batch {batch_s:.1f} s ({len(summary.batches)} batches); batch / engine = {batch_s / engine_s:.2f}")
    print(json.dumps({"completions": completions, "engine_s": round(engine_s, 2), "batch_s": round(batch_s, 2),
                      "batch_over_engine": round(batch_s / engine_s, 3),
                      "batch_ms_per_completion": round(1000 * batch_s / completions, 3)}))


if __name__ == "__main__":
    main()
