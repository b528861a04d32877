"""The evaluation loop: batches of questions through the method's stages, judged and appended.

Pending samples (those of the selected split not yet in predictions.jsonl)
are ordered by prompt length so each batch pads little, then sent
``batch_size`` at a time. A batch is fully judged and appended before the next
starts, which is what lets a rerun pick up after a kill.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ftcot.errors import FtcotError
from ftcot.evaluate.backends import Backend
from ftcot.evaluate.judge import judge
from ftcot.evaluate.methods import EvalMethod
from ftcot.evaluate.metrics import compute_metrics
from ftcot.evaluate.store import EvalSettings, EvalStore
from ftcot.models.generation import Generation
from ftcot.tasks import Sample, Task


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    records: list[dict[str, Any]]  # one per selected sample, in split order


def run_evaluation(task: Task, samples: list[Sample], method: EvalMethod, backend: Backend,
                   settings: EvalSettings, store: EvalStore, *, batch_size: int = 16,
                   progress: bool = False, console: Console | None = None) -> EvalResult:
    if batch_size < 1:
        raise FtcotError(f"--batch-size must be at least 1 (got {batch_size}).")
    done = store.done()
    pending = [s for s in samples if s.index not in done]
    pending.sort(key=lambda s: len(method.first_prompt(s.question)), reverse=True)
    correct_so_far = sum(bool(done[s.index]["correct"]) for s in samples if s.index in done)
    tokens, seconds = 0, 0.0

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("acc {task.fields[accuracy]}"), TextColumn("{task.fields[speed]} tok/s"),
                   TimeElapsedColumn(), console=console or Console(stderr=True), disable=not progress)
    with bar:
        finished = len(samples) - len(pending)
        handle = bar.add_task(f"{task.key} {method.method}", total=len(samples), completed=finished,
                              accuracy=_pct(correct_so_far, finished), speed="–")
        for start in range(0, len(pending), batch_size):
            batch = pending[start:start + batch_size]
            began = time.perf_counter()
            records = _run_batch(task, batch, method, backend, batch_size)
            elapsed = time.perf_counter() - began
            for record in records:
                record["generation_s"] = round(elapsed / len(records), 6)
                if backend.dtype is not None:  # per record: a rerun on other hardware may finish the split
                    record.update(dtype=backend.dtype, device=backend.device)
            store.append(records)
            done.update((r["sample_index"], r) for r in records)
            finished += len(records)
            correct_so_far += sum(r["correct"] for r in records)
            tokens += sum(r["completion_tokens"] for r in records)
            seconds += elapsed
            bar.update(handle, completed=finished, accuracy=_pct(correct_so_far, finished),
                       speed=f"{tokens / seconds:.1f}" if seconds else "–")

    records = [done[s.index] for s in samples]
    metrics = compute_metrics(records, settings, task.spec, generated_now=len(pending))
    store.write_metrics(metrics)
    return EvalResult(metrics, records)


def _run_batch(task: Task, batch: list[Sample], method: EvalMethod, backend: Backend,
               batch_size: int) -> list[dict[str, Any]]:
    firsts = [method.first_request(s.question) for s in batch]
    first_out = backend.generate(firsts, batch_size)
    # Zero-shot-CoT: the whole batch's rationales first, then the whole batch's answers.
    answers = [method.second_request(r.prompt, g.text) for r, g in zip(firsts, first_out)] if method.two_stage else []
    second_out: list[Generation | None] = list(backend.generate(answers, batch_size)) if answers else [None] * len(batch)
    records = []
    for i, sample in enumerate(batch):
        first, second = first_out[i], second_out[i]
        stages = [first] if second is None else [first, second]
        output = stages[-1].text
        verdict = judge(output, sample.answer, task.spec, method.template, [g.finish_reason for g in stages])
        record: dict[str, Any] = {
            "sample_index": sample.index,
            "question": sample.question,
            "answer": sample.answer,
            "prompt": firsts[i].prompt,
        }
        if second is not None:
            record["rationale"] = first.text
            record["answer_prompt"] = answers[i].prompt
        record.update(
            output=output,
            prediction=verdict.prediction,
            correct=verdict.correct,
            format_correct=verdict.format_correct,
            complete=verdict.complete,
            finish_reason=stages[-1].finish_reason,
            prompt_tokens=sum(g.prompt_tokens for g in stages),
            completion_tokens=sum(g.completion_tokens for g in stages),
        )
        records.append(record)
    return records


def _pct(correct: int, n: int) -> str:
    return f"{100 * correct / n:.1f}%" if n else "–"
