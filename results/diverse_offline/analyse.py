"""Diverse reasoning and logit distillation, with intervals (results/diverse_offline/FINDINGS.md).

Reads the archives `ftcot run --archive` wrote (lineage.json: every cell's accuracy and its predictions) and
prints Markdown:

1. accuracy by D per task, student and training-set size (mean over seeds; each seed's value);
2. D = 8 against D = 1 and against the greedy teacher, at equal questions: the mean difference over seeds
   with its 95% interval (t over seeds where there are several, else the paired test's normal one) and
   McNemar's exact test pooled over the seeds' test questions (each seed's student answers the same 150);
3. whether that gain is larger at 32 questions than at 128;
4. each Fine-tune-CoT + KD cell (the `-k5` teachers' ft_cot_kd) against the Fine-tune-CoT cell trained on the
   same rationales (same task, student, D, seed and size; the training rows are checked to be the same text),
   paired.

Usage: python results/diverse_offline/analyse.py [--archive results/diverse_offline]
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path
from statistics import mean, stdev

from ftcot.jsonl import read_jsonl
from ftcot.report.statistics import Z95, mcnemar_exact, p_text

HERE = Path(__file__).resolve().parent
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}  # Student's t, 97.5% quantile, by degrees of freedom


def cells(archive: Path) -> list[dict]:
    """lineage.json's cells, each with ``correct``: sample index → right or not."""
    found = []
    for cell in json.loads((archive / "lineage.json").read_text()):
        predictions = archive / cell["predictions"]
        if not predictions.is_file():
            continue
        cell["correct"] = {r["sample_index"]: bool(r["correct"]) for _, r in read_jsonl(predictions)}
        cell["archive"] = archive
        found.append(cell)
    return found


def order(key: tuple) -> tuple:
    """Names as they are, numbers as numbers, None (the whole training set) last."""
    return tuple((1, 0, "") if k is None else (0, k, "") if isinstance(k, int) else (0, 0, k) for k in key)


def d_name(D: int | None) -> str:
    return "greedy" if D is None else f"D={D}"


def by_d_table(found: list[dict]) -> list[str]:
    groups: dict[tuple, dict[int | None, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for c in found:
        groups[(c["task"], c["student"], c["method"], c["train_size"])][c["D"]][c["seed"]] = c["accuracy"]
    ds = sorted({c["D"] for c in found}, key=lambda d: -1 if d is None else d)
    lines = ["| task | student | method | questions | " + " | ".join(d_name(d) for d in ds) + " |",
             "|---" * (4 + len(ds)) + "|"]
    for (task, student, method, size), by_d in sorted(groups.items(), key=lambda kv: order(kv[0])):
        row = []
        for d in ds:
            seeds = by_d.get(d, {})
            if not seeds:
                row.append("")
            elif len(seeds) == 1:
                row.append(f"{next(iter(seeds.values())):.2f}")
            else:
                row.append(f"{mean(seeds.values()):.2f} ({' / '.join(f'{seeds[s]:.1f}' for s in sorted(seeds))})")
        lines.append(f"| {task} | {student} | {method} | {size} | " + " | ".join(row) + " |")
    return lines


def paired(a: list[dict], b: list[dict]) -> tuple[float, float, float, int, int, int, int] | None:
    """A against B over the seeds both have: (mean difference in points, interval low, high, seeds, only A,
    only B, questions), the counts pooled over seeds."""
    seeds = sorted({c["seed"] for c in a} & {c["seed"] for c in b})
    if not seeds:
        return None
    a_of, b_of = {c["seed"]: c for c in a}, {c["seed"]: c for c in b}
    differences, only_a, only_b, questions = [], 0, 0, 0
    for seed in seeds:
        x, y = a_of[seed]["correct"], b_of[seed]["correct"]
        shared = x.keys() & y.keys()
        only_a += sum(x[q] and not y[q] for q in shared)
        only_b += sum(y[q] and not x[q] for q in shared)
        questions += len(shared)
        differences.append(100 * (sum(x[q] for q in shared) - sum(y[q] for q in shared)) / len(shared))
    centre = mean(differences)
    if len(seeds) > 1:
        half = T975[len(seeds) - 1] * stdev(differences) / math.sqrt(len(seeds))
    else:  # one seed: the paired difference's normal interval over its questions
        n = questions
        variance = (only_a + only_b) / n - ((only_a - only_b) / n) ** 2
        half = 100 * Z95 * math.sqrt(max(variance, 0.0) / n)
    return centre, centre - half, centre + half, len(seeds), only_a, only_b, questions


def comparison_table(found: list[dict], method: str, pairs: list[tuple[int | None, int | None]]) -> list[str]:
    groups: dict[tuple, dict[int | None, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for c in found:
        if c["method"] == method:
            groups[(c["task"], c["student"], c["train_size"])][c["D"]].append(c)
    lines = ["| task | student | questions | comparison | difference (points) | 95% interval | seeds | "
             "right only in the first / only in the second | McNemar p (pooled) |", "|---" * 9 + "|"]
    for (task, student, size), by_d in sorted(groups.items(), key=lambda kv: order(kv[0])):
        for first, second in pairs:
            result = paired(by_d.get(first, []), by_d.get(second, []))
            if result is None:
                continue
            centre, low, high, seeds, only_a, only_b, _ = result
            lines.append(f"| {task} | {student} | {size} | {d_name(first)} − {d_name(second)} | {centre:+.2f} | "
                         f"[{low:+.1f}, {high:+.1f}] | {seeds} | {only_a} / {only_b} | "
                         f"{p_text(mcnemar_exact(only_a, only_b))} |")
    return lines


def gain_by_size_table(found: list[dict], method: str, first: int | None, second: int | None) -> list[str]:
    """The gain of D = ``first`` over ``second`` at each training-set size, and the smallest size's gain minus
    the largest's: is diverse reasoning worth more where questions are scarce (the paper's claim)? The two
    gains are independent (other questions, other students), so the difference's interval combines theirs."""
    groups: dict[tuple, dict[int, dict[int | None, list[dict]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for c in found:
        if c["method"] == method and c["train_size"] is not None:
            groups[(c["task"], c["student"])][c["train_size"]][c["D"]].append(c)
    lines = [f"| task | student | gain of {d_name(first)} over {d_name(second)}, by questions | smallest − largest "
             f"size | 95% interval |", "|---" * 5 + "|"]
    for (task, student), by_size in sorted(groups.items(), key=lambda kv: order(kv[0])):
        gains = {size: paired(by_d.get(first, []), by_d.get(second, [])) for size, by_d in sorted(by_size.items())}
        gains = {size: g for size, g in gains.items() if g is not None}
        if len(gains) < 2:
            continue
        small, large = gains[min(gains)], gains[max(gains)]
        half = math.hypot((small[2] - small[1]) / 2, (large[2] - large[1]) / 2)
        shown = ", ".join(f"{size}: {g[0]:+.2f} [{g[1]:+.1f}, {g[2]:+.1f}]" for size, g in gains.items())
        lines.append(f"| {task} | {student} | {shown} | {small[0] - large[0]:+.2f} | "
                     f"[{small[0] - large[0] - half:+.1f}, {small[0] - large[0] + half:+.1f}] |")
    return lines


RUNS = Path.home() / ".cache/ftcot-runs"  # where results/diverse_offline/README.md runs the experiments


def training_text(cell: dict) -> list[tuple[str, str]] | None:
    """The cell's training rows (prompt, completion), from its experiment directory (an archive keeps no
    train.jsonl); None where that directory is gone."""
    path = RUNS / cell["archive"].name / cell["training_rows"]
    return [(r["prompt"], r["completion"]) for _, r in read_jsonl(path)] if path.is_file() else None


def same_rationales(a: dict, b: dict) -> str:
    """Whether two cells trained on the same rows: their text where the experiment directories are here, else
    their curation summaries (kept rationales, examples, validation questions)."""
    texts = training_text(a), training_text(b)
    if None not in texts:
        return "yes" if texts[0] == texts[1] else "NO"

    def summary(cell: dict) -> dict:
        curate = cell["archive"] / Path(cell["training_rows"]).parent / "curation.json"
        record = json.loads(curate.read_text())
        # How many were dropped, not why: a stage curated by older code names and splits the reasons otherwise.
        dropped = sum((record.get("dropped") or {}).values())
        return {**{k: record.get(k) for k in ("kept", "train_examples", "val_questions", "rationales")},
                "dropped": dropped}

    return "same summary" if summary(a) == summary(b) else "NO"


def kd_table(found: list[dict]) -> list[str]:
    text_only = {(c["task"], c["student"], c["D"], c["seed"], c["train_size"]): c for c in found
                 if c["method"] == "ft_cot"}
    lines = ["| task | questions | D | seed | Fine-tune-CoT + KD | Fine-tune-CoT | difference | same rationales | "
             "right only with KD / only without | McNemar p |", "|---" * 10 + "|"]
    pooled: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for c in sorted(found, key=lambda c: order((c["task"], c["train_size"], c["D"], c["seed"]))):
        twin = text_only.get((c["task"], c["student"], c["D"], c["seed"], c["train_size"]))
        if c["method"] != "ft_cot_kd" or twin is None:
            continue
        same = same_rationales(c, twin)
        _, _, _, _, only_kd, only_text, _ = paired([c], [twin])
        pooled[(c["task"], c["train_size"])][0] += only_kd
        pooled[(c["task"], c["train_size"])][1] += only_text
        lines.append(f"| {c['task']} | {c['train_size']} | {d_name(c['D'])} | {c['seed']} | {c['accuracy']:.2f} | "
                     f"{twin['accuracy']:.2f} | {c['accuracy'] - twin['accuracy']:+.2f} | {same} | "
                     f"{only_kd} / {only_text} | {p_text(mcnemar_exact(only_kd, only_text))} |")
    lines += ["", "Pooled over D and seeds: | task | questions | right only with KD / only without | McNemar p |",
              "|---|---|---|---|"]
    lines += [f"| {task} | {size} | {a} / {b} | {p_text(mcnemar_exact(a, b))} |"
              for (task, size), (a, b) in sorted(pooled.items(), key=lambda kv: order(kv[0]))]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=HERE)
    args = parser.parse_args()
    found = cells(args.archive)
    print("Test accuracy (%) by rationales per question (greedy: the teacher's one greedy rationale); several "
          "seeds: mean (each seed).\n")
    print("\n".join(by_d_table(found)))
    print("\nAt equal questions, Fine-tune-CoT on D = 8 sampled rationales against D = 1 and against the greedy "
          "rationale:\n")
    print("\n".join(comparison_table(found, "ft_cot", [(8, 1), (8, None), (4, 1)])))
    print("\nIs the gain larger where questions are scarce? D = 8 over D = 1, and over the greedy rationale, by "
          "training-set size:\n")
    print("\n".join(gain_by_size_table(found, "ft_cot", 8, 1)))
    print()
    print("\n".join(gain_by_size_table(found, "ft_cot", 8, None)))
    print("\nFine-tune-CoT + KD (λ = 1, the teacher's top-5) against Fine-tune-CoT on the same rationales:\n")
    print("\n".join(kd_table(found)))


if __name__ == "__main__":
    main()
