"""ftcot: Fine-tune-CoT — a large teacher's rationales teach a small student to reason.

From Python (see :mod:`ftcot.api`)::

    import ftcot
    run = ftcot.teach("coin_flip", "replay:text-davinci-002", "runs/teach")
    data = ftcot.curate(run.out, "runs/data")
    student = ftcot.train(data.out, "runs/ckpt", student="tiny-gpt2", epochs=1)
    print(ftcot.evaluate(student.out, "coin_flip", "runs/eval").accuracy)
    ftcot.Experiment({"tasks": ["coin_flip"], ...}).run()
    ftcot.export_model(student.out, "my-student")      # a plain transformers directory
    ftcot.export_dataset(data.out, "my-dataset")       # a Hub dataset (Parquet + JSONL + card)

``import ftcot`` imports nothing heavy: every name is loaded when first used.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

__version__ = "0.1.0"

# Names of the Python API and the module each comes from, loaded on first use.
_LAZY = {
    "Experiment": "ftcot.api",
    "TeachResult": "ftcot.api",
    "CurateResult": "ftcot.api",
    "TrainResult": "ftcot.api",
    "EvalResult": "ftcot.api",
    "export_model": "ftcot.export",
    "export_dataset": "ftcot.export",
    "FtcotError": "ftcot.errors",
}
# The stages are packages (ftcot.teach.engine, ftcot.curate.dataset, …) and, called, the API's functions.
STAGES = ("teach", "curate", "train", "evaluate")

__all__ = [*_LAZY, *STAGES, "__version__"]


class _StageModule(ModuleType):
    """A stage's package that can be called: ``ftcot.curate(...)`` is ``ftcot.api.curate(...)``.

    The stage functions share their names with the packages that implement them, and Python sets
    ``ftcot.<name>`` to the package whenever it is imported, so the package itself has to be the callable.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        api = importlib.import_module("ftcot.api")
        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


class _Package(ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        # Called by the import system with each stage's package as it is first imported, by whatever imports it.
        if name in STAGES and type(value) is ModuleType:
            value.__class__ = _StageModule
        super().__setattr__(name, value)


def __getattr__(name: str) -> Any:
    if name in STAGES:
        return importlib.import_module(f"ftcot.{name}")  # callable once imported (see _Package)
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ftcot' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


sys.modules[__name__].__class__ = _Package
