"""``hf:``: a local transformers model as the teacher, micro-batched.

The engine calls :meth:`HFTeacher.complete` from many tasks at once (its
``--concurrency``). Requests are collected for a few milliseconds, or until a
batch is full, and run as one batched generation in a worker thread, so the
engine's concurrency becomes the batch size and the event loop never blocks.
While one batch runs, the next one fills.

A request with ``n > 1`` becomes ``n`` sampled rows; choice ``k`` uses seed
``request.seed + k``, so ``n`` choices of one request equal the first choice
of ``n`` requests with consecutive seeds. The model loads on the first request
(``gemma-270m``: ≈3 s, or ≈40 s to 2 min the very first time while its cache is built).

Log-probabilities (``top_logprobs=K``): after a batch is generated, each
completion is scored by one forward pass of prompt + completion through the
same model, and the top K of ``log_softmax`` at every completion token are kept
with token ids (:func:`score_top_logprobs`). ``ftcot.models.generation`` does
not hand out its per-step scores, and ``output_scores`` would hold steps × rows
× vocabulary floats at once (2 GB for Gemma's 262,144 tokens at 16 rows × 128
steps); the scoring pass holds one row's. Its tokens are the text's, tokenized
after the prompt: what a student sharing the tokenizer trains on. For greedy
Gemma 3 270M (fp32, 4 × 64 tokens) they are the tokens generated: the scored
top-1 was the text's token at all 256 positions. A generated token that is no
text (random tiny-gpt2's lone UTF-8 lead bytes) is not among them. Log-probabilities are the model's own, before temperature, as the
servers report them. Scoring took 18.5 s next to 55.9 s of generation for those
4 × 64 tokens (this loaded 2-core CPU).

The scoring pass is also what fills a stored completion's top-K later
(:meth:`HFTeacher.score`, ``scores_text``): a run that asks for them of a store
sampled without them scores each stored text, sampled ones included, and gets
what a run that had asked from the start would have stored: the same pass over
the same text, with no new sample drawn.

Reproducibility: in float32 a request's text does not depend on which other
requests share its batch. In bfloat16 (``dtype="auto"`` on CPUs and GPUs that
have it) rounding differs with the batch's shape, so greedy text can drift
after some tokens between runs that batch differently; pass
``dtype="float32"`` where exact reruns matter more than speed.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ftcot.errors import FtcotError
from ftcot.teach.records import MAX_TOP_LOGPROBS, Completion, CompletionRequest, TeacherError, TopLogprobs

DEFAULT_BATCH_SIZE = 16
# Long enough for the engine's other tasks to add their requests after one
# returns, short next to a batch that takes seconds.
DEFAULT_MAX_WAIT_S = 0.01


@dataclass
class _Pending:
    request: CompletionRequest
    future: asyncio.Future[list[Completion]]
    rows: list[Any] = field(default_factory=list)  # GenerationRequest per choice


class HFTeacher:
    supports_n = True
    scores_text = True  # the top-K of any given text, by the scoring pass (module docstring)

    def __init__(self, spec: str, *, dtype: str | None = "auto", device: str | None = "auto",
                 batch_size: int = DEFAULT_BATCH_SIZE, max_wait_s: float = DEFAULT_MAX_WAIT_S,
                 loaded: Any = None, top_logprobs: int = 0) -> None:
        """``loaded``: an already loaded :class:`ftcot.models.LoadedModel` to use instead of loading ``spec``.
        ``top_logprobs``: K > 0 also returns each completion's top-K log-probabilities (module docstring)."""
        if batch_size < 1:
            raise FtcotError(f"batch_size must be at least 1 (got {batch_size}).")
        if not 0 <= top_logprobs <= MAX_TOP_LOGPROBS:
            raise FtcotError(f"top_logprobs must be 0..{MAX_TOP_LOGPROBS} (got {top_logprobs}).")
        if loaded is None:
            from ftcot.models.loading import check_model_spec

            # The model loads on the first request: a missing directory would fail every request in turn.
            check_model_spec(spec)
        self.top_logprobs = top_logprobs
        self.spec = spec
        self.name = "hf:" + spec
        self.dtype, self.device = dtype, device
        self.batch_size, self.max_wait_s = batch_size, max_wait_s
        self._loaded = loaded
        self._queue: list[_Pending] = []
        self._running: list[_Pending] = []  # the batch in the worker thread now
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        # One model use at a time: a batch's generation, or a scoring pass (each in a worker thread).
        self._model_lock = asyncio.Lock()
        self.batches: list[int] = []  # rows per batch run, for reports and tests

    async def complete(self, request: CompletionRequest) -> list[Completion]:
        if self._closed:
            raise TeacherError(f"{self.name} is closed.")
        if request.n < 1:
            raise TeacherError(f"{self.name}: n must be at least 1 (got {request.n}).")
        loop = asyncio.get_running_loop()
        pending = _Pending(request, loop.create_future())
        self._queue.append(pending)
        if self._worker is None or self._worker.done():
            self._wake = asyncio.Event()
            self._worker = asyncio.create_task(self._run(), name=f"{self.name} batcher")
        assert self._wake is not None
        self._wake.set()
        return await pending.future

    async def score(self, prompt: str, row: Any) -> Completion:
        """A stored completion (``row``: its ``text``, ``finish_reason``, token counts) with the top-K
        log-probabilities of its text after ``prompt``: nothing is generated."""
        if self._closed:
            raise TeacherError(f"{self.name} is closed.")
        if not self.top_logprobs:
            raise TeacherError(f"{self.name}: score needs top_logprobs > 0.", retryable=False)
        try:
            async with self._model_lock:
                if self._loaded is None:
                    self._loaded = await asyncio.to_thread(_load, self.spec, self.dtype, self.device)
                started = time.monotonic()
                top = await asyncio.to_thread(score_top_logprobs, self._loaded, prompt, row.text, self.top_logprobs)
        except FtcotError as exc:
            raise TeacherError(f"{self.name}: {exc}", retryable=False) from None
        except Exception as exc:  # out of memory, a driver error: a later run may retry
            raise TeacherError(f"{self.name}: scoring failed ({type(exc).__name__}: {exc})", retryable=True) from None
        # No tokens: nothing was generated, and the row's own counts were spent (and counted) when it was.
        return Completion(row.text, row.finish_reason, 0, 0, time.monotonic() - started, logprobs=top)

    async def aclose(self) -> None:
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        for pending in self._running + self._queue:
            if not pending.future.done():
                pending.future.set_exception(TeacherError(f"{self.name} was closed before this request ran.",
                                                          retryable=True))
        self._running, self._queue = [], []
        self._loaded = None  # frees the model's memory once nothing else holds it

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._queue:
                continue
            # Give concurrent callers a moment to join this batch, unless it is already full.
            deadline = time.monotonic() + self.max_wait_s
            while self._rows_queued() < self.batch_size and time.monotonic() < deadline:
                await asyncio.sleep(min(0.002, max(0.0, deadline - time.monotonic())))
            self._running = self._take_batch()
            if self._running:
                await self._run_batch(self._running)
            self._running = []
            if self._queue:
                self._wake.set()

    def _rows_queued(self) -> int:
        return sum(_rows(p.request) for p in self._queue if not p.future.done())

    def _take_batch(self) -> list[_Pending]:
        """Whole requests, oldest first, up to batch_size rows (a larger request runs alone)."""
        batch: list[_Pending] = []
        rows = 0
        while self._queue:
            pending = self._queue[0]
            if pending.future.done():  # the caller gave up (cancelled)
                self._queue.pop(0)
                continue
            if batch and rows + _rows(pending.request) > self.batch_size:
                break
            batch.append(self._queue.pop(0))
            rows += _rows(pending.request)
        return batch

    async def _run_batch(self, batch: list[_Pending]) -> None:
        async with self._model_lock:
            await self._generate_batch(batch)

    async def _generate_batch(self, batch: list[_Pending]) -> None:
        try:
            if self._loaded is None:
                self._loaded = await asyncio.to_thread(_load, self.spec, self.dtype, self.device)
            runnable = [p for p in batch if self._prepare(p)]
            if not runnable:
                return
            started = time.monotonic()
            rows = [row for p in runnable for row in p.rows]
            self.batches.append(len(rows))
            outputs = await asyncio.to_thread(_generate, self._loaded, rows, self.batch_size, self.top_logprobs)
        except FtcotError as exc:
            _fail(batch, TeacherError(f"{self.name}: {exc}", retryable=False))
            return
        except Exception as exc:  # out of memory, a driver error: the batch fails, a later run may retry
            _fail(batch, TeacherError(f"{self.name}: generation failed ({type(exc).__name__}: {exc})",
                                      retryable=True))
            return
        latency = time.monotonic() - started
        at = 0
        for pending in runnable:
            choices = outputs[at:at + len(pending.rows)]
            at += len(pending.rows)
            choices = choices * (pending.request.n // len(choices))  # greedy: one text, n times
            if not pending.future.done():
                pending.future.set_result([
                    Completion(g.text, g.finish_reason, g.prompt_tokens, g.completion_tokens, latency, logprobs=top)
                    for g, top in choices
                ])

    def _prepare(self, pending: _Pending) -> bool:
        """Turn a request into generation rows; fail that request alone if the model cannot run it."""
        from ftcot.models.generation import GenerationRequest, check_request

        if pending.future.done():
            return False
        request = pending.request
        seed = request.seed
        if request.temperature > 0 and seed is None:
            seed = random.SystemRandom().randrange(2**62)
        rows = [GenerationRequest(request.prompt, request.max_tokens, request.temperature,
                                  None if seed is None else seed + k, tuple(request.stop))
                for k in range(_rows(request))]
        try:
            check_request(self._loaded, rows[0], len(self._loaded.encode_prompt(request.prompt)))
        except FtcotError as exc:
            pending.future.set_exception(TeacherError(f"{self.name}: {exc}", retryable=False))
            return False
        pending.rows = rows
        return True


def _rows(request: CompletionRequest) -> int:
    """Generation rows a request needs: n greedy choices are n copies of one text, generated once."""
    return request.n if request.temperature > 0 else 1


def _load(spec: str, dtype: str | None, device: str | None) -> Any:
    from ftcot.models.loading import load_model

    return load_model(spec, dtype=dtype, device=device)


def _generate(loaded: Any, rows: list[Any], batch_size: int, top_logprobs: int = 0) -> list[tuple[Any, Any]]:
    """(generation, its top-K or None) per row."""
    from ftcot.models.generation import generate

    outputs = generate(loaded, rows, batch_size=batch_size)
    return [(g, score_top_logprobs(loaded, row.prompt, g.text, top_logprobs) if top_logprobs else None)
            for row, g in zip(rows, outputs)]


def score_top_logprobs(loaded: Any, prompt: str, text: str, k: int) -> TopLogprobs:
    """The top-``k`` log-probabilities at every token of ``text`` after ``prompt``, by one forward pass."""
    import torch

    model = loaded.model
    prompt_ids = loaded.encode_prompt(prompt)
    completion = _completion_ids(loaded, prompt, prompt_ids, text)
    if not completion:
        return TopLogprobs(np.zeros(0, np.float32), np.zeros((0, k), np.float32), chosen_ids=np.zeros(0, np.int32),
                           ids=np.zeros((0, k), np.int32))
    with torch.inference_mode():
        if loaded.is_encoder_decoder:
            start = model.generation_config.decoder_start_token_id
            if start is None:
                start = model.config.decoder_start_token_id
            decoder = torch.tensor([[start, *completion[:-1]]], device=loaded.device)
            logits = model(input_ids=torch.tensor([prompt_ids], device=loaded.device),
                           decoder_input_ids=decoder).logits[0]
        else:
            keep = len(completion) + 1  # the position before each completion token predicts it
            # Only those positions through the output layer, where the model can (a 262,144-token vocabulary).
            extra = {"logits_to_keep": keep} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
            ids = torch.tensor([prompt_ids + completion], device=loaded.device)
            logits = model(input_ids=ids, **extra).logits[0, -keep:-1]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        top = logprobs.topk(min(k, logprobs.shape[-1]), dim=-1)
        chosen = torch.tensor(completion, device=logprobs.device)
        chosen_logprobs = logprobs.gather(1, chosen[:, None])[:, 0]
    return TopLogprobs(chosen_logprobs.cpu().numpy().astype(np.float32), top.values.cpu().numpy().astype(np.float32),
                       chosen_ids=np.asarray(completion, dtype=np.int32),
                       ids=top.indices.cpu().numpy().astype(np.int32))


def _completion_ids(loaded: Any, prompt: str, prompt_ids: list[int], text: str) -> list[int]:
    """``text``'s tokens as they follow ``prompt``: the joint encoding's tail where it starts with the prompt's
    own tokens (a SentencePiece space stays on its word), else ``text`` encoded alone."""
    if not text:
        return []
    if not loaded.is_encoder_decoder:
        joint = loaded.encode_prompt(prompt + text)
        if joint[:len(prompt_ids)] == prompt_ids and len(joint) > len(prompt_ids):
            return joint[len(prompt_ids):]
    return list(loaded.tokenizer(text, add_special_tokens=False)["input_ids"])


def _fail(batch: list[_Pending], error: TeacherError) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(error)
