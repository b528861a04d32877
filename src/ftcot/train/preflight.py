"""Checks run before any training step: each failure is one line that says what to fix.

A run that trains for hours and then cannot score its own targets, never learns
to stop, or learns from cut-off rationales is the failure these catch:

1. the row's prompt and completion are the template's layout of its parts, so
   the prompt generation will use is the one training used;
2. the scorer recovers the gold answer from every tokenized target (decoded
   back from the ids the model is trained on);
3. every target ends with the EOS id that generation stops on, and EOS does
   not occur inside a target;
4. no example exceeds the token limit (unless truncation is explicitly allowed).
"""

from __future__ import annotations

from typing import Any

from ftcot.curate.dataset import TrainingExample
from ftcot.errors import FtcotError
from ftcot.scoring import score
from ftcot.tasks.spec import TaskSpec
from ftcot.templates import Template
from ftcot.train.data import IGNORE, Tokenized, student_texts

# Sample indices quoted in an error: enough to find them, short enough for one line.
_SHOWN = 5


def _indices(items: list[int]) -> str:
    shown = ", ".join(map(str, items[:_SHOWN]))
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def check_layout(examples: list[TrainingExample], template: Template, file: str) -> None:
    bad = [e.sample_index for e in examples
           if (e.prompt, e.completion) != student_texts(e, template, encoder_decoder=False)]
    if bad:
        raise FtcotError(f"{file}: prompt/completion of {len(bad)} rows (sample_index {_indices(bad)}) differ from "
                         f"template '{template.name}' applied to their question/rationale/answer, so inference "
                         f"would not see the training format; re-curate the DATA_DIR with 'ftcot curate'.")


def check_prompt_ids(loaded: Any, examples: list[TrainingExample], tokenized: list[Tokenized],
                     template: Template, file: str) -> None:
    """The ids training sees before the completion are exactly what generation encodes."""
    bad = [e.sample_index for e, t in zip(examples, tokenized)
           if loaded.encode_prompt(student_texts(e, template, loaded.is_encoder_decoder)[0])
           != t.input_ids[:t.prompt_tokens]]
    if bad:
        raise FtcotError(f"{file}: the training prompt ids of sample_index {_indices(bad)} differ from the ids "
                         f"generation encodes; the tokenizer of '{loaded.spec}' is not prefix-stable here.")


def target_ids(item: Tokenized) -> list[int]:
    return [t for t in item.labels if t != IGNORE]


def check_scorable(loaded: Any, examples: list[TrainingExample], tokenized: list[Tokenized], spec: TaskSpec,
                   template: Template, file: str) -> None:
    eos = loaded.tokenizer.eos_token_id
    bad = []
    for example, item in zip(examples, tokenized):
        text = loaded.tokenizer.decode([t for t in target_ids(item) if t != eos], skip_special_tokens=True)
        if not score(text, example.answer, spec, template).correct:
            bad.append(example.sample_index)
    if bad:
        raise FtcotError(f"{file}: the scorer does not recover the gold answer from {len(bad)} of {len(examples)} "
                         f"tokenized targets (sample_index {_indices(bad)}); template '{template.name}' "
                         f"(answer prefix {template.answer_prefix!r}) and task '{spec.key}' must match how the "
                         f"DATA_DIR was curated.")


def check_eos(loaded: Any, examples: list[TrainingExample], tokenized: list[Tokenized], stop_ids: set[int],
              file: str) -> None:
    eos = loaded.tokenizer.eos_token_id
    if eos is None:
        raise FtcotError(f"Student '{loaded.spec}': its tokenizer has no EOS token, so it could never learn to "
                         f"stop; give the tokenizer an eos_token.")
    if eos not in stop_ids:
        raise FtcotError(f"Student '{loaded.spec}': generation stops on {sorted(stop_ids)} but targets end with "
                         f"EOS id {eos}; set generation_config.eos_token_id to include {eos}.")
    inner = [e.sample_index for e, t in zip(examples, tokenized) if eos in target_ids(t)[:-1]]
    if inner:
        raise FtcotError(f"{file}: sample_index {_indices(inner)} contain the EOS token inside the target text "
                         f"(e.g. a literal {loaded.tokenizer.eos_token!r}); remove it from those rationales.")
    lost = [e.sample_index for e, t in zip(examples, tokenized) if not t.truncated and target_ids(t)[-1:] != [eos]]
    if lost:
        raise FtcotError(f"{file}: EOS is missing after tokenization for sample_index {_indices(lost)}.")


def check_lengths(examples: list[TrainingExample], tokenized: list[Tokenized], max_length: int,
                  allow_truncation: bool, file: str) -> list[int]:
    over = [e.sample_index for e, t in zip(examples, tokenized) if t.truncated]
    if over and not allow_truncation:
        longest = max(max(t.prompt_tokens, t.target_tokens) for t in tokenized)
        raise FtcotError(f"{file}: {len(over)} of {len(examples)} examples exceed --max-length {max_length} "
                         f"(sample_index {_indices(over)}; longest side {longest} tokens) and would lose their end; "
                         f"raise --max-length or pass --allow-truncation.")
    return over
