"""Quality filters on the recorded text-davinci-002 rationales and on a real (replayed) teach run."""

from __future__ import annotations

import json
import re

import pytest

from ftcot.curate import curate
from ftcot.curate.filters import (FILTER_REASONS, NO_REASONING, REPETITIVE, TRUNCATED, QualityFilters, loops,
                                  no_reasoning, pre_tokens, repeated_ngram_share, repetitive, truncated)
from ftcot.curate.report import settings
from ftcot.errors import FtcotError
from ftcot.tasks import load_task
from ftcot.templates import get_template
from tests.cli import assert_one_line_error, run_ftcot
from tests.conftest import TEACHER_DIR

TASKS = ["single_eq", "addsub", "multiarith", "svamp", "date_understanding", "tracking_shuffled_objects",
         "last_letter_concatenation", "coin_flip", "strategy_qa"]
# Correct training rationales each filter drops (alone), measured on the recorded outputs.
DROPPED = {
    "truncated": {"single_eq": 23, "addsub": 10, "multiarith": 11, "svamp": 33, "date_understanding": 3,
                  "tracking_shuffled_objects": 4, "last_letter_concatenation": 0, "coin_flip": 5, "strategy_qa": 179},
    "repetitive": {"single_eq": 1, "addsub": 0, "multiarith": 0, "svamp": 1, "date_understanding": 0,
                   "tracking_shuffled_objects": 0, "last_letter_concatenation": 0, "coin_flip": 0, "strategy_qa": 3},
}


def _records(key):
    return [json.loads(line) for line in (TEACHER_DIR / "zs_cot" / f"{key}.jsonl").open()]


def test_truncated_by_finish_reason_or_a_cut_sentence_near_the_limit():
    long_cut = " \n\n" + "We add the apples of each basket to the pears we counted before, " * 8 + "so the"
    assert pre_tokens(long_cut) >= 96
    assert truncated({"reasoning_completion": long_cut})
    assert not truncated({"reasoning_completion": long_cut + " total is 5."})
    assert not truncated({"reasoning_completion": " \n\n19 inches + 18 inches = 37 inches"})  # short, ends by itself
    assert truncated({"reasoning_completion": "Short.", "finish_reason": "length"})
    assert not truncated({"reasoning_completion": long_cut, "finish_reason": "stop"})
    assert not truncated({"reasoning_completion": long_cut}, limit=1024)


def test_repetition_is_a_loop_not_an_iterated_step():
    loop = " \nTom has 9 yellow balloons.\nSara has 8 yellow balloons." * 4
    assert loops(loop) and repetitive(loop)
    steps = ("Perla does not flip the coin. The coin is still tails up. \nJoao does not flip the coin. The coin is "
             "still tails up. \nMarta does not flip the coin. The coin is still tails up.")
    assert not loops(steps) and not repetitive(steps)
    assert repeated_ngram_share("a b c d " * 5) == 1 - 4 / 17
    assert repeated_ngram_share("one two three") == 0.0


def test_no_reasoning():
    assert no_reasoning(" \nNancy gets 9.", "9")
    assert no_reasoning("So the answer is 42 apples", "42 apples", min_words=3)
    assert not no_reasoning(" \n\n19 inches + 18 inches = 37 inches", "37")
    assert not no_reasoning("Two coins flip it twice, so it is heads.", "yes")


def test_bad_settings_name_the_option():
    with pytest.raises(FtcotError, match="drop no-reasoning:0"):
        QualityFilters(min_words=0)
    with pytest.raises(FtcotError, match="drop truncated:"):
        QualityFilters(token_limit=0)


@pytest.mark.parametrize("name", ["truncated", "repetitive"])
def test_each_filter_drops_what_was_measured(data_root, name):
    reason = {"truncated": TRUNCATED, "repetitive": REPETITIVE}[name]
    for key in TASKS:
        task, records = load_task(key, data_root), _records(key)
        plain = curate(task, get_template("ft_cot"), records)[2]
        summary = curate(task, get_template("ft_cot"), records,
                         **settings(data_root, decontaminate="off", **{f"drop_{name}": True}))[2]
        assert summary["dropped"].get(reason, 0) == DROPPED[name][key], key
        assert summary["kept"] == plain["kept"] - DROPPED[name][key]
        assert summary["filters"]["flagged"][name] == DROPPED[name][key]


def test_no_reasoning_drops_none_of_the_recorded_rationales_so_it_is_on_by_default(data_root):
    for key in TASKS:
        task, records = load_task(key, data_root), _records(key)
        plain = curate(task, get_template("ft_cot"), records)
        default = curate(task, get_template("ft_cot"), records, **settings(data_root))
        assert NO_REASONING not in default[2]["dropped"] and default[2]["filters"]["no_reasoning"]
        assert [e.completion for e in default[0]] == [e.completion for e in plain[0]], key


def test_report_counts_and_yield_histogram(data_root):
    task, records = load_task("strategy_qa", data_root), _records("strategy_qa")
    summary = curate(task, get_template("ft_cot"), records, **settings(data_root, drop_truncated=True))[2]
    assert summary["rationales"] == 1603 == summary["train_questions"]
    histogram = summary["yield_histogram"]
    assert set(histogram) == {"0", "1"} and sum(histogram.values()) == 1603
    assert histogram["1"] == summary["kept"] == summary["questions_with_examples"] == 875 - 179
    assert summary["filters"]["checked"] == 875  # the correct rationales of training questions


def test_teach_run_through_the_cli(tmp_path, data_root):
    """A replayed teach run records no finish reason ("unknown"): the heuristic decides, as on the JSONL."""
    run_dir = tmp_path / "teach"
    result = run_ftcot("teach", "--task", "multiarith", "--split", "all", "--teacher", "replay:text-davinci-002",
                       "--out", run_dir, "--data-dir", data_root)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "data"
    result = run_ftcot("curate", run_dir, "--out", out, "--data-dir", data_root, "--drop",
                       "truncated,repetitive,no-reasoning", "--decontaminate", "drop")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "curation.json").read_text())
    assert summary["dropped"][TRUNCATED] == 8  # 11 less the 3 on questions dropped as contaminated
    assert summary["dropped"]["test contamination"] == 152
    assert summary["contamination"]["mode"] == "drop" and summary["filters"]["truncated"] is True
    assert "flagged truncated (filter on)" in result.stdout
    rows = [json.loads(line) for line in (out / "train.jsonl").open()] + \
        [json.loads(line) for line in (out / "val.jsonl").open()]
    same = curate(load_task("multiarith", data_root), get_template("ft_cot"), _records("multiarith"),
                  **settings(data_root, drop_truncated=True, drop_repetitive=True, decontaminate="drop"))
    assert len(rows) == summary["kept"] == same[2]["kept"] == 201
    assert [r["rationale"] for r in rows] == [e.rationale for e in same[0] + same[1]]
    assert_one_line_error(run_ftcot("curate", run_dir, "--out", tmp_path / "o", "--data-dir", data_root,
                                    "--drop", "no-reasoning:0"), "--drop min_rationale_words: must be at least 1")


# ---- an oracle table, written from the documented rules (module doc, README "Curation beyond the paper") ---------
# truncated: finish_reason "length" is cut, "stop" is not; without one, cut iff the text ends mid-sentence (not on
# . ! ?, perhaps followed by a quote or bracket) and holds at least 75% of the limit (128) in GPT-2 pre-tokens (a
# word with its leading space, a number, a run of punctuation or whitespace). repetitive: one to three sentences
# repeated 3 times back to back, or 60% or more of the word 4-grams repeating an earlier one. no_reasoning: fewer
# than 5 words, or nothing but the answer (optionally after "so", "therefore", "the answer is").
LONG_CUT = (
    " \nFirst, we need to find how many apples Maria picked on Monday. She picked 12 apples in the morning and 7 in"
    " the afternoon, which makes 19 apples. On Tuesday her brother helped her, and together they collected twice as"
    " many as on Monday, which is 38 apples. Then on Wednesday it rained, so Maria stayed at home and baked three"
    " pies, using 4 apples for each pie. That means she used 12 apples for baking. Her neighbour also asked for some"
    " fruit, and Maria gave him 6 apples as a present. To find the number she has left, we add the apples from"
    " Monday and Tuesday and then subtract what she used and what she gave away, so the")
INTRO = ("Maria picked 12 apples in the morning and 7 in the afternoon. Her brother collected twice as many on"
         " Tuesday, and she baked three pies with four apples each. ")
OUTRO = " Adding the days and taking away the pies, she keeps 39 apples at the end of the week."
ITERATED = ("Perla does not flip the coin. The coin is still tails up. \nJoao does not flip the coin. The coin is"
            " still tails up. \nMarta does not flip the coin. The coin is still tails up.")
LETTER_WORDS = [a + b for a in "bcdfghjklm" for b in "aeiou"]  # 50 distinct words of letters: one pre-token each
DISTINCT = [w + v for w in LETTER_WORDS for v in ("x", "z")]  # 100 distinct words
ORACLE = [
    # (name, reasoning_completion, answer, extra record fields, filter settings, what the filters flag)
    ("long, cut mid-sentence", LONG_CUT, "39", {}, {}, {"truncated"}),
    ("long, cut, the teacher says stop", LONG_CUT, "39", {"finish_reason": "stop"}, {}, set()),
    ("long, cut, the teacher says length", LONG_CUT, "39", {"finish_reason": "length"}, {}, {"truncated"}),
    ("long, cut, a limit of 1024", LONG_CUT, "39", {}, {"token_limit": 1024}, set()),
    ("long, cut, trailing whitespace", LONG_CUT + " \n", "39", {}, {}, {"truncated"}),
    ("long, ends on a number", LONG_CUT + " total is 39", "39", {}, {}, {"truncated"}),
    ("long, ends on a full stop", LONG_CUT + " total is 39.", "39", {}, {}, set()),
    ("long, ends on a quoted full stop", LONG_CUT + ' total is "39."', "39", {}, {}, set()),
    ("long, ends on a bracketed full stop", LONG_CUT + " total is 39 (19 + 38 - 12 - 6.)", "39", {}, {}, set()),
    ("long, ends on a question mark", LONG_CUT + " total is 39?", "39", {}, {}, set()),
    ("long, ends on an exclamation mark", LONG_CUT + " total is 39!\n\n", "39", {}, {}, set()),
    ("96 pre-tokens, cut", " ".join(DISTINCT[:96]), "x", {}, {}, {"truncated"}),
    ("95 pre-tokens, cut", " ".join(DISTINCT[:95]), "x", {}, {}, set()),
    ("50 words and 50 commas, cut", ", ".join(DISTINCT[:50]) + ",", "x", {}, {}, {"truncated"}),
    ("47 words and 47 commas, cut", ", ".join(DISTINCT[:47]) + ",", "x", {}, {}, set()),
    ("6 pre-tokens of a limit of 8", "Tom has three red apples and", "5", {}, {"token_limit": 8}, {"truncated"}),
    ("6 pre-tokens of a limit of 9", "Tom has three red apples and", "5", {}, {"token_limit": 9}, set()),
    ("short, ends on an equation", " \n\n19 inches + 18 inches = 37 inches", "37", {}, {}, set()),
    ("short and complete, the teacher says length", "Tom has 3 apples and buys 2 more, so he has 5 apples.", "5",
     {"finish_reason": "length"}, {}, {"truncated"}),
    ("one sentence three times", "Tom has 9 balloons. Tom has 9 balloons. Tom has 9 balloons.", "9", {}, {},
     {"repetitive"}),
    ("one sentence three times, and the teacher says length", "Tom has 9 balloons. " * 3, "9",
     {"finish_reason": "length"}, {}, {"truncated", "repetitive"}),
    ("one sentence three times amid prose", INTRO + "Tom has 9 balloons. " * 3 + OUTRO, "39", {}, {},
     {"repetitive"}),
    ("one sentence twice amid prose", INTRO + "Tom has 9 balloons. " * 2 + OUTRO, "39", {}, {}, set()),
    ("one sentence three times, not back to back",
     INTRO + "Tom has 9 balloons. Sara has 8. Tom has 9 balloons. Ann has 7. Tom has 9 balloons." + OUTRO, "39", {},
     {}, set()),
    ("two sentences three times", INTRO + "Tom has 9 balloons. Sara has 8 balloons. " * 3 + OUTRO, "39", {}, {},
     {"repetitive"}),
    ("three sentences three times amid prose",
     INTRO + "Tom has 9 balloons. Sara has 8 balloons. Ann has 7 balloons. " * 3 + OUTRO, "39", {}, {},
     {"repetitive"}),
    ("an iterated step (the module doc's example)", ITERATED, "no", {}, {}, set()),
    ("60% of the 4-grams repeated (6 of 10)", "red blue green gold red blue green gold red blue green gold red",
     "red", {}, {}, {"repetitive"}),
    ("56% of the 4-grams repeated (5 of 9)", "red blue green gold red blue green gold red blue green gold", "red",
     {}, {}, set()),
    ("three words", "It is 9.", "9", {}, {}, {"no_reasoning"}),
    ("four words", "Nancy gets 9 more.", "9", {}, {}, {"no_reasoning"}),
    ("five words", "Nancy gets 9 more apples.", "9", {}, {}, set()),
    ("six words, at least 7", "Nancy gets 9 more apples today.", "9", {}, {"min_words": 7}, {"no_reasoning"}),
    ("only the answer", "The answer is 42 apples.", "42 apples", {}, {}, {"no_reasoning"}),
    ("only the answer, after therefore", "Therefore, the answer is 42 apples.", "42 apples", {}, {},
     {"no_reasoning"}),
    ("only the answer, after so", "So the answer is 42 apples.", "42 apples", {}, {}, {"no_reasoning"}),
    ("only the answer, yes", "Therefore, the answer is yes", "yes", {}, {}, {"no_reasoning"}),
    ("the answer with a reason", "Tom has 42 apples because he bought them.", "42 apples", {}, {}, set()),
    ("only the answer, and the teacher says length", "The answer is 42 apples", "42 apples",
     {"finish_reason": "length"}, {}, {"truncated", "no_reasoning"}),
]
ORDER = ("truncated", "repetitive", "no_reasoning")  # the order reject() asks them in


def test_the_oracle_table_is_built_as_it_says():
    """The table's texts are what their names say, counted without the module."""
    assert len(LONG_CUT.split()) >= 100 and not LONG_CUT.rstrip().endswith((".", "!", "?"))
    assert len(set(DISTINCT)) == 100 and all(w.isalpha() for w in DISTINCT)
    short = {"short, ends on an equation", "three words", "four words", "five words", "six words, at least 7"}
    assert all(len(text) < 96 for name, text, *_ in ORACLE if name in short)  # a pre-token holds a character or more
    sentences = [sentence.strip() for sentence in LONG_CUT.split(".")]
    assert len(sentences) >= 6 and len(set(sentences)) == len(sentences)  # prose: no sentence repeated


@pytest.mark.parametrize("name,text,answer,extra,options,expected", ORACLE, ids=[row[0] for row in ORACLE])
def test_filters_agree_with_the_oracle_table(name, text, answer, extra, options, expected):
    record = {"reasoning_completion": text, "answer": answer, **extra}
    filters = QualityFilters(**options)
    assert set(filters.flags(record)) == expected
    every = QualityFilters(truncated=True, repetitive=True, no_reasoning=True, **options)
    first = next((filter_ for filter_ in ORDER if filter_ in expected), None)
    assert every.reject(record) == (FILTER_REASONS[first] if first else None)
    for filter_ in ORDER:  # one filter on: it drops the record iff it flags it
        alone = QualityFilters(**{filter_: True}, **options)
        assert alone.reject(record) == (FILTER_REASONS[filter_] if filter_ in expected else None)


# ---- properties of what the filters flag among the recorded text-davinci-002 outputs (all 12 tasks) --------------
def _ends_a_sentence(text: str) -> bool:
    return text.rstrip().rstrip("\"')]”’").endswith((".", "!", "?"))


def _words(text: str) -> list[str]:
    return "".join(ch if ch.isalnum() else " " for ch in text.lower()).split()


@pytest.fixture(scope="module")
def recorded() -> list[dict]:
    return [json.loads(line) for path in sorted((TEACHER_DIR / "zs_cot").glob("*.jsonl")) for line in path.open()]


def test_what_truncated_flags_in_the_recorded_outputs_hit_the_token_limit(recorded):
    """They carry no finish reason. Every rationale flagged ends mid-sentence and holds at least 75% of the
    128-token limit by a real BPE tokenizer (SmolLM2's: GPT-2's is not installed); every one that ends mid-sentence
    with 96 words or more (a word is a pre-token at least) is flagged. A finish reason, where given, decides."""
    from transformers import AutoTokenizer

    from ftcot.models.loading import packaged_model_path

    flagged = [r["reasoning_completion"] for r in recorded if truncated(r)]
    assert flagged and not any(_ends_a_sentence(text) for text in flagged)
    tokenizer = AutoTokenizer.from_pretrained(str(packaged_model_path("smollm2-135m")))
    lengths = [len(ids) for ids in tokenizer(flagged, add_special_tokens=False)["input_ids"]]
    assert min(lengths) >= 0.75 * 128
    long_and_cut = [r for r in recorded
                    if not _ends_a_sentence(r["reasoning_completion"]) and len(r["reasoning_completion"].split()) >= 96]
    assert long_and_cut and all(truncated(r) for r in long_and_cut)
    assert all(truncated({**r, "finish_reason": "length"}) and not truncated({**r, "finish_reason": "stop"})
               for r in recorded)


def test_what_repetitive_flags_in_the_recorded_outputs_repeats(recorded):
    """Every rationale whose word 4-grams repeat at 60% or more (counted here) is flagged; every one flagged has
    that share or a sentence three times (what a loop of one to three sentences needs)."""
    def share(text):
        words = _words(text)
        grams = [tuple(words[i:i + 4]) for i in range(len(words) - 3)]
        return 1 - len(set(grams)) / len(grams) if len(grams) > 1 else 0.0

    def most_repeated_sentence(text):
        sentences = [" ".join(s.lower().split()) for s in re.split(r"[.!?\n]+", text) if s.strip()]
        return max((sentences.count(s) for s in sentences), default=0)

    texts = [r["reasoning_completion"].strip() for r in recorded]
    flagged = [text for text in texts if repetitive(text)]
    assert flagged
    assert all(repetitive(text) for text in texts if share(text) >= 0.6)
    assert all(share(text) >= 0.6 or most_repeated_sentence(text) >= 3 for text in flagged)
