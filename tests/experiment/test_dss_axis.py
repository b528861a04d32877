"""Distilling step-by-step (``ft_dss``) as a method of ``ftcot run``: planned beside ft and ft_cot on the same
teacher data, its λ (``rationale_weight``) in its own train stages only, and a tiny run end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from ftcot.errors import FtcotError
from ftcot.experiment.config import load_config, parse_config
from ftcot.experiment.runner import Experiment
from ftcot.report.results import ResultRow, results_markdown
from tests.cli import run_ftcot

BASE = {"name": "x", "tasks": ["coin_flip"], "teachers": ["replay:text-davinci-002"],
        "methods": ["ft", "ft_cot", "ft_dss"], "students": [{"spec": "tiny-gpt2", "epochs": 2}]}


def _plan(data_root, tmp_path, **changes):
    return Experiment(parse_config({**BASE, **changes}), tmp_path, data_root).plan


def _train_stages(plan) -> dict[str, object]:
    """Train stages by the template of the data they read."""
    return {plan.stages[s.inputs["curate"]].inputs["template"]: s for s in plan.of_kind("train")}


def test_ft_dss_trains_on_the_same_teacher_data_as_ft_cot(data_root, tmp_path):
    plan = _plan(data_root, tmp_path)
    curates = {s.inputs["template"]: s for s in plan.of_kind("curate")}
    assert set(curates) == {"ft", "ft_cot", "ft_dss"}
    assert curates["ft_dss"].inputs["teach"] == curates["ft_cot"].inputs["teach"] is not None
    assert {k: v for k, v in curates["ft_dss"].inputs.items() if k != "template"} == \
        {k: v for k, v in curates["ft_cot"].inputs.items() if k != "template"}
    assert sorted(c.method for c in plan.cells) == ["ft", "ft_cot", "ft_dss"]
    dss = next(c for c in plan.cells if c.method == "ft_dss")
    assert dss.teacher == "replay:text-davinci-002" and plan.stages[dss.evaluate].inputs["method"] == "ft_dss"


def test_rationale_weight_keys_only_the_ft_dss_train_stage(data_root, tmp_path):
    before = _train_stages(_plan(data_root, tmp_path))
    assert all("rationale_weight" not in s.inputs["config"] for s in before.values())  # unset: not in any key
    # Adding ft_dss to an experiment leaves its ft and ft_cot stages as they were.
    without = _train_stages(_plan(data_root, tmp_path, methods=["ft", "ft_cot"]))
    assert {t: s.key for t, s in without.items()} == {t: before[t].key for t in ("ft", "ft_cot")}

    weighted = _train_stages(_plan(data_root, tmp_path, train={"rationale_weight": 2.0}))
    assert weighted["ft"].key == before["ft"].key and weighted["ft_cot"].key == before["ft_cot"].key
    assert weighted["ft_dss"].key != before["ft_dss"].key
    assert weighted["ft_dss"].inputs["config"]["rationale_weight"] == 2.0
    per_student = _train_stages(_plan(data_root, tmp_path, students=[{"spec": "tiny-gpt2", "epochs": 2,
                                                                       "rationale_weight": 2.0}]))
    assert per_student["ft_dss"].key == weighted["ft_dss"].key


def test_config_errors_are_one_line(data_root):
    with pytest.raises(FtcotError,
                       match=r"^x.yaml: \(top level\): train sets rationale_weight, .* add ft_dss to methods$"):
        parse_config({**BASE, "methods": ["ft_cot"], "train": {"rationale_weight": 2}}, "x.yaml")
    with pytest.raises(FtcotError, match=r"student 'tiny-gpt2' sets rationale_weight"):
        parse_config({**BASE, "methods": ["ft"], "students": [{"spec": "tiny-gpt2", "rationale_weight": 2}]})
    with pytest.raises(FtcotError, match=r"train.rationale_weight: .*greater than or equal to 0|rationale-weight"):
        parse_config({**BASE, "train": {"rationale_weight": -1}})
    with pytest.raises(FtcotError, match="needs at least one teacher .* for ft_cot, ft_dss"):
        parse_config({**BASE, "methods": ["ft_dss"], "teachers": [], "teacher_row": False})


def test_the_shipped_config_compares_the_three_on_one_teach_stage(data_root, tmp_path):
    config = load_config(Path(__file__).resolve().parents[2] / "configs" / "distilling_step_by_step.yaml")
    plan = Experiment(config, tmp_path, data_root).plan
    assert sorted(c.method for c in plan.cells) == ["ft", "ft_cot", "ft_dss"]
    assert len(plan.of_kind("teach")) == 1 and len(plan.of_kind("train")) == 3


def test_results_name_the_method():
    rows = [ResultRow("ft_dss", "tiny", "replay:text-davinci-002", "coin_flip", None, 0, 4, 50.0)]
    assert "| tiny, Distilling step-by-step | 50.00 |" in results_markdown(rows)


@pytest.mark.slow
def test_a_run_with_ft_and_ft_dss_end_to_end(data_root, tmp_path):
    config = {"name": "dss", "tasks": ["coin_flip"], "teachers": ["replay:text-davinci-002"], "teacher_row": False,
              "methods": ["ft", "ft_dss"], "train_sizes": [8],
              "students": [{"spec": "tiny-gpt2", "epochs": 1, "batch_size": 4, "max_length": 768,
                            "dropout": 0.0, "device": "cpu"}],
              "train": {"rationale_weight": 0.5}, "evaluate": {"limit": 3, "device": "cpu"}}
    path = tmp_path / "dss.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = run_ftcot("run", path, "--out", tmp_path / "out", "--data-dir", data_root)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out"
    rows = {r["method"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert set(rows) == {"ft", "ft_dss"} and rows["ft_dss"]["n"] == "3"
    assert "Distilling step-by-step" in (out / "results.md").read_text()

    experiment = Experiment(parse_config(config), out, data_root)
    train = _train_stages(experiment.plan)["ft_dss"]
    record = json.loads((out / train.path / "train.json").read_text())
    assert record["template"] == "ft_dss" and record["config"]["rationale_weight"] == 0.5
    data = out / experiment.plan.stages[train.inputs["curate"]].path
    objectives = [json.loads(line)["objective"] for line in (data / "train.jsonl").open()]
    assert objectives.count("label") == objectives.count("rationale") == len(objectives) // 2 > 0
    evaluation = next(s for s in experiment.plan.of_kind("evaluate") if s.inputs["method"] == "ft_dss")
    predictions = [json.loads(line) for line in (out / evaluation.path / "predictions.jsonl").open()]
    assert len(predictions) == 3 and all(p["prompt"].startswith("[label] ") for p in predictions)
    assert json.loads((out / evaluation.path / "metrics.json").read_text())["max_new_tokens"] == 16
