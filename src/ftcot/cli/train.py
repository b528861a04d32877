"""``ftcot train``: fine-tune a student on a curated DATA_DIR.

Distributed training is the same command under ``accelerate launch``:
``accelerate launch --config_file configs/accelerate/ddp.yaml -m ftcot train DATA_DIR --out CKPT_DIR``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ftcot.cli.options import output_path
from ftcot.errors import FtcotError
from ftcot.train.config import TrainConfig


def _train(data_dir: Path, out: Path, task: Optional[str], answer_type: Optional[str], base_url: Optional[str],
           api_key_env: str, timeout: Optional[float], **settings: Any) -> None:
    """Fine-tune a student on teacher rationales (loss on the completion only); rerun to resume."""
    student = settings.get("student") or TrainConfig().student
    given = [flag for flag, value in (("--base-url", base_url), ("--timeout", timeout)) if value is not None]
    if given and not student.startswith("openai:"):  # taken, it would be ignored unsaid
        raise FtcotError(f"{given[0]} is for openai: students (a provider's fine-tuning job); {student} trains "
                         f"here until its epochs end: drop {given[0]}.")
    if student.startswith("openai:"):
        if settings.get("rationale_weight") is not None:
            raise FtcotError("--rationale-weight weighs a local student's loss; a provider's fine-tuning job "
                             "trains on every row of the DATA_DIR alike. Drop the option for openai: students.")
        if settings.get("kd_weight") is not None:
            raise FtcotError("--kd-weight distils the teacher's top-K into a local student's loss; a provider's "
                             "fine-tuning job trains on the text only. Drop the option for openai: students.")
        if settings.get("select_epoch") not in (None, "best"):
            raise FtcotError("--select-epoch picks among a local student's epochs; a provider's fine-tuning job "
                             "returns one model. Drop the option for openai: students.")
        _train_api_student(data_dir, student.removeprefix("openai:"), out, base_url, api_key_env, timeout)
        return
    from ftcot.train import train

    config = TrainConfig(**{k: v for k, v in settings.items() if v is not None or k in _NULLABLE})
    train(data_dir, out, config, task=task, answer_type=answer_type)


# Settings whose None means something (auto), not "not given".
_NULLABLE = ("bf16", "dropout", "max_new_tokens", "pad_multiple", "loss_chunk", "rationale_weight")


def _train_command() -> Any:
    """``ftcot train``'s options: TrainConfig's fields (:mod:`ftcot.settings`), then the API students' ones."""
    from ftcot.settings import cli_options, from_dataclass

    def command(data_dir: Path, **options: Any) -> None:
        extra = {name: options.pop(name) for name in ("out", "task", "answer_type", "base_url", "api_key_env",
                                                      "timeout")}
        _train(data_dir, **extra, **options)

    def keyword(name: str, annotation: Any, default: Any = None) -> inspect.Parameter:
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)

    data_dir = inspect.Parameter("data_dir", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Annotated[
        Path, typer.Argument(metavar="DATA_DIR", help="DATA_DIR written by 'ftcot curate'")])
    out = keyword("out", Annotated[Path, typer.Option(
        "--out", help="CKPT_DIR: checkpoints, best/ and train.json (rerun to resume)", parser=output_path("--out"))],
        inspect.Parameter.empty)
    extra = [
        keyword("task", Annotated[Optional[str], typer.Option(help="Task key or file (default: the DATA_DIR's task)")]),
        keyword("answer_type", Annotated[Optional[str], typer.Option(help="Answer type of a task file")]),
        keyword("base_url", Annotated[Optional[str], typer.Option(help="Fine-tuning API endpoint (openai: students)")]),
        keyword("api_key_env", Annotated[str, typer.Option(
            help="Environment variable with the API key (openai: students)")], "OPENAI_API_KEY"),
        keyword("timeout", Annotated[Optional[float], typer.Option(
            help="Stop waiting for an API job after this many seconds; rerun to resume it")]),
    ]
    command.__signature__ = inspect.Signature([data_dir, out, *cli_options(from_dataclass(TrainConfig, "TrainOptions")),
                                               *extra])
    command.__doc__ = _train.__doc__
    return command


train_command = _train_command()


def _train_api_student(data_dir: Path, base_model: str, out: Path, base_url: str | None, api_key_env: str,
                       timeout: float | None) -> None:
    """A provider's fine-tuning job with its default hyperparameters (as in the paper), resumable by job id."""
    from rich.console import Console

    from ftcot.train.openai_student import DEFAULT_BASE_URL, train_openai_student

    err = Console(stderr=True, highlight=False)
    result = train_openai_student(data_dir, base_model, out, base_url=base_url or DEFAULT_BASE_URL,
                                  api_key_env=api_key_env, timeout_s=timeout,
                                  progress=lambda line: err.print(line, markup=False))
    Console().print(f"wrote {out / 'train.json'}: student {result['student']}")
