"""Readers of the 12 benchmarks' raw files, byte-for-byte as published.

Each reader returns samples in the paper's unified order with the exact
question text the Zero-shot-CoT teacher saw (Kojima et al.'s data loader);
the recorded teacher outputs are the proof (tests/tasks/test_readers.py).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from ftcot.tasks.spec import Sample


def _strip_dot_zero(value: object) -> str:
    text = str(value)
    return text[:-2] if text.endswith(".0") else text


def _json(path: Path):
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


def _jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _examples(path: Path) -> list[dict]:
    return _json(path)["examples"]


def mawps(file_name: str):
    """SingleEq, AddSub, MultiArith: ``sQuestion``; answer ``lSolutions[0]``."""

    def read(raw_dir: Path) -> list[Sample]:
        return [
            Sample(i, row["sQuestion"].strip(), _strip_dot_zero(row["lSolutions"][0]))
            for i, row in enumerate(_json(raw_dir / file_name))
        ]

    return read


def read_gsm8k(raw_dir: Path) -> list[Sample]:
    rows = _jsonl(raw_dir / "train.jsonl") + _jsonl(raw_dir / "test.jsonl")
    return [
        Sample(i, row["question"].strip(), row["answer"].split("#### ")[-1])
        for i, row in enumerate(rows)
    ]


AQUA_TRAIN_SIZE = 97467  # lines of AQuA's train.json, which precede test.json in unified order


def aqua_question(row: dict) -> str:
    # Kojima's loader wraps every parenthesis of the options in spaces, not just
    # the letter's; the teacher saw that text, so we reproduce it.
    choices = ("(" + "(".join(row["options"])).replace("(", " (").replace(")", ") ")
    return row["question"].strip() + " Answer Choices:" + choices


def read_aqua(raw_dir: Path) -> list[Sample]:
    return [
        Sample(AQUA_TRAIN_SIZE + i, aqua_question(row), row["correct"])
        for i, row in enumerate(_jsonl(raw_dir / "test.json"))
    ]


def read_svamp(raw_dir: Path) -> list[Sample]:
    return [
        Sample(i, row["Body"].strip() + " " + row["Question"].strip(), _strip_dot_zero(row["Answer"]))
        for i, row in enumerate(_json(raw_dir / "SVAMP.json"))
    ]


def _lettered(choices: list[str], scores: dict[str, int]) -> tuple[str, str]:
    """' (A) x (B) y …' and the letter of the choice scored 1."""
    text, answer = "", ""
    for letter, choice in zip("ABCDEFGH", choices):
        text += f" ({letter}) {choice}"
        if scores[choice] == 1:
            answer = letter
    return text, answer


def read_tracking_shuffled_objects(raw_dir: Path) -> list[Sample]:
    samples = []
    for i, row in enumerate(_examples(raw_dir / "task.json")):
        scores = row["target_scores"]
        choices, answer = _lettered(list(scores), scores)
        question = row["input"].strip() + " \nWhich choice is true ? Answer Choices:" + choices
        samples.append(Sample(i, question, answer))
    return samples


def read_date_understanding(raw_dir: Path) -> list[Sample]:
    # The original always lists the right date first; Kojima shuffles the choices
    # with one generator for the file, three shuffles per example.
    rng = random.Random(1)
    samples = []
    for i, row in enumerate(_examples(raw_dir / "task.json")):
        scores = row["target_scores"]
        keys = list(scores)
        for _ in range(3):
            rng.shuffle(keys)
        choices, answer = _lettered(keys, scores)
        samples.append(Sample(i, row["input"].strip() + " Answer Choices:" + choices, answer))
    return samples


def symbolic(file_name: str):
    """Coin flip, last letters: question and answer as they are."""

    def read(raw_dir: Path) -> list[Sample]:
        return [
            Sample(i, row["question"], row["answer"])
            for i, row in enumerate(_examples(raw_dir / file_name))
        ]

    return read


def read_commonsense_qa(raw_dir: Path) -> list[Sample]:
    rows = _jsonl(raw_dir / "train_rand_split.jsonl") + _jsonl(raw_dir / "dev_rand_split.jsonl")
    samples = []
    for i, row in enumerate(rows):
        choices = "".join(f" ({c['label']}) {c['text']}" for c in row["question"]["choices"])
        question = row["question"]["stem"].strip() + " Answer Choices:" + choices
        samples.append(Sample(i, question, row["answerKey"]))
    return samples


def read_strategy_qa(raw_dir: Path) -> list[Sample]:
    return [
        Sample(i, row["input"].strip(), "yes" if row["target_scores"]["Yes"] == 1 else "no")
        for i, row in enumerate(_examples(raw_dir / "task.json"))
    ]
