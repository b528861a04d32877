"""``ftcot export model|dataset|tasks``: take a trained student, its training data or the benchmarks elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from ftcot.cli.options import DataDir, data_root_option, output_path

app = typer.Typer(help="Export a student as a plain transformers model, training data as a Hub dataset, or the "
                       "benchmarks as lm-evaluation-harness tasks.", no_args_is_help=True)

_stdout = Console(highlight=False, soft_wrap=True)


@app.command("model")
def export_model_command(
    ckpt_dir: Annotated[Path, typer.Argument(metavar="CKPT_DIR", help="A directory written by 'ftcot train'")],
    to: Annotated[Path, typer.Option("--to", help="Directory to write (new or empty; --force replaces it)",
                                                parser=output_path("--to"))],
    dtype: Annotated[str, typer.Option(help="auto (what 'ftcot evaluate' runs in: bf16 where native, else "
                                            "float32), float32, bfloat16 or float16")] = "auto",
    eval_dir: Annotated[Optional[list[Path]], typer.Option(
        "--eval", help="An EVAL_DIR of this checkpoint to report on the card (repeatable); finished evaluations "
                       "next to CKPT_DIR are found without it")] = None,
    find: Annotated[bool, typer.Option("--find-evals/--no-find-evals",
                                       help="Look for evaluations of CKPT_DIR next to it")] = True,
    force: Annotated[bool, typer.Option(help="Replace a non-empty --to")] = False,
) -> None:
    """The best epoch as a transformers directory: LoRA merged, safetensors, tokenizer, generation config, card."""
    from ftcot.export.model import export_model

    result = export_model(ckpt_dir, to, dtype=dtype, eval_dirs=list(eval_dir or []), find_evaluations=find,
                          force=force)
    how = "LoRA merged into " if result.kind == "lora" else "fully fine-tuned "
    _stdout.print(f"wrote {result.to}: {how}{result.base}, epoch {result.epoch}, {result.dtype}; "
                  f"{len(result.evaluations)} evaluation(s) on the card", markup=False)
    for evaluation in result.evaluations:
        _stdout.print(f"  {evaluation.task} {evaluation.split} {evaluation.method}: "
                      f"{100 * evaluation.accuracy:.2f}% of {evaluation.n} ({evaluation.eval_dir})", markup=False)


@app.command("dataset")
def export_dataset_command(
    data_dir: Annotated[Path, typer.Argument(metavar="DATA_DIR", help="A directory written by 'ftcot curate'")],
    to: Annotated[Path, typer.Option("--to", help="Directory to write (new or empty; --force replaces it)",
                                                parser=output_path("--to"))],
    force: Annotated[bool, typer.Option(help="Replace a non-empty --to")] = False,
) -> None:
    """The training rows as Parquet, prompt/completion JSONL and chat JSONL, with a dataset card."""
    from ftcot.export.dataset import export_dataset

    result = export_dataset(data_dir, to, force=force)
    counts = ", ".join(f"{n} {split}" for split, n in result.rows.items())
    _stdout.print(f"wrote {result.to}: {counts} rows; load with datasets.load_dataset('{result.to}')", markup=False)


@app.command("tasks")
def export_tasks_command(
    to: Annotated[Path, typer.Option("--to", help="Directory to write (new or empty; --force replaces it)",
                                                parser=output_path("--to"))],
    tasks: Annotated[Optional[list[str]], typer.Argument(
        metavar="TASK", help="Task keys or your own task files (.jsonl/.csv); default: the 12 benchmarks",
        show_default=False)] = None,
    answer_type: Annotated[Optional[str], typer.Option(
        help="For your own task files: number, letter, yes/no or text")] = None,
    force: Annotated[bool, typer.Option(help="Replace a non-empty --to")] = False,
    data_dir: DataDir = None,
) -> None:
    """The test splits as an lm-evaluation-harness task directory: zs, zs_cot, ft_cot and ft per task."""
    from ftcot.export.lm_eval import GROUP, export_tasks

    result = export_tasks(list(tasks or []), to, data_root=data_root_option(data_dir), answer_type=answer_type,
                          force=force)
    questions = sum(result.questions.values())
    _stdout.print(f"wrote {result.to}: {len(result.tasks)} lm-eval tasks ({len(result.questions)} task(s), "
                  f"{questions} test questions)", markup=False)
    _stdout.print(f"run: lm_eval --model hf --model_args pretrained=MODEL_DIR --include_path {result.to} "
                  f"--tasks {GROUP}", markup=False)
