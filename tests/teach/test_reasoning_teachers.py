"""Reasoning-model teachers: the reasoning apart from the answer, stored raw, the rationale chosen when read.

The teacher is a real chat server on 127.0.0.1 (aiohttp, below) that answers
like DeepSeek's API or vLLM with a reasoning parser (``reasoning_content`` beside
``content``) or like a model that thinks inside its text (``<think>…</think>``),
and counts every request; the store is a real SQLite file.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest
from aiohttp import web

from ftcot.errors import FtcotError
from ftcot.jsonl import read_jsonl
from ftcot.tasks import Task, load_task
from ftcot.teach.backends import make_teacher
from ftcot.teach.backends.openai_compat import OpenAICompatTeacher, build_chat_payload, parse_response
from ftcot.teach.engine import teach
from ftcot.teach.export import export
from ftcot.teach.reasoning import rationale_text, split_reasoning, visible_answer
from ftcot.teach.records import CompletionRequest
from ftcot.teach.store import STORE_FILE, TeachStore

REASONING = "The coin starts heads up. Two flips bring it back."
ANSWER = "So the coin is still heads up: yes."


class ReasoningServer:
    """``/v1/chat/completions`` of a reasoning model; ``style`` "field" or "think". ``answer_thinks``: stage 2
    thinks too, naming another answer first (cut off inside its think block under 64 tokens)."""

    def __init__(self, style: str, answer_thinks: bool = False) -> None:
        self.style, self.answer_thinks = style, answer_thinks
        self.bodies: list[dict] = []
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def chat(request: web.Request) -> web.Response:
            body = await request.json()
            self.bodies.append(body)
            last = body["messages"][-1]["content"]
            finish = "stop"
            if (last.rstrip().endswith(" is") or "Therefore" in last) and self.answer_thinks:
                budget = body.get("max_completion_tokens") or body.get("max_tokens") or 0
                if budget < 64:
                    message, finish = {"role": "assistant", "content": "<think>\nIs it no? Let me"}, "length"
                else:
                    message = {"role": "assistant", "content": "<think>\nIs it no? Two flips: heads up.\n</think>\n\n yes."}
            elif last.rstrip().endswith(" is") or "Therefore" in last:  # stage 2: the answer only
                message = {"role": "assistant", "content": " yes."}
            elif self.style == "field":
                message = {"role": "assistant", "content": ANSWER, "reasoning_content": REASONING}
            else:
                message = {"role": "assistant", "content": f"<think>\n{REASONING}\n</think>\n\n{ANSWER}"}
            return web.json_response({"choices": [{"index": 0, "message": message, "finish_reason": finish}],
                                      "usage": {"prompt_tokens": 20, "completion_tokens": 30}})

        async def start() -> None:
            app = web.Application()
            app.router.add_post("/v1/chat/completions", chat)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.base_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def reasoning_server():
    made = []

    def make(style: str, answer_thinks: bool = False) -> ReasoningServer:
        made.append(ReasoningServer(style, answer_thinks))
        return made[-1]

    yield make
    for server in made:
        server.close()


def coin_task(data_root, n: int = 3) -> Task:
    full = load_task("coin_flip", data_root)
    indices = full.split_indices("test")[:n]
    return Task(full.spec, {i: full.samples[i] for i in indices}, {"default": {"train": [], "test": indices}},
                data_root)


# -- pure ---------------------------------------------------------------------------------------


def test_split_reasoning_reads_the_field_and_think_blocks():
    assert split_reasoning(ANSWER, REASONING) == (REASONING, " " + ANSWER)
    assert split_reasoning(f"<think>\n{REASONING}\n</think>\n\n{ANSWER}") == (REASONING, " " + ANSWER)
    assert split_reasoning(f"{REASONING}\n</think>\n{ANSWER}") == (REASONING, " " + ANSWER)  # opened by the prompt
    assert split_reasoning(f"<think>{REASONING}") == (REASONING, "")  # cut off while thinking
    assert split_reasoning(" plain rationale, no reasoning.") == (None, " plain rationale, no reasoning.")
    assert visible_answer(" plain.") == " plain."  # a non-reasoning teacher's text is left as it was


@pytest.mark.parametrize("source, expected", [
    ("answer", " " + ANSWER), ("reasoning", " " + REASONING), ("both", f" {REASONING}\n\n{ANSWER}")])
def test_rationale_text_follows_the_option(source, expected):
    assert rationale_text(ANSWER, REASONING, source) == expected
    assert rationale_text(f"<think>{REASONING}</think>{ANSWER}", None, source) == expected
    assert rationale_text(" no reasoning here.", None, source) == " no reasoning here."


def test_parse_chat_keeps_reasoning_content_apart():
    body = {"choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"content": ANSWER, "reasoning_content": REASONING}}]}
    (completion,) = parse_response(body, chat=True)
    assert (completion.text, completion.reasoning) == (ANSWER, REASONING)
    vllm = {"choices": [{"index": 0, "message": {"content": ANSWER, "reasoning": REASONING}}]}
    assert parse_response(vllm, chat=True)[0].reasoning == REASONING
    assert parse_response({"choices": [{"text": ANSWER}]}, chat=False)[0].reasoning is None


def test_a_system_prompt_goes_first_and_is_part_of_the_teachers_identity():
    request = CompletionRequest("Q: Is it heads?\nA: Let's think step by step.", 128)
    payload = build_chat_payload("m", request, system="You are a careful teacher.")
    assert payload["messages"][0] == {"role": "system", "content": "You are a careful teacher."}
    plain = OpenAICompatTeacher("m", base_url="http://127.0.0.1:1/v1", chat=True)
    told = OpenAICompatTeacher("m", base_url="http://127.0.0.1:1/v1", chat=True, system="You are a careful teacher.")
    other = OpenAICompatTeacher("m", base_url="http://127.0.0.1:1/v1", chat=True, system="Be brief.")
    assert len({plain.name, told.name, other.name}) == 3  # stored completions of one are not another's
    with pytest.raises(FtcotError, match="needs a chat teacher"):
        OpenAICompatTeacher("m", base_url="http://127.0.0.1:1/v1", system="Be brief.")
    with pytest.raises(FtcotError, match="apply to openai"):
        make_teacher("replay:text-davinci-002", system="Be brief.")


# -- against a real server ------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["field", "think"])
def test_the_rationale_option_changes_the_export_not_the_requests(tmp_path, data_root, reasoning_server, style):
    server = reasoning_server(style)
    task = coin_task(data_root)
    teacher = lambda: OpenAICompatTeacher("r1", base_url=server.base_url, chat=True, max_retries=0,  # noqa: E731
                                          system="Think, then answer.")
    with TeachStore.open(tmp_path / "run") as store:
        first = teach(task, "test", teacher(), "zs_cot", store=store)
        assert first.complete_chains == 3 and len(server.bodies) == 6
        assert server.bodies[0]["messages"][0] == {"role": "system", "content": "Think, then answer."}
        # Stage 2 reads the visible answer, never the think block.
        stage2 = server.bodies[1]["messages"]
        assert not any("<think>" in m["content"] or REASONING in m["content"] for m in stage2)
        export(store, tmp_path / "answer.jsonl")

        again = teach(task, "test", teacher(), "zs_cot", store=store, rationale="reasoning")
        assert again.requests == 0 and len(server.bodies) == 6  # the option cost no request
        export(store, tmp_path / "reasoning.jsonl")  # the last run's option
        export(store, tmp_path / "both.jsonl", rationale="both")  # or the export's own
    rationales = {name: [r["reasoning_completion"] for _, r in read_jsonl(tmp_path / f"{name}.jsonl")]
                  for name in ("answer", "reasoning", "both")}
    assert rationales["answer"] == [" " + ANSWER] * 3
    assert rationales["reasoning"] == [" " + REASONING] * 3
    assert rationales["both"] == [f" {REASONING}\n\n{ANSWER}"] * 3
    with sqlite3.connect(tmp_path / "run" / STORE_FILE) as db:  # stored raw, as the server sent it
        raw = db.execute("SELECT text, reasoning FROM completions WHERE stage = 'reasoning'").fetchall()
    expected = (ANSWER, REASONING) if style == "field" else (f"<think>\n{REASONING}\n</think>\n\n{ANSWER}", None)
    assert set(raw) == {expected}


def test_an_unknown_rationale_option_is_a_one_line_error(tmp_path, data_root, reasoning_server):
    server = reasoning_server("field")
    with TeachStore.open(tmp_path / "run") as store, pytest.raises(FtcotError, match="Unknown rationale .thoughts.. Valid: answer, both, reasoning"):
        teach(coin_task(data_root), "test", OpenAICompatTeacher("r1", base_url=server.base_url, chat=True),
              "zs_cot", store=store, rationale="thoughts")
    assert server.bodies == []


def test_a_store_made_before_the_reasoning_column_reads_and_takes_it(tmp_path, data_root, reasoning_server):
    server = reasoning_server("field")
    task = coin_task(data_root, 2)
    teacher = lambda: OpenAICompatTeacher("r1", base_url=server.base_url, chat=True, max_retries=0)  # noqa: E731
    # max_tokens 32: a thinking chain's answer budget is stage 1's, so with 32 its stage-2 key is the one an
    # older ftcot (which dropped the reasoning field) made for it.
    with TeachStore.open(tmp_path / "run") as store:
        teach(task, "test", teacher(), "zs_cot", max_tokens=32, store=store)
    path = tmp_path / "run" / STORE_FILE
    with sqlite3.connect(path) as db:  # as an older ftcot made it: no reasoning column
        db.execute("ALTER TABLE completions DROP COLUMN reasoning")
    with TeachStore.open_readonly(tmp_path / "run") as old:
        assert {c.reasoning for c in old.completions()} == {None} and old.count() == 4
    with TeachStore.open(tmp_path / "run") as store:  # the writer adds the column; nothing is lost
        assert store.count() == 4
        teach(coin_task(data_root, 3), "test", teacher(), "zs_cot", max_tokens=32, store=store)
        rationales = [c for c in store.completions() if c.stage == "reasoning"]
        assert [c.reasoning for c in rationales] == [None, None, REASONING]  # the new one is kept raw
    assert len(server.bodies) == 6


def test_the_cli_options_system_prompt_and_rationale(tmp_path, reasoning_server):
    from tests.teach.test_cli_teach import coin_task_file, run_ftcot

    server = reasoning_server("think")
    task = coin_task_file(tmp_path, 2)
    common = ["teach", "--task", task, "--answer-type", "yes/no", "--split", "test", "--teacher", "openai:r1",
              "--teacher-args", f"base_url={server.base_url}", "--teacher-args", "chat=true", "--out", tmp_path / "run"]
    done = run_ftcot(*common, "--teacher-args", 'system_prompt="Think, then answer.",rationale=both')
    assert done.returncode == 0, done.stderr
    assert server.bodies[0]["messages"][0]["content"] == "Think, then answer."
    exported = run_ftcot("teach", "export", tmp_path / "run", "--rationale", "reasoning")
    assert exported.returncode == 0, exported.stderr
    assert {r["reasoning_completion"] for _, r in read_jsonl(tmp_path / "run" / "export.jsonl")} == {" " + REASONING}
    refused = run_ftcot(*common, "--teacher-args", "rationale=thoughts")  # --batch and adaptive runs: test_batch_reasoning.py
    assert refused.returncode != 0 and "Unknown rationale 'thoughts'" in refused.stderr
    assert len(server.bodies) == 4  # the refused run sent nothing


@pytest.mark.parametrize("style", ["field", "think"])
def test_a_reasoning_teachers_answer_is_read_without_its_think_block_and_has_room_for_it(
        tmp_path, data_root, reasoning_server, style):
    """Stage 2 of a model that thinks before it answers: 32 tokens ended inside the think block (no answer),
    and scoring the raw text found the "no" it considered. Its chains get stage 1's budget, and the answer
    is what follows the block."""
    from ftcot.scoring import extract_answer
    from ftcot.teach.plan import Plan, settings_of

    server = reasoning_server(style, answer_thinks=True)
    task = coin_task(data_root)
    with TeachStore.open(tmp_path / "run") as store:
        summary = teach(task, "test", OpenAICompatTeacher("r1", base_url=server.base_url, chat=True, max_retries=0),
                        "zs_cot", max_tokens=128, store=store)
        assert summary.complete_chains == 3
        chains = list(Plan(settings_of(store)).chains(store))
    answers = [b for b in server.bodies if b["messages"][-1]["content"].rstrip().endswith(" is")]
    assert answers and all((b.get("max_completion_tokens") or b.get("max_tokens")) == 128 for b in answers)
    assert [c.answer_text for c in chains] == [" yes."] * 3
    assert [extract_answer(c.answer_text, task.spec) for c in chains] == ["yes"] * 3
