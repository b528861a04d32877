"""``ftcot data``: list, export and download the benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from ftcot.cli.options import DataDir, data_root_option
from ftcot.cli.synth import synth_command
from ftcot.data_root import resolve_data_root
from ftcot.jsonl import write_jsonl
from ftcot.paths import write_stdout
from ftcot.tasks import BUILTIN_TASKS, load_task

app = typer.Typer(help="The 12 benchmarks: list, export, download, synthesize.", no_args_is_help=True)
app.command("synth")(synth_command)


@app.command("list")
def list_command(data_dir: DataDir = None) -> None:
    """A table of the tasks with their sizes and split sizes."""
    root = resolve_data_root(data_root_option(data_dir))
    table = Table(title=f"Benchmarks under {root}")
    for column in ("task", "category", "answer", "samples", "train", "test", "random %"):
        table.add_column(column, no_wrap=column == "task", justify="right" if column in ("samples", "train", "test", "random %") else "left")
    notes = []
    for key, spec in BUILTIN_TASKS.items():
        task = load_task(key, root)
        answer = f"letter {spec.letters[0]}-{spec.letters[-1]}" if spec.letters else str(spec.answer_type)
        sizes = []
        for part in ("train", "test"):
            missing = task.unavailable(part)
            # A split the paper defines over a file that is not part of the data (AQuA's train) has no samples here.
            sizes.append(f"0 of {len(task.split_indices(part))}*" if missing else str(len(task.split_indices(part))))
            if missing:
                notes.append(f"* {missing}")
        table.add_row(key, str(spec.category), answer, str(len(task.samples)), *sizes,
                      f"{100 * spec.random_accuracy:.1f}")
    Console().print(table)
    for note in notes:
        Console().print(note, markup=False, highlight=False)


@app.command("export")
def export_command(
    task: Annotated[str, typer.Argument(help="Task key, or a .jsonl/.csv file of your own")],
    split: Annotated[str, typer.Option(help="train, test or all")] = "all",
    split_scheme: Annotated[str, typer.Option(help="default, or template (multiarith, date_understanding)")] = "default",
    answer_type: Annotated[Optional[str], typer.Option(help="For your own task: number, letter, yes/no, text")] = None,
    data_dir: DataDir = None,
) -> None:
    """JSONL to stdout: one object per sample with sample_index, question, answer, split."""
    loaded = load_task(task, resolve_data_root(data_root_option(data_dir)), answer_type)
    train = set(loaded.split_indices("train", split_scheme))
    if split == "all" and loaded.unavailable("all", split_scheme):
        # A split whose file is not part of the data (AQuA's train): all there is, and a line saying so.
        samples = sorted(loaded.samples.values(), key=lambda s: s.index)
        Console(stderr=True).print(f"{task}: part of its data is not published (ftcot data list); exporting the "
                                   f"{len(samples)} samples there are.", markup=False, highlight=False)
    else:
        samples = loaded.split(split, split_scheme)
    write_stdout(lambda handle: write_jsonl(
        ({"sample_index": s.index, "question": s.question, "answer": s.answer,
          "split": "train" if s.index in train else "test"} for s in samples),
        handle,
    ))


@app.command("download")
def download_command(
    to: Annotated[Optional[Path], typer.Option(help="Directory to download into (default: the data root)")] = None,
    base_url: Annotated[Optional[str], typer.Option(
        help="A mirror to fetch from instead of the public sources, laid out as <task>/<file>, splits/, prompts/")] = None,
    data_dir: DataDir = None,
) -> None:
    """Fetch the benchmarks, the paper's splits and few-shot prompts from their public URLs, verified by SHA-256."""
    from ftcot.tasks.download import download_all

    download_all(to or resolve_data_root(data_root_option(data_dir)), base_url=base_url)
