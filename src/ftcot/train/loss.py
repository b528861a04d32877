"""Completion-only loss with output-layer logits computed only where the loss needs them.

The student's forward returns the summed next-token cross-entropy over the
completion tokens. The decoder body runs once for hidden states; the completion
positions are gathered into one contiguous ``(N, hidden)`` matrix; the output
layer and cross-entropy then run over it in chunks of rows, each chunk's
gradient computed on the spot (``softmax − one-hot``) so no ``(N, vocab)``
logits matrix ever lives until the backward pass.

Why: Gemma 3 270M's 262,144-word output layer is about 168M of its 268M
parameters. Full logits for a batch of 8 × 256 tokens are 2.1 GB in fp32 (and
again for their gradient), and most positions are prompt or padding that the
loss ignores. And why contiguous: a strided slice fed to that output layer ran
~400× slower on CPU (docs/offline-models.md).

The loss lives in ``CompletionLM.forward`` — not in a trainer hook — because
DDP synchronises gradients and FSDP gathers parameters around the *wrapped
module's* forward; the output layer must be applied inside it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ftcot.train.data import IGNORE

# Logit elements (rows × vocabulary) held at once: 16M fp32 = 64 MB, plus the same in the compute dtype.
CHUNK_ELEMENTS = 1 << 24


def unwrap_peft(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (LoRA layers are injected in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class CompletionLM(nn.Module):
    """A student whose forward returns ``(loss summed over completion tokens, token count)``."""

    def __init__(self, model: Any, encoder_decoder: bool, chunk_rows: int | None = None) -> None:
        super().__init__()
        self.model = model  # transformers model, or a PeftModel around one
        self.encoder_decoder = encoder_decoder
        hf = unwrap_peft(model)
        text_config = hf.config.get_text_config()
        self.softcap = getattr(text_config, "final_logit_softcapping", None)
        vocab = hf.get_output_embeddings().weight.shape[0]
        self.chunk_rows = chunk_rows or max(16, CHUNK_ELEMENTS // vocab)
        # FSDP's auto-wrap looks for the transformer layer classes here.
        self._no_split_modules = getattr(hf, "_no_split_modules", None)

    def hidden_and_targets(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hf = unwrap_peft(self.model)
        if self.encoder_decoder:
            encoded = hf.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            decoder_input_ids = hf._shift_right(labels)  # start token + labels[:-1], -100 → pad
            hidden = hf.get_decoder()(input_ids=decoder_input_ids, encoder_hidden_states=encoded,
                                      encoder_attention_mask=attention_mask, use_cache=False).last_hidden_state
            # T5 with tied embeddings scales the decoder output (transformers < 5.2x: tie_word_embeddings).
            scale = getattr(hf.config, "scale_decoder_outputs", None)
            if scale if scale is not None else getattr(hf.config, "tie_word_embeddings", False):
                hidden = hidden * (hf.model_dim ** -0.5)
            targets = labels
        else:
            body = getattr(hf, hf.base_model_prefix)
            hidden = body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
            hidden, targets = hidden[:, :-1], labels[:, 1:]  # position t predicts token t + 1
        keep = targets != IGNORE
        # Boolean indexing gathers into a fresh, contiguous (N, hidden) matrix.
        return hidden[keep].contiguous(), targets[keep]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        hidden, targets = self.hidden_and_targets(input_ids, attention_mask, labels)
        head = unwrap_peft(self.model).get_output_embeddings()
        loss = linear_cross_entropy(hidden, head.weight, head.bias, targets, self.chunk_rows, self.softcap)
        return loss, int(targets.numel())


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         targets: torch.Tensor, chunk_rows: int, softcap: float | None = None) -> torch.Tensor:
    """``sum_i CE(softcap(hidden_i @ weight.T + bias), targets_i)`` without keeping (N, vocab) logits."""
    need = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad
                                        or (bias is not None and bias.requires_grad))
    return _LinearCrossEntropy.apply(hidden, weight, bias, targets, chunk_rows, softcap, need)


class _LinearCrossEntropy(torch.autograd.Function):
    """Forward computes the loss and, chunk by chunk, its gradients; backward only scales them."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor, chunk_rows: int, softcap: float | None, need_grad: bool) -> torch.Tensor:
        dtype = hidden.dtype
        # Matmuls in the activations' dtype (bf16 runs natively on AVX512-BF16/AMX and GPUs); softmax in fp32.
        w = weight if weight.dtype == dtype else weight.to(dtype)
        acc = torch.promote_types(dtype, torch.float32)  # softmax precision: at least fp32
        want_h = need_grad and hidden.requires_grad
        want_w = need_grad and weight.requires_grad
        want_b = need_grad and bias is not None and bias.requires_grad
        grad_h = torch.empty_like(hidden) if want_h else None
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if want_w else None
        grad_b = torch.zeros(bias.shape, dtype=acc, device=bias.device) if want_b else None
        total = torch.zeros((), dtype=acc, device=hidden.device)
        rows = torch.arange(min(chunk_rows, hidden.shape[0]), device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_rows):
            h = hidden[start:start + chunk_rows]
            y = targets[start:start + chunk_rows]
            logits = h @ w.T
            if bias is not None:
                logits = logits + bias.to(dtype)
            if softcap:
                capped = torch.tanh(logits.to(acc) / softcap)
                logits = capped * softcap
            # One fused pass (upcast, max, exp-sum, subtract) instead of logsumexp + sub + exp: the
            # (rows × 262k) softmax is memory-bound, and this cut its time by ~half on CPU.
            logp = torch.log_softmax(logits, dim=-1, dtype=acc)
            del logits
            picked = logp.gather(1, y[:, None]).squeeze(1)
            total -= picked.sum()
            if not need_grad:
                continue
            grad = logp.exp_()  # softmax, in place
            grad[rows[:len(y)], y] -= 1
            if softcap:
                grad *= 1 - capped * capped
            if want_b:
                grad_b += grad.sum(0)
            grad_c = grad.to(dtype)
            if want_h:
                grad_h[start:start + chunk_rows] = grad_c @ w
            if want_w:
                grad_w.addmm_(grad.T, h.to(acc))
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.weight_dtype = weight.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple:
        grad_h, grad_w, grad_b = ctx.saved_tensors
        scale = grad_out
        return (
            None if grad_h is None else grad_h * scale.to(grad_h.dtype),
            None if grad_w is None else (grad_w * scale).to(ctx.weight_dtype),
            None if grad_b is None else (grad_b * scale).to(ctx.bias_dtype),
            None, None, None, None,
        )
