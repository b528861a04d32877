"""Teacher prompts (as in the paper): pure string builders, plus one loader for the exemplars.

The builders reproduce, byte for byte, the prompts of the recorded
text-davinci-002 outputs (``prompt`` and ``answer_prompt`` of every record
under ``teacher/text-davinci-002/``); tests/teach/test_prompts.py checks all
12 tasks. Whitespace is never normalised: the rationale is spliced in raw,
with its leading space or newline, exactly as the teacher produced it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ftcot.data_root import require_file
from ftcot.errors import FtcotError
from ftcot.tasks import Task

STEP_BY_STEP = "Let's think step by step."
_THEREFORE = "\nTherefore, "
FEW_SHOT_FILE = "prompts/few_shot_cot_prompts.json"


def reasoning_prompt(question: str) -> str:
    """Zero-shot-CoT stage 1: the prompt that elicits a rationale."""
    return f"Q: {question}\nA: {STEP_BY_STEP}"


def answer_prompt(stage1_prompt: str, rationale: str, trigger: str) -> str:
    """Zero-shot-CoT stage 2: stage-1 prompt + raw rationale + ``" "`` + the task's trigger."""
    return stage1_prompt + rationale + " " + trigger


# Rationalization (STaR, Zelikman et al. 2022): the teacher is asked again with the gold answer as a hint
# after the question. The hint is in the rationale's prompt only: the answer is read from a stage-2 prompt
# without it (:meth:`ftcot.teach.plan.Plan.second_prompt`), so a kept rationale reaches the answer by itself.
HINT = " (Hint: the answer is {answer}.)"
_HINT = re.compile(r" \(Hint: the answer is [^\n]*?\.\)(?=\nA: )")


def hinted_question(question: str, answer: str) -> str:
    """The question as a rationalizing teacher sees it: the gold answer given as a hint at its end."""
    return question + HINT.format(answer=answer)


def unhinted_question(question: str) -> str:
    """The question a rationalizing teacher was asked, without the hint :func:`hinted_question` added."""
    return re.sub(r" \(Hint: the answer is [^\n]*?\.\)$", "", question, count=1)


def strip_hint(prompt: str) -> str:
    """A Zero-shot-CoT stage-1 prompt without the rationalization hint (unchanged when it has none)."""
    return _HINT.sub("", prompt, count=1)


def zero_shot_trigger(trigger: str) -> str:
    """``"\\nTherefore, the answer (Yes or No) is"`` → ``"The answer (Yes or No) is"``."""
    rest = trigger.removeprefix(_THEREFORE)
    return rest[:1].upper() + rest[1:]


def zero_shot_prompt(question: str, trigger: str) -> str:
    """The no-CoT baseline: the answer trigger right after ``A:``."""
    return f"Q: {question}\nA: {zero_shot_trigger(trigger)}"


def few_shot_cot_prompt(question: str, exemplars: str) -> str:
    """Few-shot-CoT: the exemplars (``Q: …\\nA: … The answer is X.`` joined by newlines), then the question."""
    return f"{exemplars}\nQ: {question}\nA:"


def method_exemplars(task: Task, method: str) -> str | None:
    """The Few-shot-CoT exemplar block ``method`` needs for ``task`` (None for the other methods)."""
    if method != "fs_cot":
        return None
    if task.data_root is None:
        raise FtcotError(f"--method fs_cot needs Few-shot-CoT exemplars; task '{task.key}' is your own task "
                         f"and has none. Use --method zs_cot or zs.")
    return load_few_shot_exemplars(task.data_root, task.key)


def load_few_shot_exemplars(data_root: Path, task_key: str) -> str:
    """The exemplar block for ``task_key`` from the data root's few-shot prompt file."""
    path = require_file(data_root, FEW_SHOT_FILE, "Few-shot-CoT exemplars")
    table = _exemplar_table(path)
    if task_key not in table:
        available = ", ".join(sorted(table))
        raise FtcotError(f"No Few-shot-CoT exemplars for task '{task_key}' in {path} "
                         f"(available: {available}); use --method zs_cot or zs.")
    entry = table[task_key]
    text = entry.get("prompt") if isinstance(entry, dict) else entry
    if not isinstance(text, str) or not text:
        raise FtcotError(f"{path}: entry '{task_key}' has no 'prompt' string.")
    return text


def has_few_shot_exemplars(data_root: Path, task_key: str) -> bool:
    """Whether Few-shot-CoT can run on ``task_key``: False where the data root has no prompt file or the file
    no exemplars for the task (the paper has none for some); a corrupt file is an error, not a no, so that an
    experiment does not silently drop its Few-shot-CoT cells."""
    if not (data_root / FEW_SHOT_FILE).is_file():
        return False
    if task_key not in _exemplar_table(data_root / FEW_SHOT_FILE):
        return False
    load_few_shot_exemplars(data_root, task_key)  # a malformed entry: its one-line error
    return True


def _exemplar_table(path: Path) -> dict:
    try:
        with path.open(encoding="utf-8") as handle:
            table = json.load(handle)
    except json.JSONDecodeError as exc:
        raise FtcotError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}).") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FtcotError(f"{path}: cannot be read ({exc}).") from None
    if not isinstance(table, dict):
        raise FtcotError(f"{path}: expected a JSON object of task -> exemplars, got {type(table).__name__}.")
    return table
