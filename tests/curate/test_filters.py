"""Quality filters on the recorded text-davinci-002 rationales and on a real (replayed) teach run."""

from __future__ import annotations

import json

import pytest

from ftcot.curate import curate
from ftcot.curate.filters import (NO_REASONING, REPETITIVE, TRUNCATED, QualityFilters, loops, no_reasoning,
                                  pre_tokens, repeated_ngram_share, repetitive, truncated)
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
