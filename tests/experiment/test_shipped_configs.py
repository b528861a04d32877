"""The configs in configs/ are valid experiments, and `ftcot demo` runs configs/demo.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ftcot.experiment.config import load_config
from ftcot.experiment.demo import DEMO
from ftcot.experiment.runner import Experiment
from tests.cli import run_ftcot

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", ["demo", "gemma_offline", "paper_open_students", "paper_cluster_vllm"])
def test_shipped_config_plans(name, data_root, tmp_path):
    """`ftcot run CONFIG --plan`, as a user would start: every teach stage is estimated (a dry run over
    the questions it would ask), nothing is written."""
    result = run_ftcot("run", CONFIGS / f"{name}.yaml", "--plan", "--out", tmp_path / "out", "--data-dir", data_root)
    assert result.returncode == 0, result.stderr
    assert "result cells" in result.stdout and "Nothing was run." in result.stdout
    assert not (tmp_path / "out").exists()


def test_demo_yaml_is_the_demo():
    assert yaml.safe_load((CONFIGS / "demo.yaml").read_text()) == DEMO


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
