"""An experiment, declared: the YAML file ``ftcot run`` reads, validated by pydantic.

Every axis of the paper is a list: tasks × teachers × methods × students ×
seeds, plus diverse reasoning (a list of D), training-set sizes and the split
scheme. Anything left out takes the paper's default. An unknown
key or a bad value is a one-line error that names the file and the key::

    experiment.yaml: students[1].lr: Input should be greater than 0 (got -1)

Training settings are :class:`ftcot.train.config.TrainConfig`'s fields, so the
``train:`` block and each student's overrides accept exactly what ``ftcot
train`` does, with the same defaults.
"""

from __future__ import annotations

import dataclasses
import shlex
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, ValidationError,
                      create_model, field_validator, model_validator)

from ftcot.api_replies import public_url
from ftcot.errors import FtcotError, unknown_name
from ftcot.curate.config import CurateConfig, LabelMode
from ftcot.evaluate.config import EvaluateConfig
from ftcot.settings import NumbersNotBooleans, Settings, subset
from ftcot.teach.config import MAX_SAMPLES, TeachConfig, TeacherChecks
from ftcot.train.config import TrainConfig

PROMPTING_METHODS = ("zs", "zs_cot", "fs_cot")  # evaluated on the student as it is (the paper's baselines)
# ft_dss: distilling step-by-step; ft_cot_kd: Fine-tune-CoT with logit distillation from the teacher's top-K
FINE_TUNING_METHODS = ("ft", "ft_cot", "ft_cot_natural", "ft_dss", "ft_cot_kd")
METHODS = PROMPTING_METHODS + FINE_TUNING_METHODS
TEACHER_METHODS = tuple(m for m in FINE_TUNING_METHODS if m != "ft")  # those that train on a teacher's rationales
KD_METHOD = "ft_cot_kd"
# Methods that train on a teacher's rationales as Fine-tune-CoT writes them, so on D sampled ones a question too.
DIVERSE_METHODS = ("ft_cot", KD_METHOD)
DEFAULT_KD_WEIGHT = 1.0  # λ of an ft_cot_kd cell whose train settings leave kd_weight unset
PAPER_TEMPERATURE = 0.7  # diverse reasoning (as in the paper)


class _Strict(Settings):
    """Unknown keys refused, no NaN or infinity anywhere, no boolean for a number (as a stage's settings)."""


def _spec_or_mapping(value: Any) -> Any:
    """``- replay:text-davinci-002`` is short for ``- {spec: replay:text-davinci-002}``."""
    return {"spec": value} if isinstance(value, str) else value


def _unique(values: list[Any] | None) -> list[Any] | None:
    if values is not None and len(set(values)) < len(values):
        # A repeat would be one measurement counted twice (a "± 0.00" interval).
        raise ValueError(f"'{_first_repeat(values)}' is listed twice; list each once")
    return values


Seeds = Annotated[list[int], AfterValidator(_unique)]
Methods = Annotated[list[Literal["zs", "zs_cot", "fs_cot", "ft", "ft_cot", "ft_cot_natural", "ft_dss", "ft_cot_kd"]],
                    AfterValidator(_unique)]
# Seeded subsets of N training questions; "all" is the whole training split (the point the subsets lead up to).
def _train_size(value: Any) -> int | str:
    if value == "all" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ValueError("a number of training questions (1 or more) or 'all'")


TrainSizes = Annotated[list[Annotated[Union[int, str], PlainValidator(_train_size)]], AfterValidator(_unique)]


def _known_answer_type(value: str | None) -> str | None:
    from ftcot.tasks.custom import answer_type_named

    if value is not None:
        answer_type_named(value)  # a ValueError names the valid ones; the file is read later, by each stage
    return value


class TaskConfig(_Strict):
    spec: str = Field(description="A built-in task key, or your own .jsonl/.csv task file")
    answer_type: Annotated[Optional[str], AfterValidator(_known_answer_type)] = Field(
        None, description="For your own task file: number, letter, yes/no, text")
    seeds: Optional[Seeds] = Field(None, min_length=1, description="This task's training seeds (default: seeds)")
    train_sizes: Optional[TrainSizes] = Field(None, min_length=1,
                                              description="This task's training-set sizes (default: train_sizes)")
    # A size's seeds may not be empty: that size would train no seed, its cells gone unsaid.
    seeds_by_size: dict[Annotated[Union[int, str], PlainValidator(_train_size)], Annotated[Seeds, Field(min_length=1)]] = Field(
        default_factory=dict, description="Fewer seeds at some training-set sizes, e.g. {128: [0]} (each a subset "
                                          "of the seeds); the other sizes train every seed")
    teachers: Optional[Annotated[list[str], AfterValidator(_unique)]] = Field(
        None, min_length=1, description="Labels of the experiment's teachers that teach this task (default: all), "
                                        "e.g. a student fine-tuned on this very task")


class _TrainKeys(NumbersNotBooleans):
    # NaN and infinity pass to TrainConfig, whose own checks name them as ftcot train's options do.
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("seed", check_fields=False)  # the field comes with TrainConfig's (below)
    @classmethod
    def _seed_is_an_axis(cls, value: Any) -> Any:
        if value is not None:  # the cell's seed (seeds:) replaces it: taken, it would be ignored unsaid
            raise ValueError("the training seed is an axis: list it in seeds: (the experiment's, a task's or a "
                             "student's), not in train:")
        return value


def _train_overrides_model() -> type[BaseModel]:
    """A pydantic model with TrainConfig's fields, each optional: one source of truth for training keys."""
    hints = typing.get_type_hints(TrainConfig)
    fields = {f.name: (Optional[hints[f.name]], Field(None, description=f.metadata.get("help")))
              for f in dataclasses.fields(TrainConfig) if f.name != "student"}
    return create_model("TrainSettings", __base__=_TrainKeys, **fields)


TrainSettings = _train_overrides_model()


def _public_urls(base_url: str | list[str] | None) -> str | list[str] | None:
    """A base URL (or several) without credentials; a list of one is that URL (the same stage key)."""
    if not base_url:
        return None
    if isinstance(base_url, str) or len(base_url) == 1:
        return public_url(base_url if isinstance(base_url, str) else base_url[0])
    return sorted(public_url(url) for url in base_url)  # the servers, not their order, make the teacher


DValues = Annotated[list[Annotated[int, Field(ge=1, le=MAX_SAMPLES)]], AfterValidator(_unique)]


class _Teacher(TeacherChecks):
    """What an experiment adds to a teacher's teach settings: a label, which cells its rationales train, and its
    stage identity."""

    name: Optional[str] = Field(None, description="Label in tables (default: the spec)")
    # Neither is in the teach stage's identity: they choose which cells read the teacher's stages.
    methods: Optional[Methods] = Field(None, min_length=1, description="The methods this teacher's rationales "
                                       "train, among the experiment's (default: all), e.g. ft_cot_kd only for a "
                                       "teacher that stores its top-K")
    D: Optional[DValues] = Field(None, min_length=1, description="This teacher's D values (default: diverse's, "
                                 "per task); needs diverse:")

    @model_validator(mode="after")
    def _rationale_method(self) -> Any:
        if self.method not in ("zs_cot", "ft_cot"):
            raise ValueError(f"a teacher of an experiment writes rationales: method zs_cot or ft_cot, not "
                             f"{self.method} (the prompting baselines are methods of the students' table)")
        return self

    @property
    def adaptive(self) -> bool:
        return self.until_correct is not None

    @property
    def label(self) -> str:
        return self.name or self.spec

    def identity(self) -> dict[str, Any]:
        """What makes two teachers give different completions (not the key's variable, not concurrency).

        The URL without user info or query: stage files record it, and credentials must not reach them.
        """
        identity = {"spec": self.spec, "base_url": _public_urls(self.base_url),
                    "chat": self.chat, "extra_body": self.extra_body, "max_tokens": self.max_tokens}
        if self.system_prompt:
            identity["system_prompt"] = self.system_prompt
        if self.prefill:  # only when set: chat teachers made before it keep their keys
            identity["prefill"] = True
        if self.top_logprobs:  # only when set, likewise: a stage that stores them is another stage's output
            identity["top_logprobs"] = self.top_logprobs
        # Only when set, so the teach stages made before these existed keep their keys (rationalize: true, the
        # one hinted rationale a question it meant then, stays true).
        rationalize = True if self.rationalize == 1 else self.rationalize or None
        extra = {"until_correct": self.until_correct, "max_samples": self.max_samples, "rationalize": rationalize}
        return {**identity, **{k: v for k, v in extra.items() if v is not None}}


# A teacher of an experiment: ftcot teach's settings (ftcot.teach.config.TeachConfig) less what the experiment
# plans itself for each teach stage (the task, split, D, T and questions). Not in identity(): method (the teach
# stage's own input), batch and poll_interval_s (a batch returns what a normal run would: the same store keys),
# rationale (read when curating, never a request), concurrency, max_cost, prices.
TeacherConfig = subset(TeachConfig, "TeacherConfig", base=_Teacher,
                       exclude=("task", "answer_type", "split", "samples", "temperature", "questions"))


class StudentConfig(_Strict):
    spec: str = Field(description="tiny-gpt2, tiny-t5, gemma-270m, a model directory, or openai:MODEL")
    name: Optional[str] = Field(None, description="Label in tables (default: the spec)")
    parameters: Optional[float] = Field(None, gt=0, description="Parameter count, for the student-size plot")
    base_url: Optional[str] = Field(None, description="openai: students: the fine-tuning API's /v1 URL")
    api_key_env: Optional[str] = Field(None, description="openai: students: variable holding the key")
    methods: Optional[Methods] = Field(None, min_length=1,
                                       description="This student's methods, among the experiment's (default: all)")
    seeds: Optional[Seeds] = Field(None, min_length=1,
                                   description="This student's seeds, over the tasks' and the experiment's")
    train: TrainSettings = Field(default_factory=TrainSettings)  # type: ignore[valid-type]

    @model_validator(mode="before")
    @classmethod
    def _train_keys_inline(cls, data: Any) -> Any:
        """``{spec: gemma-270m, lora: true}`` reads as ``{spec: gemma-270m, train: {lora: true}}``."""
        if not isinstance(data, dict):
            return data
        own = set(cls.model_fields)
        inline = {k: v for k, v in data.items() if k not in own}
        if not inline:
            return data
        return {**{k: v for k, v in data.items() if k in own}, "train": {**data.get("train", {}), **inline}}

    @property
    def label(self) -> str:
        return self.name or self.spec


class DiverseConfig(_Strict):
    # Not empty: D: [] would plan no diverse cell at all (per_task's [] is a choice: none for that task).
    D: DValues = Field(min_length=1, description="Rationales sampled per training question")
    temperature: float = Field(PAPER_TEMPERATURE, gt=0)
    per_task: dict[str, DValues] = Field(
        default_factory=dict, description="Another list of D for some tasks ([] for none), as the paper's "
                                          "D = 64 for MultiArith and SVAMP")

    def of(self, task: str) -> list[int]:
        return self.per_task.get(task, self.D)


class _Curation(Settings):
    """What an experiment's curate: block adds to the curate settings: a list of labels is an axis."""

    # The answer a rationale must reach (ftcot curate --label); a list is an axis: one curated set (and cell)
    # per label, the teacher's column saying "(majority labels)".
    label: Union[LabelMode, list[LabelMode]] = Field("gold", description="gold, majority or majority_and_gold; a "
                                                                         "list: one cell per label")

    @field_validator("label", mode="before")
    @classmethod
    def _label_axis(cls, value: Any) -> Any:
        # A list is an axis as any other: not empty (every Fine-tune-CoT cell would go unsaid), no label twice.
        # Before the union, whose first error would be "should be 'gold', …" for any list.
        if isinstance(value, list):
            if not value:
                raise ValueError("an empty list plans no Fine-tune-CoT cell; list one label or more")
            if all(isinstance(label, str) for label in value):
                _unique(value)
        return value

    def labels(self) -> list[str]:
        return list(dict.fromkeys(self.label)) if isinstance(self.label, list) else [self.label]

    def stage_inputs(self) -> dict[str, Any]:
        """What keys a curate stage: the paper's settings, and the later ones only where they differ from their
        defaults (stages run before they existed keep their keys)."""
        paper = self.model_dump(include={"val_fraction", "val_seed", "max_rationale_tokens"})
        # label is the stage's own (one per label of the axis): the curate stage adds it, and min_votes with it,
        # when not gold (gold ignores min_votes: a gold cell is the same cell whatever min_votes says).
        return {**paper, **self.model_dump(exclude=set(paper) | {"label", "min_votes"}, exclude_defaults=True)}

    def label_inputs(self, label: str) -> dict[str, Any]:
        """What keys a curate stage of ``label`` beyond :meth:`stage_inputs`: nothing for gold (the paper's keys),
        else the label, and ``min_votes`` where it is not the default."""
        if label == "gold":
            return {}
        default = type(self).model_fields["min_votes"].default
        return {"label": label, **({"min_votes": self.min_votes} if self.min_votes != default else {})}


# An experiment's curate: block: ftcot curate's settings (ftcot.curate.config.CurateConfig) less what the
# experiment plans for each curate stage (template, task, training-set size, D) or sets elsewhere (split_scheme).
CurateSettings = subset(CurateConfig, "CurateSettings", base=_Curation,
                        exclude=("label", "template", "task", "answer_type", "train_size", "subset_seed", "split_scheme",
                                 "max_per_question", "samples", "rationale"))


# An experiment's evaluate: block: ftcot evaluate's settings less what each cell decides (the model, task, method
# and split scheme) or a student's config holds (an API student's base_url and key).
EvaluateSettings = subset(EvaluateConfig, "EvaluateSettings", exclude=("model", "task", "method", "split_scheme",
                                                                       "base_url", "api_key_env", "answer_type"))


StageKind = Literal["teach", "curate", "train", "evaluate"]


class ExecutorConfig(_Strict):
    """Who runs the stages (executors.py): this process in plan order, or a Ray cluster in parallel."""

    kind: Literal["serial", "ray"] = Field("serial", description="serial: this process, one stage after another; "
                                                                 "ray: a Ray cluster, every stage whose inputs exist")
    address: Optional[str] = Field(None, description="ray: a running cluster ('auto', 'HOST:6379', 'ray://HOST:10001'); "
                                                     "none starts one on this machine for the run")
    local_cpus: Optional[int] = Field(None, ge=1, description="ray without an address: CPUs of the local cluster "
                                                              "(default: all)")
    retries: int = Field(1, ge=0, le=10, description="ray: times a failed stage is tried again")
    cpus: dict[StageKind, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict, description="ray: CPUs a stage of each kind holds (default 1)")
    gpus: dict[StageKind, Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict, description="ray: GPUs a stage of each kind holds (default 0; e.g. train: 4 with "
                                          "a launcher that runs accelerate on 4 GPUs)")

    @model_validator(mode="after")
    def _ray_only(self) -> ExecutorConfig:
        if self.kind == "serial":
            for name in ("address", "local_cpus"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} is for kind: ray (kind is serial)")
        return self

    def cpus_of(self, kind: str) -> float:
        return self.cpus.get(kind, 1)  # type: ignore[call-overload]

    def gpus_of(self, kind: str) -> float:
        return self.gpus.get(kind, 0)  # type: ignore[call-overload]


class ExperimentConfig(_Strict):
    name: str = "experiment"
    tasks: list[Annotated[TaskConfig, BeforeValidator(_spec_or_mapping)]] = Field(min_length=1)
    teachers: list[Annotated[TeacherConfig, BeforeValidator(_spec_or_mapping)]] = Field(default_factory=list)
    teacher_row: bool = Field(True, description="Score the teacher's Zero-shot-CoT on the test split (the table's "
                                                "teacher row); the greedy teach stage then covers test questions too")
    methods: Methods = Field(min_length=1)
    diverse: Optional[DiverseConfig] = None
    students: list[Annotated[StudentConfig, BeforeValidator(_spec_or_mapping)]] = Field(min_length=1)
    train: TrainSettings = Field(default_factory=TrainSettings)  # type: ignore[valid-type]
    seeds: Seeds = Field(default_factory=lambda: [0], min_length=1)
    train_sizes: Optional[TrainSizes] = Field(
        None, min_length=1,
        description="Seeded subsets of N training questions (the training-set-size ablation); 'all' for the whole split")
    split_scheme: Literal["default", "template"] = "default"
    curate: CurateSettings = Field(default_factory=CurateSettings)  # type: ignore[valid-type]
    evaluate: EvaluateSettings = Field(default_factory=EvaluateSettings)  # type: ignore[valid-type]
    launcher: Optional[str] = Field(None, description="Run each train stage as '<launcher> -m ftcot train …', e.g. "
                                                      "'accelerate launch --config_file configs/accelerate/ddp.yaml'")
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        # The default output is runs/<name>: '' would be runs/ itself, '../x' or '/x' a folder outside runs/.
        if value.strip() in ("", ".", "..") or "/" in value or "\\" in value:
            raise ValueError("must be a plain folder name (the default output is runs/<name>), without '/' and "
                             "not '', '.' or '..'; choose the output folder with --out (out= in Python)")
        return value

    @field_validator("launcher")
    @classmethod
    def _launcher_words(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                words = shlex.split(value)
            except ValueError as exc:
                raise ValueError(f"not a command line ({exc}): check its quotes") from None
            if not words:
                raise ValueError("empty: leave launcher out to train in this process")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        needs_teacher = any(m in TEACHER_METHODS for m in self.methods) \
            or self.diverse is not None
        if (needs_teacher or self.teacher_row) and not self.teachers:
            raise ValueError("needs at least one teacher (teachers: [replay:text-davinci-002] works offline) for "
                             "ft_cot, ft_dss, ft_cot_kd, diverse or the teacher row")
        for teacher in self.teachers:
            wrong = [m for m in teacher.methods or [] if m not in self.methods or m not in TEACHER_METHODS]
            if wrong:
                raise ValueError(f"teacher '{teacher.label}' lists method '{wrong[0]}', which "
                                 + ("trains on no teacher's data" if wrong[0] not in TEACHER_METHODS
                                    else "methods does not") + f": a teacher's methods are among the "
                                 f"experiment's {', '.join(m for m in self.methods if m in TEACHER_METHODS)}")
            if teacher.D is not None and self.diverse is None:
                raise ValueError(f"teacher '{teacher.label}' sets D, the rationales sampled a question for diverse "
                                 f"reasoning: add diverse: {{D: {teacher.D}}} (or drop the teacher's D)")
        if KD_METHOD in self.methods:
            blind = next((t.label for t in self.teachers if not t.top_logprobs
                          and (t.methods is None or KD_METHOD in t.methods)), None)
            if blind is not None:
                raise ValueError(f"ft_cot_kd distils the teacher's top-K log-probabilities, and teacher '{blind}' "
                                 f"stores none: give it top_logprobs: 5 (a local hf:, vLLM, llama.cpp or OpenAI "
                                 f"teacher; a replay: teacher has none), or methods without ft_cot_kd")
            api = next((s.label for s in self.students if s.spec.startswith("openai:")
                        and (s.methods is None or KD_METHOD in s.methods)), None)
            if api is not None:
                raise ValueError(f"student '{api}' is fine-tuned by a provider, on the text only: ft_cot_kd needs a "
                                 f"local student (give '{api}' methods without ft_cot_kd)")
        last = next((s.label for s in self.students if s.spec.startswith("openai:")
                     and (s.train.select_epoch or self.train.select_epoch or "best") != "best"), None)
        if last is not None:
            raise ValueError(f"student '{last}' is fine-tuned by a provider, whose job returns one model: "
                             f"select_epoch picks among a local student's epochs (drop it for '{last}')")
        distilled = [s.label for s in self.students if s.train.kd_weight is not None]
        if (self.train.kd_weight is not None or distilled) and KD_METHOD not in self.methods:
            where = f"student '{distilled[0]}'" if distilled else "train"
            raise ValueError(f"{where} sets kd_weight, which weighs ft_cot_kd's logit distillation: add ft_cot_kd "
                             f"to methods")
        if self.diverse is not None and not set(DIVERSE_METHODS) & set(self.methods):
            raise ValueError("diverse reasoning trains Fine-tune-CoT students: add ft_cot (or ft_cot_kd) to methods")
        weighted = [s.label for s in self.students if s.train.rationale_weight is not None]
        if (self.train.rationale_weight is not None or weighted) and "ft_dss" not in self.methods:
            where = f"student '{weighted[0]}'" if weighted else "train"
            raise ValueError(f"{where} sets rationale_weight, which weighs distilling step-by-step's rationale "
                             f"task: add ft_dss to methods")
        for student in self.students:
            extra = [m for m in student.methods or [] if m not in self.methods]
            if extra:
                raise ValueError(f"student '{student.label}' lists method '{extra[0]}', which methods does not; "
                                 f"a student's methods are a subset of the experiment's")
        labels = [t.label for t in self.teachers]
        for task in self.tasks:
            unknown = [t for t in task.teachers or [] if t not in labels]
            if unknown:
                raise ValueError(f"task '{task.spec}' lists teacher '{unknown[0]}', which teachers does not "
                                 f"(teachers: {', '.join(labels) or 'none'})")
            sizes = task.train_sizes or self.train_sizes or ["all"]
            for size, seeds in task.seeds_by_size.items():
                if size not in sizes:
                    raise ValueError(f"task '{task.spec}': seeds_by_size names size {size}, which is not among "
                                     f"its train_sizes ({', '.join(map(str, sizes))})")
                extra = [seed for seed in seeds if seed not in (task.seeds or self.seeds)]
                if extra:
                    raise ValueError(f"task '{task.spec}': seeds_by_size[{size}] lists seed {extra[0]}, which its "
                                     f"seeds do not; list a subset of them")
        for kind, items in (("teacher", self.teachers), ("student", self.students)):
            labels = [item.label for item in items]
            if len(set(labels)) < len(labels):
                raise ValueError(f"two {kind}s share the label '{_first_repeat(labels)}'; give them distinct names")
        return self

    def public_dump(self) -> dict[str, Any]:
        """The config as JSON, with every URL stripped of user info and query (what experiment.json holds)."""
        dump = self.model_dump(mode="json")
        for entry in dump["teachers"] + dump["students"]:
            if entry.get("base_url"):
                entry["base_url"] = _public_urls(entry["base_url"])
        if "://" in (dump["executor"]["address"] or ""):
            dump["executor"]["address"] = public_url(dump["executor"]["address"])
        return dump

    def seeds_of(self, task: TaskConfig, student: StudentConfig) -> list[int]:
        return student.seeds or task.seeds or self.seeds

    def methods_of(self, student: StudentConfig) -> list[str]:
        return [m for m in self.methods if student.methods is None or m in student.methods]

    def teachers_of(self, task: TaskConfig) -> list[TeacherConfig]:
        return [t for t in self.teachers if task.teachers is None or t.label in task.teachers]

    def trains_at(self, task: TaskConfig, seed: int, size: int | None) -> bool:
        """Whether ``seed`` trains at training-set size ``size`` (None: the whole split) of ``task``."""
        seeds = task.seeds_by_size.get("all" if size is None else size)
        return seeds is None or seed in seeds

    def train_sizes_of(self, task: TaskConfig) -> list[int | None]:
        """The task's training-set sizes; None is the whole training split."""
        sizes = task.train_sizes or self.train_sizes
        return [None if size == "all" else size for size in sizes] if sizes else [None]

    def train_config(self, student: StudentConfig, seed: int) -> TrainConfig:
        """The student's training settings: TrainConfig defaults < ``train:`` < the student's own < the seed."""
        settings = {**_set(self.train), **_set(student.train), "student": student.spec, "seed": seed}
        return TrainConfig(**settings)


def _set(settings: BaseModel) -> dict[str, Any]:
    return {k: v for k, v in settings.model_dump().items() if v is not None}


def _first_repeat(items: list[str]) -> str:
    return next(x for i, x in enumerate(items) if x in items[:i])


def load_config(path: Path) -> ExperimentConfig:
    """Read and validate an experiment YAML; every problem is one line naming the file and key."""
    import yaml

    if not path.is_file():
        raise FtcotError(f"{path}: no such experiment file (see configs/ for examples).")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_loader())  # noqa: S506 (a SafeLoader)
    except _RepeatedKey as exc:
        raise FtcotError(f"{path} line {exc.line}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise FtcotError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', None) or exc}).") from None
    except UnicodeDecodeError:
        raise FtcotError(f"{path}: not UTF-8 text; save it as UTF-8.") from None
    return parse_config(raw, str(path))


class _RepeatedKey(Exception):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(f"the key '{key}' is given twice (first on line {first}); YAML would keep this one and "
                         f"drop the first unsaid: keep the one you mean")
        self.line = line


def _loader() -> type:
    """yaml.SafeLoader, but a key given twice in one mapping is an error (YAML keeps the last value unsaid)."""
    import yaml

    class UniqueKeys(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *defaults' then overriding one is meant
                    continue
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float)):  # a list as a key: pyyaml refuses it itself
                    continue
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise _RepeatedKey(key, line, seen[key])
                seen[key] = line
            return super().construct_mapping(node, deep)

    return UniqueKeys


def parse_config(raw: Any, source: str = "config") -> ExperimentConfig:
    if not isinstance(raw, dict):
        raise FtcotError(f"{source}: expected a mapping of settings (tasks:, methods:, students:, …).")
    try:
        config = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise FtcotError(f"{source}: {_first_error(exc)}") from None
    _check_names(config, source)
    return config


def _first_error(exc: ValidationError) -> str:
    # A misspelt key also shows up as a missing required one: name the misspelling, it is the cause.
    error = min(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    loc = [part for part in error["loc"] if not (isinstance(part, str) and "[" in part)]  # drop validator tags
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "(top level)"
    if error["type"] == "extra_forbidden":
        parent = _parent_fields(loc[:-1])
        hint = unknown_name("key", str(loc[-1]), parent) if parent else None
        return f"{path}: unknown key.{' ' + str(hint).split('.', 1)[1].strip() if hint else ''}"
    message = error["msg"].removeprefix("Value error, ")
    given = error.get("input")
    shown = "" if isinstance(given, (dict, list)) or given is None else f" (got {given!r})"
    return f"{path}: {message}{shown}"


def _parent_fields(loc: list[Any]) -> list[str]:
    """The valid keys at a location, for the did-you-mean of an unknown key."""
    model: Any = ExperimentConfig
    for part in loc:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        model = _model_in(annotation)
        if model is None:
            return []
    names = list(model.model_fields)
    if model is StudentConfig:
        names += list(TrainSettings.model_fields)
    return names


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _check_names(config: ExperimentConfig, source: str) -> None:
    """Known task keys (or task files) and valid training settings, before anything runs."""
    from ftcot.tasks import BUILTIN_TASKS

    places: dict[str, int] = {}  # a task, wherever it is written: index in tasks
    names: dict[str, int] = {}  # what the tables call it: index in tasks
    for i, task in enumerate(config.tasks):
        builtin = task.spec in BUILTIN_TASKS
        if not builtin and not Path(task.spec).is_file():
            raise FtcotError(f"{source}: tasks[{i}]: {unknown_name('task', task.spec, BUILTIN_TASKS)}")
        # A task twice, or two tasks under one name, would be one column holding two results ("± 0.00").
        place = task.spec if builtin else str(Path(task.spec).resolve())
        if place in places:
            raise FtcotError(f"{source}: tasks[{i}]: '{task.spec}' is tasks[{places[place]}] again; list each "
                             f"task once.")
        name = task.spec if builtin else Path(task.spec).stem
        if name in names:
            other = config.tasks[names[name]].spec
            raise FtcotError(f"{source}: tasks[{i}] '{task.spec}' and tasks[{names[name]}] '{other}' would both be "
                             f"'{name}' in the tables; rename the file{'s' if name not in BUILTIN_TASKS else ''} "
                             f"so that each task has its own name.")
        places[place], names[name] = i, i
    unknown = [task for task in (config.diverse.per_task if config.diverse else {}) if task not in names]
    if unknown:  # a misspelt task would take D unsaid
        raise FtcotError(f"{source}: diverse.per_task: {unknown_name('task', unknown[0], names)} (per_task names "
                         f"tasks of this experiment, as the tables do)")
    for i, student in enumerate(config.students):
        try:
            config.train_config(student, config.seeds[0])
        except FtcotError as exc:
            raise FtcotError(f"{source}: students[{i}] ({student.label}): {exc}") from None
