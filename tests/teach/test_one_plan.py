"""One plan, three consumers: the request loop, the Batch API and the dry run send (or count) the same requests.

TEST DOUBLE: the Batch API is a paid remote service, so the batch runs talk real
HTTP to :class:`tests.teach.batch_server.BatchServer` on 127.0.0.1, which also
answers ``/v1/completions`` directly (as a provider does), so the request loop
runs against the same server. The stores are real SQLite files.
"""

from __future__ import annotations

import pytest

from ftcot.tasks import BUILTIN_TASKS, load_task
from ftcot.teach.backends import make_teacher
from ftcot.teach.batch import BatchClient, teach_batch
from ftcot.teach.engine import teach
from ftcot.teach.store import TeachStore
from tests.teach.batch_server import BatchServer
from tests.teach.test_batch import server  # noqa: F401  (the batch server fixture)

MODEL = "gpt-4o-mini"
COMPLETIONS = ("POST", "/v1/completions")


def _questions(task, count: int) -> list[int]:
    """The first ``count`` test questions, and every test question whose text another of them has too
    (MultiArith's twins)."""
    test = task.split_indices("test")
    chosen = sorted(test)[:count] + [i for i in (43, 53) if task.key == "multiarith"]
    texts = {task.samples[i].question for i in chosen}
    return sorted(set(chosen) | {i for i in test if task.samples[i].question in texts})


def _batch(server: BatchServer, run_dir, task, questions, samples: int, dry_run: bool = False, split: str = "test"):
    teacher = make_teacher(f"openai:{MODEL}", base_url=server.base_url)
    client = BatchClient(server.base_url, None, backoff_base_s=0.01)
    store = TeachStore.open(run_dir) if not dry_run else None
    try:
        return teach_batch(task, split, teacher, "zs_cot", samples, 0.7 if samples > 1 else 0.0, store=store,
                           poll_interval_s=0.01, client=client, only=questions, dry_run=dry_run)
    finally:
        client.close()
        if store is not None:
            store.close()


def _loop(server: BatchServer, run_dir, task, questions, samples: int, dry_run: bool = False):
    teacher = make_teacher(f"openai:{MODEL}", base_url=server.base_url)
    store = TeachStore.open(run_dir) if not dry_run else None
    try:
        return teach(task, "test", teacher, "zs_cot", samples, 0.7 if samples > 1 else 0.0, store=store,
                     only=questions, dry_run=dry_run)
    finally:
        if store is not None:
            store.close()


@pytest.mark.parametrize("task_key", sorted(BUILTIN_TASKS))
def test_the_loop_the_batch_api_and_the_dry_run_agree_on_every_task(task_key, tmp_path, data_root, server):
    task = load_task(task_key, data_root)
    questions = _questions(task, 12)
    for samples in (1, 3):
        dry = _loop(server(), None, task, questions, samples, dry_run=True).estimated_requests
        batch_dry = _batch(server(), None, task, questions, samples, dry_run=True).estimated_requests
        looped = server()
        loop = _loop(looped, tmp_path / f"loop{samples}", task, questions, samples)
        batched = server()
        batch = _batch(batched, tmp_path / f"batch{samples}", task, questions, samples)
        assert looped.count(*COMPLETIONS) == loop.requests == dry == batch_dry
        assert len(batched.ran) == batch.requests == dry
        assert loop.complete_chains == batch.complete_chains == len(questions) * samples


def test_a_batch_run_on_multiarith_asks_once_for_questions_with_the_same_text(tmp_path, data_root, server):
    """MultiArith's twins (the same question text at two indices) made the Batch API run crash with
    sqlite3.IntegrityError: two batch lines with one custom_id."""
    task = load_task("multiarith", data_root)
    twins = [40, 50, 41, 51, 43, 53]  # three pairs of questions with the same text (train and test)
    assert len({task.samples[i].question for i in twins}) == 3
    batched = server()
    summary = _batch(batched, tmp_path / "run", task, twins, 2, split="all")
    assert summary.complete_chains == 12 and summary.failed == 0
    # 3 stage-1 requests (n=2), then one answer per distinct rationale: 3 × 2.
    assert [len(ids) for ids in batched.created] == [3, 6] and len(batched.ran) == 9
    again = _batch(batched, tmp_path / "run", task, twins, 2, split="all")
    assert again.requests == 0 and len(batched.ran) == 9


def test_a_refused_batch_create_leaves_nothing_that_refuses_a_later_run(tmp_path, data_root, server):
    """A 4xx to the create (a billing limit) means no batch exists: the ledger row must not stay open, or every
    later normal run of the directory is refused as if paid-for batches were running."""
    from ftcot.errors import FtcotError
    from ftcot.teach.batch import open_batches, refuse_open_batches

    task = load_task("coin_flip", data_root)
    questions = task.split_indices("test")[:3]
    batches = server(refuse_creates=1)
    with pytest.raises(FtcotError, match="token_limit_exceeded|Enqueued token limit"):
        _batch(batches, tmp_path / "run", task, questions, 1)
    assert open_batches(tmp_path / "run") == []
    refuse_open_batches(tmp_path / "run")  # no error: a normal run may go on
    summary = _loop(batches, tmp_path / "run", task, questions, 1)
    assert summary.complete_chains == 3


def test_teaching_inside_a_running_event_loop(tmp_path, data_root, server):
    """Jupyter runs cells inside an event loop: ftcot.teach() there failed with "Cannot run the event loop
    while another loop is running"."""
    import asyncio

    import ftcot

    served = server()
    questions = load_task("coin_flip", data_root).split_indices("test")[:3]

    async def notebook_cell():
        return ftcot.teach("coin_flip", f"openai:{MODEL}", tmp_path / "run", split="test", questions=questions,
                           base_url=served.base_url, data_dir=data_root)

    result = asyncio.run(notebook_cell())
    assert result.complete_chains == 3 and served.count(*COMPLETIONS) == 6
