"""Stage 5: score a student (or a prompting baseline) on a task's split.

``evaluate()`` opens the model (:mod:`ftcot.evaluate.source`), builds the
method's requests (:mod:`ftcot.evaluate.methods`), runs them in batches
(:mod:`ftcot.evaluate.runner`), judges each output
(:mod:`ftcot.evaluate.judge`) and writes EVAL_DIR
(:mod:`ftcot.evaluate.store`, which documents the files).
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from ftcot.errors import FtcotError, check_int
from ftcot.evaluate.judge import Judgement, format_correct, judge
from ftcot.evaluate.methods import BASELINE_METHODS, METHODS, STUDENT_METHODS, EvalMethod
from ftcot.evaluate.runner import EvalResult, run_evaluation
from ftcot.evaluate.source import open_model, weights_fingerprint
from ftcot.evaluate.store import EvalSettings, EvalStore
from ftcot.paths import check_output, check_writable_dir, existing_path, task_inputs
from ftcot.tasks import Task

__all__ = ["BASELINE_METHODS", "METHODS", "STUDENT_METHODS", "EvalResult", "EvalSettings", "Judgement",
           "evaluate", "format_correct", "judge"]


def evaluate(task: Task, model: str, out: Path, *, method: str | None = None, split: str = "test",
             split_scheme: str = "default", batch_size: int = 16, max_new_tokens: int | None = None,
             limit: int | None = None, dtype: str = "auto", device: str = "auto", base_url: str | None = None,
             api_key_env: str | None = None, progress: bool = False, console: Console | None = None) -> EvalResult:
    """Evaluate ``model`` on ``task``'s ``split`` into ``out`` (resuming what is there)."""
    check_int("--limit", limit, 1, optional=True)
    check_int("--batch-size", batch_size, 1)
    check_int("--max-new-tokens", max_new_tokens, 1, optional=True)
    out = Path(out)
    # Nothing the evaluation reads may be written over: the model, a task file, the data root.
    check_output(out, [existing_path(model.removeprefix("hf:")), *task_inputs(task)])
    samples = task.split(split, split_scheme)[:limit]
    if not samples:
        raise FtcotError(f"Task '{task.key}' has no samples in split '{split}'.")
    weights = weights_fingerprint(model)
    if method is not None:
        # Refuse a bad method, budget, missing exemplars or a different evaluation in --out
        # before the (slow) model load. With the method known, these settings are final.
        early = EvalMethod(method, task, encoder_decoder=False, api=model.startswith("openai:"),
                           max_new_tokens=max_new_tokens)
        EvalStore(out).check(_settings(task, model, early, split, split_scheme, dtype, weights))
    path = Path(model).expanduser()
    if not path.exists() and (model.startswith((".", "/", "~")) or path.suffix in (".gguf", ".safetensors")):
        # A path, not a name: say so, rather than that it "carries no template" or looking it up on a hub.
        raise FtcotError(f"--model {model}: no such directory; give a CKPT_DIR, a model directory or a model "
                         f"name (tiny-gpt2, gemma-270m, smollm2-135m, openai:MODEL).")
    created = not out.exists()
    check_writable_dir(out)  # before the (slow) model load, not after it
    try:
        opened = open_model(model, method, dtype=dtype, device=device, base_url=base_url, api_key_env=api_key_env)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # nothing was evaluated: leave no empty EVAL_DIR behind
        raise
    backend = opened.backend
    try:
        plan = EvalMethod(opened.method, task, encoder_decoder=backend.is_encoder_decoder, api=backend.api,
                          max_new_tokens=max_new_tokens, template=opened.template)
        settings = _settings(task, model, plan, split, split_scheme, dtype, weights)
        with EvalStore(out) as store:
            store.open(settings)
            return run_evaluation(task, samples, plan, backend, settings, store, batch_size=batch_size,
                                  progress=progress, console=console)
    finally:
        backend.close()


def _settings(task: Task, model: str, plan: EvalMethod, split: str, split_scheme: str, dtype: str,
              weights: str | None) -> EvalSettings:
    return EvalSettings(task=task.key, split=split, split_scheme=split_scheme, method=plan.method,
                        template=plan.template.name, model=model, dtype=dtype, max_new_tokens=plan.max_new_tokens,
                        stop=plan.stop, weights=weights)
