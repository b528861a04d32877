"""Smoke test on the real Gemma 3 270M base model (slow: a first load builds its cache, ~40 s)."""

from __future__ import annotations

import json

import pytest

from tests.evaluate.cli import run_evaluate


@pytest.mark.slow
def test_gemma_zero_shot_baseline_on_a_few_coin_flips(data_root, tmp_path):
    out = tmp_path / "gemma"
    result = run_evaluate("--model", "gemma-270m", "--task", "coin_flip", "--method", "zs", "--limit", "4",
                          "--batch-size", "4", "--max-new-tokens", "4", "--out", out, "--data-dir", data_root,
                          "--json", "--no-progress", timeout=420)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert metrics["n"] == len(rows) == 4 and metrics["model"] == "gemma-270m"
    for row in rows:
        assert row["prompt"].endswith("\nA: The answer (Yes or No) is")
        assert row["output"].strip()  # a real model says something
        assert row["prediction"] in ("yes", "no", "")
        assert 0 < row["completion_tokens"] <= 4
