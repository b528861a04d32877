"""Import the public Zero-shot-CoT logs of Kojima et al. into the shared teacher format.

The logs (``log/<dataset>_zero_shot_cot.log`` and ``log/<dataset>_zero_shot.log``
in kojima-takeshi188/zero_shot_cot) are the stdout of its ``main.py``: a header,
then one entry per question, in the data loader's shuffled order::

    *************************
    1st data                      (absent from some logs)
    1_th_sampling                 (0_th_sampling in some)
    Q: {question}
    A: Let's think step by step.{rationale} {trigger}{answer completion}
    pred_before : {answer completion, stripped in some logs, raw in others}
    pred_after : {cleansed answer}
    pred_list : ['{cleansed answer}']
    pred_mode : {cleansed answer}
    GT : {gold answer}
    *************************

The printed text is ``answer_prompt + answer_completion`` (zero-shot logs:
``prompt + answer_completion``) with every character kept, so the raw teacher
text comes back exactly. Where the trigger occurs more than once, the split
whose remainder matches ``pred_before`` wins. Questions are matched to sample
indices by exact text; a question asked twice takes the lowest unused index
(preferring one whose gold answer equals ``GT``).

Output records are the shared teacher format (``data/README.md``): sample_index,
question, answer, prompt, [reasoning_completion, answer_prompt,] answer_completion.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftcot.errors import FtcotError, unknown_name
from ftcot.jsonl import write_jsonl
from ftcot.tasks import BUILTIN_TASKS, Task, TaskSpec, get_spec, load_task
from ftcot.teach.prompts import STEP_BY_STEP, zero_shot_trigger

# Kojima's names (in its --dataset choices and log file names) -> ftcot task keys.
KOJIMA_DATASETS = {
    "singleeq": "single_eq",
    "addsub": "addsub",
    "multiarith": "multiarith",
    "gsm8k": "gsm8k",
    "aqua": "aqua",
    "svamp": "svamp",
    "bigbench_date": "date_understanding",
    "date_understanding": "date_understanding",
    "object_tracking": "tracking_shuffled_objects",
    "shuffled_objects": "tracking_shuffled_objects",
    "last_letters": "last_letter_concatenation",
    "coin_flip": "coin_flip",
    "commonsensqa": "commonsense_qa",
    "strategyqa": "strategy_qa",
}
# The names its log files use, for rendering.
LOG_NAMES = {
    "single_eq": "singleeq", "addsub": "addsub", "multiarith": "multiarith", "gsm8k": "gsm8k", "aqua": "aqua",
    "svamp": "svamp", "date_understanding": "date_understanding", "tracking_shuffled_objects": "shuffled_objects",
    "last_letter_concatenation": "last_letters", "coin_flip": "coin_flip", "commonsense_qa": "commonsensqa",
    "strategy_qa": "strategyqa",
}
# Kojima's method names -> ftcot's template names (both spellings accepted).
METHODS = {"zero_shot_cot": "zs_cot", "zero_shot": "zs", "zs_cot": "zs_cot", "zs": "zs"}
KOJIMA_METHODS = {"zs_cot": "zero_shot_cot", "zs": "zero_shot"}

_RULE = "*" * 25
_ENTRY_START = re.compile(r"^\*{25}\n(?:\d+st data\n)?\d+_th_sampling\n", re.MULTILINE)
_PRED_BEFORE = "\npred_before : "
_PRED_AFTER = "\npred_after : "
_GT = re.compile(r"\nGT : (.*)\n")


@dataclass(frozen=True)
class LogEntry:
    number: int  # 1-based position in the log
    line: int  # line where the entry starts
    body: str  # the printed prompt + completion(s), raw
    pred_before: str
    gt: str


def parse_log(text: str, source: str = "log") -> list[LogEntry]:
    """The entries of one log, in log order; a malformed entry is a one-line error naming its line."""
    starts = list(_ENTRY_START.finditer(text))
    entries = []
    line, counted = 1, 0
    for number, match in enumerate(starts, start=1):
        end = starts[number].start() if number < len(starts) else len(text)
        chunk = text[match.end():end]
        line += text.count("\n", counted, match.start())  # counted incrementally: logs run to 10 MB
        counted = match.start()
        where = f"{source}:{line} (entry {number})"
        at_before = chunk.find(_PRED_BEFORE)
        at_after = chunk.find(_PRED_AFTER, at_before + 1) if at_before >= 0 else -1
        gt = _GT.search(chunk, at_after + 1) if at_after >= 0 else None
        if at_before < 0 or at_after < 0 or gt is None:
            raise FtcotError(f"{where}: no 'pred_before :', 'pred_after :' and 'GT :' lines after the prompt; "
                             f"this is not a Zero-shot(-CoT) log in the format of Kojima's main.py.")
        entries.append(LogEntry(number, line, chunk[:at_before], chunk[at_before + len(_PRED_BEFORE):at_after],
                                gt.group(1)))
    if not entries:
        raise FtcotError(f"{source}: no entries ('{_RULE}' then '1_th_sampling') found; "
                         f"give a log/<dataset>_zero_shot_cot.log file of kojima-takeshi188/zero_shot_cot.")
    return entries


def import_log(log_path: str | Path, task: str | Task, method: str = "zs_cot",
               data_root: str | Path | None = None, _used: set[int] | None = None) -> list[dict[str, Any]]:
    """Records in the shared teacher format, sorted by sample index."""
    path = Path(log_path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FtcotError(f"{path}: cannot read ({exc.strerror}).") from None
    return records_from_log(text, task, method, data_root, source=str(path), _used=_used)


def records_from_log(text: str, task: str | Task, method: str = "zs_cot", data_root: str | Path | None = None,
                     source: str = "log", _used: set[int] | None = None) -> list[dict[str, Any]]:
    method = _method(method)
    task = task if isinstance(task, Task) else load_task(task, data_root)
    trigger = task.spec.trigger
    answer_marker = "\nA: " + (STEP_BY_STEP if method == "zs_cot" else zero_shot_trigger(trigger))
    by_question: dict[str, list[int]] = {}
    for index in sorted(task.samples):
        by_question.setdefault(task.samples[index].question, []).append(index)
    used = _used if _used is not None else set()

    records = []
    for entry in parse_log(text, source):
        where = f"{source}:{entry.line} (entry {entry.number})"
        cut = entry.body.find(answer_marker)
        if not entry.body.startswith("Q: ") or cut < 0:
            raise FtcotError(f"{where}: expected 'Q: …{answer_marker!r}'; is this a {KOJIMA_METHODS[method]} "
                             f"log of task '{task.key}'? (check --task and --method)")
        question = entry.body[3:cut]
        index = _match(by_question, question, entry.gt, task, used, where)
        sample = task.samples[index]
        prompt = entry.body[:cut + len(answer_marker)]
        record: dict[str, Any] = {"sample_index": index, "question": sample.question, "answer": sample.answer,
                                  "prompt": prompt}
        rest = entry.body[len(prompt):]
        if method == "zs_cot":
            split = _split_answer(rest, " " + trigger, entry.pred_before)
            if split is None:
                raise FtcotError(f"{where}: the answer trigger {trigger!r} is missing after the rationale; "
                                 f"is this a log of task '{task.key}'? (check --task)")
            rationale, answer_completion = split
            record["reasoning_completion"] = rationale
            record["answer_prompt"] = prompt + rationale + " " + trigger
            record["answer_completion"] = answer_completion
        else:
            record["answer_completion"] = rest
        records.append(record)
    return sorted(records, key=lambda r: r["sample_index"])


def _match(by_question: dict[str, list[int]], question: str, gt: str, task: Task, used: set[int],
           where: str) -> int:
    indices = by_question.get(question)
    if not indices:
        preview = question[:60] + ("…" if len(question) > 60 else "")
        raise FtcotError(f"{where}: question {preview!r} is not in task '{task.key}'; "
                         f"check --task (and that the data root holds that task's raw files).")
    free = [i for i in indices if i not in used]
    if not free:
        raise FtcotError(f"{where}: question asked more often than task '{task.key}' holds it "
                         f"({len(indices)}x); the log repeats an entry (drop the duplicate run).")
    same_gold = [i for i in free if _same_answer(task.samples[i].answer, gt)]
    index = (same_gold or free)[0]
    used.add(index)
    return index


def _same_answer(gold: str, gt: str) -> bool:
    a, b = gold.strip(), gt.strip()
    return a == b or a.replace(",", "").lower() == b.replace(",", "").lower()


def _split_answer(rest: str, sep: str, pred_before: str) -> tuple[str, str] | None:
    """(rationale, answer completion) from ``rationale + sep + completion``.

    The rationale may itself contain the trigger; the split whose completion
    matches the logged ``pred_before`` is the real one (else the last one).
    """
    positions = [m.start() for m in re.finditer(re.escape(sep), rest)]
    if not positions:
        return None
    wanted = pred_before.strip()
    chosen = next((p for p in positions if rest[p + len(sep):].strip() == wanted), positions[-1])
    return rest[:chosen], rest[chosen + len(sep):]


def render_log(records: Iterable[dict[str, Any]], task: str | TaskSpec | None = None,
               model: str = "gpt3-xl") -> str:
    """A log in the format of Kojima's main.py from shared-format records, in their order.

    ``task`` (a key or spec) fixes the answer cleansing of the ``pred_after``
    lines and the dataset name in the header; without it both follow the
    records' answer trigger.
    """
    from ftcot.scoring import extract_answer

    records = list(records)
    if not records:
        raise FtcotError("render_log: no records to render.")
    method = "zs_cot" if "reasoning_completion" in records[0] else "zs"
    spec = get_spec(task) if isinstance(task, str) else task
    spec = spec or _spec_for_trigger(_trigger_of(records[0], method))
    dataset = LOG_NAMES.get(spec.key, spec.key) if task is not None else "unknown"
    lines = [
        "*" * 29,
        f"Namespace(dataset='{dataset}', method='{KOJIMA_METHODS[method]}', model='{model}')",
        "*" * 29,
        f"data size : {len(records)}",
    ]
    correct = 0
    for number, record in enumerate(records, start=1):
        completion = record["answer_completion"]
        shown = (record["answer_prompt"] if method == "zs_cot" else record["prompt"]) + completion
        pred = extract_answer(completion, spec, method, rule="kojima")
        correct += pred == record["answer"].strip()
        lines += [_RULE, f"{number}st data", "1_th_sampling", shown,
                  f"pred_before : {completion.strip()}", f"pred_after : {pred}", f"pred_list : {[pred]!r}",
                  f"pred_mode : {pred}", f"GT : {record['answer']}", _RULE]
    lines.append(f"accuracy : {(correct * 1.0 / len(records)) * 100}")  # main.py's formula, digit for digit
    return "\n".join(lines) + "\n"


def _trigger_of(record: dict[str, Any], method: str) -> str:
    if method == "zs_cot":
        return record["answer_prompt"][len(record["prompt"]) + len(record["reasoning_completion"]) + 1:]
    return "\nTherefore, " + record["prompt"].rsplit("\nA: ", 1)[1].lower()


def _spec_for_trigger(trigger: str) -> TaskSpec:
    # Tasks sharing a trigger share the answer type and letters, so any of them cleanses alike.
    for spec in BUILTIN_TASKS.values():
        if spec.trigger.lower() == trigger.lower():
            return spec
    raise FtcotError(f"render_log: answer trigger {trigger!r} matches no built-in task; pass task=.")


def guess_task_and_method(path: str | Path) -> tuple[str, str]:
    """``multiarith_zero_shot_cot.log`` -> ("multiarith", "zs_cot"), from Kojima's file names."""
    stem = Path(path).name.removesuffix(".log")
    for suffix, method in (("_zero_shot_cot", "zs_cot"), ("_zero_shot", "zs")):
        if stem.endswith(suffix):
            name = stem.removesuffix(suffix)
            if name in KOJIMA_DATASETS:
                return KOJIMA_DATASETS[name], method
            if name in BUILTIN_TASKS:
                return name, method
            raise unknown_name("Zero-shot-CoT log dataset", name, KOJIMA_DATASETS)
    raise FtcotError(f"{path}: cannot tell task and method from the name (expected <dataset>_zero_shot_cot.log "
                     f"or <dataset>_zero_shot.log); pass --task and --method.")


def import_logs(paths: Sequence[str | Path], task: str | Task | None, method: str | None,
                out_path: str | Path, data_root: str | Path | None = None) -> int:
    """Import one or more logs of one task and method into one JSONL file; returns the record count.

    ``task``/``method`` left as ``None`` are read from the first file's name.
    Several files (a run split over restarts) are matched together, so a
    sample is never claimed twice. The output is written whole, then renamed
    into place.
    """
    if not paths:
        raise FtcotError("No log files given; pass one or more log/<dataset>_zero_shot_cot.log files.")
    if task is None or method is None:
        guessed_task, guessed_method = guess_task_and_method(paths[0])
        task = task if task is not None else guessed_task
        method = method if method is not None else guessed_method
    loaded = task if isinstance(task, Task) else load_task(task, data_root)
    used: set[int] = set()
    records: list[dict[str, Any]] = []
    for path in paths:
        records += import_log(path, loaded, method, _used=used)
    records.sort(key=lambda r: r["sample_index"])
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            write_jsonl(records, handle)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return len(records)


def _method(method: str) -> str:
    try:
        return METHODS[method]
    except KeyError:
        raise unknown_name("method", method, METHODS) from None
