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

Distilling step-by-step rows come with ``loss_weights`` (per target token, see
``ftcot.train.data.weigh_tasks``): the sum is then weighted, each row's
gradient scaled by its weight in the same pass.

The loss lives in ``CompletionLM.forward`` — not in a trainer hook — because
DDP synchronises gradients and FSDP gathers parameters around the *wrapped
module's* forward; the output layer must be applied inside it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ftcot.train.data import IGNORE

# Logit elements (rows × vocabulary) of a chunk: 32M, held in fp32 twice (128 MB each) and in the compute dtype.
# Gemma on CPU: 128-row chunks ran 6% faster than 64 (each chunk reads the whole 262k-row output layer);
# 256 rows gained 1% more for twice the memory.
CHUNK_ELEMENTS = 1 << 25


def unwrap_peft(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (LoRA layers are injected in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class CompletionLM(nn.Module):
    """A student whose forward returns ``(loss summed over completion tokens, token count)``; with
    ``loss_weights``, ``(weighted sum, row count)`` (what ``Tokenized.loss_units`` sums to)."""

    def __init__(self, model: Any, encoder_decoder: bool, chunk_rows: int | None = None,
                 kd_weight: float = 0.0) -> None:
        super().__init__()
        # Logit distillation (ftcot.train.distill): λ of the KL term, and the last forward's summed KL (detached)
        self.kd_weight = kd_weight
        self.last_kd: torch.Tensor | None = None
        self.model = model  # transformers model, or a PeftModel around one
        self.encoder_decoder = encoder_decoder
        hf = unwrap_peft(model)
        text_config = hf.config.get_text_config()
        self.softcap = getattr(text_config, "final_logit_softcapping", None)
        vocab = hf.get_output_embeddings().weight.shape[0]
        self.chunk_rows = chunk_rows or max(16, CHUNK_ELEMENTS // vocab)
        self.scratch = ScratchPool()  # the loss's logit-sized work tensors, reused by every step
        # FSDP's auto-wrap looks for the transformer layer classes here.
        self._no_split_modules = getattr(hf, "_no_split_modules", None)

    def hidden_and_targets(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                           loss_weights: torch.Tensor | None = None, *extra: torch.Tensor
                           ) -> tuple[torch.Tensor, ...]:
        """(hidden states, targets, weights or None, *``extra`` label-aligned tensors) at the target positions."""
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
            targets, weights = labels, loss_weights
            extra = tuple(extra)
        else:
            body = getattr(hf, hf.base_model_prefix)
            hidden = body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
            hidden, targets = hidden[:, :-1], labels[:, 1:]  # position t predicts token t + 1
            weights = None if loss_weights is None else loss_weights[:, 1:]
            extra = tuple(x[:, 1:] for x in extra)
        keep = targets != IGNORE
        # Boolean indexing gathers into a fresh, contiguous (N, hidden) matrix.
        return (hidden[keep].contiguous(), targets[keep], None if weights is None else weights[keep],
                *(x[keep] for x in extra))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                loss_weights: torch.Tensor | None = None, teacher_ids: torch.Tensor | None = None,
                teacher_logprobs: torch.Tensor | None = None, per_row: bool = False
                ) -> tuple[torch.Tensor, float] | list[tuple[float, float]]:
        """With the teacher's top-K (``teacher_ids``/``teacher_logprobs``, label-aligned (rows, length, K)), the
        summed loss is ``CE + kd_weight · KL`` (:func:`ftcot.train.distill.topk_kl`, summed over the positions
        the teacher covers); ``last_kd`` keeps the summed KL.

        ``per_row`` (no gradient: validation) returns each row's ``(summed loss, loss units)`` instead, from
        the same forward pass; they add up to the batch's. A keyword of forward, not a method of its own, so
        that DDP's and FSDP's forward hooks run."""
        teacher = () if teacher_ids is None else (teacher_ids, teacher_logprobs)
        hidden, targets, weights, *top = self.hidden_and_targets(input_ids, attention_mask, labels, loss_weights,
                                                                 *teacher)
        if per_row:
            # Boolean indexing flattened the target positions row by row: each row's are one contiguous run.
            shifted = labels if self.encoder_decoder else labels[:, 1:]
            ends = torch.cumsum((shifted != IGNORE).sum(1), 0).tolist()
            rows = []
            for start, end in zip([0, *ends[:-1]], ends):
                if end == start:  # nothing to score (every target cut by truncation)
                    rows.append((0.0, 0.0))
                    continue
                part = slice(start, end)
                loss = self._loss(hidden[part], targets[part], None if weights is None else weights[part],
                                  [t[part] for t in top])
                rows.append((float(loss), float(end - start) if weights is None else 1.0))
            return rows
        loss = self._loss(hidden, targets, weights, top)
        return loss, int(targets.numel()) if weights is None else float(labels.shape[0])

    def _loss(self, hidden: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None,
              top: list[torch.Tensor]) -> torch.Tensor:
        head = unwrap_peft(self.model).get_output_embeddings()
        loss = linear_cross_entropy(hidden, head.weight, head.bias, targets, self.chunk_rows, self.softcap,
                                    self.scratch, weights)
        self.last_kd = None
        if top:
            from ftcot.train.distill import topk_kl

            kl = topk_kl(hidden, head.weight, head.bias, top[0], top[1], self.softcap)
            self.last_kd = kl.detach()
            loss = loss + self.kd_weight * kl
        return loss


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         targets: torch.Tensor, chunk_rows: int, softcap: float | None = None,
                         pool: ScratchPool | None = None, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_i CE(softcap(hidden_i @ weight.T + bias), targets_i)`` without keeping (N, vocab) logits.

    ``pool``: work tensors to reuse across calls (default: fresh ones for this call); ``weights``: one
    per row, ``sum_i weights_i · CE_i`` (default: all 1).
    """
    need = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad
                                        or (bias is not None and bias.requires_grad))
    # Equal chunks: each chunk reads the whole output layer, so a short last one costs nearly as much as a
    # full one (Gemma on CPU: 12 rows took 30% of the time of 128).
    chunks = max(1, -(-hidden.shape[0] // chunk_rows))
    return _LinearCrossEntropy.apply(hidden, weight, bias, targets, max(1, -(-hidden.shape[0] // chunks)), softcap,
                                     need, pool or ScratchPool(), weights)


def _matmul_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The output layer's matmul dtype: autocast's for fp32 activations under autocast, else theirs.

    Explicit because the chunks below write into preallocated buffers, and ``out=`` ops are not autocast.
    """
    kind = hidden.device.type
    if hidden.dtype == torch.float32 and torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return hidden.dtype


class _LinearCrossEntropy(torch.autograd.Function):
    """Forward computes the loss and, chunk by chunk, its gradients; backward only scales them."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor, chunk_rows: int, softcap: float | None, need_grad: bool,
                pool: ScratchPool, row_weights: torch.Tensor | None = None) -> torch.Tensor:
        # Matmuls in bf16 where the model computes in it (native on AVX512-BF16/AMX and GPUs); softmax in fp32.
        dtype = _matmul_dtype(hidden)
        acc = torch.promote_types(dtype, torch.float32)  # softmax precision: at least fp32
        h_all, w = hidden.to(dtype), weight.to(dtype)
        want_h = need_grad and hidden.requires_grad
        want_w = need_grad and weight.requires_grad
        want_b = need_grad and bias is not None and bias.requires_grad
        grad_h = torch.empty(hidden.shape, dtype=dtype, device=hidden.device) if want_h else None
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if want_w else None
        grad_b = torch.zeros(bias.shape, dtype=acc, device=bias.device) if want_b else None
        total = torch.zeros((), dtype=acc, device=hidden.device)
        buffers = _ChunkBuffers(pool, min(chunk_rows, hidden.shape[0]), weight.shape[0], dtype, acc, softcap,
                                hidden.device)
        # (rows × vocabulary) @ (vocabulary × hidden) from the layer as it is laid out. A transposed copy ran
        # this matmul 12% faster, but its bf16 kernel (oneDNN, torch 2.13, AVX512-BF16/AMX) killed the process
        # with SIGFPE for a 6-row chunk against Gemma's 262,144-token vocabulary: the demo died on the CI
        # machine and here. The plain layout ran every chunk size of 1 to 69 rows.
        w_back = w
        rows = torch.arange(buffers.rows, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_rows):
            h = h_all[start:start + chunk_rows]
            y = targets[start:start + chunk_rows]
            logits, grad, picked, capped = buffers.softmax(h, w, bias, softcap, y)
            rw = None if row_weights is None else row_weights[start:start + chunk_rows].to(acc)
            total -= picked.sum() if rw is None else (picked * rw).sum()
            if not need_grad:
                continue
            grad[rows[:len(y)], y] -= 1  # softmax − one-hot, in place
            if softcap:
                grad *= capped.mul_(capped).neg_().add_(1)  # d softcap(z) / dz = 1 - tanh²
            if rw is not None:
                grad *= rw[:, None]
            if want_b:
                grad_b += grad.sum(0)
            if want_w:
                grad_w.addmm_(grad.T, h.to(acc))
            if want_h:
                grad_c = grad if dtype == acc else logits.copy_(grad)  # the logits are spent: reuse their buffer
                torch.mm(grad_c, w_back, out=grad_h[start:start + chunk_rows])
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = hidden.dtype, weight.dtype, None if bias is None else bias.dtype
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple:
        grads = [None if g is None else (g * grad_out.to(g.dtype)).to(dtype)
                 for g, dtype in zip(ctx.saved_tensors, ctx.dtypes)]
        return (*grads, None, None, None, None, None, None)


class ScratchPool:
    """Work tensors kept from one loss call to the next, handed out as row slices.

    Fresh tensors of the (rows × vocabulary) size (67 MB and up for Gemma at 128 rows) are each a new
    mmap on CPU, and the kernel zero-fills every page on first touch: ~2 GB of page faults per Gemma
    step when every chunk allocated its own, which made the upcast, log-softmax and downcast ~4x
    slower than their arithmetic.
    """

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}

    def take(self, name: str, rows: int, vocab: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        held = self.tensors.get(name)
        if held is None or held.shape[0] < rows or held.shape[1] != vocab or held.dtype != dtype \
                or held.device != device:
            held = self.tensors[name] = torch.empty((rows, vocab), dtype=dtype, device=device)
        return held[:rows]


class _ChunkBuffers:
    """The (rows × vocabulary) work tensors of one loss call, reused by every chunk."""

    def __init__(self, pool: ScratchPool, rows: int, vocab: int, dtype: torch.dtype, acc: torch.dtype,
                 softcap: float | None, device: torch.device) -> None:
        self.rows = rows
        self.logits = pool.take("logits", rows, vocab, dtype, device)
        self.upcast = self.logits if dtype == acc else pool.take("upcast", rows, vocab, acc, device)
        self.probs = pool.take("probs", rows, vocab, acc, device)
        self.capped = pool.take("capped", rows, vocab, acc, device) if softcap else None

    def softmax(self, h: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, softcap: float | None,
                y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Of the rows ``h``: (logits, fp32 softmax of the soft-capped logits, their log-probabilities of
        the targets ``y``, tanh(logits / softcap))."""
        n = h.shape[0]
        logits, upcast, probs = self.logits[:n], self.upcast[:n], self.probs[:n]
        torch.mm(h, w.T, out=logits)
        if bias is not None:
            logits += bias.to(logits.dtype)
        if upcast is not logits:
            upcast.copy_(logits)
        capped = None
        if softcap:
            capped = torch.div(upcast, softcap, out=self.capped[:n]).tanh_()
            torch.mul(capped, softcap, out=upcast)
        torch.softmax(upcast, dim=-1, out=probs)
        # The top logit's probability is 1 / Σ exp(z − max), so log Σ exp(z) = max − log(p_top): the
        # log-probabilities in fp32 without a log-softmax pass and an exp pass over (rows × vocabulary).
        # (amax twice: max with indices took 6x as long on CPU.)
        log_normaliser = upcast.amax(dim=-1) - probs.amax(dim=-1).log()
        return logits, probs, upcast.gather(1, y[:, None]).squeeze(1) - log_normaliser, capped
