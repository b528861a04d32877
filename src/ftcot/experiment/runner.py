"""Run an experiment's stages in data-flow order; skip the finished ones, resume the rest.

OUT, the experiment directory::

    experiment.json             the validated config (never an API key)
    stages/<kind>/<key>/        one directory per stage (stages.py explains the keys)
        stage.json              its inputs and label
        done.json               written last, when the stage finished: its time and summary
        …                       the stage's own files: a teach run (teach.sqlite, report.json),
                                a DATA_DIR, a CKPT_DIR or an EVAL_DIR — what the single commands write
    results.md, results.csv, plots/, report.html, lineage.json   (results.py)

A stage without ``done.json`` is run again, and every stage resumes from its
own files: the teach store sends only missing requests, training continues
after its last complete epoch, evaluation after its last stored batch. A teach
stage whose items failed (a server down, a refused key) is not done: it fails
in one line, blocks what reads it, and the next run asks for those items again
(meanwhile the teacher row says how many test questions it covers). So a
killed ``ftcot run`` loses at most the work in flight, and a finished one
reruns in seconds. One ``ftcot run`` at a time per OUT (a lock file).
"""

from __future__ import annotations

import ctypes
import gc
import json
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.markup import escape

from ftcot.dir_lock import lock_directory
from ftcot.errors import FtcotError
from ftcot.experiment.config import ExperimentConfig
from ftcot.experiment.executors import StageOutcome, connect_ray, run_on_ray, run_serial
from ftcot.experiment.stages import ExperimentPlan, Stage, plan_experiment, task_identity
from ftcot.jsonl import read_json_object
from ftcot.tasks import BUILTIN_TASKS, Task, load_task
from ftcot.paths import atomic_write_json, check_output, check_writable_dir
from ftcot.train.config import TrainConfig

STAGE_FILE = "stage.json"
DONE_FILE = "done.json"
LOCK_FILE = ".run.lock"


class Experiment:
    """A config, the directory it runs in, and its plan of stages."""

    def __init__(self, config: ExperimentConfig, out: Path, data_root: Path, console: Console | None = None):
        self.config, self.out, self.data_root = config, Path(out), data_root
        self.console = console or Console(stderr=True, highlight=False)
        self._tasks: dict[str, Task] = {}
        self.plan: ExperimentPlan = plan_experiment(config, lambda task: self.task(task_identity(task)),
                                                    self._has_exemplars)

    # ---- looking things up ---------------------------------------------------------------------------
    def task(self, identity: dict[str, Any]) -> Task:
        name = identity.get("key") or identity["file"]
        if name not in self._tasks:
            self._tasks[name] = load_task(name, self.data_root, identity.get("answer_type"))
        return self._tasks[name]

    def inputs(self) -> list[Path]:
        """What the experiment reads, which it must never write into: the data root and its own task files."""
        files = [Path(task.spec) for task in self.config.tasks if task.spec not in BUILTIN_TASKS]
        return [self.data_root, *files]

    def stage_dir(self, stage: Stage) -> Path:
        return self.out / stage.path

    def status(self, stage: Stage) -> str:
        """done, partial (started), continues after epoch N (a train stage with a shorter run to extend) or to run."""
        if self.done(stage) is not None:
            return "done"
        if self.stage_dir(stage).is_dir():
            return "partial"
        shorter = shorter_run(self.stage_dir(stage), stage) if stage.kind == "train" else None
        return f"continues after epoch {shorter[0]}" if shorter else "to run"

    def done(self, stage: Stage) -> dict[str, Any] | None:
        """The stage's done.json, if it finished (a teach stage: covering the samples and questions needed,
        with no failed item left)."""
        path = self.stage_dir(stage) / DONE_FILE
        if not path.is_file():
            return None
        record = read_json_object(path, "delete it and rerun: the stage resumes from its own files")
        if stage.kind == "teach" and _failed_items(self.stage_dir(stage)):
            return None  # written done by an older ftcot despite failed items: run it again to retry them
        if stage.kind == "train" and self._archived_without_checkpoint_yet_needed(stage):
            return None
        return record if stage.covered_by(record.get("samples", 1), record.get("questions")) else None

    def _archived_without_checkpoint_yet_needed(self, stage: Stage) -> bool:
        """A finished training copied from an archive (records, no checkpoint) while an evaluation that reads
        it is not done: it must train again (an API student's model lives with its provider)."""
        from ftcot.train.checkpoint import BEST

        if str(stage.inputs["config"]["student"]).startswith("openai:") or (self.stage_dir(stage) / BEST).exists():
            return False
        readers = [s for s in self.plan.stages.values() if stage.key in s.deps]
        return any(self.done(reader) is None for reader in readers)

    def _has_exemplars(self, task: str) -> bool:
        from ftcot.teach.prompts import has_few_shot_exemplars

        return has_few_shot_exemplars(self.data_root, task)

    def check(self, sending: bool = True) -> None:
        """Refuse what cannot run before anything runs: a teacher asked for what it cannot do (a replay
        teacher sampling D > 1), a bad split or budget, and (``sending``) a missing API key — each a one-line
        error naming the stage. The plan (``sending=False``) sends nothing and needs no key."""
        from ftcot.teach.backends import require_credentials
        from ftcot.teach.batch import batch_teacher
        from ftcot.teach.engine import resolve_settings
        from ftcot.teach.run import make_backend

        for stage in self.plan.of_kind("teach"):
            try:
                config = teach_config(self, stage)
                backend = make_backend(config, self.data_root)  # a bad base_url: named here
                if sending:
                    require_credentials(backend)
                if config.batch:
                    batch_teacher(backend)  # hf: and replay: teachers have no Batch API
                resolve_settings(self.task(stage.inputs["task"]), config.split, backend, config.method,
                                 config.max_samples if config.adaptive else config.samples, config.temperature,
                                 config.max_tokens, concurrency=config.concurrency, max_cost=config.max_cost)
            except FtcotError as exc:
                raise FtcotError(f"teach {stage.label}: {exc}") from None

    # ---- running ---------------------------------------------------------------------------------------
    def run(self, on_stage_ran: Callable[[Stage, Path], None] | None = None) -> list[StageOutcome]:
        """Every stage, by the config's executor (executors.py: this process in plan order, or a Ray cluster).
        A stage that fails (a one-line FtcotError: a task the teacher has no rationales for, a job that
        failed) blocks the stages that read it, and the rest go on — a big experiment does not stop at its
        first empty cell. Ctrl-C and crashes stop the run; a rerun resumes. ``on_stage_ran(stage, directory)``
        is called after each stage that ran to the end (the CLI's ``--archive`` copies its records there and
        then)."""
        self.check()
        if self.config.executor.kind == "ray":
            connect_ray(self.config.executor)  # before OUT exists: a cluster that is not there leaves nothing
        # The shared output guard, as every stage's: each stage checks only its own directory, and the results,
        # plots and stages/ written beside them would land in the data root, or beside a task file.
        check_output(self.out, self.inputs(), "--out")
        check_writable_dir(self.out, "--out")  # a read-only or unreachable OUT is one line, before any work
        lock = lock_directory(self.out / LOCK_FILE, lambda holder: (
            f"{self.out} is in use by another ftcot run (pid {holder}); wait for it or use another --out."))
        try:
            atomic_write_json(self.out / "experiment.json", self.config.public_dump())
            executor = self.config.executor
            if executor.kind == "ray":
                return run_on_ray(self, self.plan.ordered(), on_stage_ran, executor)
            return run_serial(self, self.plan.ordered(), on_stage_ran)
        finally:
            lock.close()

    def run_stage(self, stage: Stage, number: int, total: int) -> StageOutcome:
        """One stage (``number`` of ``total``, for its heading): done earlier, ran, or failed in one line."""
        try:
            return self._run_stage(stage, number, total)
        except FtcotError as exc:
            self.console.print(f"[red]✗[/] {stage.kind} {escape(stage.label)}: ", end="")
            self.console.print(str(exc), markup=False)
            return StageOutcome(stage, "failed", 0.0, str(exc))

    def _run_stage(self, stage: Stage, number: int, total: int) -> StageOutcome:
        record = self.done(stage)
        if record is not None:
            return StageOutcome(stage, "done earlier", record["seconds"], record.get("note", ""))
        directory = self.stage_dir(stage)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_json(directory / STAGE_FILE, {"label": stage.label, "key": stage.key, "inputs": stage.inputs})
        # Labels hold users' names: escaped, a "[/]" in one would be a markup error, "[v2]" would vanish.
        self.console.rule(f"[bold]{number}/{total} {stage.kind}[/] {escape(stage.label)}", style="dim")
        started = time.perf_counter()
        try:
            note = _WORK[stage.kind](self, stage, directory)
        finally:
            _return_freed_memory()
        seconds = time.perf_counter() - started
        atomic_write_json(directory / DONE_FILE, {"seconds": seconds, "finished": time.time(), "note": note,
                                                  "samples": stage.samples, "questions": stage.questions})
        self.console.print(f"[green]✓[/] {stage.kind} {escape(stage.label)}: {escape(note)} ({seconds:.1f} s)")
        return StageOutcome(stage, "ran", seconds, note)


def _failed_items(directory: Path) -> int:
    """Failed items still missing from a teach stage's store, as its report.json counts them."""
    report = directory / "report.json"
    if not report.is_file():
        return 0
    return read_json_object(report, f"delete {directory / DONE_FILE} and rerun to rewrite it").get("failures", 0)


def _return_freed_memory() -> None:
    """Hand the memory a finished stage freed back to the system.

    glibc keeps freed heap for reuse, and the next stage's large tensors fragment it: two gemma-270m
    LoRA trainings in one process peaked at 2.48 then 3.05 GB, and at 2.49 then 2.60 GB with this
    between them (RSS between stages: 1.52 → 0.81 GB).
    """
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)  # glibc (Linux); other C libraries have no such call
    except (OSError, AttributeError):
        pass


# ---- the work of each kind of stage: the same functions the single commands call --------------------------
def teach_config(run: Experiment, stage: Stage) -> Any:
    """A teach stage's :class:`~ftcot.teach.config.TeachConfig`: its teacher's settings, and what the plan
    decided (task, split, D, T, questions). A sampled stage of an adaptive teacher samples adaptively up to its
    max_samples; rationalization asks about training questions only."""
    from ftcot.teach.config import TeachConfig

    teacher = next(t for t in run.config.teachers if t.label == stage.runtime["teacher"])
    task = stage.inputs["task"]
    adaptive = teacher.adaptive and stage.inputs["temperature"] > 0
    values = teacher.model_dump(exclude={"name", "methods", "D"})
    values.update(task=task.get("key") or task["file"], answer_type=task.get("answer_type"),
                  split=stage.inputs["split"], samples=1 if adaptive else stage.samples,
                  temperature=stage.inputs["temperature"], questions=stage.questions,
                  rationalize=teacher.rationalize if stage.inputs["split"] != "test" else 0)
    if not adaptive:
        values.update(until_correct=None, max_samples=None)
    return TeachConfig(**values)


def _teach(run: Experiment, stage: Stage, directory: Path) -> str:
    """A teach stage: :func:`ftcot.teach.run.run_teach`, as ``ftcot teach`` and ``ftcot.teach()`` run it."""
    from ftcot.teach.run import run_teach

    config = teach_config(run, stage)
    outcome = run_teach(config, directory, data_root=run.data_root, progress=True, console=run.console,
                        task=run.task(stage.inputs["task"]))
    if outcome.interrupted:  # Ctrl-C stops the whole run (the teach engine turned it into a clean stop)
        raise KeyboardInterrupt
    summary, adaptive = outcome.summary, outcome.adaptive
    if adaptive is not None:
        note = (f"{adaptive.samples_spent} chains, {sum(r['new'] for r in adaptive.rounds)} new (adaptive: "
                f"{adaptive.samples_spent} samples for {adaptive.questions} questions)")
        if adaptive.stopped and adaptive.samples_spent == 0:
            raise FtcotError(f"adaptive sampling got no rationale: {adaptive.stopped}")
    else:
        if summary.stopped_by_cost_cap:
            raise FtcotError(summary.stop_reason())
        if summary.complete_chains < summary.chains:
            # Not done: a rerun must ask for the failed items again (a server back up, a fixed key),
            # and what reads this stage must not take a partial teacher for a whole one.
            raise FtcotError(summary.failure_line())
        note = f"{summary.complete_chains}/{summary.chains} chains, {summary.new} new"
        if config.batch:
            note += f", {len(summary.batches)} batches"
    if outcome.rationalized is not None:
        gained = outcome.rationalized
        note += f"; rationalized {gained.rationalized} of {gained.asked} unsolved"
    return note


def estimate_teach(run: Experiment, stage: Stage) -> Any:
    """What a teach stage would still send, and its estimated cost (a dry run: nothing is sent)."""
    from ftcot.teach.run import run_teach

    return run_teach(teach_config(run, stage), run.stage_dir(stage), data_root=run.data_root, dry_run=True,
                     console=run.console, task=run.task(stage.inputs["task"])).summary


def _curate(run: Experiment, stage: Stage, directory: Path) -> str:
    """A curate stage: :func:`ftcot.curate.run.run_curate`, as ``ftcot curate`` and ``ftcot.curate()`` run it,
    on the stage's settings (the experiment's curate: block, and what the plan decided)."""
    from ftcot.curate.config import CurateConfig
    from ftcot.curate.run import run_curate

    inputs = stage.inputs
    settings = {k: v for k, v in inputs.items() if k in CurateConfig.model_fields and k != "task"}
    settings.update(samples=inputs["D"], subset_seed=inputs["subset_seed"] or 0,
                    rationale=inputs.get("rationale", "answer"))  # the stage's, whatever the store's
    source = run.out / run.plan.stages[inputs["teach"]].path if inputs["teach"] is not None else None
    outcome = run_curate(CurateConfig(**settings), source, directory, task=run.task(inputs["task"]),
                         source_name=inputs["teach"])
    summary = outcome.summary
    overlap = summary["contamination"].get("flagged_questions")
    overlap = f"; {overlap} training questions overlap test questions (contamination.jsonl)" if overlap else ""
    return (f"{len(outcome.train)} train / {len(outcome.val)} val examples from {summary['questions_with_examples']} "
            f"questions{overlap}")


def _train(run: Experiment, stage: Stage, directory: Path) -> str:
    from ftcot.train.checkpoint import TRAIN_JSON

    data_dir = run.out / run.plan.stages[stage.inputs["curate"]].path
    student = next(s for s in run.config.students if s.label == stage.runtime["student"])
    config = TrainConfig(**stage.inputs["config"], device=stage.runtime["device"],
                         eval_batch_size=stage.runtime["eval_batch_size"])
    task = run.plan.stages[stage.inputs["curate"]].inputs["task"]
    task_name, answer_type = task.get("key") or task["file"], task.get("answer_type")
    if config.student.startswith("openai:"):
        from ftcot.train.openai_student import DEFAULT_BASE_URL, train_openai_student

        record = train_openai_student(data_dir, config.student.removeprefix("openai:"), directory,
                                      base_url=student.base_url or DEFAULT_BASE_URL,
                                      api_key_env=student.api_key_env or "OPENAI_API_KEY", seed=config.seed,
                                      progress=lambda line: run.console.print(line, markup=False))
        return f"fine-tuned model {record['student']}"
    continued = _continue_shorter_run(run, stage, directory)
    if run.config.launcher:
        command = [*shlex.split(run.config.launcher), "-m", "ftcot", "train", str(data_dir), "--out",
                   str(directory), "--task", task_name, *train_cli_args(config)]
        command += ["--answer-type", answer_type] if answer_type else []
        try:
            code = subprocess.run(command).returncode
        except OSError as exc:  # not found, not executable
            raise FtcotError(f"launcher: '{command[0]}' cannot run ({exc.strerror or exc}); install it or fix "
                             f"launcher: in the config.") from None
        if code != 0:
            raise FtcotError(f"The train stage's command failed: {shlex.join(command)}; fix what it printed above "
                             f"and rerun (finished epochs are kept).")
        record = read_json_object(directory / TRAIN_JSON, f"the launcher's command ({shlex.join(command)}) "
                                                          f"finished without writing it: check that it runs ftcot train")
    else:
        from ftcot.train import train

        record = train(data_dir, directory, config, task=task_name, answer_type=answer_type, console=run.console)
    best = record["epochs"][record["best_epoch"] - 1]
    return (f"best epoch {record['best_epoch']}/{len(record['epochs'])}, val accuracy "
            f"{100 * best['val_accuracy']:.1f}%{continued}")


# What a train stage's directory holds besides the runner's own files: copied when continuing a shorter run.
_RUNNER_FILES = (STAGE_FILE, DONE_FILE, ".lock", "tensorboard")


def shorter_run(directory: Path, stage: Stage) -> tuple[int, Path] | None:
    """The same cell trained for fewer epochs in this OUT (finished or not): (epochs trained, its directory),
    the most trained one; None when there is none or ``directory`` has a run of its own."""
    from ftcot.train.checkpoint import TRAIN_JSON

    if (directory / TRAIN_JSON).exists():
        return None  # this stage's own run, resumed by the trainer
    want = stage.inputs["config"]["epochs"]

    def cell(inputs: dict) -> dict:
        return {**inputs, "config": {**inputs.get("config", {}), "epochs": None}}

    shorter = []
    for candidate in (directory.parent.iterdir() if directory.parent.is_dir() else ()):
        try:
            inputs = json.loads((candidate / STAGE_FILE).read_text(encoding="utf-8"))["inputs"]
            if candidate == directory or cell(inputs) != cell(stage.inputs) or inputs["config"]["epochs"] >= want:
                continue
            trained = len(json.loads((candidate / TRAIN_JSON).read_text(encoding="utf-8"))["epochs"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # not a train stage with a readable record: nothing to continue from
        if 0 < trained < want:
            shorter.append((trained, candidate))
    return max(shorter) if shorter else None


def _continue_shorter_run(run: Experiment, stage: Stage, directory: Path) -> str:
    """Start a train stage from the same cell trained for fewer epochs, when this OUT has one.

    Raising ``epochs`` changes a train stage's key, but with a constant learning rate and batches replayed
    by epoch, epochs 1..N of a longer run are those of the N-epoch run: its checkpoints are copied in and
    training resumes after its last epoch instead of starting again. Returns a note for the stage's line.
    """
    from ftcot.train.checkpoint import TRAIN_JSON

    found = shorter_run(directory, stage)
    if found is None:
        return ""
    trained, source = found
    # train.json last: a copy cut short by a kill has none, so the next run copies again over it.
    for item in sorted(source.iterdir(), key=lambda path: path.name == TRAIN_JSON):
        if item.is_dir() and item.name not in _RUNNER_FILES:
            shutil.copytree(item, directory / item.name, dirs_exist_ok=True)
        elif item.name not in _RUNNER_FILES:
            shutil.copy2(item, directory / item.name)
    run.console.print(f"continuing after epoch {trained} of {source.name} (the same cell, fewer epochs)")
    return f"; epochs 1–{trained} from {source.name}"


def _evaluate(run: Experiment, stage: Stage, directory: Path) -> str:
    """An evaluate stage: :func:`ftcot.evaluate.run.run_evaluate`, as ``ftcot evaluate`` runs it."""
    from ftcot.evaluate.config import EvaluateConfig
    from ftcot.evaluate.run import run_evaluate
    from ftcot.evaluate.source import weights_fingerprint
    from ftcot.evaluate.store import SETTINGS_FILE, EvalStore

    inputs, task = stage.inputs, run.task(stage.inputs["task"])
    student = next(s for s in run.config.students if s.label == stage.runtime["student"])
    source = inputs["model"]
    model = str(run.out / run.plan.stages[source["train"]].path) if "train" in source else source["base"]
    api = model.startswith("openai:")
    settings = {k: v for k, v in inputs.items() if k in EvaluateConfig.model_fields and k not in ("model", "task")}
    config = EvaluateConfig(**settings, model=model, task=task.key, batch_size=stage.runtime["batch_size"],
                            device=stage.runtime["device"], base_url=student.base_url if api else None,
                            api_key_env=student.api_key_env if api else None)
    if "train" in source and (directory / SETTINGS_FILE).is_file():
        moved = EvalStore(directory).set_aside_other_weights(weights_fingerprint(model))
        if moved is not None:
            run.console.print(f"{directory}: its predictions were made by an earlier training of this cell (other "
                              f"weights); kept in {moved}, evaluating the new one", markup=False, highlight=False)
    metrics = run_evaluate(config, directory, progress=True, console=run.console, task=task).metrics
    return f"accuracy {100 * metrics['accuracy']:.2f}% ({metrics['correct']}/{metrics['n']})"


_WORK = {"teach": _teach, "curate": _curate, "train": _train, "evaluate": _evaluate}


def train_cli_args(config: TrainConfig) -> list[str]:
    """``ftcot train`` options that reproduce ``config`` (its options are TrainConfig's fields, by name)."""
    args: list[str] = []
    for name, value in config.to_dict().items():
        flag = "--" + name.replace("_", "-")
        if name == "student":
            args += [flag, value]
        elif name == "lora":
            args.append("--lora" if value else "--full")
        elif name == "bf16":
            args += [] if value is None else ["--bf16" if value else "--no-bf16"]
        elif isinstance(value, bool):
            args += [flag] if value else []
        elif value is not None:
            args += [flag, str(value)]
    return args

