"""Importing Kojima's Zero-shot-CoT logs: round trips over the recorded outputs, and real log excerpts."""

from __future__ import annotations

import json
import random

import pytest

from ftcot.errors import FtcotError
from ftcot.jsonl import read_jsonl
from ftcot.tasks import load_task
from ftcot.teach.import_logs import (
    guess_task_and_method,
    import_log,
    import_logs,
    parse_log,
    records_from_log,
    render_log,
)
from tests.conftest import TEACHER_DIR


def _records(method: str, key: str) -> list[dict]:
    with (TEACHER_DIR / method / f"{key}.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.mark.parametrize("key", ["coin_flip", "multiarith", "tracking_shuffled_objects", "aqua"])
@pytest.mark.parametrize("method", ["zs_cot", "zs"])
def test_a_rendered_log_imports_back_to_the_same_records(data_root, tmp_path, key, method):
    records = _records(method, key)
    log = tmp_path / f"{key}.log"
    log.write_text(render_log(records, key), encoding="utf-8")

    assert import_log(log, load_task(key, data_root), method) == records


def test_the_rendered_log_reproduces_kojimas_accuracy_line(data_root):
    # The public multiarith_zero_shot_cot.log ends with "accuracy : 78.66666666666666".
    text = render_log(_records("zs_cot", "multiarith"), "multiarith")
    assert text.endswith("\naccuracy : 78.66666666666666\n")


def test_log_order_does_not_matter_and_repeated_questions_take_distinct_indices(data_root):
    # MultiArith asks 20 questions twice; the log's shuffled order must still give each its own index.
    records = _records("zs_cot", "multiarith")
    shuffled = records[:]
    random.Random(0).shuffle(shuffled)
    back = records_from_log(render_log(shuffled, "multiarith"), load_task("multiarith", data_root), "zs_cot")

    assert [r["sample_index"] for r in back] == [r["sample_index"] for r in records]
    by_text = lambda rs: sorted(json.dumps(r, sort_keys=True) for r in rs)  # noqa: E731
    stripped = lambda rs: [{k: v for k, v in r.items() if k != "sample_index"} for r in rs]  # noqa: E731
    # Two asks of one question with one gold answer cannot be told apart in a log; all else is exact.
    assert by_text(stripped(back)) == by_text(stripped(records))


def test_a_rationale_that_contains_the_trigger_is_split_where_pred_before_says(data_root):
    record = dict(_records("zs_cot", "multiarith")[0])
    trigger = "\nTherefore, the answer (arabic numerals) is"
    rationale = " First, 32 + 42 = 74. " + trigger + " 74? No: 74 - 35 = 39."
    record["reasoning_completion"] = rationale
    record["answer_prompt"] = record["prompt"] + rationale + " " + trigger

    back = records_from_log(render_log([record], "multiarith"), load_task("multiarith", data_root), "zs_cot")
    assert back == [record]


# --- Excerpts of the real logs (kojima-takeshi188/zero_shot_cot @179184e, log/), entries copied verbatim.

MULTIARITH_ZERO_SHOT_COT = (
    "*****************************\n"
    "Namespace(cot_trigger=\"Let's think step by step.\", cot_trigger_no=1, dataset='multiarith', "
    "dataset_path='./dataset/MultiArith/MultiArith.json', decode_strategy='greedy', "
    "demo_answer_trigger='The answer is', device='cpu', "
    "direct_answer_trigger='\\nTherefore, the answer (arabic numerals) is', limit_dataset_size=0, "
    "max_length_cot=128, max_length_direct=32, max_num_worker=3, method='zero_shot_cot', minibatch_size=1, "
    "model='gpt3-xl', random_seed=1, sampling_num=10, sampling_temperature=0.5, sampling_topk=40)\n"
    "*****************************\n"
    "setup data loader ...\nworker_seed : 1\ndataloader_num_workers: 3\ndataset : multiarith\n"
    "data size : 600\naverage num of words for each sample : 31.821666666666665\n"
    "*************************\n1st data\n1_th_sampling\n"
    "Q: For Halloween Megan received 11 pieces of candy from neighbors and 5 pieces from her older sister. "
    "If she only ate 8 pieces a day, how long would the candy last her?\n"
    "A: Let's think step by step. \n\nMegan received 11 pieces of candy from neighbors and 5 pieces from her "
    "older sister. \nThat means she has a total of 16 pieces of candy. \nIf she only ate 8 pieces a day, she "
    "would have to divide her candy into two days. \nThat means she would have 8 pieces of candy for Day 1 and "
    "8 pieces of candy for Day 2. \n \nTherefore, the answer (arabic numerals) is 2.\n"
    "pred_before : 2.\npred_after : 2\npred_list : ['2']\npred_mode : 2\nGT : 2\n"
    "*************************\n"
    "*************************\n11st data\n1_th_sampling\n"
    "Q: Wendy picked 103 flowers for her friend\u2019s wedding. She was making bouquets with 8 flowers in each "
    "one. If 47 of the flowers wilted before the wedding, how many bouquets could she still make?\n"
    "A: Let's think step by step. \n\nWendy picked 103 flowers. \n47 of the flowers wilted. \nThat means that "
    "Wendy is left with 103 - 47 = 56 flowers. \nSince Wendy wants to make bouquets with 8 flowers in each one, "
    "she will be able to make 56 / 8 = 7 bouquets. \nTherefore, the answer (arabic numerals) is 7. \n\n"
    "I hope this helps!\n"
    "pred_before : 7. \n\nI hope this helps!\npred_after : 7\npred_list : ['7']\npred_mode : 7\nGT : 7\n"
    "*************************\n"
    "accuracy : 78.66666666666666\n"
)

# This log has no "Nst data" lines and numbers its samplings from 0.
MULTIARITH_ZERO_SHOT = (
    "*************************\n0_th_sampling\n"
    "Q: Adam bought 2 boxes of chocolate candy and 5 boxes of caramel candy. If each box has 4 pieces inside "
    "it, how much candy did he have total?\nA: The answer (arabic numerals) is \n\n36\n"
    "pred_before : 36\npred_after : 36\npred_list : ['36']\npred_mode : 36\nGT : 28\n"
    "*************************\n"
    "*************************\n0_th_sampling\n"
    "Q: Isabel had 72 homework problems. She finished 32 of them but still had 5 pages of problems to do. If "
    "each page has the same number of problems on it, how many problems are on each page?\n"
    "A: The answer (arabic numerals) is _____.\n\nThere are 11 problems on each page.\n"
    "pred_before : _____.\n\nThere are 11 problems on each page.\n"
    "pred_after : 11\npred_list : ['11']\npred_mode : 11\nGT : 8\n"
    "*************************\n"
)

# Here pred_before is printed raw (two spaces), and a completion runs over several lines.
COIN_FLIP_ZERO_SHOT = (
    "*************************\n4st data\n1_th_sampling\n"
    "Q: A coin is heads up. Wilmer flips the coin. Valerie does not flip the coin. Melissa flips the coin. "
    "Eloisa flips the coin. Is the coin still heads up? Note that \"flip\" here means \"reverse\".\n"
    "A: The answer (Yes or No) is No.\n"
    "pred_before :  No.\npred_after : no\npred_list : ['no']\npred_mode : no\nGT : no\n"
    "*************************\n"
    "*************************\n16st data\n1_th_sampling\n"
    "Q: A coin is heads up. Erwin does not flip the coin. Chad does not flip the coin. Margarito does not flip "
    "the coin. Shanna does not flip the coin. Is the coin still heads up? Note that \"flip\" here means "
    "\"reverse\".\n"
    "A: The answer (Yes or No) is the same as the answer to this question:\n\nA coin is heads up. Erwin does "
    "not reverse the coin. Chad does not reverse the coin.\n"
    "pred_before :  the same as the answer to this question:\n\nA coin is heads up. Erwin does not reverse the "
    "coin. Chad does not reverse the coin.\n"
    "pred_after : \npred_list : ['']\npred_mode : \nGT : yes\n"
    "*************************\n"
)


@pytest.mark.parametrize("text, key, method", [
    (MULTIARITH_ZERO_SHOT_COT, "multiarith", "zero_shot_cot"),
    (MULTIARITH_ZERO_SHOT, "multiarith", "zero_shot"),
    (COIN_FLIP_ZERO_SHOT, "coin_flip", "zs"),
])
def test_real_log_excerpts_import_to_the_recorded_outputs(data_root, text, key, method):
    task = load_task(key, data_root)
    short = "zs_cot" if method in ("zs_cot", "zero_shot_cot") else "zs"
    recorded = {r["sample_index"]: r for r in _records(short, key)}

    imported = records_from_log(text, task, method)

    assert len(imported) == 2
    for record in imported:
        assert record == recorded[record["sample_index"]]


def test_parse_log_reads_entries_with_their_lines():
    entries = parse_log(MULTIARITH_ZERO_SHOT_COT, "multiarith_zero_shot_cot.log")
    assert [(e.number, e.line, e.gt) for e in entries] == [(1, 10, "2"), (2, 28, "7")]
    assert entries[1].pred_before == "7. \n\nI hope this helps!"


def test_import_logs_writes_jsonl_and_reads_task_and_method_from_the_file_name(data_root, tmp_path):
    records = _records("zs_cot", "coin_flip")
    first, second = tmp_path / "coin_flip_zero_shot_cot.log", tmp_path / "restart.log"
    # A run split over two logs (a restart) imports as one file.
    first.write_text(render_log(records[:200], "coin_flip"), encoding="utf-8")
    second.write_text(render_log(records[200:], "coin_flip"), encoding="utf-8")
    out = tmp_path / "out" / "coin_flip.jsonl"

    count = import_logs([first, second], None, None, out, data_root=data_root)

    assert count == len(records)
    assert [record for _, record in read_jsonl(out)] == records
    assert not list(out.parent.glob(".*tmp*"))


@pytest.mark.parametrize("name, expected", [
    ("multiarith_zero_shot_cot.log", ("multiarith", "zs_cot")),
    ("shuffled_objects_zero_shot.log", ("tracking_shuffled_objects", "zs")),
    ("commonsensqa_zero_shot_cot.log", ("commonsense_qa", "zs_cot")),
    ("singleeq_zero_shot.log", ("single_eq", "zs")),
])
def test_guess_task_and_method_knows_kojimas_file_names(name, expected):
    assert guess_task_and_method(name) == expected


def test_wrong_task_is_a_one_line_error_that_names_the_entry_and_the_fix(data_root):
    with pytest.raises(FtcotError, match=r"log:10 \(entry 1\).*not in task 'addsub'.*check --task"):
        records_from_log(MULTIARITH_ZERO_SHOT_COT, load_task("addsub", data_root), "zs_cot", source="log")


def test_wrong_method_is_an_error_that_suggests_the_method(data_root):
    with pytest.raises(FtcotError, match=r"zero_shot log of task 'multiarith'.*--method"):
        records_from_log(MULTIARITH_ZERO_SHOT_COT, load_task("multiarith", data_root), "zs")


def test_an_entry_repeated_beyond_the_task_is_refused(data_root):
    twice = MULTIARITH_ZERO_SHOT + MULTIARITH_ZERO_SHOT
    with pytest.raises(FtcotError, match="asked more often"):
        records_from_log(twice, load_task("multiarith", data_root), "zs")


def test_a_file_that_is_not_a_log_is_refused(tmp_path):
    with pytest.raises(FtcotError, match="no entries"):
        parse_log("accuracy : 12\n", "x.log")
    with pytest.raises(FtcotError, match="Unknown method 'cot'"):
        records_from_log(MULTIARITH_ZERO_SHOT, "multiarith", "cot")
