"""A user's own task file loads, splits and scores like a built-in task; bad files are one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from ftcot.errors import FtcotError
from ftcot.scoring import score
from ftcot.tasks import AnswerType, Category, load_task
from ftcot.tasks.custom import load_custom_task
from ftcot.tasks.registry import BUILTIN_TASKS
from ftcot.tasks.splits import derive_split
from tests.conftest import PROJECT_ROOT

FTCOT = PROJECT_ROOT / ".venv" / "bin" / "ftcot"


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- loading -----------------------------------------------------------------------------


def test_jsonl_number_task_loads_with_spec_of_its_own(tmp_path):
    path = write_jsonl(tmp_path / "sums.jsonl", [
        {"question": "  What is 2 + 2?  ", "answer": "4"},
        {"question": "What is 1,000 + 500?", "answer": "1,500", "note": "extra fields are ignored"},
        {"question": "Half of 5?", "answer": 2.5},
        {"question": "Three?", "answer": 3.0},
    ])
    task = load_task(str(path), answer_type="number")
    assert task.key == "sums"
    assert task.spec.category is Category.OTHER
    assert task.spec.answer_type is AnswerType.NUMBER
    assert task.spec.trigger == "\nTherefore, the answer (arabic numerals) is"
    assert task.spec.float_compare
    assert [(s.index, s.question, s.answer) for s in task.samples.values()] == [
        (0, "What is 2 + 2?", "4"), (1, "What is 1,000 + 500?", "1,500"), (2, "Half of 5?", "2.5"), (3, "Three?", "3"),
    ]
    # The spec's reader re-reads the file, as the built-in readers do.
    assert task.spec.reader(None) == list(task.samples.values())


def test_csv_task_loads_with_quoted_commas_and_byte_order_mark(tmp_path):
    path = tmp_path / "facts.csv"
    path.write_text('\ufeffquestion,answer\n"Is water wet, really?",Yes\nIs fire cold?,NO\n', encoding="utf-8")
    task = load_task(str(path), answer_type="yes_no")
    assert task.spec.answer_type is AnswerType.YES_NO
    assert task.spec.trigger == "\nTherefore, the answer (Yes or No) is"
    assert [(s.question, s.answer) for s in task.samples.values()] == [
        ("Is water wet, really?", "yes"), ("Is fire cold?", "no"),
    ]


def test_letter_task_appends_choices_like_the_builtin_multiple_choice_tasks(tmp_path):
    path = write_jsonl(tmp_path / "colours.jsonl", [
        {"question": "What colour is the sky?", "answer": "blue", "choices": ["red", "blue", "green"]},
        {"question": "Which is a fruit?", "answer": "D", "choices": ["car", "dog", "tree", "apple", "rock"]},
        {"question": "Pick (B)", "answer": "(B)", "choices": ["x", "y"]},
    ])
    task = load_task(str(path), answer_type="letter")
    first = task.samples[0]
    assert first.question == "What colour is the sky? Answer Choices: (A) red (B) blue (C) green"
    assert first.answer == "B"
    assert task.samples[1].answer == "D"
    assert task.samples[2].answer == "B"
    # Letters run to the largest number of choices; the trigger follows them (spec §1).
    assert task.spec.letters == "ABCDE"
    assert task.spec.trigger == "\nTherefore, among A through E, the answer is"


def test_letter_question_text_is_built_exactly_like_commonsense_qa(tmp_path, data_root):
    csqa = load_task("commonsense_qa", data_root).samples[0]
    stem, options = csqa.question.split(" Answer Choices:")
    choices = re.split(r" \([A-E]\) ", options)[1:]
    path = write_jsonl(tmp_path / "csqa.jsonl", [{"question": stem, "answer": csqa.answer, "choices": choices}])
    mine = load_task(str(path), answer_type="letter")
    assert (mine.samples[0].question, mine.samples[0].answer) == (csqa.question, csqa.answer)
    assert mine.spec.trigger == BUILTIN_TASKS["commonsense_qa"].trigger


def test_csv_letter_choices_are_pipe_separated_and_text_answers_become_letters(tmp_path):
    path = write_csv(tmp_path / "mc.csv",
                     "question,answer,choices\nCapital of France?,paris,London | Paris | Rome\n"
                     "Inline options (A) one (B) two (C) three,C,\n")
    task = load_task(str(path), answer_type="letter")
    assert task.samples[0].question == "Capital of France? Answer Choices: (A) London (B) Paris (C) Rome"
    assert task.samples[0].answer == "B"
    # Without choices, the options written in the question are the letters.
    assert task.samples[1].question == "Inline options (A) one (B) two (C) three"
    assert task.samples[1].answer == "C"
    assert task.spec.letters == "ABC"


def test_text_task_uses_the_generic_trigger_and_no_float_compare(tmp_path):
    path = write_jsonl(tmp_path / "letters.jsonl", [{"question": "Last letters of 'ab cd'?", "answer": "bd"}])
    task = load_task(str(path), answer_type="text")
    assert task.spec.trigger == "\nTherefore, the answer is"
    assert not task.spec.float_compare
    assert task.spec.num_choices == 0


# --- scoring -------------------------------------------------------------------------------

SCORING_CASES = [
    # answer type, records, completion, gold, template, correct
    ("number", [{"question": "q", "answer": "2.50"}], "So the total is 2.5 dollars.", "2.50", "zs_cot", True),
    ("number", [{"question": "q", "answer": "1,500"}], "The answer is 1,500.", "1,500", "zs_cot", True),
    ("number", [{"question": "q", "answer": "7"}], "reasoning 7 then 8 --> 9", "7", "ft_cot", False),
    ("yes/no", [{"question": "q", "answer": "Yes"}], " Yes, it is.", "yes", "zs_cot", True),
    ("yes/no", [{"question": "q", "answer": "no"}], " yes.", "no", "zs_cot", False),
    ("letter", [{"question": "q", "answer": "b", "choices": ["a", "b", "c"]}], " (B) b", "B", "zs_cot", True),
    ("letter", [{"question": "q", "answer": "c", "choices": ["a", "b", "c"]}], "I think A --> C", "C", "ft_cot", True),
    ("text", [{"question": "q", "answer": "yajo"}], ' "yajo".', "yajo", "zs_cot", True),
]


@pytest.mark.parametrize(("answer_type", "records", "completion", "gold", "template", "correct"), SCORING_CASES)
def test_score_works_for_each_answer_type(tmp_path, answer_type, records, completion, gold, template, correct):
    task = load_task(str(write_jsonl(tmp_path / "t.jsonl", records)), answer_type=answer_type)
    sample = task.samples[0]
    assert sample.answer == gold
    assert score(completion, sample.answer, task.spec, template).correct is correct


def test_letter_candidates_stop_at_the_last_choice(tmp_path):
    # With three choices a "D" in the completion is no candidate, as for tracking_shuffled_objects.
    task = load_task(str(write_jsonl(tmp_path / "t.jsonl", [{"question": "q", "answer": "A", "choices": ["x", "y", "z"]}])),
                     answer_type="letter")
    assert task.spec.letters == BUILTIN_TASKS["tracking_shuffled_objects"].letters
    assert score("D, or rather A", "A", task.spec, "zs_cot").prediction == "A"


# --- splits --------------------------------------------------------------------------------


def test_split_column_is_honoured(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [
        {"question": f"q{i}", "answer": str(i), "split": split}
        for i, split in enumerate(["train", "test", "Train", "train", "test"])
    ])
    task = load_task(str(path), answer_type="number")
    assert task.split_indices("train") == [0, 2, 3]
    assert task.split_indices("test") == [1, 4]
    assert [s.question for s in task.split("test")] == ["q1", "q4"]


def test_csv_split_column_is_honoured(tmp_path):
    path = write_csv(tmp_path / "t.csv", "question,answer,split\na,1,test\nb,2,train\nc,3,test\n")
    task = load_task(str(path), answer_type="number")
    assert task.split_indices("train") == [1]
    assert task.split_indices("test") == [0, 2]


def test_without_split_column_the_paper_70_30_split_is_derived(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"question": f"q{i}", "answer": str(i)} for i in range(20)])
    task = load_task(str(path), answer_type="number")
    assert task.splits["default"] == derive_split(list(range(20)))
    assert len(task.split_indices("train")) == 14
    assert sorted(task.split_indices("all")) == list(range(20))
    with pytest.raises(FtcotError, match="no 'template' split"):
        task.split("test", "template")


# --- bad input -----------------------------------------------------------------------------


def _one_line_error(path: Path, answer_type: str | None) -> str:
    with pytest.raises(FtcotError) as caught:
        load_custom_task(path, answer_type)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_malformed_json_line_names_the_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"question": "q", "answer": "1"}\n\n{"question": "q", "answer": \n', encoding="utf-8")
    assert f"{path}:3: not valid JSON" in _one_line_error(path, "number")


def test_missing_field_names_the_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"question": "q", "answer": "1"}, {"question": "q2"}])
    assert f"{path}:2: missing field 'answer'" in _one_line_error(path, "number")


def test_csv_missing_column_and_ragged_row_name_the_line(tmp_path):
    no_answer = write_csv(tmp_path / "a.csv", "question,gold\nq,1\n")
    assert f"{no_answer}:1: the header has no column 'answer' (columns: question, gold)" in _one_line_error(no_answer, "number")
    ragged = write_csv(tmp_path / "b.csv", 'question,answer\nq,1\n"multi\nline",2\nq3,3,extra\n')
    assert f"{ragged}:5: 3 cells but the header has 2 columns" in _one_line_error(ragged, "number")
    short = write_csv(tmp_path / "c.csv", "question,answer\nq,1\nq2\n")
    assert f"{short}:3: missing field 'answer'" in _one_line_error(short, "number")


@pytest.mark.parametrize(("given", "expected"), [
    (None, "needs --answer-type (one of: number, letter, yes/no, text)"),
    ("yesno", "Unknown answer type 'yesno'. Did you mean 'yes_no'? Valid: letter, number, text, yes/no, yes_no."),
    ("integer", "Unknown answer type 'integer'."),
])
def test_answer_type_missing_or_wrong_lists_the_valid_ones(tmp_path, given, expected):
    path = write_jsonl(tmp_path / "t.jsonl", [{"question": "q", "answer": "1"}])
    assert expected in _one_line_error(path, given)


@pytest.mark.parametrize(("answer_type", "record", "expected"), [
    ("number", {"answer": "four"}, "field 'answer' is 'four', not a number"),
    ("number", {"answer": "1e3"}, "field 'answer' is '1e3', not a number"),
    ("number", {"answer": True}, "field 'answer' must be non-empty text"),
    ("yes/no", {"answer": "maybe"}, "field 'answer' is 'maybe'; --answer-type yes/no needs yes or no"),
    ("letter", {"answer": "F", "choices": ["a", "b", "c"]}, "field 'answer' is 'F', neither a letter A-C"),
    ("letter", {"answer": "A"}, "needs field 'choices' or options written in the question"),
    ("letter", {"answer": "paris", "choices": ["Paris", "PARIS"]}, "field 'answer' 'paris' matches choices A, B"),
    ("letter", {"answer": "A", "choices": "a|b"}, "field 'choices' must be a list of strings"),
    ("letter", {"answer": "A", "choices": ["only"]}, "field 'choices' has 1 choices; give 2 to 26"),
    ("text", {"answer": "new york"}, "could never be scored correct"),
    ("yes/no", {"answer": "yes", "choices": ["yes", "no"]}, "field 'choices' is only for --answer-type letter"),
    ("number", {"answer": "1", "split": "dev"}, "field 'split' is 'dev'; use train or test"),
    ("number", {"answer": "1", "question": ""}, "field 'question' must be non-empty text"),
])
def test_answer_not_matching_its_type_names_line_and_field(tmp_path, answer_type, record, expected):
    good = {"number": {"answer": "1"}, "yes/no": {"answer": "yes"}, "text": {"answer": "ab"},
            "letter": {"answer": "A", "choices": ["p", "q"]}}[answer_type]
    path = write_jsonl(tmp_path / "t.jsonl", [{"question": "fine", **good}, {"question": "q", **record}])
    message = _one_line_error(path, answer_type)
    assert message.startswith(f"{path}:2: ")
    assert expected in message


def test_mixed_split_names_both_lines(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [
        {"question": "a", "answer": "1", "split": "train"},
        {"question": "b", "answer": "2"},
    ])
    message = _one_line_error(path, "number")
    assert message.startswith(f"{path}:2: field 'split' is missing here but set on {path}:1")


def test_csv_mixed_split_with_an_empty_cell(tmp_path):
    path = write_csv(tmp_path / "t.csv", "question,answer,split\na,1,train\nb,2,\n")
    assert _one_line_error(path, "number").startswith(f"{path}:3: field 'split' is missing here")


def test_empty_unreadable_and_wrong_kind_of_file(tmp_path):
    empty = write_csv(tmp_path / "e.jsonl", "\n\n")
    assert "no samples" in _one_line_error(empty, "number")
    assert "cannot read" in _one_line_error(tmp_path / "absent.csv", "number")
    latin = tmp_path / "l.csv"
    latin.write_bytes(b"question,answer\ncaf\xe9?,1\n")
    assert "not UTF-8 text" in _one_line_error(latin, "number")
    other = write_csv(tmp_path / "t.json", "[]")
    assert "use a .jsonl or .csv file" in _one_line_error(other, "number")


# --- through the CLI -----------------------------------------------------------------------


def run_ftcot(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(FTCOT), *args], capture_output=True, text=True, timeout=120)


def test_cli_exports_a_jsonl_task(tmp_path):
    path = write_jsonl(tmp_path / "sums.jsonl", [
        {"question": "1+1?", "answer": "2", "split": "train"},
        {"question": "2+2?", "answer": 4, "split": "test"},
    ])
    result = run_ftcot("data", "export", str(path), "--answer-type", "number")
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"sample_index": 0, "question": "1+1?", "answer": "2", "split": "train"},
        {"sample_index": 1, "question": "2+2?", "answer": "4", "split": "test"},
    ]
    test_only = run_ftcot("data", "export", str(path), "--answer-type", "number", "--split", "test")
    assert [json.loads(line)["sample_index"] for line in test_only.stdout.splitlines()] == [1]


def test_cli_exports_a_csv_letter_task(tmp_path):
    path = write_csv(tmp_path / "mc.csv", "question,answer,choices\nWhich?,b,a|b\n")
    result = run_ftcot("data", "export", str(path), "--answer-type", "letter")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert (record["question"], record["answer"]) == ("Which? Answer Choices: (A) a (B) b", "B")


def test_cli_scores_completions_against_a_task_file(tmp_path):
    task = write_jsonl(tmp_path / "coins.jsonl", [{"question": "q", "answer": "yes"}])
    completions = write_jsonl(tmp_path / "out.jsonl", [
        {"answer": "yes", "answer_completion": " Yes."},
        {"answer": "no", "answer_completion": " yes"},
        {"answer": "no", "answer_completion": " No, it is not."},
    ])
    result = run_ftcot("score", str(completions), "--task", str(task), "--answer-type", "yes/no", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"n": 3, "correct": 2, "accuracy": 2 / 3}


@pytest.mark.parametrize(("records", "args", "expected"), [
    ([{"question": "q", "answer": "x"}], ["--answer-type", "number"], ":1: field 'answer' is 'x', not a number"),
    ([{"question": "q", "answer": "1"}], [], "needs --answer-type"),
    ([{"question": "q", "answer": "1"}], ["--answer-type", "numbr"], "Did you mean 'number'?"),
    ([{"question": "q", "answer": "1", "split": "train"}, {"question": "r", "answer": "1"}],
     ["--answer-type", "number"], ":2: field 'split' is missing here"),
])
def test_cli_bad_task_file_is_one_line_and_exit_code_2(tmp_path, records, args, expected):
    path = write_jsonl(tmp_path / "t.jsonl", records)
    for command in (["data", "export", str(path)], ["score", str(path), "--task", str(path)]):
        result = run_ftcot(*command, *args)
        assert result.returncode == 2, (command, result.stderr)
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert expected in result.stderr
        assert result.stdout == ""


def test_cli_malformed_json_task_is_one_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"question": "q", "answer": "1"}\nnot json\n', encoding="utf-8")
    result = run_ftcot("data", "export", str(path), "--answer-type", "number")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {path}:2: not valid JSON (Expecting value at column 1); "
                                                 f"fix or remove that line."]


def test_the_same_question_with_two_answers_is_refused_and_with_one_answer_kept(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"question": "What is 1 + 1?", "answer": "2"},
                                              {"question": "Cats?", "answer": "3"},
                                              {"question": " What is  1 + 1? ", "answer": "3"}])
    with pytest.raises(FtcotError, match=re.escape("t.jsonl:3: the question of ") + ".*" +
                       re.escape("again, with another answer ('2' there, '3' here)")):
        load_custom_task(path, "number")
    same = write_jsonl(tmp_path / "same.jsonl", [{"question": "What is 1 + 1?", "answer": "2"},
                                                 {"question": "What is 1 + 1?", "answer": "2.0"}])
    assert len(load_custom_task(same, "number").samples) == 2  # one value twice: kept, as MultiArith has
