"""The teach store: every paid completion, committed the moment it arrives.

One SQLite file, ``RUN_DIR/teach.sqlite``. Teacher calls cost money, so the
store is built around two promises: nothing paid for is lost, and nothing
stored is paid for again.

- **Keyed by request.** A completion's key is the SHA-256 of the sorted JSON
  of ``(teacher, prompt, max_tokens, temperature, stop, sample_number)``
  (:func:`request_key`). The sample number keeps D sampled rationales of the
  same prompt apart (dspy's rollout id); greedy requests use sample number 0,
  so two identical greedy prompts (two sampled rationales that came out the
  same) share one stored answer instead of paying twice.
- **Append-only.** ``completions`` and ``failures`` only ever get INSERTs;
  triggers make an UPDATE or DELETE fail, so no code path can overwrite a paid
  result. A run fills what is missing; a top-up (D=2 → D=3) asks only for the
  missing sample numbers.
- **Committed before use.** A reply's completions are committed before the
  engine does anything with them; replies that arrive together share one
  transaction (the engine's group commit, :meth:`add_completions` with many
  rows, on :meth:`second_writer`'s connection in a thread), so a ``kill -9``
  loses at most the requests in flight and the replies not yet committed,
  which nothing has used (the engine keeps a reply's slot until its commit:
  at most ``--concurrency`` in all).
- **Durability: WAL + ``synchronous=FULL``.** In WAL mode, ``NORMAL`` already
  survives a killed process, but the last commits can roll back on power loss
  or an OS crash; ``FULL`` fsyncs the WAL on every commit so they cannot. That
  costs about a millisecond per commit here (several under load); one commit
  per reply capped a run near 1,000 replies/s and a bulk write at ~250
  rows/s, one per group takes 14,000 rows/s (``bench/teach_store_scale.py``).
- **One writer, many readers.** WAL lets ``ftcot teach report`` read while a
  run writes; :meth:`TeachStore.lock_for_writing` takes an exclusive ``flock``
  on ``RUN_DIR/teach.lock`` so two runs can never send the same requests. The
  kernel drops the lock when its process dies, even by SIGKILL.
- **Failures are recorded, not results.** A failed request is a row in
  ``failures`` (status, message); the key stays missing, so a later run tries
  it again.

- **Log-probabilities beside the text.** A run with ``top_logprobs`` K keeps each
  completion's top-K per token in ``logprobs``, one row per key, committed in the
  transaction of its completion (a ``kill -9`` cannot leave a completion that
  was asked with them without them). A row is written only while the stored
  completion of its key has the very text it describes; a later row with a
  larger K replaces it (nothing is lost: its top K hold the smaller K's), any
  other is ignored. Layout (:func:`encode_logprobs`): column 0 of each token's
  row is the token written, then the K alternatives; ``ids`` int32 where the
  backend gives token ids, else ``texts`` (the token strings as JSON, zlib'd:
  a third of the JSON on llama.cpp's Gemma); ``logprobs`` float16 (2^-11
  relative, far below what distillation can tell; -inf pads). Measured on
  llama.cpp's Gemma 3 270M (256 tokens): 29 bytes a token at K=5, 93 at K=20,
  table and key index together (the completions' own rows: 18); with ids,
  6·(K+1) bytes a token plus the key.

Tables: ``completions`` (results), ``logprobs`` (top-K per token), ``failures``, ``questions`` (question text
and gold answer of every sample a run covered, so export and report need no
data directory), ``runs`` (each invocation's settings, append-only; the
last one is what export and report describe) and ``spending`` (what each paid
request cost, committed with its completions: the run directory's budget,
:mod:`ftcot.teach.budget`; stores made before it started at $0).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import sqlite3
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ftcot.dir_lock import lock_directory
from ftcot.errors import FtcotError
from ftcot.teach.records import TopLogprobs

STORE_FILE = "teach.sqlite"
# A run directory's second store: rationalization's hinted chains (ftcot.teach.rationalize), RUN_DIR/rationalize/.
RATIONALIZE_DIR = "rationalize"
# Page cache of a writing connection, in KiB (negative: SQLite's unit for KiB). Keys are
# SHA-256 hashes, so inserts land all over the key index; SQLite's default 2 MB made a
# million-row store re-read index pages on every group commit (bench/teach_store_scale.py).
_WRITER_CACHE = -65536
# Pages of WAL before a writer copies them into the database (SQLite's default: 1,000). Random
# keys dirty a page many times between checkpoints; copying each once per 10,000 pages instead
# of per 1,000 took a million-row write from ~14,000 to ~22,000 rows/s here. Durability is the
# WAL's fsync at each commit, not the checkpoint: a kill -9 or power loss loses no more.
_WAL_CHECKPOINT_PAGES = 10_000
LOCK_FILE = "teach.lock"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY,
    teacher TEXT NOT NULL,
    stage TEXT NOT NULL,
    sample_index INTEGER NOT NULL,
    sample_number INTEGER NOT NULL,
    prompt TEXT NOT NULL,
    max_tokens INTEGER NOT NULL,
    temperature REAL NOT NULL,
    stop TEXT NOT NULL,
    seed INTEGER,
    text TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    latency_s REAL NOT NULL,
    request_id TEXT NOT NULL,
    created REAL NOT NULL,
    reasoning TEXT
);
CREATE INDEX IF NOT EXISTS completions_by_item ON completions (stage, sample_index, sample_number);
CREATE TABLE IF NOT EXISTS failures (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    teacher TEXT NOT NULL,
    stage TEXT NOT NULL,
    sample_index INTEGER NOT NULL,
    sample_number INTEGER NOT NULL,
    status INTEGER,
    message TEXT NOT NULL,
    retryable INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS questions (
    sample_index INTEGER PRIMARY KEY,
    task TEXT NOT NULL,
    split TEXT NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL,
    settings TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS spending (
    request_id TEXT PRIMARY KEY,
    usd REAL NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS logprobs (
    key TEXT PRIMARY KEY,
    k INTEGER NOT NULL,
    length INTEGER NOT NULL,
    ids BLOB,
    texts BLOB,
    logprobs BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS logprobs_no_delete BEFORE DELETE ON logprobs
BEGIN SELECT RAISE(ABORT, 'logprobs are kept'); END;
CREATE TRIGGER IF NOT EXISTS completions_no_update BEFORE UPDATE ON completions
BEGIN SELECT RAISE(ABORT, 'completions are append-only'); END;
CREATE TRIGGER IF NOT EXISTS completions_no_delete BEFORE DELETE ON completions
BEGIN SELECT RAISE(ABORT, 'completions are append-only'); END;
CREATE TRIGGER IF NOT EXISTS failures_no_update BEFORE UPDATE ON failures
BEGIN SELECT RAISE(ABORT, 'failures are append-only'); END;
"""


def request_key(teacher: str, prompt: str, max_tokens: int, temperature: float,
                stop: Sequence[str], sample_number: int, question: int | None = None) -> str:
    """The store key of one requested completion (see the module docstring).

    ``question`` (a sample index) is part of the key only for teachers that answer
    per question (replay): two questions with the same text then keep their own
    recorded completions instead of sharing the first one's.
    """
    payload = {
        "teacher": teacher,
        "prompt": prompt,
        "max_tokens": int(max_tokens),
        # float() so that 0 and 0.0 (CLI vs. code) give the same key.
        "temperature": float(temperature),
        "stop": list(stop),
        "sample_number": int(sample_number),
    }
    if question is not None:
        payload["question"] = int(question)
    encoded = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class StoredCompletion:
    key: str
    teacher: str
    stage: str
    sample_index: int
    sample_number: int
    prompt: str
    max_tokens: int
    temperature: float
    stop: tuple[str, ...]
    seed: int | None
    text: str
    finish_reason: str
    # Prompt tokens billed for the request; with n > 1 the first choice carries
    # them and the others 0, so summing this column counts each prompt once.
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    request_id: str
    created: float
    # A reasoning model's reasoning as the server returned it apart from ``text``
    # (``reasoning_content``); None when it came inside ``text`` or not at all.
    # Kept raw: which part becomes the rationale is decided when it is read.
    reasoning: str | None = None


@dataclass(frozen=True)
class Failure:
    key: str
    teacher: str
    stage: str
    sample_index: int
    sample_number: int
    status: int | None
    message: str
    retryable: bool
    created: float


@dataclass(frozen=True)
class StoredQuestion:
    sample_index: int
    task: str
    split: str
    question: str
    answer: str


_COMPLETION_COLUMNS = ", ".join(StoredCompletion.__dataclass_fields__)


_STOP_FIELD = list(StoredCompletion.__dataclass_fields__).index("stop")
_FIELDS = len(StoredCompletion.__dataclass_fields__)


@functools.lru_cache(maxsize=64)
def _insert_completions(count: int) -> str:
    """One INSERT of ``count`` completions (a new key only: the first value is kept)."""
    one = f"({', '.join('?' * _FIELDS)})"
    return f"INSERT OR IGNORE INTO completions ({_COMPLETION_COLUMNS}) VALUES {', '.join([one] * count)}"


def _row_values(row: StoredCompletion) -> list[Any]:
    values = [getattr(row, name) for name in StoredCompletion.__dataclass_fields__]
    values[_STOP_FIELD] = json.dumps(list(row.stop))
    return values


# A completion's top-K, written with it and only while the stored completion of its key has the text the
# top-K describe (a greedy completion asked again for its log-probabilities may come back different from
# the one stored first: then they are not its). A larger K replaces a smaller one; nothing else does.
_INSERT_LOGPROBS = """
INSERT INTO logprobs (key, k, length, ids, texts, logprobs)
SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM completions WHERE key = ? AND text = ?)
ON CONFLICT (key) DO UPDATE SET k = excluded.k, length = excluded.length, ids = excluded.ids,
    texts = excluded.texts, logprobs = excluded.logprobs WHERE excluded.k > logprobs.k
"""


def encode_logprobs(top: TopLogprobs) -> tuple[int, int, bytes | None, bytes | None, bytes]:
    """``(k, length, ids, texts, logprobs)`` of a ``logprobs`` row (the layout in the module docstring)."""
    logprobs = np.concatenate([top.chosen_logprobs[:, None], top.logprobs], axis=1).astype("<f2")
    ids = texts = None
    if top.ids is not None and top.chosen_ids is not None:
        ids = np.concatenate([top.chosen_ids[:, None], top.ids], axis=1).astype("<i4").tobytes()
    else:
        rows = [[chosen, *alternatives] for chosen, alternatives in zip(top.chosen_tokens or (), top.tokens or ())]
        texts = zlib.compress(json.dumps(rows, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    return top.k, len(top), ids, texts, logprobs.tobytes()


def decode_logprobs(k: int, length: int, ids: bytes | None, texts: bytes | None, logprobs: bytes) -> TopLogprobs:
    values = np.frombuffer(logprobs, dtype="<f2").reshape(length, k + 1).astype(np.float32)
    if ids is not None:
        table = np.frombuffer(ids, dtype="<i4").reshape(length, k + 1).astype(np.int32)
        return TopLogprobs(values[:, 0].copy(), values[:, 1:].copy(), chosen_ids=table[:, 0].copy(),
                           ids=table[:, 1:].copy())
    rows = json.loads(zlib.decompress(texts or b"").decode("utf-8")) if length else []
    return TopLogprobs(values[:, 0].copy(), values[:, 1:].copy(), chosen_tokens=tuple(row[0] for row in rows),
                       tokens=tuple(tuple(row[1:]) for row in rows))


# Stores made before reasoning models were read get the column when first opened for writing
# (an added nullable column: older ftcot versions read and write such a store as before).
_ADD_REASONING = "ALTER TABLE completions ADD COLUMN reasoning TEXT;"


def _lacks_reasoning(db: sqlite3.Connection) -> bool:
    columns = {row[1] for row in db.execute("PRAGMA table_info(completions)")}
    return bool(columns) and "reasoning" not in columns


def _completion(row: sqlite3.Row) -> StoredCompletion:
    values = dict(row)
    values["stop"] = tuple(json.loads(values["stop"]))
    return StoredCompletion(**values)


def _unusable(path: Path, exc: sqlite3.Error) -> FtcotError:
    # The file is left as it is: it may hold paid completions that a copy of it can still save.
    return FtcotError(f"{path}: cannot open the teach store ({exc}); if it is not one, move it aside or use "
                      f"another --out (nothing was changed).")


class TeachStore:
    """A run directory's store. Open with :meth:`open` (writer) or :meth:`open_readonly`."""

    def __init__(self, path: Path, connection: sqlite3.Connection, writable: bool) -> None:
        self.path = path
        self._db = connection
        self.writable = writable
        self._lock_handle: Any = None
        self._columns = _COMPLETION_COLUMNS  # what a SELECT of whole completions names

    # -- opening -------------------------------------------------------------

    @classmethod
    def open(cls, run_dir: Path) -> TeachStore:
        run_dir = Path(run_dir)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FtcotError(f"{run_dir}: cannot create the run directory ({exc.strerror}).") from None
        path = run_dir / STORE_FILE
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one per request.
        db = None
        try:
            # check_same_thread=False: a run inside a running event loop (Jupyter) goes on in a thread of its
            # own while the caller's thread waits for it (engine.run_coroutine): one thread at a time uses it.
            db = sqlite3.connect(path, isolation_level=None, timeout=30.0, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=30000")
            db.execute(f"PRAGMA cache_size={_WRITER_CACHE}")
            db.execute(f"PRAGMA wal_autocheckpoint={_WAL_CHECKPOINT_PAGES}")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise FtcotError(f"{path}: store schema version {version} is newer than this ftcot "
                                 f"understands ({SCHEMA_VERSION}); upgrade ftcot.")
            # Schema and version in one transaction: a reader sees no store or a whole one.
            try:
                db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} {_ADD_REASONING if _lacks_reasoning(db) else ''} "
                                 f"PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):
                    raise
                if db.in_transaction:  # another process added the column between our look and our write
                    db.execute("ROLLBACK")
                db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
        except (FtcotError, sqlite3.Error) as exc:
            if db is not None:
                db.close()
            raise exc if isinstance(exc, FtcotError) else _unusable(path, exc) from None
        return cls(path, db, writable=True)

    @classmethod
    def open_readonly(cls, run_dir: Path) -> TeachStore:
        path = Path(run_dir) / STORE_FILE
        if not path.is_file():
            raise FtcotError(f"{run_dir}: no teach store ({STORE_FILE}) here; run 'ftcot teach ... --out {run_dir}' first.")
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0, check_same_thread=False)
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA busy_timeout=30000")
            version = db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as exc:
            db.close()
            raise _unusable(path, exc) from None
        if version != SCHEMA_VERSION:
            db.close()  # caught between the file's creation and its schema (one transaction later)
            raise FtcotError(f"{path}: the store is not initialised yet (or is not a teach store); try again.")
        store = cls(path, db, writable=False)
        if _lacks_reasoning(db):  # written before the column existed, and not opened for writing since
            store._columns = _COMPLETION_COLUMNS.replace("reasoning", "NULL AS reasoning")
        return store

    def second_writer(self) -> TeachStore:
        """Another writable connection to this store, for one other thread (the engine's committer).

        Its commits (each an fsync) then run beside the reads of this one: in WAL mode
        a reader never waits for a writer. It shares this handle's lock and settings.
        """
        if not self.writable:
            raise RuntimeError("this store was opened read-only")
        try:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA synchronous=FULL")  # per connection; WAL mode is the file's own
            db.execute("PRAGMA busy_timeout=30000")
            db.execute(f"PRAGMA cache_size={_WRITER_CACHE}")
            db.execute(f"PRAGMA wal_autocheckpoint={_WAL_CHECKPOINT_PAGES}")
        except sqlite3.Error as exc:
            raise _unusable(self.path, exc) from None
        return TeachStore(self.path, db, writable=True)

    def lock_for_writing(self) -> None:
        """Take the run directory's single-writer lock, or fail in one line."""
        run_dir = self.path.parent
        self._lock_handle = lock_directory(run_dir / LOCK_FILE, lambda holder: (
            f"{run_dir}: another 'ftcot teach' (pid {holder}) is writing to this run directory; "
            f"wait for it or use another --out."))

    def close(self) -> None:
        self._db.close()
        if self._lock_handle is not None:
            self._lock_handle.close()  # closing the descriptor releases the flock
            self._lock_handle = None

    def __enter__(self) -> TeachStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -------------------------------------------------------------

    def add_completions(self, rows: Sequence[StoredCompletion],
                        spending: Sequence[tuple[str, float]] = (),
                        logprobs: Mapping[str, TopLogprobs] | None = None) -> int:
        """Commit one request's completions together; returns how many were new.

        A key that is already stored keeps its first value (INSERT OR IGNORE):
        the store never overwrites a paid result. ``spending``: (request id, USD)
        of the requests these rows answer, recorded in the same transaction.
        ``logprobs``: key → the top-K of that row's text, in the same transaction
        too (kept only where the stored text is that row's: module docstring).
        """
        if not rows and not spending:
            return 0
        texts = {row.key: row.text for row in rows}
        # Many rows per INSERT statement, not executemany: each statement step releases and
        # retakes the GIL, and in the engine's committer thread every retake could wait out a
        # busy event loop's switch interval (5 ms) — per row, that held commits for tens of ms.
        per_statement = max(1, min(500, self._db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // _FIELDS))
        with self._transaction():
            before = self._db.total_changes
            for start in range(0, len(rows), per_statement):
                chunk = rows[start:start + per_statement]
                self._db.execute(_insert_completions(len(chunk)),
                                 [value for row in chunk for value in _row_values(row)])
            inserted = self._db.total_changes - before
            if logprobs:
                self._db.executemany(_INSERT_LOGPROBS, [(key, *encode_logprobs(top), key, texts[key])
                                                        for key, top in logprobs.items() if key in texts])
            if spending:
                now = time.time()
                self._db.executemany("INSERT OR IGNORE INTO spending (request_id, usd, created) VALUES (?, ?, ?)",
                                     [(request_id, usd, now) for request_id, usd in spending])
        return inserted

    def add_failure(self, failure: Failure) -> None:
        with self._transaction():
            self._db.execute(
                "INSERT INTO failures (key, teacher, stage, sample_index, sample_number, status, message, "
                "retryable, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (failure.key, failure.teacher, failure.stage, failure.sample_index, failure.sample_number,
                 failure.status, failure.message, int(failure.retryable), failure.created))

    def add_questions(self, task: str, split_of: dict[int, str], questions: Iterable[tuple[int, str, str]]) -> None:
        """Remember question text and gold answer (the first value wins, like everything here)."""
        with self._transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO questions (sample_index, task, split, question, answer) VALUES (?, ?, ?, ?, ?)",
                [(index, task, split_of.get(index, "?"), question, answer) for index, question, answer in questions])

    def add_run(self, settings: dict[str, Any]) -> int:
        with self._transaction():
            cursor = self._db.execute("INSERT INTO runs (started, settings) VALUES (?, ?)",
                                      (time.time(), json.dumps(settings, sort_keys=True)))
        return int(cursor.lastrowid)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One committed write; a store that cannot take it (a full disk) is a one-line error."""
        if not self.writable:
            raise RuntimeError("this store was opened read-only")
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # SQLite rolls back by itself on some errors (SQLITE_FULL)
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise FtcotError(f"{self.path}: cannot store ({exc}); free space or fix the directory and rerun: "
                             f"everything committed before is kept, and nothing is asked for twice.") from None

    # -- reading -------------------------------------------------------------

    def get(self, key: str) -> StoredCompletion | None:
        row = self._db.execute(f"SELECT {self._columns} FROM completions WHERE key = ?", (key,)).fetchone()
        return _completion(row) if row else None

    def get_many(self, keys: Iterable[str]) -> dict[str, StoredCompletion]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, StoredCompletion] = {}
        for start in range(0, len(keys), 500):  # stay under SQLite's bound-parameter limit
            chunk = keys[start:start + 500]
            rows = self._db.execute(
                f"SELECT {self._columns} FROM completions WHERE key IN ({', '.join('?' * len(chunk))})",
                chunk)
            found.update((row["key"], _completion(row)) for row in rows)
        return found

    def logprobs_k(self, keys: Iterable[str]) -> dict[str, int]:
        """K of the stored top-K of each of ``keys`` that has them (cheap: no arrays are read)."""
        return {row[0]: int(row[1]) for row in self._logprobs_rows("key, k", keys)}

    def top_logprobs(self, keys: Iterable[str]) -> dict[str, TopLogprobs]:
        """The stored top-K log-probabilities of each of ``keys`` that has them (:class:`TopLogprobs`)."""
        return {row[0]: decode_logprobs(*row[1:]) for row in self._logprobs_rows(
            "key, k, length, ids, texts, logprobs", keys)}

    def _logprobs_rows(self, columns: str, keys: Iterable[str]) -> Iterator[sqlite3.Row]:
        keys = list(dict.fromkeys(keys))
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            try:
                yield from self._db.execute(f"SELECT {columns} FROM logprobs WHERE key IN "
                                            f"({', '.join('?' * len(chunk))})", chunk).fetchall()
            except sqlite3.OperationalError:  # no such table: a store made before them, opened read-only
                return

    def stored_keys(self, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` have a stored completion (the keys only: cheap for a whole run's worth)."""
        keys = list(dict.fromkeys(keys))
        found: set[str] = set()
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            rows = self._db.execute(f"SELECT key FROM completions WHERE key IN ({', '.join('?' * len(chunk))})", chunk)
            found.update(row[0] for row in rows)
        return found

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The keys, in order, that have no stored completion: what a run still has to ask for."""
        keys = list(keys)
        have = self.get_many(keys)
        return [key for key in keys if key not in have]

    def completions(self) -> Iterator[StoredCompletion]:
        rows = self._db.execute(f"SELECT {self._columns} FROM completions ORDER BY created, key")
        return (_completion(row) for row in rows)

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM completions").fetchone()[0])

    def failures(self) -> list[Failure]:
        rows = self._db.execute("SELECT key, teacher, stage, sample_index, sample_number, status, message, "
                                "retryable, created FROM failures ORDER BY id")
        return [Failure(**{**dict(row), "retryable": bool(row["retryable"])}) for row in rows]

    def questions(self, split: str = "all") -> list[StoredQuestion]:
        if split == "all":
            rows = self._db.execute("SELECT * FROM questions ORDER BY sample_index")
        else:
            rows = self._db.execute("SELECT * FROM questions WHERE split = ? ORDER BY sample_index", (split,))
        return [StoredQuestion(**dict(row)) for row in rows]

    def last_run(self) -> dict[str, Any] | None:
        row = self._db.execute("SELECT settings FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        return json.loads(row["settings"]) if row else None

    def spent_usd(self) -> float:
        """What the requests recorded in this store cost (0 for a store made before the ledger)."""
        try:
            return float(self._db.execute("SELECT COALESCE(SUM(usd), 0) FROM spending").fetchone()[0])
        except sqlite3.OperationalError:  # no such table: written by an ftcot without it, read-only here
            return 0.0

    def totals(self) -> tuple[int, int]:
        """(prompt tokens, completion tokens) billed over every stored completion."""
        row = self._db.execute("SELECT COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0) "
                               "FROM completions").fetchone()
        return int(row[0]), int(row[1])

    def add_failures(self, failures: Sequence[Failure]) -> None:
        """Record many failures in one transaction (a batch's failed lines: one fsync, not one per item)."""
        if not failures:
            return
        with self._transaction():
            self._db.executemany(
                "INSERT INTO failures (key, teacher, stage, sample_index, sample_number, status, message, "
                "retryable, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(f.key, f.teacher, f.stage, f.sample_index, f.sample_number, f.status, f.message, int(f.retryable),
                  f.created) for f in failures])
