"""Teacher backend for any OpenAI-compatible server (OpenAI, vLLM, llama.cpp, Ollama).

Endpoints
---------
Completion mode (default) posts the engine's prompt unchanged to
``{base_url}/completions``: ``model, prompt, max_tokens, temperature`` always,
``n`` when > 1, ``seed`` when set, ``stop`` when non-empty, then ``extra_body``
merged on top (it may override any of them).

Nothing server-specific is sent by default. llama.cpp (``llama-cpp-python``)
applies ``repeat_penalty=1.1`` unless told otherwise, so its "greedy" is not
greedy: pass ``extra_body=LLAMA_CPP_EXTRA_BODY`` (``{"repeat_penalty": 1.0}``)
for it. It is not a default because OpenAI answers an unknown argument with
HTTP 400, and vLLM spells the knob ``repetition_penalty`` (default 1.0 already).
Even greedy, llama-cpp-python may answer a repeated prompt differently from its
first answer, a few tokens in: it reuses the cached prompt and re-evaluates only
the last token, whose numerics differ in the last bits from the first request's
batch evaluation. The store asks each request once, so a run is unaffected; a
rerun into a fresh directory may differ.

Chat mode (``chat=True``) for chat-only models posts to ``/chat/completions``.
The Zero-shot-CoT prompts are turned into turns by :func:`prompt_to_messages`:
the prompt is read as ``Q: …\\nA: …`` exchanges (few-shot exemplars become
earlier user/assistant pairs); the last ``A:`` text is what the model must
continue. Two ways to ask for that continuation:

- ``prefill=True`` (``--teacher-args prefill=true``): the last ``A:`` text becomes a final assistant
  message the server continues, so stage 1 is
  ``[user: "{question}", assistant: "Let's think step by step."]`` and stage 2 is
  ``[user: "{question}", assistant: "Let's think step by step. {rationale} \\nTherefore, … is"]``.
  Ollama is reported to continue a trailing assistant message; vLLM needs
  ``extra_body={"continue_final_message": True, "add_generation_prompt": False}``.
- ``prefill=False`` (the default: every server accepts it) for servers that cannot continue a message
  (OpenAI itself, which answers a trailing assistant message with a new one;
  llama-cpp-python's chat formats close every assistant turn): the CoT trigger
  (``cot_trigger``, "Let's think step by step.") moves into the user turn, so
  stage 1 is ``[user: "{question}\\nLet's think step by step."]`` and stage 2
  replays that conversation, ``[user: …, assistant: "{rationale}", user:
  "Therefore, … is"]``: the last line of the ``A:`` text is the follow-up
  question. A single-line ``A:`` text not starting with the trigger (the
  zero-shot baseline, "The answer (arabic numerals) is") is appended to the
  user turn.

An optional ``system`` message goes first. Questions never contain ``\\nQ:`` or
``\\nA:`` (checked on all 12 benchmarks); a generated rationale that does (6 of
the 9,706 recorded ones) is split into extra turns in chat mode, so pass
``stop=("\\nQ:",)`` at stage 1 if that matters.

``n`` and servers that ignore it
--------------------------------
``complete()`` returns ``request.n`` completions, fewer only when some samples
failed for good while others were paid for (those are kept). llama.cpp
ignores ``n`` and answers one choice; when a request with ``n > 1`` comes back
short, the backend sets ``supports_n = False`` (logged once) and fills the rest
with single-choice requests sent concurrently, sample ``i`` seeded
``seed + i`` (a fresh random seed per sample when the request has no seed), so
a sampled run is reproducible and its samples differ. With
``supports_n=False`` given up front every sample is such a request
(``seed + 0`` for the first), with the same seeds as after detection.

Log-probabilities
-----------------
``top_logprobs=K`` (1..20) asks for the K most likely tokens at every completion
token: ``logprobs: K`` at ``/completions`` (the legacy shape: ``tokens``,
``token_logprobs`` and ``top_logprobs`` as ``{token: logprob}``; llama.cpp's
server and vLLM take it, OpenAI's legacy endpoint at most 5), ``logprobs: true,
top_logprobs: K`` at ``/chat/completions`` (``content[].top_logprobs[]``;
OpenAI and vLLM at most 20). Both come back as :class:`~ftcot.teach.records.TopLogprobs`,
tokens by their text; vLLM gives ids when ``extra_body`` has
``return_tokens_as_token_ids: true`` (tokens spelled ``token_id:N``), and they
are then kept as ids. The legacy shape keys alternatives by their text, so two
ids that decode alike (partial UTF-8) are one alternative there. K is no part
of the teacher's name: the store keys stay those of a run without it.

Usage and timing
----------------
``prompt_tokens`` is the request's (shared by its choices, see
:class:`~ftcot.teach.records.Completion`); the request's ``completion_tokens``
are split evenly over its choices (the remainder to the first ones) because
the API reports only their sum. ``latency_s`` is the wall time of the attempt
that succeeded, from sending to the parsed reply (back-off waits excluded).

Errors and retries
------------------
Each attempt has ``timeout_s`` in total. 408, 429, 5xx, timeouts, dropped
connections and truncated (or empty) bodies are retried up to ``max_retries`` times with
exponential back-off and full jitter (``uniform(0, min(cap, base·2^k))``); a
``Retry-After`` (seconds or HTTP date) is honoured as a lower bound, plus up to
``backoff_base_s`` of jitter so that a burst of 429s does not return in step,
and capped at ``max_retry_after_s``. Any other 4xx raises
``TeacherError(status=…, retryable=False)`` at once with the server's message;
giving up after the last retry raises ``TeacherError(retryable=True)``. A 200
whose body is not JSON at all (an HTML page: a wrong URL) raises at once too,
and a ``base_url`` that is not ``http(s)://host…`` is refused when the backend
is built. A query string in ``base_url`` (``…/v1?token=…``) stays after the
endpoint's path; user info in it is sent as Basic auth (not with a key). The API
key is read from ``os.environ[api_key_env]`` when the backend is built, sent
only in the ``Authorization`` header, and scrubbed from every error message and
log line (some servers echo what they were sent), as are the URL's user info and
query (:func:`ftcot.api_replies.redact`).

HTTP client
-----------
aiohttp with one pooled ``ClientSession`` per teacher, created on first use
inside the caller's event loop (use one teacher per loop; call ``aclose()``).
Chosen by ``bench/teach_throughput.py`` (200 ms loopback server, this 2-core
machine, others' jobs running, load ≈ 9): completions/s over the ideal at
64 / 256 in flight were 0.92 / 0.85 for bare aiohttp, 0.30 / 0.19 for bare
httpx.AsyncClient (pool sized alike; ~10x the client CPU per request) and
0.67 / 0.16 for the openai SDK; this backend reached 0.93 / 0.87 at about
0.18 ms of client CPU per request. The pool is sized by ``max_connections``
(aiohttp's default of 100 would itself cap the requests in flight); the
engine decides how many are in flight.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ftcot.api_replies import (backoff_delay, endpoint, error_message, parse_retry_after, public_url, redact,
                               retryable_status, url_secrets)
from ftcot.errors import FtcotError
from ftcot.teach.records import MAX_TOP_LOGPROBS, Completion, CompletionRequest, TeacherError, TopLogprobs

log = logging.getLogger(__name__)

# llama-cpp-python's default repeat_penalty is 1.1; 1.0 makes temperature 0 truly greedy.
LLAMA_CPP_EXTRA_BODY: Mapping[str, Any] = {"repeat_penalty": 1.0}
COT_TRIGGER = "Let's think step by step."

_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})
_SEED_LIMIT = 2**31  # servers differ on seed width; 31 bits is accepted everywhere


# --- pure helpers (no network) -------------------------------------------------------------


def is_local(base_url: str) -> bool:
    """Whether the server runs on this machine (and may go without an API key)."""
    host = (urlsplit(base_url).hostname or "").lower()
    return host in _LOCAL_HOSTS or host.startswith("127.")


def sample_seed(seed: int | None, index: int, rng: random.Random) -> int:
    """Seed of sample ``index`` when samples are sent as separate requests."""
    if seed is None:
        return rng.randrange(_SEED_LIMIT)
    return (seed + index) % _SEED_LIMIT


def build_completions_payload(
    model: str, request: CompletionRequest, extra_body: Mapping[str, Any] | None = None, *, top_logprobs: int = 0
) -> dict[str, Any]:
    """The JSON body of a ``/completions`` request."""
    payload: dict[str, Any] = {
        "model": model,
        "prompt": request.prompt,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
    }
    if top_logprobs:
        payload["logprobs"] = top_logprobs
    _add_sampling(payload, request, extra_body)
    return payload


def build_chat_payload(
    model: str,
    request: CompletionRequest,
    extra_body: Mapping[str, Any] | None = None,
    *,
    prefill: bool = False,
    system: str | None = None,
    cot_trigger: str = COT_TRIGGER,
    top_logprobs: int = 0,
) -> dict[str, Any]:
    """The JSON body of a ``/chat/completions`` request (see the module docstring)."""
    payload: dict[str, Any] = {
        "model": model,
        "messages": prompt_to_messages(request.prompt, prefill=prefill, system=system, cot_trigger=cot_trigger),
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
    }
    if top_logprobs:
        payload.update(logprobs=True, top_logprobs=top_logprobs)
    _add_sampling(payload, request, extra_body)
    return payload


def _add_sampling(payload: dict[str, Any], request: CompletionRequest, extra_body: Mapping[str, Any] | None) -> None:
    # Defaults are left out so that servers without a knob (n, seed) see nothing new.
    if request.n > 1:
        payload["n"] = request.n
    if request.seed is not None:
        payload["seed"] = request.seed
    if request.stop:
        payload["stop"] = list(request.stop)
    if extra_body:
        payload.update(extra_body)


def split_exchanges(prompt: str) -> list[tuple[str, str | None]]:
    """``"Q: a\\nA: b\\nQ: c\\nA: d"`` → ``[("a", "b"), ("c", "d")]``.

    A prompt without ``\\nA:`` is one question with no answer (``None``).
    A leading ``"Q: "`` is dropped; text before the first ``Q:`` stays in the question.
    """
    exchanges: list[tuple[str, str | None]] = []
    rest = prompt
    while True:
        question, sep, after = rest.partition("\nA:")
        if question.startswith("Q:"):
            question = question[2:]
        question = question.strip()
        if not sep:
            exchanges.append((question, None))
            return exchanges
        answer, qsep, rest = after.partition("\nQ:")
        if not qsep:
            # The last answer is what the model continues: keep its inner whitespace.
            exchanges.append((question, answer.lstrip(" ")))
            return exchanges
        exchanges.append((question, answer.strip()))


def prompt_to_messages(
    prompt: str, *, prefill: bool = False, system: str | None = None, cot_trigger: str = COT_TRIGGER
) -> list[dict[str, str]]:
    """Chat turns for a completion-style prompt (rules in the module docstring)."""
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    exchanges = split_exchanges(prompt)
    for question, answer in exchanges[:-1]:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer or ""}]
    question, answer = exchanges[-1]
    if not answer:
        messages.append({"role": "user", "content": question})
    elif prefill:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    else:
        messages += _follow_up_turns(question, answer, cot_trigger)
    return messages


def _follow_up_turns(question: str, answer: str, cot_trigger: str) -> list[dict[str, str]]:
    # Without prefill, instructions must be user turns: the CoT trigger joins the question
    # (exactly the stage-1 turn), the last line of a multi-line answer is the follow-up ask.
    head, newline, last_line = answer.rpartition("\n")
    if not newline:
        head, last_line = answer, ""
    head = head.strip()
    user = question
    if head.startswith(cot_trigger):
        user = f"{question}\n{cot_trigger}"
        head = head[len(cot_trigger) :].strip()
    elif not last_line:
        user, head = f"{question}\n{head}", ""
    last_line = last_line.strip()
    if not head:  # nothing said in between: one user turn, no two in a row
        return [{"role": "user", "content": f"{user}\n{last_line}" if last_line else user}]
    turns = [{"role": "user", "content": user}, {"role": "assistant", "content": head}]
    if last_line:
        turns.append({"role": "user", "content": last_line})
    return turns


def split_tokens(total: int, n: int) -> list[int]:
    """Spread a request's completion tokens over its ``n`` choices; the parts sum to ``total``."""
    share, extra = divmod(total, n)
    return [share + (1 if i < extra else 0) for i in range(n)]


def parse_logprobs(logprobs: Any, *, chat: bool, k: int | None = None) -> TopLogprobs | None:
    """A choice's ``logprobs`` (either shape, module docstring) as :class:`TopLogprobs`; None when absent.

    ``k``: the K asked for (llama.cpp adds the chosen token to a position's alternatives: cut back to K);
    None keeps the widest position's count. Raises ``ValueError`` when it is not shaped like one.
    """
    try:
        return _parse_logprobs(logprobs, chat, k)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"logprobs not shaped as a {'chat' if chat else 'completions'} reply's "
                         f"({type(exc).__name__}: {exc})") from None


def _parse_logprobs(logprobs: Any, chat: bool, k: int | None) -> TopLogprobs | None:
    if not logprobs:
        return None
    if chat:
        content = logprobs.get("content")
        if content is None:
            return None
        positions = [(entry["token"], entry.get("logprob"),
                      [(alt["token"], alt.get("logprob")) for alt in entry.get("top_logprobs") or []])
                     for entry in content]
    else:
        tokens, chosen, top = logprobs.get("tokens"), logprobs.get("token_logprobs"), logprobs.get("top_logprobs")
        if tokens is None or chosen is None:
            return None
        top = top if top is not None else [None] * len(tokens)
        if not len(tokens) == len(chosen) == len(top):
            raise ValueError("logprobs: tokens, token_logprobs and top_logprobs differ in length")
        positions = [(token, logprob, list((alternatives or {}).items()))
                     for token, logprob, alternatives in zip(tokens, chosen, top)]
    positions = [(_token(token), _logprob(logprob), [(_token(t), _logprob(lp)) for t, lp in alternatives])
                 for token, logprob, alternatives in positions]
    return TopLogprobs.from_positions(positions, k)


def _token(token: Any) -> int | str:
    """vLLM's ``token_id:N`` (``return_tokens_as_token_ids``) is the id N; anything else its text."""
    text = str(token)
    if text.startswith("token_id:") and text[9:].isdigit():
        return int(text[9:])
    return text


def _logprob(value: Any) -> float:
    # null for an impossible token (some servers), never a string: a float either way.
    return float("-inf") if value is None else float(value)


def parse_response(body: Any, *, chat: bool, latency_s: float = 0.0, top_logprobs: int | None = None
                   ) -> list[Completion]:
    """Completions from a 200 reply of ``/completions`` or ``/chat/completions``.

    A choice's ``logprobs``, where the reply has them, become ``Completion.logprobs`` (at most
    ``top_logprobs`` alternatives a token when given). Raises ``ValueError`` when the body is not shaped
    like one.
    """
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
        raise ValueError(f"no 'choices' list in the reply: {str(body)[:200]}")
    choices = sorted(body["choices"], key=lambda c: c.get("index", 0))
    usage = body.get("usage") or {}
    prompt_tokens = int(usage.get("prompt_tokens") or 0)
    completion_tokens = split_tokens(int(usage.get("completion_tokens") or 0), max(len(choices), 1))
    completions = []
    for choice, tokens in zip(choices, completion_tokens):
        message = (choice.get("message") or {}) if chat else {}
        text = message.get("content") if chat else choice.get("text")
        # A reasoning model's reasoning apart from the answer: DeepSeek and vLLM's reasoning parsers
        # say reasoning_content, newer vLLM and others reasoning. Kept raw (ftcot.teach.reasoning).
        reasoning = message.get("reasoning_content") or message.get("reasoning") or choice.get("reasoning_content")
        completions.append(
            Completion(
                text=text or "",
                finish_reason=choice.get("finish_reason") or "unknown",
                prompt_tokens=prompt_tokens,
                completion_tokens=tokens,
                latency_s=latency_s,
                reasoning=reasoning if isinstance(reasoning, str) and reasoning else None,
                logprobs=_choice_logprobs(choice, chat, top_logprobs),
            )
        )
    return completions


def _choice_logprobs(choice: dict[str, Any], chat: bool, k: int | None) -> TopLogprobs | None:
    # A malformed top-K must not cost the paid text: it is stored without them (and the run says so).
    try:
        return parse_logprobs(choice.get("logprobs"), chat=chat, k=k)
    except ValueError as exc:
        log.warning("a reply's log-probabilities were left out: %s", exc)
        return None


# --- the backend ---------------------------------------------------------------------------


@dataclass
class _Server:
    """One base URL of a teacher served by several servers, and what the client knows of it."""

    base_url: str
    url: str  # the endpoint requests are posted to
    public_url: str  # the same without credentials, for messages
    in_flight: int = 0
    sent: int = 0  # requests started on it (ties between equally loaded servers go to the least used)
    down_until: float = 0.0  # time.monotonic() before which it is skipped: it dropped a connection or timed out




class OpenAICompatTeacher:
    """A :class:`~ftcot.teach.records.Teacher` for OpenAI-compatible servers."""

    def __init__(
        self,
        model: str,
        base_url: str | Sequence[str] = "https://api.openai.com/v1",
        api_key_env: str | None = None,  # None: OPENAI_API_KEY, needed only by a remote server
        chat: bool = False,
        supports_n: bool | None = None,
        timeout_s: float = 60,
        max_retries: int = 6,
        extra_body: Mapping[str, Any] | None = None,
        *,
        prefill: bool = False,
        system: str | None = None,
        cot_trigger: str = COT_TRIGGER,
        max_connections: int = 1024,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        max_retry_after_s: float = 120.0,
        server_concurrency: int | None = None,
        server_down_s: float = 10.0,
        top_logprobs: int = 0,
    ) -> None:
        self.model = model
        # The store keys on this name: whatever changes the text a request returns
        # (chat layout, server-specific sampling options) is part of the identity.
        self.name = f"openai:{model}" + ("#chat" if chat else "") + (
            "#" + json.dumps(dict(extra_body), sort_keys=True, separators=(",", ":")) if extra_body else "") + (
            # A system prompt changes every reply: part of the identity, by hash (it may be long).
            "#system:" + hashlib.sha256(system.encode("utf-8")).hexdigest()[:12] if system else "")
        if system and not chat:
            raise FtcotError("a system prompt (--system-prompt, system_prompt: in a config) needs a chat teacher "
                             "(--chat, chat: true): /completions has no system turn.")
        base_urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not base_urls:
            raise FtcotError("no base URL given (--base-url, or base_url: in a config).")
        if len(set(u.rstrip("/") for u in base_urls)) < len(base_urls):
            raise FtcotError("a base URL is given twice (--base-url, or base_url: in a config): each server once.")
        if server_concurrency is not None and server_concurrency < 1:
            raise FtcotError(f"--server-concurrency must be at least 1 (got {server_concurrency}).")
        self.base_urls = [u.rstrip("/") for u in base_urls]
        self.base_url = self.base_urls[0]
        for url in self.base_urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                # Refused here, not retried per request: no attempt could ever succeed.
                raise FtcotError(f"the base URL must be http(s)://host/…, e.g. http://127.0.0.1:8000/v1, not "
                                 f"{public_url(url)!r} (--base-url, or base_url: in a config).")
        if not 0 <= top_logprobs <= MAX_TOP_LOGPROBS:
            raise FtcotError(f"top_logprobs must be 0..{MAX_TOP_LOGPROBS} (got {top_logprobs}).")
        # Not in the name: the text is the same with or without them, so are the store keys (ftcot.teach.plan).
        self.top_logprobs = top_logprobs
        self.chat = chat
        # None: assume n works (OpenAI, vLLM) and learn otherwise from the first short reply.
        self.supports_n = True if supports_n is None else supports_n
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.extra_body = dict(extra_body or {})
        self.prefill = prefill
        self.system = system
        self.cot_trigger = cot_trigger
        self.max_connections = max_connections
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.max_retry_after_s = max_retry_after_s
        path = "chat/completions" if chat else "completions"
        # Messages name a URL without its user info and query: those may hold credentials.
        self._servers = [_Server(url, endpoint(url, path), public_url(endpoint(url, path))) for url in self.base_urls]
        self._url, self._public_url = self._servers[0].url, self._servers[0].public_url
        self.server_concurrency = server_concurrency
        self.server_down_s = server_down_s
        self._server_waiters: list[asyncio.Future[None]] = []
        named, api_key_env = api_key_env is not None, api_key_env or "OPENAI_API_KEY"
        self._api_key = os.environ.get(api_key_env) or None
        self._secrets = [s for s in [self._api_key, *(v for u in self.base_urls for v in url_secrets(u))] if s]
        remote = next((u for u in self.base_urls if not is_local(u)), None)
        with_password = next((u for u in self.base_urls if urlsplit(u).password is not None), None)
        # Checked before the first request (require_credentials), not here: a dry run or a plan sends nothing.
        self._missing_key = None
        if self._api_key is None and remote is not None:
            self._missing_key = (f"Environment variable {api_key_env} is not set; the teacher at {public_url(remote)} "
                                 f"needs an API key (export {api_key_env}=…, or name another variable with "
                                 f"api_key_env).")
        elif self._api_key is None and named and with_password is None:
            # Named, so a key was meant: sending without one would be refused at best, and look like an outage.
            self._missing_key = (f"Environment variable {api_key_env} (api_key_env) is not set or empty; export "
                                 f"{api_key_env}=…, or leave api_key_env out for a server that needs no key.")
        if self._api_key is not None and with_password is not None:
            # aiohttp would refuse to send both (a ValueError on every request): say so once, up front.
            raise FtcotError(
                f"--base-url {public_url(with_password)} carries user:password and {api_key_env} is set: a request "
                f"has one Authorization header; drop the user info or name an unset variable with api_key_env."
            )
        self._headers = {"Content-Type": "application/json"}
        if self._api_key:
            self._headers["Authorization"] = f"Bearer {self._api_key}"
        self._rng = random.Random()
        self._session: aiohttp.ClientSession | None = None

    def require_credentials(self) -> None:
        """A one-line error if requests would go to a remote server without a key (before any is sent)."""
        if self._missing_key is not None:
            raise FtcotError(self._missing_key)

    def __repr__(self) -> str:  # never the key
        urls = ", ".join(public_url(u) for u in self.base_urls)
        return f"OpenAICompatTeacher(model={self.model!r}, base_url={urls!r}, chat={self.chat})"

    def server_counts(self) -> dict[str, int]:
        """Requests started on each server (its public base URL), failed-over ones included."""
        return {public_url(server.base_url): server.sent for server in self._servers}

    # -- choosing a server ---------------------------------------------------------------

    async def _take_server(self) -> _Server:
        """The least-loaded server that is up and under ``server_concurrency``; waits while all are full.

        A server that dropped a connection or timed out is skipped for ``server_down_s``,
        then tried again; when every server is down they are all tried (and the
        retries' back-off paces the attempts).
        """
        if len(self._servers) == 1 and self.server_concurrency is None:  # one server, no limit: nothing to choose
            server = self._servers[0]
            server.in_flight += 1
            server.sent += 1
            return server
        while True:
            now = time.monotonic()
            up = [s for s in self._servers if s.down_until <= now] or self._servers
            free = [s for s in up if self.server_concurrency is None or s.in_flight < self.server_concurrency]
            if free:
                server = min(free, key=lambda s: (s.in_flight, s.sent))
                server.in_flight += 1
                server.sent += 1
                return server
            waiter = asyncio.get_running_loop().create_future()
            self._server_waiters.append(waiter)
            try:
                # A server coming back from being down frees room without a release: look again soon.
                await asyncio.wait_for(asyncio.shield(waiter), timeout=self.server_down_s)
            except asyncio.TimeoutError:
                pass
            finally:
                if waiter in self._server_waiters:
                    self._server_waiters.remove(waiter)

    def _give_back(self, server: _Server) -> None:
        server.in_flight -= 1
        while self._server_waiters:
            waiter = self._server_waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return

    def _others_up(self, server: _Server) -> bool:
        now = time.monotonic()
        return any(s is not server and s.down_until <= now for s in self._servers)

    def payload(self, request: CompletionRequest) -> dict[str, Any]:
        if self.chat:
            return build_chat_payload(
                self.model,
                request,
                self.extra_body,
                prefill=self.prefill,
                system=self.system,
                cot_trigger=self.cot_trigger,
                top_logprobs=self.top_logprobs,
            )
        return build_completions_payload(self.model, request, self.extra_body, top_logprobs=self.top_logprobs)

    async def complete(self, request: CompletionRequest) -> list[Completion]:
        if self._missing_key is not None:  # never sent without its key (callers check first: this is a guard)
            raise TeacherError(self._missing_key, status=401)
        if request.n < 1:
            raise ValueError(f"CompletionRequest.n must be at least 1, got {request.n}")
        if request.n > 1 and not self.supports_n:
            return await self._one_per_request(request, first=0)
        got = (await self._post(self.payload(request)))[: request.n]
        if not got:
            raise TeacherError(f"{self.name}: the reply had no choices", retryable=True)
        if len(got) < request.n:
            if self.supports_n:
                log.info("%s: %d of n=%d choices came back; sending one request per sample from now on",
                         self.name, len(got), request.n)
                self.supports_n = False
            got += await self._one_per_request(request, first=len(got))
        return got

    async def _one_per_request(self, request: CompletionRequest, first: int) -> list[Completion]:
        payloads = []
        for i in range(first, request.n):
            single = CompletionRequest(
                prompt=request.prompt,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                n=1,
                seed=sample_seed(request.seed, i, self._rng),
                stop=request.stop,
            )
            payloads.append(self.payload(single))
        # Every sample finishes (or exhausts its retries) before an error is raised: no
        # orphaned requests keep running after complete() has returned.
        results = await asyncio.gather(*(self._post(p) for p in payloads), return_exceptions=True)
        # Paid samples are never thrown away: return the ones that came back (the
        # engine stores them and records the rest as failed); raise only if none did.
        completions = [r[0] for r in results if not isinstance(r, BaseException) and r]
        if not completions:
            error = next((r for r in results if isinstance(r, BaseException)), None)
            raise error or TeacherError(f"{self.name}: the reply had no choices", retryable=True)
        return completions

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.max_connections, ttl_dns_cache=300)
            # Headers set once on the session: merging them per request costs CPU at high rates.
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self._headers, timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            )
        return self._session

    async def _post(self, payload: dict[str, Any]) -> list[Completion]:
        """One logical request with retries; returns its parsed choices."""
        data = json.dumps(payload).encode()
        session = self._client()
        attempts = self.max_retries + 1
        status: int | None = None
        attempt = moves = 0
        while True:
            retry_after: float | None = None
            status = None
            server = await self._take_server()
            start = time.perf_counter()
            lost: str | None = None  # why the server itself failed (not what it answered)
            try:
                async with session.post(server.url, data=data) as response:
                    raw = await response.read()
                    status = response.status
                    retry_after_header = response.headers.get("Retry-After")
            except asyncio.TimeoutError:
                lost = reason = f"no reply within {self.timeout_s:g} s"
            except aiohttp.ClientError as exc:  # refused, reset, dropped mid-reply
                lost = reason = f"connection failed ({type(exc).__name__}: {exc})"
            finally:
                self._give_back(server)
            if lost is not None and len(self._servers) > 1:
                server.down_until = time.monotonic() + self.server_down_s
                if self._others_up(server) and moves < 2 * len(self._servers):
                    # Another server can take it now: no back-off, and no retry spent on a dead server.
                    moves += 1
                    log.warning("%s: %s %s; its requests go to the other servers for %g s",
                                self.name, server.public_url, self._clean(lost), self.server_down_s)
                    continue
            if lost is None:
                latency_s = time.perf_counter() - start
                if status == 200:
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        if raw.strip() and raw.lstrip()[:1] not in (b"{", b"["):
                            # Not cut-off JSON but another kind of page (HTML, text): asking again gets the same.
                            raise TeacherError(self._clean(
                                f"{self.name}: {server.public_url} answered 200 with something that is not JSON "
                                f"({error_message(raw)[:80]!r}); is --base-url the API's …/v1 URL?"), status) from None
                        reason = "the reply was not complete JSON"
                    else:
                        try:
                            return parse_response(body, chat=self.chat, latency_s=latency_s,
                                                  top_logprobs=self.top_logprobs or None)
                        except (ValueError, TypeError, AttributeError) as exc:
                            raise TeacherError(self._clean(f"{self.name}: {server.public_url}: {exc}"), status) from None
                else:
                    message = error_message(raw)
                    if not retryable_status(status):
                        raise TeacherError(
                            self._clean(f"{self.name}: HTTP {status} from {server.public_url}: {message}"), status
                        )
                    reason = f"HTTP {status}: {message}"
                    retry_after = parse_retry_after(retry_after_header)
            attempt += 1
            if attempt == attempts:
                break
            if retry_after is not None:
                delay = min(retry_after, self.max_retry_after_s) + self._rng.uniform(0.0, self.backoff_base_s)
            else:
                delay = backoff_delay(attempt - 1, self.backoff_base_s, self.backoff_cap_s, self._rng)
            log.warning(
                "%s: attempt %d of %d failed: %s; retrying in %.2f s",
                self.name, attempt, attempts, self._clean(reason), delay,
            )
            await asyncio.sleep(delay)
        raise TeacherError(
            self._clean(f"{self.name}: {server.public_url}: gave up after {attempts} attempts; last: {reason}"),
            status,
            retryable=True,
        )

    def _clean(self, text: str) -> str:
        return redact(text, self._secrets)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
