"""The chunked completion loss equals the plain full-logits loss, values and gradients."""

from __future__ import annotations

import pytest
import torch

from ftcot.models import load_model
from ftcot.train.data import IGNORE
from ftcot.train.loss import CompletionLM, linear_cross_entropy


@pytest.mark.parametrize("softcap,bias", [(None, False), (30.0, True)])
def test_linear_cross_entropy_matches_full_logits(softcap, bias):
    torch.manual_seed(0)
    hidden = torch.randn(37, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    b = torch.randn(50, dtype=torch.float64, requires_grad=True) if bias else None
    targets = torch.randint(0, 50, (37,))

    loss = linear_cross_entropy(hidden, weight, b, targets, chunk_rows=8, softcap=softcap)
    (loss * 0.5).backward()
    got = hidden.grad.clone(), weight.grad.clone(), None if b is None else b.grad.clone()
    for t in (hidden, weight, b):
        if t is not None:
            t.grad = None

    logits = hidden @ weight.T + (b if b is not None else 0)
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    want = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    (want * 0.5).backward()
    assert torch.allclose(loss.double(), want, rtol=1e-6)
    assert torch.allclose(got[0], hidden.grad)
    assert torch.allclose(got[1], weight.grad)
    if b is not None:
        assert torch.allclose(got[2], b.grad)


@pytest.mark.parametrize("spec", ["tiny-gpt2", "tiny-t5"])
def test_completion_loss_matches_the_models_own_loss(spec):
    loaded = load_model(spec, dtype="float32", device="cpu", seed=1)
    model = loaded.model.train()
    torch.manual_seed(0)
    ids = torch.randint(3, 200, (3, 12))
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0
    if loaded.is_encoder_decoder:
        labels = torch.randint(3, 200, (3, 7))
        labels[1, 5:] = IGNORE
    else:
        labels = ids.clone()
        labels[:, :4] = IGNORE  # prompt
        labels[2, 9:] = IGNORE  # padding
    model.config.dropout_rate = 0.0
    model.eval()  # no dropout: both passes must see the same network

    wrapped = CompletionLM(model, loaded.is_encoder_decoder, chunk_rows=5)
    loss_sum, count = wrapped(ids, mask, labels)
    (loss_sum / count).backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    reference = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    reference.backward()
    assert torch.allclose(loss_sum / count, reference, rtol=1e-5)
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.allclose(ours[name], p.grad, atol=1e-6, rtol=1e-4), name
