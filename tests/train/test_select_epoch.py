"""``select_epoch``: best/ holds the best epoch on validation (the default) or the last one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ftcot.errors import FtcotError
from ftcot.train.config import TrainConfig

# lr 0.3 diverges after the first epoch (validation loss 38, 48, 59 on this data), so the best epoch is an early
# one and the last is not it: the two rules export different weights from one and the same training.
SETTINGS = dict(student="tiny-gpt2", epochs=3, batch_size=4, lr=0.3, bf16=False, dropout=0.0, max_length=768,
                max_new_tokens=8)


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(ckpt / "best" / "model" / "model.safetensors")


@pytest.mark.slow
def test_last_exports_the_final_epoch_of_the_same_training(coin_flip_16, tmp_path):
    import ftcot

    best = ftcot.train(coin_flip_16, tmp_path / "best", **SETTINGS)
    last = ftcot.train(coin_flip_16, tmp_path / "last", select_epoch="last", **SETTINGS)
    assert best.best_epoch < 3 and last.best_epoch == 3
    # The rule picks; it does not change the training: the same steps, losses and validation.
    assert [e["step_losses"] for e in last.epochs] == [e["step_losses"] for e in best.epochs]
    assert [e["val_loss"] for e in last.epochs] == [e["val_loss"] for e in best.epochs]
    for ckpt, epoch in ((tmp_path / "best", best.best_epoch), (tmp_path / "last", 3)):
        assert json.loads((ckpt / "best" / "student.json").read_text())["epoch"] == epoch
        assert json.loads((ckpt / "train.json").read_text())["best_epoch"] == epoch
    exported_best, exported_last = _weights(tmp_path / "best"), _weights(tmp_path / "last")
    assert set(exported_best) == set(exported_last)
    assert not all(torch.equal(v, exported_last[k]) for k, v in exported_best.items())
    # The last epoch's weights are the model the training ended with: a run whose best epoch is the last
    # exports them too (epochs=1: the one epoch is both).
    one = ftcot.train(coin_flip_16, tmp_path / "one", select_epoch="last", **{**SETTINGS, "epochs": 1})
    assert one.best_epoch == 1


@pytest.mark.parametrize("value", ["first", "", "Last", None, 3, True])
def test_an_unknown_rule_is_refused_by_name(value):
    with pytest.raises(FtcotError, match=r"--select-epoch must be one of best, last"):
        TrainConfig(select_epoch=value)


@pytest.mark.slow
def test_a_run_recorded_before_the_option_resumes_and_one_with_last_does_not_as_best(coin_flip_16, tmp_path):
    """A train.json written before select_epoch existed has no such key: that run picked the best epoch, so it
    resumes under the default (it was refused: 'select_epoch=None, not best'); a run recorded with last is
    another run than best."""
    import ftcot

    settings = {**SETTINGS, "lr": 1e-3, "epochs": 1}
    ftcot.train(coin_flip_16, tmp_path / "old", **settings)
    record = json.loads((tmp_path / "old" / "train.json").read_text())
    del record["config"]["select_epoch"]
    (tmp_path / "old" / "train.json").write_text(json.dumps(record))
    assert len(ftcot.train(coin_flip_16, tmp_path / "old", **{**settings, "epochs": 2}).epochs) == 2
    ftcot.train(coin_flip_16, tmp_path / "last", select_epoch="last", **settings)
    with pytest.raises(FtcotError, match=r"holds a run with select_epoch='last', not 'best'"):
        ftcot.train(coin_flip_16, tmp_path / "last", **{**settings, "epochs": 2})
