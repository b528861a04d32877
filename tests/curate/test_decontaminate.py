"""Decontamination on the real benchmarks: training questions that overlap test questions."""

from __future__ import annotations

import json

import pytest

from ftcot.curate import curate
from ftcot.curate.decontaminate import (EXACT, NGRAM, Decontamination, TestIndex, TestQuestion, benchmark_index,
                                        benchmark_test_questions, find_contamination, normalize, ngrams)
from ftcot.curate.report import CONTAMINATED, settings
from ftcot.errors import FtcotError
from ftcot.tasks import load_task
from ftcot.templates import get_template
from tests.cli import assert_one_line_error, run_ftcot
from tests.conftest import TEACHER_DIR


def _records(key):
    return [json.loads(line) for line in (TEACHER_DIR / "zs_cot" / f"{key}.jsonl").open()]


def test_normalize_and_ngrams():
    assert normalize("Tim 's cat had  KITTENS .\nHow many?") == "tim s cat had kittens how many"
    assert normalize("Tim's cat had kittens. How many ?") == "tims cat had kittens how many"
    assert ngrams("a b c d", 3) == {"a b c", "b c d"}
    assert ngrams("a b", 3) == set()


def test_benchmark_test_questions_are_every_test_split(data_root):
    questions, missing = benchmark_test_questions(data_root)
    assert missing == []
    per_task = {}
    for q in questions:
        per_task[q.task] = per_task.get(q.task, 0) + 1
    assert len(per_task) == 12 and per_task["gsm8k"] == 1319 and per_task["aqua"] == 254
    assert len(questions) == 4868


def test_addsub_train_overlaps_single_eq_test(data_root):
    """AddSub and SingleEq both come from MAWPS: 41 AddSub training questions are SingleEq test questions."""
    addsub = load_task("addsub", data_root)
    flags = Decontamination(data_root=data_root).check(addsub, addsub.split_indices("train"))
    against = {}
    for f in flags:
        against.setdefault(f.test_task, set()).add(f.train_index)
    assert {k: len(v) for k, v in against.items()} == {"addsub": 12, "single_eq": 41}
    exact = {(f.train_index, f.test_index) for f in flags if f.rule == EXACT}
    assert len(exact) == 24 and (15, 25) in exact  # "Sandy grew 6 carrots ." / "Sandy grew 6 carrots."
    single_eq = load_task("single_eq", data_root)
    assert normalize(addsub.samples[15].question) == normalize(single_eq.samples[25].question)
    ngram = next(f for f in flags if f.rule == NGRAM)
    assert len(ngram.ngram.split()) == 13
    assert ngram.ngram in normalize(addsub.samples[ngram.train_index].question)


def test_a_duplicated_question_across_the_split_is_exact(data_root):
    task = load_task("strategy_qa", data_root)
    flags = Decontamination(data_root=data_root).check(task, task.split_indices("train"))
    assert [(f.train_index, f.test_task, f.test_index, f.rule) for f in flags] == [(42, "strategy_qa", 1987, EXACT)]


def test_template_ngrams_are_ignored_above_max_df(data_root):
    """Every coin flip question shares the template "… flip here means reverse"; it is not a leak."""
    task = load_task("coin_flip", data_root)
    train = task.split_indices("train")
    assert Decontamination(data_root=data_root).check(task, train) == []
    loose = Decontamination(data_root=data_root, max_df=10_000).check(task, train)
    assert len({f.train_index for f in loose}) == 350


def test_the_largest_training_set_against_every_benchmark(data_root):
    """9,741 CommonsenseQA questions against the 4,868 test questions of the 12 benchmarks (~1.5 s on 2 idle
    cores; no timing asserted here)."""
    task = load_task("commonsense_qa", data_root)
    benchmark_index.cache_clear()
    flags = Decontamination(data_root=data_root).check(task, task.split_indices("train"))
    assert len({f.train_index for f in flags}) == 3


def test_own_test_split_follows_the_split_scheme(data_root):
    """MultiArith's template split shares no question template between train and test: no overlap there,
    while its default split has 152 flagged training questions. Under the template scheme the default test
    questions (many of them training questions there) are not the test set."""
    task = load_task("multiarith", data_root)
    check = Decontamination(data_root=data_root).check
    assert len({f.train_index for f in check(task, task.split_indices("train"))}) == 152
    template_train = task.split_indices("train", "template")
    assert check(task, template_train, "template") == []
    wrong = check(task, template_train, "default")  # the default test split as if it were the test set
    assert any(f.rule == EXACT and f.train_index == f.test_index for f in wrong)


def test_warn_keeps_the_data_drop_removes_flagged_questions(data_root):
    task, records = load_task("single_eq", data_root), _records("single_eq")
    template = get_template("ft_cot")
    plain = curate(task, template, records)
    warned = curate(task, template, records, **settings(data_root))
    assert [e.rationale for e in warned[0]] == [e.rationale for e in plain[0]]
    assert warned[2]["dropped"] == plain[2]["dropped"]
    contamination = warned[2]["contamination"]
    assert contamination["mode"] == "warn" and contamination["flagged_questions"] == 46
    assert contamination["per_test_task"] == {"addsub": 40, "single_eq": 9, "svamp": 1}
    flagged = {f["train_index"] for f in contamination["flags"]}
    train, val, summary = curate(task, template, records, **settings(data_root, decontaminate="drop"))
    assert not {e.sample_index for e in train + val} & flagged
    assert summary["dropped"][CONTAMINATED] == 46  # one recorded rationale a question
    assert summary["train_questions"] == 356 - 46
    assert summary["kept"] == plain[2]["kept"] - sum(e.sample_index in flagged for e in plain[0] + plain[1])
    off = curate(task, template, records, **settings(data_root, decontaminate="off"))[2]
    assert off["contamination"] == {"mode": "off"}


def test_vanilla_fine_tune_drops_flagged_questions_too(data_root):
    task = load_task("addsub", data_root)
    train, val, summary = curate(task, get_template("ft"), val_fraction=0,
                                 **settings(data_root, decontaminate="drop"))
    # 12 overlap AddSub's own test questions, 41 SingleEq's; 3 both
    assert len(train) == 276 - 50 and summary["contamination"]["flagged_questions"] == 50
    assert summary["train_questions"] == 226


def test_user_test_file_jsonl_and_csv(tmp_path, data_root):
    task = load_task("coin_flip", data_root)
    index = task.split_indices("train")[0]
    first = task.samples[index].question
    jsonl = tmp_path / "held_out.jsonl"
    jsonl.write_text(json.dumps({"question": first.upper().replace(".", " . ")}) + "\n"
                     + json.dumps({"question": "Something else entirely."}) + "\n")
    csv_file = tmp_path / "more.csv"
    csv_file.write_text('question,answer\n"' + first.replace('"', '""') + '",yes\n')
    flags = Decontamination(data_root=data_root, against=(str(jsonl), str(csv_file))).check(
        task, task.split_indices("train"))
    assert {(f.test_task, f.test_index, f.rule) for f in flags if f.train_index == index} == {
        ("held_out.jsonl", 0, EXACT), ("more.csv", 0, EXACT)}
    # The other training questions share the coin flip template with it: few test questions, so not ignored.
    assert {f.rule for f in flags if f.train_index != index} == {NGRAM}


def test_index_reports_the_first_shared_ngram_and_the_overlap():
    index = TestIndex.build([TestQuestion("t", 0, "one two three four five six")], n=3)
    assert index.matches("zero one two three nine") == {0: (NGRAM, "one two three", 0.25)}  # 1 of its 4 3-grams
    assert index.matches("ONE two, three four five six!") == {0: (EXACT, None, 1.0)}


def test_overlap_tells_a_near_copy_from_a_shared_template(data_root):
    """Every shuffled-objects training question shares a 13-gram with a test question (the generator's slots
    filled from small pools); 18 share 90% of a test question's distinctive 13-grams: the same exchange and
    swaps, another person asked about. Date understanding has none that close; AddSub's copies of SingleEq
    questions stay."""
    def flagged(key, min_overlap):
        task = load_task(key, data_root)
        flags = Decontamination(data_root=data_root, min_overlap=min_overlap).check(task, task.split_indices("train"))
        return {f.train_index for f in flags}, flags

    every, flags = flagged("tracking_shuffled_objects", 0)
    assert len(every) == 525 and min(f.overlap for f in flags) < 0.2
    near, flags = flagged("tracking_shuffled_objects", 0.9)
    assert len(near) == 18 and all(f.overlap >= 0.9 for f in flags)
    shuffled = load_task("tracking_shuffled_objects", data_root)
    pair = flags[0]
    train, test = shuffled.samples[pair.train_index].question, shuffled.samples[pair.test_index].question
    assert train.split("At the end")[0] == test.split("At the end")[0]  # same objects and swaps
    assert len(flagged("date_understanding", 0)[0]) == 188 and flagged("date_understanding", 0.7)[0] == set()
    copies, flags = flagged("addsub", 0.9)
    assert {f.train_index for f in flags if f.rule == EXACT} <= copies and len(copies) == 24


@pytest.mark.parametrize("options,fragment", [
    ({"mode": "maybe"}, "decontaminate maybe"),
    ({"n": 0}, "decontaminate ngram=0"),
    ({"max_df": 0}, "decontaminate max_df=0"),
    ({"min_overlap": 1.5}, "decontaminate min_overlap=1.5"),
    ({"min_overlap": float("nan")}, "decontaminate min_overlap=nan"),
    ({"against": ("/no/such.jsonl",)}, "decontaminate against=/no/such.jsonl"),
])
def test_bad_settings_name_the_option(options, fragment):
    with pytest.raises(FtcotError, match=fragment.replace(".", r"\.")):
        Decontamination(**options)


def test_cli_warns_writes_pairs_and_refuses_bad_options(tmp_path, data_root):
    source = TEACHER_DIR / "zs_cot" / "single_eq.jsonl"
    out = tmp_path / "data"
    result = run_ftcot("curate", source, "--task", "single_eq", "--out", out, "--data-dir", data_root)
    assert result.returncode == 0, result.stderr
    assert "warning: 46 training questions of single_eq overlap test questions" in result.stderr
    assert "train single_eq[1] ~ test addsub[381]" in result.stderr
    assert "overlap test (warn)" in result.stdout
    summary = json.loads((out / "curation.json").read_text())
    assert summary["contamination"]["pairs"] == len(summary["contamination"]["flags"]) == 57
    assert set(summary["contamination"]["flags"][0]) == {"train_index", "task", "test_task", "test_index", "rule",
                                                          "ngram", "overlap"}
    every = [json.loads(line) for line in (out / "contamination.jsonl").open()]
    assert every == summary["contamination"]["flags"] and summary["contamination"]["all_flags_in"] == "contamination.jsonl"
    bad = tmp_path / "bad.txt"
    bad.write_text("question\n")
    for args, fragment in [(["--decontaminate", "maybe"], "--decontaminate: Unknown decontaminate 'maybe'"),
                           (["--decontaminate", "warn,ngram=0"], "--decontaminate ngram: must be at least 1"),
                           (["--decontaminate", f"warn,against={bad}"], "decontaminate against="),
                           (["--decontaminate", f"warn,against={tmp_path / 'none.jsonl'}"], "no such file")]:
        assert_one_line_error(run_ftcot("curate", source, "--task", "single_eq", "--out", tmp_path / "o",
                                        "--data-dir", data_root, *args), fragment)
    no_question = tmp_path / "rows.jsonl"
    no_question.write_text('{"q": "x"}\n')
    assert_one_line_error(run_ftcot("curate", source, "--task", "single_eq", "--out", tmp_path / "o",
                                    "--data-dir", data_root, "--decontaminate", f"warn,against=[{no_question}]"),
                          "row 1 has no 'question'")


def test_a_templated_benchmarks_thousands_of_pairs_go_to_their_own_file(tmp_path, data_root):
    """Shuffled objects' questions share their template's 13-grams: every pair is kept, in contamination.jsonl;
    curation.json (read whole by people and report.html) shows the first 100."""
    out = tmp_path / "data"
    result = run_ftcot("curate", TEACHER_DIR / "zs_cot" / "tracking_shuffled_objects.jsonl", "--task",
                       "tracking_shuffled_objects", "--out", out, "--data-dir", data_root)
    assert result.returncode == 0, result.stderr
    contamination = json.loads((out / "curation.json").read_text())["contamination"]
    every = [json.loads(line) for line in (out / "contamination.jsonl").open()]
    assert contamination["pairs"] == len(every) > 1000 and contamination["flags"] == every[:100]
    assert (out / "curation.json").stat().st_size < 100_000


# ---- an independent oracle ---------------------------------------------------------------------------------------
# The documented rule (module doc, README "Curation beyond the paper"), re-implemented as plainly as possible and
# run pair by pair: normalise (lower-case, punctuation removed, whitespace collapsed); a pair is `exact` when the
# normalised texts are equal, else `ngram` when the two share a word n-gram found in at most max_df test
# questions; its overlap is the share of the test question's such n-grams the training question has (1.0 for
# exact); only pairs with overlap >= min_overlap are kept.
def _oracle_words(text: str) -> list[str]:
    return "".join(ch for ch in text.lower() if ch.isalnum() or ch.isspace()).split()


def _oracle_grams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def _oracle(train, test, n, max_df, min_overlap):
    """train: [(train index, question)]; test: [(task, index, question)] -> {(train index, task, index): (rule,
    overlap)} of every flagged pair."""
    test_words = [_oracle_words(question) for _, _, question in test]
    test_grams = [_oracle_grams(words, n) for words in test_words]
    in_questions = {}
    for grams in test_grams:
        for gram in grams:
            in_questions[gram] = in_questions.get(gram, 0) + 1
    test_distinctive = [{gram for gram in grams if in_questions[gram] <= max_df} for grams in test_grams]
    pairs = {}
    for train_index, question in train:
        words = _oracle_words(question)
        mine = _oracle_grams(words, n)
        for (task, index, _), their_words, distinctive in zip(test, test_words, test_distinctive):
            if words == their_words:
                rule, overlap = EXACT, 1.0
            elif distinctive & mine:
                rule, overlap = NGRAM, len(distinctive & mine) / len(distinctive)
            else:
                continue
            if overlap >= min_overlap:
                pairs[(train_index, task, index)] = (rule, round(overlap, 9))
    return pairs


def _slice(data_root):
    """Test side: SingleEq's test questions and 40 of coin flip's (a generated benchmark: its template n-grams
    are in more than max_df of them). Training side: AddSub's training questions (MAWPS, like SingleEq: some are
    copies), 40 coin flip training questions, and hand-made near-copies and non-copies (named in CONSTRUCTED)."""
    single_eq, addsub, coin = (load_task(key, data_root) for key in ("single_eq", "addsub", "coin_flip"))
    test = [("single_eq", i, single_eq.samples[i].question) for i in single_eq.split_indices("test")]
    test += [("coin_flip", i, coin.samples[i].question) for i in coin.split_indices("test")[:40]]
    s = single_eq.samples
    benny, tim, joan, plums = s[9].question, s[28].question, s[0].question, s[32].question
    assert benny.startswith("Benny bought 4 new") and tim.startswith("Tim's cat") and len(benny.split()) == 37
    coin_like = ('A coin is heads up. Zanzibar flips the coin. Quuxley does not flip the coin. Is the coin still '
                 'heads up? Note that "flip" here means "reverse".')
    constructed = {
        "a number changed": (benny.replace("bought 4", "bought 5"), ("single_eq", 9)),
        "a word inserted": (tim.replace("to Jessica", "to his friend Jessica"), ("single_eq", 28)),
        "case and punctuation": (joan.upper().replace(".", " ;").replace("?", "!!"), ("single_eq", 0)),
        "embedded in more text": ("Read carefully and show your work. " + plums + " Explain each step.",
                                  ("single_eq", 32)),
        "12 words in common": (" ".join(benny.split()[:12]) + " stickers and gave two of them to a friend.",
                               None),
        "unrelated": ("A farmer keeps 12 cows in the north field and buys 7 more at the market. How many cows now?",
                      None),
        "the coin flip template": (coin_like, None),
    }
    train = [("addsub", i, addsub.samples[i].question) for i in addsub.split_indices("train")]
    train += [("coin_flip", i, coin.samples[i].question) for i in coin.split_indices("train")[:40]]
    train += [("constructed", name, text) for name, (text, _) in constructed.items()]
    return train, test, constructed


@pytest.mark.parametrize("n,max_df,min_overlap", [(13, 10, 0.0), (8, 10, 0.0), (13, 10, 0.5), (8, 2, 0.9),
                                                  (13, 10_000, 0.0), (4, 10, 0.3), (8, 40, 0.0), (13, 20, 0.0)])
def test_the_index_flags_exactly_the_pairs_the_documented_rule_flags(data_root, n, max_df, min_overlap):
    train, test, constructed = _slice(data_root)
    index = TestIndex.build([TestQuestion(task, i, question) for task, i, question in test], n, max_df)
    flags = find_contamination(index, "mixed", [(position, q) for position, (_, _, q) in enumerate(train)],
                               min_overlap=min_overlap)
    found = {(f.train_index, f.test_task, f.test_index): (f.rule, round(f.overlap, 9)) for f in flags}
    expected = _oracle([(position, q) for position, (_, _, q) in enumerate(train)], test, n, max_df, min_overlap)
    assert found == expected
    assert len(flags) == len(found)  # each pair once
    texts = {(task, i): question for task, i, question in test}
    for f in flags:  # the reported n-gram is one the pair shares, of n words
        if f.rule == NGRAM:
            assert len(f.ngram.split()) == n
            assert f.ngram in normalize(train[f.train_index][2]) and f.ngram in normalize(
                texts[(f.test_task, f.test_index)])
    # By hand, from the rule: what each constructed question must be flagged against.
    position = {name: p for p, (source, name, _) in enumerate(train) if source == "constructed"}
    against = {name: {(task, i) for (p, task, i) in found if p == position[name]} for name in constructed}
    if (n, max_df, min_overlap) == (13, 10, 0.0):
        for name, (_, copied) in constructed.items():  # every near-copy against the question it copies, only
            assert against[name] == ({copied} if copied else set()), name
        assert found[(position["case and punctuation"], "single_eq", 0)] == (EXACT, 1.0)
        assert found[(position["embedded in more text"], "single_eq", 32)] == (NGRAM, 1.0)
        assert found[(position["a number changed"], "single_eq", 9)][1] > 0.5
        assert {task for (_, task, _) in found} == {"single_eq"}  # the coin flip template is above max_df
        assert any(train[p][0] == "addsub" for (p, _, _) in found)  # AddSub's real copies of SingleEq questions
    if (n, max_df) == (8, 10):
        assert ("single_eq", 9) in against["12 words in common"]  # 12 shared words hold 8-grams, not 13-grams
    if max_df == 10_000:  # the template's n-grams count too
        assert len({i for task, i in against["the coin flip template"] if task == "coin_flip"}) > 10


def test_decontamination_against_every_benchmark_matches_the_oracle(data_root):
    """End to end: AddSub's training set through Decontamination.check (the 12 benchmarks' 4,868 test questions)
    against the oracle run over every (training, test) pair, about a second."""
    addsub = load_task("addsub", data_root)
    train = [(i, addsub.samples[i].question) for i in addsub.split_indices("train")]
    questions, _ = benchmark_test_questions(data_root)
    expected = _oracle(train, [(q.task, q.index, q.question) for q in questions], 13, 10, 0.0)
    flags = Decontamination(data_root=data_root).check(addsub, [i for i, _ in train])
    assert {(f.train_index, f.test_task, f.test_index): (f.rule, round(f.overlap, 9)) for f in flags} == expected
    assert expected  # AddSub and SingleEq share MAWPS questions
