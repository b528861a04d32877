"""The ``ftcot`` command line: one sub-module per stage, errors as one line."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup
from rich.console import Console

from ftcot.cli import curate, data, diagnose, evaluate, options, run, score, train
from ftcot.cli import export as export_cli
from ftcot.cli import teach as teach_cli
from ftcot.cli.stopping import on_sigterm, stop_exit_code, terminated
from ftcot.errors import FtcotError

# `ftcot --help` lists the commands as the data flows (tasks → teach → curate → train → evaluate), then the
# experiment, what reads its results, export and the demo.
PIPELINE = ("data", "teach", "curate", "train", "evaluate", "score", "run", "diagnose", "export", "demo")


class _PipelineOrder(TyperGroup):
    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda name: PIPELINE.index(name) if name in PIPELINE else len(PIPELINE))


app = typer.Typer(
    cls=_PipelineOrder,
    name="ftcot",
    help="Fine-tune-CoT: teach small language models to reason with a large teacher's rationales.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help=options.DATA_DIR_HELP)] = None) -> None:
    """Fine-tune-CoT: teach small language models to reason with a large teacher's rationales.

    The commands in pipeline order: data, teach, curate, train, evaluate, run (all of them, from a config),
    report and diagnose what came out, export, demo.
    """
    options.set_root_data_dir(data_dir)


app.add_typer(data.app, name="data")
app.add_typer(teach_cli.app, name="teach")
app.command("curate")(curate.curate_command)
app.command("train")(train.train_command)
app.command("evaluate")(evaluate.evaluate_command)
app.command("score")(score.score_command)
app.command("run")(run.run_command)
app.command("diagnose")(diagnose.diagnose_command)
app.add_typer(export_cli.app, name="export")
app.command("demo")(run.demo_command)

# No emoji codes: a message that quotes a user's ':x:' must show ':x:', not ❌.
stderr = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def _stopped() -> None:
    stderr.print(f"{'terminated' if terminated() else 'interrupted'}; everything stored so far is kept.")
    sys.exit(stop_exit_code())


def main() -> None:
    signal.signal(signal.SIGTERM, on_sigterm)
    if not sys.stderr.isatty():
        # Into a log file, the libraries' bars (transformers' "Loading weights", a GGUF's conversion) are a
        # carriage-return line per update; ftcot's own progress prints its lines there instead.
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        # Without standalone mode click returns (not raises) some exit codes, e.g. 130 on Ctrl-C.
        code = app(standalone_mode=False)
    except FtcotError as exc:
        # The message may quote user input: print it verbatim, not as rich markup.
        stderr.print("[bold red]error:[/] ", end="", markup=True)
        stderr.print(str(exc), markup=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _stopped()
    except (typer.Exit, typer.Abort) as exc:  # pragma: no cover - typer's own flow
        sys.exit(getattr(exc, "exit_code", 1))
    except Exception as exc:
        # Usage errors (a bad option value, an unknown option): click's, or the copy of click that
        # newer typer releases bundle (typer._click), which click.ClickException does not match.
        message, code = getattr(exc, "format_message", None), getattr(exc, "exit_code", None)
        if callable(message) and isinstance(code, int):
            # One line, as every other bad input: the message, and where the command's options are listed.
            context = getattr(exc, "ctx", None)
            where = f" (see '{context.command_path} --help')" if context is not None else ""
            stderr.print("[bold red]error:[/] ", end="", markup=True)
            stderr.print(" ".join(message().split()) + where, markup=False)
            sys.exit(code)
        raise
    if code == 130:  # click caught the KeyboardInterrupt (Ctrl-C or SIGTERM) and returned its exit code
        _stopped()
    if isinstance(code, int) and code:
        sys.exit(code)
