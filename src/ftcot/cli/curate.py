"""``ftcot curate``: turn teacher rationales into a student's training data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from ftcot.cli.options import DataDir, data_root_option
from ftcot.curate import curate
from ftcot.curate.dataset import write_data_dir
from ftcot.curate.report import contamination_lines, settings, table_rows
from ftcot.curate.sources import load_teacher_records
from ftcot.data_root import resolve_data_root
from ftcot.errors import FtcotError
from ftcot.paths import check_output, task_inputs
from ftcot.tasks import load_task
from ftcot.templates import get_template


def curate_command(
    source: Annotated[Optional[Path], typer.Argument(
        help="A teach RUN_DIR, or a JSONL of teacher records (shared format). Not needed for --template ft.")] = None,
    out: Annotated[Path, typer.Option(help="DATA_DIR to write")] = Path("data"),
    template: Annotated[str, typer.Option(
        help="ft_cot, ft, ft_cot_natural or ft_dss (distilling step-by-step: a label and a rationale row per "
             "correct rationale)")] = "ft_cot",
    task: Annotated[Optional[str], typer.Option(help="Task key or file (default: the RUN_DIR's task)")] = None,
    answer_type: Annotated[Optional[str], typer.Option(help="For your own task file")] = None,
    max_per_question: Annotated[Optional[int], typer.Option(help="Keep at most D correct rationales a question")] = None,
    max_rationale_tokens: Annotated[Optional[int], typer.Option(help="Drop longer rationales")] = None,
    val_fraction: Annotated[float, typer.Option(help="Share of training questions held out for validation")] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed of the validation slice")] = 0,
    split_scheme: Annotated[str, typer.Option(help="default or template")] = "default",
    decontaminate: Annotated[str, typer.Option(
        help="Training questions that overlap a test question (the 12 benchmarks', --decontaminate-against): "
             "warn, drop or off")] = "warn",
    decontaminate_against: Annotated[Optional[list[Path]], typer.Option(
        help="Another test set to check against: JSONL or CSV with a 'question' column (repeatable)")] = None,
    decontaminate_ngram: Annotated[int, typer.Option(help="Word n-gram length of the overlap rule (13; open-r1: 8)")] = 13,
    decontaminate_max_df: Annotated[int, typer.Option(
        help="Ignore n-grams found in more test questions than this (a benchmark's template text)")] = 10,
    decontaminate_min_overlap: Annotated[float, typer.Option(
        help="Flag a pair only when the training question has this share of the test question's distinctive "
             "n-grams (0: any one; 0.9: near-copies, not a generated benchmark's shared template)")] = 0.0,
    drop_truncated: Annotated[bool, typer.Option(help="Drop rationales cut at the teacher's token limit")] = False,
    drop_repetitive: Annotated[bool, typer.Option(help="Drop rationales that loop (degenerate repetition)")] = False,
    drop_no_reasoning: Annotated[bool, typer.Option(
        help="Drop rationales that only state the answer (under --min-rationale-words words)")] = True,
    min_rationale_words: Annotated[int, typer.Option(help="Words a rationale needs (--drop-no-reasoning)")] = 5,
    teacher_token_limit: Annotated[int, typer.Option(
        help="The teacher's rationale token limit, for --drop-truncated when it gave no finish reason")] = 128,
    label: Annotated[str, typer.Option(
        help="The answer a rationale must reach: gold (the paper), majority (the majority of the teacher's D ≥ 2 "
             "answers: no gold needed) or majority_and_gold (both)")] = "gold",
    min_votes: Annotated[int, typer.Option(
        help="Chains that must give the majority answer; 1 makes a single chain's answer its question's label "
             "(the teacher trusted, no gold)")] = 2,
    rationalized: Annotated[bool, typer.Option(
        help="Use the run's rationalized rationales (ftcot teach --rationalize) for questions left without one")
    ] = True,
    data_dir: DataDir = None,
) -> None:
    """Keep correct rationales, format them for the student, write train/val files."""
    chosen = get_template(template)
    records, run_task = ([], None) if source is None else load_teacher_records(source)
    task_name = task or run_task
    if task_name is None:
        raise FtcotError("Which task? Pass --task KEY (a JSONL of teacher records does not say).")
    if chosen.uses_rationale and source is None:
        raise FtcotError(f"Template '{template}' needs teacher rationales: pass a teach RUN_DIR or a JSONL file.")
    root = resolve_data_root(data_root_option(data_dir))
    extra = settings(root, decontaminate=decontaminate, decontaminate_against=decontaminate_against or [],
                     decontaminate_ngram=decontaminate_ngram, decontaminate_max_df=decontaminate_max_df,
                     decontaminate_min_overlap=decontaminate_min_overlap,
                     drop_truncated=drop_truncated, drop_repetitive=drop_repetitive,
                     drop_no_reasoning=drop_no_reasoning, min_rationale_words=min_rationale_words,
                     teacher_token_limit=teacher_token_limit, label=label, min_votes=min_votes,
                     rationalized=rationalized)
    loaded = load_task(task_name, root, answer_type)
    check_output(out, [source, *task_inputs(loaded)])
    train, val, summary = curate(loaded, chosen, records, split_scheme=split_scheme,
                                 max_per_question=max_per_question, max_rationale_tokens=max_rationale_tokens,
                                 val_fraction=val_fraction, seed=seed, **extra)
    if not train:
        raise FtcotError(f"No training examples for '{loaded.key}' (dropped: {summary['dropped']}); "
                         f"check the teacher run covers the train split.")
    summary["source"] = str(source) if source else None
    write_data_dir(out, train, val, summary)
    table = Table(title=f"Curation of {loaded.key} ({template})")
    table.add_column("")
    table.add_column("count", justify="right")
    table.add_row("training questions", str(summary["train_questions"]))
    table.add_row("questions with an example", str(summary["questions_with_examples"]))
    table.add_row("examples kept", str(summary["kept"]))
    for reason, count in summary["dropped"].items():
        table.add_row(f"dropped: {reason}", str(count))
    table.add_row("train / val examples", f"{len(train)} / {len(val)}")
    for label, value in table_rows(summary):
        table.add_row(label, value)
    Console().print(table)
    for line in contamination_lines(summary):
        Console(stderr=True, soft_wrap=True).print(line, markup=False, highlight=False)
    Console().print(f"wrote {out}/train.jsonl, val.jsonl, openai_chat.jsonl, curation.json")
