"""``ftcot export model CKPT_DIR --to DIR``: a trained student as a plain transformers model.

DIR layout (a standard ``save_pretrained`` directory; push it to a hub or load it anywhere)::

    config.json, model.safetensors   the best epoch's weights, LoRA merged into the base
    generation_config.json           greedy, EOS as the stop, ftcot's default token budget for the template
    tokenizer files                  the student's tokenizer
    ftcot.json                       provenance: checkpoint, base, template and prompt layout, training
                                     settings, training data, evaluations
    README.md                        model card: how to prompt it, training data, the accuracies ftcot measured

The weights are saved in the dtype ftcot evaluates in (``--dtype auto``: bf16
where the hardware runs it natively, else fp32 — ``ftcot evaluate``'s rule), so
greedy generation from the export gives the outputs ``ftcot evaluate`` scored.
``--dtype float32`` keeps full precision instead.

Evaluations shown on the card: each ``--eval EVAL_DIR``, plus every finished
evaluation of this checkpoint found next to it (a sibling directory, or an
``ftcot run`` experiment's evaluate stages).

GGUF: neither llama-cpp-python nor the ``gguf`` package ships llama.cpp's
``convert_hf_to_gguf.py``, so there is no offline conversion here; run that
script from a llama.cpp checkout on DIR.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftcot.errors import FtcotError
from ftcot.export.common import (DataProvenance, check_output_dir, read_json_file, read_provenance, transformers_bars,
                                 write_atomically)
from ftcot.templates import Template

FTCOT_JSON = "ftcot.json"
EVAL_SETTINGS, EVAL_METRICS = "settings.json", "metrics.json"

# Hub ids and licenses of the packaged students' bases (what a card's `base_model` and `license` name).
KNOWN_BASES = {
    "gemma-270m": ("google/gemma-3-270m", "gemma"),
    "smollm2-135m": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
}


@dataclass(frozen=True)
class Evaluation:
    """One finished ``ftcot evaluate`` of the checkpoint, as the card reports it."""

    eval_dir: str
    task: str
    split: str
    split_scheme: str
    method: str
    n: int
    correct: int
    accuracy: float
    dtype: str

    @classmethod
    def read(cls, eval_dir: Path) -> Evaluation:
        what = f"'{eval_dir}' must be a finished 'ftcot evaluate' output (rerun it to finish)"
        settings = read_json_file(eval_dir / EVAL_SETTINGS, what)
        metrics = read_json_file(eval_dir / EVAL_METRICS, what)
        try:
            return cls(str(eval_dir), metrics["task"], metrics["split"], metrics.get("split_scheme", "default"),
                       metrics["method"], int(metrics["n"]), int(metrics["correct"]), float(metrics["accuracy"]),
                       str(settings.get("dtype", "auto")))
        except (KeyError, TypeError, ValueError) as exc:
            raise FtcotError(f"{eval_dir / EVAL_METRICS}: no usable '{exc}' field; rerun 'ftcot evaluate' "
                             f"into {eval_dir} to rewrite it.") from None


@dataclass(frozen=True)
class ModelExport:
    to: Path
    kind: str  # "lora" (merged into the base) or "full"
    base: str
    epoch: int
    dtype: str
    evaluations: list[Evaluation] = field(default_factory=list)


def export_model(ckpt_dir: str | Path, to: str | Path, *, dtype: str = "auto", eval_dirs: list[str | Path] = (),
                 find_evaluations: bool = True, force: bool = False, progress: bool = False) -> ModelExport:
    """Save the best student of ``ckpt_dir`` (an ``ftcot train`` output) to ``to`` as a transformers model."""
    ckpt = Path(ckpt_dir)
    if not ckpt.is_dir():
        raise FtcotError(f"{ckpt}: no such CKPT_DIR; give a directory written by 'ftcot train'.")
    record = _train_record(ckpt)
    student = read_json_file(ckpt / "best" / "student.json",
                             f"'{ckpt}' is not a finished 'ftcot train' output (run or resume: ftcot train DATA_DIR "
                             f"--out {ckpt})")
    evaluations = [Evaluation.read(Path(d)) for d in eval_dirs]
    if find_evaluations:
        given = {Path(e.eval_dir).resolve() for e in evaluations}
        evaluations += [Evaluation.read(d) for d in evaluations_of(ckpt) if d.resolve() not in given]
    target = check_output_dir(Path(to), [ckpt, *map(Path, eval_dirs)], force)

    from ftcot.models.loading import resolve_dtype
    from ftcot.train.checkpoint import load_student

    dtype_name = str(resolve_dtype(dtype, _cpu())).removeprefix("torch.")
    with warnings.catch_warnings(), transformers_bars(progress):
        # peft reads transformers' deprecated `is_gradient_checkpointing`: a warning users can do nothing about.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        loaded, template = load_student(ckpt, dtype=dtype_name, device="cpu")
    data = _data_provenance(record)
    info = export_info(ckpt, record, student, template, dtype_name, data, evaluations)

    def fill(tmp: Path) -> None:
        _set_generation_config(loaded, template)
        with transformers_bars(progress):
            loaded.model.save_pretrained(tmp)  # safetensors (transformers' only format since v5)
        loaded.tokenizer.save_pretrained(tmp)
        (tmp / FTCOT_JSON).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(model_card(info, appends_eos=_appends_eos(loaded)), encoding="utf-8")

    write_atomically(target, fill)
    return ModelExport(target, student["kind"], student["student"], int(student.get("epoch", 0)), dtype_name,
                       evaluations)


def _cpu() -> Any:
    import torch

    return torch.device("cpu")


def _train_record(ckpt: Path) -> dict[str, Any]:
    path = ckpt / "train.json"
    if not path.is_file():
        return {}  # best/ alone still exports; the card then says less about training
    record = read_json_file(path, f"rerun 'ftcot train ... --out {ckpt}' to rewrite it")
    if str(record.get("student", "")).startswith("openai:"):
        raise FtcotError(f"{ckpt} holds an API student ({record['student']}); its weights stay with the provider, "
                         f"so there is nothing to export.")
    return record


def _data_provenance(record: dict[str, Any]) -> DataProvenance | None:
    data_dir = record.get("data_dir")
    if not data_dir or not (Path(data_dir) / "curation.json").is_file():
        return None
    try:
        return read_provenance(Path(data_dir))
    except FtcotError:
        return None  # the card says the training data could not be read; the weights still export


def evaluations_of(ckpt: Path) -> list[Path]:
    """Finished evaluations of ``ckpt`` next to it: sibling EVAL_DIRs, or an experiment's evaluate stages."""
    found = []
    for root in {ckpt.parent, ckpt.parent.parent / "evaluate"}:
        if not root.is_dir():
            continue
        for candidate in sorted(root.iterdir()):
            settings_path = candidate / EVAL_SETTINGS
            if not ((candidate / EVAL_METRICS).is_file() and settings_path.is_file()):
                continue
            try:
                model = json.loads(settings_path.read_text(encoding="utf-8")).get("model", "")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                continue
            if _names(str(model), ckpt):
                found.append(candidate)
    return found


def _names(model: str, ckpt: Path) -> bool:
    """Whether an evaluation's ``model`` setting is ``ckpt``: the same path, or (relative to wherever it ran)
    a path that ``ckpt``'s absolute path ends with."""
    path = Path(model).expanduser()
    here = ckpt.resolve()
    if path.is_absolute():
        return path.resolve() == here
    parts = path.parts
    return bool(parts) and here.parts[-len(parts):] == parts


def _set_generation_config(loaded: Any, template: Template) -> None:
    """Greedy, stopping at EOS, with ftcot's token budget for the template: what ``ftcot evaluate`` runs."""
    from ftcot.evaluate.methods import default_max_new_tokens
    from ftcot.models.generation import eos_ids

    config = loaded.model.generation_config
    eos = sorted(eos_ids(loaded))
    config.eos_token_id = eos[0] if len(eos) == 1 else eos
    if config.pad_token_id is None:
        config.pad_token_id = loaded.tokenizer.pad_token_id
    config.max_new_tokens = default_max_new_tokens(template.name)
    config.do_sample = False
    # Sampling settings a base may carry would make transformers refuse to save a greedy config.
    for name in ("temperature", "top_p", "top_k", "min_p", "typical_p"):
        if hasattr(config, name):
            setattr(config, name, None)


def _appends_eos(loaded: Any) -> bool:
    """Whether the tokenizer ends every encoding with EOS (ByT5, the tiny students' tokenizer): a prompt
    must then drop it, as ftcot does, or the model is asked to continue after an end."""
    eos = loaded.tokenizer.eos_token_id
    ids = loaded.tokenizer("a", add_special_tokens=True)["input_ids"]
    return not loaded.is_encoder_decoder and eos is not None and bool(ids) and ids[-1] == eos


# ---- what the export says about itself ---------------------------------------------------------------------
def export_info(ckpt: Path, record: dict[str, Any], student: dict[str, Any], template: Template, dtype: str,
                data: DataProvenance | None, evaluations: list[Evaluation]) -> dict[str, Any]:
    """ftcot.json: everything the card shows, as data."""
    from dataclasses import asdict

    from ftcot.export.dataset import provenance_record

    layout = template.student_format(bool(student.get("is_encoder_decoder", False)))
    epochs = record.get("epochs", [])
    best = next((e for e in epochs if e.get("epoch") == student.get("epoch")), None)
    counts = {"train": record.get("train_examples"), "validation": record.get("val_examples")}
    return {
        "checkpoint": str(ckpt.resolve()),
        "kind": student["kind"],
        "lora_merged": student["kind"] == "lora",
        "base": student["student"],
        "is_encoder_decoder": bool(student.get("is_encoder_decoder", False)),
        "dtype": dtype,
        "template": template.name,
        "prompt_format": layout.prompt,
        "completion_format": layout.completion,
        "answer_prefix": template.answer_prefix,
        "best_epoch": student.get("epoch"),
        "best_epoch_metrics": {k: best.get(k) for k in ("train_loss", "val_loss", "val_accuracy", "val_correct",
                                                         "val_total")} if best else None,
        "epochs_trained": len(epochs),
        "train_config": record.get("config"),
        "training_data": {"data_dir": record.get("data_dir"), "task": record.get("task"),
                          **({"provenance": provenance_record(data, counts)} if data else {})},
        "evaluations": [asdict(e) for e in evaluations],
    }


def model_card(info: dict[str, Any], appends_eos: bool = False) -> str:
    import yaml

    hub_base, license_ = KNOWN_BASES.get(info["base"], (None, None))
    meta: dict[str, Any] = {}
    if license_:
        meta["license"] = license_
    if hub_base:
        meta["base_model"] = hub_base
    meta.update(library_name="transformers",
                pipeline_tag="text2text-generation" if info["is_encoder_decoder"] else "text-generation",
                tags=["fine-tune-cot", "chain-of-thought", "reasoning", "distillation", "ftcot"])
    auto = "AutoModelForSeq2SeqLM" if info["is_encoder_decoder"] else "AutoModelForCausalLM"
    data = info["training_data"]
    provenance = data.get("provenance") or {}
    teacher = (provenance.get("teacher") or {}).get("teacher")
    config = info["train_config"] or {}
    task = data.get("task") or "its task"
    title = f"{info['base']} fine-tuned with Fine-tune-CoT on {task}" + (f" (teacher {teacher})" if teacher else "")
    encode = "ids = tokenizer(prompt, return_tensors=\"pt\").input_ids"
    if appends_eos:
        encode += "[:, :-1]  # this tokenizer appends EOS to every text; a prompt must not end with it"
    lines = [
        "---", yaml.safe_dump(meta, sort_keys=False, width=1000).rstrip(), "---", "",
        f"# {title}", "",
        f"A student model trained by ftcot (Fine-tune-CoT, Ho et al., ACL 2023) to reason step by step "
        f"before it answers. Base: `{info['base']}`"
        + (", LoRA adapters merged into the base weights" if info["lora_merged"] else ", fully fine-tuned")
        + f"; best epoch {info['best_epoch']} of {info['epochs_trained'] or '?'}; weights in {info['dtype']}.", "",
        "## Use", "",
        f"It was trained on prompts laid out as `{_code(info['prompt_format'])}` and completions as "
        f"`{_code(info['completion_format'])}`"
        + (f"; the answer follows `{info['answer_prefix']}`." if info["answer_prefix"] else "."), "",
        "```python",
        f"from transformers import {auto}, AutoTokenizer",
        "",
        "tokenizer = AutoTokenizer.from_pretrained(\"PATH_OR_REPO\")",
        f"model = {auto}.from_pretrained(\"PATH_OR_REPO\")",
        f"PROMPT = {json.dumps(info['prompt_format'])}",
        "prompt = PROMPT.format(question=question.strip())",
        encode,
        "out = model.generate(ids)  # generation_config.json: greedy, stops at EOS, ftcot's token budget",
        "text = tokenizer.decode(out[0], skip_special_tokens=True)" if info["is_encoder_decoder"]
        else "text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)",
    ]
    if info["answer_prefix"]:
        lines.append(f"answer = text.split({json.dumps(info['answer_prefix'])})[-1].strip()")
    lines += ["```", ""]
    method = (f"LoRA (r {config.get('lora_r')}, alpha {config.get('lora_alpha')}), merged" if info["lora_merged"]
              else "full fine-tuning")
    lines += ["## Training", "", "| | |", "|---|---|", f"| base | `{info['base']}` |", f"| method | {method} |"]
    for name in ("epochs", "lr", "batch_size", "max_length", "seed"):
        if name in config:
            lines.append(f"| {name.replace('_', ' ')} | {config[name]} |")
    best = info.get("best_epoch_metrics") or {}
    if best.get("val_accuracy") is not None:
        lines.append(f"| best epoch | {info['best_epoch']}: validation accuracy {100 * best['val_accuracy']:.2f}% "
                     f"({best.get('val_correct')}/{best.get('val_total')})"
                     + (f", validation loss {best['val_loss']:.4f}" if best.get("val_loss") is not None else "")
                     + " |")
    lines += ["", "## Training data", ""]
    if provenance:
        counts, filters, splits = provenance["counts"], provenance["filters"], provenance["splits"]
        teacher_settings = provenance.get("teacher") or {}
        lines += [
            "| | |", "|---|---|",
            f"| task | {provenance['task']} (license: {provenance['source_license']}) |",
            f"| teacher | {_teacher_text(teacher, teacher_settings, provenance)} |",
            f"| template | {provenance['template']} |",
            f"| rows | {counts.get('train_rows')} train, {counts.get('validation_rows')} validation, from "
            f"{counts.get('questions_with_examples')} of {counts.get('train_questions')} training questions |",
            f"| filters | {'correct teacher answers only' if filters['correct_answers_only'] else 'none'}"
            + "".join(f"; dropped {n} ({reason})" for reason, n in filters["dropped"].items()) + " |",
            f"| splits | `{splits['split_scheme']}` training split; validation: a seeded {splits['val_fraction']} "
            f"slice of its questions (seed {splits['val_seed']}); test questions never seen |",
            "",
            "`ftcot export dataset` on the DATA_DIR gives these rows with their own card.", "",
        ]
    else:
        lines += [f"DATA_DIR `{data.get('data_dir')}` (not readable at export time; task {task}).", ""]
    lines += ["## Evaluation", ""]
    evaluations = info["evaluations"]
    if evaluations:
        lines += ["Measured by `ftcot evaluate` (greedy, answer read after the template's prefix):", "",
                  "| task | split | method | n | accuracy | dtype |", "|---|---|---|---|---|---|"]
        lines += [f"| {e['task']} | {e['split']} ({e['split_scheme']}) | {e['method']} | {e['n']} | "
                  f"{100 * e['accuracy']:.2f}% ({e['correct']}/{e['n']}) | {e['dtype']} |" for e in evaluations]
    else:
        lines.append("No evaluation was given or found (`ftcot export model CKPT_DIR --eval EVAL_DIR`).")
    lines += ["", "## GGUF", "",
              "For llama.cpp / Ollama, convert this directory with llama.cpp's `convert_hf_to_gguf.py` (not shipped "
              "with ftcot or the Python packages it uses).", ""]
    return "\n".join(lines)


def _teacher_text(teacher: str | None, settings: dict[str, Any], provenance: dict[str, Any]) -> str:
    if teacher:
        return f"`{teacher}`, {settings.get('method', 'zs_cot')}, temperature {settings.get('temperature', 0.0)}"
    return "unknown (curation.json names no teacher run that is still here)" \
        if provenance["filters"]["correct_answers_only"] else "none (gold answers)"


def _code(text: str) -> str:
    return json.dumps(text)[1:-1].replace("`", "'")
