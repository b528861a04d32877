"""``replay:``: a teacher that answers from recorded outputs, offline and free.

Records are in the shared teacher format (``data/README.md``): one JSON object
per line with ``prompt`` and ``answer_completion``, plus
``reasoning_completion`` and ``answer_prompt`` for Zero-shot-CoT. A prompt is
answered by exact match:

- a Zero-shot-CoT stage-1 ``prompt`` → its ``reasoning_completion``;
- a stage-2 ``answer_prompt`` → its ``answer_completion``;
- a zero-shot ``prompt`` → its ``answer_completion``.

A request names its question (``sample_index``) and is answered from that
question's record: some benchmarks hold the same question text twice
(MultiArith 340 and 350, StrategyQA 42 and 1987), and each keeps its own
recorded completion. A record without ``sample_index``, or a request for an
index that was never recorded, falls back to the first record of that prompt.

A prompt that was never recorded fails that item with :class:`TeacherError`;
nothing is ever invented. The records hold one greedy completion per prompt,
so sampling (temperature > 0, or more than one sample per question) is refused
before anything runs. ``max_tokens`` is not enforced: the recorded text is
returned as it was generated (128 tokens for rationales, 32 for answers).
The records hold no log-probabilities: ``top_logprobs`` is refused for a
replay teacher where the settings are read (:mod:`ftcot.teach.config`).

``replay:text-davinci-002`` reads ``<data_root>/teacher/text-davinci-002/``
(``zs_cot/*.jsonl`` and ``zs/*.jsonl``); ``replay:PATH`` reads a directory of
that layout, a directory of JSONL files, or one JSONL file (an ``ftcot teach
export`` works).
"""

from __future__ import annotations

import time
from pathlib import Path

from ftcot.errors import FtcotError
from ftcot.jsonl import read_jsonl, require_field
from ftcot.teach.records import Completion, CompletionRequest, TeacherError

# Recorded outputs carry no finish reason; the report counts these as unknown.
UNKNOWN_FINISH = "unknown"


class ReplayTeacher:
    supports_n = False
    keyed_by_question = True  # the store keys identical prompts of different questions apart

    def __init__(self, source: str, data_root: Path | None = None) -> None:
        self.files = _resolve(source, data_root)
        label = Path(source).stem if Path(source).suffix == ".jsonl" else Path(source).name
        self.name = f"replay:{label or source}"
        self._answers: dict[tuple[str, int | None], str] | None = None

    def check_settings(self, *, temperature: float, samples: int) -> None:
        """Refuse sampling up front: the records hold one greedy completion per prompt."""
        if temperature > 0 or samples > 1:
            raise FtcotError(
                f"{self.name} replays one recorded greedy completion per question, so it cannot "
                f"sample (got --temperature {temperature:g} --samples {samples}); "
                f"use --temperature 0 --samples 1, or a live teacher (openai:, hf:).")

    async def complete(self, request: CompletionRequest) -> list[Completion]:
        if request.temperature > 0 or request.n > 1:
            raise TeacherError(f"{self.name} cannot sample (temperature {request.temperature:g}, n {request.n}).")
        started = time.monotonic()
        answers = self._index()
        text = answers.get((request.prompt, request.question), answers.get((request.prompt, None)))
        if text is None:
            raise TeacherError(f"{self.name} has no recorded completion for this prompt "
                               f"(starts {request.prompt[:60]!r}).")
        return [Completion(text, UNKNOWN_FINISH, 0, 0, time.monotonic() - started)]

    async def aclose(self) -> None:
        return None

    def _index(self) -> dict[tuple[str, int | None], str]:
        """(prompt, sample_index) → recorded text, and (prompt, None) → the first record's."""
        if self._answers is None:
            answers: dict[tuple[str, int | None], str] = {}

            def add(prompt: str, index: int | None, text: str) -> None:
                answers.setdefault((prompt, None), text)
                if index is not None:
                    answers.setdefault((prompt, index), text)

            for path in self.files:
                for line, record in read_jsonl(path):
                    prompt = require_field(record, "prompt", path, line)
                    index = record.get("sample_index")
                    index = index if isinstance(index, int) else None
                    if "reasoning_completion" in record and "answer_prompt" in record:
                        add(prompt, index, record["reasoning_completion"])
                        add(record["answer_prompt"], index, require_field(record, "answer_completion", path, line))
                    else:
                        add(prompt, index, require_field(record, "answer_completion", path, line))
            self._answers = answers
        return self._answers


def _resolve(source: str, data_root: Path | None) -> list[Path]:
    path = Path(source).expanduser()
    if not path.exists() and data_root is not None and "/" not in source:
        path = Path(data_root) / "teacher" / source
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(path.glob("*.jsonl")) + sorted(path.glob("*/*.jsonl"))
        if files:
            return files
        raise FtcotError(f"replay:{source}: no .jsonl records in {path} (expected zs_cot/<task>.jsonl, "
                         f"zs/<task>.jsonl or *.jsonl).")
    known = ""
    if data_root is not None and (Path(data_root) / "teacher").is_dir():
        names = sorted(p.name for p in (Path(data_root) / "teacher").iterdir() if p.is_dir())
        known = f" Recorded teachers under {data_root}/teacher: {', '.join(names) or 'none'}."
    raise FtcotError(f"replay:{source}: no such recorded teacher or file.{known} "
                     f"Use replay:NAME (a directory under <data>/teacher/) or replay:PATH.")
