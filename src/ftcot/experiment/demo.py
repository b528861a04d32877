"""``ftcot demo``: the paper's finding, offline, on a laptop CPU.

Coin flip, the paper's teacher (text-davinci-002, replayed from its recorded
outputs) and Gemma 3 270M as the student (LoRA, bf16, 3 epochs): the teacher's
Zero-shot-CoT, the student prompted zero-shot, the student fine-tuned on
answers (vanilla Fine-tune) and on the teacher's rationales (Fine-tune-CoT).
Its measured results and time are in README ("The demo"), the one place
they are stated. Why coin flip: the teacher is right on 91% of its
training questions, so the student gets 320 rationales, and its answers are
short enough for a 270M model to learn the reasoning format in 3 epochs.

``--quick`` swaps in tiny-gpt2 (random init, built from a config) on a
64-question subset: a check of the whole pipeline, not a result. configs/demo.yaml is :data:`DEMO` as YAML (a test checks both plan the same stages).
"""

from __future__ import annotations

from typing import Any

DEMO: dict[str, Any] = {
    "name": "demo",
    "tasks": ["coin_flip"],
    "teachers": ["replay:text-davinci-002"],
    "methods": ["zs", "ft", "ft_cot"],
    "students": [{"spec": "gemma-270m", "lora": True, "epochs": 3}],
}

QUICK: dict[str, Any] = {
    **DEMO,
    "name": "demo-quick",
    "students": [{"spec": "tiny-gpt2", "epochs": 3, "lr": 1e-3, "dropout": 0.0, "max_length": 1024}],
    "train_sizes": [64],
    "evaluate": {"limit": 50, "max_new_tokens": 512},
}
