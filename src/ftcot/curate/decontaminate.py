"""Decontamination: training questions that overlap a benchmark's test questions.

Two rules, each a pure function of the question texts:

- ``exact``: the questions are equal after :func:`normalize` (lower-case,
  punctuation removed, whitespace collapsed);
- ``ngram``: they share a word ``n``-gram of the normalised text (13 by
  default, as lm-evaluation-harness does; open-r1 uses 8).

Each pair carries its ``overlap``: the share of the test question's distinctive
n-grams (those in at most ``max_df`` test questions) that the training question
has too, 1.0 for ``exact``. A benchmark generated from templates shares a
13-gram between most of its questions without one being a copy of another
(shuffled objects: every training question, at overlaps from 0.12 to 0.9); a
copy shares nearly all of them. ``min_overlap`` (default 0: any shared n-gram,
as lm-evaluation-harness) keeps only the pairs at or above it.

The test side is indexed once (:class:`TestIndex`: n-gram → test questions), so
checking a training set costs one dictionary lookup per training n-gram. An
n-gram found in more than ``max_df`` test questions is template text shared by
a generated benchmark (coin flip's "flip here means reverse", the shuffled
objects' preamble), not a leaked question, and is ignored; a whole duplicate is
still caught by ``exact``.

The test questions are those of the 12 benchmarks (each one's ``test`` split,
the task being curated under its own split scheme) and any file the user names
(JSONL or CSV with a ``question`` column).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ftcot.errors import FtcotError

MODES = ("warn", "drop", "off")
DEFAULT_MODE = "warn"
DEFAULT_NGRAM = 13
# An n-gram in more test questions than this is a benchmark's template, not a leak.
DEFAULT_MAX_DF = 10
DEFAULT_MIN_OVERLAP = 0.0
EXACT = "exact"
NGRAM = "ngram"

_PUNCTUATION = re.compile(r"[^\w\s]|_")


def normalize(text: str) -> str:
    """Lower-case, punctuation removed, whitespace collapsed."""
    return " ".join(_PUNCTUATION.sub("", text.lower()).split())


def ngrams(normalized: str, n: int) -> set[str]:
    """The word n-grams of a normalised text, each as its words joined by one space."""
    words = normalized.split()
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


@dataclass(frozen=True)
class TestQuestion:
    __test__ = False  # not a pytest class
    task: str  # a benchmark key, or a test file's name
    index: int  # sample index in the benchmark, or line (row) number in the file
    question: str


@dataclass(frozen=True)
class Flag:
    """A training question that overlaps a test question, and why."""
    train_index: int
    task: str
    test_task: str
    test_index: int
    rule: str  # EXACT or NGRAM
    ngram: str | None  # the first shared n-gram (for NGRAM)
    overlap: float  # share of the test question's distinctive n-grams in the training question (1.0: EXACT)

    def to_json(self) -> dict:
        return {"train_index": self.train_index, "task": self.task, "test_task": self.test_task,
                "test_index": self.test_index, "rule": self.rule, "ngram": self.ngram,
                "overlap": round(self.overlap, 3)}


@dataclass
class TestIndex:
    __test__ = False
    n: int
    max_df: int
    questions: list[TestQuestion] = field(default_factory=list)
    by_text: dict[str, list[int]] = field(default_factory=dict)  # normalised question -> question ids
    by_ngram: dict[str, list[int]] = field(default_factory=dict)  # n-gram -> question ids
    grams: list[set[str]] = field(default_factory=list)  # question id -> its n-grams

    @classmethod
    def build(cls, questions: Iterable[TestQuestion], n: int = DEFAULT_NGRAM,
              max_df: int = DEFAULT_MAX_DF) -> "TestIndex":
        index = cls(n, max_df)
        for question in questions:
            index.add(question)
        return index

    def add(self, question: TestQuestion) -> None:
        qid = len(self.questions)
        self.questions.append(question)
        text = normalize(question.question)
        self.by_text.setdefault(text, []).append(qid)
        self.grams.append(ngrams(text, self.n))
        for gram in self.grams[qid]:
            self.by_ngram.setdefault(gram, []).append(qid)

    def _distinctive(self, grams: set[str]) -> set[str]:
        return {g for g in grams if len(self.by_ngram.get(g, ())) <= self.max_df}

    def matches(self, question: str) -> dict[int, tuple[str, str | None, float]]:
        """Test question id -> (rule, shared n-gram, overlap) for every test question ``question`` overlaps."""
        text = normalize(question)
        found: dict[int, tuple[str, str | None, float]] = {qid: (EXACT, None, 1.0)
                                                           for qid in self.by_text.get(text, ())}
        mine = ngrams(text, self.n)
        for gram in sorted(self._distinctive(mine)):  # sorted: the reported n-gram does not depend on hashing
            for qid in self.by_ngram.get(gram, ()):
                if qid not in found:
                    theirs = self._distinctive(self.grams[qid])
                    found[qid] = (NGRAM, gram, len(theirs & mine) / len(theirs))
        return found


def find_contamination(index: TestIndex, task: str, train: Iterable[tuple[int, str]],
                       skip: Iterable[tuple[str, int]] = (), min_overlap: float = DEFAULT_MIN_OVERLAP) -> list[Flag]:
    """Every (training question, test question) pair that overlaps by ``min_overlap`` or more; ``skip``: test
    questions to ignore (a benchmark's own test split under another split scheme)."""
    ignored = set(skip)
    flags = []
    for train_index, question in train:
        for qid, (rule, gram, overlap) in sorted(index.matches(question).items()):
            test = index.questions[qid]
            if (test.task, test.index) in ignored or overlap < min_overlap:
                continue
            flags.append(Flag(train_index, task, test.task, test.index, rule, gram, overlap))
    return flags


def summarize(flags: list[Flag], mode: str, n: int, against: list[str],
              min_overlap: float = DEFAULT_MIN_OVERLAP, missing: Sequence[str] = ()) -> dict:
    """The contamination block of curation.json: the flagged training questions (in all, per test task), the
    pairs per rule, and every flagged pair."""
    per_task = Counter(test_task for test_task, _ in {(f.test_task, f.train_index) for f in flags})
    return {
        "mode": mode,
        "ngram": n,
        "min_overlap": min_overlap,
        "against": against,
        "benchmarks_not_checked": list(missing),  # not on disk under the data root
        "flagged_questions": len({f.train_index for f in flags}),
        "pairs": len(flags),
        "per_test_task": dict(sorted(per_task.items())),
        "per_rule": dict(sorted(Counter(f.rule for f in flags).items())),
        "flags": [f.to_json() for f in flags],
    }


# ---- the test questions ------------------------------------------------------------------------------------------
def benchmark_test_questions(data_root: Path, scheme: str = "default") -> tuple[list[TestQuestion], list[str]]:
    """The test questions of the benchmarks on disk under ``data_root`` (their ``scheme`` split), and the keys of
    those that are not (a data root holding some of the 12 is checked against those, and says so)."""
    from ftcot.tasks import BUILTIN_TASKS, load_task

    questions, missing = [], []
    for key in BUILTIN_TASKS:
        try:
            task = load_task(key, data_root)
        except FtcotError:
            missing.append(key)
            continue
        for i in task.split_indices("test", scheme):
            if i in task.samples:
                questions.append(TestQuestion(key, i, task.samples[i].question))
    return questions, missing


@lru_cache(maxsize=4)
def benchmark_index(data_root: Path, n: int = DEFAULT_NGRAM, max_df: int = DEFAULT_MAX_DF) -> tuple[TestIndex, list[str]]:
    """The benchmarks' test questions, indexed once a process; and the benchmarks missing from the data root."""
    questions, missing = benchmark_test_questions(data_root)
    return TestIndex.build(questions, n, max_df), missing


def read_test_file(path: Path) -> list[TestQuestion]:
    """The questions of a JSONL or CSV test file (a ``question`` field on every row)."""
    option = "decontaminate against="
    if not path.is_file():
        raise FtcotError(f"{option}{path}: no such file; name a JSONL or CSV file with a 'question' column.")
    rows: list[dict] = []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FtcotError(f"{option}{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8 "
                         f"JSONL or CSV.") from None
    except OSError as exc:
        raise FtcotError(f"{option}{path}: cannot be read ({exc.strerror or exc}).") from None
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
    elif path.suffix.lower() in (".jsonl", ".json"):
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise FtcotError(f"{option}{path}: line {number} is not JSON; "
                                     f"give one JSON object a line.") from None
    else:
        raise FtcotError(f"{option}{path}: expected a .jsonl or .csv file with a 'question' column.")
    questions = []
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not isinstance(row.get("question"), str):
            raise FtcotError(f"{option}{path}: row {number} has no 'question' text; "
                             f"every row needs a 'question' field.")
        questions.append(TestQuestion(path.name, number - 1, row["question"]))
    return questions


@dataclass(frozen=True)
class Decontamination:
    """What ``curate`` checks training questions against, and what it does with a match."""
    mode: str = DEFAULT_MODE
    n: int = DEFAULT_NGRAM
    against: tuple[str, ...] = ()  # the user's test files
    data_root: Path | None = None
    max_df: int = DEFAULT_MAX_DF
    min_overlap: float = DEFAULT_MIN_OVERLAP

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise FtcotError(f"decontaminate {self.mode}: unknown mode; use warn, drop or off.")
        if self.n < 1:
            raise FtcotError(f"decontaminate ngram={self.n}: must be 1 or more (13 as lm-evaluation-harness, "
                             f"8 as open-r1).")
        if self.max_df < 1:
            raise FtcotError(f"decontaminate max_df={self.max_df}: must be 1 or more.")
        if not 0 <= self.min_overlap <= 1:  # also refuses NaN
            raise FtcotError(f"decontaminate min_overlap={self.min_overlap}: must be from 0 (any shared n-gram) "
                             f"to 1 (every distinctive n-gram of the test question).")
        for name in self.against:  # refused before any work
            read_test_file(Path(name))

    def check(self, task, train_indices: list[int], scheme: str = "default") -> list[Flag]:
        """The flagged pairs of ``task``'s training questions ``train_indices``."""
        from ftcot.tasks import BUILTIN_TASKS

        if self.mode == "off":
            return []
        train = [(i, task.samples[i].question) for i in train_indices if i in task.samples]
        flags: list[Flag] = []
        root = self.data_root or task.data_root
        skip: set[tuple[str, int]] = set()
        own: list[TestQuestion] = []
        if root is not None:
            index, _ = benchmark_index(Path(root), self.n, self.max_df)
            flags += find_contamination(index, task.key, train, self._own_default_test(task, scheme),
                                        self.min_overlap)
        if task.key not in BUILTIN_TASKS or scheme != "default" or root is None:
            # The task's own test split: a user's file, or a benchmark under another split scheme.
            own = [TestQuestion(task.key, i, task.samples[i].question)
                   for i in _test_indices(task, scheme) if i in task.samples]
        extra = [q for name in self.against for q in read_test_file(Path(name))]
        if own or extra:
            flags += find_contamination(TestIndex.build(own + extra, self.n, self.max_df), task.key, train, skip,
                                        self.min_overlap)
        return sorted(flags, key=lambda f: (f.train_index, f.test_task, f.test_index))

    def not_checked(self, task) -> list[str]:
        """The benchmarks ``check`` could not check ``task`` against: not on disk (all 12 without a data root)."""
        from ftcot.tasks import BUILTIN_TASKS

        root = self.data_root or task.data_root
        return list(BUILTIN_TASKS) if root is None else benchmark_index(Path(root), self.n, self.max_df)[1]

    @staticmethod
    def _own_default_test(task, scheme: str) -> set[tuple[str, int]]:
        """A benchmark's default test questions when it is curated under another scheme (some are training
        questions there)."""
        if scheme == "default":
            return set()
        return {(task.key, i) for i in _test_indices(task, "default")}


def _test_indices(task, scheme: str) -> list[int]:
    try:
        return task.split_indices("test", scheme)
    except FtcotError:
        return []
