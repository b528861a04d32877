"""Evaluation throughput: batched evaluation versus one ``generate`` call per sample.

Same model, same prompts, same greedy budget, measured in the same run:

- **baseline**: ``ftcot.models.generate(loaded, [prompt])`` once per sample;
- **evaluation**: ``ftcot.evaluate`` at ``--batch-size`` (default 16), the
  whole path included (prompt building, judging, appending predictions.jsonl).

Both count completion tokens over wall time, after one untimed warm-up call.
The ratio evaluation/baseline is the figure; the target is ≥ 5× at batch 16.
It also checks that both give the same outputs (greedy decoding).

Output-layer check (docs/offline-models.md: after LoRA, the first forward
of each batch applied Gemma's 262k-row output layer to a non-contiguous slice
of the hidden states and ran ~400× slower): a probe records whether the output
layer's input arrives non-contiguous during evaluation, and one batched
prefill is timed with ``ftcot.models``' contiguity hook and without it.
``--lora`` wraps the model with an untrained LoRA adapter (r=8, all linear
layers) first, the situation the finding was made in.

    .venv/bin/python bench/eval_throughput.py                       # gemma-270m, 32 prompts, ~5-10 min here
    .venv/bin/python bench/eval_throughput.py --model tiny-gpt2     # seconds
    .venv/bin/python bench/eval_throughput.py --lora                # the LoRA situation

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma-270m", help="gemma-270m (default) or tiny-gpt2")
    parser.add_argument("--task", default="coin_flip")
    parser.add_argument("--method", default="ft_cot", help="student prompt layout (or a baseline)")
    parser.add_argument("--n", type=int, default=32, help="prompts (test questions)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--lora", action="store_true", help="wrap with an untrained LoRA adapter first")
    parser.add_argument("--data-dir", default=os.environ.get("FTCOT_DATA") or str(ROOT.parent / "shared" / "data"))
    args = parser.parse_args()

    import torch

    from ftcot.evaluate.backends import LocalBackend
    from ftcot.evaluate.methods import EvalMethod
    from ftcot.evaluate.runner import run_evaluation
    from ftcot.evaluate.store import EvalSettings, EvalStore
    from ftcot.models import generate, load_model
    from ftcot.tasks import load_task

    task = load_task(args.task, args.data_dir)
    samples = task.split("test")[:args.n]
    started = time.perf_counter()
    loaded = load_model(args.model, dtype=args.dtype)
    print(f"loaded {args.model} ({loaded.dtype}) in {time.perf_counter() - started:.1f} s; "
          f"torch threads {torch.get_num_threads()}", flush=True)
    if args.lora:
        from peft import LoraConfig, get_peft_model

        loaded.model = get_peft_model(loaded.model, LoraConfig(r=8, target_modules="all-linear"))
        loaded.model.eval()

    method = EvalMethod(args.method, task, encoder_decoder=loaded.is_encoder_decoder, api=False,
                        max_new_tokens=args.max_new_tokens)
    requests = [method.first_request(s.question) for s in samples]
    probe = _OutputLayerProbe(loaded.model)

    generate(loaded, [requests[0].prompt], max_new_tokens=2)  # warm-up: allocator, kernels, first-call set-up

    # Baseline: one generate per sample.
    probe.reset()
    began = time.perf_counter()
    single = [generate(loaded, [r])[0] for r in requests]
    baseline_s = time.perf_counter() - began
    baseline_tokens = sum(g.completion_tokens for g in single)
    print(f"baseline: {baseline_tokens} tokens in {baseline_s:.1f} s = {baseline_tokens / baseline_s:.1f} tok/s",
          flush=True)

    # Evaluation at batch_size, the whole path (into a throwaway EVAL_DIR).
    probe.reset()
    settings = EvalSettings(task=task.key, split="test", split_scheme="default", method=method.method,
                            template=method.template.name, model=args.model, dtype=args.dtype,
                            max_new_tokens=method.max_new_tokens, stop=method.stop)
    with tempfile.TemporaryDirectory() as tmp, EvalStore(Path(tmp) / "eval") as store:
        store.open(settings)
        began = time.perf_counter()
        result = run_evaluation(task, samples, method, LocalBackend(loaded), settings, store,
                                batch_size=args.batch_size)
        eval_s = time.perf_counter() - began
    eval_tokens = sum(r["completion_tokens"] for r in result.records)
    strided_calls, head_calls = probe.strided, probe.calls
    print(f"evaluation (batch {args.batch_size}): {eval_tokens} tokens in {eval_s:.1f} s = "
          f"{eval_tokens / eval_s:.1f} tok/s; output-layer input non-contiguous in {strided_calls} of "
          f"{head_calls} calls (made contiguous by ftcot.models before the matmul)", flush=True)
    same = sum(a.text == r["output"] for a, r in zip(single, result.records))

    prefill = _prefill_with_and_without_contiguity(loaded, [r.prompt for r in requests[:args.batch_size]])
    print(f"batched prefill: {prefill['with_fix_s']:.2f} s with the contiguity hook, "
          f"{prefill['without_fix_s']:.2f} s without", flush=True)

    ratio = (eval_tokens / eval_s) / (baseline_tokens / baseline_s)
    print(f"ratio evaluation/baseline: {ratio:.2f}x (target >= 5x); same outputs {same}/{len(samples)}")
    print(json.dumps({
        "bench": "eval_throughput", "model": args.model, "dtype": str(loaded.dtype).removeprefix("torch."),
        "lora": args.lora, "task": task.key, "method": method.method, "prompts": len(samples),
        "batch_size": args.batch_size, "max_new_tokens": method.max_new_tokens,
        "baseline_tokens": baseline_tokens, "baseline_s": round(baseline_s, 2),
        "baseline_tok_s": round(baseline_tokens / baseline_s, 2),
        "eval_tokens": eval_tokens, "eval_s": round(eval_s, 2), "eval_tok_s": round(eval_tokens / eval_s, 2),
        "ratio": round(ratio, 2), "target_ratio": 5, "same_outputs": same,
        "head_calls": head_calls, "head_input_noncontiguous": strided_calls,
        "prefill_with_fix_s": round(prefill["with_fix_s"], 3),
        "prefill_without_fix_s": round(prefill["without_fix_s"], 3),
        "cpu_count": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
    }))


class _OutputLayerProbe:
    """Counts output-layer calls whose input arrives as a non-contiguous tensor.

    Registered in front of every other pre-hook, so it sees the tensor the
    model passes, before ftcot.models' hook makes it contiguous.
    """

    def __init__(self, model) -> None:
        self.head = model.get_output_embeddings()
        self.head.register_forward_pre_hook(self._see, prepend=True)
        self.reset()

    def reset(self) -> None:
        self.calls = self.strided = 0

    def _see(self, _module, args) -> None:
        self.calls += 1
        self.strided += int(bool(args) and hasattr(args[0], "is_contiguous") and not args[0].is_contiguous())


def _prefill_with_and_without_contiguity(loaded, prompts: list[str]) -> dict[str, float]:
    """Time one left-padded batched forward (last position's logits only) with and without the hook."""
    import torch

    encoded = [loaded.encode_prompt(p) for p in prompts]
    width = max(len(ids) for ids in encoded)
    pad = loaded.tokenizer.pad_token_id or 0
    input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    for row, ids in enumerate(encoded):
        input_ids[row, width - len(ids):] = torch.tensor(ids)
        attention[row, width - len(ids):] = 1
    head = loaded.model.get_output_embeddings()

    def timed() -> float:
        began = time.perf_counter()
        with torch.inference_mode():
            loaded.model(input_ids=input_ids, attention_mask=attention, logits_to_keep=1, use_cache=True)
        return time.perf_counter() - began

    with_fix = timed()
    saved = dict(head._forward_pre_hooks)
    head._forward_pre_hooks.clear()  # every pre-hook off: the probe and the contiguity fix
    try:
        without_fix = timed()
    finally:
        head._forward_pre_hooks.update(saved)
    return {"with_fix_s": with_fix, "without_fix_s": without_fix}


if __name__ == "__main__":
    main()
