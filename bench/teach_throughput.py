"""Throughput of the OpenAI-compatible teacher client against a fixed-latency server.

A server in a separate process (so it does not share the client's CPU) answers
``POST /v1/completions`` after exactly 200 ms. At L requests in flight the
ideal rate is L / 0.2 s; each figure is measured completions/s over that ideal,
measured in a steady state after a warm-up.

Measured in the same run: ``OpenAICompatTeacher`` at 1, 16, 64, 256 in flight
(and the client process's CPU time for those runs), the same requests sent by a
bare aiohttp loop and a bare httpx.AsyncClient loop (the library choice, both
with pools sized for 1024 connections), and the ``openai`` SDK's AsyncOpenAI
when it is installed.

Then the whole engine (``ftcot.teach.engine.teach`` with a real teach store on
disk, its group commit, progress and bookkeeping) at 64 and 256 in flight,
as it runs (a reply keeps its slot until committed) and with the slot freed at
the reply (``engine.SLOT_HELD_THROUGH_COMMIT = False``, the price of that bound),
rated from the server's own timestamps: the server notes when it sends each
reply, and the rate is the replies sent in the middle 80% of the run over that
time, against the same ideal. For comparison the engine is run again on
asyncio's own event loop (it uses uvloop where installed) and with one fsync'ed
commit per reply (how it committed before the group commit). Last, several
servers of one teacher: 1, 2 and 3 servers that each serve 16 requests at once
(the rest queue), the engine keeping each full; the completions/s of each over
those of one server. The last line printed is one JSON object with every figure.

    .venv/bin/python bench/teach_throughput.py            # ~40 s
    .venv/bin/python bench/teach_throughput.py --window 4 # steadier figures
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator

DELAY_S = 0.2
LEVELS = (1, 16, 64, 256)
PROMPT = "Q: Joan found 70 seashells on the beach. She gave Sam some. She has 27. How many did she give?\nA: Let's think step by step."


# --- the server (separate process) ---------------------------------------------------------


def serve(capacity: int = 0) -> None:
    """A bare asyncio HTTP/1.1 server (keep-alive, Content-Length bodies only).

    No coroutine per request: the reply is scheduled with ``call_later``, so the
    server spends a few microseconds per request and the figures measure the client.
    """
    text = " Joan had 70 and has 27 left, so she gave 70 - 27 = 43."

    def reply(n: int) -> bytes:
        body = json.dumps(
            {
                "id": "cmpl-bench",
                "object": "text_completion",
                "model": "bench-model",
                "choices": [{"index": i, "text": text, "finish_reason": "stop", "logprobs": None} for i in range(n)],
                "usage": {"prompt_tokens": 30, "completion_tokens": 16 * n, "total_tokens": 30 + 16 * n},
            }
        ).encode()
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        return head.encode() + body

    replies = {1: reply(1)}
    sent: list[float] = []  # when each reply went out (the server's own clock)
    # capacity K: at most K requests served at once, the rest wait their turn (a GPU server's batch).
    busy = [0]
    waiting: collections.deque = collections.deque()

    def start(protocol: Http, data: bytes) -> None:
        busy[0] += 1
        asyncio.get_running_loop().call_later(DELAY_S, finish, protocol, data)

    def finish(protocol: Http, data: bytes) -> None:
        protocol.send(data)
        busy[0] -= 1
        if waiting:
            start(*waiting.popleft())

    def stamps_reply() -> bytes:
        body = json.dumps(sent).encode()
        sent.clear()
        return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body

    class Http(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while True:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buffer[:end].decode("latin-1").lower()
                length = 0
                for line in head.split("\r\n"):
                    if line.startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                if len(self.buffer) < end + 4 + length:
                    return
                body = self.buffer[end + 4 : end + 4 + length]
                self.buffer = self.buffer[end + 4 + length :]
                if head.startswith("get /stamps"):  # the reply times so far, then forget them
                    self.transport.write(stamps_reply())
                    continue
                n = int(json.loads(body).get("n", 1)) if body else 1
                if n not in replies:
                    replies[n] = reply(n)
                if capacity and busy[0] >= capacity:
                    waiting.append((self, replies[n]))
                else:
                    start(self, replies[n])

        def send(self, data: bytes) -> None:
            if not self.transport.is_closing():
                self.transport.write(data)
                sent.append(time.time())

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Http, "127.0.0.1", 0, backlog=4096)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(main())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of another process (Linux /proc)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- measuring ------------------------------------------------------------------------------


async def measure(one: Callable[[], Awaitable[object]], in_flight: int, warmup_s: float, window_s: float) -> float:
    """Ratio of the steady-state completions/s to the ideal in_flight / DELAY_S.

    Each of the ``in_flight`` workers sends one request after another; by Little's
    law the rate is the sum of the workers' own rates, each measured from its
    completion times after the warm-up: (completions - 1) / (last - first). This
    has no rounding to whole completions and no bias from waves of replies. A
    worker keeps going past the window until it has two completions in it.
    """
    start = time.perf_counter()
    window_start, window_end = start + warmup_s, start + warmup_s + window_s

    async def worker() -> float:
        stamps: list[float] = []
        while True:
            await one()
            now = time.perf_counter()
            if now >= window_start:
                stamps.append(now)
            if now >= window_end and len(stamps) >= 2:
                return (len(stamps) - 1) / (stamps[-1] - stamps[0])

    rates = await asyncio.gather(*(worker() for _ in range(in_flight)))
    return sum(rates) / (in_flight / DELAY_S)


async def run(base_url: str, server_pid: int, warmup_s: float, window_s: float) -> dict[str, float]:
    import aiohttp
    import httpx

    from ftcot.teach.backends.openai_compat import OpenAICompatTeacher, parse_response
    from ftcot.teach.records import CompletionRequest

    figures: dict[str, float] = {}
    request = CompletionRequest(prompt=PROMPT, max_tokens=128)

    async def report(key: str, label: str, one: Callable[[], Awaitable[object]], level: int) -> float:
        cpu0, server0, wall0 = time.process_time(), cpu_seconds(server_pid), time.perf_counter()
        ratio = await measure(one, level, warmup_s, window_s)
        wall = time.perf_counter() - wall0
        cpu, server = time.process_time() - cpu0, cpu_seconds(server_pid) - server0
        figures[key] = round(ratio, 3)
        print(
            f"{label:<38} {ratio:6.3f} of ideal   CPU over {wall:4.1f} s: client {cpu:5.2f} s, server {server:5.2f} s",
            flush=True,
        )
        return cpu

    # The teacher itself.
    teacher = OpenAICompatTeacher("bench-model", base_url=base_url)
    cpu_total = 0.0
    for level in LEVELS:
        label = f"OpenAICompatTeacher, {level:>3} in flight"
        cpu_total += await report(f"ratio_{level}", label, lambda: teacher.complete(request), level)
    await teacher.aclose()
    figures["client_cpu_s"] = round(cpu_total, 2)

    # The library choice: the same payload and parsing over bare aiohttp and bare httpx.
    url = base_url + "/completions"
    body = json.dumps({"model": "bench-model", "prompt": PROMPT, "max_tokens": 128, "temperature": 0}).encode()
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024)) as session:

        async def aiohttp_one() -> None:
            async with session.post(url, data=body, headers=headers) as response:
                parse_response(json.loads(await response.read()), chat=False)

        for level in (64, 256):
            await report(f"aiohttp_ratio_{level}", f"bare aiohttp, {level:>3} in flight", aiohttp_one, level)

    limits = httpx.Limits(max_connections=1024, max_keepalive_connections=1024)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def httpx_one() -> None:
            response = await client.post(url, content=body, headers=headers)
            parse_response(json.loads(response.content), chat=False)

        for level in (64, 256):
            await report(f"httpx_ratio_{level}", f"bare httpx.AsyncClient, {level:>3} in flight", httpx_one, level)

    # The openai SDK (built on httpx), when installed.
    try:
        from openai import AsyncOpenAI
    except ImportError:
        print("openai SDK not installed: its baseline is skipped", flush=True)
    else:
        sdk = AsyncOpenAI(base_url=base_url, api_key="bench-no-key", max_retries=0, timeout=60)

        async def sdk_one() -> None:
            await sdk.completions.create(model="bench-model", prompt=PROMPT, max_tokens=128, temperature=0)

        for level in (64, 256):
            await report(f"sdk_ratio_{level}", f"openai SDK AsyncOpenAI, {level:>3} in flight", sdk_one, level)
        await sdk.close()
    return figures


def server_stamps(base_url: str) -> list[float]:
    import urllib.request

    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/stamps", timeout=30) as response:
        return json.loads(response.read())


def steady_state(stamps: list[float], cpu_samples: list[tuple[float, float]]) -> tuple[float, float]:
    """Replies per second in the middle 80% of a run (no ramp-up, no tail), and the client's CPU
    seconds per reply over that same stretch (from ``(wall time, process CPU time)`` samples)."""
    stamps = sorted(stamps)
    lo, hi = int(len(stamps) * 0.1), int(len(stamps) * 0.9)
    inside = [cpu for wall, cpu in cpu_samples if stamps[lo] <= wall <= stamps[hi]]
    cpu_per_reply = (inside[-1] - inside[0]) / (hi - lo) if len(inside) > 1 else float("nan")
    return (hi - lo) / (stamps[hi] - stamps[lo]), cpu_per_reply


def engine_ratio(base_url: str | list[str], in_flight: int, seconds: float, group_commit: bool, workdir: str,
                 uvloop: bool = True, server_concurrency: int | None = None, slot_held: bool = True) -> dict:
    """The engine's completions/s over the ideal, from the servers' stamps, and its CPU per request."""
    base_urls = [base_url] if isinstance(base_url, str) else base_url
    import tempfile
    from pathlib import Path

    from rich.console import Console

    from ftcot.tasks import load_task
    from ftcot.teach import engine
    from ftcot.teach.backends.openai_compat import OpenAICompatTeacher
    from ftcot.teach.store import TeachStore

    questions = int(seconds * in_flight / DELAY_S)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        task_file = Path(tmp) / "bench_task.jsonl"
        task_file.write_text("".join(json.dumps({"question": f"{PROMPT} ({i})", "answer": "43", "split": "train"}) + "\n"
                                     for i in range(questions)))
        task = load_task(str(task_file), answer_type="number")
        teacher = OpenAICompatTeacher("bench-model", base_url=base_urls,
                                      server_concurrency=server_concurrency)
        original, original_loop = engine._Run._commit, engine.event_loop_factory
        engine.SLOT_HELD_THROUGH_COMMIT = slot_held
        if not uvloop:
            engine.event_loop_factory = lambda: None
        if not group_commit:
            async def one_commit_per_reply(self, rows, *spending):  # the engine before the group commit
                self.summary.new += self.store.add_completions(rows, [s for s in spending if s])
            engine._Run._commit = one_commit_per_reply
        for url in base_urls:
            server_stamps(url)  # forget earlier replies
        cpu_samples: list[tuple[float, float]] = []
        running = threading.Event()
        running.set()

        def sample_cpu() -> None:  # the process's CPU time every 20 ms, to cut out the steady stretch
            while running.is_set():
                cpu_samples.append((time.time(), time.process_time()))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample_cpu, daemon=True)
        sampler.start()
        try:
            with TeachStore.open(Path(tmp) / "run") as store:
                summary = engine.teach(task, "train", teacher, "zs", concurrency=in_flight, store=store,
                                       progress=True, console=Console(file=open(os.devnull, "w")))
        finally:
            engine._Run._commit, engine.event_loop_factory = original, original_loop
            engine.SLOT_HELD_THROUGH_COMMIT = True
            running.clear()
            sampler.join()
    assert summary.new == questions, summary.lines()
    rate, cpu_per_reply = steady_state([t for url in base_urls for t in server_stamps(url)], cpu_samples)
    return {"ratio": round(rate / (in_flight / DELAY_S), 3), "cpu_ms_per_request": round(1000 * cpu_per_reply, 3),
            "requests": questions, "rate": round(rate, 1)}


@contextlib.contextmanager
def serving(count: int, capacity: int = 0) -> Iterator[list[tuple[str, int]]]:
    """(base URL, pid) of ``count`` fixed-latency servers (``serve``), each a process of its own so that it does
    not share the client's CPU; stopped on exit. bench/teach_workers.py serves its teach runs with them too."""
    processes = [subprocess.Popen([sys.executable, __file__, "--serve", "--capacity", str(capacity)],
                                  stdout=subprocess.PIPE, text=True) for _ in range(count)]
    try:
        yield [(f"http://127.0.0.1:{int(p.stdout.readline())}/v1", p.pid) for p in processes]  # type: ignore[union-attr]
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)


def server_scaling(seconds: float, workdir: str | None, capacity: int = 16, most: int = 3) -> dict[str, float]:
    """Completions/s with 1..``most`` servers of ``capacity`` requests at once each, the engine keeping each
    full (``server_concurrency`` = capacity, ``concurrency`` = servers × capacity), over the rate with one."""
    figures: dict[str, float] = {}
    with serving(most, capacity) as servers:
        urls = [url for url, _ in servers]
        one = 0.0
        for count in range(1, most + 1):
            result = engine_ratio(urls[:count], capacity * count, seconds, True, workdir,
                                  server_concurrency=capacity)
            one = one or result["rate"]
            figures[f"servers_{count}_rate"] = result["rate"]
            figures[f"servers_{count}_speedup"] = round(result["rate"] / one, 2)
            print(f"{count} server(s) of {capacity} at once       {result['rate']:7.1f} completions/s, "
                  f"{result['rate'] / one:4.2f}x one server, {result['ratio']:.3f} of ideal", flush=True)
    return figures



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--capacity", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--only-servers", action="store_true", help="only the several-servers figures")
    parser.add_argument("--warmup", type=float, default=0.6, help="seconds before counting, per measurement")
    parser.add_argument("--window", type=float, default=2.0, help="seconds counted, per measurement")
    parser.add_argument("--engine-seconds", type=float, default=5.0, help="ideal length of each engine run")
    parser.add_argument("--only-engine", action="store_true", help="skip the client and library figures")
    parser.add_argument("--store-dir", default=None, help="where the engine's stores go (default: the temp dir)")
    args = parser.parse_args()
    if args.serve:
        serve(args.capacity)
        return
    with serving(1) as [(base_url, server_pid)]:
        started = time.perf_counter()
        quick = args.only_engine or args.only_servers
        figures = {} if quick else asyncio.run(run(base_url, server_pid, args.warmup, args.window))
        from ftcot.teach.engine import event_loop_factory

        uvloop = event_loop_factory() is not None
        if not uvloop:
            print("uvloop is not installed: the engine runs on asyncio's own loop", flush=True)
        # (label, group commit, uvloop, slot held through the commit)
        variants = [("engine", True, uvloop, True), ("engine_slot_freed_at_reply", True, uvloop, False),
                    ("engine_asyncio_loop", True, False, True), ("engine_commit_per_reply", False, False, True)]
        if not uvloop:  # "engine" is then the asyncio loop already
            variants = [v for v in variants if v[0] != "engine_asyncio_loop"]
        for label, group_commit, loop, held in [] if args.only_servers else variants:
            for level in (64, 256):
                result = engine_ratio(base_url, level, args.engine_seconds, group_commit, args.store_dir, loop,
                                      slot_held=held)
                figures[f"{label}_ratio_{level}"] = result["ratio"]
                figures[f"{label}_cpu_ms_per_request_{level}"] = result["cpu_ms_per_request"]
                print(f"{label + f', {level:>3} in flight':<38} {result['ratio']:6.3f} of ideal   "
                      f"(server's stamps, {result['requests']} requests; client CPU "
                      f"{result['cpu_ms_per_request']:.3f} ms/request in that stretch)", flush=True)
        figures.update(server_scaling(args.engine_seconds, args.store_dir))
        figures["bench_wall_s"] = round(time.perf_counter() - started, 1)
        figures["cpus"] = os.cpu_count() or 0
        # Other work on the machine delays the client's wake-ups: read the ratios with this.
        figures["load_avg_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
