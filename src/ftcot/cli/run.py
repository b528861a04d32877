"""``ftcot run CONFIG.yaml``: a whole experiment, resumable stage by stage; ``--plan`` and ``--explain``."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ftcot.cli.options import DataDir, data_root_option, output_path
from ftcot.data_root import resolve_data_root
from ftcot.errors import FtcotError
from ftcot.experiment.config import ExperimentConfig, load_config
from ftcot.experiment.executors import StageOutcome
from ftcot.experiment.runner import Experiment
from ftcot.experiment.stages import Stage

_stdout = Console(highlight=False, soft_wrap=True)
_stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def run_command(
    config_file: Annotated[Path, typer.Argument(metavar="CONFIG.yaml", help="The experiment (see configs/)")],
    out: Annotated[Optional[Path], typer.Option(
        help="Experiment directory (default: runs/<name>); rerun to resume", parser=output_path("--out"))] = None,
    plan: Annotated[bool, typer.Option("--plan", help="Print the stages, what is done, and the teacher cost; run nothing")] = False,
    explain: Annotated[Optional[tuple[str, str]], typer.Option(
        metavar="TASK METHOD", help="Where each accuracy of TASK × METHOD came from: evaluation, checkpoint, "
                                    "training rows, teacher completions")] = None,
    archive: Annotated[Optional[Path], typer.Option(
        metavar="DIR", parser=output_path("--archive"), help="Also copy the results and the stages' records, without checkpoints, to DIR "
                            "(to commit; copy DIR/stages into an experiment directory to resume from it)")] = None,
    executor: Annotated[Optional[str], typer.Option(
        metavar="serial|ray", help="Who runs the stages: serial (this process, in order) or ray (a Ray cluster, in parallel); "
             "default: the config's executor.kind, else serial")] = None,
    address: Annotated[Optional[str], typer.Option(
        help="With --executor ray: the cluster ('auto', HOST:6379, ray://HOST:10001); none starts one here")] = None,
    data_dir: DataDir = None,
) -> None:
    """Run an experiment: teach → curate → train → evaluate for every cell, then the tables, plots and report."""
    config = with_executor(load_config(config_file), executor, address)
    experiment = Experiment(config, out or Path("runs") / config.name, resolve_data_root(data_root_option(data_dir)), _stderr)
    if plan:
        print_plan(experiment)
    elif explain:
        print_lineage(experiment, *explain)
    else:
        if archive is not None:
            from ftcot.experiment.archive import check_destination

            check_destination(experiment.out, archive, experiment.inputs())
        run_experiment(experiment, archive)


def with_executor(config: ExperimentConfig, kind: str | None, address: str | None) -> ExperimentConfig:
    """``config`` with the command line's executor options over its executor: block, checked by the block's own
    rules (ExecutorConfig), each broken one said in the options' words."""
    if kind is None and address is None:
        return config
    from pydantic import ValidationError

    from ftcot.experiment.config import ExecutorConfig

    values = {**config.executor.model_dump(), **{k: v for k, v in (("kind", kind), ("address", address))
                                                 if v is not None}}
    if kind == "serial" and address is None:  # a config made for Ray, run serially this time: its cluster unused
        values.update(address=None, local_cpus=None)
    try:
        chosen = ExecutorConfig.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["loc"] and error["loc"][0] == "kind":
            raise FtcotError(f"--executor must be serial or ray (got '{kind}').") from None
        rule = error["msg"].removeprefix("Value error, ")
        where = f"--address {address}" if address else f"--executor {kind}"
        raise FtcotError(f"{where}: {rule}; a Ray cluster's settings need --executor ray.") from None
    return config.model_copy(update={"executor": chosen})


def run_experiment(experiment: Experiment, archive_to: Path | None = None) -> None:
    """Run, then write and show the results (also after a failure: what finished is reported)."""
    from ftcot.experiment.archive import archive, archive_stage
    from ftcot.experiment.results import write_results

    on_stage_ran = None
    if archive_to is not None:
        kept = archive_to

        def on_stage_ran(stage: Stage, directory: Path) -> None:
            # At once, not only at the end: a run killed midway (a time limit, a wiped scratch disk) still
            # leaves an archive that resumes it.
            archive_stage(directory, kept / "stages" / stage.kind / directory.name, stage.kind)
            # With its first stage, the config it ran from: a partial archive (a kill -9, a machine taken back)
            # names its experiment like a finished one.
            if not (kept / "experiment.json").is_file():
                shutil.copy2(experiment.out / "experiment.json", kept / "experiment.json")

    try:
        outcomes = experiment.run(on_stage_ran)
    finally:
        if (experiment.out / "experiment.json").is_file():
            results = write_results(experiment)
            if archive_to is not None:
                stages = archive(experiment.out, archive_to)
                _stderr.print(f"archived the results and {stages} stages' records to {archive_to}", markup=False)
    _stdout.print(stage_table(outcomes))
    _stdout.print((experiment.out / "results.md").read_text(encoding="utf-8"), markup=False)
    _stdout.print(f"wrote {experiment.out}/results.md, results.csv, plots/, report.html, lineage.json"
                  + (f" ({results.pending} cells pending)" if results.pending else ""), markup=False)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        raise FtcotError(f"{len(failed)} stage(s) failed, e.g. {failed[0].stage.kind} {failed[0].stage.label}: "
                         f"{failed[0].note} — fix it and rerun (everything finished is kept).")


def stage_table(outcomes: list[StageOutcome]) -> Table:
    table = Table(title="Stages")
    for column in ("#", "stage", "", "status", "seconds"):
        table.add_column(column, justify="right" if column in ("#", "seconds") else "left")
    for number, outcome in enumerate(outcomes, 1):
        # Labels and notes hold users' names and servers' words: text, never rich markup.
        table.add_row(str(number), outcome.stage.kind, escape(f"{outcome.stage.label}: {outcome.note}"),
                      outcome.status, f"{outcome.seconds:.1f}")
    ran = sum(o.seconds for o in outcomes if o.status == "ran")
    count = Counter(o.status for o in outcomes)
    table.caption = f"{count['ran']} stages ran in {ran:.0f} s; {count['done earlier']} were done earlier" \
        + "".join(f"; {count[s]} {s}" for s in ("failed", "blocked") if count[s])
    return table


def print_plan(experiment: Experiment) -> None:
    from ftcot.experiment.runner import estimate_teach

    experiment.check(sending=False)
    table = Table(title=escape(f"Plan of {experiment.config.name} → {experiment.out}"))
    for column in ("#", "stage", "", "status", "teacher requests", "est. cost"):
        table.add_column(column)
    total_cost, unknown = 0.0, False
    for number, stage in enumerate(experiment.plan.ordered(), 1):
        status = experiment.status(stage)
        done = status == "done"
        requests = cost = ""
        if stage.kind == "teach" and not done:
            estimate = estimate_teach(experiment, stage)
            requests = str(estimate.estimated_requests)
            replay = stage.inputs["teacher"]["spec"].startswith("replay:")
            if replay:
                cost = "free (recorded)"
            elif estimate.estimated_cost_usd is None:
                cost, unknown = "unknown", unknown or estimate.estimated_requests > 0
            else:
                total_cost += estimate.estimated_cost_usd
                cost = f"${estimate.estimated_cost_usd:.4f}"
        table.add_row(str(number), stage.kind, escape(stage.label), status, requests, cost)
    _stdout.print(table)
    for reason in experiment.plan.skipped:
        _stdout.print(f"not run: {reason}", markup=False)
    _stdout.print(f"{len(experiment.plan.cells)} result cells; estimated teacher cost ${total_cost:.4f}"
                  + (" plus teachers without a known price (see 'ftcot teach --prices')" if unknown else "")
                  + ". Nothing was run.", markup=False)


def print_lineage(experiment: Experiment, task: str, method: str) -> None:
    from ftcot.experiment.results import collect

    entries = [e for e in collect(experiment).lineage if e["task"] == task and e["method"] == method]
    if not entries:
        cells = {(c.task, c.method) for c in experiment.plan.cells}
        hint = "it is not evaluated yet (run the experiment first)" if (task, method) in cells else \
            f"the experiment has no such cell; it has {', '.join(f'{t} {m}' for t, m in sorted(cells))}"
        raise FtcotError(f"No result for {task} {method}: {hint}.")
    for entry in entries:
        who = f"{entry['student']}" + (f", teacher {entry['teacher']}" if entry["teacher"] else "") \
            + (f", D={entry['D']}" if entry["D"] is not None else "") + f", seed {entry['seed']}" \
            + (f", {entry['train_size']} questions" if entry["train_size"] is not None else "")
        lines = [f"{task} {method} ({who}): {entry['accuracy']:.2f}% of {entry['n']}",
                 f"  predictions: {experiment.out / entry['predictions']}"]
        if "model" in entry:
            lines.append(f"  model as is: {entry['model']}")
        else:
            lines += [f"  checkpoint: {experiment.out / entry['checkpoint']}",
                      f"  training rows: {experiment.out / entry['training_rows']}"]
            if "teacher_completions" in entry:
                lines.append(f"  teacher completions: {experiment.out / entry['teacher_completions']} "
                             f"({entry['teacher_records_used']} of them in the training rows)")
        for line in lines:
            _stdout.print(line, markup=False)


def demo_command(
    out: Annotated[Path, typer.Option(help="Where the demo's experiment lives (rerun to resume)")] = Path("ftcot-demo"),
    quick: Annotated[bool, typer.Option("--quick", help="tiny-gpt2 on 64 questions: a smoke test, not a result")] = False,
    data_dir: DataDir = None,
) -> None:
    """Fine-tune-CoT offline: coin flip, the paper's recorded teacher, Gemma 3 270M as the student (its time on
    2 cores: README, 'The demo')."""
    from ftcot.experiment.config import parse_config
    from ftcot.experiment.demo import DEMO, QUICK

    data_root = resolve_data_root(data_root_option(data_dir))
    recorded = data_root / "teacher" / "text-davinci-002" / "zs_cot" / "coin_flip.jsonl"
    if not recorded.is_file():
        raise FtcotError(f"The demo replays the paper's recorded teacher, {recorded}, which is missing: set "
                         f"FTCOT_DATA (or --data-dir) to the ftcot data directory, or rebuild teacher/ with "
                         f"'ftcot teach import-zero-shot-cot-logs' from Kojima et al.'s logs.")
    config = parse_config(QUICK if quick else DEMO, "the demo")
    run_experiment(Experiment(config, out, data_root, _stderr))
