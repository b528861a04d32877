"""Stage 0: the benchmarks. Samples, splits, and user tasks, all as :class:`Task`."""

from __future__ import annotations

from pathlib import Path

from ftcot.data_root import resolve_data_root
from ftcot.tasks.registry import BUILTIN_TASKS, get_spec
from ftcot.tasks.spec import AnswerType, Category, Sample, TaskSpec
from ftcot.tasks.task import Task, load_builtin

__all__ = ["AnswerType", "BUILTIN_TASKS", "Category", "Sample", "Task", "TaskSpec", "get_spec", "load_task"]


def load_task(name: str, data_root: str | Path | None = None, answer_type: str | None = None) -> Task:
    """A built-in task by key, or a user's task from a ``.jsonl``/``.csv`` file."""
    if name.endswith((".jsonl", ".csv")) or Path(name).is_file():
        from ftcot.tasks.custom import load_custom_task

        return load_custom_task(Path(name), answer_type)
    return load_builtin(get_spec(name), resolve_data_root(data_root))
