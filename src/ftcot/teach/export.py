"""Export a run's complete chains as JSONL in the shared teacher format.

One object per chain (question × sample number), sorted by sample index and
sample number, with the fields of ``data/README.md`` — ``sample_index``,
``question``, ``answer``, ``prompt``, ``reasoning_completion``,
``answer_prompt``, ``answer_completion`` (the last three only for zs_cot, as in
the shared zs files; an ft_cot chain has ``reasoning_completion`` and ``answer_completion``, its one
completion split at its last ``-->``; a reasoning model's ``reasoning_completion`` is the part its
``rationale`` setting names, :mod:`ftcot.teach.reasoning`) — plus ``sample_number``, ``teacher``, ``finish_reason``
(of the rationale for zs_cot; of the only completion otherwise), ``method``
and ``split``. Incomplete chains (a stopped or failed run) are left out and
counted; a run without one complete chain is an error, not an empty file. The file is written to a temporary name and renamed, so a reader
never sees half of it.

With ``logprobs=True`` (a run with ``top_logprobs``) each record also gets
``logprobs``: per completion of the chain, by its store stage (``reasoning``
and ``answer`` for zs_cot, else the method's name), ``{"k": K, "ids" or
"tokens": [[written, top 1, …, top K], …], "logprobs": [[…], …]}`` a row per
token of that completion's stored text (before the ``rationale`` choice and the
ft_cot split), 4 decimals, ``null`` for a padded -inf; a completion stored
without them has ``null``. The default export has no such field: its records
stay the shared format's, and a top-K is bulky as JSON (llama.cpp's Gemma: ~100
bytes a token at K=5, ~350 at K=20, four times the store's). For training, read
them from the store by a record's key instead
(:meth:`ftcot.teach.store.TeachStore.top_logprobs`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftcot.errors import FtcotError
from ftcot.jsonl import write_jsonl
from ftcot.paths import atomic_file
from ftcot.teach.plan import Chain, Plan, settings_of, split_ft_cot
from ftcot.teach.reasoning import check_rationale_source, rationale_text
from ftcot.teach.records import TopLogprobs
from ftcot.teach.store import TeachStore


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    written: int
    incomplete: int


def chain_record(chain: Chain, plan: Plan) -> dict[str, Any]:
    assert chain.first is not None
    q = chain.question
    record: dict[str, Any] = {"sample_index": q.sample_index, "question": q.question, "answer": q.answer,
                              "prompt": chain.first.prompt}
    if plan.two_stage:
        assert chain.second is not None
        rationale = rationale_text(chain.first.text, chain.first.reasoning, plan.settings.rationale)
        record.update(reasoning_completion=rationale, answer_prompt=chain.second.prompt,
                      answer_completion=chain.second.text)
    elif plan.settings.method == "ft_cot":  # a Fine-tune-CoT student's one completion: rationale --> answer
        rationale, answer = split_ft_cot(chain.first.text)
        record.update(reasoning_completion=rationale, answer_completion=answer)
    else:
        record["answer_completion"] = chain.first.text
    record.update(sample_number=chain.sample_number, teacher=chain.first.teacher,
                  finish_reason=chain.first.finish_reason, method=plan.settings.method, split=q.split)
    return record


def plan_of(store: TeachStore, rationale: str | None = None) -> Plan:
    """The run's plan; ``rationale`` (answer|reasoning|both), when given, overrides the run's own."""
    settings = settings_of(store)
    if rationale is not None:
        settings = dataclasses.replace(settings, rationale=check_rationale_source(rationale))
    return Plan(settings)


def logprobs_json(top: TopLogprobs | None) -> dict[str, Any] | None:
    """A completion's top-K as JSON (the module docstring's layout)."""
    if top is None:
        return None
    values = [[_rounded(x) for x in [chosen, *row]] for chosen, row in zip(top.chosen_logprobs, top.logprobs)]
    if top.ids is not None and top.chosen_ids is not None:
        tokens: dict[str, Any] = {"ids": [[int(chosen), *map(int, row)]
                                          for chosen, row in zip(top.chosen_ids, top.ids)]}
    else:
        tokens = {"tokens": [[chosen, *row] for chosen, row in zip(top.chosen_tokens or (), top.tokens or ())]}
    return {"k": top.k, **tokens, "logprobs": values}


def _rounded(value: float) -> float | None:
    return round(float(value), 4) if value != float("-inf") else None


def chain_logprobs(chain: Chain, store: TeachStore) -> dict[str, Any]:
    """Stage → the top-K of that completion of a complete chain (None where it has none)."""
    completions = [c for c in (chain.first, chain.second) if c is not None]
    found = store.top_logprobs(c.key for c in completions)
    return {c.stage: logprobs_json(found.get(c.key)) for c in completions}


def export(store: TeachStore, out_path: Path, rationale: str | None = None, logprobs: bool = False) -> ExportSummary:
    """``rationale`` (answer|reasoning|both) overrides the run's setting for a reasoning model's chains;
    ``logprobs`` adds each record's top-K log-probabilities (module docstring)."""
    plan = plan_of(store, rationale)
    incomplete = 0

    def records():  # streamed to the file: a million-completion store is not held in memory
        nonlocal incomplete
        for chain in plan.chains(store):
            if chain.complete:
                record = chain_record(chain, plan)
                if logprobs:
                    record["logprobs"] = chain_logprobs(chain, store)
                yield record
            else:
                incomplete += 1

    out_path = Path(out_path)
    # Written whole or not at all; a folder that cannot be written is one line (paths.atomic_file).
    with atomic_file(out_path, option="--out") as handle:
        written = write_jsonl(records(), handle)
        if not written:  # an empty file would pass for a teacher that answered nothing, one step later
            raise FtcotError(f"{store.path.parent}: no complete chain to export ({incomplete} incomplete: items "
                             f"failed or the run stopped); rerun the teach command to finish them. Nothing was written.")
    return ExportSummary(out_path, written, incomplete)
