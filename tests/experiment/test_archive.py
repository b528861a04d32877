"""An archived experiment (results and slim stage records, no checkpoints) resumes without retraining."""

from __future__ import annotations

import csv
import json
import shutil
import signal

import pytest

from ftcot.errors import FtcotError
from ftcot.experiment.archive import archive
from tests.cli import assert_one_line_error, run_ftcot
from tests.mounts import read_only_dir  # noqa: F401  (fixture)
# finished: the tiny experiment, run once
from tests.experiment.test_run import STUDENT, TINY, _rerun, _write, finished, signal_run_once  # noqa: F401

pytestmark = pytest.mark.slow


def test_an_archive_keeps_results_and_records_not_checkpoints_and_a_run_resumes_from_it(finished, tmp_path,
                                                                                          data_root):
    path, out = finished
    kept = tmp_path / "archive"
    assert archive(out, kept) > 0
    assert (kept / "results.csv").read_text() == (out / "results.csv").read_text()
    assert (kept / "report.html").is_file() and list((kept / "plots").glob("*.png"))
    assert not list(kept.rglob("*.safetensors")) and not list(kept.rglob("*.pt"))
    assert not list(kept.rglob("teach.sqlite")) and not list(kept.rglob(".lock"))
    assert list(kept.glob("stages/evaluate/*/predictions.jsonl"))

    # A fresh experiment directory seeded with the archive's stages: nothing is trained or evaluated again.
    fresh = tmp_path / "fresh"
    shutil.copytree(kept / "stages", fresh / "stages")
    statuses = _rerun(path, fresh, data_root)
    assert set(statuses["train"]) == {"done earlier"} and set(statuses["evaluate"]) == {"done earlier"}
    assert set(statuses["teach"]) == {"ran"}  # replay: seconds, free
    rows = lambda d: sorted(map(tuple, (r.values() for r in csv.DictReader((d / "results.csv").open()))))  # noqa: E731
    assert rows(fresh) == rows(out)


def test_an_archive_inside_the_experiment_directory_is_refused(finished):
    path, out = finished
    with pytest.raises(FtcotError, match="lies inside the input"):
        archive(out, out / "kept")
    assert_one_line_error(run_ftcot("run", path, "--out", out, "--archive", out.parent), "--archive",
                          "contains the input")
    assert not (out.parent / "results.md").exists()


def test_results_md_shows_the_papers_rows_for_the_runs_tasks(finished):
    _, out = finished
    assert "| GPT-2 124M, Fine-tune-CoT | 4.67 | 77.33 |" in (out / "results.md").read_text()


def test_the_cli_archives_after_the_run(finished, tmp_path, data_root):
    path, out = finished
    result = run_ftcot("run", path, "--out", out, "--archive", tmp_path / "kept", "--data-dir", data_root)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "kept" / "results.md").read_text() == (out / "results.md").read_text()
    trained = list((tmp_path / "kept").glob("stages/train/*/train.json"))
    assert trained and all((t.parent / "validation.jsonl").is_file() for t in trained)  # another epoch rule later


def test_a_run_terminated_midway_has_archived_every_stage_it_finished(data_root, tmp_path):
    """SIGTERM (a cluster's time limit) after the first cell: its records are already in the archive, the run
    says it was terminated, and an experiment directory seeded from the archive does not redo that cell."""
    config = {**TINY, "tasks": ["coin_flip"], "methods": ["ft", "ft_cot"], "teacher_row": False,
              "students": [{**STUDENT, "epochs": 3}]}
    path, out, kept = _write(tmp_path, config), tmp_path / "out", tmp_path / "kept"
    ended = signal_run_once([path, "--out", out, "--archive", kept, "--data-dir", data_root], kept,
                            "stages/evaluate/*/done.json", signal.SIGTERM)
    assert ended.returncode == 143 and "terminated; everything stored so far is kept." in ended.stderr, \
        ended.stderr[-2000:]
    assert list(kept.glob("stages/train/*/train.json")) and not list(kept.rglob("*.safetensors"))

    fresh = tmp_path / "fresh"
    shutil.copytree(kept / "stages", fresh / "stages")
    statuses = _rerun(path, fresh, data_root)
    assert "done earlier" in statuses["train"] and "done earlier" in statuses["evaluate"]
    assert set(statuses["train"]) | set(statuses["evaluate"]) <= {"done earlier", "ran"}

    # An archived training whose evaluation was not archived has no checkpoint to evaluate: it trains again.
    again = tmp_path / "again"
    shutil.copytree(kept / "stages", again / "stages", ignore=shutil.ignore_patterns("evaluate"))
    statuses = _rerun(path, again, data_root)
    assert set(statuses["train"]) == {"ran"} and set(statuses["evaluate"]) == {"ran"}


def test_an_archive_killed_with_its_run_names_its_experiment(data_root, tmp_path):
    """kill -9 after the first archived stage (a machine taken back): no results are written, but the archive
    already holds experiment.json, so it says which config it resumes (it had none until the run's end)."""
    config = {**TINY, "tasks": ["coin_flip"], "methods": ["ft"], "teacher_row": False,
              "students": [{**STUDENT, "epochs": 12}]}
    path, kept = _write(tmp_path, config), tmp_path / "kept"
    ended = signal_run_once([path, "--out", tmp_path / "out", "--archive", kept, "--data-dir", data_root], kept,
                            "stages/curate/*/stage.json", signal.SIGKILL)
    assert ended.returncode == -signal.SIGKILL and not (kept / "results.csv").exists()
    assert json.loads((kept / "experiment.json").read_text()) == json.loads((tmp_path / "out" / "experiment.json")
                                                                             .read_text())


def test_the_report_names_no_absolute_path(tmp_path, data_root):
    """report.html is committed and moved: it showed the experiment directory's absolute path (a home path)."""
    from tests.experiment.test_run import TINY, STUDENT, _write

    config = {**TINY, "tasks": ["coin_flip"], "methods": ["ft"], "teacher_row": False,
              "students": [{**STUDENT, "epochs": 1}]}
    out = tmp_path / "deep" / "out"
    result = run_ftcot("run", _write(tmp_path, config), "--out", out, "--data-dir", data_root)
    assert result.returncode == 0, result.stderr[-2000:]
    assert str(tmp_path) not in (out / "report.html").read_text()


@pytest.mark.parametrize("where", ["--out", "--archive"])
def test_a_read_only_out_or_archive_is_one_line_before_any_stage(data_root, tmp_path, read_only_dir, where):
    config = _write(tmp_path, TINY)
    out, archive_to = tmp_path / "out", tmp_path / "archive"
    if where == "--out":
        out = read_only_dir / "out"
    else:
        archive_to = read_only_dir / "archive"
    result = run_ftcot("run", config, "--out", out, "--archive", archive_to, "--data-dir", data_root)
    assert_one_line_error(result, f"{where} {read_only_dir}", "not writable")
    assert not (tmp_path / "out" / "stages").exists()  # nothing ran


def test_an_unfinished_evaluation_of_a_training_redone_with_other_weights_starts_over(finished, tmp_path,
                                                                                       data_root):
    """Resumed from an archive, a training whose evaluation had not finished trains again; on a machine where
    training is not bit-for-bit repeatable its weights differ from those that began the evaluation, whose
    partial predictions then belong to no model there is. The stage was refused ('other weights … delete'):
    now they are set aside under superseded/ and the cell is evaluated anew. The differing weights are written
    into the archived settings.json here: a tiny CPU training repeats exactly, so it cannot make them."""
    path, out = finished
    kept = tmp_path / "archive"
    archive(out, kept)
    fresh = tmp_path / "fresh"
    shutil.copytree(kept / "stages", fresh / "stages")
    evaluation = next(p.parent for p in fresh.glob("stages/evaluate/*/settings.json")
                      if "train" in json.loads((p.parent / "stage.json").read_text())["inputs"]["model"])
    for name in ("done.json", "metrics.json"):
        (evaluation / name).unlink()
    lines = (evaluation / "predictions.jsonl").read_text().splitlines(keepends=True)
    (evaluation / "predictions.jsonl").write_text("".join(lines[:1]))
    settings = json.loads((evaluation / "settings.json").read_text())
    old = {**settings, "weights": "0" * 16}
    (evaluation / "settings.json").write_text(json.dumps(old))

    statuses = _rerun(path, fresh, data_root)
    assert "failed" not in {s for kind in statuses.values() for s in kind}, statuses
    assert "ran" in statuses["evaluate"] and "ran" in statuses["train"]
    aside = evaluation / "superseded" / ("0" * 16)
    assert json.loads((aside / "settings.json").read_text()) == old
    assert (aside / "predictions.jsonl").read_text() == lines[0]
    assert len((evaluation / "predictions.jsonl").read_text().splitlines()) == len(lines)
    assert json.loads((evaluation / "settings.json").read_text())["weights"] != "0" * 16
