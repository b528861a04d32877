"""Arithmetic tasks: does the Fine-tune-CoT student set the problem up wrongly, or compute wrongly?

Reads the test predictions of every Fine-tune-CoT evaluation of an arithmetic task in an `ftcot run`
directory and checks each equation the student writes (`a + b = c`, also -, *, x, /; two or more
operands). Prints, per evaluation:

- outputs, how many are scored correct, how many contain at least one equation; equations written and the
  share whose result is wrong;
- outputs with a *right set-up* (an equation whose operands and operators evaluate to the gold answer): how
  many of those wrote a wrong result in such an equation, how many computed every such equation right and of
  those how many are scored correct (the rest go on to another step and write its number after `-->`);
- what right arithmetic could give: an upper bound (every output with a right set-up and a wrong result
  becomes correct: the scored-correct outputs plus those) and an estimate (every right set-up computed right,
  scored correct at the rate observed where the student already computed it right, plus the outputs scored
  correct without a right set-up).

Then the same equation counts for the teacher's training rationales, as a reference: the curate stage's
train.jsonl when the run directory has it, else (an archived run keeps only curation.json) rebuilt from the
recorded teacher (FTCOT_DATA): the training questions whose rationale reaches the gold answer, less the
validation questions curation.json lists.

Usage: FTCOT_DATA=../shared/data python arithmetic_errors.py RUN_DIR   (an `ftcot run` directory of
configs/gemma_offline.yaml, or its archive results/gemma_offline)
"""

from __future__ import annotations

import json
import os
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


def pct(a: int, b: int) -> str:
    return f"{a}/{b} ({100 * a / max(b, 1):.1f}%)"


def summarise(label: str, rows: list[tuple[str, float]], correct: list[bool] | None = None) -> None:
    """``rows``: (text, gold answer); ``correct``: whether each text is scored correct (student outputs only)."""
    totals = [check(text, gold) for text, gold in rows]
    n = len(rows)
    equations = sum(t[0] for t in totals)
    wrong = sum(t[1] for t in totals)
    with_equation = sum(t[0] > 0 for t in totals)
    setups = sum(t[2] for t in totals)
    setups_wrong = sum(t[3] for t in totals)
    print(f"{label}:\n  {n} texts, {pct(with_equation, n)} with an equation; {equations} equations, "
          f"{pct(wrong, equations)} with a wrong result; right set-up in {pct(setups, n)}, of which "
          f"{setups_wrong} wrote a wrong result")
    if correct is None:
        return
    right = sum(correct)
    setup_right = [c for t, c in zip(totals, correct) if t[2] and not t[3]]
    fixable = sum(t[3] and not c for t, c in zip(totals, correct))
    without_setup = sum(c and not t[2] for t, c in zip(totals, correct))
    rate = sum(setup_right) / len(setup_right) if setup_right else 0.0
    estimate = without_setup + rate * setups
    print(f"  scored correct {pct(right, n)}; right set-up computed right in {len(setup_right)} outputs, "
          f"{sum(setup_right)} of them scored correct; {without_setup} scored correct without a right set-up\n"
          f"  with right arithmetic: at most {pct(right + fixable, n)} (every right set-up with a wrong result "
          f"scored correct); estimate {estimate:.1f}/{n} ({100 * estimate / n:.1f}%) (right set-ups scored "
          f"correct at the observed {sum(setup_right)}/{len(setup_right)})")


def teacher_rows(stage: Path, task_key: str) -> tuple[str, list[tuple[str, float]]]:
    """The kept training rationales of a curate stage: its train.jsonl, else rebuilt from the recorded teacher."""
    if (stage / "train.jsonl").exists():
        return "train.jsonl", [(r["rationale"], float(r["answer"].replace(",", "")))
                               for _, r in read_jsonl(stage / "train.jsonl")]
    from ftcot.scoring import score
    from ftcot.tasks import load_task

    root = Path(os.environ.get("FTCOT_DATA", "../shared/data"))
    task = load_task(task_key, root)
    curation = json.loads((stage / "curation.json").read_text())
    train = set(task.split_indices("train")) - set(curation["val_questions"])
    rows = []
    for _, r in read_jsonl(root / "teacher/text-davinci-002/zs_cot" / f"{task_key}.jsonl"):
        rationale = (r.get("reasoning_completion") or "").strip()
        if r["sample_index"] in train and rationale and score(r["answer_completion"], r["answer"], task.spec).correct:
            rows.append((rationale, float(r["answer"].replace(",", ""))))
    note = "rebuilt from the recorded teacher" + ("" if len(rows) == curation["train_examples"] else
                                                  f", {len(rows)} rows against curation's {curation['train_examples']}")
    return note, rows


def main(run: Path) -> None:
    stages = {json.loads((s / "stage.json").read_text())["label"]: s for s in (run / "stages" / "evaluate").iterdir()}
    for label, stage in sorted(stages.items()):
        if label.split(" ")[0] not in ARITHMETIC or " ft_cot " not in label or not (stage / "predictions.jsonl").exists():
            continue
        records = [r for _, r in read_jsonl(stage / "predictions.jsonl")]
        summarise(f"student, {label.split(', from')[0]}",
                  [(r["output"], float(r["answer"].replace(",", ""))) for r in records], [r["correct"] for r in records])
    stages = {json.loads((s / "stage.json").read_text())["label"]: s for s in (run / "stages" / "curate").iterdir()}
    for label, stage in sorted(stages.items()):
        task_key = label.split(" ")[0]
        if task_key not in ARITHMETIC or " ft_cot" not in label:
            continue
        note, rows = teacher_rows(stage, task_key)
        summarise(f"teacher (kept training rationales, {note}), {label}", rows)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
