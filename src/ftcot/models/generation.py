"""Batched text generation with per-request settings.

One call takes many prompts, each with its own ``max_new_tokens``,
temperature, seed and stop strings, and runs them in batches through
``model.generate`` (KV cache on). Prompts are sorted by length first so a
batch holds prompts of similar length and little padding; decoders are padded
on the left so every row's next token sits in the last column.

Sampling uses the Gumbel-max trick inside a logits processor: each sampled row
adds noise from its own seeded ``torch.Generator`` to ``logits / T`` and the
batch then takes the argmax. That draws exactly from ``softmax(logits / T)``,
lets greedy and sampled rows share a batch, and makes a row's sample depend on
its seed only, not on which other requests share its batch (up to the small
numeric differences batching itself causes).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ftcot.errors import FtcotError
from ftcot.models.loading import LoadedModel

FINISH_STOP = "stop"  # EOS or a stop string
FINISH_LENGTH = "length"  # max_new_tokens reached

# Tokens decoded at the end of a row to look for a stop string: a stop of L
# characters spans at most L tokens, plus slack for multi-byte characters.
_STOP_WINDOW_SLACK = 8


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0: greedy
    seed: int | None = None  # sampled rows only; None draws a fresh one
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Generation:
    text: str  # the continuation, cut before the first stop string
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int


def generate(loaded: LoadedModel, prompts: Sequence[str | GenerationRequest], *,
             max_new_tokens: int = 128, temperature: float = 0.0, seed: int | None = None,
             stop: Sequence[str] = (), batch_size: int = 16) -> list[Generation]:
    """One :class:`Generation` per prompt, in input order.

    Plain strings take the keyword settings; a :class:`GenerationRequest`
    carries its own. With ``seed`` set, the i-th string prompt is sampled with
    seed ``seed + i``.
    """
    requests = [
        p if isinstance(p, GenerationRequest)
        else GenerationRequest(p, max_new_tokens, temperature, None if seed is None else seed + i, tuple(stop))
        for i, p in enumerate(prompts)
    ]
    if batch_size < 1:
        raise FtcotError(f"batch_size must be at least 1 (got {batch_size}).")
    encoded = [loaded.encode_prompt(r.prompt) for r in requests]
    for i, (request, ids) in enumerate(zip(requests, encoded)):
        check_request(loaded, request, len(ids), what=f"prompt {i}")
    # Longest first: similar lengths share a batch, and an out-of-memory shows up at once.
    order = sorted(range(len(requests)), key=lambda i: (requests[i].max_new_tokens, len(encoded[i])), reverse=True)
    results: list[Generation | None] = [None] * len(requests)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        outputs = _generate_batch(loaded, [requests[i] for i in chunk], [encoded[i] for i in chunk])
        for i, output in zip(chunk, outputs):
            results[i] = output
    return results  # type: ignore[return-value]


def check_request(loaded: LoadedModel, request: GenerationRequest, prompt_tokens: int, what: str = "prompt") -> None:
    """Raise a one-line error for a request this model cannot run."""
    if request.max_new_tokens < 1:
        raise FtcotError(f"{what}: max_new_tokens must be at least 1 (got {request.max_new_tokens}).")
    if request.temperature < 0:
        raise FtcotError(f"{what}: temperature must be >= 0 (got {request.temperature}).")
    limit = None if loaded.is_encoder_decoder else loaded.max_positions
    if limit is not None and prompt_tokens + request.max_new_tokens > limit:
        raise FtcotError(f"{what}: {prompt_tokens} prompt tokens + {request.max_new_tokens} new tokens exceed "
                         f"{loaded.spec}'s {limit} positions; shorten the prompt or lower max_new_tokens.")


def eos_ids(loaded: LoadedModel) -> set[int]:
    eos = loaded.model.generation_config.eos_token_id
    if eos is None:
        eos = loaded.tokenizer.eos_token_id
    return set(eos) if isinstance(eos, (list, tuple)) else ({eos} if eos is not None else set())


def _generate_batch(loaded: LoadedModel, requests: list[GenerationRequest],
                    encoded: list[list[int]]) -> list[Generation]:
    import torch
    from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

    model, tokenizer = loaded.model, loaded.tokenizer
    device = loaded.device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        # Decoders: pad on the left so generation continues every row at the last column.
        span = slice(0, len(ids)) if loaded.is_encoder_decoder else slice(width - len(ids), width)
        input_ids[row, span] = torch.tensor(ids, dtype=torch.long)
        attention[row, span] = 1

    eos = eos_ids(loaded)
    # Generated tokens start after the prompt for decoders, after the start token for encoder-decoders.
    start = 1 if loaded.is_encoder_decoder else width
    limits = _RowLimits(start, [r.max_new_tokens for r in requests], [r.stop for r in requests], tokenizer, eos)
    seeds = [r.seed if r.seed is not None else random.SystemRandom().randrange(2**63) for r in requests]
    sampler = _GumbelSampler([r.temperature for r in requests], seeds, device)
    config = GenerationConfig(
        max_new_tokens=max(r.max_new_tokens for r in requests), do_sample=False, num_beams=1, use_cache=True,
        pad_token_id=pad, eos_token_id=sorted(eos) or None,
        bos_token_id=model.generation_config.bos_token_id,
        decoder_start_token_id=model.generation_config.decoder_start_token_id,
    )
    with torch.inference_mode():
        sequences = model.generate(
            input_ids=input_ids.to(device), attention_mask=attention.to(device), generation_config=config,
            logits_processor=LogitsProcessorList([sampler] if sampler.rows else []),
            stopping_criteria=StoppingCriteriaList([limits]),
        )
    sequences = sequences.cpu()

    outputs = []
    for row, (request, ids) in enumerate(zip(requests, encoded)):
        ended = limits.ended_at[row]
        generated = sequences[row, start:].tolist()[:request.max_new_tokens if ended is None else ended]
        outputs.append(_finish(loaded, request, ids, generated, eos))
    return outputs


def _finish(loaded: LoadedModel, request: GenerationRequest, prompt_ids: list[int], generated: list[int],
            eos: set[int]) -> Generation:
    finish = FINISH_LENGTH
    for k, token in enumerate(generated):
        if token in eos:
            generated, finish = generated[:k + 1], FINISH_STOP
            break
    text = decode_continuation(loaded, prompt_ids, [t for t in generated if t not in eos])
    cut = min((p for p in (text.find(s) for s in request.stop if s) if p >= 0), default=-1)
    if cut >= 0:
        text, finish = text[:cut], FINISH_STOP
    return Generation(text, finish, len(prompt_ids), len(generated))


def decode_continuation(loaded: LoadedModel, prompt_ids: list[int], generated: list[int]) -> str:
    """The text a decoder added after its prompt, leading whitespace included.

    SentencePiece tokenizers drop the leading space of a sequence they decode
    on its own ("▁The" -> "The"), which would glue a rationale to its prompt;
    decoding prompt + continuation and removing the prompt's text keeps it.
    """
    tokenizer = loaded.tokenizer
    if loaded.is_encoder_decoder:
        return tokenizer.decode(generated, skip_special_tokens=True)
    head = tokenizer.decode(prompt_ids, skip_special_tokens=True)
    full = tokenizer.decode(prompt_ids + generated, skip_special_tokens=True)
    if full.startswith(head):
        return full[len(head):]
    return tokenizer.decode(generated, skip_special_tokens=True)


class _RowLimits:
    """Per-row end of generation: the row's own max_new_tokens, or one of its stop strings.

    ``ended_at[row]`` records how many tokens the row had when it ended here, so
    the padding generate writes after that is never read as text.
    """

    def __init__(self, start: int, max_new: list[int], stops: list[tuple[str, ...]], tokenizer: Any,
                 end_ids: set[int]) -> None:
        self.start, self.max_new, self.stops, self.tokenizer = start, max_new, stops, tokenizer
        self.end_ids = end_ids
        self.windows = [max((len(s) for s in row), default=0) + _STOP_WINDOW_SLACK for row in stops]
        self.ended_at: list[int | None] = [None] * len(max_new)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        produced = input_ids.shape[1] - self.start
        last = input_ids[:, -1].tolist()
        for row in range(len(self.max_new)):
            if self.ended_at[row] is not None:
                continue
            if last[row] in self.end_ids:  # EOS: generate finishes the row itself; note where
                self.ended_at[row] = produced
            elif produced >= self.max_new[row]:
                self.ended_at[row] = produced
            elif self.stops[row]:
                tail = input_ids[row, max(self.start, input_ids.shape[1] - self.windows[row]):].tolist()
                text = self.tokenizer.decode(tail, skip_special_tokens=True)
                if any(s in text for s in self.stops[row] if s):
                    self.ended_at[row] = produced
        return torch.tensor([e is not None for e in self.ended_at], dtype=torch.bool, device=input_ids.device)


class _GumbelSampler:
    """Samples rows with temperature > 0 by adding seeded Gumbel noise before the argmax."""

    def __init__(self, temperatures: list[float], seeds: list[int], device: Any) -> None:
        import torch

        self.rows = []
        for row, (temperature, seed) in enumerate(zip(temperatures, seeds)):
            if temperature > 0:
                generator = torch.Generator(device=device)
                generator.manual_seed(int(seed) % (2**63))
                self.rows.append((row, float(temperature), generator))

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        for row, temperature, generator in self.rows:
            # -log(E), E ~ Exp(1), is Gumbel(0, 1); argmax(logits/T + Gumbel) ~ softmax(logits/T).
            noise = torch.empty(scores.shape[1], device=scores.device, dtype=torch.float32)
            noise.exponential_(generator=generator)
            scores[row] = scores[row].float() / temperature - noise.log()
        return scores

