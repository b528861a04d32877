"""What each evaluation method asks the model, and which template scores the answer.

Students (``ft_cot``, ``ft``, ``ft_cot_natural``, ``ft_dss``) get the prompt
their template trained them on (as in the paper) and one greedy generation; a local
student stops at EOS, an API student (trained on completions ending in
``" END"``) at ``" END"``. A distilling step-by-step student (``ft_dss``) is
asked its label task only (``[label] question ###``) and answers like vanilla
fine-tuning, within the same budget: its rationale task is never generated.

Prompting baselines (``zs``, ``zs_cot``, ``fs_cot``) get the teacher's own
prompts, built by the same :class:`ftcot.teach.plan.Plan` the teach engine
uses, so a baseline here is byte for byte what ``ftcot teach`` would send:
``zs_cot`` is two stages (rationale, then the rationale + the task's trigger
for the answer, 32 tokens), ``fs_cot`` stops at the next ``"\\nQ:"``.
``--max-new-tokens`` sets the rationale's budget; the answer stage keeps
the teacher's 32.
"""

from __future__ import annotations

from ftcot.curate.dataset import API_STOP
from ftcot.errors import FtcotError, unknown_name
from ftcot.models.generation import GenerationRequest
from ftcot.tasks import Task
from ftcot.teach.plan import ANSWER_MAX_TOKENS, DEFAULT_MAX_TOKENS, Plan, TeachSettings
from ftcot.teach.prompts import method_exemplars
from ftcot.templates import Template, get_template

STUDENT_METHODS = ("ft_cot", "ft", "ft_cot_natural", "ft_dss")
BASELINE_METHODS = ("zs", "zs_cot", "fs_cot")
METHODS = STUDENT_METHODS + BASELINE_METHODS

# Enough for a teacher-length rationale (128 teacher tokens, and students
# trained on byte-level or smaller vocabularies need more) or a bare answer.
STUDENT_MAX_NEW_TOKENS = {"ft_cot": 256, "ft_cot_natural": 256, "ft": 16, "ft_dss": 16}
API_STUDENT_STOP = (API_STOP,)  # what curate ends an API student's completions with


def check_method(method: str) -> str:
    if method not in METHODS:
        raise unknown_name("method", method, METHODS)
    return method


def default_max_new_tokens(method: str) -> int:
    """The first (or only) stage's budget when ``--max-new-tokens`` is not given."""
    check_method(method)
    return STUDENT_MAX_NEW_TOKENS.get(method) or DEFAULT_MAX_TOKENS[method]


class EvalMethod:
    """Builds the requests of one method for one task and model kind.

    ``first_request`` is the only request of one-stage methods; for ``zs_cot``
    ``second_request`` follows with the rationale spliced in.
    """

    def __init__(self, method: str, task: Task, *, encoder_decoder: bool, api: bool,
                 max_new_tokens: int | None = None, template: Template | None = None) -> None:
        self.method = check_method(method)
        self.max_new_tokens = default_max_new_tokens(method) if max_new_tokens is None else max_new_tokens
        if self.max_new_tokens < 1:
            raise FtcotError(f"--max-new-tokens must be at least 1 (got {self.max_new_tokens}).")
        self.encoder_decoder = encoder_decoder
        self.template = template or get_template(method)
        self.is_student = method in STUDENT_METHODS
        self.two_stage = method == "zs_cot"
        self._plan: Plan | None = None
        self.stop: tuple[str, ...] = ()
        if self.is_student:
            self.stop = API_STUDENT_STOP if api else ()
        else:
            exemplars = method_exemplars(task, method)
            self._plan = Plan(TeachSettings(task=task.key, split="test", teacher="evaluate", method=method,
                                            max_tokens=self.max_new_tokens, trigger=task.spec.trigger,
                                            exemplars=exemplars))
            self.stop = self._plan.stop

    def first_prompt(self, question: str) -> str:
        if self._plan is None:
            return self.template.format_prompt(question, encoder_decoder=self.encoder_decoder)
        return self._plan.first_prompt(question)

    def first_request(self, question: str) -> GenerationRequest:
        return GenerationRequest(self.first_prompt(question), self.max_new_tokens, 0.0, None, self.stop)

    def second_request(self, first_prompt: str, rationale: str) -> GenerationRequest:
        assert self._plan is not None and self.two_stage
        return GenerationRequest(self._plan.second_prompt(first_prompt, rationale), ANSWER_MAX_TOKENS, 0.0, None, ())
