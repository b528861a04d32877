"""Throughput of the OpenAI-compatible teacher client against a fixed-latency server.

A server in a separate process (so it does not share the client's CPU) answers
``POST /v1/completions`` after exactly 200 ms. At L requests in flight the
ideal rate is L / 0.2 s; each figure is measured completions/s over that ideal,
measured in a steady state after a warm-up.

Measured in the same run: ``OpenAICompatTeacher`` at 1, 16, 64, 256 in flight
(and the client process's CPU time for those runs), the same requests sent by a
bare aiohttp loop and a bare httpx.AsyncClient loop (the library choice, both
with pools sized for 1024 connections), and the ``openai`` SDK's AsyncOpenAI
when it is installed. The last line printed is one JSON object with every figure.

    .venv/bin/python bench/teach_throughput.py            # ~40 s
    .venv/bin/python bench/teach_throughput.py --window 4 # steadier figures
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

DELAY_S = 0.2
LEVELS = (1, 16, 64, 256)
PROMPT = "Q: Joan found 70 seashells on the beach. She gave Sam some. She has 27. How many did she give?\nA: Let's think step by step."


# --- the server (separate process) ---------------------------------------------------------


def serve() -> None:
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
                n = int(json.loads(body).get("n", 1)) if body else 1
                if n not in replies:
                    replies[n] = reply(n)
                asyncio.get_running_loop().call_later(DELAY_S, self.send, replies[n])

        def send(self, data: bytes) -> None:
            if not self.transport.is_closing():
                self.transport.write(data)

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
    teacher = OpenAICompatTeacher("bench-model", base_url=base_url, api_key_env="FTCOT_BENCH_NO_KEY")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=float, default=0.6, help="seconds before counting, per measurement")
    parser.add_argument("--window", type=float, default=2.0, help="seconds counted, per measurement")
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        started = time.perf_counter()
        figures = asyncio.run(run(f"http://127.0.0.1:{port}/v1", server.pid, args.warmup, args.window))
        figures["bench_wall_s"] = round(time.perf_counter() - started, 1)
        figures["cpus"] = os.cpu_count() or 0
        # Other work on the machine delays the client's wake-ups: read the ratios with this.
        figures["load_avg_1m"] = round(os.getloadavg()[0], 2)
    finally:
        server.terminate()
        server.wait(10)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
