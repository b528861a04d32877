"""A small real OpenAI-compatible server on 127.0.0.1 for the engine tests.

Real HTTP over real sockets (aiohttp, in a background thread), with replies
that are cheap and deterministic, so tests can count exactly what was sent:
the text of a reply depends on (prompt, seed, temperature) only, usage is
reported like OpenAI does, and a delay makes a run slow enough to kill.
It lives in the test process, so it outlives (and counts for) a client
subprocess that a test kills with SIGKILL.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class StubOpenAI:
    delay_s: float = 0.0
    honour_n: bool = False  # llama.cpp ignores n; OpenAI honours it
    same_rationale: bool = False  # every sampled rationale identical (tests stage-2 sharing)
    fail_marker: str | None = None  # prompts containing it get HTTP 400
    completion_tokens: int = 5  # per choice
    # Set (also while it runs) to make every completion request fail: an HTTP status answered
    # with an OpenAI-style error (401, 500, …), or "garbage" for a 200 whose body is an HTML page.
    outage: int | str | None = None
    echo: bool = False  # an error's message repeats the request's URL and Authorization header
    # Answer a request that asks for log-probabilities with them (each endpoint in its shape: see stub_logprobs).
    logprobs: bool = False
    port: int = 0
    bodies: list[dict] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)  # path and query string of every completion request

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("stub server did not start")
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    # -- what tests assert on --------------------------------------------------

    def count(self) -> int:
        with self._lock:
            return len(self.bodies)

    def body_hashes(self) -> list[str]:
        with self._lock:
            return [hashlib.sha256(json.dumps(b, sort_keys=True).encode()).hexdigest() for b in self.bodies]

    def requests(self) -> list[dict]:
        with self._lock:
            return list(self.bodies)

    # -- the server ------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/completions", self._complete)
        app.router.add_post("/v1/chat/completions", self._complete)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "stub"}]})

    async def _complete(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            self.bodies.append(body)
            self.urls.append(request.path_qs)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.outage == "garbage":
            return web.Response(text="<html><body>It works!</body></html>", content_type="text/html")
        if self.outage is not None:
            said = f" ({request.url} {request.headers.get('Authorization')})" if self.echo else ""
            return web.json_response({"error": {"message": f"stub outage{said}"}}, status=int(self.outage))
        chat = "messages" in body
        prompt = "\n".join(m["content"] for m in body["messages"]) if chat else body["prompt"]
        if self.fail_marker and self.fail_marker in prompt:
            return web.json_response({"error": {"message": "this prompt is refused (stub)"}}, status=400)
        n = body.get("n", 1) if self.honour_n else 1
        choices = []
        for i in range(n):
            text = reply_text(prompt, body.get("seed"), body.get("temperature", 1.0), i, self.same_rationale)
            choice = {"index": i, "finish_reason": "length" if body["max_tokens"] <= self.completion_tokens else "stop",
                      **({"message": {"role": "assistant", "content": text}} if chat else {"text": text})}
            k = (body.get("top_logprobs") if chat and body.get("logprobs") else body.get("logprobs")) or 0
            if self.logprobs and k:
                choice["logprobs"] = stub_logprobs(text, int(k), chat)
            choices.append(choice)
        usage = {"prompt_tokens": len(prompt) // 4, "completion_tokens": self.completion_tokens * n}
        return web.json_response({"object": "chat.completion" if chat else "text_completion", "choices": choices,
                                  "usage": usage})

    def close(self) -> None:
        async def shutdown() -> None:
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def reply_text(prompt: str, seed: int | None, temperature: float, choice: int, same_rationale: bool) -> str:
    if prompt.rstrip().endswith(" is"):  # a stage-2 or zero-shot answer trigger
        return " yes."
    if temperature and not same_rationale:
        tag = hashlib.sha256(f"{prompt}|{seed}|{choice}".encode()).hexdigest()[:8]
        return f" The coin is flipped, sample {tag}. So yes."
    return " The coin is flipped twice. So yes."


def stub_tokens(text: str) -> list[str]:
    """The stub's tokens of a reply: each word with the space before it."""
    return re.findall(r"\s*\S+", text)


def stub_logprobs(text: str, k: int, chat: bool) -> dict:
    """Log-probabilities of a reply, deterministic: token t was written with log-prob -0.25·(t mod 4), the
    most likely there; alternative j is ``alt{j}`` at j less. The legacy shape also lists one alternative more
    than asked (llama.cpp adds the written token to the K it found), which a reader must cut back to K."""
    tokens = stub_tokens(text)
    chosen = [-0.25 * (t % 4) for t in range(len(tokens))]
    alternatives = [[(token, lp)] + [(f"alt{j}", lp - j) for j in range(1, k + (0 if chat else 1))]
                    for token, lp in zip(tokens, chosen)]
    if chat:
        return {"content": [{"token": token, "logprob": lp, "bytes": list(token.encode()),
                             "top_logprobs": [{"token": a, "logprob": b, "bytes": list(a.encode())} for a, b in alts]}
                            for token, lp, alts in zip(tokens, chosen, alternatives)]}
    return {"tokens": tokens, "token_logprobs": chosen, "top_logprobs": [dict(alts) for alts in alternatives],
            "text_offset": [sum(map(len, tokens[:t])) for t in range(len(tokens))]}
