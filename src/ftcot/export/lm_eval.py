"""``ftcot export tasks [TASK...] --to DIR``: the benchmarks as an lm-evaluation-harness task directory.

DIR layout (``lm_eval --include_path DIR --tasks ftcot`` runs all of it)::

    <task>.jsonl                     the task's test split (the paper's), one question a line: sample_index,
                                     question, answer (as in the data), gold (the answer as the paper's rule
                                     compares it) and prompt_<method> for every method
    ftcot_<task>_<method>.yaml       one lm-eval task per task and method (tags ``ftcot`` and ``ftcot_<method>``)
    utils.py                         the paper's answer rule as a filter step, and exact_match (values
                                     compared as floats where the task says so); standard library only
    README.md                        what is here and how to run it

The methods are zero-shot (``zs``), Zero-shot-CoT (``zs_cot``), and the students' layouts: Fine-tune-CoT
(``ft_cot``) and vanilla fine-tuning (``ft``), decoder layout. Prompts, stop strings and token budgets are
taken from :class:`ftcot.evaluate.methods.EvalMethod` when the directory is written, so a task asks what
``ftcot evaluate --method M`` asks, byte for byte. The test split is read as ``ftcot evaluate`` reads it, in
its order, so ``--limit N`` on either side selects the same questions.

lm-eval generates once per question, so ``zs_cot`` is single-stage: the stage-1 prompt (``Q: …\\nA: Let's
think step by step.``) and its 128-token rationale, with the answer read after the task's trigger phrase if
the model wrote it (what stage 2 would read), else the last candidate of the rationale (the paper's rule
when the prefix is absent). ``ftcot evaluate --method zs_cot`` appends the trigger itself and generates the
answer in a second stage; only its rationale is the same.

``utils.py`` does not import ftcot (lm-eval may run where ftcot is not installed): it is written from a
template here, with the candidate patterns taken from :mod:`ftcot.scoring`; the tests check that it
extracts what :func:`ftcot.scoring.extract_answer` does on the recorded teacher outputs of all 12 tasks.
The data files are named by absolute path (lm-eval's ``data_files``): export again after moving DIR.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from string import Template as SourceTemplate
from typing import Any

import yaml

from ftcot.data_root import resolve_data_root
from ftcot.errors import FtcotError
from ftcot.evaluate.methods import EvalMethod
from ftcot.export.common import check_output_dir, write_atomically
from ftcot.jsonl import write_jsonl
from ftcot.paths import task_inputs
from ftcot.scoring import NUMBER_PATTERNS, TEXT_REMOVED, YES_NO_SEPARATORS, normalize_gold
from ftcot.tasks import BUILTIN_TASKS, Task, load_task
from ftcot.tasks.spec import AnswerType

# zs, zs_cot: the prompting baselines; ft_cot, ft: what students trained on (decoder layout).
EXPORTED_METHODS = ("zs", "zs_cot", "ft_cot", "ft")
GROUP = "ftcot"  # the tag every exported task carries: `--tasks ftcot` runs them all
FILTER = "paper_rule"  # lm-eval reports the metric as "exact_match,paper_rule"
UTILS = "utils.py"
README = "README.md"
SINGLE_STAGE = "zs_cot"  # the method lm-eval runs in one stage (see the module docstring)
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_]+")


@dataclass(frozen=True)
class AnswerRule:
    """The paper's answer rule for one task and method, as the exported filter takes it."""

    answer_type: str
    letters: str
    prefix: str | None  # None: first candidate; else first after it, last candidate when it is absent
    float_compare: bool


@dataclass(frozen=True)
class MethodLayout:
    """What one method asks and how its answer is read: ftcot evaluate's settings for a decoder model."""

    method: str
    until: tuple[str, ...]
    max_gen_toks: int
    rule: AnswerRule


@dataclass(frozen=True)
class TasksExport:
    to: Path
    tasks: list[str]  # lm-eval task names, in the order written
    questions: dict[str, int]  # ftcot task key -> test questions


def lm_eval_name(task: Task) -> str:
    """The task's name inside lm-eval task names and file names (a task file's stem may hold any character)."""
    return _UNSAFE_NAME.sub("_", task.key).strip("_") or "task"


def task_name(task: Task, method: str) -> str:
    return f"{GROUP}_{lm_eval_name(task)}_{method}"


def _eval_method(task: Task, method: str) -> EvalMethod:
    # A local decoder model: what `lm_eval --model hf` runs (an API student would stop at " END" instead).
    return EvalMethod(method, task, encoder_decoder=False, api=False)


def method_layout(task: Task, method: str) -> MethodLayout:
    plan = _eval_method(task, method)
    prefix = plan.template.answer_prefix
    if method == SINGLE_STAGE:
        # No second stage appends the trigger: read the answer after it where the model wrote it.
        prefix = task.spec.trigger.strip()
    rule = AnswerRule(task.spec.answer_type.value, task.spec.letters, prefix, task.spec.float_compare)
    return MethodLayout(method, tuple(plan.stop), plan.max_new_tokens, rule)


def doc_rows(task: Task) -> list[dict[str, Any]]:
    """The test split as lm-eval docs, in ftcot's order: a question's prompt for every method, the gold answer."""
    plans = {method: _eval_method(task, method) for method in EXPORTED_METHODS}
    return [{"sample_index": sample.index, "question": sample.question, "answer": sample.answer,
             "gold": normalize_gold(sample.answer, task.spec, "paper"),
             **{f"prompt_{method}": plan.first_prompt(sample.question) for method, plan in plans.items()}}
            for sample in task.split("test")]


class _Function(str):
    """A value lm-eval's YAML loader resolves to a Python object (``!function utils.NAME``)."""


class _Dumper(yaml.SafeDumper):
    """Writes :class:`_Function` values with their tag."""


_Dumper.add_representer(_Function, lambda dumper, value: dumper.represent_scalar("!function", str(value)))


def task_config(task: Task, layout: MethodLayout, data_file: Path) -> dict[str, Any]:
    """One lm-eval task: zero-shot, greedy, ftcot's prompt field, stop strings, budget and answer rule."""
    rule = layout.rule
    return {
        "task": task_name(task, layout.method),
        "tag": [GROUP, f"{GROUP}_{layout.method}"],
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "test_split": "test",
        "output_type": "generate_until",
        "num_fewshot": 0,
        "doc_to_text": f"prompt_{layout.method}",  # a field name: lm-eval passes the field as it is
        "doc_to_target": "gold",
        "generation_kwargs": {"until": list(layout.until), "do_sample": False, "max_gen_toks": layout.max_gen_toks},
        "filter_list": [{"name": FILTER, "filter": [
            {"function": _Function("utils.AnswerFilter"), "answer_type": rule.answer_type, "letters": rule.letters,
             "prefix": rule.prefix},
            {"function": "take_first"},
        ]}],
        "metric_list": [{"metric": _Function("utils.exact_match"), "aggregation": "mean", "higher_is_better": True,
                         "float_compare": rule.float_compare}],
        "metadata": {"version": 1.0},
    }


def task_yaml(task: Task, layout: MethodLayout, data_file: Path) -> str:
    header = (f"# Written by `ftcot export tasks`: {task.spec.title}, method {layout.method}, zero-shot and greedy.\n"
              f"# Prompt, stop strings and token budget are ftcot evaluate's; the answer rule is the paper's.\n")
    if layout.method == SINGLE_STAGE:
        header += ("# Single-stage: the rationale only; its answer is read after the trigger phrase where the model "
                   "wrote it,\n# else it is the rationale's last candidate (ftcot evaluate asks a second stage).\n")
    body = yaml.dump(task_config(task, layout, data_file), Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                     width=1000)
    return header + body


_UTILS_TEMPLATE = '''\
"""ftcot's answer rule (Fine-tune-CoT, Ho et al. 2023: the reasoning-teacher evaluator) for lm-evaluation-harness.

Written by `ftcot export tasks`; standard library only, so lm-eval can run without ftcot. The candidate
patterns are ftcot.scoring's; ftcot's tests check that this extracts what ftcot.scoring.extract_answer does.
"""

import re

NUMBER = re.compile($number)  # after commas are dropped
YES_NO_SEPARATORS = re.compile($yes_no)  # replaced by spaces in the lower-cased text
TEXT_REMOVED = re.compile($text)  # deleted from a text answer
TOLERANCE = 1e-6  # values compared as floats: equal within this


def candidates(text, answer_type, letters=""):
    """Every answer candidate in text, in order."""
    if answer_type == $number_type:
        return NUMBER.findall(text.replace(",", ""))
    if answer_type == $letter_type:
        return re.findall("[" + letters + "]", text)
    if answer_type == $yes_no_type:
        return [t for t in YES_NO_SEPARATORS.sub(" ", text.lower()).split(" ") if t in ("yes", "no")]
    return [TEXT_REMOVED.sub("", text)]


def extract_answer(text, answer_type, letters="", prefix=None):
    """No prefix: the first candidate. Prefix present: the first candidate after its first occurrence;
    absent: the last candidate of the whole text. "" when there is none."""
    if prefix is None:
        found = candidates(text, answer_type, letters)
        return found[0] if found else ""
    if prefix in text:
        found = candidates(text.split(prefix, 1)[1], answer_type, letters)
        return found[0] if found else ""
    found = candidates(text, answer_type, letters)
    return found[-1] if found else ""


class AnswerFilter:
    """A filter step: every response becomes the answer extracted from it."""

    def __init__(self, answer_type, letters="", prefix=None):
        self.answer_type, self.letters, self.prefix = answer_type, letters or "", prefix

    def apply(self, resps, docs):
        return [[extract_answer(r if isinstance(r, str) else "", self.answer_type, self.letters, self.prefix)
                 for r in responses] for responses in resps]


def exact_match(references, predictions, float_compare=False):
    """1.0 when the extracted answer is the gold answer (the doc's gold: already normalised), else 0.0."""
    prediction, gold = predictions[0], references[0]
    if float_compare and prediction:
        try:
            return float(abs(float(prediction) - float(gold)) <= TOLERANCE)
        except ValueError:
            return 0.0
    return float(prediction == gold)
'''


def utils_source() -> str:
    # The scorer's own candidate patterns, so the written rule cannot drift from ftcot's.
    return SourceTemplate(_UTILS_TEMPLATE).substitute(
        number=repr(NUMBER_PATTERNS["paper"].pattern), yes_no=repr(YES_NO_SEPARATORS.pattern),
        text=repr(TEXT_REMOVED.pattern), number_type=repr(AnswerType.NUMBER.value),
        letter_type=repr(AnswerType.LETTER.value), yes_no_type=repr(AnswerType.YES_NO.value))


def readme(tasks: list[Task], to: Path) -> str:
    names = ", ".join(lm_eval_name(task) for task in tasks)
    floats = ", ".join(lm_eval_name(task) for task in tasks if task.spec.float_compare) or "none of these tasks"
    paragraphs = [
        "# ftcot tasks for lm-evaluation-harness",
        (f"Written by `ftcot export tasks`: {names}; the paper's test split of each, one lm-eval task per task and "
         f"method ({', '.join(EXPORTED_METHODS)}), named `{GROUP}_<task>_<method>`."),
        f"```\nlm_eval --model hf --model_args pretrained=MODEL_DIR --include_path {to} --tasks {GROUP}\n```",
        (f"`--tasks {GROUP}_ft_cot` runs one method on every task, `--tasks {GROUP}_<task>_<method>` one task. "
         "Byte-level students (ftcot's tiny models: the tokenizer appends EOS) need `add_bos_token=False` in "
         "`--model_args`, so the prompt does not end with EOS, as in ftcot."),
        ("Greedy, zero-shot, with ftcot evaluate's prompts, stop strings and token budgets; the metric is "
         f"`exact_match,{FILTER}`: the paper's answer rule (`{UTILS}`), values compared as floats for {floats}. "
         "zs_cot is single-stage here (ftcot evaluate asks a second stage for the answer). A model whose "
         "generation_config.json sets max_new_tokens generates that many tokens whatever the task's budget "
         "(transformers lets it win)."),
        "The data files are named by absolute path: export again after moving this directory.",
    ]
    return "\n\n".join(paragraphs) + "\n"


def export_tasks(names: list[str], to: str | Path, *, data_root: str | Path | None = None,
                 answer_type: str | None = None, force: bool = False) -> TasksExport:
    """Write ``names`` (task keys or task files; none: the 12 benchmarks) to ``to`` as lm-eval tasks."""
    root = resolve_data_root(data_root)
    names = list(names) or list(BUILTIN_TASKS)
    tasks = [load_task(name, root, answer_type) for name in names]
    seen: dict[str, str] = {}
    for name, task in zip(names, tasks):
        short = lm_eval_name(task)
        if short in seen:
            raise FtcotError(f"Tasks '{seen[short]}' and '{name}' would both be exported as '{short}'; "
                             f"give each task once (rename a task file to tell them apart).")
        seen[short] = name
    # Never inside (or holding) what the export reads: the data root, a task file.
    target = check_output_dir(Path(to), [p for task in tasks for p in task_inputs(task) if p is not None], force)
    rows = {lm_eval_name(task): doc_rows(task) for task in tasks}
    for task in tasks:
        if not rows[lm_eval_name(task)]:
            raise FtcotError(f"Task '{task.key}' has no test questions; mark some rows 'split: test' (or none, for "
                             f"the paper's 70/30 split).")
    written: list[str] = []

    def fill(tmp: Path) -> None:
        (tmp / UTILS).write_text(utils_source(), encoding="utf-8")
        (tmp / README).write_text(readme(tasks, target), encoding="utf-8")
        for task in tasks:
            short = lm_eval_name(task)
            data_file = f"{short}.jsonl"
            with (tmp / data_file).open("w", encoding="utf-8") as handle:
                write_jsonl(rows[short], handle)
            for method in EXPORTED_METHODS:
                layout = method_layout(task, method)
                (tmp / f"{task_name(task, method)}.yaml").write_text(
                    task_yaml(task, layout, target / data_file), encoding="utf-8")
                written.append(task_name(task, method))

    write_atomically(target, fill)
    return TasksExport(target, written, {task.key: len(rows[lm_eval_name(task)]) for task in tasks})
