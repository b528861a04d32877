"""Who runs an experiment's stages: this process, one after another, or a Ray cluster, in parallel.

Both executors consume the same plan (:meth:`ExperimentPlan.ordered`) and run each stage with the same
function, :meth:`Experiment.run_stage`, so a stage's directory, key and files are the same whoever ran it:
a run started serially resumes on Ray and back.

- ``serial`` (the default): plan order in this process. A failed stage blocks the stages that read it.
- ``ray``: every stage whose inputs exist is a Ray task, sent in plan order as the cluster has room for it
  (so cells finish one by one, as with ``serial``), with the CPUs and GPUs its kind asks for
  (``executor.cpus`` / ``executor.gpus``; a train stage with a ``launcher`` runs its ``accelerate launch``
  inside its one task). Finished stages are skipped on the driver, before anything is sent. A stage that
  fails is tried again ``retries`` times (a worker that died, a node lost, or a one-line error), then
  reported like the serial executor's. Ctrl-C cancels what runs and keeps what finished.

Storage: stages write their own directories under OUT, each stage one process, so no file (SQLite
included) has two writers. With Ray, OUT must be a path every node sees (a local disk on one machine, a
network file system on a cluster); a worker that cannot see it fails its stage in one line.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

if TYPE_CHECKING:
    from ftcot.experiment.config import ExecutorConfig
    from ftcot.experiment.stages import Stage

# The executors take the experiment (experiment/runner.py's Experiment) as ``run`` without importing it: it
# imports them. What they need of it: plan, config, out, data_root, console, done(), stage_dir(), run_stage().
Experiment = Any


@dataclass
class StageOutcome:
    stage: Stage
    status: str  # "ran", "done earlier", "failed" (note: the error) or "blocked" (note: by which stage)
    seconds: float
    note: str = ""

LOG_DIR = "logs"  # OUT/logs/<kind>-<key>.log: what each stage run by Ray printed
OnStageRan = Callable[["Stage", Path], None] | None


def run_serial(run: Experiment, stages: Sequence[Stage], on_stage_ran: OnStageRan) -> list[StageOutcome]:
    """Each stage in plan order; one that failed or was blocked blocks the stages that read it."""
    outcomes: list[StageOutcome] = []
    unusable: set[str] = set()  # keys of stages that failed or were blocked
    for number, stage in enumerate(stages, 1):
        blocked_by = [run.plan.stages[key] for key in stage.deps if key in unusable]
        if blocked_by:
            outcome = StageOutcome(stage, "blocked", 0.0, f"needs {blocked_by[0].kind} {blocked_by[0].label}")
        else:
            outcome = run.run_stage(stage, number, len(stages))
            if outcome.status == "ran" and on_stage_ran is not None:
                on_stage_ran(stage, run.stage_dir(stage))
        if outcome.status in ("failed", "blocked"):
            unusable.add(stage.key)
        outcomes.append(outcome)
    return outcomes


def run_on_ray(run: Experiment, stages: Sequence[Stage], on_stage_ran: OnStageRan,
               settings: ExecutorConfig) -> list[StageOutcome]:
    """The stages as Ray tasks, each once the stages it reads have finished and the cluster has room for it, in
    plan order (:func:`admit`)."""
    ray = connect_ray(settings)
    number = {stage.key: n for n, stage in enumerate(stages, 1)}
    outcomes: dict[str, StageOutcome] = {}
    tries: dict[str, int] = {}
    waiting = list(stages)
    running: dict[Any, Stage] = {}
    for stage in list(waiting):  # finished earlier: no task, no worker start-up
        record = run.done(stage)
        if record is not None:
            outcomes[stage.key] = StageOutcome(stage, "done earlier", record["seconds"], record.get("note", ""))
            waiting.remove(stage)

    remote = ray.remote(_run_stage_task)

    def submit(stage: Stage) -> None:
        tries[stage.key] = tries.get(stage.key, 0) + 1
        # One retry policy, below: a worker that died comes back as a failed outcome like an error does
        # (Ray's own retries on top would try a stage up to (retries + 1)² times).
        task = remote.options(name=f"{stage.kind} {stage.label}"[:200], num_cpus=settings.cpus_of(stage.kind),
                              num_gpus=settings.gpus_of(stage.kind), max_retries=0)
        running[task.remote(type(run), run.config, str(run.out), str(run.data_root), stage, number[stage.key],
                            len(stages))] = stage

    def needs(stage: Stage) -> tuple[float, float]:
        return settings.cpus_of(stage.kind), settings.gpus_of(stage.kind)

    try:
        while waiting or running:
            ready = []
            for stage in list(waiting):
                inputs = [outcomes.get(key) for key in stage.deps]
                bad = next((o for o in inputs if o is not None and o.status in ("failed", "blocked")), None)
                if bad is not None:
                    outcomes[stage.key] = StageOutcome(stage, "blocked", 0.0,
                                                       f"needs {bad.stage.kind} {bad.stage.label}")
                    waiting.remove(stage)
                elif all(o is not None for o in inputs):
                    ready.append(stage)
            cluster = ray.cluster_resources()  # read each time: an autoscaling cluster grows
            for stage in admit(ready, list(running.values()), (cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)),
                               needs):
                submit(stage)
                waiting.remove(stage)
            if not running:
                continue  # only blocked stages were left to settle
            run.console.print(f"[dim]ray: {len(outcomes)} of {len(stages)} stages settled, {len(running)} "
                              f"submitted, {len(waiting)} waiting for their inputs[/]")
            [finished], _ = ray.wait(list(running), num_returns=1)
            stage = running.pop(finished)
            outcome = _result(ray, finished, stage)
            if outcome.status == "failed" and tries[stage.key] <= settings.retries:
                run.console.print(f"{stage.kind} {escape(stage.label)}: trying again "
                                  f"({tries[stage.key]} of {settings.retries + 1} tries failed)")
                submit(stage)
                continue
            if outcome.status == "failed":
                run.console.print(f"[red]✗[/] {stage.kind} {escape(stage.label)}: ", end="")
                run.console.print(f"{outcome.note} (log: {stage_log(run.out, stage)})", markup=False)
            elif outcome.status == "ran":
                run.console.print(f"[green]✓[/] {stage.kind} {escape(stage.label)}: {escape(outcome.note)} "
                                  f"({outcome.seconds:.1f} s)")
                if on_stage_ran is not None:
                    on_stage_ran(stage, run.stage_dir(stage))
            outcomes[stage.key] = outcome
    except BaseException:  # Ctrl-C, SIGTERM, a lost cluster: stop what runs; what finished is kept
        for ref in running:
            ray.cancel(ref, force=True)
        raise
    return [outcomes[stage.key] for stage in stages]


def admit(ready: Sequence[Stage], running: Sequence[Stage], cluster: tuple[float, float],
          needs: Callable[[Stage], tuple[float, float]]) -> list[Stage]:
    """The ready stages to send now, in plan order: as many as the cluster's CPUs and GPUs hold beside the running
    ones. Ray runs what it must queue in the order it was sent, so sending every ready stage at once would run
    all the trainings before the first evaluation that became ready after them (a run stopped midway would
    leave trainings, not results); sending only what fits keeps the plan's order, cell by cell. A stage that
    fits no free slot waits for one to free, unless nothing runs: then the first is sent anyway (a cluster
    that autoscales starts the node it needs only when asked for it)."""
    cpus = cluster[0] - sum(needs(stage)[0] for stage in running)
    gpus = cluster[1] - sum(needs(stage)[1] for stage in running)
    admitted: list[Stage] = []
    for stage in ready:
        cpu, gpu = needs(stage)
        if (cpu <= cpus + 1e-9 and gpu <= gpus + 1e-9) or not (running or admitted):
            admitted.append(stage)
            cpus, gpus = max(cpus - cpu, 0.0), max(gpus - gpu, 0.0)  # a stage sent anyway takes what there is
    return admitted


def connect_ray(settings: ExecutorConfig) -> Any:
    """Ray, connected to the executor's cluster (or a new one on this machine); a one-line error if not."""
    from ftcot.ray_cluster import connect_ray as connect

    return connect(settings.address, local_cpus=settings.local_cpus, setting="--address / executor.address")


def _result(ray: Any, ref: Any, stage: Stage) -> StageOutcome:
    """A finished task's outcome; a worker that died or raised is a failed stage, in one line."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = exc.as_instanceof_cause()
        line = str(getattr(exc, "cause", None) or cause).strip().splitlines()
        return StageOutcome(stage, "failed", 0.0, f"{type(getattr(exc, 'cause', cause)).__name__}: "
                                                  f"{line[-1] if line else 'no message'}")
    except ray.exceptions.RayError as exc:  # the worker or its node died, retries spent
        return StageOutcome(stage, "failed", 0.0, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}")


def stage_log(out: Path, stage: Stage) -> Path:
    """Where a Ray worker writes what the stage prints (the serial executor prints it to the terminal)."""
    return out / LOG_DIR / f"{stage.kind}-{stage.key}.log"


def _placement() -> str:
    """Where Ray ran this stage, first in its log: the node, and the GPUs it holds (CUDA_VISIBLE_DEVICES)."""
    import ray

    context = ray.get_runtime_context()
    return (f"ray: node {context.get_node_id()} ({socket.gethostname()}), GPUs "
            f"{','.join(map(str, ray.get_gpu_ids())) or 'none'}")


def _run_stage_task(experiment: type, config: Any, out: str, data_root: str, stage: Stage, number: int,
                    total: int) -> StageOutcome:
    """One stage, in a Ray worker: the same :meth:`Experiment.run_stage` the serial executor calls (``experiment``
    is that class, pickled by reference), its output into the stage's log file (interleaved on the driver's
    terminal, parallel stages would be unreadable)."""
    from rich.console import Console

    if not (Path(out) / "experiment.json").is_file():
        return StageOutcome(stage, "failed", 0.0, f"node {socket.gethostname()} does not see {out}: put the "
                                                  f"experiment directory on a file system every node mounts")
    log = stage_log(Path(out), stage)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as handle:
        console = Console(file=handle, width=120, highlight=False, force_terminal=False)
        console.print(_placement(), markup=False)
        return experiment(config, Path(out), Path(data_root), console).run_stage(stage, number, total)
