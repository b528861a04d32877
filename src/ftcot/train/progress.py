"""What a training run shows: a rich progress bar (steps, loss, tok/s) and the end summary."""

from __future__ import annotations

import resource
import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB).

    Under ``ftcot run`` that is the largest stage's so far, not this training's. Not reset per training on
    purpose: resetting Linux's peak (``/proc/self/clear_refs``) also lowers ru_maxrss, so ``/usr/bin/time``
    of a whole run would report only what followed the last reset."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9


# Where the console is not a terminal (a log file, a Ray stage's log, CI), a bar is not drawn: a plain line at
# most this often says the training is alive (a big model's first epoch line can be half an hour away).
LOG_EVERY_S = 60.0


class TrainProgress:
    """A progress bar over optimizer steps; silent on processes other than the main one. Without a terminal, a
    line every ``every_s`` seconds instead of the bar."""

    def __init__(self, console: Console, total_steps: int, done_steps: int, enabled: bool = True,
                 every_s: float = LOG_EVERY_S) -> None:
        self.enabled = enabled
        self.lines = enabled and not console.is_terminal
        self.every_s = every_s
        self.total, self.done = total_steps, done_steps
        self.started = self.last_line = time.monotonic()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} tok/s"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not enabled,
        )
        self.task = self.progress.add_task("train", total=total_steps, completed=done_steps, loss="-", speed="-")

    def __enter__(self) -> TrainProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def step(self, epoch: int, epochs: int, loss: float, tokens_per_s: float) -> None:
        self.progress.update(self.task, advance=1, description=f"epoch {epoch}/{epochs}", loss=f"{loss:.4f}",
                             speed=f"{tokens_per_s:,.0f}")
        self.done += 1
        now = time.monotonic()
        if self.lines and now - self.last_line >= self.every_s:
            self.last_line = now
            self.progress.console.print(
                f"train: epoch {epoch}/{epochs}, step {self.done} of {self.total}, loss {loss:.4f}, "
                f"{tokens_per_s:,.0f} tok/s, {now - self.started:.0f} s", markup=False, highlight=False)

    def note(self, text: str) -> None:
        if self.enabled:
            self.progress.console.print(text)


def summary_table(record: dict) -> Table:
    best = record.get("best_epoch")
    table = Table(title=f"ftcot train: {record['student']} on {record['task']} ({record['template']})")
    for column in ("epoch", "train loss", "val loss", "val acc", "tok/s", "time"):
        table.add_column(column, justify="right")
    for m in record["epochs"]:
        mark = " *" if m["epoch"] == best else ""
        table.add_row(f"{m['epoch']}{mark}", f"{m['train_loss']:.4f}", f"{m['val_loss']:.4f}",
                      f"{100 * m['val_accuracy']:.1f}% ({m['val_correct']}/{m['val_total']})",
                      f"{m['train_tokens_per_s']:,.0f}", f"{m['train_seconds']:.1f}s")
    table.caption = (f"* best epoch {best}; {record['train_examples']} examples, "
                     f"{record['trainable_parameters']:,} trainable parameters, "
                     f"peak RSS {record.get('peak_rss_gb', 0):.2f} GB")
    return table
