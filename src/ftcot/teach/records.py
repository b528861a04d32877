"""Records and the backend protocol of the teach stage.

A teacher backend turns one :class:`CompletionRequest` into ``n`` completions.
It knows nothing of tasks, stages or stores: the engine builds the prompts,
asks the store what is missing, and calls the backend only for that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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

    async def complete(self, request: CompletionRequest) -> list[Completion]:
        """``request.n`` completions; fewer only where some failed after others were paid for."""
        ...

    async def aclose(self) -> None: ...
