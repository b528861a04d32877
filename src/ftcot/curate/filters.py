"""Quality filters: teacher rationales that are correct but poor training data.

Each filter is a pure function of one teacher record; :class:`QualityFilters`
says which are on and gives ``reject(record)``, the first filter that drops it
(``select_rationales`` asks it only about correct, new rationales of training
questions, so its counts are rationales the filter removed from the training
data).

- ``truncated``: the rationale was cut at the teacher's token limit. A teacher
  that reports it says so (``finish_reason == "length"``; ``"stop"`` is never
  truncated). Recorded outputs (text-davinci-002's, replayed) carry no finish
  reason: then a rationale counts as cut when it ends mid-sentence (not on
  ``.``, ``!`` or ``?``, perhaps followed by a quote or bracket) *and* it is
  near the limit: at least 75% of ``limit`` tokens (128 for the paper's
  rationales), counting GPT-2 pre-tokens (a word with its leading space, a
  number, a run of punctuation or whitespace), a lower bound of the BPE count.
  A short rationale that ends on an equation ("19 + 18 = 37") is not cut.
- ``repetitive``: degenerate repetition: a run of one to three sentences
  repeated ``repeats`` (3) times or more back to back (a loop), or a share of
  repeated word 4-grams of ``max_share`` (0.6) or more (coin flip's
  legitimate step-by-step rationales reach 0.55). Unlike
  ``ftcot diagnose``'s "one sentence three times anywhere", an iterated step
  ("Perla does not flip the coin. The coin is still tails up.") is not a loop.
- ``no_reasoning``: the rationale states the answer without reasoning: fewer
  than ``min_words`` (5) words, or nothing but the answer (optionally "the
  answer is", "so", "therefore" around it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ftcot.errors import FtcotError

TRUNCATED = "truncated at the token limit"
REPETITIVE = "degenerate repetition"
NO_REASONING = "no reasoning"
FILTER_REASONS = {"truncated": TRUNCATED, "repetitive": REPETITIVE, "no_reasoning": NO_REASONING}

TEACHER_TOKEN_LIMIT = 128  # the paper's rationale budget (and the recorded text-davinci-002 outputs')
NEAR_LIMIT = 0.75
LOOP_REPEATS = 3
MAX_REPEATED_NGRAMS = 0.6
MIN_WORDS = 5

_ENDS_SENTENCE = re.compile(r"[.!?][\"'”’)\]]*\s*$")
# GPT-2's pre-tokenizer: every piece is at least one BPE token.
_PRE_TOKEN = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?[^\s\w]+|_+|\s+(?!\S)|\s+""")
_SENTENCE = re.compile(r"[^.\n!?]+[.\n!?]*")
_WORD = re.compile(r"\w+")
_FILLER = re.compile(r"^(so|therefore|thus|hence)?\s*(the answer is|answer)?\s*")


def pre_tokens(text: str) -> int:
    """GPT-2 pre-tokens of ``text``: a lower bound of its token count (each piece is one token or more)."""
    return len(_PRE_TOKEN.findall(text))


def truncated(record: dict, limit: int = TEACHER_TOKEN_LIMIT) -> bool:
    """Whether the rationale was cut at the teacher's token limit (see the module doc for unknown reasons)."""
    reason = record.get("finish_reason")
    if reason == "length":
        return True
    if reason == "stop":
        return False
    text = record.get("reasoning_completion") or ""
    if _ENDS_SENTENCE.search(text.rstrip() + " "):
        return False
    tokens = record.get("reasoning_tokens") or pre_tokens(text)
    return tokens >= NEAR_LIMIT * limit


def sentences(text: str) -> list[str]:
    return [" ".join(s.lower().split()) for s in _SENTENCE.findall(text) if s.strip(" \n.!?")]


def loops(text: str, repeats: int = LOOP_REPEATS, longest: int = 3) -> bool:
    """Whether a run of 1..``longest`` sentences occurs ``repeats`` times or more back to back."""
    parts = sentences(text)
    for period in range(1, longest + 1):
        for start in range(len(parts) - period * repeats + 1):
            block = parts[start:start + period]
            count = 1
            while parts[start + count * period:start + (count + 1) * period] == block:
                count += 1
            if count >= repeats:
                return True
    return False


def repeated_ngram_share(text: str, n: int = 4) -> float:
    """The share of word ``n``-grams of ``text`` that repeat an earlier one (0 for fewer than 2 n-grams)."""
    words = _WORD.findall(text.lower())
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if len(grams) > 1 else 0.0


def repetitive(text: str, repeats: int = LOOP_REPEATS, max_share: float = MAX_REPEATED_NGRAMS) -> bool:
    return loops(text, repeats) or repeated_ngram_share(text) >= max_share


def no_reasoning(text: str, answer: str, min_words: int = MIN_WORDS) -> bool:
    """Whether the rationale is too short to reason, or only states the answer."""
    words = _WORD.findall(text.lower())
    if len(words) < min_words:
        return True
    bare = " ".join(words)
    gold = " ".join(_WORD.findall(str(answer).lower()))
    return bool(gold) and _FILLER.sub("", bare).strip() == gold


@dataclass(frozen=True)
class QualityFilters:
    """Which filters are on, and their settings."""
    truncated: bool = False
    repetitive: bool = False
    no_reasoning: bool = False
    min_words: int = MIN_WORDS
    token_limit: int = TEACHER_TOKEN_LIMIT

    def __post_init__(self) -> None:
        if self.min_words < 1:
            raise FtcotError(f"drop no-reasoning:{self.min_words}: must be 1 or more.")
        if self.token_limit < 1:
            raise FtcotError(f"drop truncated:{self.token_limit}: must be 1 or more (128 for the paper's "
                             f"rationales).")

    @property
    def any(self) -> bool:
        return self.truncated or self.repetitive or self.no_reasoning

    def flags(self, record: dict) -> list[str]:
        """Every filter (on or off) that would drop ``record``, in order."""
        text = (record.get("reasoning_completion") or "").strip()
        found = []
        if truncated(record, self.token_limit):
            found.append("truncated")
        if repetitive(text):
            found.append("repetitive")
        if no_reasoning(text, record.get("answer", ""), self.min_words):
            found.append("no_reasoning")
        return found

    def reject(self, record: dict) -> str | None:
        """The drop reason of the first filter that is on and flags ``record``, else None."""
        for name in self.flags(record):
            if getattr(self, name):
                return FILTER_REASONS[name]
        return None

    def to_json(self) -> dict:
        return {"truncated": self.truncated, "repetitive": self.repetitive, "no_reasoning": self.no_reasoning,
                "min_words": self.min_words, "token_limit": self.token_limit}
