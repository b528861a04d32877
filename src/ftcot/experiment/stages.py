"""An experiment as a graph of stages, each keyed by a hash of what it depends on.

Pure planning: :func:`plan_experiment` turns an :class:`ExperimentConfig` into
the stages ``ftcot run`` executes and the table cells they fill. A stage's
key hashes its settings and its upstream stages' keys, so

- a rerun finds every finished stage under the same key and skips it;
- a changed setting changes the key of the stage that reads it and of
  everything downstream, and nothing upstream (a new learning rate: new train
  and evaluate stages; the same teach and curate stages);
- going back to an old setting finds its stages still there.

Stages, in data-flow order:

- **teach** — one per task × teacher × temperature. The greedy stage covers the
  test questions too when the teacher row is asked for. Its key leaves out D:
  a larger D tops the same store up (sample numbers 0…D-1), so D = 2 and D = 8
  share their first two rationales per question, as they would if drawn apart.
- **curate** — one per task × template × (teacher, D) × training-set size (``ft_cot_kd`` reads
  ft_cot's: curate carries the teacher's top-K of each rationale wherever the teacher stored them).
  A D-run keeps the chains numbered below D: the rationales that a teacher run
  with D samples would have drawn.
- **train** — one per curated set × student × seed.
- **evaluate** — one per trained student (or, for the prompting baselines,
  per base student) × task × method.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ftcot.experiment.config import (DEFAULT_KD_WEIGHT, DIVERSE_METHODS, KD_METHOD, PAPER_TEMPERATURE,
                                     PROMPTING_METHODS, TEACHER_METHODS, ExperimentConfig, StudentConfig, TaskConfig,
                                     TeacherConfig)
from ftcot.curate.dataset import question_subset
from ftcot.tasks import BUILTIN_TASKS, Task
from ftcot.templates import get_template

# Bump when a stage's outputs change meaning, so old stage directories are not reused.
STAGE_FORMAT = 1
KINDS = ("teach", "curate", "train", "evaluate")


@dataclass(frozen=True)
class Stage:
    kind: str  # teach, curate, train, evaluate
    key: str  # hash of ``inputs``
    inputs: dict[str, Any]  # everything the stage's output depends on, upstream keys included
    label: str  # for people: "train coin_flip ft_cot → gemma-270m seed 0"
    deps: tuple[str, ...] = ()  # keys of the stages it reads
    # How to run it, not what it produces (not in the key): devices, batch sizes, which student or
    # teacher config to use, and for teach the extent needed — rationales per question and which
    # questions (None: the whole split). A teach store tops up to more of either.
    runtime: dict[str, Any] = field(default_factory=dict)

    @property
    def samples(self) -> int:
        return self.runtime.get("samples", 1)

    @property
    def questions(self) -> list[int] | None:
        return self.runtime.get("questions")

    def covered_by(self, samples: int, questions: list[int] | None) -> bool:
        """Whether a teach run of that extent holds everything this stage needs."""
        return samples >= self.samples and (questions is None or (
            self.questions is not None and set(self.questions) <= set(questions)))

    @property
    def path(self) -> Path:
        """Relative to the experiment's output directory."""
        return Path("stages") / self.kind / self.key


@dataclass(frozen=True)
class ResultCell:
    """One accuracy the experiment reports: which evaluate stage, and where it sits in the table."""

    evaluate: str  # key of the evaluate stage
    method: str
    student: str
    teacher: str  # "" for methods that use no teacher
    task: str
    D: int | None
    seed: int
    train_size: int | None


@dataclass
class ExperimentPlan:
    stages: dict[str, Stage] = field(default_factory=dict)  # key -> stage, in execution order
    cells: list[ResultCell] = field(default_factory=list)
    teacher_rows: list[tuple[str, str, str]] = field(default_factory=list)  # (teach key, teacher label, task)
    skipped: list[str] = field(default_factory=list)  # "task method: why" of cells that cannot exist, once each

    def skip(self, task: str, method: str, reason: str) -> None:
        line = f"{task} {method}: {reason}"  # the same for every student and seed: said once
        if line not in self.skipped:
            self.skipped.append(line)

    def add(self, stage: Stage) -> Stage:
        known = self.stages.get(stage.key)
        if known is None:
            self.stages[stage.key] = stage
            return stage
        if not known.covered_by(stage.samples, stage.questions):  # the same teach stage, more of it
            questions = None if known.questions is None or stage.questions is None else sorted(
                set(known.questions) | set(stage.questions))
            runtime = {**known.runtime, "samples": max(known.samples, stage.samples), "questions": questions}
            self.stages[stage.key] = known = Stage(**{**known.__dict__, "runtime": runtime})
        return known

    def of_kind(self, kind: str) -> list[Stage]:
        return [s for s in self.stages.values() if s.kind == kind]

    def ordered(self) -> list[Stage]:
        """Stages in data-flow order: every stage after those it reads.

        The teach stages come first (a teacher that fails or costs too much shows at once); then each
        evaluation right after the stages it reads, so that a long run killed midway leaves finished
        cells to report. The main table comes first: every fine-tuned cell's first seed on the whole
        training set, the first student's task by task, then the next student's; then the prompting
        baselines (the comparison the paper is about comes before the rows that need no training);
        then the further seeds, then the training-set subsets.
        """
        order: dict[str, Stage] = {}
        replicates: dict[tuple, int] = {}
        students: dict[str, int] = {}
        rank: dict[str, tuple[bool, int, bool, int]] = {}
        for cell in self.cells:
            line = (cell.task, cell.method, cell.student, cell.teacher, cell.D, cell.train_size)
            replicates[line] = replicates.get(line, -1) + 1
            students.setdefault(cell.student, len(students))
            rank.setdefault(cell.evaluate, (cell.train_size is not None, replicates[line],
                                            cell.method in PROMPTING_METHODS, students[cell.student]))

        def visit(stage: Stage) -> None:
            if stage.key in order:
                return
            for dep in stage.deps:
                visit(self.stages[dep])
            order[stage.key] = stage

        for stage in self.of_kind("teach"):
            visit(stage)
        for key in sorted(rank, key=rank.__getitem__):
            visit(self.stages[key])
        for stage in self.stages.values():  # anything no cell reads
            visit(stage)
        return list(order.values())


def stage_key(inputs: dict[str, Any]) -> str:
    canonical = json.dumps({"format": STAGE_FORMAT, **inputs}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _stage(kind: str, inputs: dict[str, Any], label: str, deps: tuple[str, ...] = (), **runtime: Any) -> Stage:
    full = {"kind": kind, **inputs}
    return Stage(kind, stage_key(full), full, label, deps, runtime)


def task_identity(task: TaskConfig) -> dict[str, Any]:
    """A built-in task by key; a user's task file by its content, so an edited file is a new task."""
    if task.spec in BUILTIN_TASKS:
        return {"key": task.spec}
    path = Path(task.spec)
    return {"file": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "answer_type": task.answer_type}


def task_label(task: TaskConfig) -> str:
    return task.spec if task.spec in BUILTIN_TASKS else Path(task.spec).stem


def plan_experiment(config: ExperimentConfig, load: Callable[[TaskConfig], Task],
                    has_exemplars: Callable[[str], bool]) -> ExperimentPlan:
    """The stages and cells of ``config``.

    ``load`` gives a task's splits (training-set subsets are drawn from them);
    ``has_exemplars(task)`` says whether Few-shot-CoT can run on it.
    """
    plan = ExperimentPlan()
    for task in config.tasks:
        _plan_task(config, task, load(task), plan, has_exemplars)
    return plan


def _plan_task(config: ExperimentConfig, task: TaskConfig, loaded: Task, plan: ExperimentPlan,
               has_exemplars: Callable[[str], bool]) -> None:
    name, identity = task_label(task), task_identity(task)
    scheme = config.split_scheme
    sizes = config.train_sizes_of(task)
    seeds_of = {student.label: config.seeds_of(task, student) for student in config.students}
    teachers = config.teachers_of(task)
    rationales = {teacher.label: teacher.rationale for teacher in teachers}
    # A task whose training questions are not in the data (AQuA's train file) has prompting cells and
    # the teacher row, which need test questions only, and no fine-tuning cells.
    no_train = loaded.unavailable("train", scheme)
    train_questions = None  # the teacher answers only the training questions some student trains on
    if None not in sizes and not no_train:
        train = loaded.split_indices("train", scheme)
        train_questions = {i for size in sizes for seeds in seeds_of.values() for seed in seeds
                           if config.trains_at(task, seed, size) for i in question_subset(train, size, seed, name)}

    def teach(teacher: TeacherConfig, temperature: float, samples: int, with_test: bool) -> Stage:
        # Sampled stages never need the test questions; the greedy one does for the teacher row.
        split = "test" if no_train else "all" if with_test or scheme != "default" else "train"
        questions = None if train_questions is None or no_train else sorted(
            train_questions | (set(loaded.split_indices("test", scheme)) if with_test else set()))
        inputs = {"task": identity, "teacher": teacher.identity(), "method": teacher.method, "split": split,
                  "temperature": temperature}
        return plan.add(_stage("teach", inputs, f"{name}, {teacher.label} T={temperature:g}", samples=samples,
                               questions=questions, teacher=teacher.label))

    def curate(method: str, source: tuple[str, Stage] | None, D: int | None, size: int | None,
               seed: int, label: str = "gold") -> Stage:
        # ft_cot_kd trains on ft_cot's data: curate carries the teacher's top-K wherever the teacher stored them.
        template = "ft_cot" if method == KD_METHOD else method
        # Which part of a reasoning teacher's reply is the rationale: read from the teach store by this stage,
        # so in its key (only when not the default: stages made before it existed keep theirs), not teach's.
        rationale = rationales.get(source[0], "answer") if source else "answer"
        inputs = {"task": identity, "template": template, "teach": source[1].key if source else None, "D": D,
                  "split_scheme": scheme, "train_size": size, "subset_seed": seed if size else None,
                  **config.curate.stage_inputs(), **config.curate.label_inputs(label),
                  **({"rationale": rationale} if rationale != "answer" else {})}
        parts = [f"{name} {template}"] + ([f"from {source[0]}"] if source else []) \
            + ([f"D={D}"] if D is not None else []) + ([f"{size} questions (seed {seed})"] if size else []) \
            + ([f"{label} labels"] if label != "gold" else []) \
            + ([f"rationale: {rationale}"] if rationale != "answer" else [])
        return plan.add(_stage("curate", inputs, ", ".join(parts), (source[1].key,) if source else ()))

    def train(data: Stage, student: StudentConfig, seed: int, kd: bool = False) -> Stage:
        settings = config.train_config(student, seed).to_dict()
        keyed = {k: v for k, v in settings.items() if k not in _RUN_ONLY}
        # λ weighs the tasks of distilling step-by-step data only; unset (or for other data) it stays out of the
        # key and the config, so the stages made before it existed keep their keys.
        if keyed.get("rationale_weight") is None or not get_template(data.inputs["template"]).multi_task:
            keyed.pop("rationale_weight", None)
        if keyed.get("select_epoch") == "best":  # the default, likewise out of the key of stages made before it
            keyed.pop("select_epoch")
        # λ of logit distillation, likewise: only in ft_cot_kd cells, default 1 there.
        if kd:
            keyed["kd_weight"] = DEFAULT_KD_WEIGHT if keyed.get("kd_weight") is None else keyed["kd_weight"]
        else:
            keyed.pop("kd_weight", None)
        inputs = {"curate": data.key, "config": keyed}
        distils = f" + logit KD λ={keyed['kd_weight']:g}" if kd else ""
        return plan.add(_stage("train", inputs, f"{student.label} seed {seed} on {data.label}{distils}", (data.key,),
                               student=student.label, **{k: settings[k] for k in _RUN_ONLY}))

    def evaluate(model: Stage | StudentConfig, method: str) -> Stage:
        source = {"train": model.key} if isinstance(model, Stage) else {"base": model.spec}
        inputs = {"model": source, "task": identity, "method": method, "split_scheme": scheme,
                  **config.evaluate.model_dump(exclude={"batch_size", "device"})}
        who = model.label if isinstance(model, Stage) else f"{model.label} as is"
        student = model.runtime["student"] if isinstance(model, Stage) else model.label
        return plan.add(_stage("evaluate", inputs, f"{name} {method} ({config.evaluate.split}): {who}",
                               (model.key,) if isinstance(model, Stage) else (), student=student,
                               batch_size=config.evaluate.batch_size, device=config.evaluate.device))

    def cell(stage: Stage, method: str, student: StudentConfig, teacher: str, D: int | None, seed: int,
             size: int | None) -> None:
        plan.cells.append(ResultCell(stage.key, method, student.label, teacher, name, D, seed, size))

    greedy_needed = config.teacher_row or (not no_train and any(m in TEACHER_METHODS for m in config.methods))
    # An adaptive teacher trains on its sampled stage: its greedy one only when the teacher row reads it.
    greedy = {t.label: teach(t, 0.0, 1, config.teacher_row) for t in teachers
              if config.teacher_row or not t.adaptive} if greedy_needed else {}
    if config.teacher_row:
        plan.teacher_rows += [(stage.key, label, name) for label, stage in greedy.items()]

    for student in config.students:
        seeds = seeds_of[student.label]
        for method in config.methods_of(student):
            if method in PROMPTING_METHODS:
                if method == "fs_cot" and not has_exemplars(task.spec):
                    plan.skip(name, method, "no Few-shot-CoT exemplars for this task")
                    continue
                cell(evaluate(student, method), method, student, "", None, seeds[0], None)
                continue
            if no_train:
                plan.skip(name, method, no_train)
                continue
            # (teacher label, teach stage) and D for each source of training data of this method.
            sources: list[tuple[tuple[str, Stage] | None, int | None]] = [(None, None)]
            if method != "ft":
                # The task's teachers whose rationales train this method (a teacher's methods:, default all).
                tutors = [t for t in teachers if t.methods is None or method in t.methods]
                if not tutors:
                    plan.skip(name, method, "none of this task's teachers lists it in its methods")
                    continue
                # An adaptive teacher's rationales: sampled at the diverse temperature until K correct or M.
                sampled = config.diverse.temperature if config.diverse else PAPER_TEMPERATURE
                sources = [((t.label, teach(t, sampled, t.max_samples, False) if t.adaptive else greedy[t.label]),
                            None) for t in tutors]
                if config.diverse is not None and method in DIVERSE_METHODS:
                    for t in tutors:
                        diverse = t.D if t.D is not None else config.diverse.of(name)
                        if not diverse:
                            continue
                        if t.adaptive:
                            # An adaptive teacher's sampled stage is its adaptive one (the same key): its first D
                            # rationales would be adaptive data, not a fixed D's.
                            plan.skip(name, method, f"diverse D: {t.label} samples adaptively (until_correct), so "
                                                    f"it has no fixed-D data; its cell is the adaptive one")
                            continue
                        sampled_stage = teach(t, config.diverse.temperature, max(diverse), False)
                        sources += [((t.label, sampled_stage), D) for D in diverse]
            labels = config.curate.labels() if method != "ft" else ["gold"]
            for (source, D), label in ((s, label) for s in sources for label in labels):
                if label != "gold" and (D if D is not None else source[1].samples) < config.curate.min_votes:
                    # Fewer rationales a question than a majority needs: the cell could only fail.
                    plan.skip(name, method, f"{label} labels need {config.curate.min_votes} or more rationales a "
                                            f"question (min_votes); {source[0]}'s "
                                            f"{'greedy' if D is None else f'D={D}'} data is curated with gold only")
                    continue
                # Another label is another data source: the teacher's column says which.
                teacher = (source[0] if source else "") + (f" ({label} labels)" if label != "gold" else "")
                for seed in seeds:
                    for size in (size for size in sizes if config.trains_at(task, seed, size)):
                        model = train(curate(method, source, D, size, seed, label), student, seed,
                                      kd=method == KD_METHOD)
                        # An ft_cot_kd student answers as a Fine-tune-CoT one: evaluated with that template.
                        cell(evaluate(model, "ft_cot" if method == KD_METHOD else method), method, student, teacher,
                             D, seed, size)


# TrainConfig fields that change how a run goes, not what it produces.
_RUN_ONLY = ("eval_batch_size", "device")
