"""EVAL_DIR on disk: settings, predictions appended batch by batch, metrics.

Layout
------
- ``settings.json``: what decides the outputs (task, split, split scheme,
  method, template, model, dtype, token budgets). Written before the first
  batch; a rerun into the same EVAL_DIR must match it, so predictions of two
  different evaluations never mix. ``--limit`` and ``--batch-size`` are not
  part of it: a larger limit extends an evaluation, and greedy outputs do not
  depend on the batch.
- ``predictions.jsonl``: one object per sample (fields below), appended and
  fsynced as each batch finishes, so a kill loses at most the batch in flight.
  A rerun skips the samples already there. A last line cut short by a kill
  (no trailing newline) is dropped and its sample generated again.
- ``metrics.json``: written (atomically) when every selected sample has a
  prediction.
- ``.lock``: one writer per EVAL_DIR at a time.

Prediction fields: ``sample_index, question, answer, prompt, output,
prediction, correct, format_correct, complete, finish_reason,
prompt_tokens, completion_tokens, generation_s``; Zero-shot-CoT adds
``rationale`` (stage 1's text) and ``answer_prompt`` (stage 2's prompt, whose
completion is ``output``). ``generation_s`` is the sample's share of its
batch's wall time; ``finish_reason`` is the last stage's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import IO, Any

from ftcot.dir_lock import lock_directory
from ftcot.errors import FtcotError
from ftcot.paths import atomic_write_text, os_error

SETTINGS_FILE = "settings.json"
PREDICTIONS_FILE = "predictions.jsonl"
METRICS_FILE = "metrics.json"
LOCK_FILE = ".lock"


@dataclass(frozen=True)
class EvalSettings:
    task: str
    split: str
    split_scheme: str
    method: str
    template: str
    model: str
    dtype: str
    max_new_tokens: int
    stop: tuple[str, ...] = ()
    weights: str | None = None  # a local model's weights (evaluate/source.py weights_fingerprint)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["stop"] = list(self.stop)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvalSettings:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["stop"] = tuple(values.get("stop", ()))
        return cls(**values)


class EvalStore:
    """One EVAL_DIR, locked for writing while open."""

    def __init__(self, eval_dir: Path) -> None:
        self.dir = Path(eval_dir)
        self.predictions_path = self.dir / PREDICTIONS_FILE
        self.metrics_path = self.dir / METRICS_FILE
        self._lock: IO[str] | None = None

    # -- opening -----------------------------------------------------------

    def open(self, settings: EvalSettings) -> None:
        if self.dir.exists() and not self.dir.is_dir():
            raise FtcotError(f"--out {self.dir} is a file; give a directory for the evaluation.")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        if not self.check(settings) or _read_settings(self.dir / SETTINGS_FILE).model != settings.model:
            _write_atomic(self.dir / SETTINGS_FILE, json.dumps(settings.to_json(), indent=2) + "\n")

    def check(self, settings: EvalSettings) -> bool:
        """Whether EVAL_DIR already holds this evaluation; a different one is a one-line error."""
        path = self.dir / SETTINGS_FILE
        if path.is_file() and not self._holds_predictions():
            # The settings of a call that failed before its first prediction (a budget the model cannot hold):
            # nothing here was made with them, so they do not bind the rerun that fixes the call.
            return False
        if path.is_file():
            previous = _read_settings(path)
            if previous.weights is not None and previous.weights == settings.weights:
                # The same weights at another path: the directory moved (an experiment's stages copied into
                # another --out, a CKPT_DIR renamed). The weights are the model; the path was where they were.
                previous = replace(previous, model=settings.model)
            if previous.weights is None:  # recorded before weights were: nothing to compare them with
                previous = replace(previous, weights=settings.weights)
            if previous.weights != settings.weights:
                raise FtcotError(f"{self.dir} holds an evaluation of other weights than {settings.model} holds now "
                                 f"(trained further, or replaced); use another --out, or delete {self.dir}.")
            if previous != settings:
                differ = [f.name for f in fields(EvalSettings) if getattr(previous, f.name) != getattr(settings, f.name)]
                name = differ[0]
                raise FtcotError(f"{self.dir} holds an evaluation with {name} '{_show(getattr(previous, name))}', not "
                                 f"'{_show(getattr(settings, name))}'; use another --out, or delete {self.dir}.")
            return True
        if self.predictions_path.exists():
            raise FtcotError(f"{self.predictions_path} exists but {path} does not; use another --out, "
                             f"or delete {self.dir}.")
        return False

    def set_aside_other_weights(self, weights: str | None) -> Path | None:
        """Move an evaluation made with other weights than ``weights`` into ``superseded/<its weights>/``; the
        folder it went to, or None when there was none to move.

        For an experiment's evaluate stage only, whose model is its cell's training: a training redone (its
        checkpoint gone, resumed from an archive) may hold other weights than the one that began this
        evaluation, and its predictions then belong to no model there is. ``ftcot evaluate`` refuses instead:
        its EVAL_DIR is the user's to reuse or delete."""
        path = self.dir / SETTINGS_FILE
        if weights is None or not path.is_file():
            return None
        previous = _read_settings(path)
        if previous.weights is None or previous.weights == weights:
            return None
        target = self.dir / "superseded" / previous.weights
        target.mkdir(parents=True, exist_ok=True)
        for name in (SETTINGS_FILE, PREDICTIONS_FILE, METRICS_FILE):
            if (self.dir / name).exists():
                os.replace(self.dir / name, target / name)
        return target

    def _holds_predictions(self) -> bool:
        return self.predictions_path.is_file() and self.predictions_path.stat().st_size > 0

    def _take_lock(self) -> None:
        self._lock = lock_directory(self.dir / LOCK_FILE, lambda holder: (
            f"{self.dir}: another 'ftcot evaluate' (pid {holder}) is writing here; wait for it or use another --out."))

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the descriptor releases the flock
            self._lock = None

    def __enter__(self) -> EvalStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- predictions ----------------------------------------------------------

    def done(self) -> dict[int, dict[str, Any]]:
        """Predictions already stored, by sample index (a torn last line is cut off first)."""
        path = self.predictions_path
        if not path.is_file():
            return {}
        _drop_torn_tail(path)
        found: dict[int, dict[str, Any]] = {}
        with path.open("rb") as handle:  # bytes: a line that is not UTF-8 is one bad line, not a crash
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    index = int(record["sample_index"])
                except (KeyError, TypeError, ValueError):  # ValueError: bad JSON, bad UTF-8, bad index
                    raise FtcotError(f"{path}:{number}: not a prediction record; fix or remove that line, "
                                     f"or use another --out.") from None
                found.setdefault(index, record)
        return found

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        try:
            with self.predictions_path.open("a", encoding="utf-8") as handle:
                handle.write(lines)
                handle.flush()
                os.fsync(handle.fileno())  # a finished batch survives a kill or a power cut
        except OSError as exc:
            # A partial line (full disk) is cut off by the next run's done(); earlier batches stay.
            raise os_error(exc, self.predictions_path) from None

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        _write_atomic(self.metrics_path, json.dumps(metrics, indent=2) + "\n")


def _read_settings(path: Path) -> EvalSettings:
    try:
        return EvalSettings.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError, OSError) as exc:  # cut short, not UTF-8, not the settings' fields
        raise FtcotError(f"{path}: unreadable evaluation settings ({exc}); delete {path.parent} "
                         f"or use another --out.") from None


def read_metrics(eval_dir: Path) -> dict[str, Any] | None:
    """An EVAL_DIR's metrics.json (None before the evaluation finished); a damaged one is a one-line error."""
    path = Path(eval_dir) / METRICS_FILE
    if not path.exists():
        return None
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        metrics = None
        reason = getattr(exc, "msg", None) or exc
    else:
        reason = "not a metrics object"
    if not isinstance(metrics, dict) or not {"n", "accuracy"} <= metrics.keys():
        raise FtcotError(f"{path}: truncated or unreadable ({reason}); rerun the same 'ftcot evaluate --out "
                         f"{path.parent}' to rewrite it from {PREDICTIONS_FILE} (nothing is generated again).")
    return metrics


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line that has no newline: a write the kill interrupted."""
    with path.open("rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return
        # Walk back to the previous newline (lines are a few KB; read in blocks).
        position = size
        while position > 0:
            step = min(65536, position)
            handle.seek(position - step)
            block = handle.read(step)
            cut = block.rfind(b"\n")
            if cut >= 0:
                handle.truncate(position - step + cut + 1)
                return
            position -= step
        handle.truncate(0)


def _write_atomic(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def _show(value: Any) -> str:
    return ",".join(value) if isinstance(value, tuple) else str(value)
