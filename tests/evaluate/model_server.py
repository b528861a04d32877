"""A real OpenAI-compatible ``/v1/completions`` server backed by a local model.

It runs :func:`ftcot.models.generate` on the model it is given (tiny-gpt2 in
the tests), in a background thread with its own event loop, on a loopback
port: the API student path is tested over real HTTP against real generations,
and its outputs can be compared with the same model evaluated locally.
Requests are served one at a time, like llama.cpp's server.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aiohttp import web

from ftcot.models import GenerationRequest, LoadedModel, generate
from tests.teach.servers import free_port


class ModelServer:
    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.requests: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("model server did not start")

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/completions", self._completions)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    async def _completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        stop = body.get("stop") or ()
        # Generation blocks this server's loop on purpose: one request at a time.
        out = generate(self.loaded, [GenerationRequest(body["prompt"], int(body["max_tokens"]), 0.0, None,
                                                       tuple([stop] if isinstance(stop, str) else stop))])[0]
        return web.json_response({
            "id": "cmpl-test", "object": "text_completion", "model": body["model"],
            "choices": [{"index": 0, "text": out.text, "finish_reason": out.finish_reason, "logprobs": None}],
            "usage": {"prompt_tokens": out.prompt_tokens, "completion_tokens": out.completion_tokens,
                      "total_tokens": out.prompt_tokens + out.completion_tokens},
        })

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
