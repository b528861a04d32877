"""``ftcot export model``: a trained student as a plain transformers model that generates what ftcot scored.

The checkpoint is real: ``ftcot train`` (tiny-gpt2 + LoRA, one epoch, a high learning rate so the merged
adapters change the weights) on rows of a real ``ftcot curate`` output, evaluated by ``ftcot evaluate``.
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.cli import assert_one_line_error, run_ftcot
from tests.export.conftest import THREADS, ok
from tests.mounts import read_only_dir, small_disk  # noqa: F401  (fixtures)

N_TRAIN, N_VAL, N_TEST, MAX_NEW = 8, 2, 3, 32


@pytest.fixture(scope="module")
def trained(coin_flip_data, tmp_path_factory, data_root):
    root = tmp_path_factory.mktemp("student")
    # The DATA_DIR's first rows only: byte-level tiny-gpt2 is slow on 288 rationales.
    data = root / "data"
    data.mkdir()
    for name, n in (("train.jsonl", N_TRAIN), ("val.jsonl", N_VAL)):
        lines = (coin_flip_data / name).read_text(encoding="utf-8").splitlines()[:n]
        (data / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    (data / "curation.json").write_text((coin_flip_data / "curation.json").read_text())
    ckpt, evaluation = root / "ckpt", root / "eval"
    ok(run_ftcot("train", data, "--student", "tiny-gpt2", "--lora", "--epochs", "1", "--lr", "1e-2",
                 "--batch-size", "4", "--max-length", "1024", "--max-new-tokens", "16", "--out", ckpt, env=THREADS))
    # Batch size 1: the comparison below is about the weights, not about padding in a batch.
    ok(run_ftcot("evaluate", "--model", ckpt, "--task", "coin_flip", "--limit", N_TEST, "--batch-size", "1",
                 "--max-new-tokens", MAX_NEW, "--out", evaluation, "--data-dir", data_root, env=THREADS))
    return ckpt, evaluation


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    ckpt, _ = trained
    out = tmp_path_factory.mktemp("exported") / "model"
    result = ok(run_ftcot("export", "model", ckpt, "--to", out, env=THREADS))
    return out, result


def test_plain_transformers_generates_exactly_what_ftcot_evaluate_scored(trained, exported):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, evaluation = trained
    out, _ = exported
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    predictions = [json.loads(line) for line in (evaluation / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == N_TEST
    for row in predictions:
        # As the card says: this byte tokenizer appends EOS, which a prompt must not end with.
        ids = tokenizer(row["prompt"], return_tensors="pt").input_ids[:, :-1]
        with torch.inference_mode():
            generated = model.generate(ids, max_new_tokens=MAX_NEW)  # greedy and EOS from generation_config.json
        text = tokenizer.decode(generated[0, ids.shape[1]:], skip_special_tokens=True)
        assert text == row["output"]


def test_the_export_is_merged_safetensors_with_ftcots_generation_settings(trained, exported):
    import torch
    from safetensors.torch import load_file

    from ftcot.models import load_model

    out, result = exported
    assert "LoRA merged into tiny-gpt2, epoch 1" in result.stdout
    weights = load_file(out / "model.safetensors")
    assert not [k for k in weights if "lora" in k.lower()]  # no adapter left: plain GPT-2 tensors
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 1 and generation["do_sample"] is False  # ByT5's EOS, greedy
    assert generation["max_new_tokens"] == 256  # ftcot evaluate's budget for ft_cot
    # The merged adapters moved the base's attention weights (else equal outputs would prove nothing).
    dtype = json.loads((out / "ftcot.json").read_text())["dtype"]
    base = load_model("tiny-gpt2", dtype=dtype, device="cpu").model.state_dict()
    name = "transformer.h.0.attn.c_attn.weight"
    assert weights[name].dtype == base[name].dtype == getattr(torch, dtype)
    assert not torch.equal(weights[name], base[name])


def test_the_card_names_training_data_template_and_the_evaluation_found_next_to_it(trained, exported):
    _, evaluation = trained
    out, result = exported
    metrics = json.loads((evaluation / "metrics.json").read_text())
    text = (out / "README.md").read_text()
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert "`replay:text-davinci-002`" in text and "| template | ft_cot |" in text
    assert f"{N_TRAIN} train, {N_VAL} validation" in text
    accuracy = f"{100 * metrics['accuracy']:.2f}% ({metrics['correct']}/{N_TEST})"
    assert f"| coin_flip | test (default) | ft_cot | {N_TEST} | {accuracy} |" in text
    assert f"coin_flip test ft_cot: {100 * metrics['accuracy']:.2f}% of {N_TEST}" in result.stdout
    info = json.loads((out / "ftcot.json").read_text())
    assert info["prompt_format"] == "{question} ###" and info["answer_prefix"] == "-->"
    assert info["training_data"]["provenance"]["teacher"]["teacher"] == "replay:text-davinci-002"
    assert [e["eval_dir"] for e in info["evaluations"]] == [str(evaluation)]


def test_bad_checkpoints_and_unsafe_outputs_are_one_line_errors(trained, tmp_path):
    ckpt, evaluation = trained
    assert_one_line_error(run_ftcot("export", "model", ckpt, "--to", ckpt / "hf"), "lies inside the input")
    assert_one_line_error(run_ftcot("export", "model", ckpt, "--to", ckpt.parent, "--force"), "contains the input")
    assert_one_line_error(run_ftcot("export", "model", tmp_path, "--to", tmp_path.parent / "x"),
                          "best/student.json", "ftcot train")
    api = tmp_path / "api"
    api.mkdir()
    (api / "train.json").write_text(json.dumps({"student": "openai:ft:gpt-4o-mini:x", "template": "ft_cot"}))
    assert_one_line_error(run_ftcot("export", "model", api, "--to", tmp_path / "y"), "API student")
    unfinished = tmp_path / "eval-unfinished"
    unfinished.mkdir()
    assert_one_line_error(run_ftcot("export", "model", ckpt, "--eval", unfinished, "--to", tmp_path / "z"),
                          "settings.json", "ftcot evaluate")
    assert not (tmp_path / "z").exists()


def test_a_fully_fine_tuned_student_exports_too(trained, tmp_path, data_root):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ckpt, _ = trained
    data = ckpt.parent / "data"
    full, evaluation, out = tmp_path / "full", tmp_path / "eval", tmp_path / "model"
    ok(run_ftcot("train", data, "--student", "tiny-gpt2", "--full", "--epochs", "1", "--lr", "1e-3",
                 "--batch-size", "4", "--max-length", "1024", "--max-new-tokens", "16", "--out", full, env=THREADS))
    ok(run_ftcot("evaluate", "--model", full, "--task", "coin_flip", "--limit", "2", "--batch-size", "1",
                 "--max-new-tokens", MAX_NEW, "--out", evaluation, "--data-dir", data_root, env=THREADS))
    result = ok(run_ftcot("export", "model", full, "--to", out, "--eval", evaluation, "--no-find-evals",
                          env=THREADS))
    assert "fully fine-tuned tiny-gpt2" in result.stdout and "1 evaluation(s)" in result.stdout
    model, tokenizer = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    for line in (evaluation / "predictions.jsonl").read_text().splitlines():
        row = json.loads(line)
        ids = tokenizer(row["prompt"], return_tensors="pt").input_ids[:, :-1]
        with torch.inference_mode():
            generated = model.generate(ids, max_new_tokens=MAX_NEW)
        assert tokenizer.decode(generated[0, ids.shape[1]:], skip_special_tokens=True) == row["output"]


def test_a_read_only_or_full_target_is_one_line_and_leaves_nothing(trained, read_only_dir, small_disk):
    ckpt, _ = trained
    assert_one_line_error(run_ftcot("export", "model", ckpt, "--to", read_only_dir / "model", env=THREADS),
                          f"--to {read_only_dir / 'model'}: not writable")
    disk = small_disk(256)  # the merged weights alone are larger
    assert_one_line_error(run_ftcot("export", "model", ckpt, "--to", disk / "model", env=THREADS),
                          f"--to {disk / 'model'}: the disk is full")
    assert list(disk.iterdir()) == []  # the half-written export is gone
