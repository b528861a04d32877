"""Coin flip and last-letter concatenation, generated at any length.

The two symbolic benchmarks (Wei et al.'s, as shipped by Kojima et al.) use
four names per question. Generating them with 2, 6, 8, … names tests length
generalisation: train on short questions, test on longer ones. Questions are
worded exactly as in the originals; answers are computed from the question,
so they are right by construction (tests/tasks/test_synthetic.py re-derives
every answer, and checks the same rule against the original files).

Output records are ``{"question", "answer"}``, which
:func:`ftcot.tasks.custom.load_custom_task` reads with ``--answer-type yes/no``
(coin flip) or ``--answer-type text`` (last letters), so a generated set goes
through every stage like a built-in task.

Names come from the original files when they are under the data root (about
2,000 distinct names), else from a built-in list of about 200 common first names.
The output is deterministic for a seed *and* a name source; the CLI says which
source it used.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from ftcot.errors import FtcotError, unknown_name

KINDS = ("coin_flip", "last_letter_concatenation")

COIN_FLIP_START = "A coin is heads up."
COIN_FLIP_END = 'Is the coin still heads up? Note that "flip" here means "reverse".'
LAST_LETTERS = 'Take the last letters of each words in "{words}" and concatenate them.'

# Where the originals live under a data root (the same paths the built-in readers use).
COIN_FLIP_FILE = Path("raw/coin_flip/coin_flip.json")
LAST_LETTERS_FILE = Path("raw/last_letter_concatenation/last_letters.json")

# The coin flip sentences delimit names unambiguously, even two-word ones ("Jose Luis").
_COIN_FLIP_STEP = re.compile(r"(?:^|\. )([^.]+?) (?:flips|does not flip) the coin(?=\.)")
_QUOTED = re.compile(r'"([^"]*)"')

BUILTIN_NAMES = (
    "Aaron", "Abigail", "Adam", "Adrian", "Aiden", "Alan", "Albert", "Alex", "Alice", "Allison",
    "Alyssa", "Amanda", "Amber", "Amy", "Andrea", "Andrew", "Angela", "Anna", "Anthony", "Ashley",
    "Austin", "Barbara", "Benjamin", "Beth", "Betty", "Bianca", "Blake", "Brandon", "Brenda", "Brian",
    "Brittany", "Brooke", "Bruce", "Bryan", "Caleb", "Cameron", "Carl", "Carlos", "Carmen", "Carol",
    "Caroline", "Catherine", "Chad", "Charles", "Chelsea", "Cheryl", "Chloe", "Chris", "Christian",
    "Christina", "Cindy", "Claire", "Cody", "Colin", "Connor", "Craig", "Crystal", "Cynthia", "Daisy",
    "Dale", "Daniel", "Danielle", "David", "Deborah", "Denise", "Dennis", "Derek", "Diana", "Diane",
    "Dominic", "Donald", "Donna", "Dorothy", "Douglas", "Dylan", "Edward", "Elena", "Elijah",
    "Elizabeth", "Ella", "Emily", "Emma", "Eric", "Erica", "Erin", "Ethan", "Eugene", "Evan", "Evelyn",
    "Felix", "Fiona", "Frances", "Frank", "Gabriel", "Gary", "George", "Gerald", "Gloria", "Grace",
    "Gregory", "Hailey", "Hannah", "Harold", "Heather", "Helen", "Henry", "Holly", "Ian", "Isaac",
    "Isabel", "Jack", "Jacob", "Jacqueline", "James", "Janet", "Jason", "Jeffrey", "Jennifer", "Jeremy",
    "Jesse", "Jessica", "Joan", "Joel", "John", "Jonathan", "Jordan", "Joseph", "Joshua", "Joyce",
    "Judith", "Julia", "Julian", "Justin", "Karen", "Katherine", "Kayla", "Keith", "Kelly", "Kenneth",
    "Kevin", "Kimberly", "Kyle", "Laura", "Lauren", "Lawrence", "Leah", "Leonard", "Liam", "Linda",
    "Lisa", "Logan", "Lucas", "Lucy", "Luis", "Luke", "Madison", "Marcus", "Margaret", "Maria",
    "Marie", "Mark", "Martha", "Martin", "Mason", "Matthew", "Megan", "Melissa", "Michael", "Michelle",
    "Miguel", "Monica", "Nancy", "Natalie", "Nathan", "Nicholas", "Nicole", "Noah", "Olivia", "Oscar",
    "Owen", "Pamela", "Patricia", "Patrick", "Paul", "Peter", "Philip", "Rachel", "Ralph", "Raymond",
    "Rebecca", "Richard", "Robert", "Roger", "Ronald", "Rose", "Ruby", "Russell", "Ryan", "Samantha",
    "Samuel", "Sandra", "Sara", "Scott", "Sean", "Sharon", "Shirley", "Sophia", "Stephanie", "Steven",
    "Susan", "Teresa", "Thomas", "Timothy", "Tyler", "Valerie", "Victor", "Victoria", "Vincent",
    "Walter", "Wayne", "William", "Zachary", "Zoe",
)


@dataclass(frozen=True)
class NamePool:
    """The names questions draw from, sorted so a seed gives the same questions; ``source`` says whence."""

    names: tuple[str, ...]
    source: str


def usable_name(name: str) -> bool:
    # One alphabetic word: the originals' few two-word names ("Jose Luis") make the
    # last-letters question ambiguous (is it one word or two?), so they are left out.
    return name.isalpha()


def names_in_coin_flip(question: str) -> list[str]:
    """The names of an original or generated coin flip question, in order."""
    return _COIN_FLIP_STEP.findall(question)


def load_name_pool(data_root: Path | None) -> NamePool:
    """Names from the original files under ``data_root`` if present, else the built-in list."""
    if data_root is not None:
        for relative, extract in ((COIN_FLIP_FILE, _coin_flip_names), (LAST_LETTERS_FILE, _last_letter_names)):
            path = Path(data_root) / relative
            if path.is_file():
                names = sorted({n for n in extract(_examples(path)) if usable_name(n)})
                if names:
                    return NamePool(tuple(names), str(path))
    return NamePool(tuple(sorted(BUILTIN_NAMES)), "built-in list")


def _examples(path: Path) -> list[dict]:
    try:
        with path.open(encoding="utf-8") as handle:
            examples = json.load(handle)["examples"]
        return [e for e in examples if isinstance(e, dict) and isinstance(e.get("question"), str)]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FtcotError(f"{path}: cannot read names from it ({type(exc).__name__}: {exc}); "
                         f"run 'ftcot data download' to restore it.") from None


def _coin_flip_names(examples: list[dict]) -> list[str]:
    return [name for e in examples for name in names_in_coin_flip(e["question"])]


def _last_letter_names(examples: list[dict]) -> list[str]:
    names = []
    for e in examples:
        quoted = _QUOTED.search(e["question"])
        words = quoted.group(1).split() if quoted else []
        # Only where the words are the names: one word per letter of the answer.
        if words and len(words) == len(str(e.get("answer", ""))):
            names.extend(words)
    return names


def coin_flip(names: list[str], flips: list[bool]) -> dict[str, str]:
    """One question: each name flips or does not; heads up again iff the flips are even."""
    steps = " ".join(f"{name} {'flips' if flip else 'does not flip'} the coin." for name, flip in zip(names, flips))
    return {"question": f"{COIN_FLIP_START} {steps} {COIN_FLIP_END}",
            "answer": "yes" if sum(flips) % 2 == 0 else "no"}


def last_letter_concatenation(names: list[str]) -> dict[str, str]:
    """One question: the last letter of every name, concatenated."""
    return {"question": LAST_LETTERS.format(words=" ".join(names)),
            "answer": "".join(name[-1] for name in names)}


def generate(kind: str, names: int = 4, n: int = 500, seed: int = 0,
             pool: NamePool | None = None) -> list[dict[str, str]]:
    """``n`` questions of ``kind`` with ``names`` distinct names each, deterministic for ``seed``."""
    if kind not in KINDS:
        raise unknown_name("synthetic task", kind, KINDS)
    pool = pool or NamePool(tuple(sorted(BUILTIN_NAMES)), "built-in list")
    if names < 1:
        raise FtcotError(f"--names is {names}; give at least 1 name per question (the originals use 4).")
    if names > len(pool.names):
        raise FtcotError(f"--names is {names} but the name list ({pool.source}) has only "
                         f"{len(pool.names)} names; use fewer.")
    if n < 1:
        raise FtcotError(f"--n is {n}; generate at least 1 question.")
    # Names and flips come from separate generators, so the same seed gives the
    # same names for both kinds, as in the originals (both files share their names).
    name_rng = random.Random(seed)
    flip_rng = random.Random(f"coin_flip:{seed}")
    records = []
    for _ in range(n):
        chosen = name_rng.sample(pool.names, names)
        if kind == "coin_flip":
            records.append(coin_flip(chosen, [flip_rng.random() < 0.5 for _ in chosen]))
        else:
            records.append(last_letter_concatenation(chosen))
    return records
