"""The batch ledger: every batch a run sends, recorded in its ``teach.sqlite`` before anything is uploaded.

Tables ``batches`` and ``batch_requests`` (made here, beside the store's own): a batch's requests and their
store keys, then its input file id, then ``create_sent`` before the create request goes out, then the batch
id the moment it is known. A run killed at any point resumes by polling what the ledger holds
(:mod:`ftcot.teach.batch.run`); a normal run refuses a directory with open batches (:func:`refuse_open_batches`).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftcot.errors import FtcotError
from ftcot.teach.plan import PlannedRequest, Target
from ftcot.teach.records import CompletionRequest
from ftcot.teach.store import TeachStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    teacher TEXT NOT NULL,
    stage TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    base_url TEXT NOT NULL,
    requests INTEGER NOT NULL,
    input_file_id TEXT,
    create_sent INTEGER NOT NULL DEFAULT 0,
    batch_id TEXT,
    status TEXT NOT NULL,
    collected INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_requests (
    batch INTEGER NOT NULL,
    custom_id TEXT NOT NULL,
    request TEXT NOT NULL,
    targets TEXT NOT NULL,
    PRIMARY KEY (batch, custom_id)
);
"""


@dataclass
class BatchRecord:
    """One row of the ``batches`` table."""

    id: int
    teacher: str
    stage: str
    endpoint: str
    base_url: str
    requests: int
    input_file_id: str | None
    create_sent: bool
    batch_id: str | None
    status: str
    collected: bool
    error: str | None


def _request_json(request: CompletionRequest) -> str:
    return json.dumps(dataclasses.asdict(request), separators=(",", ":"))


def _request_from_json(text: str) -> CompletionRequest:
    data = json.loads(text)
    data["stop"] = tuple(data.get("stop") or ())
    return CompletionRequest(**data)


class BatchLedger:
    """The ``batches`` and ``batch_requests`` tables of a run's store, on a connection of their own.

    Writes commit at once (``synchronous=FULL``, like the store): a batch id is on disk before the
    first poll.
    """

    def __init__(self, connection: sqlite3.Connection | None, writable: bool) -> None:
        self._db = connection
        self.writable = writable

    @classmethod
    def open(cls, store: TeachStore | None) -> BatchLedger:
        if store is None:
            return cls(None, False)
        if not store.writable:
            db = sqlite3.connect(f"{store.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
            db.row_factory = sqlite3.Row
            has = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'batches'").fetchone()
            if not has:
                db.close()
                return cls(None, False)
            return cls(db, False)
        db = sqlite3.connect(store.path, isolation_level=None, timeout=30.0)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=30000")
        try:
            db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
        except sqlite3.Error as exc:
            db.close()
            raise FtcotError(f"{store.path}: cannot record batches ({exc}); free space or fix the directory "
                             f"and rerun.") from None
        return cls(db, True)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    def add(self, teacher: str, stage: str, endpoint_path: str, base_url: str, items: Sequence[PlannedRequest]) -> int:
        """Record a batch's requests before anything is uploaded; returns its ledger id."""
        assert self._db is not None and self.writable
        now = time.time()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            cursor = self._db.execute(
                "INSERT INTO batches (teacher, stage, endpoint, base_url, requests, status, created, updated) "
                "VALUES (?, ?, ?, ?, ?, 'prepared', ?, ?)", (teacher, stage, endpoint_path, base_url, len(items),
                                                              now, now))
            row_id = int(cursor.lastrowid)
            self._db.executemany(
                "INSERT INTO batch_requests (batch, custom_id, request, targets) VALUES (?, ?, ?, ?)",
                [(row_id, item.key, _request_json(item.request),
                  json.dumps([dataclasses.astuple(t) for t in item.targets])) for item in items])
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        return row_id

    def update(self, row_id: int, **fields: Any) -> None:
        assert self._db is not None and self.writable
        names = ", ".join(f"{name} = ?" for name in fields)
        self._db.execute(f"UPDATE batches SET {names}, updated = ? WHERE id = ?",
                         [*fields.values(), time.time(), row_id])

    def open_batches(self) -> list[BatchRecord]:
        """Batches not collected yet, oldest first."""
        if self._db is None:
            return []
        rows = self._db.execute("SELECT * FROM batches WHERE collected = 0 ORDER BY id")
        return [_record(row) for row in rows]

    def get(self, row_id: int) -> BatchRecord:
        assert self._db is not None
        return _record(self._db.execute("SELECT * FROM batches WHERE id = ?", (row_id,)).fetchone())

    def items(self, row_id: int) -> dict[str, PlannedRequest]:
        assert self._db is not None
        rows = self._db.execute("SELECT custom_id, request, targets FROM batch_requests WHERE batch = ? "
                                "ORDER BY rowid", (row_id,))
        return {row["custom_id"]: PlannedRequest(_request_from_json(row["request"]),
                                                 tuple(Target(*t) for t in json.loads(row["targets"])))
                for row in rows}

    def open_keys(self) -> set[str]:
        """Store keys of every request in a batch not collected yet (paid for, or about to be)."""
        if self._db is None:
            return set()
        rows = self._db.execute("SELECT r.targets FROM batch_requests r JOIN batches b ON b.id = r.batch "
                                "WHERE b.collected = 0")
        return {t[0] for row in rows for t in json.loads(row["targets"])}

    def all(self) -> list[BatchRecord]:
        if self._db is None:
            return []
        return [_record(row) for row in self._db.execute("SELECT * FROM batches ORDER BY id")]


def _record(row: sqlite3.Row) -> BatchRecord:
    values = {name: row[name] for name in BatchRecord.__dataclass_fields__}
    values["create_sent"], values["collected"] = bool(values["create_sent"]), bool(values["collected"])
    return BatchRecord(**values)


def open_batches(run_dir: Path) -> list[BatchRecord]:
    """The batches a run directory has not collected yet (empty without a store or batches)."""
    from ftcot.teach.store import STORE_FILE

    if not (Path(run_dir) / STORE_FILE).is_file():
        return []
    with TeachStore.open_readonly(run_dir) as store:
        ledger = BatchLedger.open(store)
        try:
            return ledger.open_batches()
        finally:
            ledger.close()


def refuse_open_batches(run_dir: Path, how: str = "rerun with --batch") -> None:
    """A normal run would pay again for what open batches are doing: refuse it in one line."""
    recorded = [b for b in open_batches(run_dir) if b.batch_id or b.create_sent]
    if recorded:
        ids = ", ".join(b.batch_id or f"#{b.id} (being created)" for b in recorded[:3])
        count = sum(b.requests for b in recorded)
        raise FtcotError(f"{run_dir} has {len(recorded)} open teacher batch(es) ({ids}; {count} requests, paid "
                         f"for); {how} to collect them instead of paying for those requests again.")
