"""Date understanding: does each kept teacher rationale end on the gold choice's date? (FINDINGS, open item)

Classifies every curated Fine-tune-CoT row (train.jsonl + val.jsonl of a date_understanding curate stage) by
whether its rationale names a letter, and whether the last date it states (MM/DD/YYYY or "May 7, 2021",
normalised) is the gold choice's date, another choice's, a date that is no choice, or none. On the
gemma_offline run's 176 kept rationales: 103 end on the gold date, 42 (24%) on another date, 31 state none.

Usage: python date_rationale_consistency.py CURATE_STAGE_DIR
"""

import collections
import json
import re
import sys
from datetime import datetime
from pathlib import Path

CHOICE = re.compile(r"\(([A-F])\) (.+?)(?=\s*\([A-F]\) |\s*###|\s*$)")
MONTH = r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\.?"
DATE = re.compile(rf"(\d\d)/(\d\d)/(\d{{4}})|{MONTH} (\d{{1,2}})(?:st|nd|rd|th)?,? (\d{{4}})")


def normalised(match: re.Match) -> str:
    if match.group(1):
        return f"{match.group(1)}/{match.group(2)}/{match.group(3)}"
    month = datetime.strptime(match.group(4)[:3], "%b").month
    return f"{month:02d}/{int(match.group(5)):02d}/{match.group(6)}"


def classify(row: dict) -> tuple[str, str]:
    tail = row["prompt"][row["prompt"].rfind("Answer Choices"):]
    choices = {letter: text.strip().rstrip(".") for letter, text in CHOICE.findall(tail)}
    dates = [normalised(m) for m in DATE.finditer(row["rationale"])]
    letter = "names a letter" if re.search(r"\(([A-F])\)", row["rationale"]) else "no letter"
    if not dates:
        return letter, "no date"
    last = dates[-1]
    return letter, "gold date" if last == choices[row["answer"]] else \
        "another choice's date" if last in choices.values() else "a date that is no choice"


if __name__ == "__main__":
    stage = Path(sys.argv[1])
    rows = [json.loads(line) for name in ("train.jsonl", "val.jsonl") for line in (stage / name).open()]
    for kind, count in collections.Counter(classify(r) for r in rows).most_common():
        print(f"{count:4d}  {kind[0]}, ends on {kind[1]}")
