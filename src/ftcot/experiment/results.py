"""An experiment's results, from its finished stages: tables, plots, report.html and lineage.

Everything here reads stage directories and writes into OUT; it runs after
every ``ftcot run`` (and a partial run reports what is finished so far):

- ``results.md`` — the paper's layout (:func:`ftcot.report.results.results_markdown`);
- ``results.csv`` — the same numbers, one row per cell (and seed);
- ``plots/*.png`` — accuracy per task and method; vs D, student size,
  training-set size and teacher when those axes vary; training curves;
- ``report.html`` — all of it in one file, with the curation and teacher
  reports and, per task, questions with the teacher's and the student's reasoning;
- ``lineage.json`` — for each accuracy: its evaluation, the checkpoint, the
  training rows and the teacher run it came from (``ftcot run --explain``).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftcot.paths import atomic_write_json
from ftcot.errors import FtcotError
from ftcot.evaluate.store import METRICS_FILE, PREDICTIONS_FILE
from ftcot.experiment.runner import Experiment
from ftcot.experiment.config import FINE_TUNING_METHODS, PROMPTING_METHODS
from ftcot.experiment.stages import ResultCell, Stage, task_identity, task_label
from ftcot.jsonl import read_json_object, read_jsonl
from ftcot.report.paper import paper_markdown
from ftcot.report.results import (PairedRow, ResultRow, method_label, precision_note, results_markdown,
                                  sample_size_note, uncertainty_markdown, write_csv)
from ftcot.report.statistics import paired_test

TRAINING_CURVES_SHOWN = 24  # more runs than this make the report a wall of plots; lineage.json lists them all


@dataclass
class Results:
    rows: list[ResultRow] = field(default_factory=list)
    teacher_rows: list[ResultRow] = field(default_factory=list)
    lineage: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[PairedRow] = field(default_factory=list)  # Fine-tune-CoT (and kin) vs Fine-tune, paired
    pending: int = 0  # cells whose evaluation has not finished
    notes: list[str] = field(default_factory=list)  # what a reader must know to trust a row (results.md)


def _metrics(path: Path) -> dict[str, Any] | None:
    file = path / METRICS_FILE
    return _read_json(file) if file.is_file() else None


def collect(run: Experiment) -> Results:
    results = Results()
    correctness: dict[tuple, tuple[ResultRow, dict[int, bool]]] = {}  # for the paired tests
    for cell in run.plan.cells:
        evaluation = run.plan.stages[cell.evaluate]
        metrics = _metrics(run.stage_dir(evaluation)) if run.done(evaluation) else None
        if metrics is None:
            results.pending += 1
            continue
        row = ResultRow(cell.method, cell.student, cell.teacher, cell.task, cell.D, cell.seed, metrics["n"],
                        round(100 * metrics["accuracy"], 4), cell.train_size,
                        train_precision=_train_precision(run, evaluation),
                        eval_precision=_described(metrics.get("precision"), metrics.get("device")))
        results.rows.append(row)
        results.lineage.append({**lineage(run, cell, evaluation, metrics), "train_precision": row.train_precision,
                                "eval_precision": row.eval_precision})
        correctness[(cell.method, cell.student, cell.teacher, cell.task, cell.D, cell.seed, cell.train_size)] = (
            row, _correct_by_question(run.stage_dir(evaluation)))
    results.pairs = _pairs(correctness)
    for teach_key, teacher, task in run.plan.teacher_rows:
        stage = run.plan.stages[teach_key]
        report = teacher_test_report(run, stage)
        if report is None or not report.questions:
            continue
        # With D = 1 a scored chain is an answered question; a stage with failed items answered fewer.
        planned = report.questions if report.scored < report.questions else None
        if report.accuracy is not None:
            results.teacher_rows.append(ResultRow(stage.inputs["method"], teacher, teacher, task, None, 0, report.scored,
                                                  round(100 * report.accuracy, 4), planned=planned))
        if planned is not None:
            results.notes.append(
                f"teacher {teacher} on {task}: {report.scored} of {planned} test questions answered"
                + (" (its row's accuracy is over those)" if report.scored else "")
                + f"; the rest are missing (failed items or a stopped run: `ftcot teach report {stage.path}`) — "
                  f"rerun `ftcot run` to ask for them.")
    return results


def _correct_by_question(directory: Path) -> dict[int, bool]:
    path = directory / PREDICTIONS_FILE
    return {int(r["sample_index"]): bool(r["correct"]) for _, r in read_jsonl(path)} if path.is_file() else {}


def _pairs(correctness: dict[tuple, tuple[ResultRow, dict[int, bool]]]) -> list[PairedRow]:
    """Each fine-tuned-on-rationales cell against Fine-tune of the same student, task, seed and training size."""
    baselines = {(student, task, seed, size): value for (method, student, _, task, _, seed, size), value
                 in correctness.items() if method == "ft"}
    pairs = []
    for (method, student, _, task, _, seed, size), (row, correct) in correctness.items():
        baseline = baselines.get((student, task, seed, size))
        if method in ("ft", *PROMPTING_METHODS) or baseline is None or not correct or not baseline[1]:
            continue
        pairs.append(PairedRow(student, task, seed, size, method_label(row), method_label(baseline[0]),
                               row.accuracy, baseline[0].accuracy, paired_test(correct, baseline[1])))
    return pairs


def _described(dtype: str | None, device: str | None) -> str | None:
    return None if not dtype else f"{dtype} ({device})" if device else dtype


def _train_precision(run: Experiment, evaluation: Stage) -> str | None:
    """What the evaluated student was trained in, from its train.json (None: a baseline, or not recorded)."""
    train_key = evaluation.inputs["model"].get("train")
    record = run.stage_dir(run.plan.stages[train_key]) / "train.json" if train_key else None
    if record is None or not record.is_file():
        return None
    precision = _read_json(record).get("precision")
    if not isinstance(precision, dict) or "bf16" not in precision:
        return None  # an API student's record: the provider trains
    return _described("bfloat16" if precision["bf16"] else "float32", precision.get("device"))


def _training_questions(run: Experiment, tasks: set[str]) -> dict[str, int]:
    """The number of training questions of each of ``tasks`` (labels), from the config's tasks."""
    return {task_label(t): len(run.task(task_identity(t)).split_indices("train", run.config.split_scheme))
            for t in run.config.tasks if task_label(t) in tasks}


def teacher_test_report(run: Experiment, stage: Stage) -> Any:
    """The teacher's Zero-shot-CoT on the test questions (the table's teacher row), from its store.

    Also from a stage that is not done (failed items, a stopped run): the row then says how many
    questions it covers rather than being left out.
    """
    from ftcot.teach.report import report_from_store
    from ftcot.teach.store import STORE_FILE, TeachStore

    directory = run.stage_dir(stage)
    if not (directory / STORE_FILE).is_file():
        return None
    try:
        with TeachStore.open_readonly(directory) as store:
            return report_from_store(store, run.task(stage.inputs["task"]).spec, split="test")
    except FtcotError:  # a store created but killed before its first run was recorded: nothing to show
        return None


def lineage(run: Experiment, cell: ResultCell, evaluation: Stage, metrics: dict[str, Any]) -> dict[str, Any]:
    """Where one accuracy came from, as paths relative to OUT (absent links: a baseline has no checkpoint)."""
    entry: dict[str, Any] = {**cell.__dict__, "accuracy": round(100 * metrics["accuracy"], 4), "n": metrics["n"],
                             "predictions": str(evaluation.path / PREDICTIONS_FILE)}
    source = evaluation.inputs["model"]
    if "base" in source:
        entry["model"] = source["base"]
        return entry
    train = run.plan.stages[source["train"]]
    entry["checkpoint"] = str(train.path / "best")
    curate = run.plan.stages[train.inputs["curate"]]
    entry["training_rows"] = str(curate.path / "train.jsonl")
    if curate.inputs["teach"] is not None:
        teach = run.plan.stages[curate.inputs["teach"]]
        entry["teacher_completions"] = str(teach.path / "teach.sqlite")
        rows = curate_rows(run, curate)
        entry["teacher_records_used"] = len({r["teacher_record"] for r in rows if r.get("teacher_record")})
    return entry


def curate_rows(run: Experiment, curate: Stage) -> list[dict[str, Any]]:
    path = run.stage_dir(curate) / "train.jsonl"
    return [row for _, row in read_jsonl(path)] if path.is_file() else []


def write_results(run: Experiment) -> Results:
    from ftcot.report.html import ReportImage, ReportInputs, write_report

    results = collect(run)
    out = run.out
    note = (f"\n{results.pending} of {len(run.plan.cells)} cells are not evaluated yet; rerun `ftcot run` to "
            f"finish them.\n" if results.pending else "")
    # What a reader must know to trust a row: the same lines in results.md and report.html.
    notes = [f"not run: {reason}" for reason in run.plan.skipped]
    notes += [line for line in [*results.notes, precision_note(results.rows),
                                sample_size_note(results.rows, results.teacher_rows)] if line]
    skipped = "".join(f"\n- {line}" for line in notes)
    paper_table = paper_markdown({r.task for r in results.rows} | {r.task for r in results.teacher_rows})
    paper = f"\n{PAPER_HEADING}:\n\n{paper_table}" if paper_table else ""
    (out / "results.md").write_text(f"# {run.config.name}\n\nTest accuracy (%); mean ± 95% interval over seeds "
                                    f"where there are several.\n\n"
                                    + results_markdown(results.rows, results.teacher_rows) + note + skipped + "\n"
                                    + uncertainty_markdown(results.rows, results.pairs) + paper, encoding="utf-8")
    write_csv(results.rows, out / "results.csv")
    atomic_write_json(out / "lineage.json", results.lineage)
    images = [ReportImage(caption, path) for caption, path in _plots(run, results)]
    inputs = ReportInputs(
        title=f"{run.config.name}: Fine-tune-CoT report",
        # The directory's name, not its path: the page is committed and moved (a path names the author's home).
        subtitle=f"{len(results.rows)} of {len(run.plan.cells)} cells evaluated; experiment {out.name}",
        rows=results.rows, teacher_rows=results.teacher_rows, images=images, pairs=results.pairs,
        curation=[_read_json(run.stage_dir(s) / "curation.json") for s in run.plan.of_kind("curate") if run.done(s)],
        # A failed teach stage's report too: it counts the failed items.
        teacher_reports=[_read_json(run.stage_dir(s) / "report.json") for s in run.plan.of_kind("teach")
                         if (run.stage_dir(s) / "report.json").is_file()],
        examples=_examples(run), lineage=results.lineage,
        notes=([note.strip()] if note else []) + notes, paper=paper_table, paper_heading=PAPER_HEADING,
        stage_times=_stage_times(run), environment=environment())
    write_report(inputs, out / "report.html")
    return results


PAPER_HEADING = "The paper's numbers on these tasks, to read the table against"


def _stage_times(run: Experiment) -> list[tuple[str, int, float, float]]:
    """Per stage kind: (kind, stages finished, seconds in all, the longest), from each stage's done.json."""
    times: dict[str, list[float]] = {}
    for stage in run.plan.ordered():
        record = run.done(stage)
        if record is not None and isinstance(record.get("seconds"), (int, float)):
            times.setdefault(stage.kind, []).append(float(record["seconds"]))
    return [(kind, len(seconds), sum(seconds), max(seconds)) for kind, seconds in times.items()]


def environment() -> list[tuple[str, str]]:
    """Where this report was written (the machine, the libraries); the rows' own precision is in the notes."""
    import platform

    from ftcot import __version__

    facts = [("on", time.strftime("%Y-%m-%d %H:%M %Z")), ("ftcot", __version__),
             ("python", platform.python_version()), ("machine", f"{_cpu_name()}, {os.cpu_count()} cores")]
    for package in ("torch", "transformers", "peft"):
        try:
            facts.append((package, importlib.metadata.version(package)))
        except importlib.metadata.PackageNotFoundError:
            pass
    return facts


def _cpu_name() -> str:
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _read_json(path: Path) -> dict[str, Any]:
    """A stage's record; damaged, a one-line error that says how to have the stage write it again."""
    return read_json_object(path, f"delete {path.parent / 'done.json'} and rerun to redo that stage")


def _plots(run: Experiment, results: Results) -> list[tuple[str, Path]]:
    """(caption, PNG) for each plot that has something to show."""
    from ftcot.report import plots

    directory = run.out / "plots"
    directory.mkdir(exist_ok=True)
    made: list[tuple[str, Path | None]] = []
    # Students trained on a subset of the training questions are the training-size plot's; in the others
    # their accuracies would be averaged into the whole set's (one line per method) or crowd the bars.
    rows = [r for r in results.rows if r.train_size is None]
    if rows or results.teacher_rows:
        made.append(("Test accuracy per task and method",
                     plots.plot_accuracy_by_task(rows, directory / "accuracy_by_task.png", results.teacher_rows)))
    # Every row: its lines keep training-set sizes apart (diverse reasoning is measured at equal questions).
    made.append(("Diverse reasoning: accuracy vs D", plots.plot_accuracy_vs_d(results.rows,
                                                                              directory / "accuracy_vs_D.png")))
    sizes = {s.label: s.parameters for s in run.config.students if s.parameters}
    fine_tuned = [r for r in rows if r.student in sizes]
    if len(sizes) > 1 and fine_tuned:
        made.append(("Accuracy vs student size", plots.plot_accuracy_vs_student_size(
            fine_tuned, sizes, directory / "accuracy_vs_student_size.png")))
    subsets = [(r, r.train_size) for r in results.rows if r.train_size is not None]
    # A task's whole training split ("all" among its train_sizes) is the last point of its subset lines.
    whole = _training_questions(run, {r.task for r, _ in subsets})
    subsets += [(r, whole[r.task]) for r in rows if r.task in whole and r.method in FINE_TUNING_METHODS]
    made.append(("Accuracy vs training-set size", plots.plot_accuracy_vs_train_size(
        subsets, directory / "accuracy_vs_train_size.png")))
    made.append(("Accuracy per teacher", plots.plot_accuracy_by_teacher(rows,
                                                                        directory / "accuracy_by_teacher.png")))
    # In run order, which puts the main table's trainings first (plan order put every seed and subset of
    # the first tasks ahead of the later tasks' seed 0).
    trained = [s for s in run.plan.ordered() if s.kind == "train" and (run.stage_dir(s) / "train.json").is_file()]
    for stage in trained[:TRAINING_CURVES_SHOWN]:
        record = _read_json(run.stage_dir(stage) / "train.json")
        if record.get("epochs"):
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", stage.label)[:80] + f"-{stage.key[:6]}.png"
            made.append((f"Training: {stage.label}", plots.plot_training_curves(
                record["epochs"], directory / "training" / name, stage.label)))
    return [(caption, path) for caption, path in made if path is not None]


def _examples(run: Experiment) -> dict[str, list[dict[str, Any]]]:
    """Per task, the first Fine-tune-CoT student's test predictions beside the teacher's rationale."""
    from ftcot.curate.sources import load_teacher_records
    from ftcot.scoring import score

    examples: dict[str, list[dict[str, Any]]] = {}
    teacher_of = {task: key for key, _, task in run.plan.teacher_rows}
    for cell in run.plan.cells:
        evaluation = run.plan.stages[cell.evaluate]
        if cell.method != "ft_cot" or cell.task in examples or not run.done(evaluation):
            continue
        teacher: dict[int, dict] = {}
        teach = run.plan.stages.get(teacher_of.get(cell.task, ""))
        if teach is not None and run.done(teach):
            records, _ = load_teacher_records(run.stage_dir(teach))
            teacher = {r["sample_index"]: r for r in records if r.get("sample_number", 0) == 0}
        spec = run.task(evaluation.inputs["task"]).spec
        chosen = []
        for _, p in read_jsonl(run.stage_dir(evaluation) / PREDICTIONS_FILE):
            t = teacher.get(p["sample_index"])
            chosen.append({
                "question": p["question"], "answer": p["answer"],
                "teacher_rationale": t["reasoning_completion"].strip() if t else None,
                "teacher_correct": score(t["answer_completion"], p["answer"], spec, "zs_cot").correct if t else None,
                "student_output": p["output"], "student_prediction": p["prediction"],
                "student_correct": p["correct"]})
        examples[cell.task] = chosen
    return examples
