"""StrategyQA: how much reasoning is in the teacher's kept rationales, and does the student follow its teacher? (FINDINGS)

Reads the recorded teacher's Zero-shot-CoT answers (the shared data's text-davinci-002 log, scored by ftcot's
paper rule) and a student's test predictions (an evaluate stage's predictions.jsonl), and prints:

- the teacher on the training questions (what curation keeps): yes / no / no yes-no extracted (an abstention:
  "Unknown", "It depends", ...), its accuracy on all of them and on the answered ones; and the solve-or-guess
  model, p + (1 - p) * g = accuracy (a share p solved, the rest guessed, a guess right with probability g = 1/2),
  solved for p on the answered questions (an abstention is neither a solve nor a guess) and, for comparison, on
  all of them (as if every abstention were a guess); with it, how many of the kept rationales reached the gold answer by
  reasoning. Also p with g = the share of gold answers the teacher's yes/no split would hit at random;
- the teacher on the test questions (the student never sees these rationales: a measure of question difficulty);
- the student's answers and accuracy among the answered; how often its answer is the teacher's (where both
  answered); its accuracy where the teacher is right, wrong (answered) and abstains, with a two-proportion
  z-test of right against not right.

Usage: FTCOT_DATA=../shared/data python strategy_qa_agreement.py EVALUATE_STAGE_DIR
"""

import collections
import json
import math
import os
import sys
from pathlib import Path

from ftcot.scoring import extract_answer, is_correct
from ftcot.tasks import load_task

root = Path(os.environ.get("FTCOT_DATA", "../shared/data"))
task = load_task("strategy_qa", root)
records = {r["sample_index"]: r for r in map(json.loads, (root / "teacher/text-davinci-002/zs_cot/strategy_qa.jsonl").open())}
teacher = {i: extract_answer(r["answer_completion"], task.spec, "zs_cot") for i, r in records.items()}
right = {i: is_correct(teacher[i], task.samples[i].answer, task.spec) for i in teacher if i in task.samples}
train, test = task.split_indices("train"), task.split_indices("test")


def pct(a: int, b: int) -> str:
    return f"{a}/{b} ({100 * a / b:.1f}%)"


answers = collections.Counter(teacher[i] or "(none)" for i in train)
answered = [i for i in train if teacher[i]]
kept = sum(right[i] for i in train)
print(f"teacher, {len(train)} training questions: {dict(answers)}; right {pct(kept, len(train))}, "
      f"on the {len(answered)} answered {pct(kept, len(answered))}")
for label, n in (("answered", len(answered)), ("all, abstentions counted as guesses (the old figure)", len(train))):
    p = 2 * kept / n - 1
    print(f"  solve-or-guess (g = 1/2) on {label}: p = {100 * p:.1f}% -> {p * n:.0f} of the {kept} kept rationales "
          f"reasoned, {kept - p * n:.0f} lucky")
gold_no = sum(task.samples[i].answer.strip().lower() == "no" for i in answered) / len(answered)
says_no = answers["no"] / len(answered)
g = says_no * gold_no + (1 - says_no) * (1 - gold_no)
p = (kept / len(answered) - g) / (1 - g)
print(f"  with g = {100 * g:.1f}% (the teacher says no to {100 * says_no:.1f}% of the answered, gold no "
      f"{100 * gold_no:.1f}%): p = {100 * p:.1f}% -> {p * len(answered):.0f} reasoned")
test_answered = [i for i in test if teacher[i]]
print(f"teacher, {len(test)} test questions: right {pct(sum(right[i] for i in test), len(test))}, "
      f"abstains on {len(test) - len(test_answered)}, right on the answered "
      f"{pct(sum(right[i] for i in test_answered), len(test_answered))}")

rows = [json.loads(line) for line in (Path(sys.argv[1]) / "predictions.jsonl").open()]
student = [r for r in rows if r["prediction"]]
print("student answers:", dict(collections.Counter(r["prediction"] or "(none)" for r in rows)),
      f"— cut at the token limit: {sum(r['finish_reason'] == 'length' for r in rows)}")
print(f"student accuracy among the answered: {pct(sum(r['correct'] for r in student), len(student))}")
print(f"student's answer = teacher's answer: {pct(sum(r['prediction'] == teacher[r['sample_index']] for r in student), len(student))}"
      f" of the student's answers; where both answered "
      f"{pct(*(lambda both: (sum(r['prediction'] == teacher[r['sample_index']] for r in both), len(both)))([r for r in student if teacher[r['sample_index']]]))}")
groups = {
    "is right": [r for r in student if right[r["sample_index"]]],
    "is not right (wrong or abstains)": [r for r in student if not right[r["sample_index"]]],
    "is wrong (answered)": [r for r in student if teacher[r["sample_index"]] and not right[r["sample_index"]]],
    "abstains": [r for r in student if not teacher[r["sample_index"]]],
}
for label, group in groups.items():
    print(f"student accuracy where the teacher {label}: {pct(sum(r['correct'] for r in group), len(group))}")
(k1, n1), (k2, n2) = ((sum(r["correct"] for r in g), len(g)) for g in (groups["is right"], groups["is not right (wrong or abstains)"]))
pooled = (k1 + k2) / (n1 + n2)
z = (k1 / n1 - k2 / n2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
print(f"right vs not right: difference {100 * (k1 / n1 - k2 / n2):.1f} points, z = {z:.2f}, "
      f"two-sided p = {math.erfc(abs(z) / math.sqrt(2)):.3f}")
