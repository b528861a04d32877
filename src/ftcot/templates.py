"""Prompting and fine-tuning templates, each declared with its answer prefix.

The answer prefix is where the scorer looks for the answer in a completion
(spec §5): Fine-tune-CoT completions end in ``--> answer``, Few-shot-CoT
completions in ``The answer is X.``; the others have none.
"""

from __future__ import annotations

from dataclasses import dataclass

from ftcot.errors import unknown_name


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    answer_prefix: str | None
    # Kojima's cleansing treats few-shot methods differently from zero-shot ones.
    few_shot: bool = False


TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in [
        Template("zs", "Zero-shot prompting", None),
        Template("zs_cot", "Zero-shot-CoT prompting (stage-2 answer)", None),
        Template("fs_cot", "Few-shot-CoT prompting", "The answer is", few_shot=True),
        Template("ft", "vanilla fine-tuned student", None),
        Template("ft_cot", "Fine-tune-CoT student", "-->"),
    ]
}


def get_template(name: str) -> Template:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise unknown_name("template", name, TEMPLATES) from None
