"""Usage errors (a bad option value, an unknown option) are click's message and exit 2, never a traceback.

typer 0.29 raises its own bundled copy of click's exceptions, which a check for click.ClickException
missed: every bad option value crashed with a traceback.
"""

from __future__ import annotations

import pytest

from tests.cli import run_ftcot


@pytest.mark.parametrize("args, message", [
    (("train", "d8", "--epochs", "x"), "Invalid value for '--epochs'"),
    (("curate", "run", "--bogus"), "No such option: --bogus"),
    (("evaluate", "--model", "tiny-gpt2", "--task", "coin_flip", "--batch-size", "many"), "'--batch-size'"),
])
def test_a_usage_error_is_a_message_not_a_traceback(args, message):
    result = run_ftcot(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and message in result.stderr


@pytest.mark.slow
def test_a_log_file_gets_no_carriage_return_bars(tmp_path, data_root):
    """Into a file, the first run's bars (the GGUF's conversion, loading its weights: a cold cache, as on a new
    machine) wrote a carriage-return line per update."""
    result = run_ftcot("evaluate", "--model", "gemma-270m", "--task", "coin_flip", "--method", "zs", "--limit", "1",
                       "--out", tmp_path / "eval", "--data-dir", data_root, env={"XDG_CACHE_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr + result.stdout
