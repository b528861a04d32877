"""The top-K logit-distillation loss against a full-logits reference on a real tiny model: values and gradients."""

from __future__ import annotations

import pytest
import torch

from ftcot.models import load_model
from ftcot.train.distill import topk_kl


def _reference(hidden, weight, bias, ids, teacher_logprobs, softcap=None):
    """KL over the teacher's K tokens from the full (N, vocabulary) logits, written the plain way."""
    logits = hidden @ weight.T + (bias if bias is not None else 0)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    total = torch.zeros(())
    for n in range(ids.shape[0]):
        keep = ids[n] >= 0
        if not keep.any():
            continue
        chosen = ids[n][keep]
        student = torch.log_softmax(logits[n, chosen], -1)
        teacher = torch.log_softmax(teacher_logprobs[n][keep], -1)
        total = total + (teacher.exp() * (teacher - student)).sum()
    return total


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-gpt2", dtype="float32", device="cpu")


@pytest.mark.parametrize("softcap", [None, 30.0])
def test_equals_the_full_logits_computation_in_value_and_gradient(tiny, softcap):
    torch.manual_seed(0)
    head = tiny.model.get_output_embeddings()
    weight = head.weight.detach().clone().requires_grad_(True)
    vocab, width = weight.shape
    hidden = torch.randn(7, width, requires_grad=True)
    ids = torch.randint(0, vocab, (7, 5))
    ids[2, 3:] = -1  # a position with fewer than K teacher tokens
    ids[5] = -1  # and one with none: it adds nothing
    teacher = torch.log_softmax(torch.randn(7, 5) * 2, -1)

    loss = topk_kl(hidden, weight, None, ids, teacher, softcap)
    loss.backward()
    got = hidden.grad.clone(), weight.grad.clone()
    hidden.grad, weight.grad = None, None
    expected = _reference(hidden, weight, None, ids, teacher, softcap)
    expected.backward()

    assert loss.item() == pytest.approx(expected.item(), rel=1e-5) and loss.item() > 0
    assert torch.allclose(got[0], hidden.grad, atol=1e-6) and torch.allclose(got[1], weight.grad, atol=1e-6)
    assert hidden.grad[5].abs().sum() == 0  # the position without teacher tokens has no gradient


def test_zero_where_the_student_already_matches_the_teacher(tiny):
    head = tiny.model.get_output_embeddings()
    hidden = torch.randn(3, head.weight.shape[1])
    ids = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, -1]])
    student = (hidden @ head.weight.T).detach()
    teacher = torch.stack([torch.log_softmax(student[n, ids[n].clamp(min=0)], -1) for n in range(3)])
    # The teacher's numbers need not be normalised over its K (an API's top-K never sums to 1): renormalised here.
    assert topk_kl(hidden, head.weight, None, ids, teacher - 1.7).item() == pytest.approx(0.0, abs=1e-5)
