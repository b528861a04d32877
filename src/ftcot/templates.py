"""Prompting and fine-tuning templates, each declared with its answer prefix.

Fine-tuning templates also declare how a training example is laid out for
decoder and encoder-decoder students, so training and inference share one
definition. The answer prefix is where the scorer looks for the answer in a completion
(the paper's rule): Fine-tune-CoT completions end in ``--> answer``, Few-shot-CoT
completions in ``The answer is X.``; the others have none.

Distilling step-by-step (``ft_dss``, Hsieh et al. 2023) trains two tasks behind
task prefixes: the label task (``[label] question`` → answer), which is also its
inference layout, and the rationale task (``[rationale] question`` → the
teacher's rationale), which is only trained on. Each curated example gives one
row of each (the row's ``objective``); the other templates have one task.
"""

from __future__ import annotations

from dataclasses import dataclass

from ftcot.errors import FtcotError, unknown_name

# The tasks (``TrainingExample.objective``) of a multi-task template's rows; None is a single-task row.
LABEL = "label"
RATIONALE = "rationale"
OBJECTIVES = (LABEL, RATIONALE)


@dataclass(frozen=True)
class StudentFormat:
    """How a fine-tuning template lays out one example for a student (as in the paper).

    Placeholders: ``{question}``, ``{rationale}``, ``{answer}``, each stripped of
    surrounding whitespace. The end-of-sequence token is the trainer's business.
    """

    prompt: str
    completion: str


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    answer_prefix: str | None
    # Kojima's cleansing treats few-shot methods differently from zero-shot ones.
    few_shot: bool = False
    # Fine-tuning templates: the decoder layout, and the encoder-decoder one
    # (no "###" separator, no leading space: the decoder starts fresh).
    decoder: StudentFormat | None = None
    encoder_decoder: StudentFormat | None = None
    # Multi-task templates (distilling step-by-step): the rationale task's layouts, trained on beside the
    # ones above (the label task, and the only one generation uses).
    rationale_decoder: StudentFormat | None = None
    rationale_encoder_decoder: StudentFormat | None = None

    @property
    def multi_task(self) -> bool:
        return self.rationale_decoder is not None

    @property
    def uses_rationale(self) -> bool:
        """Whether training needs the teacher's (correct) rationales."""
        return self.decoder is not None and ("{rationale}" in self.decoder.completion or self.multi_task)

    def student_format(self, encoder_decoder: bool, objective: str | None = None) -> StudentFormat:
        """The layout of one task: ``objective`` None or ``label`` is the inference layout, ``rationale``
        the rationale task of a multi-task template."""
        if objective not in (None, *OBJECTIVES):
            raise FtcotError(f"Unknown objective {objective!r}; use {LABEL} or {RATIONALE}.")
        if objective == RATIONALE:
            if not self.multi_task:
                raise FtcotError(f"Template '{self.name}' has no rationale task; only "
                                 f"{', '.join(n for n, t in TEMPLATES.items() if t.multi_task)} rows have one.")
            layout = self.rationale_encoder_decoder if encoder_decoder else self.rationale_decoder
        else:
            layout = self.encoder_decoder if encoder_decoder else self.decoder
        if layout is None:
            kind = "encoder-decoder" if encoder_decoder else "decoder"
            raise FtcotError(f"Template '{self.name}' has no {kind} student format; "
                             f"use one of: {', '.join(n for n, t in TEMPLATES.items() if t.decoder)}.")
        return layout

    def format_prompt(self, question: str, encoder_decoder: bool = False, objective: str | None = None) -> str:
        return self.student_format(encoder_decoder, objective).prompt.format(question=question.strip())

    def format_completion(self, answer: str, rationale: str = "", encoder_decoder: bool = False,
                          objective: str | None = None) -> str:
        return self.student_format(encoder_decoder, objective).completion.format(
            rationale=rationale.strip(), answer=answer.strip())


TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in [
        Template("zs", "Zero-shot prompting", None),
        Template("zs_cot", "Zero-shot-CoT prompting (stage-2 answer)", None),
        Template("fs_cot", "Few-shot-CoT prompting", "The answer is", few_shot=True),
        Template("ft", "vanilla fine-tuned student", None,
                 decoder=StudentFormat("{question} ###", " {answer}"),
                 encoder_decoder=StudentFormat("{question}", "{answer}")),
        Template("ft_cot", "Fine-tune-CoT student", "-->",
                 decoder=StudentFormat("{question} ###", " {rationale} --> {answer}"),
                 encoder_decoder=StudentFormat("{question}", "{rationale} --> {answer}")),
        # The reference's natural-language variant (decoder students only there).
        Template("ft_cot_natural", "Fine-tune-CoT student, natural-language layout", "Therefore the answer is",
                 decoder=StudentFormat("Q: {question}\n\nA: Let's think step by step.\n\n",
                                       " {rationale}\n\nTherefore the answer is {answer}"),
                 encoder_decoder=StudentFormat("Q: {question}\n\nA: Let's think step by step.",
                                               "{rationale}\n\nTherefore the answer is {answer}")),
        # Distilling step-by-step (Hsieh et al. 2023): the label task is vanilla fine-tuning's layout behind
        # the "[label]" prefix (so it answers as cheaply as ft); the rationale task, "[rationale]", outputs the
        # teacher's rationale alone (no answer: the paper's). "###" and the leading space as the others.
        Template("ft_dss", "Distilling step-by-step student (label and rationale tasks)", None,
                 decoder=StudentFormat("[label] {question} ###", " {answer}"),
                 encoder_decoder=StudentFormat("[label] {question}", "{answer}"),
                 rationale_decoder=StudentFormat("[rationale] {question} ###", " {rationale}"),
                 rationale_encoder_decoder=StudentFormat("[rationale] {question}", "{rationale}")),
    ]
}


def get_template(name: str) -> Template:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise unknown_name("template", name, TEMPLATES) from None
