"""Arithmetic tasks: does the Fine-tune-CoT student set the problem up wrongly, or compute wrongly?

Reads the test predictions of every Fine-tune-CoT evaluation of an arithmetic task in an `ftcot run`
directory and checks each equation the student writes (`a + b = c`, also -, *, x, /; two or more
operands). Prints, per evaluation: equations written, the share whose result is wrong, the outputs
with a *right set-up* (an equation whose operands and operators evaluate to the gold answer) and how
many of those wrote a wrong result; the same for the teacher's training rationales as a reference.

Usage: python arithmetic_errors.py RUN_DIR   (an `ftcot run` directory of configs/gemma_offline.yaml)
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from ftcot.jsonl import read_jsonl

ARITHMETIC = ("single_eq", "addsub", "multiarith", "svamp")
NUMBER = r"\d+(?:\.\d+)?"
EQUATION = re.compile(rf"({NUMBER}(?:\s*[-+*x×/]\s*{NUMBER})+)\s*=\s*({NUMBER})")


def value(expression: str) -> float | None:
    try:
        return float(eval(expression.replace("x", "*").replace("×", "*"), {"__builtins__": {}}))  # digits and operators only
    except (ZeroDivisionError, SyntaxError):
        return None


def close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


def check(text: str, gold: float) -> tuple[int, int, bool, bool]:
    """(equations, wrong results, a right set-up exists, a right set-up with a wrong result exists)."""
    equations = wrong = 0
    setup = setup_wrong = False
    for expression, result in EQUATION.findall(text.replace(",", "")):
        truth = value(expression)
        if truth is None:
            continue
        equations += 1
        is_wrong = not close(float(result), truth)
        wrong += is_wrong
        if close(truth, gold):
            setup = True
            setup_wrong |= is_wrong
    return equations, wrong, setup, setup_wrong


def summarise(label: str, rows: list[tuple[str, float]]) -> None:
    totals = [check(text, gold) for text, gold in rows]
    equations = sum(t[0] for t in totals)
    wrong = sum(t[1] for t in totals)
    setups = sum(t[2] for t in totals)
    setups_wrong = sum(t[3] for t in totals)
    print(
        f"{label}: {len(rows)} texts, {equations} equations, {wrong} wrong "
        f"({100 * wrong / max(equations, 1):.0f}%); right set-up in {setups} "
        f"({100 * setups / len(rows):.0f}%), of which {setups_wrong} wrote a wrong result"
    )


def main(run: Path) -> None:
    for stage in sorted((run / "stages" / "evaluate").iterdir()):
        label = json.loads((stage / "stage.json").read_text())["label"]
        task = label.split(" ")[0]
        if task not in ARITHMETIC or " ft_cot " not in label or not (stage / "predictions.jsonl").exists():
            continue
        rows = [(r["output"], float(r["answer"].replace(",", ""))) for _, r in read_jsonl(stage / "predictions.jsonl")]
        summarise(f"student, {label}", rows)
    for stage in sorted((run / "stages" / "curate").iterdir()):
        label = json.loads((stage / "stage.json").read_text())["label"]
        if label.split(" ")[0] not in ARITHMETIC or " ft_cot" not in label:
            continue
        rows = [(r["rationale"], float(r["answer"].replace(",", ""))) for _, r in read_jsonl(stage / "train.jsonl")]
        summarise(f"teacher (kept training rationales), {label}", rows)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
