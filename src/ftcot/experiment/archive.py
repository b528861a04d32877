"""An experiment's results without its checkpoints: what a repository keeps, and what a later run resumes from.

``archive(run_dir, dest)`` copies the results (``results.md``, ``results.csv``, ``plots/``, ``report.html``,
``lineage.json``, ``experiment.json``) and a slim ``stages/`` tree:

- evaluate stages whole but for their lock: predictions, metrics and ``done.json``;
- train stages' records (``stage.json``, ``train.json``, ``done.json``, ``validation.jsonl``), not their
  checkpoints;
- curate stages' ``curation.json`` and teach stages' ``report.json``, for the record only.

``ftcot run --archive DEST`` archives each stage as it finishes and the results at the end (also after
Ctrl-C or SIGTERM). Copying ``DEST/stages`` into an experiment directory lets ``ftcot run`` skip every
archived cell: a finished evaluation is done, and so is the training it read. The curate and teach stages
carry no ``done.json`` and are redone: seconds for a replay teacher; a paid teacher's ``teach.sqlite`` is
never archived (it is the data you paid for: keep it beside the archive). An archived training whose
evaluation is not done has no checkpoint to evaluate, so it trains again; the evaluation resumes where the
new weights are the same, and starts over where they are not (the old predictions kept in
``superseded/<weights>/``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ftcot.errors import FtcotError
from ftcot.paths import check_output, check_writable_dir
from ftcot.train.metrics_log import VALIDATION_FILE

RESULT_FILES = ("results.md", "results.csv", "report.html", "lineage.json", "experiment.json")
KEPT = {
    "evaluate": None,  # every file but the lock
    "train": ("stage.json", "train.json", "done.json", VALIDATION_FILE),  # validation: another epoch rule later
    "curate": ("stage.json", "curation.json"),
    "teach": ("stage.json", "report.json"),
}


def check_destination(run_dir: Path, dest: Path, inputs: list[Path] | tuple[()] = ()) -> None:
    """An archive neither is nor lies inside, nor contains, the experiment directory or one of the experiment's
    ``inputs`` (its data root, its task files), and can be written (found now, not after the first stage)."""
    check_output(dest, [run_dir, *inputs], option="--archive")
    check_writable_dir(dest, "--archive")


def archive(run_dir: Path, dest: Path) -> int:
    """Copy ``run_dir``'s results and slim stage records into ``dest``; the number of stages archived."""
    run_dir, dest = Path(run_dir), Path(dest)
    if not (run_dir / "experiment.json").is_file():
        raise FtcotError(f"{run_dir}: not an experiment directory (no experiment.json); run `ftcot run` first.")
    check_destination(run_dir, dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in RESULT_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, dest / name)
    if (run_dir / "plots").is_dir():
        shutil.rmtree(dest / "plots", ignore_errors=True)
        shutil.copytree(run_dir / "plots", dest / "plots")
    count = 0
    for kind in KEPT:
        for stage in sorted((run_dir / "stages" / kind).glob("*")):
            if (stage / "stage.json").is_file():
                archive_stage(stage, dest / "stages" / kind / stage.name, kind)
                count += 1
    return count


def archive_stage(stage_dir: Path, target: Path, kind: str) -> None:
    """Copy one stage's slim records (``KEPT[kind]``) from ``stage_dir`` into ``target``."""
    kept = KEPT[kind]
    target.mkdir(parents=True, exist_ok=True)
    for file in stage_dir.iterdir():
        if file.is_file() and not file.name.startswith(".") and (kept is None or file.name in kept):
            shutil.copy2(file, target / file.name)
