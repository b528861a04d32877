"""Where evaluation generations come from: a local model, or an OpenAI-compatible API.

Both take a batch of :class:`~ftcot.models.generation.GenerationRequest` and
return one :class:`~ftcot.models.generation.Generation` each, in order, so the
runner does not care which it has.

- :class:`LocalBackend` hands the whole batch to :func:`ftcot.models.generate`
  (one ``model.generate`` call per ``batch_size`` prompts, KV cache, left
  padding for decoders).
- :class:`ApiBackend` sends the batch as concurrent requests (at most
  ``batch_size`` in flight) through the teach stage's
  :class:`~ftcot.teach.backends.openai_compat.OpenAICompatTeacher`, which does
  the retries. The client session lives on one event loop for the whole run
  (an :class:`asyncio.Runner`), since the teacher's pooled session is bound to
  the loop it was created in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from ftcot.errors import FtcotError
from ftcot.models.generation import FINISH_LENGTH, FINISH_STOP, Generation, GenerationRequest
from ftcot.models.loading import LoadedModel


class Backend(Protocol):
    name: str
    is_encoder_decoder: bool
    api: bool
    # What the weights compute in and where ("bfloat16", "cpu"); None for an API, whose server decides.
    dtype: str | None
    device: str | None

    def generate(self, requests: Sequence[GenerationRequest], batch_size: int) -> list[Generation]: ...

    def close(self) -> None: ...


class LocalBackend:
    api = False

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.name = loaded.spec
        self.is_encoder_decoder = loaded.is_encoder_decoder
        weight = next(loaded.model.parameters())
        self.dtype, self.device = str(weight.dtype).removeprefix("torch."), str(weight.device)

    def generate(self, requests: Sequence[GenerationRequest], batch_size: int) -> list[Generation]:
        from ftcot.models import generate

        return generate(self.loaded, list(requests), batch_size=batch_size)

    def close(self) -> None:
        return None


class ApiBackend:
    api = True
    is_encoder_decoder = False  # completion APIs continue the prompt, like a decoder
    dtype = device = None

    def __init__(self, teacher: object) -> None:
        self.teacher = teacher
        self.name = teacher.name  # type: ignore[attr-defined]
        self._runner = asyncio.Runner()

    def generate(self, requests: Sequence[GenerationRequest], batch_size: int) -> list[Generation]:
        return self._runner.run(self._all(requests, batch_size))

    async def _all(self, requests: Sequence[GenerationRequest], batch_size: int) -> list[Generation]:
        from ftcot.teach.records import CompletionRequest, TeacherError

        slots = asyncio.Semaphore(max(1, batch_size))

        async def one(request: GenerationRequest) -> Generation:
            async with slots:
                completion = (await self.teacher.complete(  # type: ignore[attr-defined]
                    CompletionRequest(request.prompt, request.max_new_tokens, 0.0, 1, None, request.stop)))[0]
            # Servers say "stop" for EOS and stop strings alike; anything else ("length", a
            # content filter) means the text did not end by itself.
            finish = FINISH_STOP if completion.finish_reason == "stop" else FINISH_LENGTH
            return Generation(completion.text, finish, completion.prompt_tokens, completion.completion_tokens)

        try:
            return list(await asyncio.gather(*(one(r) for r in requests)))
        except TeacherError as exc:
            raise FtcotError(f"{exc}; finished batches are kept, rerun the same command to continue.") from None

    def close(self) -> None:
        try:
            self._runner.run(self.teacher.aclose())  # type: ignore[attr-defined]
        finally:
            self._runner.close()
