"""The configs in configs/ are valid experiments, and `ftcot demo` runs configs/demo.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ftcot.experiment.config import load_config
from ftcot.experiment.demo import DEMO
from ftcot.experiment.runner import Experiment

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", ["demo", "gemma_offline", "paper_open_students"])
def test_shipped_config_plans(name, data_root, tmp_path):
    config = load_config(CONFIGS / f"{name}.yaml")
    experiment = Experiment(config, tmp_path, data_root)
    experiment.check()
    assert experiment.plan.cells and not list(tmp_path.iterdir())


def test_demo_yaml_is_the_demo():
    assert yaml.safe_load((CONFIGS / "demo.yaml").read_text()) == DEMO


def test_paper_config_covers_the_papers_table(data_root, tmp_path):
    plan = Experiment(load_config(CONFIGS / "paper_open_students.yaml"), tmp_path, data_root).plan
    assert len({c.task for c in plan.cells}) == 12 and len({c.student for c in plan.cells}) == 9
    # No Few-shot-CoT exemplars exist for tracking_shuffled_objects (the paper has none either).
    assert plan.skipped == [f"tracking_shuffled_objects fs_cot: no Few-shot-CoT exemplars for this task"] * 9
