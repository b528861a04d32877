"""Real servers for the teach tests: a llama.cpp server and a fault-injecting HTTP proxy.

Both listen on 127.0.0.1 only. The proxy is a real aiohttp server running in a
background thread (its own event loop), so the client under test talks real HTTP
over real sockets; only the faults are staged.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import aiohttp
from aiohttp import web
from yarl import URL

Fault = Literal["429", "500", "hang", "drop", "401-echo"]
FAULTS: tuple[str, ...] = ("429", "500", "hang", "drop", "401-echo")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http_ok(url: str, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers 200; fail early if ``process`` has exited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer within {timeout_s:g} s")


def prime_prompt_cache(base_url: str, prompt: str) -> None:
    """Ask ``prompt`` once, for two tokens, so that every later request for it takes the same path.

    llama-cpp-python keeps the last request's tokens and reuses the longest common prefix: the
    first request for a prompt evaluates it as one batch, a repeat re-evaluates only its last token
    on the cached rest. The two paths' numerics differ in the last bits, enough to flip a close
    greedy choice a few tokens in (the portable AVX2 build in CI did: "1. Ann flips" against
    "Step 1: Ann"). Tests that compare two requests' texts prime first, so both repeat. Two tokens,
    not one: after one the prompt is cached exactly and the next request samples from the primer's
    batch logits, a third path."""
    body = json.dumps({"prompt": prompt, "max_tokens": 2, "temperature": 0}).encode()
    request = urllib.request.Request(f"{base_url}/completions", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120):
        pass


class LlamaServer:
    """``python -m llama_cpp.server`` on a free loopback port, output to ``log_path``."""

    def __init__(self, model_path: Path, log_path: Path, n_threads: int = 2, n_ctx: int = 2048) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        command = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(model_path),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--n_threads", str(n_threads), "--n_ctx", str(n_ctx),
        ]  # fmt: skip
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 180) -> None:
        """Wait for the model list, then one token: a build that crashes in its compute kernels (the
        ``-march=native`` wheel's AMX code did, in CI) fails here with its log, not in every later test."""
        try:
            wait_http_ok(f"{self.base_url}/models", timeout_s, self.process)
            request = urllib.request.Request(
                f"{self.base_url}/completions", data=b'{"prompt": "1 + 1 =", "max_tokens": 1}',
                headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=timeout_s):
                    pass
            except OSError as exc:
                time.sleep(0.5)  # let a crashed process be reaped, so its exit code is known
                raise RuntimeError(f"its first completion failed ({exc}); exit code {self.process.poll()}") from None
        except (RuntimeError, TimeoutError) as exc:
            tail = self.log_tail(3000)
            self.stop()
            raise RuntimeError(f"llama.cpp server did not start: {exc}\n--- its log ---\n{tail}") from None

    def log_tail(self, chars: int) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


@dataclass
class Seen:
    """One request as the proxy received it."""

    number: int  # 1-based, in order of arrival
    method: str
    path: str
    body_sha256: str
    authorization: str | None
    fault: str | None
    body: bytes = b""


@dataclass
class Proxy:
    """A forwarding proxy on 127.0.0.1 that counts requests and injects faults.

    ``faults`` maps request numbers (1-based, in order of arrival, over all
    paths) to a fault:

    - ``"429"``: answers 429 with ``Retry-After: {retry_after}`` and an OpenAI-style error;
    - ``"500"``: answers 500 with an error body;
    - ``"hang"``: never answers (until the proxy closes); the client must time out;
    - ``"drop"``: forwards the request, sends the reply's headers and half its
      body, then closes the socket;
    - ``"401-echo"``: answers 401 with an error that repeats the Authorization
      header, as some servers do, to check that the client scrubs the key.

    Anything else is forwarded to ``upstream`` (a base URL such as
    ``http://127.0.0.1:PORT/v1``; the request path is kept).
    """

    upstream: str
    faults: dict[int, Fault] = field(default_factory=dict)
    retry_after: str = "1"
    seen: list[Seen] = field(default_factory=list)
    base_url: str = ""

    def __post_init__(self) -> None:
        unknown = {f for f in self.faults.values() if f not in FAULTS}
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; valid: {FAULTS}")
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._closing: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="test-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy did not start")
        upstream_url = URL(self.upstream)
        self._upstream_origin = f"{upstream_url.scheme}://{upstream_url.host}:{upstream_url.port}"
        self.base_url = f"http://127.0.0.1:{self.port}{upstream_url.path.rstrip('/')}"

    # --- what tests assert on ------------------------------------------------------------

    def count(self, path: str | None = None) -> int:
        with self._lock:
            return sum(1 for s in self.seen if path is None or s.path.endswith(path))

    def per_path(self) -> collections.Counter[str]:
        with self._lock:
            return collections.Counter(s.path for s in self.seen)

    def per_body(self) -> collections.Counter[str]:
        """Requests per body hash: a retried request shows up more than once."""
        with self._lock:
            return collections.Counter(s.body_sha256 for s in self.seen)

    def repeated(self) -> dict[str, int]:
        return {h: c for h, c in self.per_body().items() if c > 1}

    # --- the server ---------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        self._closing = asyncio.Event()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300))
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        with self._lock:
            number = len(self.seen) + 1
            fault = self.faults.get(number)
            self.seen.append(
                Seen(number, request.method, request.path, hashlib.sha256(body).hexdigest(),
                     request.headers.get("Authorization"), fault, body)
            )  # fmt: skip
        if fault == "429":
            return web.json_response(
                {"error": {"message": "Rate limit reached (injected)", "type": "rate_limit"}},
                status=429,
                headers={"Retry-After": self.retry_after},
            )
        if fault == "500":
            return web.json_response({"error": {"message": "internal error (injected)"}}, status=500)
        if fault == "401-echo":
            echoed = request.headers.get("Authorization", "")
            return web.json_response({"error": {"message": f"Incorrect API key provided: {echoed}"}}, status=401)
        if fault == "hang":
            assert self._closing is not None
            await self._closing.wait()
            raise ConnectionResetError("proxy closing")
        status, headers, reply = await self._forward(request, body)
        if fault == "drop":
            response = web.StreamResponse(status=status, headers=headers)
            response.content_length = len(reply)
            await response.prepare(request)
            await response.write(reply[: len(reply) // 2])
            assert request.transport is not None
            request.transport.close()  # flushes what was written, then closes: a reply cut mid-body
            return response
        return web.Response(status=status, headers=headers, body=reply)

    async def _forward(self, request: web.Request, body: bytes) -> tuple[int, dict[str, str], bytes]:
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")}
        async with self._session.request(
            request.method, self._upstream_origin + request.path_qs, data=body, headers=headers
        ) as upstream:
            reply = await upstream.read()
            keep = {k: v for k, v in upstream.headers.items() if k.lower() in ("content-type", "retry-after")}
            return upstream.status, keep, reply

    def close(self) -> None:
        async def shutdown() -> None:
            assert self._closing is not None
            self._closing.set()
            await self._runner.cleanup()
            await self._session.close()

        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(15)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(15)
        self._loop.close()
