"""Resolve ``--model`` to a backend and, for a training checkpoint, its template.

``--model`` is one of:

- ``openai:MODEL``: an API student or baseline (``--base-url``, ``--api-key-env``);
- a CKPT_DIR written by ``ftcot train`` (its best student is evaluated): it
  carries its template, so ``--method`` may be left out (read by
  ``ftcot.train.checkpoint.load_student``); a baseline ``--method`` runs that
  student with the prompting baseline's prompts;
- any local model spec :func:`ftcot.models.load_model` takes (``tiny-gpt2``,
  ``gemma-270m``, a ``save_pretrained`` directory; ``hf:`` in front is
  accepted, as for teachers): it carries no template, so ``--method`` is required.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ftcot.errors import FtcotError
from ftcot.evaluate.backends import ApiBackend, Backend, LocalBackend
from ftcot.evaluate.methods import METHODS, STUDENT_METHODS, check_method
from ftcot.jsonl import read_json_object
from ftcot.models.loading import make_output_layer_input_contiguous
from ftcot.train import checkpoint
from ftcot.templates import Template


@dataclass
class Opened:
    backend: Backend
    method: str
    template: Template | None  # a checkpoint's template (student methods only)


def open_model(model: str, method: str | None, *, dtype: str | None = "auto", device: str | None = "auto",
               base_url: str | None = None, api_key_env: str | None = None) -> Opened:
    if method is not None:
        check_method(method)
    if (base_url or api_key_env) and not model.startswith("openai:"):
        raise FtcotError(f"--base-url and --api-key-env apply to openai: models, not '{model}'.")
    if model.startswith("openai:"):
        from ftcot.teach.backends import make_teacher

        return Opened(ApiBackend(make_teacher(model, base_url=base_url, api_key_env=api_key_env)),
                      _require_method(model, method), None)
    spec = model.removeprefix("hf:")
    path = Path(spec).expanduser()
    api_student = _api_student(path)
    if api_student is not None:
        return _open_api_student(path, api_student, method, api_key_env)
    if path.is_dir() and _is_checkpoint(path, method):
        loaded, template = checkpoint.load_student(path, dtype=dtype, device=device)
        # A merged LoRA student may come back with a new output layer; without the
        # contiguity hook its first forward per batch is ~400x slower (docs/offline-models.md).
        make_output_layer_input_contiguous(loaded.model)
        chosen = method or template.name
        if chosen in STUDENT_METHODS and chosen != template.name:
            raise FtcotError(f"{model} is a '{template.name}' student; drop --method {chosen} "
                             f"(or pass a baseline method: zs, zs_cot, fs_cot).")
        return Opened(LocalBackend(loaded), chosen, template if chosen in STUDENT_METHODS else None)
    from ftcot.models import load_model

    method = _require_method(model, method)
    return Opened(LocalBackend(load_model(spec, dtype=dtype, device=device)), method, None)


def _require_method(model: str, method: str | None) -> str:
    if method is None:
        raise FtcotError(f"--model {model} carries no template; pass --method ({', '.join(METHODS)}).")
    return method


def _is_checkpoint(path: Path, method: str | None) -> bool:
    """Whether ``path`` is a CKPT_DIR (``train.json`` or ``best/student.json``, see ftcot.train.checkpoint).

    A directory given without ``--method`` can only be one (a plain model needs
    a method), so it goes to ``load_student``, whose error says what is missing.
    """
    marked = (path / checkpoint.TRAIN_JSON).is_file() or (path / checkpoint.BEST / "student.json").is_file()
    return marked or method is None


def _api_student(path: Path) -> dict | None:
    """The train.json of a CKPT_DIR whose student is a provider's fine-tuned model, else None."""
    record_path = path / checkpoint.TRAIN_JSON
    if not record_path.is_file():
        return None
    record = read_json_object(record_path, "rerun 'ftcot train' to rewrite it")
    return record if str(record.get("student", "")).startswith("openai:") else None


def _open_api_student(path: Path, record: dict, method: str | None, api_key_env: str | None) -> Opened:
    """A chat fine-tuned API student: its training prompt is the whole user turn (no prefill, no END)."""
    from ftcot.teach.backends.openai_compat import OpenAICompatTeacher
    from ftcot.templates import get_template

    template = get_template(record["template"])
    if method not in (None, template.name):
        raise FtcotError(f"{path} is a '{template.name}' API student; drop --method {method}.")
    kwargs = {"api_key_env": api_key_env} if api_key_env else {}
    teacher = OpenAICompatTeacher(record["student"].removeprefix("openai:"), base_url=record["base_url"],
                                  chat=True, prefill=False, **kwargs)
    return Opened(ApiBackend(teacher), template.name, template)


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def weights_fingerprint(model: str) -> str | None:
    """A hash of the weight files a local model directory holds (a CKPT_DIR: its best/), None for a named
    model (tiny-gpt2, gemma-270m, openai:…) or an API student.

    Part of an evaluation's settings: the path alone is not the model. Trained further, a CKPT_DIR's best/
    may hold other weights under the same path, and their evaluation must not reuse the old predictions.
    """
    path = Path(model.removeprefix("hf:")).expanduser()
    if not path.is_dir() or _api_student(path) is not None:
        return None
    root = path / checkpoint.BEST if (path / checkpoint.BEST).is_dir() else path
    digest = hashlib.sha256()
    for file in sorted(f for f in root.rglob("*") if f.is_file() and f.suffix in WEIGHT_SUFFIXES):
        digest.update(f"{file.relative_to(root)}\0{file.stat().st_size}\0".encode())
        try:
            with file.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        except OSError as exc:
            raise FtcotError(f"{file}: cannot be read ({exc.strerror or exc}).") from None
    return digest.hexdigest()[:16]
