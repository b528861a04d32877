"""Planning: which stages an experiment has, and which of them a changed setting touches."""

from __future__ import annotations

import pytest
import yaml

from ftcot.curate.dataset import question_subset
from ftcot.errors import FtcotError
from ftcot.experiment.config import load_config, parse_config
from ftcot.experiment.runner import Experiment
from ftcot.tasks import load_task

BASE = {"name": "x", "tasks": ["coin_flip"], "teachers": ["replay:text-davinci-002"], "methods": ["ft", "ft_cot"],
        "students": [{"spec": "tiny-gpt2", "epochs": 2}]}


def _plan(data_root, tmp_path, **changes):
    return Experiment(parse_config({**BASE, **changes}), tmp_path, data_root).plan


def _keys(plan, kind):
    return {s.key for s in plan.of_kind(kind)}


def test_a_changed_learning_rate_touches_train_and_evaluate_only(data_root, tmp_path):
    before = _plan(data_root, tmp_path)
    after = _plan(data_root, tmp_path, students=[{"spec": "tiny-gpt2", "epochs": 2, "lr": 1e-3}])
    assert _keys(before, "teach") == _keys(after, "teach") and _keys(before, "curate") == _keys(after, "curate")
    assert not _keys(before, "train") & _keys(after, "train")
    assert not _keys(before, "evaluate") & _keys(after, "evaluate")
    # Settings that change how a stage runs, not what it makes, keep its key.
    faster = _plan(data_root, tmp_path, evaluate={"batch_size": 64},
                   students=[{"spec": "tiny-gpt2", "epochs": 2, "eval_batch_size": 32}])
    assert set(faster.stages) == set(before.stages)


def test_stages_run_in_data_flow_order_and_read_only_earlier_ones(data_root, tmp_path):
    plan = _plan(data_root, tmp_path, methods=["zs", "ft", "ft_cot"])
    seen = set()
    for stage in plan.ordered():
        assert set(stage.deps) <= seen, stage.label
        seen.add(stage.key)
    kinds = [s.kind for s in plan.ordered()]
    assert kinds[0] == "teach"
    evaluated = {c.evaluate: c.method for c in plan.cells}
    assert [evaluated[s.key] for s in plan.ordered() if s.key in evaluated] == ["ft", "ft_cot", "zs"]
    # Cell by cell: a student is evaluated before the next one trains, so a killed run keeps results.
    assert kinds.index("evaluate") < len(kinds) - 1 - kinds[::-1].index("train")
    assert [c.method for c in plan.cells] == ["zs", "ft", "ft_cot"]
    assert [c.teacher for c in plan.cells] == ["", "", "replay:text-davinci-002"]


def test_diverse_reasoning_shares_one_sampled_teach_stage_topped_up_to_the_largest_D(data_root, tmp_path):
    plan = _plan(data_root, tmp_path, teachers=["hf:tiny-gpt2"], diverse={"D": [1, 2, 4]})
    teach = {s.inputs["temperature"]: s for s in plan.of_kind("teach")}
    assert set(teach) == {0.0, 0.7} and teach[0.7].samples == 4 and teach[0.0].samples == 1
    assert teach[0.0].inputs["split"] == "all" and teach[0.7].inputs["split"] == "train"  # teacher row: test too
    curated = {s.inputs["D"]: s.deps for s in plan.of_kind("curate") if s.inputs["template"] == "ft_cot"}
    assert curated == {None: (teach[0.0].key,), 1: (teach[0.7].key,), 2: (teach[0.7].key,), 4: (teach[0.7].key,)}
    assert sorted((c.D is None, c.D) for c in plan.cells if c.method == "ft_cot") == [
        (False, 1), (False, 2), (False, 4), (True, None)]


def test_training_set_sizes_teach_only_the_questions_trained_on(data_root, tmp_path):
    plan = _plan(data_root, tmp_path, train_sizes=[8, 16], seeds=[0, 1], teacher_row=False)
    train = load_task("coin_flip", data_root).split_indices("train")
    wanted = {i for size in (8, 16) for seed in (0, 1) for i in question_subset(train, size, seed, "coin_flip")}
    [teach] = plan.of_kind("teach")
    assert set(teach.questions) == wanted and len(wanted) < len(train)
    subsets = {(s.inputs["template"], s.inputs["train_size"], s.inputs["subset_seed"]) for s in plan.of_kind("curate")}
    assert subsets == {(t, n, seed) for t in ("ft", "ft_cot") for n in (8, 16) for seed in (0, 1)}
    assert {c.train_size for c in plan.cells} == {8, 16} and len(plan.cells) == 2 * 2 * 2


def test_a_task_may_have_its_own_seeds_and_sizes_and_all_is_the_whole_training_split(data_root, tmp_path):
    tasks = [{"spec": "coin_flip", "seeds": [0, 1, 2], "train_sizes": [8, "all"]}, "date_understanding"]
    plan = _plan(data_root, tmp_path, tasks=tasks, teacher_row=False)
    cells = {(c.task, c.method, c.seed, c.train_size) for c in plan.cells}
    assert cells == {("coin_flip", m, seed, size) for m in ("ft", "ft_cot") for seed in (0, 1, 2)
                     for size in (8, None)} | {("date_understanding", m, 0, None) for m in ("ft", "ft_cot")}
    # "all" trains on the same curated data as a plain run: one stage, shared.
    whole = {s.key for s in plan.of_kind("curate") if s.inputs["train_size"] is None
             and s.inputs["task"] == {"key": "coin_flip"}}
    plain = _plan(data_root, tmp_path, teacher_row=False)
    assert whole == {s.key for s in plain.of_kind("curate")}
    [teach] = [s for s in plan.of_kind("teach") if s.inputs["task"] == {"key": "coin_flip"}]
    assert teach.questions is None  # the whole split is trained on, so the teacher answers all of it
    # The main table first (every cell's first seed on the whole split), then more seeds, then subsets.
    evaluated = {c.evaluate: (c.task, c.seed, c.train_size) for c in plan.cells}
    order = [evaluated[s.key] for s in plan.ordered() if s.key in evaluated]
    trained = [(s.inputs["config"]["seed"], plan.stages[s.deps[0]].inputs["train_size"])
               for s in plan.ordered() if s.kind == "train"]
    assert trained[:4] == [(0, None)] * 4  # nothing else trains before the main table
    assert order[:4] == [("coin_flip", 0, None)] * 2 + [("date_understanding", 0, None)] * 2
    assert order[4:8] == [("coin_flip", seed, None) for seed in (1, 1, 2, 2)]
    assert {size for _, _, size in order[8:]} == {8}


def test_a_student_may_have_its_own_methods_and_seeds(data_root, tmp_path):
    tasks = [{"spec": "coin_flip", "seeds": [0, 1]}, "date_understanding"]
    students = [{"spec": "tiny-gpt2", "epochs": 2}, {"spec": "tiny-t5", "methods": ["ft_cot"], "seeds": [0]}]
    plan = _plan(data_root, tmp_path, tasks=tasks, students=students, methods=["zs", "ft", "ft_cot"],
                 teacher_row=False)
    cells = {(c.task[:4], c.student, c.method, c.seed) for c in plan.cells}
    assert cells == {("coin", "tiny-gpt2", m, s) for m in ("ft", "ft_cot") for s in (0, 1)} \
        | {(t, "tiny-gpt2", m, 0) for t in ("coin", "date") for m in ("zs", "ft", "ft_cot")} \
        | {(t, "tiny-t5", "ft_cot", 0) for t in ("coin", "date")}
    # The first student's fine-tuned cells task by task, then the next student's, then the baselines,
    # then the further seeds.
    evaluated = {c.evaluate: (c.task[:4], c.student[5:], c.method, c.seed) for c in plan.cells}
    assert [evaluated[s.key] for s in plan.ordered() if s.key in evaluated] == [
        ("coin", "gpt2", "ft", 0), ("coin", "gpt2", "ft_cot", 0), ("date", "gpt2", "ft", 0),
        ("date", "gpt2", "ft_cot", 0), ("coin", "t5", "ft_cot", 0), ("date", "t5", "ft_cot", 0),
        ("coin", "gpt2", "zs", 0), ("date", "gpt2", "zs", 0), ("coin", "gpt2", "ft", 1), ("coin", "gpt2", "ft_cot", 1)]


def test_a_done_teach_stage_covers_less_but_not_more(data_root, tmp_path):
    [teach] = _plan(data_root, tmp_path, train_sizes=[8], teacher_row=False).of_kind("teach")
    assert teach.covered_by(1, None) and teach.covered_by(1, teach.questions)
    assert not teach.covered_by(1, teach.questions[:-1])
    [whole] = _plan(data_root, tmp_path, teacher_row=False).of_kind("teach")
    assert whole.key == teach.key and not whole.covered_by(1, teach.questions)


def test_prompting_baselines_once_per_student_and_few_shot_only_where_exemplars_exist(data_root, tmp_path):
    plan = _plan(data_root, tmp_path, tasks=["coin_flip", "tracking_shuffled_objects"],
                 methods=["zs", "fs_cot"], seeds=[0, 1, 2], teacher_row=False)
    assert sorted((c.task, c.method) for c in plan.cells) == [
        ("coin_flip", "fs_cot"), ("coin_flip", "zs"), ("tracking_shuffled_objects", "zs")]
    assert plan.skipped == ["tracking_shuffled_objects fs_cot: no Few-shot-CoT exemplars for this task"]
    assert not plan.of_kind("teach") and not plan.of_kind("train")


@pytest.mark.parametrize("corrupt, message", [("{not json", "not valid JSON"),
                                               ('{"coin_flip": 3}', "entry 'coin_flip' has no 'prompt' string"),
                                               ("[]", "expected a JSON object")])
def test_a_corrupt_few_shot_file_is_an_error_not_a_task_without_exemplars(data_root, tmp_path, corrupt, message):
    root = tmp_path / "root"
    root.mkdir()
    for part in ("raw", "splits", "teacher"):
        (root / part).symlink_to(data_root / part)
    (root / "prompts").mkdir()
    (root / "prompts" / "few_shot_cot_prompts.json").write_text(corrupt)
    with pytest.raises(FtcotError, match=message):
        _plan(root, tmp_path, tasks=["coin_flip"], methods=["zs", "fs_cot"], teacher_row=False)
    (root / "prompts" / "few_shot_cot_prompts.json").unlink()  # no file at all: the cells are skipped, said so
    plan = _plan(root, tmp_path, tasks=["coin_flip"], methods=["zs", "fs_cot"], teacher_row=False)
    assert plan.skipped == ["coin_flip fs_cot: no Few-shot-CoT exemplars for this task"]


def test_two_teachers_give_fine_tune_cot_cells_each_and_share_vanilla_fine_tune(data_root, tmp_path):
    plan = _plan(data_root, tmp_path, teachers=["replay:text-davinci-002", {"spec": "hf:tiny-gpt2", "name": "tiny"}])
    assert sorted((c.method, c.teacher) for c in plan.cells) == [
        ("ft", ""), ("ft_cot", "replay:text-davinci-002"), ("ft_cot", "tiny")]


def test_per_task_D_as_in_the_paper(data_root, tmp_path):
    plan = _plan(data_root, tmp_path, tasks=["coin_flip", "multiarith", "gsm8k"], teachers=["hf:tiny-gpt2"],
                 methods=["ft_cot"], diverse={"D": [8], "per_task": {"multiarith": [64], "gsm8k": []}})
    assert sorted((c.task, c.D) for c in plan.cells if c.D is not None) == [("coin_flip", 8), ("multiarith", 64)]
    sampled = {s.inputs["task"]["key"]: s.samples for s in plan.of_kind("teach") if s.inputs["temperature"] > 0}
    assert sampled == {"coin_flip": 8, "multiarith": 64}


def test_the_report_draws_the_main_tables_training_curves_first(data_root, tmp_path, monkeypatch):
    from ftcot.experiment import results

    tasks = [{"spec": "coin_flip", "seeds": [0, 1, 2]}, "date_understanding"]
    experiment = Experiment(parse_config({**BASE, "tasks": tasks, "teacher_row": False}), tmp_path, data_root)
    for stage in experiment.plan.of_kind("train"):  # finished trainings: only their records are read here
        experiment.stage_dir(stage).mkdir(parents=True)
        (experiment.stage_dir(stage) / "train.json").write_text(
            '{"epochs": [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.0, "val_accuracy": 0.5}]}')
    monkeypatch.setattr(results, "TRAINING_CURVES_SHOWN", 4)
    drawn = [caption for caption, _ in results._plots(experiment, results.Results()) if caption.startswith("Training")]
    assert len(drawn) == 4 and all("seed 0" in c for c in drawn)
    assert sum("date_understanding" in c for c in drawn) == 2  # seeds 1-2 of coin flip do not push date out


def test_students_trained_on_subsets_are_drawn_in_the_training_size_plot_only(data_root, tmp_path, monkeypatch):
    """results/gemma_offline's student-size plot once averaged the 8/32/128-question students into the whole
    training set's point (date Fine-tune 28 instead of 40.5)."""
    from ftcot.experiment import results
    from ftcot.report import plots
    from ftcot.report.results import ResultRow

    students = [{"spec": "tiny-gpt2", "parameters": 1e6}, {"spec": "tiny-t5", "parameters": 2e6}]
    tasks = [{"spec": "coin_flip", "train_sizes": [8, "all"]}]
    experiment = Experiment(parse_config({**BASE, "tasks": tasks, "students": students, "teacher_row": False}),
                            tmp_path, data_root)
    rows = [ResultRow("ft", s, "", "coin_flip", None, 0, 150, accuracy, size)
            for s in ("tiny-gpt2", "tiny-t5") for size, accuracy in ((None, 60.0), (8, 10.0))]
    drawn = {}
    for name in ("plot_accuracy_by_task", "plot_accuracy_vs_student_size", "plot_accuracy_vs_train_size"):
        monkeypatch.setattr(plots, name, lambda given, *_, name=name, **__: drawn.setdefault(name, given))
    results._plots(experiment, results.Results(rows=rows))
    assert {r.accuracy for r in drawn["plot_accuracy_by_task"]} == {60.0}
    assert {r.accuracy for r in drawn["plot_accuracy_vs_student_size"]} == {60.0}
    assert sorted(size for _, size in drawn["plot_accuracy_vs_train_size"]) == [8, 8, 350, 350]


def test_a_task_may_name_its_teachers_and_fewer_seeds_at_a_size(data_root, tmp_path):
    teachers = ["replay:text-davinci-002", {"spec": "hf:some/student", "name": "student", "method": "ft_cot"}]
    tasks = [{"spec": "coin_flip", "teachers": ["student"], "seeds": [0, 1, 2], "train_sizes": [8, 16],
              "seeds_by_size": {16: [0]}}, "date_understanding"]
    plan = _plan(data_root, tmp_path, tasks=tasks, teachers=teachers, methods=["ft_cot"], teacher_row=False)
    taught = {(s.inputs["task"]["key"], s.runtime["teacher"], s.inputs["method"]) for s in plan.of_kind("teach")}
    assert taught == {("coin_flip", "student", "ft_cot"), ("date_understanding", "replay:text-davinci-002", "zs_cot"),
                      ("date_understanding", "student", "ft_cot")}
    coin = {(c.seed, c.train_size) for c in plan.cells if c.task == "coin_flip"}
    assert coin == {(0, 8), (1, 8), (2, 8), (0, 16)}
    # Only the questions some cell trains on are taught: seeds 1 and 2 draw no 16-question subset.
    train = load_task("coin_flip", data_root).split_indices("train")
    wanted = {i for seed in (0, 1, 2) for i in question_subset(train, 8, seed, "coin_flip")} \
        | set(question_subset(train, 16, 0, "coin_flip"))
    [teach] = [s for s in plan.of_kind("teach") if s.inputs["task"] == {"key": "coin_flip"}]
    assert set(teach.questions) == wanted
    # A zs_cot teacher keeps the teach key it had before teachers had a method.
    plain = _plan(data_root, tmp_path, tasks=["date_understanding"], methods=["ft_cot"], teacher_row=False)
    assert _keys(plain, "teach") <= _keys(plan, "teach")


def test_select_epoch_last_is_a_train_setting_the_default_keeps_the_keys(data_root, tmp_path):
    """``select_epoch: last`` changes what best/ holds, so it is in the train key; ``best`` (the default, and
    the rule before the option existed) is left out of it, so earlier stages keep their keys."""
    before = _plan(data_root, tmp_path)
    assert all("select_epoch" not in s.inputs["config"] for s in before.of_kind("train"))
    spelled = _plan(data_root, tmp_path, train={"select_epoch": "best"})
    assert set(spelled.stages) == set(before.stages)
    last = _plan(data_root, tmp_path, students=[{"spec": "tiny-gpt2", "epochs": 2, "select_epoch": "last"}])
    assert [s.inputs["config"]["select_epoch"] for s in last.of_kind("train")] == ["last", "last"]
    assert _keys(before, "curate") == _keys(last, "curate") and not _keys(before, "train") & _keys(last, "train")


@pytest.mark.parametrize("where", ["train", "student"])
def test_select_epoch_is_checked_in_the_config_and_refused_for_a_providers_student(data_root, tmp_path, where):
    wrong = {"train": {"select_epoch": "first"}} if where == "train" else \
        {"students": [{"spec": "tiny-gpt2", "select_epoch": "first"}]}
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump({**BASE, **wrong}))
    with pytest.raises(FtcotError, match=r"select.epoch.*best, last") as error:
        load_config(path)
    assert "\n" not in str(error.value) and "x.yaml" in str(error.value)
    api = {"spec": "openai:gpt-4o-mini", **({"select_epoch": "last"} if where == "student" else {})}
    provider = {"students": [api], **({"train": {"select_epoch": "last"}} if where == "train" else {})}
    path.write_text(yaml.safe_dump({**BASE, **provider}))
    with pytest.raises(FtcotError, match=r"openai:gpt-4o-mini.*returns one model") as error:
        load_config(path)
    assert "\n" not in str(error.value)
