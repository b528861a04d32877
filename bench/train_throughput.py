"""Training throughput of ``ftcot train``'s code path versus the reference recipe, in the same run.

Each measurement runs in its own subprocess so peak RSS figures do not mix:

- ``reference``: plain ``transformers.Trainer``, fp32, random batches padded to
  their longest member, the model's own loss over full logits (LoRA via peft
  for gemma-270m, the same adapter settings).
- ``ftcot``: the functions ``ftcot train`` runs (``load_for_training``,
  ``build_student``, ``train_window`` over ``length_grouped_batches``):
  completion-only chunked loss, length-grouped batches, bf16 where supported.

Both train on the same examples (the coin_flip Fine-tune-CoT DATA_DIR: the
recorded text-davinci-002 rationales, curated), batch 8, AdamW lr 3e-4.
Throughput = non-pad tokens per second over the timed steps (warm-up excluded).

    python bench/train_throughput.py                        # CPU: tiny-gpt2 and gemma-270m LoRA
    python bench/train_throughput.py --device cuda --model gpt2-124m --peak-tflops 989

The GPU mode builds GPT-2 124M from ``GPT2Config()`` defaults (byte ids as
input, so no tokenizer files are needed), trains it fully with bf16 autocast
through the same code path, and reports model FLOPs utilisation
= 6 · parameters · tokens/s ÷ peak FLOP/s.

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SHARED = Path(os.environ.get("FTCOT_DATA") or ROOT.parent / "shared" / "data")
TEACHER = SHARED / "teacher" / "text-davinci-002" / "zs_cot" / "coin_flip.jsonl"


def make_data_dir(out: Path) -> Path:
    from ftcot.curate import curate
    from ftcot.curate.dataset import write_data_dir
    from ftcot.tasks import load_task
    from ftcot.templates import get_template

    if (out / "curation.json").is_file():
        return out
    task = load_task("coin_flip", SHARED)
    records = [json.loads(line) for line in TEACHER.open()]
    train, val, summary = curate(task, get_template("ft_cot"), records)
    write_data_dir(out, train, val, summary)
    return out


# ---------------------------------------------------------------------------------------------------
# One measurement (runs in a child process)


def _student(model: str, device: str):
    """(TrainConfig, LoadedModel, precision) of a bench model, through ftcot's own loading."""
    import torch
    from transformers import ByT5Tokenizer, GPT2Config, GPT2LMHeadModel

    from ftcot.models import LoadedModel
    from ftcot.train.config import TrainConfig
    from ftcot.train.trainer import load_for_training

    if model == "gpt2-124m":
        config = TrainConfig(student=model, lora=False, bf16=True, device=device, max_length=1024)
        torch.manual_seed(0)
        net = GPT2LMHeadModel(GPT2Config()).to(device)
        tokenizer = ByT5Tokenizer()  # byte ids (< 384) fit GPT-2's 50,257-word vocabulary
        net.generation_config.pad_token_id = tokenizer.pad_token_id
        net.generation_config.eos_token_id = tokenizer.eos_token_id
        return config, LoadedModel(net, tokenizer, False, model), {"bf16": True, "weights": "float32",
                                                                   "autocast": True}
    lora = model == "gemma-270m-lora"
    spec = "gemma-270m" if lora else model
    config = TrainConfig(student=spec, lora=lora, device=device, max_length=1024)
    loaded, precision = load_for_training(config, torch.device(device))
    return config, loaded, precision


def _examples(loaded, data_dir: Path, count: int, max_length: int):
    from ftcot.train.data import read_data_dir, tokenize

    data = read_data_dir(data_dir)
    return [tokenize(loaded, e, data.template, max_length) for e in data.train[:count]]


def measure_ftcot(model: str, device: str, data_dir: Path, warmup: int, steps: int, batch: int) -> dict:
    import torch
    from accelerate import Accelerator

    from ftcot.train.data import length_grouped_batches
    from ftcot.train.trainer import build_student, pad_multiple, train_window

    config, loaded, precision = _student(model, device)
    config = type(config)(**{**config.to_dict(), "batch_size": batch})
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision="no")
    examples = _examples(loaded, data_dir, batch * (warmup + steps) * 4, config.max_length)
    torch.manual_seed(0)
    wrapper, optimizer, trainable = build_student(loaded, config, accelerator)
    amp = torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                         enabled=precision["autocast"])
    # The epoch's length-grouped plan over all examples, its first batches timed (as training runs them).
    plan = length_grouped_batches([e.tokens for e in examples], batch, 0, 1)[:warmup + steps]
    pad = loaded.tokenizer.pad_token_id or 0
    multiple = pad_multiple(config, accelerator.device)
    tokens = padded = 0
    for k, window in enumerate(plan):
        if k == warmup:
            _sync(device)
            start = time.perf_counter()
        train_window(wrapper, optimizer, accelerator, examples, [window], config, amp, pad,
                     loaded.is_encoder_decoder)
        if k >= warmup:
            tokens += sum(examples[i].tokens for i in window)
            padded += len(window) * -(-max(examples[i].tokens for i in window) // multiple) * multiple
    _sync(device)
    seconds = time.perf_counter() - start
    return {"tokens": tokens, "padded_tokens": padded, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "trainable_parameters": trainable, "parameters": sum(p.numel() for p in loaded.model.parameters()),
            "precision": precision}


def measure_reference(model: str, device: str, data_dir: Path, warmup: int, steps: int, batch: int) -> dict:
    """Plain Trainer: fp32, random batches padded to their longest member, full logits."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from ftcot.models import load_model
    from ftcot.train.data import IGNORE

    config, loaded, _ = _student(model, device)
    if model == "gpt2-124m":
        loaded.model.float()
    else:
        loaded = load_model(config.student, dtype="float32", device=device, seed=0)
    net = loaded.model
    if config.lora:
        from peft import LoraConfig, TaskType, get_peft_model

        net = get_peft_model(net, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                             lora_dropout=config.lora_dropout, target_modules="all-linear",
                                             task_type=TaskType.CAUSAL_LM))
    examples = _examples(loaded, data_dir, batch * (warmup + steps) * 4, config.max_length)
    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    counts: list[int] = []

    def pad_to_longest(features):
        width = max(len(f["input_ids"]) for f in features)
        counts.append(sum(len(f["input_ids"]) for f in features))
        ids = torch.full((len(features), width), loaded.tokenizer.pad_token_id or 0)
        labels = torch.full((len(features), width), IGNORE)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for r, f in enumerate(features):
            ids[r, :len(f["input_ids"])] = torch.tensor(f["input_ids"])
            labels[r, :len(f["labels"])] = torch.tensor(f["labels"])
            mask[r, :len(f["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    marks: dict[str, float] = {}

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == warmup:
                _sync(device)
                marks["start"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            _sync(device)
            marks["end"] = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=batch, max_steps=warmup + steps,
                                 learning_rate=3e-4, lr_scheduler_type="constant", warmup_steps=0,
                                 save_strategy="no", report_to=[], logging_strategy="no",
                                 use_cpu=device == "cpu", dataloader_num_workers=0, remove_unused_columns=False,
                                 disable_tqdm=True, seed=0)
        Trainer(model=net, args=args, train_dataset=rows, data_collator=pad_to_longest,
                callbacks=[Clock()]).train()
    tokens = sum(counts[warmup:warmup + steps])
    seconds = marks["end"] - marks["start"]
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "parameters": sum(p.numel() for p in loaded.model.parameters())}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def child(args: argparse.Namespace) -> None:
    import resource

    measure = measure_ftcot if args.child == "ftcot" else measure_reference
    result = measure(args.model, args.device, Path(args.data_dir), args.warmup, args.steps, args.batch_size)
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    if args.device.startswith("cuda"):
        import torch

        result["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 1e9
    print(json.dumps(result))


# ---------------------------------------------------------------------------------------------------


def run_child(kind: str, model: str, args: argparse.Namespace, data_dir: Path) -> dict:
    command = [sys.executable, __file__, "--child", kind, "--model", model, "--device", args.device,
               "--data-dir", str(data_dir), "--warmup", str(args.warmup), "--steps", str(args.steps),
               "--batch-size", str(args.batch_size)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-3000:])
        raise SystemExit(f"{kind} {model} failed (exit {done.returncode})")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - started
    print(f"{model:16s} {kind:9s} {result['tokens_per_s']:9.1f} non-pad tok/s  peak RSS {result['peak_rss_gb']:.2f} GB"
          f"  ({result['tokens']} tokens in {result['seconds']:.1f} s)", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", action="append", help="tiny-gpt2, gemma-270m-lora, gpt2-124m (repeatable)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default: 1 on CPU, 10 on GPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 3 on CPU, 20 on GPU)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="peak bf16 dense TFLOP/s (H100: 989)")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--child", choices=["ftcot", "reference"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    if args.steps is None:
        args.steps = 20 if gpu else 3
    if args.warmup is None:
        # GPUs plan kernels for each new shape (cuDNN attention in bf16 most of all): keep that out of the timing.
        args.warmup = 10 if gpu else 1
    if args.child:
        args.model = args.model[0]
        child(args)
        return
    models = args.model or (["gpt2-124m"] if args.device.startswith("cuda") else ["tiny-gpt2", "gemma-270m-lora"])
    data_dir = make_data_dir(Path(args.data_dir or Path(tempfile.gettempdir()) / "ftcot-bench-coin-flip"))
    figures: dict = {"device": args.device, "batch_size": args.batch_size, "warmup_steps": args.warmup,
                     "timed_steps": args.steps, "load_average_start": os.getloadavg()[0], "models": {}}
    for model in models:
        entry = {"ftcot": run_child("ftcot", model, args, data_dir)}
        if not args.skip_reference:
            entry["reference"] = run_child("reference", model, args, data_dir)
            entry["speedup"] = entry["ftcot"]["tokens_per_s"] / entry["reference"]["tokens_per_s"]
            entry["rss_ratio"] = entry["ftcot"]["peak_rss_gb"] / entry["reference"]["peak_rss_gb"]
            print(f"{model:16s} speedup {entry['speedup']:.2f}x, peak RSS {entry['ftcot']['peak_rss_gb']:.2f} "
                  f"vs {entry['reference']['peak_rss_gb']:.2f} GB", flush=True)
        if args.device.startswith("cuda"):
            ours = entry["ftcot"]
            entry["mfu"] = 6 * ours["parameters"] * ours["tokens_per_s"] / (args.peak_tflops * 1e12)
            print(f"{model:16s} MFU {100 * entry['mfu']:.1f}% of {args.peak_tflops} TFLOP/s", flush=True)
        figures["models"][model] = entry
    figures["load_average_end"] = os.getloadavg()[0]
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
