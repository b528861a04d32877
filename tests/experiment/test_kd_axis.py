"""Logit distillation (``ft_cot_kd``) as a method of ``ftcot run``: the ft_cot template with the teacher's top-K in
its own curate stage, λ (``kd_weight``) in its own train stage only, teachers that store top-K required, and a
tiny run end to end (the hand-set "yes" teacher of tests/train/test_kd.py, served by the hf: backend)."""

from __future__ import annotations

import csv
import gzip
import json

import pytest

import ftcot
from ftcot.curate.logprobs import TEACHER_LOGPROBS_FILE
from ftcot.errors import FtcotError
from ftcot.experiment.config import parse_config
from ftcot.experiment.runner import Experiment
from ftcot.report.results import ResultRow, results_markdown
from tests.train.test_kd import one_thread, yes_teacher  # noqa: F401 (a fixture)

TEACHER = {"spec": "hf:some/teacher", "name": "yes", "top_logprobs": 5}
BASE = {"name": "kd", "tasks": ["coin_flip"], "teachers": [TEACHER], "teacher_row": False,
        "methods": ["ft_cot", "ft_cot_kd"], "students": [{"spec": "tiny-gpt2", "epochs": 2}]}


def _plan(data_root, tmp_path, **changes):
    return Experiment(parse_config({**BASE, **changes}), tmp_path, data_root).plan


def _by_method(plan, kind: str) -> dict[str, object]:
    """``kind`` stages (curate, train, evaluate) by the method of the cell that reads them."""
    found = {}
    for cell in plan.cells:
        stage = plan.stages[cell.evaluate]
        while stage.kind != kind:
            stage = plan.stages[stage.deps[0]]
        found[cell.method] = stage
    return found


def test_ft_cot_kd_curates_the_ft_cot_data_with_the_teachers_top_k(data_root, tmp_path):
    plan = _plan(data_root, tmp_path)
    curates = _by_method(plan, "curate")
    assert curates["ft_cot_kd"].key == curates["ft_cot"].key  # one curate stage: it carries the top-K for both
    assert curates["ft_cot_kd"].inputs["template"] == "ft_cot" and len(plan.of_kind("teach")) == 1
    trains = _by_method(plan, "train")
    assert "kd_weight" not in trains["ft_cot"].inputs["config"]
    assert trains["ft_cot_kd"].inputs["config"]["kd_weight"] == 1.0  # the default λ
    evaluations = _by_method(plan, "evaluate")
    assert evaluations["ft_cot_kd"].inputs["method"] == "ft_cot"  # it answers as a Fine-tune-CoT student
    assert sorted(c.method for c in plan.cells) == ["ft_cot", "ft_cot_kd"]


@pytest.mark.parametrize("methods", [["ft_cot", "ft_cot_kd"], ["ft_cot_kd"]])
def test_the_diverse_axis_gives_ft_cot_kd_a_cell_per_d_on_ft_cots_data(data_root, tmp_path, methods):
    """D rationales a question are Fine-tune-CoT data for the distilled student too (it was the greedy cell only),
    on the same curate stages as ft_cot's; ft_cot_kd alone is a diverse experiment of its own."""
    plan = _plan(data_root, tmp_path, methods=methods, diverse={"D": [1, 4]})
    cells = sorted((c.method, c.D or 0) for c in plan.cells)
    assert cells == sorted((m, D) for m in methods for D in (0, 1, 4))
    if len(methods) == 2:
        curates = {(c.method, c.D): plan.stages[plan.stages[plan.stages[c.evaluate].deps[0]].deps[0]].key
                   for c in plan.cells}
        assert all(curates[("ft_cot_kd", D)] == curates[("ft_cot", D)] for D in (None, 1, 4))


def test_kd_weight_keys_only_the_ft_cot_kd_train_stage(data_root, tmp_path):
    before = _by_method(_plan(data_root, tmp_path), "train")
    without = _by_method(_plan(data_root, tmp_path, methods=["ft_cot"]), "train")
    assert without["ft_cot"].key == before["ft_cot"].key  # adding ft_cot_kd leaves ft_cot's stages as they were
    weighted = _by_method(_plan(data_root, tmp_path, train={"kd_weight": 0.5}), "train")
    assert weighted["ft_cot"].key == before["ft_cot"].key and weighted["ft_cot_kd"].key != before["ft_cot_kd"].key
    assert weighted["ft_cot_kd"].inputs["config"]["kd_weight"] == 0.5
    per_student = _by_method(_plan(data_root, tmp_path, students=[{"spec": "tiny-gpt2", "epochs": 2,
                                                                    "kd_weight": 0.5}]), "train")
    assert per_student["ft_cot_kd"].key == weighted["ft_cot_kd"].key


def test_config_errors_are_one_line():
    with pytest.raises(FtcotError, match=r"^x.yaml: \(top level\): ft_cot_kd distils the teacher's top-K "
                                         r"log-probabilities, and teacher 'replay:text-davinci-002' stores none: "
                                         r"give it top_logprobs: 5"):
        parse_config({**BASE, "teachers": ["replay:text-davinci-002"]}, "x.yaml")
    with pytest.raises(FtcotError, match="teacher 'plain' stores none"):
        parse_config({**BASE, "teachers": [TEACHER, {"spec": "hf:other", "name": "plain"}]})
    with pytest.raises(FtcotError, match=r"train sets kd_weight, .* add ft_cot_kd to methods$"):
        parse_config({**BASE, "methods": ["ft_cot"], "train": {"kd_weight": 1}})
    with pytest.raises(FtcotError, match=r"student 'tiny-gpt2' sets kd_weight"):
        parse_config({**BASE, "methods": ["ft_cot"], "students": [{"spec": "tiny-gpt2", "kd_weight": 1}]})
    with pytest.raises(FtcotError, match="kd.weight"):
        parse_config({**BASE, "train": {"kd_weight": -1}})
    with pytest.raises(FtcotError, match="student 'api' is fine-tuned by a provider, on the text only"):
        parse_config({**BASE, "students": ["tiny-gpt2", {"spec": "openai:m", "name": "api"}]})
    parse_config({**BASE, "students": ["tiny-gpt2", {"spec": "openai:m", "name": "api", "methods": ["ft_cot"]}]})


def test_results_name_the_method():
    rows = [ResultRow("ft_cot_kd", "tiny", "yes", "coin_flip", None, 0, 4, 50.0)]
    assert "| tiny, Fine-tune-CoT + logit KD | 50.00 |" in results_markdown(rows)


def test_a_run_with_ft_cot_kd_end_to_end(data_root, tmp_path, one_thread):
    teacher = yes_teacher(tmp_path / "teacher")
    config = {**BASE, "teachers": [{**TEACHER, "spec": f"hf:{teacher}", "max_tokens": 20}], "train_sizes": [16],
              "students": [{"spec": "tiny-gpt2", "epochs": 1, "batch_size": 2, "max_length": 256,
                            "max_new_tokens": 4, "device": "cpu", "bf16": False}],
              "curate": {"val_fraction": 0.25}, "evaluate": {"limit": 2, "device": "cpu", "max_new_tokens": 8}}
    out = tmp_path / "out"
    experiment = ftcot.Experiment(config, out, data_dir=data_root)
    assert [s["status"] for s in experiment.plan()] == ["to run"] * 6
    outcomes = experiment.run()
    assert [o["status"] for o in outcomes] == ["ran"] * 6, outcomes
    rows = {r["method"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert set(rows) == {"ft_cot", "ft_cot_kd"} and rows["ft_cot_kd"]["n"] == "2"
    assert "Fine-tune-CoT + logit KD" in (out / "results.md").read_text()

    plan = Experiment(parse_config(config), out, data_root).plan
    train = _by_method(plan, "train")
    kd = json.loads((out / train["ft_cot_kd"].path / "train.json").read_text())
    plain = json.loads((out / train["ft_cot"].path / "train.json").read_text())
    assert kd["config"]["kd_weight"] == 1.0 and kd["epochs"][0]["train_kd_loss"] > 0
    assert "train_kd_loss" not in plain["epochs"][0] and plain["config"]["kd_weight"] is None
    data = out / plan.stages[train["ft_cot_kd"].inputs["curate"]].path
    with gzip.open(data / TEACHER_LOGPROBS_FILE, "rt") as handle:
        assert sum(1 for _ in handle) == sum(1 for _ in (data / "train.jsonl").open()) > 0
    assert {s["status"] for s in ftcot.Experiment(config, out, data_dir=data_root).plan()} == {"done"}


def _cells(plan) -> list[tuple[str, str, int]]:
    return sorted((c.method, c.teacher, c.D or 0) for c in plan.cells)


def test_a_teacher_may_train_some_methods_at_its_own_D(data_root, tmp_path):
    """A plain teacher for Fine-tune-CoT at D = 1, 2 and its top-K twin for KD at D = 1 only, in one experiment:
    each cell, and each stage, is the one the experiment of that teacher alone plans (so two such experiments
    fold into one without a stage run again), and the twin samples only as many as its own D needs."""
    plain = {"spec": "hf:some/teacher", "name": "plain", "methods": ["ft_cot"]}
    twin = {**TEACHER, "name": "k5", "methods": ["ft_cot_kd"], "D": [1]}
    both = _plan(data_root, tmp_path, teachers=[plain, twin], diverse={"D": [1, 2]})
    assert _cells(both) == [("ft_cot", "plain", 0), ("ft_cot", "plain", 1), ("ft_cot", "plain", 2),
                            ("ft_cot_kd", "k5", 0), ("ft_cot_kd", "k5", 1)]
    alone_plain = _plan(data_root, tmp_path, teachers=[{k: v for k, v in plain.items() if k != "methods"}],
                        methods=["ft_cot"], diverse={"D": [1, 2]})
    alone_kd = _plan(data_root, tmp_path, teachers=[{**TEACHER, "name": "k5"}], methods=["ft_cot_kd"],
                     diverse={"D": [1]})
    assert set(both.stages) == set(alone_plain.stages) | set(alone_kd.stages)
    samples = {s.runtime["teacher"]: s.samples for s in both.of_kind("teach") if s.inputs["temperature"] > 0}
    assert samples == {"plain": 2, "k5": 1}
    # The teacher's settings reach its teach stages; its methods and D (which cells read them) do not.
    from ftcot.experiment.runner import teach_config

    experiment = Experiment(parse_config({**BASE, "teachers": [plain, twin], "diverse": {"D": [1, 2]}}), tmp_path,
                            data_root)
    for stage in experiment.plan.of_kind("teach"):
        config = teach_config(experiment, stage)
        assert config.top_logprobs == (5 if stage.runtime["teacher"] == "k5" else 0)


def test_a_method_no_teacher_lists_is_skipped_and_said(data_root, tmp_path):
    plan = _plan(data_root, tmp_path, teachers=[{**TEACHER, "methods": ["ft_cot_kd"]}])
    assert _cells(plan) == [("ft_cot_kd", "yes", 0)]
    assert any("ft_cot" in line and "none of this task's teachers lists it" in line for line in plan.skipped)


@pytest.mark.parametrize("teacher, changes, message", [
    ({"methods": ["ft"]}, {"methods": ["ft", "ft_cot_kd"]}, r"teacher 'yes' lists method 'ft', which trains on no "
                                                           r"teacher's data"),
    ({"methods": ["ft_dss"]}, {}, r"teacher 'yes' lists method 'ft_dss', which methods does not"),
    ({"methods": []}, {}, r"methods"),
    ({"D": [2]}, {}, r"teacher 'yes' sets D, .* add diverse: \{D: \[2\]\}"),
    ({"D": [0]}, {"diverse": {"D": [1]}}, r"D"),
    ({"D": [2, 2]}, {"diverse": {"D": [1]}}, r"listed twice"),
    ({"methods": ["ft_cot"], "top_logprobs": 0}, {}, None),  # KD is not this teacher's: no top-K needed
])
def test_a_teachers_methods_and_D_are_checked(teacher, changes, message):
    config = {**BASE, "teachers": [{**TEACHER, **teacher}], **changes}
    if message is None:
        if "ft_cot_kd" in config["methods"]:  # another teacher must then train ft_cot_kd
            config["teachers"] = [*config["teachers"], {**TEACHER, "name": "k5", "methods": ["ft_cot_kd"]}]
        parse_config(config)
        return
    with pytest.raises(FtcotError, match=message) as error:
        parse_config(config, "x.yaml")
    assert "\n" not in str(error.value)
