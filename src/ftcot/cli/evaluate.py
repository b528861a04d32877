"""``ftcot evaluate``: score a student or a prompting baseline on a task's split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from ftcot.cli.options import DataDir, data_root_option
from ftcot.data_root import resolve_data_root
from ftcot.evaluate import METHODS, evaluate
from ftcot.evaluate.metrics import summary_table
from ftcot.evaluate.store import METRICS_FILE, PREDICTIONS_FILE
from ftcot.tasks import load_task


def evaluate_command(
    model: Annotated[str, typer.Option(help="A CKPT_DIR from 'ftcot train', a model spec (tiny-gpt2, gemma-270m, "
                                            "a model directory) or openai:MODEL")],
    task: Annotated[str, typer.Option(help="Task key, or your own task file")],
    out: Annotated[Path, typer.Option(help="EVAL_DIR to write (a rerun into it resumes)")],
    method: Annotated[Optional[str], typer.Option(
        help=f"{', '.join(METHODS)}; default: the CKPT_DIR's template (required for other models)")] = None,
    split: Annotated[str, typer.Option(help="test, train or all")] = "test",
    split_scheme: Annotated[str, typer.Option(help="default or template")] = "default",
    batch_size: Annotated[int, typer.Option(help="Questions generated together (API: requests in flight)")] = 16,
    max_new_tokens: Annotated[Optional[int], typer.Option(
        help="Token budget of the output (zs_cot: of the rationale); default 256 ft_cot, 16 ft/ft_dss, "
             "128 zs_cot/fs_cot, 32 zs")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N samples of the split")] = None,
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16 (local models)")] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N (local models)")] = "auto",
    base_url: Annotated[Optional[str], typer.Option(help="openai: models: the server's /v1 URL")] = None,
    api_key_env: Annotated[Optional[str], typer.Option(help="openai: models: variable holding the key")] = None,
    answer_type: Annotated[Optional[str], typer.Option(help="For your own task: number, letter, yes/no, text")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics.json's object instead of a table")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr")] = True,
    data_dir: DataDir = None,
) -> None:
    """Generate answers for a task's split, score them, write predictions.jsonl and metrics.json."""
    loaded_task = load_task(task, resolve_data_root(data_root_option(data_dir)), answer_type)
    result = evaluate(loaded_task, model, out, method=method, split=split, split_scheme=split_scheme,
                      batch_size=batch_size, max_new_tokens=max_new_tokens, limit=limit, dtype=dtype, device=device,
                      base_url=base_url, api_key_env=api_key_env, progress=progress,
                      console=Console(stderr=True))
    if as_json:
        print(json.dumps(result.metrics))
        return
    console = Console()
    console.print(summary_table(result.metrics))
    console.print(f"wrote {out / PREDICTIONS_FILE} and {out / METRICS_FILE}")
