"""The teach store at scale: a million synthetic completions written, then exported.

A synthetic Zero-shot-CoT run (``--questions`` questions × ``--samples`` D ×
2 stages; 250,000 × 2 × 2 = 1,000,000 completions by default) is written into a
fresh ``teach.sqlite`` the way the engine writes it: group commits of
``--group`` replies each (``TeachStore.add_completions``, ``synchronous=FULL``,
one fsync per commit). For comparison, ``--baseline-rows`` rows are written
with one commit per reply (how the engine committed before the group commit)
into another store in the same run, and the rate of each is reported with
their ratio. Then ``ftcot teach export`` (:func:`ftcot.teach.export.export`)
writes the store's chains as JSONL.

Each phase runs in its own process so its peak RSS (``VmHWM``) is its own.
Reported: rows/s of each write path (generating the rows is timed apart and
not counted), export seconds and records/s, the store's and the export's size
on disk, and peak RSS of each phase. The last line is one JSON object.

    .venv/bin/python bench/teach_store_scale.py                    # 1M rows, a few minutes here
    .venv/bin/python bench/teach_store_scale.py --questions 25000  # 100k rows, quick
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

# Lengths like the recorded text-davinci-002 MultiArith rationales (~300 characters).
QUESTION = ("At the fair Adam bought {i} tickets. After riding the ferris wheel he had 4 tickets left. "
            "If each ticket cost 9 dollars, how much money did Adam spend riding the ferris wheel?")
RATIONALE = (" Adam bought {i} tickets. He had 4 tickets left after riding the ferris wheel, so he used "
             "{i} - 4 tickets. Each ticket cost 9 dollars, so he spent 9 times that many dollars riding "
             "the ferris wheel. Sample {m}.")


def peak_rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def settings(samples: int):
    from ftcot.teach.plan import TeachSettings

    return TeachSettings(task="synthetic", split="train", teacher="openai:synthetic", method="zs_cot",
                         samples=samples, temperature=0.7, max_tokens=128, trigger="Therefore, the answer (arabic numerals) is")


def question_rows(plan, index: int, samples: int) -> list:
    """The 2 × samples completions of one question, keyed as the engine keys them."""
    from ftcot.teach.plan import ANSWER
    from ftcot.teach.store import StoredCompletion

    now = time.time()
    prompt = plan.first_prompt(QUESTION.format(i=index))
    rows = []
    for m in range(samples):
        text = RATIONALE.format(i=index, m=m)
        first = StoredCompletion(
            key=plan.first_key(prompt, m, index), teacher="openai:synthetic", stage=plan.first_stage,
            sample_index=index, sample_number=m, prompt=prompt, max_tokens=128, temperature=0.7, stop=(),
            seed=m, text=text, finish_reason="stop", prompt_tokens=60 if m == 0 else 0, completion_tokens=50,
            latency_s=0.2, request_id=f"r{index}-{m}", created=now)
        second_prompt = plan.second_prompt(prompt, text)
        second = StoredCompletion(
            key=plan.second_key(second_prompt, index, plan.settings.answer_max_tokens), teacher="openai:synthetic", stage=ANSWER,
            sample_index=index, sample_number=m, prompt=second_prompt, max_tokens=32, temperature=0.0, stop=(),
            seed=None, text=f" {9 * (index - 4)}.", finish_reason="stop", prompt_tokens=120, completion_tokens=4,
            latency_s=0.2, request_id=f"a{index}-{m}", created=now)
        rows += [first, second]
    return rows


def write_phase(run_dir: Path, questions: int, samples: int, group: int, one_per_commit: bool) -> dict:
    from ftcot.teach.plan import Plan
    from ftcot.teach.store import TeachStore

    plan = Plan(settings(samples))
    build_s = write_s = 0.0
    written = 0
    with TeachStore.open(run_dir) as store:
        store.add_questions("synthetic", {}, ((i, QUESTION.format(i=i), str(9 * (i - 4))) for i in range(questions)))
        store.add_run(plan.settings.to_json())
        pending: list = []
        for index in range(questions):
            t0 = time.perf_counter()
            pending += question_rows(plan, index, samples)
            t1 = time.perf_counter()
            build_s += t1 - t0
            size = 1 if one_per_commit else group
            while len(pending) >= size or (index == questions - 1 and pending):
                batch, pending = pending[:size], pending[size:]
                written += store.add_completions(batch)
            write_s += time.perf_counter() - t1
    return {"rows": written, "write_s": round(write_s, 2), "rows_per_s": round(written / write_s),
            "build_s": round(build_s, 2), "store_mb": round(sum(p.stat().st_size for p in run_dir.glob("teach.sqlite*")) / 2**20, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def export_phase(run_dir: Path) -> dict:
    from ftcot.teach.export import export
    from ftcot.teach.store import TeachStore

    out = run_dir.parent / "export.jsonl"
    started = time.perf_counter()
    with TeachStore.open_readonly(run_dir) as store:
        result = export(store, out)
    seconds = time.perf_counter() - started
    return {"records": result.written, "incomplete": result.incomplete, "export_s": round(seconds, 1),
            "records_per_s": round(result.written / seconds), "export_mb": round(out.stat().st_size / 2**20, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def child(args: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=250_000)
    parser.add_argument("--samples", type=int, default=2, help="D: rationales per question")
    parser.add_argument("--group", type=int, default=256, help="replies per group commit")
    parser.add_argument("--baseline-rows", type=int, default=4000, help="rows written one commit each")
    parser.add_argument("--dir", default=None, help="where the stores go (default: the temp dir; same disk as /tmp)")
    parser.add_argument("--phase", choices=["write", "write-one", "export"], help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase in ("write", "write-one"):
        print(json.dumps(write_phase(Path(args.run_dir), args.questions, args.samples, args.group,
                                     args.phase == "write-one")))
        return
    if args.phase == "export":
        print(json.dumps(export_phase(Path(args.run_dir))))
        return

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        common = ["--samples", str(args.samples), "--group", str(args.group)]
        baseline_questions = max(1, args.baseline_rows // (2 * args.samples))
        one = child(["--phase", "write-one", "--run-dir", f"{tmp}/one", "--questions", str(baseline_questions), *common])
        print(f"one commit per reply:   {one['rows']:>9,} rows  {one['rows_per_s']:>8,} rows/s", flush=True)
        grouped = child(["--phase", "write", "--run-dir", f"{tmp}/run", "--questions", str(args.questions), *common])
        print(f"group commits of {args.group:<5} {grouped['rows']:>9,} rows  {grouped['rows_per_s']:>8,} rows/s "
              f"({grouped['write_s']} s writing, {grouped['build_s']} s making the rows), store "
              f"{grouped['store_mb']:,} MB, peak RSS {grouped['peak_rss_mb']:,} MB", flush=True)
        exported = child(["--phase", "export", "--run-dir", f"{tmp}/run"])
        print(f"export:                 {exported['records']:>9,} records in {exported['export_s']} s "
              f"({exported['records_per_s']:,}/s), {exported['export_mb']:,} MB, peak RSS "
              f"{exported['peak_rss_mb']:,} MB", flush=True)
    figures = {
        "rows": grouped["rows"], "group": args.group, "rows_per_s": grouped["rows_per_s"],
        "one_commit_per_reply_rows_per_s": one["rows_per_s"],
        "ratio_vs_one_commit_per_reply": round(grouped["rows_per_s"] / one["rows_per_s"], 1),
        "store_mb": grouped["store_mb"], "write_peak_rss_mb": grouped["peak_rss_mb"],
        "export_records": exported["records"], "export_s": exported["export_s"], "export_mb": exported["export_mb"],
        "export_peak_rss_mb": exported["peak_rss_mb"], "cpus": os.cpu_count() or 0,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
