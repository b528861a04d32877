"""``ftcot teach``: run a teacher on a task, resumably, and export or report what it produced.

``ftcot teach --task KEY --teacher SPEC --out RUN_DIR`` runs the teacher;
``ftcot teach export|report RUN_DIR`` read the run back;
``ftcot teach import-zero-shot-cot-logs`` turns Kojima et al.'s public logs
into the shared teacher format. RUN_DIR holds ``teach.sqlite`` (the store),
``run.json`` (the settings and summary of the last run; never an API key) and
``report.json``.
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from ftcot.cli.options import DataDir, data_root_option, output_path
from ftcot.data_root import resolve_data_root
from ftcot.errors import FtcotError

app = typer.Typer(
    help="Run a teacher on a task (Zero-shot-CoT, zero-shot or Few-shot-CoT), resumably, within a budget.",
    invoke_without_command=True,
    no_args_is_help=True,
)

_stderr = Console(stderr=True, highlight=False, soft_wrap=True)
_stdout = Console(highlight=False, soft_wrap=True)


def _teach(ctx: typer.Context, out: Optional[Path], dry_run: bool, data_root: Optional[Path], **options: Any) -> None:
    """Ask the teacher for every missing completion of TASK's split and store each one as it arrives."""
    if ctx.invoked_subcommand is not None:
        return
    from ftcot.settings import build, cli_values
    from ftcot.teach.config import COMPOUNDS, TeachConfig
    from ftcot.teach.run import run_teach

    values = cli_values(options, COMPOUNDS)
    for name, flag in (("task", "--task"), ("spec", "--teacher")):
        if name not in values:
            raise FtcotError(f"ftcot teach needs {flag} (see 'ftcot teach --help').")
    if out is None:
        raise FtcotError("ftcot teach needs --out (see 'ftcot teach --help').")
    config = build(TeachConfig, values, surface="cli")
    outcome = run_teach(config, out, data_root=data_root, dry_run=dry_run, progress=True, console=_stderr)
    summary = outcome.summary
    if outcome.adaptive is not None:
        _stdout.print(outcome.adaptive.line(), markup=False)
    if summary is not None:
        for line in summary.lines():
            _stdout.print(line, markup=False)
    if dry_run and config.adaptive:
        _stdout.print(f"(a dry run prices the most adaptive sampling could send: {config.max_samples} samples a "
                      f"question)", markup=False)
    for number, worker in enumerate(outcome.workers or []):
        died = f", died {worker['deaths']} times (its requests went to another)" if worker["deaths"] else ""
        gpus = f", GPU {','.join(worker['gpus'])}" if worker["gpus"] else ""
        _stdout.print(f"worker {number} ({worker['node']}, pid {worker['pid']}{gpus}): {worker['requests']} "
                      f"requests{died}", markup=False)
    if outcome.report is not None:
        _stdout.print(outcome.report.table())
    if outcome.rationalized is not None:
        _stdout.print(outcome.rationalized.line(), markup=False)
    if outcome.interrupted:
        # Exit as Ctrl-C does (130; SIGTERM: 143), now that everything that was in flight is stored.
        # SystemExit, not KeyboardInterrupt: click (8.5) turns the latter into a return value of 130.
        from ftcot.cli.stopping import stop_exit_code

        raise SystemExit(stop_exit_code())
    if getattr(summary, "still_running", None):
        raise FtcotError(summary.deadline_line())  # the run did not finish: a script must not go on
    if summary is not None and not dry_run and summary.failed and (summary.new == 0 or summary.credentials_refused):
        # Nothing this run asked for came back (a server down, a wrong key, a wrong URL): a script
        # must not go on to curate as if it had. A partly failed run exits 0; its rerun fills the gaps.
        raise FtcotError(summary.failure_line())
    adaptive = outcome.adaptive
    if adaptive is not None and adaptive.stopped and adaptive.samples_spent == 0:
        raise FtcotError(f"{out}: adaptive sampling got no rationale: {adaptive.stopped}")


def _teach_command() -> Any:
    """``ftcot teach``'s options: TeachConfig's fields (:mod:`ftcot.settings`), then --out and --dry-run."""
    from ftcot.settings import cli_options
    from ftcot.teach.config import COMPOUNDS, TeachConfig

    def command(ctx: typer.Context, **options: Any) -> None:
        out, dry_run, data_dir = options.pop("out"), options.pop("dry_run"), options.pop("data_dir")
        _teach(ctx, out, bool(dry_run), data_root_option(data_dir), **options)

    fields = cli_options(TeachConfig, COMPOUNDS)
    out = inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
        Optional[Path], typer.Option(help="Run directory: the store lives here; rerun to resume or top up",
                                     parser=output_path("--out"))])
    dry_run = inspect.Parameter("dry_run", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
        bool, typer.Option("--dry-run", help="Count requests, tokens and cost; send nothing (needs no API key)")])
    data_dir = inspect.Parameter("data_dir", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=DataDir)
    context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    command.__signature__ = inspect.Signature([context, *fields[:2], out, *fields[2:], dry_run, data_dir])
    command.__doc__ = _teach.__doc__
    return command


teach_command = app.callback(invoke_without_command=True)(_teach_command())


@app.command("export")
def export_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by 'ftcot teach'")],
    out: Annotated[Optional[Path], typer.Option(help="JSONL file to write (default RUN_DIR/export.jsonl)")] = None,
    rationale: Annotated[Optional[str], typer.Option(
        help="Reasoning models: export the visible answer, the reasoning or both as the rationale "
             "(default: the run's --rationale)")] = None,
    logprobs: Annotated[bool, typer.Option("--logprobs", help="Add each stage's stored top-K log-probabilities "
                                                              "(a run taught with top_logprobs)")] = False,
) -> None:
    """Write the run's complete chains as JSONL in the shared teacher format."""
    from ftcot.paths import check_output
    from ftcot.teach.export import export
    from ftcot.teach.store import TeachStore

    with TeachStore.open_readonly(run_dir) as store:
        # Every file of the run (the paid completion store above all) is an input; only an earlier export
        # may be replaced.
        target = out or run_dir / "export.jsonl"
        check_output(target, [p for p in run_dir.glob("*") if p.name != "export.jsonl"], kind="file")
        result = export(store, target, rationale=rationale, logprobs=logprobs)
    _stdout.print(f"wrote {result.written} records to {result.path}"
                  + (f" ({result.incomplete} incomplete chains left out; rerun the teach command to finish them)"
                     if result.incomplete else ""), markup=False)


@app.command("report")
def report_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by 'ftcot teach'")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
    split: Annotated[str, typer.Option(help="Report on train, test or all questions of the run")] = "all",
    prices: Annotated[Optional[Path], typer.Option(help="JSON price table (USD per 1M tokens)")] = None,
    task: Annotated[Optional[str], typer.Option(help="Your own task file, when the run was not on a built-in task")] = None,
    answer_type: Annotated[Optional[str], typer.Option(help="For your own task: number, letter, yes/no, text")] = None,
    data_dir: DataDir = None,
) -> None:
    """Teacher accuracy, yield, truncation and diversity of a run (readable while it runs)."""
    from ftcot.teach.pricing import PriceTable
    from ftcot.teach.report import report_from_store
    from ftcot.teach.store import TeachStore

    if split not in ("train", "test", "all"):
        raise FtcotError(f"Unknown split '{split}'. Valid: train, test, all.")
    spec = None
    if task:
        from ftcot.tasks import load_task

        spec = load_task(task, resolve_data_root(data_root_option(data_dir)), answer_type).spec
    with TeachStore.open_readonly(run_dir) as store:
        report = report_from_store(store, spec, PriceTable.load(prices), split)
    if as_json:
        print(json.dumps(report.to_json()))
    else:
        _stdout.print(report.table())


@app.command("import-zero-shot-cot-logs")
def import_logs_command(
    logs: Annotated[list[Path], typer.Argument(help="Kojima et al.'s zero_shot_cot log files (one task and method)")],
    out: Annotated[Path, typer.Option(help="JSONL file to write in the shared teacher format")],
    task: Annotated[Optional[str], typer.Option(help="Task key (default: from the first file's name)")] = None,
    method: Annotated[Optional[str], typer.Option(help="zs_cot or zs (default: from the first file's name)")] = None,
    data_dir: DataDir = None,
) -> None:
    """Turn public Zero-shot-CoT logs into teacher records (replayable with replay:FILE)."""
    from ftcot.teach.import_logs import import_logs

    count = import_logs(logs, task, method, out, data_root=resolve_data_root(data_root_option(data_dir)))
    _stdout.print(f"wrote {count} records to {out}", markup=False)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())


