"""The ``ftcot`` command line: one sub-module per stage, errors as one line."""

from __future__ import annotations

import signal
import sys

import typer
from rich.console import Console

from ftcot.cli import curate, data, diagnose, evaluate, run, score, train
from ftcot.cli import export as export_cli
from ftcot.cli import teach as teach_cli
from ftcot.errors import FtcotError

app = typer.Typer(
    name="ftcot",
    help="Fine-tune-CoT: teach small language models to reason with a large teacher's rationales.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data.app, name="data")
app.add_typer(teach_cli.app, name="teach")
app.command("score")(score.score_command)
app.command("curate")(curate.curate_command)
app.command("train")(train.train_command)
app.command("evaluate")(evaluate.evaluate_command)
app.command("diagnose")(diagnose.diagnose_command)
app.command("run")(run.run_command)
app.command("demo")(run.demo_command)
app.add_typer(export_cli.app, name="export")

stderr = Console(stderr=True, highlight=False, soft_wrap=True)


_terminated: list[int] = []  # the SIGTERM received, if any


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (a cluster's time limit, ``kill``, a container stopping) unwinds like Ctrl-C: the ``finally``
    blocks run, so a stopped ``ftcot run`` still writes its results and archive and releases its locks."""
    _terminated.append(signum)
    raise KeyboardInterrupt


def _stopped() -> None:
    stderr.print(f"{'terminated' if _terminated else 'interrupted'}; everything stored so far is kept.")
    sys.exit(143 if _terminated else 130)


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
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
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            sys.exit(code)
        raise
    if code == 130:  # click caught the KeyboardInterrupt (Ctrl-C or SIGTERM) and returned its exit code
        _stopped()
    if isinstance(code, int) and code:
        sys.exit(code)
