"""The evaluate stage's settings: one model from which ``ftcot evaluate``, ``evaluate:`` in a config and
``ftcot.evaluate()`` are derived (:mod:`ftcot.settings`). An experiment's ``evaluate:`` block is this model
less what the experiment plans itself (the model, task, method and split scheme of each cell).
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import field_validator

from ftcot.evaluate.methods import METHODS
from ftcot.settings import Settings, option


class EvaluateConfig(Settings):
    """``ftcot evaluate``: score a student or a prompting baseline on a task's split."""

    model: str = option(help="A CKPT_DIR from 'ftcot train', a model spec (tiny-gpt2, gemma-270m, a model "
                             "directory) or openai:MODEL")
    task: str = option(help="Task key, or your own task file")
    method: Optional[Literal[METHODS]] = option(  # type: ignore[valid-type]
        None, help=f"{', '.join(METHODS)}; default: the CKPT_DIR's template (required for other models)")
    split: Literal["test", "train", "all"] = option("test", help="test, train or all")
    split_scheme: Literal["default", "template"] = option("default", help="default or template")
    batch_size: int = option(16, help="Questions generated together (API: requests in flight)", ge=1)
    max_new_tokens: Optional[int] = option(None, help="Token budget of the output (zs_cot: of the rationale); "
                                                      "default 256 ft_cot, 16 ft/ft_dss, 128 zs_cot/fs_cot, 32 zs",
                                           ge=1)
    limit: Optional[int] = option(None, help="Only the first N samples of the split", ge=1)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = option(
        "auto", help="auto, float32, bfloat16 or float16 (local models)")
    device: str = option("auto", help="auto, cpu, cuda or cuda:N (local models)")
    base_url: Optional[str] = option(None, help="openai: models: the server's /v1 URL")
    api_key_env: Optional[str] = option(None, help="openai: models: variable holding the key")
    answer_type: Optional[str] = option(None, help="For your own task: number, letter, yes/no, text")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        import re

        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", value):
            raise ValueError(f"unknown device {value!r}: use auto, cpu, cuda or cuda:N")
        return value
