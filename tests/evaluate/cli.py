"""Run ``ftcot evaluate`` in a subprocess, as a user would.

Until ``evaluate`` is registered in ``ftcot.cli`` (owned elsewhere), the
subprocess registers it on the real app itself; once it is there this adds
nothing, so the tests run the real entry point either way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_ENTRY = (
    "from ftcot.cli import app, main\n"
    "from ftcot.cli.evaluate import evaluate_command\n"
    "if 'evaluate' not in {c.name for c in app.registered_commands}:\n"
    "    app.command('evaluate')(evaluate_command)\n"
    "main()\n"
)


def evaluate_argv(*args: str | Path) -> list[str]:
    return [sys.executable, "-c", _ENTRY, "evaluate", *map(str, args)]


def run_evaluate(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(evaluate_argv(*args), capture_output=True, text=True, env=env, timeout=timeout)
