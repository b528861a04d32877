"""ftcot from Python: the four stages as functions, and experiments as an object.

Each stage function takes plain arguments (strings, paths, numbers), writes
the same directory its command writes (so the commands and the functions mix
freely, and a rerun resumes), and returns a plain dataclass::

    import ftcot

    run = ftcot.teach("coin_flip", "replay:text-davinci-002", "runs/teach")          # TeachResult
    data = ftcot.curate(run.out, "runs/data", train_size=16)                         # CurateResult
    student = ftcot.train(data.out, "runs/ckpt", student="tiny-gpt2", epochs=1)      # TrainResult
    scores = ftcot.evaluate(student.out, "coin_flip", "runs/eval", limit=8)          # EvalResult
    print(scores.accuracy)

    experiment = ftcot.Experiment("configs/demo.yaml", out="runs/demo")
    experiment.plan()       # [{"number", "kind", "label", "status"}, ...]: what would run
    experiment.run()        # [{"kind", "label", "status", "seconds", "note"}, ...]
    experiment.results()    # [{"method", "student", "teacher", "task", "D", "seed", "n", "accuracy", ...}, ...]

``ftcot.teach`` and friends are these functions (``ftcot/__init__.py`` makes
each stage's package callable); ``from ftcot.api import teach`` is the same.
Errors a user can fix raise :class:`ftcot.errors.FtcotError` with a one-line
message. Heavy libraries (torch, transformers) are imported by the calls
that need them, never by ``import ftcot``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ftcot.errors import FtcotError, unknown_name
from ftcot.export.common import transformers_bars as _transformers_bars
from ftcot.paths import given_path

__all__ = ["CurateResult", "EvalResult", "Experiment", "TeachResult", "TrainResult", "curate", "evaluate", "teach",
           "train"]

PathLike = str | os.PathLike


def _quiet_console(progress: bool) -> Any:
    from rich.console import Console

    # Progress and tables go to stderr, as the commands' do; quiet=True keeps a notebook clean.
    return Console(stderr=True, quiet=not progress, highlight=False)


# ---- teach ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TeachResult:
    out: Path  # the RUN_DIR (``ftcot curate`` reads it)
    task: str
    teacher: str
    questions: int
    complete_chains: int
    new_completions: int  # received by this call (0 on a rerun: nothing is asked twice)
    accuracy: float | None  # the teacher's, over its complete chains (0–1)
    cost_usd: float | None
    summary: dict[str, Any] = field(repr=False)  # the engine's summary (ftcot.teach.engine.TeachSummary)
    report: dict[str, Any] = field(repr=False)  # report.json (ftcot.teach.report.TeacherReport)


def teach(task: str, teacher: str, out: PathLike, *, data_dir: PathLike | None = None, progress: bool = False,
          dry_run: bool = False, **settings: Any) -> TeachResult:
    """Ask ``teacher`` (``replay:text-davinci-002``, ``openai:MODEL``, ``hf:PATH``) for ``task``'s questions.

    ``settings`` are :class:`ftcot.teach.config.TeachConfig`'s fields — the ``ftcot teach`` options and the
    keys of a config's ``teachers:`` entries, by the same names (``split="train"``, ``method="zs_cot"``,
    ``samples=1``, ``temperature=0.0``, ``max_cost=None``, ``batch=False``, ``until_correct``/``max_samples``
    (adaptive sampling), ``rationalize=0``, ``base_url``, ``chat``, ``max_tokens``, ``concurrency``,
    ``questions`` …), validated as the command validates them. The same function as the command
    (:func:`ftcot.teach.run.run_teach`): every completion is stored in ``out/teach.sqlite`` as it arrives, so a
    rerun sends only what is missing; ``max_cost`` caps what ``out`` spends in all. Works inside a running
    event loop (Jupyter). ``dry_run``: the result's ``summary`` holds the estimate; nothing is sent or written.
    """
    from ftcot.settings import build
    from ftcot.teach.config import TeachConfig
    from ftcot.teach.run import run_teach

    if not isinstance(teacher, str):
        raise FtcotError(f"teach(): teacher must be a spec such as 'openai:MODEL' or 'hf:PATH' (got {teacher!r}).")
    config = build(TeachConfig, {"task": task, "spec": teacher, **settings}, surface="api", where="teach()")
    out = _path(out, "out", "teach()")
    outcome = run_teach(config, out, data_root=_path(data_dir, "data_dir", "teach()", optional=True),
                        dry_run=dry_run, progress=progress, console=_quiet_console(progress))
    summary = outcome.summary
    if outcome.interrupted:
        raise KeyboardInterrupt  # Ctrl-C: what arrived is stored; calling again finishes the run
    if dry_run:
        return TeachResult(Path(out), outcome.task.key, teacher, summary.questions, summary.complete_chains, 0, None,
                           summary.estimated_cost_usd, summary.to_json(), {})
    report = outcome.report
    if outcome.adaptive is not None:
        adaptive = outcome.adaptive
        if adaptive.stopped and adaptive.samples_spent == 0:
            raise FtcotError(f"{out}: adaptive sampling got no rationale: {adaptive.stopped}")
        return TeachResult(Path(out), outcome.task.key, teacher, adaptive.questions, adaptive.samples_spent,
                           sum(r["new"] for r in adaptive.rounds), report.accuracy, report.cost_usd, adaptive.to_json(),
                           report.to_json())
    if summary.failed and (summary.new == 0 or summary.credentials_refused):
        # As the command: nothing came back (server down, wrong key) must not look like an empty success.
        raise FtcotError(summary.failure_line())
    return TeachResult(Path(out), outcome.task.key, teacher, summary.questions, summary.complete_chains, summary.new,
                       report.accuracy, summary.cost_usd, summary.to_json(), report.to_json())


def _path(value: Any, name: str, where: str, *, optional: bool = False) -> Path | None:
    """A path argument as a Path; a wrong type (None where one is needed, a number) is one line naming it."""
    if value is None and optional:
        return None
    try:
        return given_path(value, name)
    except FtcotError as exc:
        raise FtcotError(f"{where}: {exc}") from None


# ---- curate -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CurateResult:
    out: Path  # the DATA_DIR (``ftcot train`` reads it)
    task: str
    template: str
    train_examples: int
    val_examples: int
    dropped: dict[str, int]  # reason -> rationales dropped
    summary: dict[str, Any] = field(repr=False)  # curation.json


def curate(source: PathLike | None, out: PathLike, *, data_dir: PathLike | None = None,
           **settings: Any) -> CurateResult:
    """Keep the teacher's correct rationales of ``source`` (a teach RUN_DIR or a JSONL of teacher records) and
    lay them out for the student in DATA_DIR ``out``; ``source=None`` with ``template="ft"`` takes gold answers.

    ``settings`` are :class:`ftcot.curate.config.CurateConfig`'s fields — the ``ftcot curate`` options and a
    config's ``curate:`` keys, by the same names (``template="ft_cot"``, ``task``, ``label="gold"``,
    ``min_votes=2``, ``val_fraction=0.1``, ``val_seed=0``, ``train_size``/``subset_seed``,
    ``decontaminate="warn"``, ``drop_truncated=False``, …). The same function as the command
    (:func:`ftcot.curate.run.run_curate`), with its checks: ``out`` may not be, or lie inside, ``source``.
    """
    from ftcot.curate.config import CurateConfig
    from ftcot.curate.run import run_curate
    from ftcot.settings import build

    config = build(CurateConfig, settings, surface="api", where="curate()")
    out = _path(out, "out", "curate()")
    outcome = run_curate(config, _path(source, "source", "curate()", optional=True), out,
                         data_root=_path(data_dir, "data_dir", "curate()", optional=True))
    summary = outcome.summary
    return CurateResult(Path(out), outcome.task.key, config.template, len(outcome.train), len(outcome.val),
                        dict(summary["dropped"]), summary)


# ---- train ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainResult:
    out: Path  # the CKPT_DIR (``ftcot evaluate`` and ``ftcot export model`` read it)
    student: str
    best_epoch: int | None
    val_accuracy: float | None  # of the best epoch (0–1)
    epochs: list[dict[str, Any]] = field(repr=False)  # per epoch: train/val loss, val accuracy, step losses, speed
    record: dict[str, Any] = field(repr=False)  # train.json


def train(data_dir: PathLike, out: PathLike, *, student: str = "gemma-270m", task: str | None = None,
          answer_type: str | None = None, progress: bool = False, **settings: Any) -> TrainResult:
    """Fine-tune ``student`` on DATA_DIR into CKPT_DIR ``out`` (a rerun resumes after the last finished epoch).

    ``settings`` are ``ftcot train``'s options by their Python names (:class:`ftcot.train.TrainConfig`):
    ``lora=True, epochs=3, lr=1e-3, batch_size=8, max_length=1024, seed=0, ...``.
    Students trained by a provider (``openai:MODEL``) go through ``ftcot train`` on the command line.
    """
    from ftcot.train.config import TrainConfig

    if not isinstance(student, str):
        raise FtcotError(f"train(): student must be a model spec or directory such as 'gemma-270m' "
                         f"(got {student!r}).")
    data_dir, out = _path(data_dir, "data_dir", "train()"), _path(out, "out", "train()")
    if student.startswith("openai:"):
        raise FtcotError("train() runs local students; fine-tune an API student with "
                         "'ftcot train DATA_DIR --student openai:MODEL --out CKPT_DIR'.")
    known = {f.name for f in fields(TrainConfig)} - {"student"}
    for name in settings:
        if name not in known:
            raise unknown_name("train setting", name, known)
    config = TrainConfig(student=student, **settings)
    from ftcot.train import train as run_training

    with _transformers_bars(progress):
        record = run_training(data_dir, out, config, task=task, answer_type=answer_type,
                              console=_quiet_console(progress))
    best = record.get("best_epoch")
    epochs = record.get("epochs", [])
    val_accuracy = epochs[best - 1]["val_accuracy"] if best else None
    return TrainResult(Path(out), student, best, val_accuracy, epochs, record)


# ---- evaluate ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalResult:
    out: Path  # the EVAL_DIR
    task: str
    method: str
    n: int
    correct: int
    accuracy: float  # 0–1
    metrics: dict[str, Any] = field(repr=False)  # metrics.json
    predictions: list[dict[str, Any]] = field(repr=False)  # predictions.jsonl's rows, in split order


def evaluate(model: str | os.PathLike, task: str, out: PathLike, *, data_dir: PathLike | None = None,
             progress: bool = False, **settings: Any) -> EvalResult:
    """Score ``model`` (a CKPT_DIR, a model spec or ``openai:MODEL``) on ``task``'s split into EVAL_DIR ``out``.

    ``settings`` are :class:`ftcot.evaluate.config.EvaluateConfig`'s fields — the ``ftcot evaluate`` options
    and a config's ``evaluate:`` keys (``method``, ``split="test"``, ``limit``, ``batch_size=16``,
    ``max_new_tokens``, ``dtype="auto"``, ``device="auto"``, …). A CKPT_DIR carries its template, so ``method``
    may be left out; other models need one. A rerun into ``out`` resumes.
    """
    from ftcot.evaluate.config import EvaluateConfig
    from ftcot.evaluate.run import run_evaluate
    from ftcot.settings import build

    config = build(EvaluateConfig, {"model": str(model) if isinstance(model, os.PathLike) else model, "task": task,
                                    **settings}, surface="api", where="evaluate()")
    out = _path(out, "out", "evaluate()")
    with _transformers_bars(progress or config.model.startswith("openai:")):  # an API model needs no transformers
        result = run_evaluate(config, out, data_root=_path(data_dir, "data_dir", "evaluate()", optional=True),
                              progress=progress,
                              console=_quiet_console(progress))
    m = result.metrics
    return EvalResult(Path(out), m["task"], m["method"], m["n"], m["correct"], m["accuracy"], m, result.records)


# ---- experiments ------------------------------------------------------------------------------------------------
class Experiment:
    """An ``ftcot run`` experiment from Python.

    ``config`` is a mapping with the YAML's keys, or the path of a YAML file;
    ``out`` defaults to ``runs/<name>``, as for ``ftcot run``. Stages are
    shared with the command: a run started here resumes there and vice versa.
    """

    def __init__(self, config: dict[str, Any] | PathLike, out: PathLike | None = None, *,
                 data_dir: PathLike | None = None, progress: bool = False) -> None:
        from ftcot.data_root import resolve_data_root
        from ftcot.experiment.config import load_config, parse_config
        from ftcot.experiment.runner import Experiment as Runner

        if isinstance(config, dict):
            parsed = parse_config(config, "config")
        elif isinstance(config, (str, os.PathLike)):
            parsed = load_config(Path(config))
        else:
            raise FtcotError(f"Experiment(config): expected a mapping of settings or a YAML path, "
                             f"got {type(config).__name__}.")
        self.config = parsed
        self.out = _path(out, "out", "Experiment()", optional=True) or Path("runs") / parsed.name
        self._progress = progress
        self._runner = Runner(parsed, self.out, resolve_data_root(_path(data_dir, "data_dir", "Experiment()",
                                                                        optional=True)),
                              _quiet_console(progress))

    def plan(self) -> list[dict[str, Any]]:
        """The stages in the order they run, each with ``status`` done / partial / continues after epoch N / to run;
        runs nothing."""
        runner = self._runner
        runner.check(sending=False)  # a plan sends nothing: no API key needed
        return [{"number": number, "kind": stage.kind, "label": stage.label, "key": stage.key,
                 "status": runner.status(stage),
                 "path": str(runner.stage_dir(stage))}
                for number, stage in enumerate(runner.plan.ordered(), 1)]

    def run(self) -> list[dict[str, Any]]:
        """Run every stage not done yet, then write results.md/csv, plots/, report.html, lineage.json.

        A stage that fails is reported (``status`` "failed", ``note`` the error) and blocks only the stages
        that read it, as with ``ftcot run``.
        """
        from ftcot.experiment.results import write_results

        try:
            with _transformers_bars(self._progress):
                outcomes = self._runner.run()
        finally:
            if (self.out / "experiment.json").is_file():
                write_results(self._runner)
        return [{"kind": o.stage.kind, "label": o.stage.label, "status": o.status, "seconds": round(o.seconds, 3),
                 "note": o.note} for o in outcomes]

    def results(self, teacher_rows: bool = True) -> list[dict[str, Any]]:
        """One record per finished result cell (and seed), as results.csv: ``method, student, teacher, task, D,
        seed, n, accuracy`` (percent) ``, train_size``; ``pandas.DataFrame(experiment.results())`` is the table.
        With ``teacher_rows``, the teacher's own Zero-shot-CoT accuracy follows (its ``student`` is the teacher).
        """
        from ftcot.experiment.results import collect

        collected = collect(self._runner)
        rows = collected.rows + (collected.teacher_rows if teacher_rows else [])
        return [asdict(row) for row in rows]

    def __repr__(self) -> str:
        return f"Experiment({self.config.name!r}, out={str(self.out)!r})"
