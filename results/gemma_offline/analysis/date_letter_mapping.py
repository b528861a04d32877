"""Date understanding: does the Fine-tune-CoT student fail at the reasoning or at naming the letter?

Two measurements on the test questions (FINDINGS.md, date understanding):
1. From the student's own predictions: among outputs whose last MM/DD/YYYY date is one of the answer
   choices, how often is that date the gold one, and how often is the letter written after `-->` that
   date's letter.
2. Teacher-forced: the student is given the teacher's recorded rationale for a test question (the
   replayed text-davinci-002, only questions where that rationale's last date is the gold choice) and
   writes the letter after `-->`: the letter lookup alone, with the reasoning done for it.
Also: the accuracy of an answer-only shortcut (pick the choice most like the other choices).

Usage: python date_letter_mapping.py RUN_DIR   (an `ftcot run` directory of configs/gemma_offline.yaml)
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from ftcot.data_root import resolve_data_root
from ftcot.jsonl import read_jsonl
from ftcot.models import GenerationRequest, generate
from ftcot.scoring import score
from ftcot.tasks import load_task
from ftcot.train.checkpoint import load_student

DATE = re.compile(r"\d\d/\d\d/\d{4}")
CHOICE = re.compile(r"\(([A-F])\) (\d\d/\d\d/\d{4})")


def choices(question: str) -> dict[str, str]:
    return {date: letter for letter, date in CHOICE.findall(question)}


def main(run: Path) -> None:
    root = resolve_data_root(None)
    task = load_task("date_understanding", root)
    test = set(task.split_indices("test"))
    stages = [json.loads(p.read_text()) | {"dir": p.parent} for p in run.glob("stages/*/*/stage.json")]
    for stage in stages:
        label = stage["label"]
        if not (label.startswith("date_understanding ft_cot (test)") and "seed 0 on" in label
                and "questions" not in label):
            continue
        records = [r for _, r in read_jsonl(stage["dir"] / "predictions.jsonl")]
        on_choice = gold_date = letter_of_date = 0
        for r in records:
            dates = DATE.findall(r["output"].split("-->")[0])
            letter = choices(r["question"]).get(dates[-1]) if dates else None
            if letter is None:
                continue
            on_choice += 1
            gold_date += letter == r["answer"]
            letter_of_date += letter == r["prediction"]
        print(f"{label}\n  own rationales: {on_choice}/{len(records)} end on a date among the choices; "
              f"{gold_date} of those are the gold date; the letter written is that date's letter in "
              f"{letter_of_date}/{on_choice}")
        train = next(s for s in stages if s["key"] == stage["inputs"]["model"]["train"])
        loaded, template = load_student(train["dir"], device="cpu")
        recorded = {r["sample_index"]: r for _, r in read_jsonl(root / "teacher/text-davinci-002/zs_cot/"
                                                                        "date_understanding.jsonl")}
        forced = []
        for index in sorted(test):
            question, rationale = task.samples[index].question, recorded[index]["reasoning_completion"].strip()
            dates = DATE.findall(rationale)
            if dates and choices(question).get(dates[-1]) == task.samples[index].answer:
                prompt = template.format_prompt(question, loaded.is_encoder_decoder) + " " + rationale + " -->"
                named = bool(re.search(r"answer is \(?[A-F]\b", rationale))  # the rationale names a letter itself
                forced.append((prompt, task.samples[index].answer, named))
        outputs = generate(loaded, [GenerationRequest(p, 3) for p, _, _ in forced], batch_size=16)
        for named in (True, False):
            cases = [(o, gold) for o, (_, gold, n) in zip(outputs, forced) if n == named]
            right = sum(score("-->" + o.text, gold, task.spec, template, "paper").correct for o, gold in cases)
            print(f"  teacher-forced, rationale ending on the gold date and {'naming' if named else 'not naming'} "
                  f"a letter: the letter after --> is right in {right}/{len(cases)} (one of 5-6 letters: ~17%)")

    for split in ("train", "test"):
        indices = task.split_indices(split)
        hit = 0
        for i in indices:
            listed = CHOICE.findall(task.samples[i].question)
            likeness = lambda c: sum(a == b for other in listed if other is not c  # noqa: E731
                                     for a, b in zip(c[1].split("/"), other[1].split("/")))
            hit += max(listed, key=likeness)[0] == task.samples[i].answer
        print(f"shortcut 'the choice most like the others' ({split}): {hit}/{len(indices)} "
              f"= {100 * hit / len(indices):.1f}%")


if __name__ == "__main__":
    main(Path(sys.argv[1]).expanduser())
