"""Settings applied to the student before training."""

from __future__ import annotations

import pytest
import torch

from ftcot.models import load_model
from ftcot.train.trainer import set_dropout


@pytest.mark.parametrize("spec", ["tiny-t5", "tiny-gpt2"])
def test_dropout_reaches_every_layer_including_t5_attention(spec):
    """T5's attention dropout is a float attribute handed to a functional call, not an nn.Dropout:
    `--dropout` must set it too, or it has no effect there."""
    model = load_model(spec).model
    set_dropout(model, 0.5)
    probabilities = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    probabilities += [getattr(m, name) for m in model.modules() for name in ("dropout", "attention_dropout")
                      if isinstance(getattr(m, name, None), float)]
    assert probabilities and set(probabilities) == {0.5}
    if spec == "tiny-t5":
        attention = [m for m in model.modules() if type(m).__name__ == "T5Attention"]
        assert attention and all(m.dropout == 0.5 for m in attention)

    model.train()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    kwargs = {"decoder_input_ids": ids} if spec == "tiny-t5" else {}
    torch.manual_seed(0)
    first = model(input_ids=ids, **kwargs).logits
    second = model(input_ids=ids, **kwargs).logits
    assert not torch.allclose(first, second)  # dropout is live in training mode
