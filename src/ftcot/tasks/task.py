"""A loaded task: its declaration, its samples and its splits."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from ftcot.data_root import require_file
from ftcot.errors import FtcotError
from ftcot.tasks.spec import Sample, TaskSpec
from ftcot.tasks.splits import SPLIT_PARTS, load_split_file


@dataclass
class Task:
    spec: TaskSpec
    samples: dict[int, Sample]
    # Split scheme name -> {"train": [...], "test": [...]}; built-ins load theirs lazily.
    splits: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    data_root: Path | None = None

    @property
    def key(self) -> str:
        return self.spec.key

    def split_indices(self, part: str = "test", scheme: str = "default") -> list[int]:
        if part not in SPLIT_PARTS:
            raise FtcotError(f"Unknown split '{part}'. Valid: {', '.join(SPLIT_PARTS)}.")
        if scheme not in self.splits:
            if self.data_root is None:
                raise FtcotError(f"Task '{self.key}' has no '{scheme}' split.")
            self.splits[scheme] = load_split_file(self.data_root, self.key, scheme)
        split = self.splits[scheme]
        return split["train"] + split["test"] if part == "all" else list(split[part])

    def split(self, part: str = "test", scheme: str = "default") -> list[Sample]:
        reason = self.unavailable(part, scheme)
        if reason:
            raise FtcotError(reason)
        return [self.samples[i] for i in self.split_indices(part, scheme)]

    def unavailable(self, part: str = "train", scheme: str = "default") -> str | None:
        """Why ``split(part, scheme)`` cannot load (its raw file is not published), or None if it can."""
        missing = next((i for i in self.split_indices(part, scheme) if i not in self.samples), None)
        return None if missing is None else self._missing_reason(missing, part)

    def _missing_reason(self, index: int, part: str) -> str:
        for span, reason in self.spec.unavailable:
            if index in span:
                return f"Task '{self.key}' split '{part}' is unavailable: {reason}."
        return f"Task '{self.key}' has no sample {index} (split '{part}')."


@cache
def _read_builtin(spec: TaskSpec, raw_dir: Path) -> tuple[Sample, ...]:
    return tuple(spec.reader(raw_dir))


def load_builtin(spec: TaskSpec, data_root: Path) -> Task:
    for name in spec.files:
        require_file(data_root, f"raw/{spec.key}/{name}", f"Task '{spec.key}'")
    samples = _read_builtin(spec, (data_root / "raw" / spec.key).resolve())
    return Task(spec, {s.index: s for s in samples}, data_root=data_root)
