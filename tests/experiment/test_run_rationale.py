"""A teacher's ``rationale: answer|reasoning|both`` in an ``ftcot run`` config.

It says which part of a reasoning model's reply curation trains on. It is read from the teach store when
curating, so it keys the curate stage (and what reads it), never the teach stage: switching it re-curates and
sends the teacher nothing. The teacher is :class:`tests.teach.batch_server.BatchServer` answering as a
reasoning model (``reasoning_content`` beside the chat message) on 127.0.0.1 — a TEST DOUBLE for a paid
provider; the stores and curated files are real. Only the teach and curate stages run (no training).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftcot.errors import FtcotError
from ftcot.experiment.config import parse_config
from ftcot.experiment.runner import Experiment
from ftcot.tasks import load_task
from tests.teach.batch_server import BatchServer

THINKS = "Weighing question"  # how every reasoning the stub sends begins (tests/teach/batch_server.py)


@pytest.fixture
def reasoning_teacher():
    server = BatchServer(reasoning="reasoning_content")
    yield server
    server.close()


def _task_file(tmp_path: Path, data_root: Path) -> Path:
    """Six coin-flip training questions (four answered yes, which the stub's " yes." gets right) and two test."""
    task = load_task("coin_flip", data_root)
    train = task.split("train")
    chosen = [s for s in train if s.answer == "yes"][:4] + [s for s in train if s.answer == "no"][:2]
    rows = [{"question": s.question, "answer": s.answer, "split": "train"} for s in chosen]
    rows += [{"question": s.question, "answer": s.answer, "split": "test"} for s in task.split("test")[:2]]
    path = tmp_path / "coins.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _config(task_file: Path, base_url: str = "http://127.0.0.1:9/v1", **teacher) -> dict:
    return {"name": "rationale", "tasks": [{"spec": str(task_file), "answer_type": "yes/no"}],
            "teachers": [{"spec": "openai:deepseek-reasoner", "name": "r1", "base_url": base_url, "chat": True,
                          **teacher}],
            "methods": ["ft_cot"], "students": [{"spec": "tiny-gpt2", "epochs": 1}], "teacher_row": False}


def _keys(experiment: Experiment, kind: str) -> set[str]:
    return {s.key for s in experiment.plan.of_kind(kind)}


def test_an_unknown_rationale_is_a_one_line_error_naming_the_field(tmp_path, data_root):
    with pytest.raises(FtcotError) as error:
        parse_config(_config(_task_file(tmp_path, data_root), rationale="thoughts"), "exp.yaml")
    assert str(error.value) == ("exp.yaml: teachers[0].rationale: Input should be 'answer', 'reasoning' or 'both' "
                                "(got 'thoughts')")


def test_the_rationale_keys_the_curate_stage_and_not_the_teach_stage(tmp_path, data_root):
    task_file = _task_file(tmp_path, data_root)
    plans = {value: Experiment(parse_config(_config(task_file, **({"rationale": value} if value else {}))),
                               tmp_path / "out", data_root) for value in (None, "answer", "reasoning", "both")}
    assert len({frozenset(_keys(p, "teach")) for p in plans.values()}) == 1  # the teacher is asked the same
    curates = {value: frozenset(_keys(p, "curate")) for value, p in plans.items()}
    assert curates[None] == curates["answer"]  # the default: the keys made before the field existed
    assert len({curates["answer"], curates["reasoning"], curates["both"]}) == 3
    assert not _keys(plans["answer"], "train") & _keys(plans["reasoning"], "train")  # downstream follows
    [curate] = plans["reasoning"].plan.of_kind("curate")
    assert curate.inputs["rationale"] == "reasoning" and "rationale: reasoning" in curate.label
    assert "rationale" not in plans["answer"].plan.of_kind("curate")[0].inputs


def _teach_and_curate(experiment: Experiment) -> dict[str, str]:
    """Run the experiment's teach and curate stages (not the training), as ``ftcot run`` would; kind -> status."""
    experiment.check()
    stages = [s for s in experiment.plan.ordered() if s.kind in ("teach", "curate")]
    # _run_stage: the runner's own step for one stage (done.json, resuming); run() would go on to train.
    return {s.kind: experiment._run_stage(s, n, len(stages)).status for n, s in enumerate(stages, 1)}


def _rationales(experiment: Experiment) -> list[str]:
    [curate] = experiment.plan.of_kind("curate")
    directory = experiment.stage_dir(curate)
    return [json.loads(line)["rationale"] for name in ("train.jsonl", "val.jsonl")
            for line in (directory / name).open(encoding="utf-8")]


def test_switching_the_rationale_recurates_and_sends_the_teacher_nothing(tmp_path, data_root, reasoning_teacher):
    task_file, out = _task_file(tmp_path, data_root), tmp_path / "out"

    def experiment(rationale: str) -> Experiment:
        return Experiment(parse_config(_config(task_file, reasoning_teacher.base_url, rationale=rationale)), out,
                          data_root)

    reasoning = experiment("reasoning")
    assert _teach_and_curate(reasoning) == {"teach": "ran", "curate": "ran"}
    sent = len(reasoning_teacher.direct)
    assert sent == 12  # six rationales and their six answers
    trained_on = _rationales(reasoning)
    assert len(trained_on) == 4 and all(r.startswith(THINKS) for r in trained_on)

    answer = experiment("answer")
    assert _teach_and_curate(answer) == {"teach": "done earlier", "curate": "ran"}
    assert len(reasoning_teacher.direct) == sent  # nothing asked again
    visible = _rationales(answer)
    assert len(visible) == 4 and not any(THINKS in r for r in visible)

    both = experiment("both")
    assert _teach_and_curate(both) == {"teach": "done earlier", "curate": "ran"}
    assert _rationales(both) == [f"{r}\n\n{v}" for r, v in zip(trained_on, visible)]  # the same questions
    assert _teach_and_curate(experiment("reasoning")) == {"teach": "done earlier", "curate": "done earlier"}
    assert len(reasoning_teacher.direct) == sent
