"""``ftcot train``: fine-tune a student on a curated DATA_DIR.

Distributed training is the same command under ``accelerate launch``:
``accelerate launch --config_file configs/accelerate/ddp.yaml -m ftcot train DATA_DIR --out CKPT_DIR``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ftcot.errors import FtcotError
from ftcot.train.config import TrainConfig, help_of

_DEFAULTS = TrainConfig()


def train_command(
    data_dir: Annotated[Path, typer.Argument(help="DATA_DIR written by 'ftcot curate'")],
    out: Annotated[Path, typer.Option("--out", help="CKPT_DIR: checkpoints, best/ and train.json (rerun to resume)")],
    student: Annotated[str, typer.Option(help=help_of("student"))] = _DEFAULTS.student,
    lora: Annotated[bool, typer.Option("--lora/--full", help=help_of("lora"))] = _DEFAULTS.lora,
    lora_r: Annotated[int, typer.Option(help=help_of("lora_r"))] = _DEFAULTS.lora_r,
    lora_alpha: Annotated[int, typer.Option(help=help_of("lora_alpha"))] = _DEFAULTS.lora_alpha,
    lora_dropout: Annotated[float, typer.Option(help=help_of("lora_dropout"))] = _DEFAULTS.lora_dropout,
    dropout: Annotated[Optional[float], typer.Option(help=help_of("dropout"))] = None,
    epochs: Annotated[int, typer.Option(help=help_of("epochs"))] = _DEFAULTS.epochs,
    lr: Annotated[float, typer.Option(help=help_of("lr"))] = _DEFAULTS.lr,
    weight_decay: Annotated[float, typer.Option(help=help_of("weight_decay"))] = _DEFAULTS.weight_decay,
    batch_size: Annotated[int, typer.Option(help=help_of("batch_size"))] = _DEFAULTS.batch_size,
    grad_accum: Annotated[int, typer.Option(help=help_of("grad_accum"))] = _DEFAULTS.grad_accum,
    bf16: Annotated[Optional[bool], typer.Option("--bf16/--no-bf16", help=help_of("bf16"))] = None,
    max_length: Annotated[int, typer.Option(help=help_of("max_length"))] = _DEFAULTS.max_length,
    allow_truncation: Annotated[bool, typer.Option(help=help_of("allow_truncation"))] = False,
    seed: Annotated[int, typer.Option(help=help_of("seed"))] = _DEFAULTS.seed,
    eval_batch_size: Annotated[int, typer.Option(help=help_of("eval_batch_size"))] = _DEFAULTS.eval_batch_size,
    max_new_tokens: Annotated[Optional[int], typer.Option(help=help_of("max_new_tokens"))] = None,
    pad_multiple: Annotated[Optional[int], typer.Option(help=help_of("pad_multiple"))] = None,
    loss_chunk: Annotated[Optional[int], typer.Option(help=help_of("loss_chunk"))] = None,
    device: Annotated[str, typer.Option(help=help_of("device"))] = _DEFAULTS.device,
    rationale_weight: Annotated[Optional[float], typer.Option(help=help_of("rationale_weight"))] = None,
    task: Annotated[Optional[str], typer.Option(help="Task key or file (default: the DATA_DIR's task)")] = None,
    answer_type: Annotated[Optional[str], typer.Option(help="Answer type of a task file")] = None,
    base_url: Annotated[Optional[str], typer.Option(help="Fine-tuning API endpoint (openai: students)")] = None,
    api_key_env: Annotated[str, typer.Option(help="Environment variable with the API key (openai: students)")] = "OPENAI_API_KEY",
    timeout: Annotated[Optional[float], typer.Option(help="Stop waiting for an API job after this many seconds; rerun to resume it")] = None,
) -> None:
    """Fine-tune a student on teacher rationales (loss on the completion only); rerun to resume."""
    if student.startswith("openai:"):
        if rationale_weight is not None:
            raise FtcotError("--rationale-weight weighs a local student's loss; a provider's fine-tuning job "
                             "trains on every row of the DATA_DIR alike. Drop the option for openai: students.")
        _train_api_student(data_dir, student.removeprefix("openai:"), out, base_url, api_key_env, timeout)
        return
    from ftcot.train import train

    config = TrainConfig(student=student, lora=lora, lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                         dropout=dropout,
                         epochs=epochs, lr=lr, weight_decay=weight_decay, batch_size=batch_size,
                         grad_accum=grad_accum, bf16=bf16, max_length=max_length, allow_truncation=allow_truncation,
                         seed=seed, eval_batch_size=eval_batch_size, max_new_tokens=max_new_tokens, pad_multiple=pad_multiple,
                         loss_chunk=loss_chunk, device=device, rationale_weight=rationale_weight)
    train(data_dir, out, config, task=task, answer_type=answer_type)


def _train_api_student(data_dir: Path, base_model: str, out: Path, base_url: str | None, api_key_env: str,
                       timeout: float | None) -> None:
    """A provider's fine-tuning job with its default hyperparameters (spec §4), resumable by job id."""
    from rich.console import Console

    from ftcot.train.openai_student import DEFAULT_BASE_URL, train_openai_student

    err = Console(stderr=True, highlight=False)
    result = train_openai_student(data_dir, base_model, out, base_url=base_url or DEFAULT_BASE_URL,
                                  api_key_env=api_key_env, timeout_s=timeout,
                                  progress=lambda line: err.print(line, markup=False))
    Console().print(f"wrote {out / 'train.json'}: student {result['student']}")
