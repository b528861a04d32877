"""The teach store: keys, append-only, durability settings, one writer and concurrent readers."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from ftcot.errors import FtcotError
from ftcot.teach.store import STORE_FILE, Failure, StoredCompletion, TeachStore, request_key


def row(key: str, text: str = "t", sample_number: int = 0, stage: str = "reasoning") -> StoredCompletion:
    return StoredCompletion(key=key, teacher="openai:m", stage=stage, sample_index=3, sample_number=sample_number,
                            prompt="Q: x\nA:", max_tokens=128, temperature=0.7, stop=("\nQ:",), seed=sample_number,
                            text=text, finish_reason="stop", prompt_tokens=7, completion_tokens=5, latency_s=0.1,
                            request_id="r1", created=time.time())


def test_key_depends_on_every_part_and_only_on_them():
    base = request_key("openai:m", "Q: x", 128, 0.7, (), 0)
    assert base == request_key("openai:m", "Q: x", 128, 0.7, [], 0)
    assert request_key("openai:m", "Q: x", 128, 0, (), 0) == request_key("openai:m", "Q: x", 128, 0.0, (), 0)
    variants = [
        request_key("openai:other", "Q: x", 128, 0.7, (), 0),
        request_key("openai:m", "Q: y", 128, 0.7, (), 0),
        request_key("openai:m", "Q: x", 64, 0.7, (), 0),
        request_key("openai:m", "Q: x", 128, 1.0, (), 0),
        request_key("openai:m", "Q: x", 128, 0.7, ("\nQ:",), 0),
        request_key("openai:m", "Q: x", 128, 0.7, (), 1),
    ]
    assert len({base, *variants}) == 7


def test_completions_round_trip_and_missing_lookup(tmp_path):
    with TeachStore.open(tmp_path) as store:
        first = row("a")
        assert store.add_completions([first, row("b", sample_number=1)]) == 2
        assert store.get("a") == first
        assert store.get("zzz") is None
        assert store.missing(["a", "c", "b", "d"]) == ["c", "d"]
        assert set(store.get_many(["a", "b", "c"])) == {"a", "b"}
        assert store.get("b").stop == ("\nQ:",)


def test_get_many_handles_more_keys_than_sqlite_parameters(tmp_path):
    with TeachStore.open(tmp_path) as store:
        store.add_completions([row(f"k{i}") for i in range(1200)])
        assert len(store.get_many([f"k{i}" for i in range(1500)])) == 1200


def test_store_is_append_only(tmp_path):
    with TeachStore.open(tmp_path) as store:
        store.add_completions([row("a", text="first")])
        # The same key again keeps the first, paid, value.
        assert store.add_completions([row("a", text="second")]) == 0
        assert store.get("a").text == "first"
    db = sqlite3.connect(tmp_path / STORE_FILE)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE completions SET text = 'x'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM completions")
    db.close()


def test_failures_are_recorded_but_are_not_results(tmp_path):
    with TeachStore.open(tmp_path) as store:
        store.add_failure(Failure("a", "openai:m", "reasoning", 3, 0, 429, "rate limited", True, time.time()))
        assert store.missing(["a"]) == ["a"]
        (failure,) = store.failures()
        assert (failure.status, failure.message, failure.retryable) == (429, "rate limited", True)


def test_durability_settings(tmp_path):
    with TeachStore.open(tmp_path) as store:
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_a_reader_sees_each_commit_while_the_writer_stays_open(tmp_path):
    writer = TeachStore.open(tmp_path)
    reader = TeachStore.open_readonly(tmp_path)
    try:
        writer.add_completions([row("a")])
        assert reader.get("a") is not None
        writer.add_completions([row("b")])
        assert reader.count() == 2
        with pytest.raises(RuntimeError):
            reader.add_completions([row("c")])
    finally:
        reader.close()
        writer.close()


def test_a_commit_survives_sigkill_of_the_writer(tmp_path):
    # A real process writes one completion, then is killed before it could close anything.
    script = textwrap.dedent(f"""
        import os, signal, time
        from ftcot.teach.store import StoredCompletion, TeachStore
        store = TeachStore.open({str(tmp_path)!r})
        store.lock_for_writing()
        store.add_completions([StoredCompletion("k", "t", "reasoning", 0, 0, "p", 8, 0.0, (), None, "paid",
                                                "stop", 1, 1, 0.1, "r", time.time())])
        print("committed", flush=True)
        time.sleep(60)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "committed"
    process.kill()
    process.wait()
    with TeachStore.open(tmp_path) as store:
        store.lock_for_writing()  # the dead writer's lock is gone with it
        assert store.get("k").text == "paid"


def test_only_one_writer_per_run_directory(tmp_path):
    first = TeachStore.open(tmp_path)
    first.lock_for_writing()
    second = TeachStore.open(tmp_path)
    try:
        with pytest.raises(FtcotError, match="another 'ftcot teach'"):
            second.lock_for_writing()
    finally:
        second.close()
        first.close()
    third = TeachStore.open(tmp_path)
    third.lock_for_writing()  # released by close()
    third.close()


def test_reading_a_directory_without_a_store_is_a_one_line_error(tmp_path):
    with pytest.raises(FtcotError, match="no teach store"):
        TeachStore.open_readonly(tmp_path)


def test_runs_and_questions(tmp_path):
    with TeachStore.open(tmp_path) as store:
        assert store.last_run() is None
        store.add_run({"samples": 2})
        store.add_run({"samples": 3})
        assert store.last_run() == {"samples": 3}
        store.add_questions("coin_flip", {1: "train", 2: "test"}, [(2, "q2", "no"), (1, "q1", "yes")])
        store.add_questions("coin_flip", {1: "train"}, [(1, "changed", "no")])
        assert [(q.sample_index, q.question, q.split) for q in store.questions()] == [(1, "q1", "train"),
                                                                                      (2, "q2", "test")]
        assert [q.sample_index for q in store.questions("test")] == [2]
