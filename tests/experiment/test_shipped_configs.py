"""The configs in configs/ are valid experiments, today's code still plans the stages their committed archives
hold, and `ftcot demo` runs what the demo promises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ftcot.experiment.config import load_config, parse_config
from ftcot.experiment.demo import DEMO, QUICK
from ftcot.experiment.runner import Experiment
from ftcot.experiment.stages import stage_key
from tests.cli import run_ftcot
from tests.conftest import PROJECT_ROOT

CONFIGS = PROJECT_ROOT / "configs"
RESULTS = PROJECT_ROOT / "results"
# Every experiment config (configs/accelerate/ holds accelerate launcher files, not experiments).
EXPERIMENT_CONFIGS = sorted(CONFIGS.glob("*.yaml"))
# Every committed archive with stage records (results/NAME/stages/KIND/KEY/).
ARCHIVES = sorted(path.parent for path in RESULTS.glob("*/stages"))


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _stand_in_models(raw: object, home: Path) -> None:
    """A config's local `hf:~/…` teachers (models exported by an earlier run) as directories with a config.json:
    what a plan checks of a local model; the plan loads no weights."""
    if isinstance(raw, dict):
        for value in raw.values():
            _stand_in_models(value, home)
    elif isinstance(raw, list):
        for value in raw:
            _stand_in_models(value, home)
    elif isinstance(raw, str) and raw.startswith("hf:~/"):
        model = home / raw.removeprefix("hf:~/")
        model.mkdir(parents=True, exist_ok=True)
        (model / "config.json").write_text("{}")


def test_every_experiment_config_is_collected():
    names = {path.stem for path in EXPERIMENT_CONFIGS}
    assert {"demo", "gemma_offline", "paper_open_students", "diverse_offline", "teacher_labels"} <= names


@pytest.mark.parametrize("config", EXPERIMENT_CONFIGS, ids=lambda path: path.stem)
def test_shipped_config_plans(config, data_root, tmp_path):
    """`ftcot run CONFIG --plan`, as a user would start: every teach stage is estimated (a dry run over
    the questions it would ask), nothing is written: not the output, not the user's home or caches, not the
    working directory."""
    home = tmp_path / "home"
    home.mkdir()
    _stand_in_models(yaml.safe_load(config.read_text()), home)
    before = _files(tmp_path)
    result = run_ftcot("run", config, "--plan", "--out", tmp_path / "out", "--data-dir", data_root,
                       env={"HOME": str(home)}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "result cells" in result.stdout and "Nothing was run." in result.stdout
    assert not (tmp_path / "out").exists()
    assert _files(tmp_path) == before


def _config_of(archive: Path) -> Path:
    """The shipped config an archive was run from: the one whose `name:` its experiment.json records."""
    name = json.loads((archive / "experiment.json").read_text())["name"]
    found = [path for path in EXPERIMENT_CONFIGS if yaml.safe_load(path.read_text()).get("name") == name]
    assert len(found) == 1, f"{archive.name}: experiment {name!r} is not the name of exactly one config: {found}"
    return found[0]


def test_every_archive_has_its_config():
    assert {archive.name for archive in ARCHIVES} >= {"gemma_offline", "diverse_offline"}
    for experiment in RESULTS.glob("*/experiment.json"):
        _config_of(experiment.parent)


@pytest.mark.parametrize("archive", ARCHIVES, ids=lambda path: path.name)
def test_every_archived_stage_is_still_planned(archive, data_root, tmp_path):
    """A committed archive resumes into today's plan: each stage directory it holds is a stage its config
    plans now, with the inputs recorded then. A change to what a stage key hashes (a renamed setting, a new
    default, another task identity) would make everyone who resumes from it retrain everything."""
    plan = Experiment(load_config(_config_of(archive)), tmp_path / "run", data_root).plan
    archived = [stage for kind in (archive / "stages").iterdir() for stage in kind.iterdir()]
    assert archived
    unplanned = sorted(f"{stage.parent.name}/{stage.name}" for stage in archived
                       if stage.name not in plan.stages or plan.stages[stage.name].kind != stage.parent.name)
    assert unplanned == [], f"{len(unplanned)} of {len(archived)} archived stages are not planned any more"
    for stage in archived:
        if not (stage / "stage.json").is_file():  # a stage being archived by a running experiment
            continue
        recorded = json.loads((stage / "stage.json").read_text())
        assert recorded["key"] == stage.name and stage_key(recorded["inputs"]) == stage.name
        assert plan.stages[stage.name].inputs == recorded["inputs"]


def _plan(config, tmp_path, data_root):
    return Experiment(config, tmp_path / "run", data_root).plan


@pytest.mark.parametrize("demo", ["ftcot demo", "configs/demo.yaml"])
def test_the_demo_plans_what_it_promises(demo, data_root, tmp_path):
    """README and `ftcot demo`: coin flip, the paper's teacher replayed (its Zero-shot-CoT row), Gemma 3 270M
    (LoRA, 3 epochs) prompted zero-shot, fine-tuned on answers and on the teacher's rationales; one seed, the
    whole training set. configs/demo.yaml is the same experiment: the same stages."""
    config = parse_config(DEMO, "the demo") if demo == "ftcot demo" else load_config(CONFIGS / "demo.yaml")
    plan = _plan(config, tmp_path, data_root)
    assert {(c.task, c.student, c.method, c.teacher) for c in plan.cells} == {
        ("coin_flip", "gemma-270m", "zs", ""),
        ("coin_flip", "gemma-270m", "ft", ""),
        ("coin_flip", "gemma-270m", "ft_cot", "replay:text-davinci-002")}
    assert len(plan.cells) == 3 and {(c.seed, c.train_size, c.D) for c in plan.cells} == {(0, None, None)}
    assert [(teacher, task) for _, teacher, task in plan.teacher_rows] == [("replay:text-davinci-002", "coin_flip")]
    trained = [s.inputs["config"] for s in plan.of_kind("train")]
    assert len(trained) == 2 and all(c["student"] == "gemma-270m" and c["lora"] and c["epochs"] == 3
                                     for c in trained)
    assert {s.inputs["split"] for s in plan.of_kind("evaluate")} == {"test"}
    assert {s.inputs["limit"] for s in plan.of_kind("evaluate")} == {None}
    assert plan.skipped == []
    same = _plan(load_config(CONFIGS / "demo.yaml"), tmp_path / "yaml", data_root)
    assert list(plan.stages) == list(same.stages)


def test_the_quick_demo_is_tiny_gpt2_on_64_questions(data_root, tmp_path):
    plan = _plan(parse_config(QUICK, "the demo"), tmp_path, data_root)
    assert {(c.task, c.student, c.method) for c in plan.cells} == {
        ("coin_flip", "tiny-gpt2", "zs"), ("coin_flip", "tiny-gpt2", "ft"), ("coin_flip", "tiny-gpt2", "ft_cot")}
    assert {c.train_size for c in plan.cells if c.method != "zs"} == {64}


def test_paper_config_covers_the_papers_table(data_root, tmp_path):
    plan = Experiment(load_config(CONFIGS / "paper_open_students.yaml"), tmp_path, data_root).plan
    assert len({c.task for c in plan.cells}) == 12 and len({c.student for c in plan.cells}) == 9
    # AQuA's training questions are not in the data (its train file is not published with it): its prompting
    # cells and teacher row stay, from a teach stage on the test questions only.
    aqua_teach = [s for s in plan.of_kind("teach") if s.inputs["task"] == {"key": "aqua"}]
    assert [s.inputs["split"] for s in aqua_teach] == ["test"]
    assert {c.method for c in plan.cells if c.task == "aqua"} == {"zs", "zs_cot", "fs_cot"}
    assert ("aqua", "replay:text-davinci-002") in {(task, teacher) for _, teacher, task in plan.teacher_rows}
    assert [line.split(":")[0] for line in plan.skipped] == ["aqua ft", "aqua ft_cot",
                                                             "tracking_shuffled_objects fs_cot"]
    # No Few-shot-CoT exemplars exist for tracking_shuffled_objects (the paper has none either).
    assert plan.skipped[-1] == "tracking_shuffled_objects fs_cot: no Few-shot-CoT exemplars for this task"
