"""An OpenAI-compatible server in its own process, to be killed with SIGKILL mid-run.

``python -m tests.teach.pool_server --log FILE [--delay S] [--capacity K]``
prints its port, then answers ``POST /v1/completions`` like the stub server
(tests/teach/stub_openai.py: the reply depends on prompt, seed and temperature
only), serving at most ``capacity`` requests at a time (llama.cpp serves one)
and holding each for ``delay`` seconds. Every request is logged to FILE as it
arrives (``in HASH``) and as its reply goes out (``out HASH``), flushed at once,
so a test can tell from the log what a killed server had in flight.
HASH is the SHA-256 of the body as sent.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json

from aiohttp import web

from tests.teach.stub_openai import reply_text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--capacity", type=int, default=1)
    args = parser.parse_args()
    log = open(args.log, "a", buffering=1)  # line-buffered: each line is written as it happens

    async def run() -> None:
        slots = asyncio.Semaphore(args.capacity)

        async def complete(request: web.Request) -> web.Response:
            raw = await request.read()
            digest = hashlib.sha256(raw).hexdigest()
            log.write(f"in {digest}\n")
            async with slots:
                await asyncio.sleep(args.delay)
                body = json.loads(raw)
                text = reply_text(body["prompt"], body.get("seed"), body.get("temperature", 1.0), 0, False)
                log.write(f"out {digest}\n")
                return web.json_response({"object": "text_completion",
                                          "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
                                          "usage": {"prompt_tokens": len(body["prompt"]) // 4, "completion_tokens": 5}})

        async def models(request: web.Request) -> web.Response:
            return web.json_response({"data": [{"id": "stub"}]})

        app = web.Application()
        app.router.add_post("/v1/completions", complete)
        app.router.add_get("/v1/models", models)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(site._server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    main()
