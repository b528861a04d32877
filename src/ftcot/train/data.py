"""A DATA_DIR read and tokenized once, length-grouped batches, and a collator that only pads.

Each example is tokenized exactly once, into the ids the model sees and the
labels it is trained on (as in the paper: loss on the completion only):

- decoder students: ``prompt ids`` (``LoadedModel.encode_prompt``: BOS where the
  model uses one — the ids generation will see) + ``completion ids`` + EOS;
  labels are ``-100`` on the prompt positions.
- encoder-decoder students: the template's encoder-decoder layout, re-formatted
  from the row's question / rationale / answer; encoder input = the prompt ids
  (EOS kept), labels = completion ids + EOS.

Distilling step-by-step (multi-task templates, ``ft_dss``): each row is one
task's (its ``objective``: label or rationale) and is laid out by that task's
format. The loss is ``(L_label + λ·L_rationale) / (1 + λ)``, each task's loss
the mean cross-entropy over that task's target tokens (the paper's: a mean per
task, so the long rationales do not drown the short labels). Rows carry it as
a per-token weight (:func:`weigh_tasks`, from the set's token counts) and an
update divides by its rows instead of its tokens, so the weighting holds
whether a batch mixes the tasks or length grouping puts each in its own.

Batches group similar lengths (a shuffled window of batches, each window sorted
by length, batch order shuffled) so that padding stays small; the pilot lost
15–21% of its tokens to padding without grouping.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ftcot.curate.dataset import TrainingExample, read_examples
from ftcot.errors import FtcotError
from ftcot.jsonl import read_json_object
from ftcot.templates import LABEL, OBJECTIVES, RATIONALE, Template, get_template

IGNORE = -100
# Batches sorted together: large enough to group lengths, small enough to keep epochs random.
GROUP_WINDOW = 32


@dataclass(frozen=True)
class DataDir:
    path: Path
    train: list[TrainingExample]
    val: list[TrainingExample]
    template: Template
    task: str
    task_source: dict | None = None  # a user's task: its file, SHA-256 and answer type (tasks/custom.py)


def read_data_dir(path: Path) -> DataDir:
    path = Path(path)
    if path.exists() and not path.is_dir():  # not "does not exist": curate --out there would fail in turn
        raise FtcotError(f"DATA_DIR '{path}' is a file; give the directory 'ftcot curate --out' wrote.")
    if not path.is_dir():
        raise FtcotError(f"DATA_DIR '{path}' does not exist; create it with: ftcot curate … --out {path}")
    curation = path / "curation.json"
    if not curation.is_file():
        raise FtcotError(f"{curation}: missing; DATA_DIR must be written by 'ftcot curate'.")
    summary = read_json_object(curation, "rerun 'ftcot curate'")
    for key in ("template", "task"):
        if not isinstance(summary.get(key), str) or not summary[key]:
            raise FtcotError(f"{curation}: missing field '{key}'; rerun 'ftcot curate'.")
    template = get_template(summary["template"])
    train = read_examples(path / "train.jsonl")
    if not train:
        raise FtcotError(f"{path / 'train.jsonl'}: no examples; curate a task with correct teacher rationales.")
    val = read_examples(path / "val.jsonl") if (path / "val.jsonl").is_file() else []
    if not val:
        raise FtcotError(f"{path / 'val.jsonl'}: no validation examples; curate with --val-fraction above 0.")
    for name, rows in (("train.jsonl", train), ("val.jsonl", val)):
        check_objectives(rows, template, path / name)
    source = summary.get("task_source")
    return DataDir(path, train, val, template, summary["task"], source if isinstance(source, dict) else None)


def check_objectives(rows: list[TrainingExample], template: Template, file: Path) -> None:
    """Each row's task is one its template has, and the file has rows of the task generation uses."""
    allowed = (None, *OBJECTIVES) if template.multi_task else (None,)
    bad = next((e for e in rows if e.objective not in allowed), None)
    if bad is not None:
        tasks = f"the tasks {', '.join(OBJECTIVES)}" if template.multi_task else "one task (no objective)"
        raise FtcotError(f"{file}: sample_index {bad.sample_index} has objective {bad.objective!r}; template "
                         f"'{template.name}' has {tasks}. Re-curate the DATA_DIR with 'ftcot curate'.")
    if all(e.objective == RATIONALE for e in rows):
        raise FtcotError(f"{file}: only rationale rows; the label task (what the student answers with) needs rows "
                         f"too. Re-curate the DATA_DIR with 'ftcot curate --template {template.name}'.")


@dataclass(frozen=True)
class Tokenized:
    """One example as the model sees it. ``input_ids``: decoder sequence or encoder input."""

    input_ids: list[int]
    labels: list[int]
    prompt_tokens: int
    sample_index: int
    encoder_decoder: bool
    truncated: bool = False
    objective: str | None = None  # a multi-task template's task (label or rationale); None: single-task
    # The loss weight of each target token (multi-task rows, set by weigh_tasks); None: unweighted.
    loss_weight: float | None = None
    # Logit distillation (--kd-weight): the teacher's top-K at label positions, (positions, ids, logprobs)
    # with ids and logprobs (len(positions), K) (ftcot.train.distill.attach_teacher); None: none.
    kd: tuple[list[int], list[list[int]], list[list[float]]] | None = None

    @property
    def target_tokens(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE)

    @property
    def loss_units(self) -> float:
        """What an update's summed loss is divided by, summed over its rows: target tokens (a token mean),
        or one per weighted row (the weights already hold each task's per-token mean)."""
        return self.target_tokens if self.loss_weight is None else 1.0

    @property
    def generated(self) -> bool:
        """Whether generation answers with this row's layout (the rationale task is only trained on)."""
        return self.objective != RATIONALE

    @property
    def tokens(self) -> int:
        """Non-pad tokens the model processes: the decoder sequence, or encoder input + decoder input."""
        return len(self.input_ids) + (len(self.labels) if self.encoder_decoder else 0)


def student_texts(example: TrainingExample, template: Template, encoder_decoder: bool) -> tuple[str, str]:
    """(prompt, completion) in the student's layout of the row's task, from the row's parts (one definition:
    the template's)."""
    return (template.format_prompt(example.question, encoder_decoder=encoder_decoder, objective=example.objective),
            template.format_completion(example.answer, example.rationale, encoder_decoder=encoder_decoder,
                                       objective=example.objective))


def weigh_tasks(items: list[Tokenized], rationale_weight: float | None) -> list[Tokenized]:
    """Multi-task rows with their per-token loss weights; rows of a single-task template unchanged.

    Task ``t`` (weight 1 for the label task, ``rationale_weight`` = λ, default 1, for the rationale task)
    gets ``weight_t · rows / (W · tokens_t)`` per target token, ``tokens_t`` its target tokens in
    ``items`` and ``W`` the summed weight of the tasks present. Summed over ``items`` and divided by
    their rows, the loss is then ``Σ_t weight_t · mean_t / W``: ``(L_label + λ·L_rationale) / (1 + λ)``.
    """
    if all(t.objective is None for t in items):
        return items
    weight = {LABEL: 1.0, RATIONALE: 1.0 if rationale_weight is None else float(rationale_weight)}
    tokens = {task: sum(t.target_tokens for t in items if (t.objective or LABEL) == task) for task in OBJECTIVES}
    present = sum(weight[task] for task in OBJECTIVES if tokens[task])
    per_token = {task: weight[task] * len(items) / (present * tokens[task]) if tokens[task] else 0.0
                 for task in OBJECTIVES}
    return [replace(t, loss_weight=per_token[t.objective or LABEL]) for t in items]


def tokenize(loaded: Any, example: TrainingExample, template: Template, max_length: int,
             truncate: bool = False) -> Tokenized:
    tokenizer = loaded.tokenizer
    eos = tokenizer.eos_token_id
    prompt, completion = student_texts(example, template, loaded.is_encoder_decoder)
    prompt_ids = loaded.encode_prompt(prompt)
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + ([eos] if eos is not None else [])
    # The paper's limit is per side: 512 input and 512 target tokens, for both kinds of student.
    over = len(prompt_ids) > max_length or len(completion_ids) > max_length
    if loaded.is_encoder_decoder:
        if over and truncate:
            prompt_ids, completion_ids = prompt_ids[:max_length], completion_ids[:max_length]
        return Tokenized(prompt_ids, completion_ids, len(prompt_ids), example.sample_index, True, over,
                         example.objective)
    # A decoder also reads both sides in one window of its positions.
    positions = loaded.max_positions or 2 * max_length
    over = over or len(prompt_ids) + len(completion_ids) > positions
    if over and truncate:
        prompt_ids, completion_ids = prompt_ids[:max_length], completion_ids[:max_length]
    ids = (prompt_ids + completion_ids)[:positions]
    labels = [IGNORE] * len(prompt_ids) + ids[len(prompt_ids):]
    return Tokenized(ids, labels[:len(ids)], len(prompt_ids), example.sample_index, False, over, example.objective)


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The epoch's batches (lists of example indices), a pure function of (seed, epoch).

    Every process computes the same list, so each can take its own rows of every
    batch and a resumed run replays exactly the batches of an uninterrupted one.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * GROUP_WINDOW
    batches = []
    for start in range(0, len(order), window):
        group = sorted(order[start:start + window], key=lambda i: lengths[i], reverse=True)
        batches += [group[i:i + batch_size] for i in range(0, len(group), batch_size)]
    rng.shuffle(batches)
    return batches


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def collate(examples: list[Tokenized], pad_id: int, encoder_decoder: bool, multiple: int = 1) -> dict[str, Any]:
    """Pad to the batch's longest member, rounded up to ``multiple`` (right side); masks were fixed at tokenization.

    Weighted rows (:func:`weigh_tasks`) add ``loss_weights``, each row's weight on its label positions; rows
    with the teacher's top-K (``kd``) add ``teacher_ids`` / ``teacher_logprobs``, (rows, label width, K) at
    their label positions (-1 / -inf elsewhere).
    """
    import torch

    width = _round_up(max(len(e.input_ids) for e in examples), multiple)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    label_width = width if not encoder_decoder else _round_up(max(len(e.labels) for e in examples), multiple)
    labels = torch.full((len(examples), label_width), IGNORE, dtype=torch.long)
    for row, e in enumerate(examples):
        input_ids[row, :len(e.input_ids)] = torch.tensor(e.input_ids)
        attention[row, :len(e.input_ids)] = 1
        labels[row, :len(e.labels)] = torch.tensor(e.labels)
    batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
    if any(e.loss_weight is not None for e in examples):
        batch["loss_weights"] = torch.tensor([1.0 if e.loss_weight is None else e.loss_weight for e in examples],
                                             dtype=torch.float32)[:, None].expand(labels.shape).contiguous()
    k = max((len(e.kd[1][0]) for e in examples if e.kd is not None and e.kd[1]), default=0)
    if k:
        ids = torch.full((*labels.shape, k), -1, dtype=torch.long)
        logprobs = torch.full((*labels.shape, k), float("-inf"), dtype=torch.float32)
        for row, e in enumerate(examples):
            if e.kd is None or not e.kd[0]:
                continue
            positions, top_ids, top_logprobs = e.kd
            keep = [i for i, p in enumerate(positions) if p < label_width]
            at = torch.tensor([positions[i] for i in keep], dtype=torch.long)
            width = len(top_ids[0])
            ids[row, at, :width] = torch.tensor([top_ids[i] for i in keep], dtype=torch.long)
            logprobs[row, at, :width] = torch.tensor([top_logprobs[i] for i in keep], dtype=torch.float32)
        batch["teacher_ids"], batch["teacher_logprobs"] = ids, logprobs
    return batch
