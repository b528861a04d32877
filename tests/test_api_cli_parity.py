"""The commands and the Python API cannot drift apart: every option of ``ftcot train|evaluate``
is a parameter of the matching ``ftcot.<stage>()`` (or a setting it forwards) with the same default, unless it
is listed below with the reason it only makes sense on a command line.

Both layers call the same stage functions (ftcot.teach.engine.teach, ftcot.curate.curate, ftcot.train.train,
ftcot.evaluate.evaluate); what can drift is the layer of options and defaults in front of them, which is what
this checks. A new CLI option fails here until the API takes it too (or it is added to COMMAND_LINE_ONLY).
"""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest

from ftcot import api
from ftcot.cli.evaluate import evaluate_command
from ftcot.cli.train import train_command
from ftcot.train.config import TrainConfig

# option -> why the API has no such parameter
COMMAND_LINE_ONLY = {
    "train": {"base_url": "API students only; ftcot.train() runs local students",
              "api_key_env": "API students only", "timeout": "API students only"},
    "evaluate": {"as_json": "how the command prints"},
}
# option -> why the defaults differ on purpose
DIFFERENT_DEFAULT = {
    ("evaluate", "progress"): "a notebook stays quiet unless asked; a terminal shows a bar",
}

# teach and curate derive both from one config model (ftcot.settings): tests/test_config_parity.py runs them.
PAIRS = {"train": (train_command, api.train), "evaluate": (evaluate_command, api.evaluate)}


def forwarded_defaults(stage: str) -> dict[str, object]:
    """Settings an API function takes through **kwargs, with the defaults it applies."""
    if stage == "train":
        default = TrainConfig()
        return {f.name: getattr(default, f.name) for f in fields(TrainConfig)}
    return {}


def api_defaults(stage: str) -> dict[str, object]:
    function = PAIRS[stage][1]
    explicit = {name: p.default for name, p in inspect.signature(function).parameters.items()
                if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return {**forwarded_defaults(stage), **explicit}


def empty(default: object) -> object:
    """No value, however spelled: a missing default, None and an empty list mean the same setting."""
    return None if default is inspect.Parameter.empty or default in ([], ()) else default


@pytest.mark.parametrize("stage", sorted(PAIRS))
def test_every_command_option_is_an_api_parameter_with_the_same_default(stage):
    command = PAIRS[stage][0]
    defaults = api_defaults(stage)
    missing, differing = [], []
    for name, parameter in inspect.signature(command).parameters.items():
        if name in COMMAND_LINE_ONLY[stage]:
            continue
        if name not in defaults:
            missing.append(name)
            continue
        if defaults[name] is inspect.Parameter.empty:
            continue  # required in Python: there is no default to drift
        cli_default = empty(parameter.default)
        api_default = empty(defaults[name])
        if cli_default != api_default and (stage, name) not in DIFFERENT_DEFAULT:
            differing.append(f"{name}: command {cli_default!r}, API {api_default!r}")
    assert not missing, f"ftcot {stage} options missing from ftcot.{stage}(): {missing}"
    assert not differing, f"ftcot {stage} defaults differ from ftcot.{stage}()'s: {differing}"


def test_the_exceptions_listed_here_are_still_command_options():
    # A stale entry would let a real option slip through unchecked.
    for stage, names in COMMAND_LINE_ONLY.items():
        options = set(inspect.signature(PAIRS[stage][0]).parameters)
        assert set(names) <= options, (stage, set(names) - options)
    for stage, name in DIFFERENT_DEFAULT:
        assert name in inspect.signature(PAIRS[stage][0]).parameters
