"""Gemma 3 270M (the real package): one LoRA step, save, reload through ``load_student``, generate."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from ftcot.models import generate
from ftcot.train import TrainConfig, load_student, train
from ftcot.train.data import collate, read_data_dir, tokenize
from ftcot.train.loss import CompletionLM
from tests.train.conftest import make_coin_flip_dir

pytestmark = pytest.mark.slow


def test_gemma_lora_step_save_reload_generate(data_root, tmp_path):
    data_dir = make_coin_flip_dir(data_root, tmp_path / "data", 8, 1)
    out = tmp_path / "ck"
    config = TrainConfig(student="gemma-270m", lora=True, epochs=1, batch_size=8, max_new_tokens=8, device="cpu")
    record = train(data_dir, out, config)

    epoch = record["epochs"][0]
    assert epoch["step"] == 1 and len(epoch["step_losses"]) == 1  # exactly one optimizer step
    assert record["precision"]["weights"] in ("bfloat16", "float32")
    adapter = out / "best" / "adapter" / "adapter_model.safetensors"
    assert adapter.stat().st_size < 50e6  # the adapter alone, not the 268M-parameter base
    weights = load_file(adapter)
    lora_b = [t for name, t in weights.items() if "lora_B" in name]
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b)  # B starts at zero: the step moved it

    # float32: the adapter merged into bf16 weights rounds its small update away (3.3% off on an AMX CPU).
    loaded, template = load_student(out, dtype="float32", device="cpu")
    assert template.name == "ft_cot" and not loaded.is_encoder_decoder
    # The reloaded (merged) student computes the validation loss the trained one recorded.
    data = read_data_dir(data_dir)
    batch = collate([tokenize(loaded, e, template, config.max_length) for e in data.val], 0, False)
    with torch.no_grad():
        loss_sum, count = CompletionLM(loaded.model, False)(**batch)
    assert float(loss_sum) / count == pytest.approx(epoch["val_loss"], rel=0.03)

    prompt = template.format_prompt(data.val[0].question)
    [generation] = generate(loaded, [prompt], max_new_tokens=8)
    assert generation.completion_tokens > 0 and generation.text.strip()
