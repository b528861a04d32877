"""Training throughput of ``ftcot train``'s code path versus the reference recipe, in the same run.

Each measurement runs in its own subprocess so peak RSS figures do not mix:

- ``reference``: plain ``transformers.Trainer``, fp32, random batches padded to
  their longest member, the model's own loss over full logits (LoRA via peft
  for gemma-270m, the same adapter settings).
- ``plain_bf16_lora`` (LoRA models only): a plain PyTorch loop as one would
  write it: bf16 base weights, peft's LoRA with its defaults (fp32 adapters),
  the same random batches padded to their longest member, the model's own loss
  over full logits. The issue's yardstick: 269 non-pad tok/s, 11.4 GB peak.
- ``ftcot``: the functions ``ftcot train`` runs (``load_for_training``,
  ``build_student``, ``train_window`` over ``length_grouped_batches``):
  completion-only chunked loss, length-grouped batches, bf16 where supported.

Every recipe trains on the same examples (the coin_flip Fine-tune-CoT DATA_DIR:
the recorded text-davinci-002 rationales, curated), batch 8, AdamW lr 3e-4: the
first ``warmup`` × batch examples untimed, then ``steps`` × batch examples timed,
each recipe batching them its own way. Throughput = non-pad tokens of the timed
examples per second (the same count for every recipe).

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


def _config(model: str, device: str):
    """The TrainConfig ``ftcot train`` would run a bench model with."""
    from ftcot.train.config import TrainConfig

    if model == "gpt2-124m":
        return TrainConfig(student=model, lora=False, bf16=True, device=device, max_length=1024)
    lora = model == "gemma-270m-lora"
    return TrainConfig(student="gemma-270m" if lora else model, lora=lora, device=device, max_length=1024)


def _gpt2_124m(device: str):
    """GPT-2 124M from its config defaults, random init, byte ids (< 384 fit its 50,257-word vocabulary)."""
    import torch
    from transformers import ByT5Tokenizer, GPT2Config, GPT2LMHeadModel

    from ftcot.models import LoadedModel

    torch.manual_seed(0)
    net = GPT2LMHeadModel(GPT2Config()).to(device)
    tokenizer = ByT5Tokenizer()
    net.generation_config.pad_token_id = tokenizer.pad_token_id
    net.generation_config.eos_token_id = tokenizer.eos_token_id
    return LoadedModel(net, tokenizer, False, "gpt2-124m")


def _student(model: str, device: str):
    """(TrainConfig, LoadedModel, precision) of a bench model, through ftcot's own loading."""
    import torch

    from ftcot.train.trainer import load_for_training

    config = _config(model, device)
    if model == "gpt2-124m":
        return config, _gpt2_124m(device), {"bf16": True, "weights": "float32", "autocast": True}
    loaded, precision = load_for_training(config, torch.device(device))
    return config, loaded, precision


def _examples(loaded, data_dir: Path, max_length: int, batch: int, warmup: int, steps: int) -> tuple[list, list]:
    """(warm-up examples, timed examples): the same rows for every recipe."""
    from ftcot.train.data import read_data_dir, tokenize

    data = read_data_dir(data_dir)
    needed = batch * (warmup + steps)
    if len(data.train) < needed:
        raise SystemExit(f"{data_dir}: {len(data.train)} training examples, {needed} needed")
    examples = [tokenize(loaded, e, data.template, max_length) for e in data.train[:needed]]
    return examples[:batch * warmup], examples[batch * warmup:]


def _random_batches(examples: list, batch: int) -> list[list]:
    """Shuffled (seed 0) batches, as a default sampler draws them."""
    import random

    order = list(examples)
    random.Random(0).shuffle(order)
    return [order[i:i + batch] for i in range(0, len(order), batch)]


def _pad_to_longest(rows: list[dict], pad: int) -> dict:
    """A default-style collator: rows padded (right) to their longest member."""
    import torch

    from ftcot.train.data import IGNORE

    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad)
    labels = torch.full((len(rows), width), IGNORE)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, r in enumerate(rows):
        ids[k, :len(r["input_ids"])] = torch.tensor(r["input_ids"])
        labels[k, :len(r["labels"])] = torch.tensor(r["labels"])
        mask[k, :len(r["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _rows(batches: list[list]) -> list[dict]:
    return [{"input_ids": e.input_ids, "labels": e.labels} for b in batches for e in b]


def _now() -> tuple[float, float]:
    """(wall, process CPU) seconds. CPU seconds count the work done, whatever else the machine runs."""
    return time.perf_counter(), time.process_time()


def _figures(timed: list, start: tuple[float, float], end: tuple[float, float], padded: int, net) -> dict:
    tokens = sum(e.tokens for e in timed)
    seconds, cpu_seconds = end[0] - start[0], end[1] - start[1]
    return {"tokens": tokens, "padded_tokens": padded, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "cpu_seconds": cpu_seconds, "tokens_per_cpu_s": tokens / cpu_seconds,
            "parameters": sum(p.numel() for p in net.parameters())}


def measure_ftcot(model: str, device: str, data_dir: Path, warmup: int, steps: int, batch: int) -> dict:
    import torch
    from accelerate import Accelerator

    from ftcot.train.data import length_grouped_batches
    from ftcot.train.trainer import build_student, pad_multiple, train_window

    config, loaded, precision = _student(model, device)
    config = type(config)(**{**config.to_dict(), "batch_size": batch})
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision="no")
    warm, timed = _examples(loaded, data_dir, config.max_length, batch, warmup, steps)
    torch.manual_seed(0)
    wrapper, optimizer, trainable = build_student(loaded, config, accelerator)
    amp = torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                         enabled=precision["autocast"])
    pad = loaded.tokenizer.pad_token_id or 0
    multiple = pad_multiple(config, accelerator.device)

    def epoch(examples: list) -> int:
        """Train on ``examples`` in their length-grouped plan, as an epoch of training builds it; padded tokens."""
        plan = length_grouped_batches([e.tokens for e in examples], batch, 0, 1)
        for window in plan:
            train_window(wrapper, optimizer, accelerator, examples, [window], config, amp, pad,
                         loaded.is_encoder_decoder)
        return sum(len(w) * -(-max(examples[i].tokens for i in w) // multiple) * multiple for w in plan)

    epoch(warm)
    _sync(device)
    start = _now()
    padded = epoch(timed)
    _sync(device)
    return {**_figures(timed, start, _now(), padded, loaded.model),
            "trainable_parameters": trainable, "precision": precision}


def _adapted(net, config):
    """``net`` with peft's LoRA as the reference recipes add it (peft's defaults: fp32 adapters)."""
    from peft import LoraConfig, TaskType, get_peft_model

    return get_peft_model(net, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                          lora_dropout=config.lora_dropout, target_modules="all-linear",
                                          task_type=TaskType.CAUSAL_LM))


def _baseline(model: str, device: str, dtype: str):
    """(TrainConfig, LoadedModel) of a baseline recipe: the model in ``dtype``, LoRA added as the bench model has it."""
    import torch

    from ftcot.models import load_model

    config = _config(model, device)
    if model == "gpt2-124m":
        loaded = _gpt2_124m(device)
        loaded.model.to(getattr(torch, dtype))
    else:
        loaded = load_model(config.student, dtype=dtype, device=device, seed=0)
    if config.lora:
        loaded.model = _adapted(loaded.model, config)
    return config, loaded


def measure_reference(model: str, device: str, data_dir: Path, warmup: int, steps: int, batch: int) -> dict:
    """Plain Trainer: fp32, random batches padded to their longest member, full logits."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    config, loaded = _baseline(model, device, "float32")
    warm, timed = _examples(loaded, data_dir, config.max_length, batch, warmup, steps)
    batches = _random_batches(warm, batch) + _random_batches(timed, batch)
    pad = loaded.tokenizer.pad_token_id or 0
    marks: dict[str, tuple[float, float]] = {}

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == warmup:
                _sync(device)
                marks["start"] = _now()

        def on_step_end(self, args, state, control, **kwargs):
            _sync(device)
            marks["end"] = _now()

    with tempfile.TemporaryDirectory() as tmp:
        # Sequential sampling over rows already in the random batches' order: the plain loop's batches.
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=batch, max_steps=len(batches),
                                 learning_rate=3e-4, lr_scheduler_type="constant", warmup_steps=0,
                                 save_strategy="no", report_to=[], logging_strategy="no",
                                 use_cpu=device == "cpu", dataloader_num_workers=0, remove_unused_columns=False,
                                 disable_tqdm=True, seed=0, train_sampling_strategy="sequential")
        Trainer(model=loaded.model, args=args, train_dataset=_rows(batches),
                data_collator=lambda rows: _pad_to_longest(rows, pad), callbacks=[Clock()]).train()
    padded = sum(len(b) * max(e.tokens for e in b) for b in batches[warmup:])
    return _figures(timed, marks["start"], marks["end"], padded, loaded.model)


def measure_plain(model: str, device: str, data_dir: Path, warmup: int, steps: int, batch: int) -> dict:
    """Plain loop: bf16 base weights, peft LoRA (fp32 adapters), random batches padded to their longest, full logits."""
    import torch

    config, loaded = _baseline(model, device, "bfloat16")
    net = loaded.model.train()
    warm, timed = _examples(loaded, data_dir, config.max_length, batch, warmup, steps)
    batches = _random_batches(warm, batch) + _random_batches(timed, batch)
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=3e-4)
    pad = loaded.tokenizer.pad_token_id or 0
    torch.manual_seed(0)
    for k, examples in enumerate(batches):
        if k == warmup:
            _sync(device)
            start = _now()
        inputs = {key: value.to(device) for key, value in _pad_to_longest(_rows([examples]), pad).items()}
        net(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(device)
    padded = sum(len(b) * max(e.tokens for e in b) for b in batches[warmup:])
    return _figures(timed, start, _now(), padded, net)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


RECIPES = {"ftcot": measure_ftcot, "reference": measure_reference, "plain_bf16_lora": measure_plain}


def child(args: argparse.Namespace) -> None:
    import resource

    measure = RECIPES[args.child]
    result = measure(args.model, args.device, Path(args.data_dir), args.warmup, args.steps, args.batch_size)
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    if args.device.startswith("cuda"):
        import torch

        result["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 1e9
    print(json.dumps(result))


# ---------------------------------------------------------------------------------------------------


def child_env(threads: int | None) -> dict:
    """Children's environment: OpenMP threads sleep while they wait (unless set otherwise); ``threads``.

    On a shared machine, GNU OpenMP's default spinning made a 2-thread Gemma step up to 5x slower
    whenever another process wanted a core (27 vs 142 tok/s at load 4.5, the same code), by an amount
    that changed from one recipe's run to the next; sleeping threads keep the ratios meaningful.
    Under load even sleeping threads wait for each other: ``--threads 1`` compares work per core.
    """
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_child(kind: str, model: str, args: argparse.Namespace, data_dir: Path) -> dict:
    command = [sys.executable, __file__, "--child", kind, "--model", model, "--device", args.device,
               "--data-dir", str(data_dir), "--warmup", str(args.warmup), "--steps", str(args.steps),
               "--batch-size", str(args.batch_size)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=child_env(args.threads))
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-3000:])
        raise SystemExit(f"{kind} {model} failed (exit {done.returncode})")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - started
    result["load_average_end"] = os.getloadavg()[0]
    print(f"{model:16s} {kind:15s} {result['tokens_per_s']:7.1f} non-pad tok/s ({result['tokens_per_cpu_s']:.1f} "
          f"per CPU s)  peak RSS {result['peak_rss_gb']:.2f} GB  ({result['tokens']} tokens, {result['padded_tokens']} "
          f"padded, in {result['seconds']:.1f} s; load {result['load_average_end']:.2f})", flush=True)
    return result


def compare(model: str, entry: dict) -> None:
    """Speed-ups of ftcot over each baseline measured in this run.

    Per wall-clock second (the target), and per CPU second: on a shared machine each recipe's wall clock
    also measures the load during its run; CPU seconds do not.
    """
    ours = entry["ftcot"]
    for kind in ("reference", "plain_bf16_lora"):
        if kind in entry:
            theirs = entry[kind]
            entry[f"speedup_vs_{kind}"] = ours["tokens_per_s"] / theirs["tokens_per_s"]
            entry[f"cpu_speedup_vs_{kind}"] = ours["tokens_per_cpu_s"] / theirs["tokens_per_cpu_s"]
            print(f"{model:16s} ftcot vs {kind}: {entry[f'speedup_vs_{kind}']:.2f}x tok/s "
                  f"({entry[f'cpu_speedup_vs_{kind}']:.2f}x per CPU s), peak RSS {ours['peak_rss_gb']:.2f} vs "
                  f"{theirs['peak_rss_gb']:.2f} GB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", action="append", help="tiny-gpt2, gemma-270m-lora, gpt2-124m (repeatable)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default: 2 on CPU, 10 on GPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 10 on CPU, 20 on GPU)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="peak bf16 dense TFLOP/s (H100: 989)")
    parser.add_argument("--skip-reference", action="store_true", help="measure ftcot only")
    parser.add_argument("--threads", type=int, default=None, help="OpenMP threads of every recipe (default: torch's)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--child", choices=list(RECIPES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    if args.steps is None:
        args.steps = 20 if gpu else 10
    if args.warmup is None:
        # GPUs plan kernels for each new shape (cuDNN attention in bf16 most of all): keep that out of the timing.
        args.warmup = 10 if gpu else 2
    if args.child:
        args.model = args.model[0]
        child(args)
        return
    models = args.model or (["gpt2-124m"] if gpu else ["tiny-gpt2", "gemma-270m-lora"])
    data_dir = make_data_dir(Path(args.data_dir or Path(tempfile.gettempdir()) / "ftcot-bench-coin-flip"))
    figures: dict = {"device": args.device, "batch_size": args.batch_size, "warmup_steps": args.warmup,
                     "timed_steps": args.steps, "threads": args.threads,
                     "omp_wait_policy": child_env(args.threads)["OMP_WAIT_POLICY"],
                     "load_average_start": os.getloadavg()[0], "models": {}}
    for model in models:
        kinds = ["ftcot"]
        if not args.skip_reference:
            kinds += ["reference", "plain_bf16_lora"] if _config(model, args.device).lora else ["reference"]
        entry = {kind: run_child(kind, model, args, data_dir) for kind in kinds}
        compare(model, entry)
        if gpu:
            ours = entry["ftcot"]
            entry["mfu"] = 6 * ours["parameters"] * ours["tokens_per_s"] / (args.peak_tflops * 1e12)
            print(f"{model:16s} MFU {100 * entry['mfu']:.1f}% of {args.peak_tflops} TFLOP/s", flush=True)
        figures["models"][model] = entry
    figures["load_average_end"] = os.getloadavg()[0]
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
