"""The teach stage's settings: one model from which ``ftcot teach``, ``teachers:`` in a config and ``ftcot.teach()``
are derived (:mod:`ftcot.settings`).

The command line shows the common settings as options and folds the rest into
three compound ones: ``--teacher-args`` (the backend's knobs, by the same names
as a config's ``teachers:`` keys, e.g. ``base_url=http://127.0.0.1:8080/v1,chat=true,max_tokens=256``),
``--adaptive K/M`` (sample until K correct rationales, at most M) and
``--rationalize N``. An experiment's teacher (:class:`ftcot.experiment.config.TeacherConfig`)
is this model without the fields the experiment plans itself (task, split, D, T, questions).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import field_validator, model_validator

from ftcot.settings import Compound, Settings, option, parse_args
from ftcot.teach.plan import METHODS
from ftcot.teach.reasoning import RATIONALE_SOURCES
from ftcot.teach.records import MAX_TOP_LOGPROBS

# Rationales a question at most (D, adaptive M, rationalization): the paper's most is 64; a plan of a huge D would
# be built in memory before anything is sent (10**30 hung the command), so the bound is where it enters.
MAX_SAMPLES = 1024
# Tokens a request may ask for: above any model's context (a few 10**5 today); 10**20 is a typo that a dry run
# would price as such and every request would send.
MAX_TOKENS = 1 << 20
# Values in an extra_body (merged into every request and its store key): a real one holds a handful; a YAML alias
# bomb of half a kilobyte expands to millions, and its stage key would take minutes to write.
MAX_BODY_VALUES = 10_000

Method = Literal[METHODS]  # type: ignore[valid-type]
Rationale = Literal[RATIONALE_SOURCES]  # type: ignore[valid-type]

# The backend's knobs: --teacher-args NAME=VALUE,… on the command line, keys of a teachers: entry in a config.
TEACHER_ARGS = ("base_url", "api_key_env", "chat", "prefill", "extra_body", "system_prompt", "max_tokens", "concurrency",
                "server_concurrency", "rationale", "poll_interval_s", "batch_timeout_s", "prices", "workers",
                "worker_cpus", "worker_gpus", "ray_address", "top_logprobs")


def _teacher_args(text: str) -> dict[str, Any]:
    return parse_args(text, TEACHER_ARGS)


def _adaptive(text: str) -> dict[str, Any]:
    until, sep, most = text.partition("/")
    try:
        if sep:
            return {"until_correct": int(until), "max_samples": int(most)}
    except ValueError:
        pass
    raise ValueError("expected K/M: sample each question until K correct rationales, at most M (e.g. 2/8)")


COMPOUNDS = (
    Compound("adaptive", "Adaptive sampling: sample each question in rounds until it has K correct rationales, at "
                         "most M (instead of --samples; needs --temperature > 0)", "K/M", _adaptive),
    Compound("teacher-args", "The teacher backend's settings, as a config's teachers: keys: "
                             + ", ".join(TEACHER_ARGS) + " (e.g. base_url=http://127.0.0.1:8080/v1,chat=true; "
                             "base_url=[URL1,URL2] for several servers)", "NAME=VALUE,…", _teacher_args,
             repeatable=True),
)


class TeacherChecks(Settings):
    """The rules a teacher's settings obey wherever they come from (ftcot teach, a config, the API)."""

    # check_fields=False: the fields are TeachConfig's, and those of an experiment's teacher (a subset of them).
    @field_validator("base_url", check_fields=False)
    @classmethod
    def _some_server(cls, value: Any) -> Any:
        if value is not None and not value:  # '' or []: taken as "none given", it meant OpenAI's API unsaid
            raise ValueError("names no server; give a URL (a list: one or more), or leave base_url out for "
                             "OpenAI's API")
        return value

    @field_validator("rationalize", mode="before", check_fields=False)
    @classmethod
    def _rationalize_true_is_one(cls, value: Any) -> Any:
        # The one number that takes true/false: `rationalize: true` (one hinted rationale a question) is its
        # documented spelling from before it counted; every other number refuses a boolean.
        return int(value) if isinstance(value, bool) else value

    @field_validator("max_tokens", check_fields=False)
    @classmethod
    def _tokens_bounded(cls, value: Any) -> Any:
        # Not le=MAX_TOKENS in the field: its message would turn max_tokens=0 into "in [1, 1048576]".
        if value is not None and value > MAX_TOKENS:
            raise ValueError(f"must be at most {MAX_TOKENS} (2**20, above any model's context)")
        return value

    @field_validator("extra_body", check_fields=False)
    @classmethod
    def _json_body(cls, value: Any) -> Any:
        if value is not None:
            _check_json(value, [0])
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Any:
        until, most = getattr(self, "until_correct", None), getattr(self, "max_samples", None)
        if (until is None) != (most is None):
            raise ValueError("adaptive sampling needs both until_correct and max_samples (--adaptive K/M)")
        if until is not None and most < until:
            raise ValueError(f"max_samples {most} is below until_correct {until}: a question could never have "
                             f"{until} correct rationales")
        if getattr(self, "prefill", False) and not getattr(self, "chat", False):
            raise ValueError("prefill is for chat teachers (chat=true): a completions endpoint continues the "
                             "prompt anyway")
        workers = getattr(self, "workers", 0)
        if workers and getattr(self, "batch", False):
            raise ValueError("batch does not combine with workers: the provider runs a batch, nothing is sent "
                             "from here")
        if not workers:
            for name, default in (("ray_address", None), ("worker_cpus", 1.0), ("worker_gpus", 0.0)):
                if getattr(self, name, default) != default:
                    raise ValueError(f"{name} is a setting of the teach workers: set workers (e.g. workers=2) too")
        if getattr(self, "top_logprobs", 0) and str(getattr(self, "spec", "")).startswith("replay:"):
            raise ValueError("top_logprobs: a replay: teacher returns recorded text, which has no "
                             "log-probabilities; ask a live teacher (openai:, hf:) or leave it 0")
        if until is not None and getattr(self, "batch", False):
            raise ValueError("batch does not combine with adaptive sampling: a batch sends everything at once, "
                             "adaptive sampling needs each round's answers first")
        return self


def _check_json(value: Any, count: list[int]) -> None:
    """What JSON can send: finite numbers (json.dumps writes NaN, which servers refuse or misread), text keys,
    at most MAX_BODY_VALUES values (counted as they are walked, so a huge one stops early)."""
    count[0] += 1
    if count[0] > MAX_BODY_VALUES:
        raise ValueError(f"more than {MAX_BODY_VALUES} values (YAML aliases expand); a request body is a few "
                         f"settings")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"keys must be text (got {key!r})")
            _check_json(item, count)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, count)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"numbers must be finite: JSON has no {value} (got {value})")
    elif not isinstance(value, (str, int, float, bool, type(None))):
        raise ValueError(f"must be JSON: text, numbers, true/false, null, lists and mappings (got "
                         f"{type(value).__name__} {value!r})")


class TeachConfig(TeacherChecks):
    """``ftcot teach``: ask a teacher for a task's rationales, resumably, within a budget."""

    task: str = option(help="Task key (e.g. multiarith), or your own .jsonl/.csv task file")
    spec: str = option(help="openai:MODEL, hf:MODEL_OR_PATH (an exported student too), gemma-270m, "
                            "replay:NAME_OR_PATH", flag="--teacher")
    split: Literal["train", "test", "all"] = option("train", help="train, test or all (only train becomes "
                                                                  "training data)")
    method: Method = option("zs_cot", help="zs_cot (two-stage Zero-shot-CoT), zs, fs_cot, or ft_cot (a Fine-tune-CoT "
                                           "student as the teacher, in its own format)")
    samples: int = option(1, help="Rationales per question, D (needs --temperature > 0 when > 1)", ge=1,
                          le=MAX_SAMPLES)
    temperature: float = option(0.0, help="Sampling temperature of the rationale (the paper's diverse reasoning: "
                                          "0.7)", ge=0)
    max_cost: Optional[float] = option(None, help="USD the run directory may spend in all (earlier runs, rounds "
                                                  "and rationalization included)", ge=0)
    batch: bool = option(False, help="Through the provider's Batch API (openai: teachers): half price, within 24 h; "
                                     "a stopped run resumes its batches")
    until_correct: Optional[int] = option(None, help="Adaptive sampling: sample each question until K correct "
                                                     "rationales", cli="group:adaptive", ge=1, le=MAX_SAMPLES)
    max_samples: Optional[int] = option(None, help="Adaptive sampling: at most M rationales a question",
                                        cli="group:adaptive", ge=1, le=MAX_SAMPLES)
    rationalize: int = option(0, help="Then ask N times again, with the gold answer as a hint, about training "
                                      "questions left without a correct rationale (STaR; 0: no)", ge=0,
                              le=MAX_SAMPLES)
    # --teacher-args
    base_url: Optional[Union[str, list[str]]] = option(
        None, help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1; a list: several servers of one "
                   "teacher (least loaded first; a server that dies hands its requests on)", cli="group:teacher-args")
    api_key_env: Optional[str] = option(None, help="Variable holding the API key (default OPENAI_API_KEY)",
                                        cli="group:teacher-args")
    chat: bool = option(False, help="/chat/completions instead of /completions", cli="group:teacher-args")
    prefill: bool = option(False, help="chat: end with the answer's start as an assistant message for the server "
                                       "to continue (Ollama; vLLM with extra_body continue_final_message); "
                                       "default: the trigger goes into the user turn, which every server takes",
                           cli="group:teacher-args")
    extra_body: Optional[dict[str, Any]] = option(None, help="JSON merged into every request, e.g. "
                                                             "{repeat_penalty: 1.0} for greedy llama.cpp",
                                                  cli="group:teacher-args")
    system_prompt: Optional[str] = option(None, help="System message first in every chat request",
                                          cli="group:teacher-args")
    max_tokens: Optional[int] = option(None, help="Token limit of the rationale or completion (default 128; zs 32; "
                                                  "ft_cot 256)", cli="group:teacher-args", ge=1)
    concurrency: int = option(16, help="Requests in flight at most", cli="group:teacher-args", ge=1)
    server_concurrency: Optional[int] = option(None, help="Requests in flight per server (several base_url)",
                                               cli="group:teacher-args", ge=1)
    rationale: Rationale = option("answer", help="Reasoning models: the rationale is the visible answer, the "
                                                 "reasoning, or both; changing it sends no request",
                                  cli="group:teacher-args")
    poll_interval_s: float = option(30.0, help="Seconds between batch status checks (batch)",
                                    cli="group:teacher-args", gt=0)
    batch_timeout_s: Optional[float] = option(None, help="Stop waiting for batches after this many seconds "
                                                         "(batch; they run on, and a rerun collects them)",
                                              cli="group:teacher-args", gt=0)
    prices: Optional[Path] = option(None, help="JSON price table overriding the built-in one (USD per 1M tokens)",
                                    cli="group:teacher-args")
    workers: int = option(0, help="Ray workers that send the requests, each with its own teacher (a local model or "
                                  "server per node; 0: this process); the store, budget and concurrency stay here",
                          cli="group:teacher-args", ge=0)
    worker_cpus: float = option(1.0, help="CPUs a worker holds (workers)", cli="group:teacher-args", gt=0)
    worker_gpus: float = option(0.0, help="GPUs a worker holds (workers; e.g. 1 for an hf: teacher per GPU)",
                                cli="group:teacher-args", ge=0)
    ray_address: Optional[str] = option(None, help="The Ray cluster of the workers ('auto', HOST:6379, "
                                                   "ray://HOST:10001; none: a new one on this machine)",
                                        cli="group:teacher-args")
    top_logprobs: int = option(0, help=f"Also store the K most likely tokens and their log-probabilities at every "
                                       f"completion token (1..{MAX_TOP_LOGPROBS}; 0: no), for logit distillation; "
                                       f"same store keys", cli="group:teacher-args", ge=0, le=MAX_TOP_LOGPROBS,
                               strict=True)
    answer_type: Optional[str] = option(None, help="For your own task file: number, letter, yes/no, text")
    # Not empty: [] would teach nothing and return as a finished run (None is the whole split).
    questions: Optional[list[int]] = option(None, help="Only these sample indices of the split (an experiment "
                                                       "teaches only the questions it trains on)", cli="hidden",
                                            min_length=1)

    @property
    def adaptive(self) -> bool:
        return self.until_correct is not None

    @model_validator(mode="after")
    def _sampling(self) -> TeachConfig:
        if self.adaptive and self.samples != 1:
            raise ValueError("samples is a fixed D; adaptive sampling decides D per question: give one or the other")
        if self.adaptive and self.max_samples > 1 and self.temperature <= 0:
            raise ValueError("adaptive sampling samples again where the teacher was wrong: greedy would repeat the "
                             "same rationale; sample with temperature 0.7 (the paper's)")
        if self.rationalize and self.method != "zs_cot":
            raise ValueError(f"rationalize asks Zero-shot-CoT again with a hint; method {self.method} has no "
                             f"rationale to hint: use method zs_cot")
        if self.rationalize and self.split == "test":
            raise ValueError("rationalize gives the gold answer as a hint: that is for training questions only "
                             "(split train or all), never test ones")
        return self

    def backend_options(self) -> dict[str, Any]:
        """What :func:`ftcot.teach.backends.make_teacher` takes besides the spec."""
        options: dict[str, Any] = {"base_url": self.base_url, "api_key_env": self.api_key_env, "chat": self.chat}
        if self.prefill:
            options["prefill"] = True
        if self.top_logprobs:  # only when set: a backend that cannot return them is then never asked to
            options["top_logprobs"] = self.top_logprobs
        options.update({k: v for k, v in (("extra_body", dict(self.extra_body) if self.extra_body else None),
                                          ("server_concurrency", self.server_concurrency),
                                          ("system", self.system_prompt)) if v is not None})
        return options
