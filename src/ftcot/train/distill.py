"""Logit distillation from a teacher's stored top-K log-probabilities.

A teacher that shares the student's tokenizer can give, at every token of its
completion, its K most likely next tokens and their log-probabilities (the
teach store keeps them: ``--teacher-args top_logprobs=K``, read by
:meth:`ftcot.teach.store.TeachStore.top_logprobs`). Fine-tune-CoT trains on
the sampled token only; this adds what the teacher thought of the others:

    loss = CE(student, target) + λ · Σ_t KL( p_T(· | t) ‖ p_S(· | t) )   over the teacher's K tokens at t

Both distributions are renormalised over the teacher's K tokens (the rest of
the vocabulary is unknown: an API returns at most 20), the student's from its
logits at just those K rows of the output layer — ``(N, K)`` logits, never
``(N, vocabulary)``, so it costs nothing next to the cross-entropy.

Forward KL (teacher ‖ student), not reverse: the sequences are the teacher's
samples, and on them forward KL is the maximum-likelihood objective against the
teacher's distribution (word-level KD, Hinton et al. 2015; Kim & Rush 2016) —
the student learns every token the teacher would accept there. Reverse KL
(MiniLLM, GKD's on-policy mode) is mode-seeking and principled on the
*student's* own samples, which an offline store of teacher rationales does not
have.
"""

from __future__ import annotations

import torch


def topk_kl(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, teacher_ids: torch.Tensor,
            teacher_logprobs: torch.Tensor, softcap: float | None = None) -> torch.Tensor:
    """``Σ_rows KL(p_T ‖ p_S)`` over each row's teacher tokens, both renormalised over them.

    ``hidden``: (N, H) the student's hidden states at the completion positions (what predicts each target);
    ``weight``/``bias``: the output layer; ``teacher_ids``: (N, K) token ids, ``-1`` where a position has
    fewer than K (or none: that row adds nothing); ``teacher_logprobs``: (N, K) the teacher's log-probabilities
    of those tokens. ``softcap``: the model's final logit soft-capping (Gemma), applied as in its forward.
    """
    valid = teacher_ids >= 0
    ids = teacher_ids.clamp(min=0)
    rows = weight[ids]  # (N, K, H): the K rows of the output layer each position needs
    logits = torch.einsum("nh,nkh->nk", hidden.to(rows.dtype), rows).float()
    if bias is not None:
        logits = logits + bias[ids].float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    neg = torch.finfo(logits.dtype).min
    student = torch.log_softmax(logits.masked_fill(~valid, neg), dim=-1)
    teacher = torch.log_softmax(teacher_logprobs.float().masked_fill(~valid, neg), dim=-1)
    p = teacher.exp() * valid
    kl = (p * (teacher - student)).masked_fill(~valid, 0.0).sum(-1)
    return (kl * valid.any(-1)).sum()
