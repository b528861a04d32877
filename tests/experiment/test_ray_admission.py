"""Which ready stages the Ray executor sends (executors.admit): in plan order, as many as the cluster holds."""

from __future__ import annotations

from ftcot.experiment.executors import admit

# Stages stand in as names here (admit reads nothing of a stage but what `needs` says of it).
NEEDS = {"train1": (1, 0), "train2": (1, 0), "train3": (1, 0), "eval1": (1, 0), "gpu_train": (1, 1),
         "big": (4, 0)}


def _admit(ready, running, cluster):
    return admit(ready, running, cluster, lambda stage: NEEDS[stage])


def test_only_what_the_cluster_holds_in_plan_order():
    assert _admit(["train1", "train2", "train3"], [], (2, 0)) == ["train1", "train2"]
    # train1 finished: its evaluation, earlier in the plan than train3, takes the free CPU.
    assert _admit(["eval1", "train3"], ["train2"], (2, 0)) == ["eval1"]
    assert _admit(["train3"], ["train2", "eval1"], (2, 0)) == []


def test_a_stage_that_does_not_fit_lets_a_later_one_that_does_go_first():
    assert _admit(["gpu_train", "train3"], ["train1"], (2, 1)) == ["gpu_train"]
    assert _admit(["gpu_train", "train3"], ["gpu_train"], (4, 1)) == ["train3"]  # the one GPU is taken
    assert _admit(["big", "train3"], ["train1"], (4, 0)) == ["train3"]


def test_with_nothing_running_the_first_stage_goes_even_if_the_cluster_lacks_room():
    """An autoscaling cluster starts the node a stage needs only when a stage asks for it; an idle driver
    waiting for room that never comes would hang."""
    assert _admit(["gpu_train", "train1"], [], (2, 0)) == ["gpu_train", "train1"]
    assert _admit(["big"], [], (2, 0)) == ["big"]
    assert _admit([], [], (2, 0)) == []
