"""What both exports share: the output-directory guard, atomic publishing, and where a DATA_DIR came from."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftcot.errors import FtcotError
from ftcot.export.licenses import SourceLicense, license_of
from ftcot.jsonl import read_json_object
from ftcot.train.checkpoint import publish_dir, temporary_dir

CURATION_FILE = "curation.json"


@contextmanager
def transformers_bars(progress: bool) -> Iterator[None]:
    """transformers' own bars ("Loading weights", "Writing model shards") only when progress is asked for;
    the caller's setting is restored afterwards. With ``progress``, transformers is not even imported."""
    if progress:
        yield
        return
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def check_output_dir(to: Path, inputs: Iterable[Path], force: bool) -> Path:
    """The resolved ``--to``, or a one-line error when writing there could harm an input or other files.

    An export inside its input would be read back as part of it next time (a DATA_DIR that lists
    its own export), and ``--force`` on a directory that holds an input would delete that input.
    """
    target = Path(to).expanduser().resolve()
    for source in inputs:
        resolved = Path(source).expanduser().resolve()
        if target == resolved or resolved in target.parents:
            raise FtcotError(f"--to {to} lies inside the input {source}; write the export to a directory outside it.")
        if target in resolved.parents:
            raise FtcotError(f"--to {to} contains the input {source}; write the export to a directory of its own.")
    if target.exists() and not target.is_dir():
        raise FtcotError(f"--to {to} is a file; give a directory path.")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise FtcotError(f"--to {to} exists and is not empty; choose a new directory or pass --force to replace it.")
    return target


def write_atomically(target: Path, fill) -> None:
    """Run ``fill(tmp_dir)`` and rename the result to ``target``: an export is complete or absent.

    A folder that cannot be written (read-only, a full disk) is one line naming ``--to``; the writers
    inside ``fill`` (torch, safetensors, pyarrow) report it in their own ways, so the OSError is looked
    for behind whatever they raised.
    """
    from ftcot.paths import write_error

    tmp = None
    try:
        tmp = temporary_dir(target.parent, target.name)
        fill(tmp)
        publish_dir(tmp, target)
    except BaseException as exc:
        import shutil

        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        error = write_error(exc, target, "--to")
        if error is not None:
            raise error from None
        raise


def read_json_file(path: Path, what: str) -> dict[str, Any]:
    return read_json_object(path, what)


@dataclass
class DataProvenance:
    """Where a DATA_DIR's rows came from: its curation summary, the teacher run, the benchmark's license."""

    data_dir: Path
    curation: dict[str, Any]
    # The teach run's settings (teacher spec, method, temperature, samples, max_tokens, trigger) when
    # they can be found; ``None`` for answer-only data (template ft) or a source that no longer exists.
    teacher: dict[str, Any] | None
    teacher_source: str | None  # what curation.json names as its source
    license: SourceLicense
    notes: list[str] = field(default_factory=list)

    @property
    def task(self) -> str:
        return str(self.curation.get("task", "unknown"))

    @property
    def template(self) -> str:
        return str(self.curation.get("template", "unknown"))


def read_provenance(data_dir: Path) -> DataProvenance:
    """Provenance of a DATA_DIR written by ``ftcot curate`` or an ``ftcot run`` curate stage."""
    curation = read_json_file(data_dir / CURATION_FILE, f"'{data_dir}' must be a DATA_DIR written by 'ftcot curate'")
    for name in ("task", "template"):
        if name not in curation:
            raise FtcotError(f"{data_dir / CURATION_FILE}: no '{name}' field; rerun 'ftcot curate' to rewrite it.")
    source = curation.get("source")
    teacher, notes = _teacher_of(data_dir, source)
    return DataProvenance(data_dir, curation, teacher, source, license_of(curation["task"]), notes)


def _teacher_of(data_dir: Path, source: str | None) -> tuple[dict[str, Any] | None, list[str]]:
    if not source:
        return None, []
    # `ftcot curate RUN_DIR` records the run's path as given (relative to where it ran: here, or a
    # directory above the DATA_DIR); an `ftcot run` curate stage records the teach stage's key, whose
    # directory is a sibling kind of stage (OUT/stages/teach/<key>).
    candidates = [Path(source), data_dir.parent.parent / "teach" / source]
    if not Path(source).is_absolute():
        candidates += [parent / source for parent in data_dir.resolve().parents]
    for candidate in candidates:
        if (candidate / "teach.sqlite").is_file():
            return _teach_run_settings(candidate), []
        if candidate.is_file():
            return _teacher_of_records(candidate), []
    return None, [f"the teacher run '{source}' named in curation.json is not here any more"]


def _teach_run_settings(run_dir: Path) -> dict[str, Any]:
    from ftcot.teach.plan import settings_of
    from ftcot.teach.store import TeachStore

    with TeachStore.open_readonly(run_dir) as store:
        settings = settings_of(store).to_json()
    settings.pop("exemplars", None)  # a long few-shot block; the card names the method instead
    return settings


def _teacher_of_records(path: Path) -> dict[str, Any] | None:
    """The teacher named by a JSONL of teacher records (shared format: a ``teacher`` field), if any."""
    from ftcot.jsonl import read_jsonl

    try:
        for _, record in read_jsonl(path):
            return {"teacher": record.get("teacher", "unknown"), "method": record.get("method", "zs_cot")}
    except FtcotError:
        return None
    return None
