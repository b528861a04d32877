"""OpenAICompatTeacher: pure payload/response helpers, then a real llama.cpp server.

The server tests talk to a real ``llama_cpp.server`` (Gemma 3 270M) on
127.0.0.1, directly or through the fault-injecting proxy in ``servers.py``
(a real HTTP server; only its faults are staged, because a real server cannot be
made to answer 429 or drop a connection on request).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone

import pytest

from ftcot.api_replies import backoff_delay, error_message, parse_retry_after
from ftcot.errors import FtcotError
from ftcot.teach.backends.openai_compat import (
    LLAMA_CPP_EXTRA_BODY,
    OpenAICompatTeacher,

    build_chat_payload,
    build_completions_payload,
    is_local,
    parse_response,
    prompt_to_messages,
    sample_seed,
    split_tokens,
)
from ftcot.teach.records import Completion, CompletionRequest, TeacherError
from tests.teach.servers import prime_prompt_cache

STAGE1 = "Q: Joan had 70 shells and gave some to Sam. She has 27. How many did she give?\nA: Let's think step by step."
QUESTION = "Joan had 70 shells and gave some to Sam. She has 27. How many did she give?"
RATIONALE = "She had 70.\n\n70 - 27 = 43."
STAGE2 = f"{STAGE1} {RATIONALE} \nTherefore, the answer (arabic numerals) is"
SECRET = "sk-test-SECRET123"


# --- payload builders ------------------------------------------------------------------------


def test_completions_payload_sends_only_what_the_request_sets():
    payload = build_completions_payload("m", CompletionRequest(prompt=STAGE1, max_tokens=128))
    assert payload == {"model": "m", "prompt": STAGE1, "max_tokens": 128, "temperature": 0.0}


def test_completions_payload_sampling_fields_and_extra_body_override():
    request = CompletionRequest(prompt="p", max_tokens=8, temperature=0.7, n=4, seed=3, stop=("\nQ:", "\n\n"))
    payload = build_completions_payload("m", request, {"repeat_penalty": 1.0, "temperature": 0.5})
    assert payload["n"] == 4 and payload["seed"] == 3
    assert payload["stop"] == ["\nQ:", "\n\n"]
    assert payload["repeat_penalty"] == 1.0
    assert payload["temperature"] == 0.5  # extra_body wins: it is the escape hatch
    json.dumps(payload)  # serialisable as is


def test_chat_prefill_stage1_prefills_the_trigger():
    assert prompt_to_messages(STAGE1, prefill=True) == [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "Let's think step by step."},
    ]


def test_chat_prefill_stage2_continues_the_whole_answer():
    messages = prompt_to_messages(STAGE2, prefill=True, system="Answer the question.")
    assert messages == [
        {"role": "system", "content": "Answer the question."},
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": f"Let's think step by step. {RATIONALE} \nTherefore, the answer (arabic numerals) is"},
    ]


def test_chat_without_prefill_stage1_puts_the_trigger_in_the_user_turn():
    assert prompt_to_messages(STAGE1, prefill=False) == [
        {"role": "user", "content": f"{QUESTION}\nLet's think step by step."}
    ]


def test_chat_without_prefill_stage2_replays_stage1_then_asks_for_the_answer():
    assert prompt_to_messages(STAGE2, prefill=False) == [
        {"role": "user", "content": f"{QUESTION}\nLet's think step by step."},
        {"role": "assistant", "content": RATIONALE},
        {"role": "user", "content": "Therefore, the answer (arabic numerals) is"},
    ]


def test_prefill_is_asked_for_never_assumed_on_every_path(tmp_path):
    """OpenAI answers a trailing assistant message with a new message: the default moves the trigger into the
    user turn (any server takes it); prefill=true is a teacher setting of the command, a config and the API."""
    from ftcot.errors import FtcotError
    from ftcot.experiment.config import parse_config
    from ftcot.settings import build
    from ftcot.teach.config import TeachConfig
    from ftcot.teach.run import make_backend

    base = {"task": "coin_flip", "spec": "openai:gpt-4o-mini", "chat": True}
    assert make_backend(build(TeachConfig, base), None).prefill is False
    assert make_backend(build(TeachConfig, {**base, "prefill": True}), None).prefill is True
    with pytest.raises(FtcotError, match="prefill is for chat teachers"):
        build(TeachConfig, {**base, "chat": False, "prefill": True}, surface="cli")
    config = {"tasks": ["coin_flip"], "methods": ["ft_cot"], "students": ["tiny-gpt2"]}
    with pytest.raises(FtcotError, match="prefill is for chat teachers"):
        parse_config({**config, "teachers": [{"spec": "openai:m", "prefill": True}]})
    plain, prefilled = (parse_config({**config, "teachers": [{"spec": "openai:m", "chat": True, **extra}]})
                        for extra in ({}, {"prefill": True}))
    assert plain.teachers[0].identity() != prefilled.teachers[0].identity()  # another teach stage


def test_chat_without_prefill_zero_shot_baseline_is_one_user_turn():
    prompt = f"Q: {QUESTION}\nA: The answer (arabic numerals) is"
    assert prompt_to_messages(prompt, prefill=False) == [
        {"role": "user", "content": f"{QUESTION}\nThe answer (arabic numerals) is"}
    ]


def test_chat_few_shot_exemplars_become_earlier_turns():
    prompt = "Q: 1+1?\nA: 1+1=2. The answer is 2.\nQ: 2+2?\nA: 2+2=4. The answer is 4.\nQ: 3+3?\nA:"
    assert prompt_to_messages(prompt) == [
        {"role": "user", "content": "1+1?"},
        {"role": "assistant", "content": "1+1=2. The answer is 2."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "2+2=4. The answer is 4."},
        {"role": "user", "content": "3+3?"},
    ]


def test_chat_payload_uses_messages_and_the_same_sampling_fields():
    request = CompletionRequest(prompt=STAGE1, max_tokens=16, temperature=0.7, n=2, seed=5)
    payload = build_chat_payload("m", request, {"continue_final_message": True}, prefill=True)
    assert "prompt" not in payload
    assert payload["messages"][-1] == {"role": "assistant", "content": "Let's think step by step."}
    assert (payload["n"], payload["seed"], payload["max_tokens"]) == (2, 5, 16)
    assert payload["continue_final_message"] is True


# --- response parsing ------------------------------------------------------------------------


def test_parse_completions_orders_choices_and_splits_usage():
    body = {
        "choices": [
            {"index": 1, "text": " b", "finish_reason": "length"},
            {"index": 0, "text": " a", "finish_reason": "stop"},
            {"index": 2, "text": " c", "finish_reason": None},
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 10, "total_tokens": 22},
    }
    got = parse_response(body, chat=False, latency_s=0.5)
    assert [c.text for c in got] == [" a", " b", " c"]
    assert [c.finish_reason for c in got] == ["stop", "length", "unknown"]
    assert [c.prompt_tokens for c in got] == [12, 12, 12]  # shared by the request's choices
    assert sum(c.completion_tokens for c in got) == 10
    assert all(c.latency_s == 0.5 for c in got)


def test_parse_chat_reads_message_content_and_tolerates_missing_usage():
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": " 43."}, "finish_reason": "stop"}]}
    assert parse_response(body, chat=True) == [Completion(text=" 43.", finish_reason="stop")]


@pytest.mark.parametrize("body", [{}, {"choices": None}, [], "oops"])
def test_parse_rejects_a_body_without_choices(body):
    with pytest.raises(ValueError, match="choices"):
        parse_response(body, chat=False)


def test_split_tokens_sums_to_total():
    assert split_tokens(10, 3) == [4, 3, 3]
    assert split_tokens(0, 2) == [0, 0]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"error": {"message": "bad prompt", "type": "invalid_request_error"}}', "bad prompt"),
        (b'{"detail": [{"loc": ["body", "n"], "msg": "bad"}]}', '[{"loc": ["body", "n"], "msg": "bad"}]'),
        (b'{"error": "plain"}', "plain"),
        (b"Bad Gateway", "Bad Gateway"),
        (b"", "(empty body)"),
    ],
)
def test_error_message_takes_the_servers_words(raw, expected):
    assert error_message(raw) == expected


def test_retry_after_seconds_and_http_date():
    now = 1_800_000_000.0
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after("0.5", now) == 0.5
    date = format_datetime(datetime.fromtimestamp(now + 7, tz=timezone.utc), usegmt=True)
    assert parse_retry_after(date, now) == pytest.approx(7.0)
    past = format_datetime(datetime.fromtimestamp(now - 60, tz=timezone.utc), usegmt=True)
    assert parse_retry_after(past, now) == 0.0
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("soon", now) is None


def test_backoff_is_full_jitter_under_an_exponential_cap():
    rng = random.Random(0)
    for attempt, cap in [(0, 0.5), (1, 1.0), (3, 4.0), (10, 30.0)]:
        draws = [backoff_delay(attempt, 0.5, 30.0, rng) for _ in range(200)]
        assert all(0.0 <= d <= cap for d in draws)
        assert max(draws) > 0.8 * cap and min(draws) < 0.2 * cap  # spread over the whole range


def test_sample_seeds_are_reproducible_with_a_seed_and_distinct_without():
    rng = random.Random(0)
    assert [sample_seed(7, i, rng) for i in range(3)] == [7, 8, 9]
    assert len({sample_seed(None, i, rng) for i in range(50)}) == 50


# --- construction ----------------------------------------------------------------------------


def test_missing_key_for_a_remote_server_names_the_variable(monkeypatch):
    monkeypatch.delenv("FTCOT_TEST_KEY", raising=False)
    # Built without it (a dry run sends nothing), refused before the first request.
    teacher = OpenAICompatTeacher("gpt-x", base_url="https://api.example.com/v1", api_key_env="FTCOT_TEST_KEY")
    with pytest.raises(FtcotError, match="FTCOT_TEST_KEY"):
        teacher.require_credentials()


def test_local_server_needs_no_key_unless_one_is_named_and_name_ignores_the_url(monkeypatch):
    monkeypatch.delenv("FTCOT_TEST_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    a = OpenAICompatTeacher("gemma", base_url="http://127.0.0.1:8000/v1")
    b = OpenAICompatTeacher("gemma", base_url="http://localhost:9/v1/")
    assert a.name == b.name == "openai:gemma"
    a.require_credentials()
    # A variable named on purpose means a key was meant: unset, it is refused, not sent without.
    named = OpenAICompatTeacher("gemma", base_url="http://127.0.0.1:8000/v1", api_key_env="FTCOT_TEST_KEY")
    with pytest.raises(FtcotError, match="FTCOT_TEST_KEY .api_key_env. is not set or empty"):
        named.require_credentials()
    monkeypatch.setenv("FTCOT_TEST_KEY", "")
    with pytest.raises(FtcotError, match="not set or empty"):
        OpenAICompatTeacher("gemma", base_url="http://127.0.0.1:8000/v1", api_key_env="FTCOT_TEST_KEY").require_credentials()
    assert is_local("http://[::1]:8000/v1") and not is_local("https://api.openai.com/v1")


def test_repr_never_shows_the_key(monkeypatch):
    monkeypatch.setenv("FTCOT_TEST_KEY", SECRET)
    teacher = OpenAICompatTeacher("gpt-x", base_url="https://api.example.com/v1", api_key_env="FTCOT_TEST_KEY")
    assert SECRET not in repr(teacher) and SECRET not in teacher.name


# --- against a real llama.cpp server ---------------------------------------------------------


def run(coro):
    return asyncio.run(coro)


async def complete(teacher: OpenAICompatTeacher, *requests: CompletionRequest) -> list[list[Completion]]:
    try:
        return list(await asyncio.gather(*(teacher.complete(r) for r in requests)))
    finally:
        await teacher.aclose()


def llama(base_url: str, **kwargs) -> OpenAICompatTeacher:
    options = {"extra_body": LLAMA_CPP_EXTRA_BODY, "backoff_base_s": 0.05}
    options.update(kwargs)
    return OpenAICompatTeacher("gemma-3-270m", base_url=base_url, **options)


@pytest.fixture(autouse=True)
def _no_key(monkeypatch):
    monkeypatch.delenv("FTCOT_TEST_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a local server gets none


@pytest.mark.slow
def test_greedy_completion_is_deterministic(llama_server):
    request = CompletionRequest(prompt=STAGE1, max_tokens=12)
    prime_prompt_cache(llama_server, STAGE1)  # a first request's numerics differ from a repeat's (see there)
    [first], [second] = run(complete(llama(llama_server), request, request))
    assert first.text.strip()
    assert first.text == second.text


@pytest.mark.slow
def test_n_samples_come_back_distinct_even_though_llama_cpp_ignores_n(llama_server, proxy):
    via = proxy(llama_server)
    teacher = llama(via.base_url)
    assert teacher.supports_n  # not known yet: learnt from the first short reply
    request = CompletionRequest(prompt=STAGE1, max_tokens=12, temperature=0.7, seed=11, n=3)
    prime_prompt_cache(llama_server, STAGE1)  # every sample below is a repeat: the same numerics
    (samples,) = run(complete(teacher, request))
    assert len(samples) == 3
    assert len({c.text for c in samples}) == 3
    assert teacher.supports_n is False
    assert via.count("/completions") == 3 and not via.repeated()  # one request per sample, none resent

    # Known up front, the same seeds give the same samples.
    again = llama(llama_server, supports_n=False)
    (resampled,) = run(complete(again, request))
    assert [c.text for c in resampled] == [c.text for c in samples]


@pytest.mark.slow
def test_usage_finish_reason_and_latency_are_parsed(llama_server):
    [short], [stopped] = run(
        complete(
            llama(llama_server),
            CompletionRequest(prompt=STAGE1, max_tokens=5),
            CompletionRequest(prompt="Q: What is 2 + 3?\nA:", max_tokens=64, stop=("\n", ".", " ")),
        )
    )
    assert short.finish_reason == "length"
    assert short.completion_tokens == 5
    assert short.prompt_tokens > 10
    assert short.latency_s > 0
    assert stopped.finish_reason == "stop"
    assert stopped.completion_tokens < 64


@pytest.mark.slow
def test_chat_mode_against_a_real_chat_endpoint(llama_server, proxy):
    via = proxy(llama_server)
    teacher = llama(via.base_url, chat=True, prefill=False)
    [got] = run(complete(teacher, CompletionRequest(prompt=STAGE1, max_tokens=8)))
    assert via.per_path() == {"/v1/chat/completions": 1}
    sent = json.loads(via.seen[0].body)
    assert sent["messages"] == [{"role": "user", "content": f"{QUESTION}\nLet's think step by step."}]
    # The base model may end its turn at once (llama-2 chat format): the text can be empty.
    assert isinstance(got[0].text, str) and got[0].prompt_tokens > len(QUESTION.split())
    assert got[0].finish_reason in ("length", "stop")


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["429", "500", "hang", "drop"])
def test_a_transient_fault_is_retried_and_the_request_completes(llama_server, proxy, fault, caplog):
    via = proxy(llama_server, faults={1: fault}, retry_after="1")
    # The hung request must time out; the real one (2 tokens) must not, even on a busy machine.
    teacher = llama(via.base_url, timeout_s=8 if fault == "hang" else 60)
    request = CompletionRequest(prompt=STAGE1, max_tokens=2)
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="ftcot.teach.backends.openai_compat"):
        (got,) = run(complete(teacher, request))
    elapsed = time.perf_counter() - started
    assert len(got) == 1 and got[0].text and got[0].finish_reason == "length"
    assert via.seen[0].fault == fault
    assert len(via.per_body()) == 1  # every attempt resent the same body
    if fault == "hang":
        # On a busy machine the real request may itself outlast the short timeout once more.
        assert via.count() >= 2
    else:
        assert via.count() == 2
    assert "attempt 1 of 7 failed" in caplog.text
    if fault == "429":
        assert elapsed >= 1.0  # Retry-After honoured
    if fault == "hang":
        assert elapsed >= 8.0


@pytest.mark.slow
def test_retry_after_as_an_http_date_is_honoured(llama_server, proxy):
    when = datetime.now(timezone.utc) + timedelta(seconds=3)
    via = proxy(llama_server, faults={1: "429"}, retry_after=format_datetime(when, usegmt=True))
    started = time.perf_counter()
    (got,) = run(complete(llama(via.base_url), CompletionRequest(prompt=STAGE1, max_tokens=4)))
    # The header has whole seconds, so the wait is between 2 and 3 s from "now".
    assert time.perf_counter() - started >= 1.9
    assert got[0].text and via.count() == 2


@pytest.mark.slow
def test_giving_up_after_the_last_retry_is_retryable(llama_server, proxy):
    via = proxy(llama_server, faults={1: "500", 2: "500", 3: "500"})
    with pytest.raises(TeacherError) as caught:
        run(complete(llama(via.base_url, max_retries=2), CompletionRequest(prompt=STAGE1, max_tokens=4)))
    assert caught.value.retryable is True and caught.value.status == 500
    assert "gave up after 3 attempts" in str(caught.value) and "internal error (injected)" in str(caught.value)
    assert via.count() == 3


@pytest.mark.slow
def test_a_400_from_the_server_raises_at_once_with_its_message(llama_server, proxy):
    via = proxy(llama_server)
    too_long = "Q: " + "seashells " * 3000 + "\nA:"  # > n_ctx 2048 tokens: llama.cpp answers 400
    with pytest.raises(TeacherError) as caught:
        run(complete(llama(via.base_url), CompletionRequest(prompt=too_long, max_tokens=4)))
    assert caught.value.status == 400 and caught.value.retryable is False
    assert "context" in str(caught.value).lower()
    assert via.count() == 1  # not retried


@pytest.mark.slow
def test_the_api_key_is_sent_but_never_shown(llama_server, proxy, monkeypatch, caplog):
    monkeypatch.setenv("FTCOT_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    errors: list[TeacherError] = []

    # Retries logged, then a give-up; a server that echoes the key; a plain 400.
    for faults, max_retries, prompt in [
        ({1: "500", 2: "drop"}, 1, STAGE1),
        ({1: "401-echo"}, 3, STAGE1),
        ({}, 3, "Q: " + "seashells " * 3000 + "\nA:"),
    ]:
        via = proxy(llama_server, faults=faults)
        with pytest.raises(TeacherError) as caught:
            run(complete(llama(via.base_url, max_retries=max_retries, api_key_env="FTCOT_TEST_KEY"),
                         CompletionRequest(prompt=prompt, max_tokens=4)))
        errors.append(caught.value)
        assert {s.authorization for s in via.seen} == {f"Bearer {SECRET}"}  # it was sent every time

    assert [e.status for e in errors] == [None, 401, 400]
    assert "Incorrect API key provided: Bearer ***" in str(errors[1])
    shown = caplog.text + "".join(f"{e!s}{e!r}{e.args}" for e in errors)
    assert "attempt 1 of 2 failed" in caplog.text
    assert SECRET not in shown and "SECRET123" not in shown


@pytest.mark.slow
def test_many_concurrent_requests_each_sent_once(llama_server, proxy):
    via = proxy(llama_server)
    requests = [CompletionRequest(prompt=f"Q: What is {i} + {i}?\nA:", max_tokens=4) for i in range(8)]
    results = run(complete(llama(via.base_url), *requests))
    assert [len(r) for r in results] == [1] * 8
    assert via.count() == 8 and not via.repeated()


def test_redact_makes_every_url_public_and_replaces_the_secrets():
    from ftcot.api_replies import redact, url_secrets

    base = "http://u:pw-secret@h:8080/v1?token=tok-secret&v=1"
    text = (f"HTTP 401 from {base}: bad; aiohttp: URL('{base}'). key sk-123456 "
            f"(echo: token tok-secret, Basic dTpwdy1zZWNyZXQ=)")
    clean = redact(text, ["sk-123456", *url_secrets(base)])
    assert clean == ("HTTP 401 from http://h:8080/v1: bad; aiohttp: URL('http://h:8080/v1'). key *** "
                     "(echo: token ***, Basic ***)")
    assert url_secrets("http://h/v1?v=1") == []  # a 1-character flag is not a key


def test_the_query_string_of_the_base_url_follows_the_endpoint_path():
    from ftcot.api_replies import endpoint

    assert endpoint("http://h/v1?token=x", "completions") == "http://h/v1/completions?token=x"
    assert endpoint("https://h:1/v1/", "/chat/completions") == "https://h:1/v1/chat/completions"


def test_retries_and_giving_up_show_no_credential_of_the_url(stub, caplog):
    """A 500 that echoes the request's URL and Basic auth: retried, logged and raised without either."""
    import base64

    server = stub(outage=500, echo=True)
    base_url = server.base_url.replace("http://", "http://alice:pw-secret-5555@") + "?token=tok-secret-6666"
    teacher = OpenAICompatTeacher("m", base_url=base_url, api_key_env="FTCOT_TEST_UNSET_KEY", max_retries=2,
                                  backoff_base_s=0.01)

    async def ask() -> None:
        try:
            await teacher.complete(CompletionRequest("Q: 1+1?\nA:", 4))
        finally:
            await teacher.aclose()

    with caplog.at_level(logging.WARNING), pytest.raises(TeacherError) as error:
        asyncio.run(ask())
    assert error.value.retryable and server.count() == 3 and len(caplog.records) == 2
    basic = base64.b64encode(b"alice:pw-secret-5555").decode()
    assert set(server.urls) == {"/v1/completions?token=tok-secret-6666"}  # sent, with the query after the path
    for shown in (str(error.value), caplog.text):
        assert "stub outage" in shown and "http://127.0.0.1:" in shown
        assert "pw-secret-5555" not in shown and "tok-secret-6666" not in shown and basic not in shown
