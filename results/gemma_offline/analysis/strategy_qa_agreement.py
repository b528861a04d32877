"""StrategyQA: does the Fine-tune-CoT student follow its teacher, and is the teacher better than chance? (FINDINGS)

Reads the student's test predictions (an evaluate stage's predictions.jsonl) and the recorded teacher's
Zero-shot-CoT answers on the same questions (the shared data's text-davinci-002 log, scored by ftcot's paper
rule), and prints: the teacher's accuracy on the training questions (what curation keeps) and on test; the
student's answers (cut before answering, yes, no) and accuracy among the answered; how often the student's
answer is the teacher's; the student's accuracy on the questions the teacher gets right and gets wrong.

Usage: FTCOT_DATA=../shared/data python strategy_qa_agreement.py EVALUATE_STAGE_DIR
"""

import collections
import json
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
print(f"teacher accuracy: train {sum(right[i] for i in train)}/{len(train)}, test {sum(right[i] for i in test)}/{len(test)}")

rows = [json.loads(line) for line in (Path(sys.argv[1]) / "predictions.jsonl").open()]
answered = [r for r in rows if r["prediction"]]
print("student answers:", dict(collections.Counter(r["prediction"] or "(none)" for r in rows)),
      f"— cut at the token limit: {sum(r['finish_reason'] == 'length' for r in rows)}")
print(f"student accuracy among the answered: {sum(r['correct'] for r in answered)}/{len(answered)}")
same = sum(r["prediction"] == teacher[r["sample_index"]] for r in answered)
print(f"student's answer = teacher's answer: {same}/{len(answered)}")
for label, wanted in (("right", True), ("wrong", False)):
    group = [r for r in answered if right[r["sample_index"]] is wanted]
    print(f"student accuracy where the teacher is {label}: {sum(r['correct'] for r in group)}/{len(group)}")
