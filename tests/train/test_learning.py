"""Tiny random-init students learn a 32-question coin_flip set: ≥ 90% of those questions, greedy and scored.

The data are the 32 shortest curated coin_flip training examples (recorded
text-davinci-002 rationales); validation uses 4 of them, so that model
selection (best epoch by val accuracy, then loss) rewards learning the set.
Settings come from a sweep (lr 5e-4…2e-3, batch 4/8, dropout 0/0.1, 100–200
epochs): tiny-gpt2 with dropout 0, lr 1e-3, batch 8 reached 94% at epoch 70 and
100% from epoch 80. tiny-t5 (2+2 layers, byte-level, random init) did not get
past loss ≈ 0.9 nats/byte on the rationales in 200 epochs with any of those
settings (accuracy ≤ 25%), and on the answers alone (vanilla layout) it stayed
at the majority class (69%) — with transformers' own T5 loss exactly as with
ftcot's, so it is the tiny model, not the trainer. Its test checks the
encoder-decoder path end to end (train, save, reload, same loss, generate).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ftcot.models import generate
from ftcot.scoring import score
from ftcot.tasks import get_spec
from ftcot.train import TrainConfig, load_student, train
from ftcot.train.data import read_data_dir
from tests.train.conftest import make_coin_flip_dir

pytestmark = pytest.mark.slow


def _accuracy(ckpt_dir: Path, data_dir: Path) -> float:
    loaded, template = load_student(ckpt_dir, device="cpu")
    data = read_data_dir(data_dir)
    prompts = [template.format_prompt(e.question, loaded.is_encoder_decoder) for e in data.train]
    outputs = generate(loaded, prompts, max_new_tokens=400, batch_size=32)
    spec = get_spec("coin_flip")
    correct = [score(g.text, e.answer, spec, template).correct for g, e in zip(outputs, data.train)]
    assert len(correct) == 32
    return sum(correct) / len(correct)


def test_tiny_gpt2_learns_coin_flip_cot(coin_flip_32, tmp_path):
    config = TrainConfig(student="tiny-gpt2", epochs=90, lr=1e-3, batch_size=8, dropout=0.0, max_length=768,
                         device="cpu")
    record = train(coin_flip_32, tmp_path / "ck", config)
    assert record["finished"] and len(record["epochs"]) == config.epochs
    best = record["epochs"][record["best_epoch"] - 1]
    assert best["train_loss"] < record["epochs"][0]["train_loss"] / 10
    assert _accuracy(tmp_path / "ck", coin_flip_32) >= 0.9


def test_tiny_t5_trains_saves_and_reloads(data_root, tmp_path):
    """The encoder-decoder path end to end. Not the 90% bar: see the module docstring for why."""
    import torch

    from ftcot.train.data import collate, tokenize
    from ftcot.train.loss import CompletionLM

    data_dir = make_coin_flip_dir(data_root, tmp_path / "data", 8, 2, val_from_train=True)
    config = TrainConfig(student="tiny-t5", epochs=12, lr=1e-3, batch_size=8, dropout=0.0, max_length=768,
                         max_new_tokens=32, device="cpu")
    record = train(data_dir, tmp_path / "ck", config)
    assert record["finished"] and record["is_encoder_decoder"] and len(record["epochs"]) == 12
    losses = [m["train_loss"] for m in record["epochs"]]
    assert losses[-1] < losses[0] / 3  # from ~5.8 (uniform over 384 bytes) to the rationales' byte statistics

    loaded, template = load_student(tmp_path / "ck", dtype="float32", device="cpu")
    assert loaded.is_encoder_decoder
    data = read_data_dir(data_dir)
    # Encoder-decoder layout: no "###", no leading space (spec §3), re-formatted from the row's parts.
    assert template.format_prompt(data.val[0].question, True) == data.val[0].question
    batch = collate([tokenize(loaded, e, template, 768) for e in data.val], 0, True)
    with torch.no_grad():
        loss_sum, count = CompletionLM(loaded.model, True)(**batch)
    best = record["epochs"][record["best_epoch"] - 1]
    assert float(loss_sum) / count == pytest.approx(best["val_loss"], rel=0.02)  # bf16 autocast in training
    [generation] = generate(loaded, [template.format_prompt(data.val[0].question, True)], max_new_tokens=32)
    assert generation.text.strip()
