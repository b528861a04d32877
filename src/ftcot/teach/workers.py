"""A teach run's requests answered by Ray workers, each with its own teacher (``workers: N``).

The request loop (:mod:`ftcot.teach.engine`) runs unchanged on the driver: it plans, merges identical
requests, skips what is stored, holds the run's one concurrency limit and one budget, and commits every
reply to the store itself. Only the sending moves: :class:`WorkerPool` is the loop's teacher, and each
``complete`` goes to the least-loaded worker, a Ray actor that built the teacher from the same settings on
its node — so a local teacher (``hf:`` on the node's GPU, or ``base_url: http://127.0.0.1:8080/v1``
meaning each node's own llama.cpp/vLLM server) is one per node, and a hosted API is sent to from several
machines. With several servers listed, each worker takes its own (:func:`endpoint_of`). Because one process
holds the limit, the budget and the store, the settings mean what they mean without workers:
``concurrency`` is the run's requests in flight (spread over the workers), ``max_cost`` the run
directory's total, and SQLite has one writer.

A worker that dies (a node lost, a process killed) takes only its requests in flight: the pool sends each
of them again to another worker (they were never stored; the dead worker's reply, if the server had
answered, is the one loss — as with a ``kill -9`` of a run without workers), and Ray restarts the
worker. Nothing stored is asked for again, by this run or a rerun.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftcot.errors import FtcotError
from ftcot.teach.records import Completion, CompletionRequest, Teacher, TeacherError

# Times one request is handed to another worker after the one it went to died, before it fails (the store
# records the failure; a rerun asks again).
HANDOVERS = 3
# How long a request waits for Ray to restart a worker when every worker is down.
RESTART_WAIT_S = 300.0


class TeacherWorker:
    """A Ray actor: a teacher on one node. Its replies (or its TeacherError, as a tuple: the exception's
    status and retryable would not survive pickling) go back to the driver, which stores them."""

    def __init__(self, spec: str, options: dict[str, Any], data_root: str | None,
                 environment: Mapping[str, str]) -> None:
        from ftcot.teach.backends import make_teacher

        # The API key, handed over by the driver: a node need not have it set (it is an argument of this
        # actor's creation, never a runtime_env, which Ray's dashboard shows).
        os.environ.update(environment)
        self.teacher = make_teacher(spec, data_root=Path(data_root) if data_root else None, **options)

    def where(self) -> tuple[str, int, list[str]]:
        import ray

        return socket.gethostname(), os.getpid(), [str(gpu) for gpu in ray.get_gpu_ids()]

    async def complete(self, request: CompletionRequest) -> tuple[str, Any]:
        return await self._reply(self.teacher.complete(request))

    async def score(self, prompt: str, row: Any) -> tuple[str, Any]:
        return await self._reply(self.teacher.score(prompt, row))

    @staticmethod
    async def _reply(call: Any) -> tuple[str, Any]:
        try:
            return "ok", await call
        except TeacherError as exc:
            return "error", (str(exc), exc.status, exc.retryable)

    async def close(self) -> None:
        await self.teacher.aclose()


@dataclass
class _Worker:
    actor: Any
    node: str = "?"
    pid: int = 0
    gpus: list[str] = field(default_factory=list)  # the GPUs Ray gave it (its CUDA_VISIBLE_DEVICES)
    in_flight: int = 0
    requests: int = 0  # answered by this worker
    deaths: int = 0
    life: int = 0  # which start of the worker a request went to: its requests in flight all fail at one death
    ready: bool = True  # False from its death until Ray has restarted it
    probe: Any = None  # the asyncio task that finds out when it is back


class WorkerPool:
    """The loop's :class:`~ftcot.teach.records.Teacher`: each request to the least-loaded of N workers.

    ``prototype`` is the same teacher built on the driver: it never sends, it lends the pool its identity
    (``name``, ``supports_n``, the checks a backend makes before a run). ``aclose`` keeps the workers (adaptive
    rounds and rationalization reuse the pool); :meth:`shutdown` ends them.
    """

    def __init__(self, prototype: Teacher, workers: list[_Worker], ray: Any) -> None:
        self.prototype = prototype
        self.name = prototype.name
        self.supports_n = prototype.supports_n
        self.keyed_by_question = bool(getattr(prototype, "keyed_by_question", False))
        self.top_logprobs = int(getattr(prototype, "top_logprobs", 0) or 0)  # the workers' teachers ask for as many
        self.scores_text = bool(getattr(prototype, "scores_text", False))  # and score stored text as it would
        self.workers = workers
        self._ray = ray

    @classmethod
    def start(cls, prototype: Teacher, spec: str, options: dict[str, Any], *, count: int, cpus: float,
              gpus: float, address: str | None, data_root: Path | None,
              environment: Mapping[str, str], setting: str = "ray_address") -> WorkerPool:
        from ftcot.ray_cluster import connect_ray

        ray = connect_ray(address, setting=setting)
        _check_room(ray.cluster_resources(), count, cpus, gpus)
        actor = ray.remote(TeacherWorker).options(num_cpus=cpus, num_gpus=gpus, max_restarts=-1,
                                                  max_task_retries=0, max_concurrency=1000)
        handles = [actor.remote(spec, endpoint_of(options, i, count), str(data_root) if data_root else None,
                                dict(environment)) for i in range(count)]
        workers = [_Worker(handle) for handle in handles]
        try:
            for worker, place in zip(workers, ray.get([h.where.remote() for h in handles], timeout=600)):
                worker.node, worker.pid, worker.gpus = place
        except ray.exceptions.RayError as exc:  # a worker that cannot build its teacher (a missing package, a path)
            for handle in handles:
                ray.kill(handle)
            raise FtcotError(f"teach workers did not start: {_cause_line(exc)}") from None
        return cls(prototype, workers, ray)

    def __getattr__(self, name: str) -> Any:
        # check_settings, require_credentials: the prototype's (the pool sends nothing itself).
        if name in ("check_settings", "require_credentials"):
            return getattr(self.prototype, name)
        raise AttributeError(name)

    async def complete(self, request: CompletionRequest) -> list[Completion]:
        return await self._call("complete", request)

    async def score(self, prompt: str, row: Any) -> Completion:
        return await self._call("score", prompt, row)

    async def _call(self, method: str, *args: Any) -> Any:
        """``method`` of the least-loaded worker; handed to another while workers die (HANDOVERS at most)."""
        handovers = 0
        while True:
            worker = await self._ready_worker()
            worker.in_flight += 1
            life = worker.life
            try:
                status, value = await getattr(worker.actor, method).remote(*args)
            except self._ray.exceptions.RayActorError as exc:  # died (Ray restarts it) or its node was lost
                if worker.life == life:  # the first of its requests to learn of this death
                    worker.deaths += 1
                    worker.life += 1
                    worker.ready = False
                handovers += 1
                if handovers > HANDOVERS:
                    raise TeacherError(f"{self.name}: {handovers} workers died while this request ran "
                                       f"({_cause_line(exc)})", retryable=True) from None
                continue
            finally:
                worker.in_flight -= 1
            if status == "error":
                message, code, retryable = value
                raise TeacherError(message, code, retryable)
            worker.requests += 1
            return value

    async def _ready_worker(self) -> _Worker:
        """The least-loaded worker that is up; a dead one is asked until Ray has restarted it."""
        waited = 0.0
        while True:
            for worker in self.workers:
                if not worker.ready and (worker.probe is None or worker.probe.done()
                                         or worker.probe.get_loop() is not asyncio.get_running_loop()):
                    worker.probe = asyncio.ensure_future(self._probe(worker))
            ready = [w for w in self.workers if w.ready]
            if ready:
                return min(ready, key=lambda w: (w.in_flight, w.requests))
            if waited > RESTART_WAIT_S:
                raise TeacherError(f"{self.name}: no teach worker is up ({len(self.workers)} died and Ray has not "
                                   f"restarted one within {RESTART_WAIT_S:g} s)", retryable=True)
            await asyncio.sleep(0.2)
            waited += 0.2

    async def _probe(self, worker: _Worker) -> None:
        """Up again once the restarted actor answers (Ray refuses calls while it restarts)."""
        while not worker.ready:
            try:
                worker.node, worker.pid, worker.gpus = await worker.actor.where.remote()
                worker.ready = True
            except self._ray.exceptions.RayActorError:
                await asyncio.sleep(0.5)

    async def aclose(self) -> None:
        """Nothing: the workers outlive one loop (adaptive rounds, rationalization); see :meth:`shutdown`."""

    def shutdown(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(self._ray.exceptions.RayError):  # a worker already gone has nothing to close
                self._ray.get(worker.actor.close.remote(), timeout=30)
            self._ray.kill(worker.actor)

    def to_json(self) -> list[dict[str, Any]]:
        return [{"node": w.node, "pid": w.pid, "gpus": w.gpus, "requests": w.requests, "deaths": w.deaths}
                for w in self.workers]


def endpoint_of(options: dict[str, Any], worker: int, workers: int) -> dict[str, Any]:
    """Worker ``worker``'s teacher settings: with several servers listed (``base_url: [URL, …]``), the list is
    shared out (worker i takes servers i, i + N, …; with more workers than servers, they share by i mod n), so
    that each drives endpoints of its own, as one per node would; one URL (a hosted API, or localhost meaning
    each node's own server) is every worker's."""
    urls = options.get("base_url")
    if not isinstance(urls, (list, tuple)) or len(urls) < 2:
        return options
    mine = list(urls[worker::workers]) or [urls[worker % len(urls)]]
    return {**options, "base_url": mine[0] if len(mine) == 1 else mine}


def _check_room(resources: Mapping[str, float], count: int, cpus: float, gpus: float) -> None:
    """Workers the cluster cannot hold would wait for resources forever: one line now instead."""
    for name, each in (("CPU", cpus), ("GPU", gpus)):
        have = resources.get(name, 0.0)
        if each and count * each > have + 1e-9:
            setting = "worker_cpus" if name == "CPU" else "worker_gpus"
            raise FtcotError(f"{count} teach workers × {setting} {each:g} need {count * each:g} {name}s; the Ray "
                             f"cluster has {have:g}: lower workers or {setting} (or add nodes).")


def _cause_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else 'no message'}"
