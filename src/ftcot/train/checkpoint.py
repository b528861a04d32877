"""What ``ftcot train`` writes under CKPT_DIR, and how evaluation loads the result.

Layout::

    CKPT_DIR/
      train.json                 student spec, template, task, hyperparameters,
                                 per-epoch train/val metrics, best epoch (rewritten
                                 atomically after every epoch; "finished" at the end)
      checkpoints/epoch-0003/    resumable state after epoch 3:
        trainable.pt             every parameter that trains (LoRA: the adapters only)
        optimizer.pt             AdamW state
        rng-rank{R}.pt           python / numpy / torch RNG of each process
        state.json               epoch, optimizer steps, metrics so far
      best/                      the best epoch's student (by val accuracy, then val loss)
        student.json             kind (full | lora), base spec and seed, template, task, epoch
        model/                   kind=full: save_pretrained weights + tokenizer
        adapter/                 kind=lora: the PEFT adapter of the base spec

Every directory is written under a temporary name and renamed into place, so
after a ``kill -9`` a checkpoint is either complete or absent. The checkpoints
of the last and the best epoch are kept; older ones are deleted.

LoRA students are stored as base spec + adapter, not merged: 15 MB instead of
0.5–1 GB for Gemma, and the base weights stay one shared cached copy.
``load_student`` merges the adapter at load time, so evaluation runs at merged
speed. The base's output-layer checksum is recorded and checked so a changed
base (e.g. a tiny model built differently) fails loudly instead of scoring a
mismatched pair.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

from ftcot.errors import FtcotError
from ftcot.jsonl import json_object
from ftcot.paths import atomic_write_json, find_os_error, os_error
from ftcot.templates import Template, get_template

CHECKPOINTS = "checkpoints"
BEST = "best"
TRAIN_JSON = "train.json"


def temporary_dir(parent: Path, name: str) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


def publish_dir(tmp: Path, target: Path) -> None:
    """Rename a finished temporary directory into place (replacing an older one of the same name)."""
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(target, old)
        os.rename(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, target)


def checkpoint_dir(ckpt_dir: Path, epoch: int) -> Path:
    return ckpt_dir / CHECKPOINTS / f"epoch-{epoch:04d}"


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest complete checkpoint; temporary leftovers of a killed run are removed."""
    root = ckpt_dir / CHECKPOINTS
    if not root.is_dir():
        return None
    for leftover in root.glob(".*.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    done = sorted(p for p in root.glob("epoch-*") if (p / "state.json").is_file())
    return done[-1] if done else None


def resume_hint(checkpoint: Path) -> str:
    return (f"delete {checkpoint} to resume from the checkpoint before it (or from the start), "
            f"or train into a new --out")


def load_torch(path: Path, hint: str, **kwargs: Any) -> Any:
    """``torch.load`` of a checkpoint file; a missing or damaged file is a one-line error + ``hint``."""
    import torch

    if not path.is_file():
        raise FtcotError(f"{path}: missing; {hint}.")
    try:
        return torch.load(path, **kwargs)
    except (RuntimeError, OSError, EOFError, ValueError) as exc:  # torch's reader reports a cut file as RuntimeError
        # torch's reader explains at length; its first sentence says what happened.
        reason = str(exc).split(". ")[0].splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FtcotError(f"{path}: truncated or unreadable ({reason}); {hint}.") from None


def save_torch(value: Any, path: Path) -> None:
    """``torch.save`` through a file we open: torch's own writer reports a full disk as "unexpected pos",
    with ours the OSError stays attached to it (see ``ftcot.paths.find_os_error``)."""
    import torch

    with path.open("wb") as handle:
        torch.save(value, handle)


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole safetensors file, or None. Reads the header only (safetensors checks that
    the data it announces is all there)."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return "missing"
    try:
        with safe_open(str(path), framework="pt"):
            return None
    except (SafetensorError, OSError) as exc:
        return f"truncated or unreadable ({exc})"


def best_problem(ckpt_dir: Path) -> str | None:
    """What is wrong with ``best/`` as "FILE: what", or None when its record, config and weights are whole."""
    best = Path(ckpt_dir) / BEST
    meta, problem = json_object(best / "student.json")
    if problem:
        return f"{best / 'student.json'}: {problem}"
    lora = meta.get("kind") == "lora"
    folder = best / ("adapter" if lora else "model")
    config = folder / ("adapter_config.json" if lora else "config.json")
    _, problem = json_object(config)
    if problem:
        return f"{config}: {problem}"
    index = folder / "model.safetensors.index.json"  # a large model saved in shards
    if index.exists():
        listing, problem = json_object(index)
        if problem or not isinstance(listing.get("weight_map"), dict):
            return f"{index}: {problem or 'no weight_map'}"
        shards = sorted(set(map(str, listing["weight_map"].values())))
    else:
        shards = ["adapter_model.safetensors" if lora else "model.safetensors"]
    for shard in shards:
        problem = safetensors_problem(folder / shard)
        if problem:
            return f"{folder / shard}: {problem}"
    return None


def rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: Any) -> dict[str, Any]:
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: Any, state: dict[str, Any]) -> None:
    import torch

    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise FtcotError(f"Checkpoint does not fit the student ({len(missing)} unknown tensors, e.g. {missing[0]}); "
                         f"resume with the same --student and --lora settings or use a new --out.")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value.to(params[name].dtype))


def output_checksum(model: Any) -> float:
    """A cheap fingerprint of a base model: |weights| summed over the first output-layer rows.

    Taken after rounding to bf16, so an fp32 and a bf16 load of one base agree exactly.
    """
    import torch

    from ftcot.train.loss import unwrap_peft

    with torch.no_grad():
        rows = unwrap_peft(model).get_output_embeddings().weight[:256]
        return float(rows.to(torch.bfloat16).double().abs().sum())


def save_best(ckpt_dir: Path, loaded: Any, lora: bool, info: dict[str, Any]) -> Path:
    """Write ``best/`` from the model as it is now (call with the best epoch's weights loaded)."""
    tmp = temporary_dir(ckpt_dir, BEST)
    try:
        if lora:
            loaded.model.save_pretrained(tmp / "adapter")
        else:
            loaded.model.save_pretrained(tmp / "model")
            loaded.tokenizer.save_pretrained(tmp / "model")
        atomic_write_json(tmp / "student.json", {"kind": "lora" if lora else "full", **info})
        publish_dir(tmp, ckpt_dir / BEST)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # the kept checkpoints can rebuild best/ (rerun ftcot train)
        cause = find_os_error(exc)
        if cause is None:
            raise
        raise os_error(cause, ckpt_dir / BEST) from None
    return ckpt_dir / BEST


def load_student(ckpt_dir: str | Path, *, dtype: str | None = "auto", device: str | None = "auto") -> tuple[Any, Template]:
    """The best student of a training run and the template it was trained with.

    Returns ``(LoadedModel, Template)``; generate with
    ``ftcot.models.generate(loaded, [template.format_prompt(q, loaded.is_encoder_decoder)], ...)``
    and score with ``ftcot.scoring.score(text, gold, spec, template)``.
    """
    from ftcot.models import load_model

    best = Path(ckpt_dir) / BEST
    meta_path = best / "student.json"
    if not meta_path.is_file():
        raise FtcotError(f"{meta_path}: missing; '{ckpt_dir}' is not a finished 'ftcot train' output "
                         f"(run or resume: ftcot train DATA_DIR --out {ckpt_dir}).")
    problem = best_problem(Path(ckpt_dir))
    if problem:
        raise FtcotError(f"{problem}; rebuild best/ from the run's checkpoints: {_train_again(Path(ckpt_dir))}.")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    template = get_template(meta["template"])
    if meta["kind"] == "full":
        loaded = load_model(str(best / "model"), dtype=dtype, device=device)
        loaded.spec = meta["student"]
        return loaded, template

    from peft import PeftModel

    loaded = load_model(meta["student"], dtype=dtype, device=device, seed=meta.get("seed", 0))
    expected = meta.get("base_checksum")
    if expected is not None and abs(output_checksum(loaded.model) - expected) > 1e-9 * max(1.0, abs(expected)):
        raise FtcotError(f"{meta_path}: the base model '{meta['student']}' loaded here differs from the one the "
                         f"adapter was trained on (output-layer checksum); retrain or restore that base.")
    # Merged at load: inference then costs what the base model costs.
    loaded.model = PeftModel.from_pretrained(loaded.model, str(best / "adapter")).merge_and_unload()
    loaded.model.eval()
    return loaded, template


def _train_again(ckpt_dir: Path) -> str:
    """The command that resumes (or repairs) CKPT_DIR: its DATA_DIR from train.json when readable."""
    try:
        data_dir = json.loads((ckpt_dir / TRAIN_JSON).read_text(encoding="utf-8"))["data_dir"]
    except (OSError, ValueError, KeyError, TypeError):
        data_dir = "DATA_DIR"
    return f"ftcot train {data_dir} --out {ckpt_dir}"
