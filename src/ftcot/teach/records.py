"""Records and the backend protocol of the teach stage.

A teacher backend turns one :class:`CompletionRequest` into ``n`` completions.
It knows nothing of tasks, stages or stores: the engine builds the prompts,
asks the store what is missing, and calls the backend only for that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

# The most alternatives a token may carry: what OpenAI's chat API and vLLM return at most.
MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class CompletionRequest:
    prompt: str
    max_tokens: int
    temperature: float = 0.0
    n: int = 1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # The sample index of the question asked; only teachers that answer per question
    # (replay, whose records are per question) read it.
    question: int | None = None


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no truth value; a Completion compares it by identity
class TopLogprobs:
    """A completion's top-K log-probabilities, token by token (the teacher setting ``top_logprobs`` K).

    Row t is completion token t: the token the teacher wrote there (``chosen``) with its log-probability, and
    the K tokens it found most likely there, most likely first. Tokens are ids where the backend gives them
    (``hf:``, vLLM's ``token_id:N``), else their text (OpenAI, llama.cpp); a row with fewer than K pads with
    id -1 (text "") and log-probability -inf. Log-probabilities are the model's own (before temperature), as
    the servers report them.
    """

    chosen_logprobs: np.ndarray  # (T,) float32
    logprobs: np.ndarray  # (T, K) float32, descending
    chosen_ids: np.ndarray | None = None  # (T,) int32
    ids: np.ndarray | None = None  # (T, K) int32
    chosen_tokens: tuple[str, ...] | None = None  # (T,) where there are no ids
    tokens: tuple[tuple[str, ...], ...] | None = None  # (T, K)

    @property
    def k(self) -> int:
        return int(self.logprobs.shape[1])

    def __len__(self) -> int:
        return int(self.logprobs.shape[0])

    def cut(self, k: int) -> TopLogprobs:
        """The same with at most ``k`` alternatives a token (the most likely: rows are sorted)."""
        if self.k <= k:
            return self
        return replace(self, logprobs=self.logprobs[:, :k], ids=None if self.ids is None else self.ids[:, :k],
                       tokens=None if self.tokens is None else tuple(row[:k] for row in self.tokens))

    @classmethod
    def from_positions(cls, positions: Sequence[tuple[int | str, float, Sequence[tuple[int | str, float]]]],
                       k: int | None = None) -> TopLogprobs:
        """From ``(chosen token, its log-prob, [(token, log-prob), …])`` per position, tokens all ids or all
        text. The alternatives are sorted, cut to ``k`` (default: the widest position) and padded to it."""
        rows = [sorted(alternatives, key=lambda pair: -pair[1]) for _, _, alternatives in positions]
        width = k if k is not None else max((len(row) for row in rows), default=0)
        rows = [row[:width] for row in rows]
        by_id = all(isinstance(token, (int, np.integer)) for token, _, _ in positions) and all(
            isinstance(token, (int, np.integer)) for row in rows for token, _ in row)
        logprobs = np.full((len(rows), width), -np.inf, dtype=np.float32)
        for t, row in enumerate(rows):
            logprobs[t, :len(row)] = [lp for _, lp in row]
        chosen_logprobs = np.array([lp for _, lp, _ in positions], dtype=np.float32).reshape(len(rows))
        if by_id:
            ids = np.full((len(rows), width), -1, dtype=np.int32)
            for t, row in enumerate(rows):
                ids[t, :len(row)] = [token for token, _ in row]
            chosen = np.array([token for token, _, _ in positions], dtype=np.int32).reshape(len(rows))
            return cls(chosen_logprobs, logprobs, chosen_ids=chosen, ids=ids)
        tokens = tuple(tuple(str(token) for token, _ in row) + ("",) * (width - len(row)) for row in rows)
        return cls(chosen_logprobs, logprobs, chosen_tokens=tuple(str(token) for token, _, _ in positions),
                   tokens=tokens)


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop", "length", …, as the backend reports it
    prompt_tokens: int = 0  # prompt tokens billed for this request (shared by its n choices)
    completion_tokens: int = 0
    latency_s: float = 0.0
    # A reasoning model's reasoning when the server returns it apart from the text
    # (``reasoning_content`` in chat replies: DeepSeek, vLLM's reasoning parsers).
    reasoning: str | None = None
    # The top-K log-probabilities of every token of ``text``, where the teacher was asked for them
    # (``top_logprobs``) and returned them; None otherwise.
    logprobs: TopLogprobs | None = None


class TeacherError(Exception):
    """A request failed for good (after retries, or a 4xx other than 429).

    The engine records it against that item and goes on with the others.
    ``retryable`` says whether a later run may try again.
    """

    def __init__(self, message: str, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class Teacher(Protocol):
    """One small protocol for every backend (openai-compatible, hf, replay)."""

    # Identity used in store keys: the same model behind another URL is the same teacher.
    name: str
    # Whether one request with n > 1 returns n independent samples (prompt paid once).
    supports_n: bool
    # Optional: True where the answer depends on the question asked, not only on the
    # prompt text (replay), so identical prompts are keyed apart (TeachSettings.keyed_by_question).
    # Optional: top_logprobs, K > 0 where the backend was built to return each completion's top-K
    # log-probabilities (Completion.logprobs); the run then also asks again for stored greedy
    # completions that lack them (TeachSettings.top_logprobs).
    # Optional: scores_text, True where the backend gives the top-K of a given text by a forward pass
    # (hf:): ``async score(prompt, stored_row) -> Completion`` with the row's text and its top-K; the
    # run then fills the top-K of every stored completion that lacks them, sampled ones too.

    async def complete(self, request: CompletionRequest) -> list[Completion]:
        """``request.n`` completions; fewer only where some failed after others were paid for."""
        ...

    async def aclose(self) -> None: ...
