"""Fixtures for the training tests: small real Fine-tune-CoT DATA_DIRs of coin_flip.

The examples are the recorded text-davinci-002 Zero-shot-CoT rationales of the
coin_flip training split, curated by ``ftcot.curate.curate`` (spec §3) and
written by ``write_data_dir`` — the same files ``ftcot curate`` writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftcot.curate import curate
from ftcot.curate.dataset import write_data_dir
from ftcot.tasks import load_task
from ftcot.templates import get_template
from tests.conftest import TEACHER_DIR


def make_coin_flip_dir(data_root: Path, out: Path, n_train: int, n_val: int, val_from_train: bool = False,
                       template: str = "ft_cot") -> Path:
    """The ``n_train`` shortest curated examples (byte-level students are slow on long ones).

    ``template``: ``ft_cot`` (teacher rationales) or ``ft`` (vanilla fine-tuning, answers only).
    ``val_from_train``: validate on the first ``n_val`` training questions, so that
    model selection rewards learning the training set (what the learning tests assert);
    otherwise on the next ``n_val`` questions.
    """
    task = load_task("coin_flip", data_root)
    records = [json.loads(line) for line in (TEACHER_DIR / "zs_cot" / "coin_flip.jsonl").open()]
    examples, _, summary = curate(task, get_template(template), records, val_fraction=0)
    examples = sorted(examples, key=lambda e: (len(e.prompt) + len(e.completion), e.sample_index))
    train = examples[:n_train]
    val = train[:n_val] if val_from_train else examples[n_train:n_train + n_val]
    summary.update(train_examples=len(train), val_examples=len(val))
    write_data_dir(out, train, val, summary)
    return out


@pytest.fixture(scope="session")
def coin_flip_32(data_root, tmp_path_factory) -> Path:
    """32 training questions; validation on 4 of them (the learning tests' set)."""
    return make_coin_flip_dir(data_root, tmp_path_factory.mktemp("cf32"), 32, 4, val_from_train=True)


@pytest.fixture(scope="session")
def coin_flip_16(data_root, tmp_path_factory) -> Path:
    """A smaller set for the resume / distributed / pre-flight tests."""
    return make_coin_flip_dir(data_root, tmp_path_factory.mktemp("cf16"), 16, 4)
