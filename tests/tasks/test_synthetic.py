"""Generated coin flip and last-letter questions: worded like the originals, answers right by the same rule."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from ftcot.cli.synth import synth_command
from ftcot.errors import FtcotError
from ftcot.scoring import score
from ftcot.tasks import load_task
from ftcot.tasks.synthetic import BUILTIN_NAMES, KINDS, NamePool, generate, load_name_pool

# --- the rules, re-derived from the question text alone (independent of the generator) ---

COIN = re.compile(r'A coin is heads up\. ((?:[^.]+ (?:flips|does not flip) the coin\. )+)'
                  r'Is the coin still heads up\? Note that "flip" here means "reverse"\.')
COIN_STEP = re.compile(r"([^.]+?) (flips|does not flip) the coin\. ")
LETTERS = re.compile(r'Take the last letters of each words in "([^"]+)" and concatenate them\.')


def coin_flip_rule(question: str) -> tuple[str, list[str]]:
    """The answer (heads up iff an even number of flips) and the names, from the text."""
    match = COIN.fullmatch(question)
    assert match, question
    steps = COIN_STEP.findall(match.group(1))
    assert "".join(f"{name} {verb} the coin. " for name, verb in steps) == match.group(1)
    flips = sum(verb == "flips" for _, verb in steps)
    return ("yes" if flips % 2 == 0 else "no"), [name for name, _ in steps]


def last_letters_rule(question: str, names: list[str] | None = None) -> str:
    """The last letter of each name; names default to the quoted words split on spaces."""
    match = LETTERS.fullmatch(question)
    assert match, question
    names = names or match.group(1).split(" ")
    assert " ".join(names) == match.group(1)
    return "".join(name[-1] for name in names)


def originals(data_root: Path, key: str, file_name: str) -> list[dict]:
    return json.loads((data_root / "raw" / key / file_name).read_text(encoding="utf-8"))["examples"]


# --- the rules agree with the original files -------------------------------------------


def test_every_original_coin_flip_answer_follows_the_rule(data_root):
    examples = originals(data_root, "coin_flip", "coin_flip.json")
    assert len(examples) == 500
    for example in examples:
        answer, names = coin_flip_rule(example["question"])
        assert answer == example["answer"], example
        assert len(names) == 4


def test_every_original_last_letters_answer_follows_the_rule(data_root):
    coins = originals(data_root, "coin_flip", "coin_flip.json")
    letters = originals(data_root, "last_letter_concatenation", "last_letters.json")
    split_on_spaces = 0
    for coin, example in zip(coins, letters, strict=True):
        # The two files share their names, in order; the coin flip sentences say where
        # each name ends, which settles the few two-word names ("Jose Luis").
        _, names = coin_flip_rule(coin["question"])
        assert last_letters_rule(example["question"], names) == example["answer"], example
        if all(" " not in name for name in names):
            assert last_letters_rule(example["question"]) == example["answer"]
            split_on_spaces += 1
    assert split_on_spaces > 480


# --- generated questions ---------------------------------------------------------------


@pytest.fixture(scope="module")
def data_pool() -> NamePool:
    from tests.conftest import SHARED_DATA

    pool = load_name_pool(SHARED_DATA)
    assert pool.source.endswith("coin_flip.json")
    return pool


BUILTIN_POOL = NamePool(tuple(sorted(BUILTIN_NAMES)), "built-in list")


@pytest.mark.parametrize("count", [1, 2, 4, 6, 8, 12])
@pytest.mark.parametrize("which", ["data", "builtin"])
def test_every_generated_answer_is_rederived_from_its_question(data_pool, which, count):
    pool = data_pool if which == "data" else BUILTIN_POOL
    coins = generate("coin_flip", count, 300, seed=7, pool=pool)
    letters = generate("last_letter_concatenation", count, 300, seed=7, pool=pool)
    for coin, letter in zip(coins, letters, strict=True):
        assert set(coin) == set(letter) == {"question", "answer"}
        answer, names = coin_flip_rule(coin["question"])
        assert coin["answer"] == answer
        assert len(names) == len(set(names)) == count
        assert set(names) <= set(pool.names)
        assert letter["answer"] == last_letters_rule(letter["question"])
        assert len(letter["answer"]) == count
        # One seed, one sequence of names for both kinds, like the original pair of files.
        assert letter["question"].split('"')[1] == " ".join(names)


def _skeleton(question: str) -> str:
    """The wording with every name replaced by NAME."""
    if question.startswith("Take"):
        return LETTERS.sub(lambda m: f'Take the last letters of each words in "{re.sub(r"[^ ]+", "NAME", m.group(1))}" '
                                     f"and concatenate them.", question)
    return COIN_STEP.sub(lambda m: f"NAME {m.group(2)} the coin. ", question)


def test_four_name_questions_have_exactly_the_originals_wording(data_root, data_pool):
    original = {_skeleton(e["question"]) for e in originals(data_root, "coin_flip", "coin_flip.json")}
    assert len(original) == 16  # flips or not, for four people
    made = {_skeleton(r["question"]) for r in generate("coin_flip", 4, 300, seed=0, pool=data_pool)}
    assert made == original
    original = {_skeleton(e["question"]) for e in originals(data_root, "last_letter_concatenation", "last_letters.json")
                if len(e["question"].split('"')[1].split()) == 4}
    made = {_skeleton(r["question"]) for r in generate("last_letter_concatenation", 4, 50, seed=0, pool=data_pool)}
    assert made == original == {'Take the last letters of each words in "NAME NAME NAME NAME" and concatenate them.'}


def test_generation_is_deterministic_for_a_seed_and_balanced():
    first = generate("coin_flip", 4, 500, seed=3)
    assert first == generate("coin_flip", 4, 500, seed=3)
    assert first != generate("coin_flip", 4, 500, seed=4)
    assert 200 < sum(r["answer"] == "yes" for r in first) < 300
    assert len({r["question"] for r in first}) > 490


def test_bad_parameters_are_one_line_errors():
    with pytest.raises(FtcotError, match="Unknown synthetic task 'coin'. Did you mean 'coin_flip'"):
        generate("coin", 4, 10)
    with pytest.raises(FtcotError, match="--names is 0; give at least 1"):
        generate("coin_flip", 0, 10)
    with pytest.raises(FtcotError, match=r"--names is 500 but the name list \(built-in list\) has only 223"):
        generate("coin_flip", 500, 10)
    with pytest.raises(FtcotError, match="--n is 0"):
        generate("last_letter_concatenation", 4, 0)


# --- the name list ---------------------------------------------------------------------


def test_names_come_from_the_original_files_when_present(data_root, data_pool):
    in_originals = {n for e in originals(data_root, "coin_flip", "coin_flip.json")
                    for n in coin_flip_rule(e["question"])[1]}
    assert set(data_pool.names) <= in_originals
    # All but the two-word names, which would make a last-letters question ambiguous.
    assert in_originals - set(data_pool.names) == {n for n in in_originals if " " in n}
    assert list(data_pool.names) == sorted(data_pool.names)


def test_names_fall_back_to_last_letters_file_then_to_the_builtin_list(tmp_path, data_root):
    assert load_name_pool(tmp_path) == BUILTIN_POOL
    assert load_name_pool(None) == BUILTIN_POOL
    assert 190 <= len(BUILTIN_NAMES) == len(set(BUILTIN_NAMES)) and all(n.isalpha() for n in BUILTIN_NAMES)
    target = tmp_path / "raw" / "last_letter_concatenation"
    target.mkdir(parents=True)
    examples = [{"question": 'Take the last letters of each words in "Ann Bob Jose Luis" and concatenate them.',
                 "answer": "nbs"},  # a two-word name: 4 words but 3 letters, so the row is skipped
                {"question": 'Take the last letters of each words in "Cy Dee" and concatenate them.', "answer": "ye"}]
    (target / "last_letters.json").write_text(json.dumps({"examples": examples}), encoding="utf-8")
    pool = load_name_pool(tmp_path)
    assert pool.names == ("Cy", "Dee")
    assert pool.source.endswith("last_letters.json")


def test_a_corrupt_original_file_is_a_one_line_error(tmp_path):
    target = tmp_path / "raw" / "coin_flip"
    target.mkdir(parents=True)
    (target / "coin_flip.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(FtcotError, match=r"coin_flip\.json: cannot read names from it .*ftcot data download"):
        load_name_pool(tmp_path)


# --- generated sets are tasks of one's own, and the CLI --------------------------------


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command("synth")(synth_command)
    app.command("unused")(lambda: None)  # two commands, so "synth" is a sub-command as in `ftcot data`
    return app


@pytest.mark.parametrize(("kind", "answer_type", "completion"), [
    ("coin_flip", "yes/no", " {answer}."),
    ("last_letter_concatenation", "text", ' "{answer}".'),
])
def test_cli_output_loads_and_scores_as_a_task_of_ones_own(tmp_path, kind, answer_type, completion):
    out = tmp_path / "sets" / f"{kind}_6.jsonl"
    result = CliRunner().invoke(cli(), ["synth", kind, "--names", "6", "--n", "40", "--seed", "1",
                                        "--out", str(out), "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}: 40 {kind} questions, 6 names each, seed 1, 223 names from built-in list" in result.stderr
    task = load_task(str(out), answer_type=answer_type)
    assert task.key == f"{kind}_6"
    assert len(task.split("train")) == 28 and len(task.split("test")) == 12
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert records == generate(kind, 6, 40, seed=1)
    for sample in task.samples.values():
        assert score(completion.format(answer=sample.answer), sample.answer, task.spec).correct


def test_cli_writes_stdout_by_default_and_reports_errors(tmp_path):
    result = CliRunner().invoke(cli(), ["synth", "last_letter_concatenation", "--n", "3", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.stdout.splitlines()] == generate("last_letter_concatenation", 4, 3)
    assert "--answer-type text" in result.stderr
    bad = CliRunner().invoke(cli(), ["synth", "coin_flp"])
    assert isinstance(bad.exception, FtcotError)
    assert "Did you mean 'coin_flip'" in str(bad.exception)
    assert set(KINDS) == {"coin_flip", "last_letter_concatenation"}
