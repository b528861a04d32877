"""A reasoning teacher through ``--batch`` and ``--until-correct``: the reasoning is kept, ``--rationale`` and
``--system-prompt`` are honoured, and a batch run exports what a request-loop run of the same questions does.

TEST DOUBLE: a provider's Batch API is a paid remote service, so the teacher is
:class:`tests.teach.batch_server.BatchServer` (aiohttp on 127.0.0.1, OpenAI's files + batches contract), here
answering as a reasoning model: ``reasoning_content`` or ``reasoning`` beside the chat message, or a
``<think>`` block in the text. The same server answers ``/v1/chat/completions`` and ``/v1/completions`` at
once with the replies a batch line gets, which is what lets one run of each kind be compared. The stores are
real SQLite files; the CLI runs as a real subprocess.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftcot.jsonl import read_jsonl
from ftcot.teach.backends import make_teacher
from ftcot.teach.batch import BatchClient, teach_batch
from ftcot.teach.engine import teach
from ftcot.teach.export import export
from ftcot.teach.reasoning import RATIONALE_SOURCES
from ftcot.teach.store import TeachStore
from tests.cli import assert_one_line_error
from tests.teach.batch_server import BatchServer, reasoning_of
from tests.teach.test_batch import coins, server  # noqa: F401  (server: the batch server fixture)
from tests.teach.test_cli_teach import coin_task_file, run_ftcot

MODEL = "deepseek-reasoner"
SYSTEM = "Think it through, then answer."
THINKS = "Weighing question"  # how every reasoning_of() text begins


def teacher(server: BatchServer, chat: bool):
    return make_teacher(f"openai:{MODEL}", base_url=server.base_url, chat=chat,
                        **({"system": SYSTEM} if chat else {}))


def exported(run_dir: Path, out: Path, rationale: str | None = None) -> list[dict]:
    with TeachStore.open_readonly(run_dir) as store:
        export(store, out, rationale=rationale)
    return [record for _, record in read_jsonl(out)]


def raw_rows(run_dir: Path) -> set[tuple]:
    with TeachStore.open_readonly(run_dir) as store:
        return {(c.key, c.stage, c.text, c.reasoning) for c in store.completions()}


@pytest.mark.parametrize("style, chat", [("reasoning_content", True), ("reasoning", True), ("think", True),
                                         ("think", False)])
def test_a_batch_run_keeps_the_reasoning_and_exports_what_the_request_loop_exports(tmp_path, data_root, server,
                                                                                     style, chat):
    teacher_server, task = server(reasoning=style), coins(tmp_path, data_root, 3)
    with TeachStore.open(tmp_path / "batch") as store:
        client = BatchClient(teacher_server.base_url, None, backoff_base_s=0.01)
        try:
            summary = teach_batch(task, "test", teacher(teacher_server, chat), "zs_cot", 2, 0.7, store=store,
                                  poll_interval_s=0.01, client=client, rationale="both")
        finally:
            client.close()
    assert summary.complete_chains == 6 and summary.batches and teacher_server.direct == []
    with TeachStore.open(tmp_path / "loop") as store:
        looped = teach(task, "test", teacher(teacher_server, chat), "zs_cot", 2, 0.7, store=store,
                       rationale="both")
    assert looped.complete_chains == 6 and teacher_server.direct

    # Stored alike, raw: the reasoning in its column when the server sent it apart, in the text otherwise.
    rows = raw_rows(tmp_path / "batch")
    assert rows == raw_rows(tmp_path / "loop")
    rationales = [row for row in rows if row[1] == "reasoning"]
    assert len(rationales) == 6
    if style == "think":
        assert all(text.startswith("<think>") and reasoning is None for _, _, text, reasoning in rationales)
    else:
        assert all(reasoning and reasoning.startswith(THINKS) and THINKS not in text
                   for _, _, text, reasoning in rationales)
    if chat:  # the system prompt opened every request of both runs
        bodies = [line["body"] for batch_id in teacher_server.batches for line in teacher_server.input_lines(batch_id)]
        bodies += teacher_server.direct
        assert bodies and all(b["messages"][0] == {"role": "system", "content": SYSTEM} for b in bodies)

    # The same chains under every --rationale; the run's own (both) is what a plain export reads.
    for source in RATIONALE_SOURCES:
        batch_chains = exported(tmp_path / "batch", tmp_path / f"batch-{source}.jsonl", source)
        assert batch_chains == exported(tmp_path / "loop", tmp_path / f"loop-{source}.jsonl", source)
        thought = [THINKS in r["reasoning_completion"] for r in batch_chains]
        assert len(batch_chains) == 6 and all(thought) == (source != "answer") and any(thought) == all(thought)
    assert exported(tmp_path / "batch", tmp_path / "batch.jsonl") == exported(tmp_path / "batch",
                                                                             tmp_path / "both.jsonl", "both")
    # "reasoning" is the reasoning alone, as the server sent it.
    sent = {reasoning_of(b["messages"][-1]["content"] if chat else b["prompt"]) for b in teacher_server.direct}
    assert {r["reasoning_completion"] for r in exported(tmp_path / "batch", tmp_path / "r.jsonl", "reasoning")} \
        <= {" " + text for text in sent}


def test_the_cli_batch_run_honours_rationale_and_system_prompt(tmp_path, server):
    teacher_server, task = server(reasoning="reasoning_content"), coin_task_file(tmp_path, 2)
    common = ["teach", "--task", task, "--answer-type", "yes/no", "--split", "test", "--teacher", f"openai:{MODEL}",
              "--teacher-args", f'base_url={teacher_server.base_url},chat=true,system_prompt="{SYSTEM}",rationale=reasoning']
    batched = run_ftcot(*common, "--batch", "--teacher-args", "poll_interval_s=0.01", "--out", tmp_path / "batch")
    assert batched.returncode == 0, batched.stderr
    assert teacher_server.batches and teacher_server.direct == []
    looped = run_ftcot(*common, "--out", tmp_path / "loop")
    assert looped.returncode == 0, looped.stderr
    for run_dir in ("batch", "loop"):  # the export reads the run's --rationale
        done = run_ftcot("teach", "export", tmp_path / run_dir)
        assert done.returncode == 0, done.stderr
    batch_chains = [r for _, r in read_jsonl(tmp_path / "batch" / "export.jsonl")]
    assert batch_chains == [r for _, r in read_jsonl(tmp_path / "loop" / "export.jsonl")]
    assert len(batch_chains) == 2 and all(r["reasoning_completion"].strip().startswith(THINKS) for r in batch_chains)
    lines = [line for b in teacher_server.batches for line in teacher_server.input_lines(b)]
    assert all(line["body"]["messages"][0]["content"] == SYSTEM for line in lines)
    assert json.loads((tmp_path / "batch" / "run.json").read_text())["settings"]["rationale"] == "reasoning"


def test_adaptive_sampling_honours_rationale_and_system_prompt_and_refuses_batch(tmp_path, server):
    teacher_server, task = server(reasoning="reasoning"), coin_task_file(tmp_path, 3)
    common = ["teach", "--task", task, "--answer-type", "yes/no", "--split", "test", "--teacher", f"openai:{MODEL}",
              "--teacher-args", f'base_url={teacher_server.base_url},chat=true,system_prompt="{SYSTEM}"', "--temperature", "0.7",
              "--adaptive", "1/2"]
    refused = run_ftcot(*common, "--batch", "--out", tmp_path / "refused")
    assert_one_line_error(refused, "batch does not combine with adaptive sampling")
    assert not (tmp_path / "refused").exists() and teacher_server.requests == []

    done = run_ftcot(*common, "--teacher-args", "rationale=both", "--out", tmp_path / "run")
    assert done.returncode == 0, done.stderr
    assert teacher_server.direct and all(b["messages"][0] == {"role": "system", "content": SYSTEM}
                                         for b in teacher_server.direct)
    exported = run_ftcot("teach", "export", tmp_path / "run")
    assert exported.returncode == 0, exported.stderr
    chains = [r for _, r in read_jsonl(tmp_path / "run" / "export.jsonl")]
    # "both": the reasoning, a blank line, the visible answer; every chain sampled (coin flips answered yes
    # are right for some questions only: those draw one rationale, the others two).
    assert 3 <= len(chains) <= 6
    assert all(r["reasoning_completion"].strip().startswith(THINKS) and "\n\n" in r["reasoning_completion"]
               for r in chains)


def test_the_python_api_takes_rationale_with_batch(tmp_path, server):
    import ftcot

    teacher_server, task = server(reasoning="think"), coin_task_file(tmp_path, 2)
    result = ftcot.teach(str(task), f"openai:{MODEL}", tmp_path / "run", split="test", answer_type="yes/no",
                         base_url=teacher_server.base_url, chat=True, system_prompt=SYSTEM, rationale="both",
                         batch=True, poll_interval_s=0.01)
    assert result.complete_chains == 2 and teacher_server.batches and teacher_server.direct == []
    chains = exported(tmp_path / "run", tmp_path / "run" / "export.jsonl")  # the run's own option: both
    assert all(r["reasoning_completion"].strip().startswith(THINKS) and "\n\n" in r["reasoning_completion"]
               for r in chains)
