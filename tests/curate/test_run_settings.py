"""The curate settings of ``ftcot run``: new options key a stage only when changed."""

from __future__ import annotations

import pytest

from ftcot.errors import FtcotError
from ftcot.experiment.config import parse_config
from ftcot.experiment.stages import stage_key

BASE = {"name": "x", "tasks": ["coin_flip"], "teachers": ["replay:text-davinci-002"], "methods": ["ft_cot"],
        "students": ["tiny-gpt2"]}
# A curate stage's inputs before decontamination and the filters existed (the key of stages already run).
OLD = {"kind": "curate", "task": {"key": "coin_flip"}, "template": "ft_cot", "teach": "abc", "D": None,
       "split_scheme": "default", "train_size": None, "subset_seed": None,
       "val_fraction": 0.1, "val_seed": 0, "max_rationale_tokens": None}


def _inputs(curate: dict) -> dict:
    config = parse_config({**BASE, "curate": curate})
    return {**{k: v for k, v in OLD.items() if k not in ("val_fraction", "val_seed", "max_rationale_tokens")},
            **config.curate.stage_inputs()}


def test_defaults_keep_the_stage_key():
    assert stage_key(_inputs({})) == stage_key(OLD)
    assert stage_key(_inputs({"decontaminate": "warn", "drop_no_reasoning": True})) == stage_key(OLD)


def test_a_changed_setting_is_a_new_stage():
    changed = _inputs({"decontaminate": "drop", "drop_truncated": True})
    assert changed["decontaminate"] == "drop" and changed["drop_truncated"] is True
    assert stage_key(changed) != stage_key(OLD)


def test_bad_value_names_the_key():
    with pytest.raises(FtcotError, match="decontaminate"):
        parse_config({**BASE, "curate": {"decontaminate": "maybe"}})
    with pytest.raises(FtcotError, match="decontaminate_ngram"):
        parse_config({**BASE, "curate": {"decontaminate_ngram": 0}})


# -- issue 11, items 1-3 in ftcot run ----------------------------------------------------------------------------


def _plan(tmp_path, data_root, **changes):
    from ftcot.experiment.runner import Experiment

    return Experiment(parse_config({**BASE, **changes}), tmp_path, data_root).plan


def test_a_list_of_labels_is_an_axis_whose_cells_name_their_labels(tmp_path, data_root):
    plan = _plan(tmp_path, data_root, curate={"label": ["gold", "majority"]}, diverse={"D": [2]})
    curates = plan.of_kind("curate")
    # gold keeps the paper's key; the greedy data (one rationale a question) has no majority: gold only.
    assert [(s.inputs["D"], s.inputs.get("label")) for s in curates] == [(None, None), (2, None), (2, "majority")]
    assert [(c.teacher, c.D) for c in plan.cells if c.method == "ft_cot"] == [
        ("replay:text-davinci-002", None), ("replay:text-davinci-002", 2),
        ("replay:text-davinci-002 (majority labels)", 2)]
    assert plan.skipped == ["coin_flip ft_cot: majority labels need 2 or more rationales a question (min_votes); "
                            "replay:text-davinci-002's greedy data is curated with gold only"]
    assert stage_key(curates[0].inputs) == stage_key(_plan(tmp_path, data_root).of_kind("curate")[0].inputs)


def test_min_votes_1_takes_the_greedy_teachers_own_answers_as_labels_and_keeps_gold_keys(tmp_path, data_root):
    plan = _plan(tmp_path, data_root, curate={"label": ["gold", "majority"], "min_votes": 1})
    gold, majority = plan.of_kind("curate")
    assert (gold.inputs.get("label"), majority.inputs["label"], majority.inputs["min_votes"]) == (
        None, "majority", 1)
    assert "min_votes" not in gold.inputs  # gold ignores it: the paper's cell keeps its key
    assert stage_key(gold.inputs) == stage_key(_plan(tmp_path, data_root).of_kind("curate")[0].inputs)
    assert plan.skipped == []
    with pytest.raises(FtcotError, match="min_votes"):
        parse_config({**BASE, "curate": {"min_votes": 0}})


def test_an_adaptive_teacher_trains_on_its_adaptive_stage_and_keys_new_teach_stages(tmp_path, data_root):
    teacher = {"spec": "openai:gemma", "base_url": "http://127.0.0.1:9/v1", "until_correct": 1, "max_samples": 4}
    plan = _plan(tmp_path, data_root, teachers=[teacher], teacher_row=False)
    (curate,) = plan.of_kind("curate")
    source = plan.stages[curate.inputs["teach"]]
    assert source.inputs["temperature"] == 0.7 and source.samples == 4
    assert source.inputs["teacher"]["until_correct"] == 1
    assert plan.of_kind("teach") == [source]  # no greedy stage that nothing reads (and someone pays for)
    # Its sampled stage is its adaptive one: a diverse D of it would be adaptive data under a fixed D's name.
    with_d = _plan(tmp_path, data_root, teachers=[teacher], teacher_row=False, diverse={"D": [2]})
    assert [c.D for c in with_d.cells] == [None] and with_d.of_kind("teach") == [source]
    assert with_d.skipped == ["coin_flip ft_cot: diverse D: openai:gemma samples adaptively (until_correct), so it "
                              "has no fixed-D data; its cell is the adaptive one"]
    plain = _plan(tmp_path, data_root, teachers=[{"spec": "openai:gemma", "base_url": "http://127.0.0.1:9/v1"}])
    assert "until_correct" not in plain.of_kind("teach")[0].inputs["teacher"]  # older stages keep their keys


def test_bad_adaptive_or_label_settings_name_the_key():
    with pytest.raises(FtcotError, match=r"teachers\[0\]: .*needs both until_correct and max_samples"):
        parse_config({**BASE, "teachers": [{"spec": "openai:x", "until_correct": 2}]})
    with pytest.raises(FtcotError, match="curate.label"):
        parse_config({**BASE, "curate": {"label": "majorty"}})
