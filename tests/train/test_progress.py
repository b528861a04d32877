"""Training progress where nobody watches a terminal: a log file gets plain lines, not a bar's redraws."""

from __future__ import annotations

import io

from rich.console import Console

from ftcot.train.progress import TrainProgress


def _run(console: Console, every_s: float) -> None:
    with TrainProgress(console, total_steps=4, done_steps=1, every_s=every_s) as progress:
        for _ in range(3):
            progress.step(1, 2, 0.5, 1234.0)


def test_a_log_file_gets_one_plain_line_per_interval_and_no_carriage_returns():
    log = io.StringIO()
    _run(Console(file=log, force_terminal=False, width=120), every_s=0)
    lines = [line for line in log.getvalue().splitlines() if line.startswith("train: ")]
    assert lines == [f"train: epoch 1/2, step {n} of 4, loss 0.5000, 1,234 tok/s, 0 s" for n in (2, 3, 4)]
    assert "\r" not in log.getvalue()
    quiet = io.StringIO()
    _run(Console(file=quiet, force_terminal=False, width=120), every_s=3600)
    assert "train: " not in quiet.getvalue()  # not more often than asked


def test_a_terminal_gets_the_bar_and_no_extra_lines():
    screen = io.StringIO()
    _run(Console(file=screen, force_terminal=True, width=120), every_s=0)
    assert "train: epoch" not in screen.getvalue()
