"""Teacher log-probabilities (``top_logprobs``): settings, both OpenAI reply shapes, llama.cpp, hf, the store.

Servers are real: the stub OpenAI-compatible server (``stub(logprobs=True)`` answers a request that asks with
deterministic log-probabilities, see :func:`tests.teach.stub_openai.stub_logprobs`), the Batch API test
server with the same answers, and (``slow``) a real llama.cpp server serving Gemma 3 270M. The hf teacher
runs tiny-gpt2 (random init, built from a config).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import signal
import sqlite3
import subprocess
import time
from typing import Any

import numpy as np
import pytest

import ftcot
from ftcot.errors import FtcotError
from ftcot.experiment.config import parse_config
from ftcot.jsonl import read_jsonl
from ftcot.models import load_model
from ftcot.settings import build
from ftcot.teach.backends import make_teacher
from ftcot.teach.backends.hf import HFTeacher, score_top_logprobs
from ftcot.teach.backends.openai_compat import (
    LLAMA_CPP_EXTRA_BODY,
    OpenAICompatTeacher,
    build_chat_payload,
    build_completions_payload,
    parse_response,
)
from ftcot.teach.batch import BatchClient, teach_batch
from ftcot.teach.config import TeachConfig
from ftcot.teach.engine import teach
from ftcot.teach.export import export
from ftcot.teach.plan import TeachSettings
from ftcot.teach.records import Completion, CompletionRequest, TopLogprobs
from ftcot.teach.store import STORE_FILE, StoredCompletion, TeachStore, decode_logprobs, encode_logprobs
from tests.cli import assert_one_line_error, run_ftcot
from tests.teach.batch_server import BatchServer
from tests.teach.servers import prime_prompt_cache
from tests.teach.stub_openai import stub_logprobs, stub_tokens
from tests.teach.test_cli_teach import cli_env, coin_task_file, ftcot_command
from tests.teach.test_engine import small_task

BASE = {"task": "coin_flip", "spec": "openai:m"}
EXPERIMENT = {"tasks": ["coin_flip"], "methods": ["ft_cot"], "students": ["tiny-gpt2"]}


def stub_teacher(server: Any, k: int = 3, chat: bool = False, **options: Any) -> OpenAICompatTeacher:
    return OpenAICompatTeacher("stub", base_url=server.base_url, supports_n=False, max_retries=0, chat=chat,
                               top_logprobs=k, **options)


def asked(body: dict) -> bool:
    return "logprobs" in body or "top_logprobs" in body


def all_rows(store: TeachStore) -> list[StoredCompletion]:
    return list(store.completions())


def expected_top(text: str, k: int) -> tuple[list[str], list[float], list[list[str]], list[list[float]]]:
    """What the stub's log-probabilities of ``text`` read back as, cut to K."""
    tokens = stub_tokens(text)
    chosen = [-0.25 * (t % 4) for t in range(len(tokens))]
    top = [[token] + [f"alt{j}" for j in range(1, k)] for token in tokens]
    return tokens, chosen, top, [[lp - j for j in range(k)] for lp in chosen]


def assert_stub_top(top: TopLogprobs, text: str, k: int) -> None:
    tokens, chosen, alternatives, values = expected_top(text, k)
    assert top.k == k and len(top) == len(tokens) and top.ids is None
    assert list(top.chosen_tokens) == tokens and [list(row) for row in top.tokens] == alternatives
    np.testing.assert_allclose(top.chosen_logprobs, chosen, atol=1e-3)  # float16 in the store
    np.testing.assert_allclose(top.logprobs, values, rtol=1e-3)


# -- the setting ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, 5, 20])
def test_top_logprobs_in_range_is_taken_on_every_surface(value):
    assert build(TeachConfig, {**BASE, "top_logprobs": value}, surface="cli").top_logprobs == value
    teacher = parse_config({**EXPERIMENT, "teachers": [{"spec": "openai:m", "top_logprobs": value}]}).teachers[0]
    assert teacher.top_logprobs == value


@pytest.mark.parametrize("value, message", [(21, "in [0, 20]"), (-1, "in [0, 20]"), (True, "not true or false"),
                                            (2.0, "valid integer"), ("5", "valid integer")])
def test_top_logprobs_out_of_range_or_not_a_whole_number_is_refused_on_every_surface(tmp_path, value, message):
    with pytest.raises(FtcotError, match="top_logprobs") as caught:
        build(TeachConfig, {**BASE, "top_logprobs": value}, surface="api", where="teach()")
    assert message in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(FtcotError, match=r"teachers\[0\]\.top_logprobs"):
        parse_config({**EXPERIMENT, "teachers": [{"spec": "openai:m", "top_logprobs": value}]})
    with pytest.raises(FtcotError, match="top_logprobs"):
        ftcot.teach("coin_flip", "openai:m", tmp_path / "out", top_logprobs=value)
    assert not (tmp_path / "out").exists()


def test_the_command_line_refuses_a_bad_value_in_one_line(tmp_path):
    result = run_ftcot("teach", "--task", "coin_flip", "--teacher", "openai:m", "--out", tmp_path / "run",
                       "--teacher-args", "base_url=http://127.0.0.1:9/v1,top_logprobs=21")
    assert_one_line_error(result, "--teacher-args top_logprobs", "[0, 20]")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("spec", ["openai:m", "hf:tiny-gpt2"])
def test_the_setting_reaches_the_backend(spec):
    from ftcot.teach.run import make_backend

    assert make_backend(build(TeachConfig, {**BASE, "spec": spec, "top_logprobs": 2}), None).top_logprobs == 2
    assert make_backend(build(TeachConfig, {**BASE, "spec": spec}), None).top_logprobs == 0


def test_a_replay_teacher_has_no_log_probabilities():
    with pytest.raises(FtcotError, match="replay: teacher returns recorded text") as caught:
        build(TeachConfig, {**BASE, "spec": "replay:text-davinci-002", "top_logprobs": 5})
    assert "\n" not in str(caught.value)
    with pytest.raises(FtcotError, match="replay: teacher"):
        parse_config({**EXPERIMENT, "teachers": [{"spec": "replay:text-davinci-002", "top_logprobs": 5}]})


def test_unset_it_changes_no_key_record_or_request_and_set_it_changes_no_store_key():
    plain = build(TeachConfig, BASE)
    assert "top_logprobs" not in plain.backend_options()
    assert build(TeachConfig, {**BASE, "top_logprobs": 4}).backend_options()["top_logprobs"] == 4
    # The experiment's teach stage: unchanged without it (stages made before keep their keys), another with it.
    identities = [parse_config({**EXPERIMENT, "teachers": [{"spec": "openai:m", **extra}]}).teachers[0].identity()
                  for extra in ({}, {"top_logprobs": 0}, {"top_logprobs": 4})]
    assert identities[0] == identities[1] == {"spec": "openai:m", "base_url": None, "chat": False,
                                              "extra_body": None, "max_tokens": None}
    assert identities[2] == {**identities[0], "top_logprobs": 4}
    # The run's recorded settings: as before without it.
    settings = TeachSettings("coin_flip", "test", "openai:m", "zs_cot")
    assert "top_logprobs" not in settings.to_json()
    assert TeachSettings.from_json(dataclasses.replace(settings, top_logprobs=4).to_json()).top_logprobs == 4
    # The teacher's name (in every store key) and the request body without it are those of before.
    with_k, without = (OpenAICompatTeacher("m", base_url="http://127.0.0.1:9/v1", top_logprobs=k) for k in (4, 0))
    assert with_k.name == without.name == "openai:m"
    request = CompletionRequest("Q: x\nA:", 8)
    assert without.payload(request) == build_completions_payload("m", request) == {
        "model": "m", "prompt": "Q: x\nA:", "max_tokens": 8, "temperature": 0.0}


# -- the OpenAI shapes ----------------------------------------------------------------------------


def test_payloads_ask_each_endpoint_in_its_own_spelling_and_extra_body_still_wins():
    request = CompletionRequest("Q: x\nA:", 8)
    assert build_completions_payload("m", request, top_logprobs=5)["logprobs"] == 5
    chat = build_chat_payload("m", request, top_logprobs=5)
    assert (chat["logprobs"], chat["top_logprobs"]) == (True, 5)
    assert build_completions_payload("m", request, {"logprobs": 2}, top_logprobs=5)["logprobs"] == 2


def test_the_legacy_shape_is_sorted_and_cut_to_k_and_the_chat_shape_read_as_it_is():
    text = " The coin is flipped."
    legacy = {"choices": [{"text": text, "finish_reason": "stop", "logprobs": stub_logprobs(text, 3, chat=False)}]}
    (completion,) = parse_response(legacy, chat=False, top_logprobs=3)
    assert len(stub_logprobs(text, 3, chat=False)["top_logprobs"][0]) == 4  # one more than asked, as llama.cpp
    assert_stub_top(completion.logprobs, text, 3)
    chat = {"choices": [{"message": {"content": text}, "finish_reason": "stop",
                         "logprobs": stub_logprobs(text, 3, chat=True)}]}
    (completion,) = parse_response(chat, chat=True)
    assert_stub_top(completion.logprobs, text, 3)


def test_vllm_token_ids_are_kept_as_ids_and_short_rows_are_padded():
    logprobs = {"tokens": ["token_id:17", "token_id:5"], "token_logprobs": [-0.5, -1.0],
                "top_logprobs": [{"token_id:17": -0.5, "token_id:3": -1.5}, {"token_id:5": -1.0}]}
    (completion,) = parse_response({"choices": [{"text": "ab", "logprobs": logprobs}]}, chat=False, top_logprobs=2)
    top = completion.logprobs
    assert top.tokens is None and top.chosen_ids.tolist() == [17, 5] and top.ids.tolist() == [[17, 3], [5, -1]]
    assert top.logprobs[1, 1] == -np.inf and top.ids.dtype == np.int32 and top.logprobs.dtype == np.float32


def test_a_reply_without_them_has_none_and_a_malformed_top_k_keeps_the_paid_text():
    (plain,) = parse_response({"choices": [{"text": "a", "logprobs": None}]}, chat=False)
    assert plain.logprobs is None
    bad = {"choices": [{"text": "a", "logprobs": {"tokens": ["a"], "token_logprobs": [-1.0, -2.0]}}]}
    (kept,) = parse_response(bad, chat=False)
    assert (kept.text, kept.logprobs) == ("a", None)


# -- the store -------------------------------------------------------------------------------------


def row(key: str, text: str, temperature: float = 0.0) -> StoredCompletion:
    return StoredCompletion(key, "openai:m", "answer", 0, 0, "p", 8, temperature, (), None, text, "stop", 3, 2, 0.1,
                            "r", time.time())


def random_top(length: int, k: int, ids: bool, seed: int = 0) -> TopLogprobs:
    rng = np.random.default_rng(seed)
    values = -np.sort(rng.exponential(3, (length, k)).astype(np.float32), axis=1)
    values[-1, -1] = -np.inf  # a padded alternative
    chosen = values[:, 0].copy()
    if ids:
        table = rng.integers(0, 262_144, (length, k), dtype=np.int32)
        table[-1, -1] = -1
        return TopLogprobs(chosen, values, chosen_ids=table[:, 0].copy(), ids=table)
    tokens = tuple(tuple(f"tok{t}.{j}é" for j in range(k - 1)) + ("" if t == length - 1 else "x",)
                   for t in range(length))
    return TopLogprobs(chosen, values, chosen_tokens=tuple(r[0] for r in tokens), tokens=tokens)


@pytest.mark.parametrize("ids", [True, False])
def test_the_store_round_trips_a_top_k_in_float16(tmp_path, ids):
    top = random_top(50, 20, ids)
    back = decode_logprobs(*encode_logprobs(top))
    assert (back.k, len(back)) == (20, 50)
    np.testing.assert_allclose(back.logprobs, top.logprobs, rtol=1e-3)  # float16: 2^-11 relative
    assert back.logprobs[-1, -1] == -np.inf
    if ids:
        assert back.ids.tolist() == top.ids.tolist() and back.chosen_ids.tolist() == top.chosen_ids.tolist()
    else:
        assert back.tokens == top.tokens and back.chosen_tokens == top.chosen_tokens
    with TeachStore.open(tmp_path) as store:
        store.add_completions([row("a", "text")], logprobs={"a": top})
        (found,) = store.top_logprobs(["a", "missing"]).values()
        np.testing.assert_array_equal(found.logprobs, back.logprobs)
        assert store.logprobs_k(["a", "missing"]) == {"a": 20}
    empty = decode_logprobs(*encode_logprobs(TopLogprobs.from_positions([], 5)))
    assert (len(empty), empty.k) == (0, 5)


def test_a_top_k_is_kept_only_for_the_stored_text_and_a_larger_k_replaces_a_smaller(tmp_path):
    with TeachStore.open(tmp_path) as store:
        store.add_completions([row("a", "first")], logprobs={"a": random_top(3, 2, True)})
        # The same key again with another text (a greedy reply that came back different): text and top-K kept.
        assert store.add_completions([row("a", "second")], logprobs={"a": random_top(4, 5, True)}) == 0
        assert store.logprobs_k(["a"]) == {"a": 2} and store.get("a").text == "first"
        store.add_completions([row("a", "first")], logprobs={"a": random_top(3, 5, True, seed=1)})
        assert store.logprobs_k(["a"]) == {"a": 5}
        store.add_completions([row("a", "first")], logprobs={"a": random_top(3, 1, True)})
        assert store.logprobs_k(["a"]) == {"a": 5}  # a smaller K never replaces a larger one
        with pytest.raises(FtcotError), store._transaction():
            store._db.execute("DELETE FROM logprobs")


def test_a_store_made_before_them_opens_and_gets_the_table_when_written(tmp_path):
    with TeachStore.open(tmp_path) as store:
        store.add_completions([row("a", "text")])
    with sqlite3.connect(tmp_path / STORE_FILE) as db:  # as an ftcot without the table left it
        db.executescript("DROP TRIGGER logprobs_no_delete; DROP TABLE logprobs;")
    with TeachStore.open_readonly(tmp_path) as store:
        assert store.logprobs_k(["a"]) == {} and store.top_logprobs(["a"]) == {} and store.count() == 1
    with TeachStore.open(tmp_path) as store:
        store.add_completions([row("b", "text")], logprobs={"b": random_top(2, 3, True)})
        assert store.logprobs_k(["a", "b"]) == {"b": 3}


# -- runs against the stub server ----------------------------------------------------------------


@pytest.mark.parametrize("chat", [False, True])
def test_a_run_stores_every_completion_with_its_top_k_and_a_rerun_sends_nothing(tmp_path, data_root, stub, chat):
    server = stub(logprobs=True)
    task = small_task(data_root)
    with TeachStore.open(tmp_path) as store:
        summary = teach(task, "test", stub_teacher(server, 3, chat=chat), "zs_cot", store=store)
        assert (summary.complete_chains, summary.requests, summary.failed) == (4, 8, 0)
        assert all(asked(body) for body in server.requests())
        rows = all_rows(store)
        found = store.top_logprobs(r.key for r in rows)
        assert len(found) == len(rows) == 8
        for r in rows:
            assert_stub_top(found[r.key], r.text, 3)
        again = teach(task, "test", stub_teacher(server, 3, chat=chat), "zs_cot", store=store)
        assert (again.requests, again.cached, server.count()) == (0, 8, 8)
        assert len(store.top_logprobs(r.key for r in rows)) == 8


def test_stored_greedy_completions_are_asked_again_for_them_once_and_keep_their_text(tmp_path, data_root, stub):
    server = stub(logprobs=True)
    task = small_task(data_root)
    with TeachStore.open(tmp_path) as store:
        teach(task, "test", stub_teacher(server, 0), "zs_cot", store=store)
        before = {r.key: r for r in all_rows(store)}
        assert server.count() == 8 and not any(asked(b) for b in server.requests())
        assert store.top_logprobs(before) == {}

        dry = teach(task, "test", stub_teacher(server, 3), "zs_cot", store=store, dry_run=True)
        assert dry.estimated_requests == 8  # 4 rationales and 4 answers asked again, none twice
        refetch = teach(task, "test", stub_teacher(server, 3), "zs_cot", store=store)
        assert (refetch.requests, refetch.new, refetch.failed, refetch.complete_chains) == (8, 0, 0, 4)
        assert server.count() == 16 and all(asked(b) for b in server.requests()[8:])
        assert {r.key: r for r in all_rows(store)} == before  # the same rows, none added or changed
        found = store.top_logprobs(before)
        assert len(found) == 8 and all(found[key].k == 3 for key in before)

        more = teach(task, "test", stub_teacher(server, 5), "zs_cot", store=store)  # a larger K: again
        assert more.requests == 8 and set(store.logprobs_k(before).values()) == {5}
        for k in (5, 2, 0):  # as many or fewer: nothing
            assert teach(task, "test", stub_teacher(server, k), "zs_cot", store=store).requests == 0
        assert server.count() == 24


def test_sampled_rationales_are_never_asked_again_only_their_greedy_answers(tmp_path, data_root, stub):
    server = stub(logprobs=True)
    task = small_task(data_root)
    with TeachStore.open(tmp_path) as store:
        teach(task, "test", stub_teacher(server, 0), "zs_cot", samples=2, temperature=0.7, store=store)
        assert server.count() == 16
        summary = teach(task, "test", stub_teacher(server, 3), "zs_cot", samples=2, temperature=0.7, store=store)
        again = server.requests()[16:]
        assert summary.requests == len(again) == 8  # the 8 answers (greedy), no rationale (sampled)
        assert all(b["temperature"] == 0 and b["prompt"].rstrip().endswith(" is") for b in again)
        rows = all_rows(store)
        have = store.logprobs_k(r.key for r in rows)
        assert {r.stage for r in rows if r.key in have} == {"answer"} and len(have) == 8


def test_a_top_up_asks_a_shared_answer_again_once(tmp_path, data_root, stub):
    """Every sample's rationale the same: one answer per question, stored without them, which the top-up's new
    rationale needs too. It is asked again once (planned for the stored rationales; the new one waits for it)."""
    server = stub(logprobs=True, same_rationale=True)
    task = small_task(data_root)
    with TeachStore.open(tmp_path) as store:
        teach(task, "test", stub_teacher(server, 0), "zs_cot", samples=2, temperature=0.7, store=store)
        assert server.count() == 12  # 8 rationales, 4 answers
        summary = teach(task, "test", stub_teacher(server, 3), "zs_cot", samples=3, temperature=0.7, store=store)
        assert (summary.requests, summary.complete_chains, summary.failed) == (8, 12, 0)  # 4 rationales, 4 answers
        rows = all_rows(store)
        have = store.logprobs_k(r.key for r in rows)
        answers = [r for r in rows if r.stage == "answer"]
        assert len(answers) == 4 and all(r.key in have for r in answers)
        assert sum(r.key in have for r in rows if r.stage == "reasoning") == 4  # the new samples only


def test_a_greedy_reply_that_comes_back_different_keeps_the_stored_text_without_them(tmp_path, data_root, stub):
    server = stub(logprobs=True)
    task = small_task(data_root, n=1)
    with TeachStore.open(tmp_path) as store:
        teach(task, "test", stub_teacher(server, 0), "zs", store=store)
        (stored,) = all_rows(store)
    # The same key stored with another text: as if the server's greedy text had changed since.
    with sqlite3.connect(tmp_path / STORE_FILE) as db:
        db.executescript("DROP TRIGGER completions_no_update;")
        db.execute("UPDATE completions SET text = ' no.' WHERE key = ?", (stored.key,))
    with TeachStore.open(tmp_path) as store:
        summary = teach(task, "test", stub_teacher(server, 3), "zs", store=store)
        assert (summary.requests, summary.failed) == (1, 1)
        assert "came back with another text" in store.failures()[-1].message
        assert store.get(stored.key).text == " no." and store.logprobs_k([stored.key]) == {}


def test_a_server_that_ignores_the_ask_stores_the_text_and_says_so(tmp_path, data_root, stub, capsys):
    from rich.console import Console

    server = stub()  # no log-probabilities ever
    with TeachStore.open(tmp_path) as store:
        summary = teach(small_task(data_root, n=2), "test", stub_teacher(server, 3), "zs_cot", store=store,
                        console=Console(stderr=True, width=300))
        assert (summary.complete_chains, summary.new) == (2, 4)
        assert store.logprobs_k(r.key for r in all_rows(store)) == {}
    assert "without the log-probabilities asked for (top_logprobs=3)" in capsys.readouterr().err


def test_export_adds_them_only_when_asked(tmp_path, data_root, stub):
    server = stub(logprobs=True)
    with TeachStore.open(tmp_path / "run") as store:
        teach(small_task(data_root, n=2), "test", stub_teacher(server, 2), "zs_cot", store=store)
        export(store, tmp_path / "plain.jsonl")
        export(store, tmp_path / "with.jsonl", logprobs=True)
    plain = [r for _, r in read_jsonl(tmp_path / "plain.jsonl")]
    full = [r for _, r in read_jsonl(tmp_path / "with.jsonl")]
    assert all("logprobs" not in r for r in plain)
    assert [{k: v for k, v in r.items() if k != "logprobs"} for r in full] == plain
    for record in full:
        answer = record["logprobs"]["answer"]
        tokens = stub_tokens(record["answer_completion"])
        assert answer["k"] == 2 and [t[0] for t in answer["tokens"]] == tokens
        assert answer["tokens"][0] == [tokens[0], tokens[0], "alt1"] and answer["logprobs"][0] == [0.0, 0.0, -1.0]
        assert [t[0] for t in record["logprobs"]["reasoning"]["tokens"]] == stub_tokens(
            record["reasoning_completion"])
    # The command: the same file with --logprobs, the plain one without.
    from tests.cli import run_ftcot

    for flag, expected in (("--logprobs", "with.jsonl"), (None, "plain.jsonl")):
        target = tmp_path / f"cli-{expected}"
        result = run_ftcot("teach", "export", tmp_path / "run", "--out", target, *([flag] if flag else []))
        assert result.returncode == 0, result.stderr
        assert target.read_bytes() == (tmp_path / expected).read_bytes()


class LogprobBatchServer(BatchServer):
    """The Batch API test server, answering a line that asks for log-probabilities as the stub does."""

    def _reply(self, url: str, body: dict[str, Any], request_id: str) -> tuple[int, dict[str, Any]]:
        status, reply = super()._reply(url, body, request_id)
        chat = url == "/v1/chat/completions"
        k = body.get("top_logprobs") if chat else body.get("logprobs")
        for choice in reply.get("choices", []) if k else []:
            text = choice["message"]["content"] if chat else choice["text"]
            choice["logprobs"] = stub_logprobs(text, k, chat)
        return status, reply


@pytest.mark.parametrize("chat", [False, True])
def test_a_batch_run_asks_for_them_in_every_line_and_stores_them_with_their_completions(tmp_path, data_root, chat):
    server = LogprobBatchServer()
    try:
        teacher = make_teacher("openai:gpt-4o-mini", base_url=server.base_url, chat=chat, top_logprobs=3)
        client = BatchClient(server.base_url, None, backoff_base_s=0.01)
        with TeachStore.open(tmp_path) as store:
            summary = teach_batch(small_task(data_root), "test", teacher, "zs_cot", store=store, poll_interval_s=0.01,
                                  client=client)
            client.close()
            assert summary.complete_chains == 4
            lines = [line for batch in server.batches for line in server.input_lines(batch)]
            assert len(lines) == 8 and all(asked(line["body"]) for line in lines)
            rows = all_rows(store)
            found = store.top_logprobs(r.key for r in rows)
            assert len(found) == 8
            for r in rows:  # the legacy shape's extra alternative is cut to the K asked for
                assert_stub_top(found[r.key], r.text, 3)
    finally:
        server.close()


def test_a_run_killed_with_sigkill_keeps_every_stored_completion_with_its_top_k(tmp_path, stub):
    """A completion and its top-K are one transaction: whatever a kill -9 leaves has both, and the rerun asks
    for what is missing only."""
    server = stub(logprobs=True, delay_s=0.3)
    run_dir, questions = tmp_path / "run", 5
    args = ["teach", "--task", coin_task_file(tmp_path, questions), "--answer-type", "yes/no", "--split", "test",
            "--teacher", "openai:stub", "--out", run_dir,
            "--teacher-args", f"base_url={server.base_url},concurrency=1,max_tokens=16,top_logprobs=4"]
    process = subprocess.Popen(ftcot_command(*args), env=cli_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline, stored = time.monotonic() + 240, 0
    while time.monotonic() < deadline and process.poll() is None and stored < 3:
        try:
            with TeachStore.open_readonly(run_dir) as store:
                stored = store.count()
        except FtcotError:  # not there, or not initialised yet
            pass
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed; make it slower"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    with TeachStore.open_readonly(run_dir) as store:
        keys = [r.key for r in store.completions()]
        assert 3 <= len(keys) < 2 * questions and set(store.logprobs_k(keys).values()) == {4}
        assert len(store.logprobs_k(keys)) == len(keys)
    before, sent = len(keys), server.count()
    result = subprocess.run(ftcot_command(*args), env=cli_env(), capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr
    with TeachStore.open_readonly(run_dir) as store:
        keys = [r.key for r in store.completions()]
        assert len(keys) == 2 * questions and len(store.logprobs_k(keys)) == 2 * questions
    # The rerun asked for exactly what was missing (the request in flight at the kill among it).
    assert server.count() - sent == 2 * questions - before


# -- hf: -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-gpt2", dtype="float32", device="cpu")


def test_the_hf_teacher_scores_its_completions_with_token_ids(tiny):
    teacher = HFTeacher("tiny-gpt2", loaded=tiny, top_logprobs=5, max_wait_s=0.05)
    prompts = [f"Q: Is coin {i} heads up?\nA: Let's think step by step." for i in range(3)]

    async def main() -> list[list[Completion]]:
        try:
            return await asyncio.gather(*(teacher.complete(CompletionRequest(p, max_tokens=12)) for p in prompts))
        finally:
            await teacher.aclose()

    for prompt, (completion,) in zip(prompts, asyncio.run(main())):
        top = completion.logprobs
        assert top.k == 5 and top.ids.dtype == np.int32 and top.tokens is None
        assert len(top) == len(tiny.tokenizer(completion.text, add_special_tokens=False)["input_ids"])
        assert np.all(np.diff(top.logprobs, axis=1) <= 0)  # most likely first
        assert np.all(top.logprobs[:, 0] >= top.chosen_logprobs - 1e-5)
        # Greedy: the token at each position is the one the model found most likely there, except where it
        # generated a byte the text cannot hold (random tiny-gpt2 writes a lone 0xC0): the text's next one is.
        assert top.chosen_ids.tolist() == tiny.encode_prompt(prompt + completion.text)[len(tiny.encode_prompt(prompt)):]
        for chosen, best, value, best_value in zip(top.chosen_ids, top.ids[:, 0], top.chosen_logprobs,
                                                   top.logprobs[:, 0]):
            assert (chosen == best and value == pytest.approx(best_value, abs=1e-5)) or tiny.tokenizer.decode(
                [int(best)]) in ("", "\ufffd")
        assert np.all(np.exp(top.logprobs).sum(axis=1) <= 1 + 1e-4)


def test_hf_scoring_matches_a_plain_forward_pass(tiny):
    import torch

    prompt, text = "Q: Is the coin heads up?\nA:", " Yes, it is."
    top = score_top_logprobs(tiny, prompt, text, 3)
    prompt_ids = tiny.encode_prompt(prompt)
    ids = tiny.encode_prompt(prompt + text)
    with torch.no_grad():
        logprobs = torch.log_softmax(tiny.model(torch.tensor([ids])).logits[0].float(), -1)
    expected = logprobs[len(prompt_ids) - 1:-1]
    assert top.chosen_ids.tolist() == ids[len(prompt_ids):]
    np.testing.assert_allclose(top.logprobs, expected.topk(3, -1).values.numpy(), atol=1e-5)
    assert top.ids.tolist() == expected.topk(3, -1).indices.tolist()


def test_an_hf_run_stores_them_and_a_replay_teacher_takes_no_option(tmp_path, data_root, tiny):
    task = small_task(data_root, n=2)
    with TeachStore.open(tmp_path) as store:
        teacher = HFTeacher("tiny-gpt2", loaded=tiny, top_logprobs=2)
        summary = teach(task, "test", teacher, "zs", max_tokens=6, store=store)
        assert summary.complete_chains == 2
        rows = all_rows(store)
        assert set(store.logprobs_k(r.key for r in rows).values()) == {2}
    with pytest.raises(FtcotError, match="top_logprobs"):
        make_teacher("replay:text-davinci-002", data_root=data_root, top_logprobs=3)


@pytest.mark.parametrize("method", ["zs_cot", "ft_cot"])
def test_an_hf_teacher_scores_sampled_completions_stored_without_them_and_generates_nothing(tmp_path, data_root,
                                                                                          tiny, method):
    """A sampled store cannot be drawn again, but hf:'s top-K come from a scoring pass over the text anyway:
    a rerun asking for them scores every stored completion (rationales and answers), generates nothing, keeps
    every row, and stores what a run that had asked from the start stores for the same text."""
    task = small_task(data_root, n=2)
    run = {"samples": 2, "temperature": 0.7, "max_tokens": 6}
    with TeachStore.open(tmp_path / "later") as store:
        teach(task, "test", HFTeacher("tiny-gpt2", loaded=tiny), method, store=store, **run)
        before = {r.key: r for r in all_rows(store)}
        assert len(before) == (8 if method == "zs_cot" else 4) and store.logprobs_k(before) == {}
        scorer = HFTeacher("tiny-gpt2", loaded=tiny, top_logprobs=3)
        dry = teach(task, "test", scorer, method, store=store, dry_run=True, **run)
        assert dry.estimated_requests == len(before)
        summary = teach(task, "test", scorer, method, store=store, **run)
        assert (summary.requests, summary.new, summary.failed) == (len(before), 0, 0)
        assert scorer.batches == []  # nothing generated: every request was a scoring pass
        assert summary.prompt_tokens == summary.completion_tokens == 0  # nor counted as if it had been
        assert {r.key: r for r in all_rows(store)} == before
        scored = store.top_logprobs(before)
        assert set(store.logprobs_k(before).values()) == {3}
        again = HFTeacher("tiny-gpt2", loaded=tiny, top_logprobs=3)
        assert teach(task, "test", again, method, store=store, **run).requests == 0 and again.batches == []
    with TeachStore.open(tmp_path / "first") as store:  # the same seeds: the same texts, asked with them
        teach(task, "test", HFTeacher("tiny-gpt2", loaded=tiny, top_logprobs=3), method, store=store, **run)
        first = {r.key: r for r in all_rows(store)}
        assert {k: r.text for k, r in first.items()} == {k: r.text for k, r in before.items()}
        for key, top in store.top_logprobs(first).items():
            assert top.chosen_ids.tolist() == scored[key].chosen_ids.tolist()
            assert top.ids.tolist() == scored[key].ids.tolist()
            np.testing.assert_allclose(top.logprobs, scored[key].logprobs, atol=1e-3)  # float16 in the store


# -- a real llama.cpp server ---------------------------------------------------------------------


@pytest.mark.slow
def test_llama_cpp_returns_the_top_k_of_every_token_of_the_text(llama_server):
    teacher = OpenAICompatTeacher("gemma", base_url=llama_server, extra_body=LLAMA_CPP_EXTRA_BODY, top_logprobs=5,
                                  supports_n=False)
    plain = OpenAICompatTeacher("gemma", base_url=llama_server, extra_body=LLAMA_CPP_EXTRA_BODY, supports_n=False)
    request = CompletionRequest("Q: A coin is heads up. Ann flips it. Is it still heads up?\nA: Let's think step "
                                "by step.", max_tokens=8)
    prime_prompt_cache(llama_server, request.prompt)  # both requests below repeat it: the same numerics

    async def ask(t: OpenAICompatTeacher) -> Completion:
        try:
            return (await t.complete(request))[0]
        finally:
            await t.aclose()

    completion, without = asyncio.run(ask(teacher)), asyncio.run(ask(plain))
    assert completion.text == without.text and without.logprobs is None  # the same greedy text: the same key
    top = completion.logprobs
    assert top.k == 5 and len(top) == completion.completion_tokens == 8 and top.ids is None
    assert "".join(top.chosen_tokens) == completion.text
    assert list(top.chosen_tokens) == [row[0] for row in top.tokens]  # greedy: the most likely each time
    np.testing.assert_allclose(top.chosen_logprobs, top.logprobs[:, 0])
    assert np.all(np.diff(top.logprobs, axis=1) <= 0) and np.all(top.logprobs < 0)
    assert all(math.isfinite(x) for x in top.logprobs.ravel())


@pytest.mark.slow
def test_llama_cpp_run_stores_them_and_a_rerun_sends_nothing(tmp_path, data_root, llama_server, proxy):
    front = proxy(llama_server)
    task = small_task(data_root, n=2)

    def teacher() -> OpenAICompatTeacher:
        return OpenAICompatTeacher("gemma", base_url=front.base_url, extra_body=LLAMA_CPP_EXTRA_BODY,
                                   top_logprobs=5, supports_n=False)

    with TeachStore.open(tmp_path) as store:
        summary = teach(task, "test", teacher(), "zs_cot", max_tokens=8, store=store)
        assert (summary.complete_chains, summary.failed) == (2, 0)
        rows = all_rows(store)
        found = store.top_logprobs(r.key for r in rows)
        assert len(found) == 4
        assert all("".join(found[r.key].chosen_tokens) == r.text for r in rows)
        sent = front.count("/completions")
        assert teach(task, "test", teacher(), "zs_cot", max_tokens=8, store=store).requests == 0
        assert front.count("/completions") == sent
