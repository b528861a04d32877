"""An evaluation, from its :class:`~ftcot.evaluate.config.EvaluateConfig`: the one function ``ftcot evaluate``,
``ftcot.evaluate()`` and ``ftcot run``'s evaluate stages call."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from ftcot.evaluate.config import EvaluateConfig
from ftcot.evaluate.runner import EvalResult
from ftcot.tasks import Task


def run_evaluate(config: EvaluateConfig, out: Path, *, data_root: Path | None = None, progress: bool = False,
                 console: Console | None = None, task: Task | None = None) -> EvalResult:
    """Evaluate ``config.model`` into EVAL_DIR ``out`` (a rerun resumes); ``task``: already loaded."""
    from ftcot.data_root import resolve_data_root
    from ftcot.evaluate import evaluate
    from ftcot.tasks import load_task

    if task is None:
        task = load_task(config.task, resolve_data_root(data_root), config.answer_type)
    return evaluate(task, config.model, Path(out), method=config.method, split=config.split,
                    split_scheme=config.split_scheme, batch_size=config.batch_size,
                    max_new_tokens=config.max_new_tokens, limit=config.limit, dtype=config.dtype, device=config.device,
                    base_url=config.base_url, api_key_env=config.api_key_env, progress=progress, console=console)
