"""metrics.json from the prediction records, and the summary table printed at the end."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table

from ftcot.evaluate.store import EvalSettings
from ftcot.tasks.spec import TaskSpec


def compute_metrics(records: Sequence[dict[str, Any]], settings: EvalSettings, spec: TaskSpec,
                    generated_now: int) -> dict[str, Any]:
    """Accuracy and rates over ``records``; speed over every record's own tokens and time.

    Tokens/s sums each record's completion tokens and its share of its batch's
    wall time, so it stays meaningful when an evaluation was finished by a rerun.
    """
    n = len(records)
    correct = sum(bool(r["correct"]) for r in records)
    completion_tokens = sum(int(r.get("completion_tokens", 0)) for r in records)
    prompt_tokens = sum(int(r.get("prompt_tokens", 0)) for r in records)
    seconds = sum(float(r.get("generation_s", 0.0)) for r in records)
    return {
        "task": settings.task,
        "method": settings.method,
        "template": settings.template,
        "model": settings.model,
        "split": settings.split,
        "split_scheme": settings.split_scheme,
        "n": n,
        "correct": correct,
        "accuracy": correct / n if n else 0.0,
        "random_accuracy": spec.random_accuracy,
        "format_rate": _rate(records, "format_correct"),
        "complete_rate": _rate(records, "complete"),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "generation_s": round(seconds, 3),
        "tokens_per_s": completion_tokens / seconds if seconds > 0 else None,
        "generated_this_run": generated_now,
        "max_new_tokens": settings.max_new_tokens,
        "dtype": settings.dtype,
        # What the predictions were generated in, as their records say (None: an API, or records older
        # than this field); "bfloat16+float32" when a rerun on other hardware finished the split.
        "precision": _joined(records, "dtype"),
        "device": _joined(records, "device"),
    }


def _joined(records: Sequence[dict[str, Any]], field: str) -> str | None:
    return "+".join(sorted({str(r[field]) for r in records if r.get(field)})) or None


def _rate(records: Sequence[dict[str, Any]], flag: str) -> float:
    return sum(bool(r[flag]) for r in records) / len(records) if records else 0.0


def summary_table(metrics: dict[str, Any]) -> Table:
    table = Table(title=f"{metrics['task']} ({metrics['split']}) · {metrics['method']} · {metrics['model']}")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("samples", str(metrics["n"]))
    table.add_row("accuracy", f"{100 * metrics['accuracy']:.2f}% ({metrics['correct']}/{metrics['n']})")
    table.add_row("random guess", f"{100 * metrics['random_accuracy']:.2f}%")
    table.add_row("answer format ok", f"{100 * metrics['format_rate']:.1f}%")
    table.add_row("ended by itself", f"{100 * metrics['complete_rate']:.1f}%")
    speed = metrics["tokens_per_s"]
    table.add_row("tokens/s", "–" if speed is None else f"{speed:.1f}")
    table.add_row("generated this run", str(metrics["generated_this_run"]))
    if metrics.get("precision"):
        table.add_row("precision", f"{metrics['precision']} ({metrics['device']})")
    return table
