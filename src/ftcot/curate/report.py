"""Curation beyond the paper: decontamination and quality filters wired into ``curate``, and its report.

The pieces ``curate`` calls (each a small function of plain data):

- :func:`settings` builds the :class:`QualityFilters` and :class:`Decontamination`
  from the options of ``ftcot curate`` (and the ``curate:`` settings of a run);
- :func:`decontaminate_questions` checks the training questions against the test
  questions and, in ``drop`` mode, removes the flagged ones with their records;
- :class:`FilterProbe` is ``select_rationales``' ``reject``: it counts what every
  filter flags among the correct rationales (on or off) and drops by those on;
- :func:`report` is what ``curation.json`` adds: rationales, filter counts, the
  yield histogram and the contamination found.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftcot.curate.decontaminate import Decontamination, Flag, summarize
from ftcot.curate.filters import QualityFilters
from ftcot.curate.labels import check_label_mode

CONTAMINATED = "test contamination"

def settings(data_root: Path | None = None, **options: Any) -> dict[str, Any]:
    """``filters``, ``decontamination``, ``label``, ``min_votes`` and ``rationalized`` for
    :func:`ftcot.curate.curate`, from curate settings by their names (the rest at
    :class:`~ftcot.curate.config.CurateConfig`'s defaults)."""
    from ftcot.curate.config import CurateConfig
    from ftcot.settings import build

    value = build(CurateConfig, {k: v for k, v in options.items() if v is not None})
    filters = QualityFilters(truncated=value.drop_truncated, repetitive=value.drop_repetitive,
                             no_reasoning=value.drop_no_reasoning, min_words=value.min_rationale_words,
                             token_limit=value.teacher_token_limit)
    decontamination = Decontamination(value.decontaminate, value.decontaminate_ngram,
                                      tuple(str(p) for p in value.decontaminate_against), data_root,
                                      value.decontaminate_max_df, value.decontaminate_min_overlap)
    return {"filters": filters, "decontamination": decontamination, "label": check_label_mode(value.label),
            "min_votes": value.min_votes, "rationalized": value.rationalized}


def decontaminate_questions(decontamination: Decontamination | None, task, train_indices: list[int],
                            scheme: str, records: Iterable[dict]) -> tuple[list[int], list[dict], list[Flag], Counter]:
    """The training questions and records left, the flagged pairs, and the records dropped (``drop`` mode)."""
    records = list(records)
    if decontamination is None or decontamination.mode == "off":
        return train_indices, records, [], Counter()
    flags = decontamination.check(task, train_indices, scheme)
    if decontamination.mode != "drop" or not flags:
        return train_indices, records, flags, Counter()
    flagged = {f.train_index for f in flags}
    dropped = Counter({CONTAMINATED: sum(r["sample_index"] in flagged for r in records)})
    return ([i for i in train_indices if i not in flagged], [r for r in records if r["sample_index"] not in flagged],
            flags, +dropped)


@dataclass
class FilterProbe:
    """``select_rationales``' ``reject``: counts every filter's flags, drops by the filters that are on."""
    filters: QualityFilters = field(default_factory=lambda: QualityFilters())
    flagged: Counter = field(default_factory=Counter)
    checked: int = 0

    def __call__(self, record: dict) -> str | None:
        self.checked += 1
        self.flagged.update(self.filters.flags(record))
        return self.filters.reject(record)


def report(task, train_indices: list[int], records: list[dict], examples: list, probe: FilterProbe,
           flags: list[Flag], decontamination: Decontamination | None) -> dict[str, Any]:
    """What curation.json adds to the paper's counts (the report of issue 11)."""
    train = set(train_indices)
    per_question = Counter(e.sample_index for e in examples)
    histogram = Counter(per_question.get(i, 0) for i in train)
    block = {
        "rationales": sum(r["sample_index"] in train for r in records),
        "filters": {**probe.filters.to_json(), "checked": probe.checked,
                    "flagged": {name: probe.flagged.get(name, 0) for name in ("truncated", "repetitive",
                                                                               "no_reasoning")}},
        "yield_histogram": {str(k): histogram[k] for k in sorted(histogram)},
    }
    if decontamination is None or decontamination.mode == "off":
        block["contamination"] = {"mode": "off"}
    else:
        block["contamination"] = summarize(flags, decontamination.mode, decontamination.n,
                                           list(decontamination.against), decontamination.min_overlap,
                                           decontamination.not_checked(task))
    return block


def table_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The report's rows for ``ftcot curate``'s summary table (label, value)."""
    rows = [("teacher rationales", str(summary.get("rationales", 0)))]
    filters = summary.get("filters") or {}
    for name, count in (filters.get("flagged") or {}).items():
        rows.append((f"flagged {name} (filter {'on' if filters.get(name) else 'off'})", str(count)))
    histogram = summary.get("yield_histogram") or {}
    if histogram:
        rows.append(("questions by examples", ", ".join(f"{k}: {v}" for k, v in histogram.items())))
    votes = summary.get("pseudo_labels") or {}
    if votes.get("questions"):
        right = (f"; right on {votes['majority_correct']} of {votes['labelled_with_gold']} with gold "
                 f"({100 * votes['majority_accuracy']:.1f}%)" if votes.get("majority_accuracy") is not None else "")
        agreement = f", agreement {100 * votes['agreement']:.1f}%" if votes.get("agreement") is not None else ""
        rows.append((f"majority answers (--label {votes['label']})",
                     f"{votes['labelled']} of {votes['questions']} questions{agreement}{right}"))
    rationalized = summary.get("rationalized") or {}
    if rationalized.get("records"):
        rows.append(("rationalized (hinted) rationales" + ("" if rationalized["used"] else ", left out"),
                     f"{rationalized['kept']} kept of {rationalized['records']}, for "
                     f"{rationalized['questions']} questions"))
    contamination = summary.get("contamination") or {}
    if contamination.get("mode", "off") != "off":
        per_task = ", ".join(f"{k} {v}" for k, v in contamination["per_test_task"].items()) or "none"
        rows.append((f"overlap test ({contamination['mode']})",
                     f"{contamination['flagged_questions']} ({per_task})"))
        missing = contamination.get("benchmarks_not_checked") or []
        if missing:
            rows.append(("benchmarks not on disk, not checked", f"{len(missing)}: {', '.join(missing)}"))
    return rows


def contamination_lines(summary: dict[str, Any], examples: int = 3) -> list[str]:
    """A warning and a few flagged pairs when training questions overlap test questions."""
    contamination = summary.get("contamination") or {}
    if not contamination.get("flagged_questions"):
        return []
    action = "dropped" if contamination["mode"] == "drop" else "kept (--decontaminate drop removes them)"
    lines = [f"warning: {contamination['flagged_questions']} training questions of {summary['task']} overlap test "
             f"questions ({contamination['pairs']} pairs; {action}); every pair is in contamination.jsonl"]
    for flag in contamination["flags"][:examples]:
        why = f"13-gram '{flag['ngram']}'" if flag["rule"] == "ngram" else "same text"
        why = why.replace("13-", f"{contamination['ngram']}-")
        lines.append(f"  train {flag['task']}[{flag['train_index']}] ~ test {flag['test_task']}[{flag['test_index']}]: "
                     f"{why}")
    return lines
