"""What a teach run asks for: settings, requests, store keys, and the chains they form.

The executors (the request loop, :mod:`ftcot.teach.engine`; the Batch API,
:mod:`ftcot.teach.batch`), the dry run, the exporter and the report walk the
same :class:`Plan`, so the keys a run stores under are, by construction, the
keys its export and report look up. :func:`plan_requests` is the one list of
requests a run still has to send — each store key once, however many
questions need it (MultiArith has questions with the same text) — that every
executor consumes and the dry run prices; :meth:`Plan.answer_request` is the
stage-2 request a new rationale needs.

A *chain* is one sample of one question: for Zero-shot-CoT the stage-1
rationale (sample number 0..D-1) and the greedy stage-2 answer to it; for
zero-shot and Few-shot-CoT the single greedy completion; for ``ft_cot`` (a
Fine-tune-CoT student as the teacher: its own ``question ###`` prompt) the single
completion ``rationale --> answer``, sampled D times like a Zero-shot-CoT rationale.

Log-probabilities (``top_logprobs`` K > 0) change no key and no request but
what the backend is asked to return with it: the sampled text is the same
distribution with or without them, so the same key holds it, and a run that
asks for them reuses what is stored. A stored completion that lacks them (or
has a smaller K) is asked again only where its text is reproducible, a greedy
one (temperature 0: every stage-2 answer, and stage 1 at T=0); that request
fills its top-K and nothing else (the store keeps the first text, and keeps the
top-K only if the text came back the same). A sampled rationale cannot be
drawn again, so a sampled stage must ask for them in its first run, unless the
teacher scores a given text (``scores_text``: hf:, whose top-K always come from a
scoring pass over the text): every stored completion that lacks them is then
scored, sampled ones too, and nothing is generated again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ftcot.errors import FtcotError, unknown_name
from ftcot.teach.prompts import answer_prompt, few_shot_cot_prompt, reasoning_prompt, strip_hint, zero_shot_prompt
from ftcot.teach.reasoning import check_rationale_source, split_reasoning, visible_answer
from ftcot.teach.pricing import Price, estimate_tokens
from ftcot.teach.records import CompletionRequest
from ftcot.teach.store import StoredCompletion, StoredQuestion, TeachStore, request_key
from ftcot.templates import get_template

METHODS = ("zs_cot", "zs", "fs_cot", "ft_cot")
# Methods whose completion carries a rationale, so a run of them can be sampled D times and curated.
RATIONALE_METHODS = ("zs_cot", "ft_cot")
# Kojima et al.: 128 tokens for anything with a rationale, 32 for a direct answer. A Fine-tune-CoT
# student writes its rationale and answer in one completion: the budget ftcot evaluate gives it.
DEFAULT_MAX_TOKENS = {"zs_cot": 128, "zs": 32, "fs_cot": 128, "ft_cot": 256}
# Where an ft_cot completion's answer starts (the Fine-tune-CoT template's answer prefix).
FT_COT_ARROW = "-->"
ANSWER_MAX_TOKENS = 32
# A Few-shot-CoT completion that runs on would invent the next exemplar; stopping
# at the next "Q:" saves those tokens and cannot move the first "The answer is".
FS_COT_STOP = ("\nQ:",)
# Store stage names. Stage 2 of Zero-shot-CoT is "answer"; the one-stage methods
# are named after themselves.
REASONING, ANSWER = "reasoning", "answer"


@dataclass(frozen=True)
class TeachSettings:
    """Everything that decides which requests a run makes (and so its store keys)."""

    task: str
    split: str
    teacher: str
    method: str
    samples: int = 1
    temperature: float = 0.0
    max_tokens: int = 128
    answer_max_tokens: int = ANSWER_MAX_TOKENS
    trigger: str = ""
    # The Few-shot-CoT exemplar block, kept so export and report need no data directory.
    exemplars: str | None = None
    # Replay teachers answer per question: identical question texts are keyed apart.
    keyed_by_question: bool = False
    # Which part of a reasoning model's reply is the exported rationale (ftcot.teach.reasoning);
    # read when chains are read, so it changes no key and no request.
    rationale: str = "answer"
    # A user's task: its file, SHA-256 and answer type (ftcot.tasks.custom.task_source), so that curate finds
    # the file without being told again; changes no key.
    task_source: dict[str, str] | None = None
    # The top-K log-probabilities the teacher returns with each completion (0: none); changes no key, decides
    # which stored greedy completions are asked again for theirs (the module docstring).
    top_logprobs: int = 0

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not self.top_logprobs:  # only when set: the records of runs without it stay as they were
            del data["top_logprobs"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TeachSettings:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


def validate(settings: TeachSettings) -> None:
    """One-line errors for settings that would waste money or cannot work."""
    if settings.method not in METHODS:
        raise unknown_name("method", settings.method, METHODS)
    if settings.samples < 1:
        raise FtcotError(f"--samples must be at least 1 (got {settings.samples}).")
    if settings.temperature < 0:
        raise FtcotError(f"--temperature must be 0 or more (got {settings.temperature:g}).")
    if settings.max_tokens < 1:
        raise FtcotError(f"--max-tokens must be at least 1 (got {settings.max_tokens}).")
    if settings.method not in RATIONALE_METHODS and (settings.samples != 1 or settings.temperature != 0):
        raise FtcotError(f"--method {settings.method} is one greedy completion per question; "
                         f"--samples and --temperature apply to {' and '.join(RATIONALE_METHODS)} only.")
    if settings.samples > 1 and settings.temperature == 0:
        raise FtcotError(f"--samples {settings.samples} at --temperature 0 would pay {settings.samples} times "
                         f"for the same greedy rationale; sample with --temperature 0.7 (the paper's) or use --samples 1.")
    check_rationale_source(settings.rationale)
    if settings.method == "fs_cot" and not settings.exemplars:
        raise FtcotError("--method fs_cot needs Few-shot-CoT exemplars for the task.")


@dataclass(frozen=True)
class Chain:
    question: StoredQuestion
    sample_number: int
    first: StoredCompletion | None  # the rationale (zs_cot) or the only completion
    second: StoredCompletion | None  # the stage-2 answer (zs_cot only)

    @property
    def complete(self) -> bool:
        return self.first is not None and (self.second is not None or self.first.stage != REASONING)

    @property
    def answer_text(self) -> str | None:
        """The text the answer is extracted from (an ft_cot completion's part after its arrow)."""
        if self.first is None:
            return None
        if self.first.stage == REASONING:
            # What a reasoning model concluded, its think block left out (that may name other answers).
            return visible_answer(self.second.text, self.second.reasoning) if self.second is not None else None
        if self.first.stage == "ft_cot":
            return split_ft_cot(self.first.text)[1]
        return visible_answer(self.first.text, self.first.reasoning)


class Plan:
    def __init__(self, settings: TeachSettings, *, scores_text: bool = False) -> None:
        """``scores_text``: the teacher gives the top-K of a stored text (module docstring)."""
        self.settings = settings
        self.scores_text = scores_text
        self.two_stage = settings.method == "zs_cot"
        self.first_stage = REASONING if self.two_stage else settings.method
        self.stop = FS_COT_STOP if settings.method == "fs_cot" else ()

    @classmethod
    def for_teacher(cls, settings: TeachSettings, teacher: Any) -> Plan:
        """The plan of a run by ``teacher``, which may score stored text (``Teacher.scores_text``)."""
        return cls(settings, scores_text=bool(getattr(teacher, "scores_text", False)))

    # -- stage 1 (or the only stage) ------------------------------------------

    def first_prompt(self, question: str) -> str:
        method = self.settings.method
        if method == "zs_cot":
            return reasoning_prompt(question)
        if method == "zs":
            return zero_shot_prompt(question, self.settings.trigger)
        if method == "ft_cot":
            return get_template("ft_cot").format_prompt(question)
        return few_shot_cot_prompt(question, self.settings.exemplars or "")

    def sample_numbers(self) -> range:
        return range(self.settings.samples)

    def first_key(self, prompt: str, sample_number: int, question: int) -> str:
        s = self.settings
        return request_key(s.teacher, prompt, s.max_tokens, s.temperature, self.stop, sample_number,
                           self._question(question))

    def _question(self, sample_index: int) -> int | None:
        return sample_index if self.settings.keyed_by_question else None

    def first_request(self, prompt: str, sample_numbers: list[int], question: int) -> CompletionRequest:
        s = self.settings
        # Each sample its own seed (its sample number), so backends that ignore n
        # (llama.cpp) still give distinct, reproducible samples; greedy needs none.
        seed = sample_numbers[0] if s.temperature > 0 else None
        return CompletionRequest(prompt, s.max_tokens, s.temperature, len(sample_numbers), seed, self.stop,
                                 question)

    # -- stage 2 (zs_cot) -------------------------------------------------------

    def second_prompt(self, first_prompt: str, rationale: str) -> str:
        # A rationalized rationale's answer is read without the hint it was written with (prompts.HINT).
        # A reasoning model's think block is left out: stage 2 reads what it concluded, whichever
        # part the `rationale` setting exports (ftcot.teach.reasoning).
        return answer_prompt(strip_hint(first_prompt), visible_answer(rationale), self.settings.trigger)

    def answer_budget(self, rationale: StoredCompletion) -> int:
        """Stage 2's token budget: the paper's 32; for a reasoning model's chain, stage 1's, since it thinks
        again before it answers and 32 tokens ended inside its think block, with no answer at all."""
        thinks = split_reasoning(rationale.text, rationale.reasoning)[0] is not None
        s = self.settings
        return max(s.answer_max_tokens, s.max_tokens) if thinks else s.answer_max_tokens

    def second_key(self, prompt: str, question: int, budget: int) -> str:
        # Greedy, so sample number 0: identical rationales share one paid answer.
        return request_key(self.settings.teacher, prompt, budget, 0.0, (), 0, self._question(question))

    def lacks_logprobs(self, row: StoredCompletion, k: int) -> bool:
        """Whether a stored completion (with a stored top-K of ``k``, 0: none) is asked again for its top-K:
        the run wants a larger K, and its text is greedy, so the same request gives it again, or the teacher
        scores the stored text."""
        return self.settings.top_logprobs > k and (row.temperature == 0 or self.scores_text)

    def answer_request(self, rationale: StoredCompletion) -> PlannedRequest:
        """The stage-2 request a stored rationale needs (its own stage-1 prompt holds the question)."""
        second = self.second_prompt(rationale.prompt, rationale.text)
        budget = self.answer_budget(rationale)
        key = self.second_key(second, rationale.sample_index, budget)
        return PlannedRequest(CompletionRequest(second, budget, 0.0, 1, None, (), rationale.sample_index),
                              (Target(key, ANSWER, rationale.sample_index, rationale.sample_number),))

    # -- reading back -------------------------------------------------------------

    def chains(self, store: TeachStore, questions: list[StoredQuestion] | None = None) -> Iterator[Chain]:
        """Every chain of every question, complete or not, in (sample_index, sample_number) order."""
        for question in store.questions() if questions is None else questions:
            prompt = self.first_prompt(question.question)
            keys = {m: self.first_key(prompt, m, question.sample_index) for m in self.sample_numbers()}
            found = store.get_many(keys.values())
            for number, key in keys.items():
                first = found.get(key)
                second = None
                if first is not None and self.two_stage:
                    second = store.get(self.answer_request(first).key)  # the key the executors stored it under
                yield Chain(question, number, first, second)


@dataclass(frozen=True)
class Target:
    """Where one choice of a request goes in the store."""

    key: str
    stage: str
    sample_index: int
    sample_number: int


@dataclass(frozen=True)
class PlannedRequest:
    """One request to send and the store rows its choices fill (n choices: n targets, in order)."""

    request: CompletionRequest
    targets: tuple[Target, ...]
    # The keys are stored already; asked again for their top-K log-probabilities only (Plan.lacks_logprobs),
    # or their stored text scored where the teacher can: its reply adds no completion and starts no stage 2
    # (the stored rationale's answer is planned apart).
    refetch: bool = False

    @property
    def key(self) -> str:
        """The store key of its first choice: a request's identity (a batch line's ``custom_id``)."""
        return self.targets[0].key


@dataclass
class RequestPlan:
    """What a run still has to send, from what its store holds now."""

    settings: TeachSettings
    first: list[PlannedRequest]  # missing rationales (or one-stage completions)
    second: list[PlannedRequest]  # missing stage-2 answers of stored rationales
    questions: int
    chains: int  # questions × samples
    complete_chains: int  # complete in the store already
    stored: int  # completions of these chains found stored (not asked for again)
    two_stage: bool = field(default=False)

    @property
    def new_rationales(self) -> int:
        return sum(len(item.targets) for item in self.first if not item.refetch)

    @property
    def refetches(self) -> int:
        """Stored completions asked again for their top-K log-probabilities."""
        return sum(len(item.targets) for item in self.first + self.second if item.refetch)

    @property
    def requests(self) -> int:
        """Every request the run will send: these, and (two stages) one answer per new rationale.

        Exact unless two new rationales of one question come out identical (they then share one answer).
        """
        return len(self.first) + len(self.second) + (self.new_rationales if self.two_stage else 0)

    @property
    def completions(self) -> int:
        """Completions the run will receive, by the same count (a refetch's: its top-K)."""
        refetched_first = sum(len(item.targets) for item in self.first if item.refetch)
        return self.new_rationales * (2 if self.two_stage else 1) + refetched_first + len(self.second)

    def estimate(self, price: Price | None) -> tuple[int, int, float | None]:
        """(prompt tokens, completion tokens, USD) the run would spend: prompts at 4 characters a token,
        every completion at its full budget; a stage-2 prompt ≈ its rationale's prompt + a full rationale."""
        s = self.settings
        prompt_tokens = sum(estimate_tokens(item.request.prompt) for item in self.first + self.second)
        completion_tokens = sum(item.request.max_tokens * item.request.n for item in self.first) \
            + len(self.second) * s.answer_max_tokens
        if self.two_stage:
            trigger = estimate_tokens(" " + s.trigger)
            for item in self.first:
                if item.refetch:  # its answer, if missing, is in self.second already
                    continue
                prompt_tokens += len(item.targets) * (estimate_tokens(item.request.prompt) + s.max_tokens + trigger)
                completion_tokens += len(item.targets) * s.answer_max_tokens
        cost = price.cost(prompt_tokens, completion_tokens) if price is not None else None
        return prompt_tokens, completion_tokens, cost


def plan_requests(plan: Plan, questions: Sequence[Any], store: TeachStore | None, supports_n: bool,
                  skip: Collection[str] = ()) -> RequestPlan:
    """The requests ``questions`` (samples: ``index``, ``question``) still need, each store key once.

    Stage 1: with ``supports_n`` one request a question for its missing samples (``n`` = how many: the
    prompt is paid once), else one a sample with its own seed. A key two questions share (the same text)
    is asked for by the first only; the second's chain reads the same stored row. Stage 2: one request per
    distinct answer key of the stored rationales that lack one. With ``top_logprobs``, stored greedy
    completions without their top-K are asked again, or every such completion scored where the teacher
    can (``refetch``; the module docstring). Keys in ``skip``
    (in an open batch) are left out. ``store`` None: nothing is stored yet (a dry run before the first run).
    """
    first: list[PlannedRequest] = []
    second: list[PlannedRequest] = []
    planned: set[str] = set(skip)
    stored = complete = 0
    prompts = [(sample, plan.first_prompt(sample.question)) for sample in questions]
    keys = [{m: plan.first_key(prompt, m, sample.index) for m in plan.sample_numbers()} for sample, prompt in prompts]
    rationales = store.get_many(k for ks in keys for k in ks.values()) if store is not None else {}
    have = _logprobs_k(plan, store, rationales)
    answers: dict[str, PlannedRequest] = {}
    for (sample, prompt), sample_keys in zip(prompts, keys):
        missing = [m for m, key in sample_keys.items() if key not in rationales and key not in planned]
        planned.update(sample_keys[m] for m in missing)
        groups = [missing] if supports_n and len(missing) > 1 else [[m] for m in missing]
        for group in groups:
            targets = tuple(Target(sample_keys[m], plan.first_stage, sample.index, m) for m in group)
            first.append(PlannedRequest(plan.first_request(prompt, group, sample.index), targets))
        for number, key in sample_keys.items():
            if key in rationales and key not in planned and plan.lacks_logprobs(rationales[key], have.get(key, 0)):
                planned.add(key)
                target = Target(key, plan.first_stage, sample.index, number)
                first.append(PlannedRequest(plan.first_request(prompt, [number], sample.index), (target,), True))
        for key in sample_keys.values():
            if key in rationales:
                stored += 1
                if plan.two_stage:
                    answer = plan.answer_request(rationales[key])
                    answers.setdefault(answer.key, answer)
                else:
                    complete += 1
    if answers:
        found = store.get_many(answers) if store is not None else {}
        stored += len(found)
        have = _logprobs_k(plan, store, found)
        for key, answer in answers.items():
            if key in planned:
                continue
            if key not in found:
                planned.add(key)
                second.append(answer)
            elif plan.lacks_logprobs(found[key], have.get(key, 0)):
                planned.add(key)
                second.append(dataclasses.replace(answer, refetch=True))
        complete = sum(1 for sample_keys in keys for key in sample_keys.values() if key in rationales
                       and plan.answer_request(rationales[key]).key in found)
    return RequestPlan(plan.settings, first, second, len(questions), len(questions) * plan.settings.samples,
                       complete, stored, plan.two_stage)


def _logprobs_k(plan: Plan, store: TeachStore | None, rows: dict[str, StoredCompletion]) -> dict[str, int]:
    """K of the stored top-K of ``rows``' keys; read only when the run asks for log-probabilities."""
    if not plan.settings.top_logprobs or store is None or not rows:
        return {}
    return store.logprobs_k(rows)


def split_ft_cot(text: str) -> tuple[str, str]:
    """An ft_cot completion's rationale and answer part: around its last ``-->`` (no arrow: no answer)."""
    rationale, arrow, answer = text.rpartition(FT_COT_ARROW)
    return (rationale, answer) if arrow else (text, "")


def settings_of(store: TeachStore) -> TeachSettings:
    data = store.last_run()
    if data is None:
        raise FtcotError(f"{store.path.parent}: the store holds no run yet.")
    return TeachSettings.from_json(data)
