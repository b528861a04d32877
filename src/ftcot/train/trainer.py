"""Student fine-tuning (as in the paper): a small accelerate loop around ``CompletionLM``.

One process or many (``accelerate launch``: DDP, FSDP, DeepSpeed) run the same
code. ``--batch-size`` is the global batch: every process computes the same
length-grouped batch plan from (seed, epoch) and takes every world-th row of each
batch, so one process and N processes see the same global batches. The loss of
an update is the summed completion-token cross-entropy divided by the update's
completion tokens over all processes and accumulation steps, so the gradient is
the same whatever the process count (DDP then averages: each process scales by
the world size). Distilling step-by-step rows (``ft_dss``) are weighted per task
and divided by the update's rows instead (``ftcot.train.data.weigh_tasks``), and
validation generates for their label rows only.

Why a loop and not a ``transformers.Trainer`` subclass: the loss must run inside
the wrapped module's forward (``CompletionLM``, see loss.py) for DDP/FSDP, and
Trainer's saving, loading, PEFT and resume branches all key on the model being
a ``PreTrainedModel``/``PeftModel``; its checkpoints are written in place (a
kill mid-save leaves a broken ``checkpoint-N``) and its per-epoch evaluation
has no place for greedy generation + scoring. Overriding those is more code
than this loop, which is timed against Trainer in bench/train_throughput.py.

Resumption: after every epoch the trainable parameters, AdamW state, every
process's RNG and the counters are written atomically (checkpoint.py); a rerun
of the same command continues after the last complete epoch and produces what
an uninterrupted run produces.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from ftcot.data_root import resolve_data_root
from ftcot.dir_lock import lock_directory
from ftcot.errors import FtcotError, unknown_name
from ftcot.jsonl import read_json_object
from ftcot.paths import (atomic_write_json, check_output, check_writable_dir, existing_path, find_os_error,
                         os_error)
from ftcot.scoring import score
from ftcot.tasks.spec import TaskSpec
from ftcot.train import checkpoint as ckpt
from ftcot.train import preflight
from ftcot.train.config import TrainConfig
from ftcot.train.data import (DataDir, Tokenized, collate, length_grouped_batches, read_data_dir, tokenize,
                              weigh_tasks)
from ftcot.train.metrics_log import MetricsLog
from ftcot.train.progress import TrainProgress, peak_rss_gb, summary_table

LOCK_FILE = ".lock"  # one training per CKPT_DIR (see ftcot.dir_lock)


def resolve_task_spec(task: str, answer_type: str | None = None) -> TaskSpec:
    from ftcot.tasks import BUILTIN_TASKS, get_spec, load_task

    if task in BUILTIN_TASKS:
        return get_spec(task)
    if Path(task).is_file():
        return load_task(task, answer_type=answer_type).spec
    raise unknown_name("task", task, BUILTIN_TASKS)


@dataclass
class Prepared:
    """Everything tokenized and checked, before any training."""

    data: DataDir
    spec: TaskSpec
    loaded: Any  # LoadedModel
    train: list[Tokenized]
    val: list[Tokenized]
    truncated: list[int]


def prepare_data(data: DataDir, loaded: Any, spec: TaskSpec, config: TrainConfig) -> Prepared:
    """Tokenize once and run the pre-flight checks (each raises a one-line FtcotError)."""
    from ftcot.models.generation import eos_ids

    if config.rationale_weight is not None and not data.template.multi_task:
        raise FtcotError(f"--rationale-weight applies to distilling step-by-step data (ft_dss); {data.path} is "
                         f"'{data.template.name}' data. Drop the option, or curate with --template ft_dss.")
    truncated = []
    tokenized = {}
    for name, rows in (("train.jsonl", data.train), ("val.jsonl", data.val)):
        file = str(data.path / name)
        preflight.check_layout(rows, data.template, file)
        items = [tokenize(loaded, e, data.template, config.max_length, config.allow_truncation) for e in rows]
        preflight.check_prompt_ids(loaded, rows, items, data.template, file)
        truncated += preflight.check_lengths(rows, items, config.max_length, config.allow_truncation, file)
        preflight.check_eos(loaded, rows, items, eos_ids(loaded), file)
        # Only the rows generation answers with must give the answer back (a rationale row has none).
        scorable = [(e, t) for e, t in zip(rows, items) if not t.truncated and t.generated]
        preflight.check_scorable(loaded, [e for e, _ in scorable], [t for _, t in scorable], spec, data.template,
                                 file)
        tokenized[name] = weigh_tasks(items, config.rationale_weight)  # distilling step-by-step's task weights
    if config.kd_weight is not None:  # logit distillation: the teacher's top-K on the training rows, checked
        from ftcot.train.distill import attach_teacher

        tokenized["train.jsonl"] = attach_teacher(data, tokenized["train.jsonl"], loaded, config.student)
    return Prepared(data, spec, loaded, tokenized["train.jsonl"], tokenized["val.jsonl"], truncated)


def _check_resumable(out: Path, config: TrainConfig) -> dict | None:
    """The previous run's record in CKPT_DIR, after checking its settings match."""
    path = out / ckpt.TRAIN_JSON
    if not path.is_file():
        return None
    record = read_json_object(path, "restore it, or train into a new --out")
    before = record.get("config", {})
    defaults = TrainConfig().to_dict()
    for name, value in config.to_dict().items():
        recorded = before.get(name, defaults[name])  # a setting added since the record was written: its default
        if name in TrainConfig.RESUMABLE_CHANGES or recorded == value:
            continue
        raise FtcotError(f"{out} holds a run with {name}={recorded!r}, not {value!r}; resume with the same "
                         f"settings or choose a new --out.")
    return record


def train(data_dir: str | Path, out: str | Path, config: TrainConfig, *, task: str | None = None,
          answer_type: str | None = None, console: Console | None = None) -> dict:
    """Fine-tune ``config.student`` on DATA_DIR into CKPT_DIR ``out``; returns the train.json record."""
    out, data_dir = Path(out), Path(data_dir)
    data = read_data_dir(data_dir)
    task_name = task or data.task
    if task is None and data.task_source is not None:  # a user's task: the file it was curated from
        from ftcot.tasks.custom import recorded_task_file

        # Checked here (still there, unchanged), read as a task once, by resolve_task_spec.
        task_name = str(recorded_task_file(data.task, data.task_source, str(data_dir)))
        answer_type = answer_type or data.task_source.get("answer_type")
    task_file = Path(task_name) if Path(task_name).is_file() else None  # as load_task tells a file from a key
    check_output(out, [data_dir, task_file, existing_path(config.student), resolve_data_root()])
    # Under accelerate launch every process runs this; the main one (RANK 0) holds the lock, and the
    # launcher stops the others if it cannot. Checked before the model loads: a read-only or busy
    # CKPT_DIR fails now, not after an epoch.
    if int(os.environ.get("RANK", "0")) != 0:
        return _train(data, out, config, task_name, answer_type, console)
    created = not out.exists()
    check_writable_dir(out)
    lock = lock_directory(out / LOCK_FILE, lambda holder: (
        f"{out}: another 'ftcot train' (pid {holder}) is training here; wait for it to finish, or train into "
        f"another --out."))
    try:
        return _train(data, out, config, task_name, answer_type, console)
    except FtcotError:
        # Refused before anything was saved (a pre-flight check): leave no empty CKPT_DIR behind.
        if created and {p.name for p in out.iterdir()} <= {LOCK_FILE}:
            lock.close()
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        lock.close()  # closing the descriptor releases the flock


def _train(data: DataDir, out: Path, config: TrainConfig, task_name: str, answer_type: str | None,
           console: Console | None) -> dict:
    import torch
    from accelerate import Accelerator

    from ftcot.models import LoadedModel

    console = console or Console(stderr=True)
    spec = resolve_task_spec(task_name, answer_type)
    previous = _check_resumable(out, config)
    if config.device != "auto":
        from ftcot.models.loading import resolve_device

        resolve_device(config.device)  # --device cuda without a GPU: one line, not a silent CPU run

    # Without a GPU, processes started by torchrun / accelerate's multi-process launcher must
    # still form a group: cpu=True makes accelerate use gloo (MULTI_CPU) instead of running alone.
    accelerator = Accelerator(cpu=config.device == "cpu" or not torch.cuda.is_available(), mixed_precision="no")
    main, rank, world = accelerator.is_main_process, accelerator.process_index, accelerator.num_processes
    sharded = _shards_state(accelerator)
    if config.batch_size % world:
        raise FtcotError(f"--batch-size {config.batch_size} must be a multiple of the {world} processes "
                         f"(it is the global batch, split evenly).")
    loaded, precision = load_for_training(config, accelerator.device)
    prepared = prepare_data(data, loaded, spec, config)
    base_checksum = ckpt.output_checksum(loaded.model)
    torch.manual_seed(config.seed)  # LoRA initialisation: the same on every process and every run
    wrapper, optimizer, n_trainable = build_student(loaded, config, accelerator)
    inner = accelerator.unwrap_model(wrapper).model  # the PeftModel / transformers model
    device, bf16, use_autocast = accelerator.device, precision["bf16"], precision["autocast"]

    # ---- resume -------------------------------------------------------------------------------------
    torch.manual_seed(config.seed + rank)  # dropout: each process its own stream
    start_epoch, step, history = 1, 0, []
    last = ckpt.latest_checkpoint(out) if previous is not None else None
    if last is not None:
        hint = ckpt.resume_hint(last)
        state = read_json_object(last / "state.json", hint)
        if sharded:
            accelerator.load_state(str(last / "accelerate"))
        else:
            ckpt.load_trainable(inner, ckpt.load_torch(last / "trainable.pt", hint, map_location=device))
            optimizer.load_state_dict(ckpt.load_torch(last / "optimizer.pt", hint, map_location=device,
                                                      weights_only=False))
        rng_file = last / f"rng-rank{rank}.pt"
        if rng_file.is_file():
            ckpt.set_rng_state(ckpt.load_torch(rng_file, hint, weights_only=False))
        try:
            start_epoch, step, history = state["epoch"] + 1, state["step"], state["history"]
        except (KeyError, TypeError) as exc:
            raise FtcotError(f"{last / 'state.json'}: no '{exc}' field; {hint}.") from None

    record = {
        "student": config.student, "template": data.template.name, "task": spec.key, "data_dir": str(data.path),
        "is_encoder_decoder": loaded.is_encoder_decoder, "config": config.to_dict(),
        "precision": precision,
        "processes": world, "distributed": str(accelerator.distributed_type),
        "train_examples": len(prepared.train), "val_examples": len(prepared.val),
        "truncated_sample_indices": prepared.truncated, "trainable_parameters": n_trainable,
        "base_checksum": base_checksum, "epochs": history, "best_epoch": _best(history, config.select_epoch),
        "finished": False,
    }
    if previous and previous.get("finished") and start_epoch > config.epochs:
        if main and last is not None and not sharded:
            _repair_best(out, previous, inner, loaded, config, console)
        if main:
            console.print(f"{out}: already trained for {config.epochs} epochs; nothing to do.")
            console.print(summary_table(previous))
        return previous

    metrics_log = MetricsLog(out, step, enabled=main)  # metrics.jsonl (and TensorBoard, if installed), live
    lengths = [t.tokens for t in prepared.train]
    windows_per_epoch = math.ceil(math.ceil(len(prepared.train) / config.batch_size) / config.grad_accum)
    amp = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_autocast)
    gen_budget = config.max_new_tokens or _default_max_new_tokens(prepared)
    if main:
        resumed = f", resuming after epoch {start_epoch - 1}" if start_epoch > 1 else ""
        console.print(f"ftcot train: {config.student} ({'LoRA' if config.lora else 'full'}, "
                      f"{n_trainable:,} trainable), {len(prepared.train)} examples, {world} process(es), "
                      f"bf16={'autocast' if use_autocast else 'weights' if bf16 else 'off'}{resumed}")

    with TrainProgress(console, config.epochs * windows_per_epoch, (start_epoch - 1) * windows_per_epoch,
                       enabled=main) as progress:
        for epoch in range(start_epoch, config.epochs + 1):
            wrapper.train()
            batches = length_grouped_batches(lengths, config.batch_size, config.seed, epoch)
            started, epoch_loss, epoch_targets, epoch_tokens, epoch_kd = time.perf_counter(), 0.0, 0, 0, 0.0
            step_losses = []
            for w in range(0, len(batches), config.grad_accum):
                window = batches[w:w + config.grad_accum]
                step_loss, targets, tokens = train_window(wrapper, optimizer, accelerator, prepared.train, window,
                                                          config, amp, _pad_id(loaded), loaded.is_encoder_decoder)
                step += 1
                _require_finite("training loss", step_loss, epoch, config, f"step {step}")
                step_losses.append(step_loss)
                epoch_loss += step_loss * targets
                epoch_targets += targets
                epoch_tokens += tokens
                kd_loss = accelerator.unwrap_model(wrapper).window_kd if config.kd_weight is not None else None
                epoch_kd += (kd_loss or 0.0) * targets
                progress.step(epoch, config.epochs, step_loss, epoch_tokens / (time.perf_counter() - started))
                metrics_log.step(epoch, step, step_loss, epoch_tokens / (time.perf_counter() - started), kd_loss)
            seconds = time.perf_counter() - started

            wrapper.eval()
            val_rows = _val_losses(wrapper, prepared, config, accelerator, amp, loaded)
            val_loss = _val_loss(val_rows)
            _require_finite("validation loss", val_loss, epoch, config)
            eval_model = LoadedModel(inner, loaded.tokenizer, loaded.is_encoder_decoder, loaded.spec)
            answers = _val_answers(eval_model, prepared, config, accelerator, amp, gen_budget, wrapper)
            correct = sum(right for right, _ in answers.values())
            metrics = {
                "epoch": epoch, "step": step, "train_loss": epoch_loss / epoch_targets, "train_seconds": seconds,
                "train_tokens": epoch_tokens, "train_tokens_per_s": epoch_tokens / seconds,
                "val_loss": val_loss, "val_accuracy": correct / len(_generated_val(prepared)),
                "val_correct": correct, "val_total": len(_generated_val(prepared)), "step_losses": step_losses,
            }
            if config.kd_weight is not None:  # the KL term (logit distillation), per completion token; in train_loss
                metrics["train_kd_loss"] = epoch_kd / epoch_targets
            history = [*history, metrics]
            metrics_log.epoch(metrics)
            metrics_log.validation(epoch, step, _validation_lines(prepared, val_rows, answers))
            record.update(epochs=history, best_epoch=_best(history, config.select_epoch), peak_rss_gb=peak_rss_gb())
            progress.note(f"epoch {epoch}: train loss {metrics['train_loss']:.4f}, val loss {val_loss:.4f}, "
                          f"val accuracy {100 * metrics['val_accuracy']:.1f}% ({correct}/{metrics['val_total']})")
            _save_checkpoint(out, epoch, step, history, record, inner, optimizer, accelerator, sharded)

    metrics_log.close()
    if sharded and record["best_epoch"] != history[-1]["epoch"]:
        # best/ must hold the best epoch, not the last: every process loads its part of that epoch's
        # checkpoint (a collective call, as when resuming); then the main process exports.
        accelerator.load_state(str(ckpt.checkpoint_dir(out, record["best_epoch"]) / "accelerate"))
    if main:
        _export_best(out, record, inner, loaded, config, sharded)
        record.update(finished=True, peak_rss_gb=peak_rss_gb())
        atomic_write_json(out / ckpt.TRAIN_JSON, record)
        console.print(summary_table(record))
        console.print(f"best epoch {record['best_epoch']} → {out / ckpt.BEST}; record: {out / ckpt.TRAIN_JSON}")
    accelerator.wait_for_everyone()
    return record


def _shards_state(accelerator: Any) -> bool:
    """FSDP and DeepSpeed shard the optimizer state (FSDP the weights too): checkpoints are written and read
    through accelerate's save_state/load_state, by every process."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def _require_finite(what: str, value: float, epoch: int, config: TrainConfig, where: str = "") -> None:
    """Stop on a NaN or infinite loss before anything of this epoch is saved: a diverged model must not
    become a checkpoint or the best epoch."""
    if math.isfinite(value):
        return
    kept = f"the checkpoint of epoch {epoch - 1} is kept" if epoch > 1 else "no epoch had finished"
    raise FtcotError(f"Epoch {epoch}{', ' + where if where else ''}: the {what} is {value}; training stopped and "
                     f"{kept}. Train into a new --out with a lower --lr (now {config.lr:g}) or check the data.")


def _repair_best(out: Path, record: dict, inner: Any, loaded: Any, config: TrainConfig, console: Console) -> None:
    """Rewrite a damaged or missing best/ of a finished run from the best epoch's kept checkpoint."""
    problem = ckpt.best_problem(out)
    best_epoch = record.get("best_epoch")
    if problem is None or not best_epoch or not (ckpt.checkpoint_dir(out, best_epoch) / "trainable.pt").is_file():
        return
    console.print(f"{problem}; rewriting {out / ckpt.BEST} from epoch {best_epoch}'s checkpoint.")
    _export_best(out, record, inner, loaded, config, False)


def load_for_training(config: TrainConfig, device: Any) -> tuple[Any, dict]:
    """The student in its training precision, and that precision's description."""
    import torch

    from ftcot.models import load_model
    from ftcot.models.loading import bf16_supported

    bf16 = bf16_supported(device) if config.bf16 is None else config.bf16
    # Trained weights stay fp32 (pure-bf16 AdamW updates would round away) and bf16 autocast runs the
    # matmuls: full fine-tuning keeps fp32 master weights; LoRA keeps fp32 adapters over frozen bf16
    # base weights, which also halves the base model's memory.
    weights = "bfloat16" if bf16 and config.lora else "float32"
    loaded = load_model(config.student, dtype=weights, device=str(device), seed=config.seed)
    if torch.device(device).type == "cpu":
        # sdpa's CPU flash-attention kernel took twice eager's time at these lengths (Gemma, 8 × 130 tokens:
        # 34 vs ~17 ms a layer, forward and backward), 5% of a step. Eager keeps the (batch × heads × length²)
        # attention weights for the backward pass: Gemma's peak at 8 × 512 tokens went from 5.3 to 5.7 GB.
        loaded.model.set_attn_implementation("eager")
    return loaded, {"bf16": bf16, "weights": weights, "autocast": bf16, "device": str(device)}


def set_dropout(model: Any, p: float) -> None:
    """Every dropout probability of ``model``: its nn.Dropout modules and the attention layers that keep
    theirs as a float attribute for a functional call (T5's ``dropout``, Llama/Gemma's
    ``attention_dropout``), which setting nn.Dropout alone would miss."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p
        for name in ("dropout", "attention_dropout"):
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, p)


def build_student(loaded: Any, config: TrainConfig, accelerator: Any) -> tuple[Any, Any, int]:
    """(prepared CompletionLM, prepared AdamW, trainable parameter count); LoRA adapters added if asked."""
    import torch
    from accelerate.utils import DistributedType

    from ftcot.train.loss import CompletionLM

    model = loaded.model
    if config.dropout is not None:
        set_dropout(model, config.dropout)
    if config.lora:
        from peft import LoraConfig, TaskType, get_peft_model

        with warnings.catch_warnings():
            # peft reads transformers' deprecated `is_gradient_checkpointing`: a warning users can do nothing about.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            model = get_peft_model(model, LoraConfig(
                r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                target_modules="all-linear",  # every linear projection; peft leaves the output layer out
                task_type=TaskType.SEQ_2_SEQ_LM if loaded.is_encoder_decoder else TaskType.CAUSAL_LM))
        _keep_lora_inputs(model)
    model.train()
    wrapper = CompletionLM(model, loaded.is_encoder_decoder, config.loss_chunk, config.kd_weight or 0.0)
    trainable = [p for p in wrapper.parameters() if p.requires_grad]
    # Paper: AdamW, constant lr (no scheduler, no warm-up); weight decay 0.01 is torch's default, as the reference.
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        ds = accelerator.state.deepspeed_plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"] = config.batch_size // accelerator.num_processes
        ds["gradient_accumulation_steps"] = config.grad_accum
        ds["train_batch_size"] = config.batch_size * config.grad_accum
    wrapper, optimizer = accelerator.prepare(wrapper, optimizer)
    return wrapper, optimizer, sum(p.numel() for p in trainable)


def _keep_lora_inputs(model: Any) -> None:
    """Let the adapters take their input in the activations' dtype.

    peft casts every LoRA input up to the fp32 adapters' dtype and the product back down:
    with bf16 base weights that was four activation-sized copies per projection, forward and
    backward, and the adapter matmuls in fp32 (~15% of a Gemma step on CPU, see bench). Under
    autocast the adapters run in bf16 like the base layer, their fp32 weights cast once per
    forward; without autocast every weight has the activations' dtype, so nothing needs a cast.
    """
    from peft.tuners.lora import LoraLayer

    for module in model.modules():
        if isinstance(module, LoraLayer):
            module.cast_input_dtype_enabled = False


def pad_multiple(config: TrainConfig, device: Any) -> int:
    """GPUs: few distinct shapes (cuDNN attention plans each new one: ~10x slower first steps in bf16 on an
    H200); CPUs: no rounding, every padded position is computed."""
    return config.pad_multiple or (64 if device.type == "cuda" else 1)


def train_window(wrapper: Any, optimizer: Any, accelerator: Any, examples: list[Tokenized], window: list[list[int]],
                 config: TrainConfig, amp: Any, pad_id: int, encoder_decoder: bool) -> tuple[float, int, int]:
    """One optimizer update over ``window`` (grad_accum global batches); returns (loss, targets, tokens).

    The loss is normalised by the completion tokens of the whole update on all
    processes, so N processes and one process compute the same gradient.
    """
    import torch
    from accelerate.utils import DistributedType

    rank, world = accelerator.process_index, accelerator.num_processes
    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    sharded = _shards_state(accelerator)
    targets = sum(examples[i].loss_units for b in window for i in b)
    local = torch.zeros(2, device=accelerator.device)  # the summed loss, and of it the KL (logit distillation)
    inner = accelerator.unwrap_model(wrapper)
    for k, batch in enumerate(window):
        rows, weight = batch[rank::world], 1.0
        if not rows:  # a short last batch: every process must still run forward and backward
            rows, weight = batch[:1], 0.0
        inputs = collate([examples[i] for i in rows], pad_id, encoder_decoder, pad_multiple(config, accelerator.device))
        inputs = {key: value.to(accelerator.device) for key, value in inputs.items()}
        # Gradients are all-reduced once per update, not after every accumulated batch.
        last = k == len(window) - 1
        sync = contextlib.nullcontext() if last or sharded else accelerator.no_sync(wrapper)
        with sync:
            with amp:
                loss_sum, _ = wrapper(**inputs)
            scale = weight * world / targets  # DDP averages over processes: undo it
            if deepspeed:
                scale *= config.grad_accum  # DeepSpeed divides by its accumulation steps itself
            accelerator.backward(loss_sum * scale)
        kd = inner.last_kd if inner.last_kd is not None else torch.zeros((), device=accelerator.device)
        local += torch.stack([loss_sum.detach().float(), kd.float()]) * weight
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    total = accelerator.reduce(local, "sum") if world > 1 else local
    inner.window_kd = total[1].item() / targets  # the update's KL per completion token (kd_loss in the metrics)
    return total[0].item() / targets, targets, sum(examples[i].tokens for b in window for i in b)


def _pad_id(loaded: Any) -> int:
    pad = loaded.tokenizer.pad_token_id
    return 0 if pad is None else pad


def _best(history: list[dict], select: str) -> int | None:
    """The epoch best/ holds: the last one, or the best (highest val accuracy, then lowest val loss, then the
    earliest)."""
    if not history:
        return None
    if select == "last":
        return history[-1]["epoch"]
    return min(history, key=lambda m: (-m["val_accuracy"], m["val_loss"], m["epoch"]))["epoch"]


def _default_max_new_tokens(prepared: Prepared) -> int:
    longest = max(t.target_tokens for t in prepared.train + prepared.val if t.generated)
    budget = math.ceil(1.25 * longest) + 4
    limit = None if prepared.loaded.is_encoder_decoder else prepared.loaded.max_positions
    if limit is not None:
        budget = min(budget, limit - max(t.prompt_tokens for t in prepared.val if t.generated))
    return budget


def _val_losses(wrapper: Any, prepared: Prepared, config: TrainConfig, accelerator: Any, amp: Any,
                loaded: Any) -> dict[int, tuple[float, float]]:
    """Each validation row's ``(summed loss, loss units)``, by its index in ``prepared.val``, from every process."""
    import torch

    rank, world = accelerator.process_index, accelerator.num_processes
    order = sorted(range(len(prepared.val)), key=lambda i: prepared.val[i].tokens)
    batch = config.eval_batch_size * world
    mine: dict[int, tuple[float, float]] = {}
    with torch.no_grad():
        for start in range(0, len(order), batch):
            chunk = order[start:start + batch]
            # Every process runs one forward per chunk (FSDP's collectives need it): one short of rows
            # runs the chunk's first row again and keeps nothing of it.
            rows = chunk[rank::world]
            inputs = collate([prepared.val[i] for i in rows or chunk[:1]], _pad_id(loaded),
                             loaded.is_encoder_decoder, pad_multiple(config, accelerator.device))
            with amp:
                losses = wrapper(**{k: v.to(accelerator.device) for k, v in inputs.items()}, per_row=True)
            mine.update(zip(rows, losses))
    return _from_every_process(mine, world)


def _from_every_process(mine: dict[int, Any], world: int) -> dict[int, Any]:
    """This process's share of a per-row result merged with every other process's."""
    from accelerate.utils import gather_object

    return mine if world == 1 else {i: row for part in gather_object([mine]) for i, row in part.items()}


def _val_loss(rows: dict[int, tuple[float, float]]) -> float:
    """The validation loss: summed over rows, per loss unit (a token, or a weighted row); NaN without any
    (every target cut by truncation), which the finiteness check then reports."""
    units = sum(units for _, units in rows.values())
    return sum(loss for loss, _ in rows.values()) / units if units else math.nan


def _generated_val(prepared: Prepared) -> list[int]:
    """The validation rows answered by generation: all, but a distilling step-by-step rationale row."""
    return [i for i, t in enumerate(prepared.val) if t.generated]


def _val_answers(eval_model: Any, prepared: Prepared, config: TrainConfig, accelerator: Any, amp: Any,
                 max_new_tokens: int, wrapper: Any) -> dict[int, tuple[bool, str]]:
    """Greedy generation on this process's share of val questions, scored like evaluation scores:
    ``(correct, output)`` by index in ``prepared.val``, from every process."""
    import torch
    from accelerate.utils import DistributedType

    from ftcot.models import generate

    rank, world = accelerator.process_index, accelerator.num_processes
    mine = _generated_val(prepared)[rank::world]
    template = prepared.data.template
    prompts = [template.format_prompt(prepared.data.val[i].question, eval_model.is_encoder_decoder) for i in mine]
    full = contextlib.nullcontext()
    if accelerator.distributed_type == DistributedType.FSDP:
        # Generation runs a different number of forwards per process: gather the full weights first.
        from torch.distributed.fsdp import FullyShardedDataParallel

        full = FullyShardedDataParallel.summon_full_params(wrapper, writeback=False)
    eval_model.model.eval()
    with full, amp, torch.no_grad():
        outputs = generate(eval_model, prompts, max_new_tokens=max_new_tokens,
                           batch_size=config.eval_batch_size) if prompts else []
    eval_model.model.train()
    answers = {i: (score(g.text, prepared.data.val[i].answer, prepared.spec, template).correct, g.text)
               for i, g in zip(mine, outputs)}
    return _from_every_process(answers, world)


def _validation_lines(prepared: Prepared, losses: dict[int, tuple[float, float]],
                      answers: dict[int, tuple[bool, str]]) -> list[dict[str, Any]]:
    """One line per validation row: what a selection rule other than the built-in one needs (any subset's
    accuracy or loss, per epoch)."""
    lines = []
    for i, row in enumerate(prepared.val):
        loss, units = losses[i]
        line = {"sample_index": row.sample_index, "objective": row.objective, "loss": loss, "loss_units": units}
        if i in answers:
            line.update(correct=answers[i][0], output=answers[i][1])
        lines.append(line)
    return lines


def _save_checkpoint(out: Path, epoch: int, step: int, history: list[dict], record: dict, inner: Any,
                     optimizer: Any, accelerator: Any, sharded: bool) -> None:
    from accelerate.utils import gather_object

    rngs = gather_object([ckpt.rng_state()]) if accelerator.num_processes > 1 else [ckpt.rng_state()]
    tmp = None
    if accelerator.is_main_process:
        tmp = ckpt.temporary_dir(out / ckpt.CHECKPOINTS, f"epoch-{epoch:04d}")
    if sharded:  # FSDP / DeepSpeed shard optimizer state: every process writes its part
        tmp = gather_object([tmp])[0] if accelerator.num_processes > 1 else tmp
        accelerator.save_state(str(tmp / "accelerate"))
    if accelerator.is_main_process:
        try:
            if not sharded:
                ckpt.save_torch(ckpt.trainable_state(inner), tmp / "trainable.pt")
                ckpt.save_torch(optimizer.state_dict(), tmp / "optimizer.pt")
            for r, state in enumerate(rngs):
                ckpt.save_torch(state, tmp / f"rng-rank{r}.pt")
            atomic_write_json(tmp / "state.json", {"epoch": epoch, "step": step, "history": history})
            # train.json first: a rerun resumes only where it finds one (it holds the settings to match), so
            # a kill between the two must not leave a checkpoint without it (the rerun started over).
            atomic_write_json(out / ckpt.TRAIN_JSON, record)
            ckpt.publish_dir(tmp, ckpt.checkpoint_dir(out, epoch))
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)  # a half-written checkpoint only takes space (a full disk's)
            cause = find_os_error(exc)
            if cause is None:
                raise
            raise os_error(cause, ckpt.checkpoint_dir(out, epoch)) from None
        keep = {ckpt.checkpoint_dir(out, epoch), ckpt.checkpoint_dir(out, record["best_epoch"])}
        for old in (out / ckpt.CHECKPOINTS).glob("epoch-*"):
            if old not in keep:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _export_best(out: Path, record: dict, inner: Any, loaded: Any, config: TrainConfig, sharded: bool) -> None:
    from ftcot.models import LoadedModel

    best = record["best_epoch"]
    if best != record["epochs"][-1]["epoch"] and not sharded:
        checkpoint = ckpt.checkpoint_dir(out, best)
        ckpt.load_trainable(inner, ckpt.load_torch(checkpoint / "trainable.pt", ckpt.resume_hint(checkpoint)))
    inner.eval()
    info = {"student": config.student, "seed": config.seed, "template": record["template"], "task": record["task"],
            "epoch": best, "is_encoder_decoder": loaded.is_encoder_decoder, "base_checksum": record["base_checksum"]}
    ckpt.save_best(out, LoadedModel(inner, loaded.tokenizer, loaded.is_encoder_decoder, loaded.spec),
                   config.lora, info)
