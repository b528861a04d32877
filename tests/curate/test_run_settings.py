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
