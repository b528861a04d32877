"""Experiment configs: defaults, merging of training settings, and one-line errors naming the key."""

from __future__ import annotations

import pytest

from ftcot.errors import FtcotError
from ftcot.experiment.config import load_config, parse_config
from ftcot.train.config import TrainConfig
from tests.cli import assert_one_line_error, run_ftcot

BASE = {"name": "x", "tasks": ["coin_flip"], "teachers": ["replay:text-davinci-002"], "methods": ["ft", "ft_cot"],
        "students": ["tiny-gpt2"]}


def _error(raw) -> str:
    with pytest.raises(FtcotError) as caught:
        parse_config(raw, "exp.yaml")
    return str(caught.value)


def test_short_forms_and_paper_defaults():
    config = parse_config(BASE)
    assert config.tasks[0].spec == "coin_flip" and config.teachers[0].spec == "replay:text-davinci-002"
    assert config.seeds == [0] and config.split_scheme == "default" and config.teacher_row
    assert config.train_config(config.students[0], 0) == TrainConfig(student="tiny-gpt2", seed=0)


def test_training_settings_merge_defaults_then_experiment_then_student_then_seed():
    config = parse_config({**BASE, "train": {"epochs": 3, "lr": 1e-3},
                           "students": ["tiny-gpt2", {"spec": "tiny-gpt2", "name": "slow", "lr": 1e-4,
                                                      "train": {"batch_size": 4}}],
                           "seeds": [0, 1]})
    fast, slow = config.students
    assert config.train_config(fast, 1) == TrainConfig(student="tiny-gpt2", epochs=3, lr=1e-3, seed=1)
    assert config.train_config(slow, 0) == TrainConfig(student="tiny-gpt2", epochs=3, lr=1e-4, batch_size=4)


@pytest.mark.parametrize("change, fragments", [
    ({"method": ["ft"]}, ["exp.yaml", "method: unknown key", "Did you mean 'methods'?"]),
    ({"students": [{"spec": "tiny-gpt2", "lrr": 1}]}, ["students[0]", "lrr", "Did you mean 'lr'?"]),
    ({"methods": ["ft", "cot"]}, ["methods[1]", "'cot'"]),
    ({"seeds": []}, ["seeds", "at least 1"]),
    ({"train": {"epochs": "many"}}, ["train.epochs", "'many'"]),
    ({"students": [{"spec": "tiny-gpt2", "epochs": 0}]}, ["students[0] (tiny-gpt2)", "epochs", "at least 1"]),
    ({"tasks": ["coin_flp"]}, ["tasks[0]", "Did you mean 'coin_flip'?"]),
    ({"teachers": []}, ["needs at least one teacher"]),
    ({"methods": ["ft"], "diverse": {"D": [2]}}, ["add ft_cot (or ft_cot_kd) to methods"]),
    ({"students": ["tiny-gpt2", "tiny-gpt2"]}, ["two students share the label 'tiny-gpt2'"]),
    ({"diverse": {"D": [0]}}, ["diverse.D[0]", "greater than or equal to 1"]),
    ({"seeds": [0, 1, 0]}, ["seeds", "'0' is listed twice"]),
    ({"methods": ["ft", "ft"]}, ["methods", "'ft' is listed twice"]),
    ({"train_sizes": [8, "most"]}, ["train_sizes[1]", "'all'"]),
    ({"tasks": [{"spec": "coin_flip", "seeds": [1, 1]}]}, ["tasks[0]", "seeds", "'1' is listed twice"]),
    ({"tasks": [{"spec": "coin_flip", "train_sizes": [8, "all", 8]}]}, ["train_sizes", "'8' is listed twice"]),
    ({"students": [{"spec": "tiny-gpt2", "methods": ["zs"]}]}, ["student 'tiny-gpt2' lists method 'zs'"]),
    ({"students": [{"spec": "tiny-gpt2", "seeds": []}]}, ["students[0]", "seeds", "at least 1"]),
    ({"tasks": [{"spec": "coin_flip", "teachers": ["gpt"]}]}, ["task 'coin_flip' lists teacher 'gpt'",
                                                               "replay:text-davinci-002"]),
    ({"tasks": [{"spec": "coin_flip", "train_sizes": [8], "seeds_by_size": {16: [0]}}]}, ["size 16", "train_sizes"]),
    ({"tasks": [{"spec": "coin_flip", "train_sizes": [8], "seeds_by_size": {8: [3]}}]}, ["seed 3", "subset"]),
    ({"teachers": [{"spec": "replay:text-davinci-002", "method": "zs"}]}, ["teachers[0]", "method zs_cot or ft_cot, not zs"]),
    # YAML's .inf and .nan: refused wherever a number goes (diverse.temperature and parameters took .inf).
    ({"diverse": {"D": [2], "temperature": float("inf")}}, ["diverse.temperature", "finite number"]),
    ({"students": [{"spec": "tiny-gpt2", "parameters": float("inf")}]}, ["students[0].parameters", "finite"]),
    ({"teachers": [{"spec": "openai:gpt-4o-mini", "max_cost": float("nan")}]}, ["teachers[0].max_cost", "finite"]),
    ({"curate": {"decontaminate_min_overlap": float("nan")}}, ["curate.decontaminate_min_overlap", "finite"]),
    # A value twice on any axis would be one result counted twice ("± 0.00").
    ({"tasks": ["coin_flip", "multiarith", "coin_flip"]}, ["tasks[2]", "'coin_flip' is tasks[0] again"]),
    ({"tasks": ["coin_flip", {"spec": "coin_flip", "seeds": [1]}]}, ["tasks[1]", "is tasks[0] again"]),
    ({"diverse": {"D": [2, 4, 2]}}, ["diverse.D", "'2' is listed twice"]),
    ({"diverse": {"D": [2], "per_task": {"coin_flip": [8, 8]}}}, ["diverse.per_task.coin_flip", "'8' is listed twice"]),
    ({"teachers": ["replay:text-davinci-002", "replay:text-davinci-002"]}, ["two teachers share the label"]),
    ({"executor": {"kind": "ray", "retries": 11}}, ["executor.retries", "less than or equal to 10"]),
    ({"executor": {"address": "h:6379"}}, ["executor", "address is for kind: ray"]),
])
def test_bad_values_name_the_key(change, fragments):
    message = _error({**BASE, **change})
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_not_a_mapping():
    assert "expected a mapping" in _error(["tasks"])


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: x\ntasks: [coin_flip\nmethods: [ft]\n")
    with pytest.raises(FtcotError, match=r"exp.yaml line \d+: not valid YAML"):
        load_config(path)


def test_cli_reports_a_bad_config_in_one_line_and_creates_nothing(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: x\ntasks: [coin_flip]\nmethods: [ft]\nstudents: [{spec: tiny-gpt2, lr: -1}]\n"
                    "teacher_row: false\n")
    result = run_ftcot("run", path, "--out", tmp_path / "out")
    assert_one_line_error(result, "exp.yaml", "students[0]", "lr")
    assert not (tmp_path / "out").exists()
    assert_one_line_error(run_ftcot("run", tmp_path / "missing.yaml"), "missing.yaml", "no such experiment file")


def test_credentials_in_a_url_stay_out_of_stage_keys_and_records():
    config = parse_config({**BASE, "teachers": [{"spec": "openai:m", "base_url": "https://u:secret@host/v1?k=secret"}],
                           "students": [{"spec": "openai:s", "base_url": "https://u:secret@host/v1"}]})
    assert "secret" not in str(config.teachers[0].identity()) and "secret" not in str(config.public_dump())
    assert config.teachers[0].base_url == "https://u:secret@host/v1?k=secret"  # still used to connect


def test_two_task_files_that_the_tables_would_name_alike_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        for name in ("t.jsonl", "coin_flip.jsonl"):
            (tmp_path / folder / name).write_text('{"question": "%s: 1 + 1?", "answer": "2"}\n' % folder)
    user = lambda path: {"spec": path, "answer_type": "number"}  # noqa: E731
    message = _error({**BASE, "tasks": [user("a/t.jsonl"), user("b/t.jsonl")]})
    assert "tasks[1] 'b/t.jsonl' and tasks[0] 'a/t.jsonl' would both be 't' in the tables" in message
    message = _error({**BASE, "tasks": ["coin_flip", user("a/coin_flip.jsonl")]})
    assert "would both be 'coin_flip'" in message and "rename the file " in message
    message = _error({**BASE, "tasks": [user("a/t.jsonl"), user("./b/../a/t.jsonl")]})
    assert "tasks[1]: './b/../a/t.jsonl' is tasks[0] again" in message
