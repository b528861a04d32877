"""One config object per stage; the command line, the YAML keys and the Python API derived from it.

A stage's settings are a pydantic model (a :class:`Settings`). Each field is
declared once — its type, range, default and help (the field's
``description``) — and the three surfaces read that declaration:

- **Python API**: the stage function takes the fields as keyword arguments
  (``ftcot.teach(..., max_cost=2.0)``) and builds the model with :func:`build`.
- **YAML** (``ftcot run``): the experiment config nests the same models (or a
  subset of their fields, :func:`subset`), so its keys are the field names.
- **CLI**: :func:`cli_options` turns the fields into typer options, in the
  model's order (the common ones first). A field marked ``cli="hidden"`` is
  YAML/API only; fields marked ``cli="group:NAME"`` are set together through
  one compound option ``--NAME`` (a :class:`Compound` parses its text into
  those fields), which keeps ``--help`` short enough to read.

Every surface validates through the model, so a value is checked once, the
same way: ranges, choices, and every float finite (``nan``/``inf`` refused). A
bad value is one :class:`FtcotError` line that names the field as that
surface spells it (``--max-cost``, ``max_cost`` or ``teach(max_cost=…)``).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from ftcot.errors import FtcotError, unknown_name

__all__ = ["Compound", "Settings", "build", "cli_options", "option", "parse_args", "subset"]


def _not_boolean(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


def _refuse_booleans(schema: Any) -> Any:
    from pydantic_core import core_schema

    if isinstance(schema, dict):
        if schema.get("type") in ("int", "float"):
            return core_schema.no_info_before_validator_function(_not_boolean, schema)
        return {key: _refuse_booleans(value) for key, value in schema.items()}
    if isinstance(schema, (list, tuple)):
        return type(schema)(_refuse_booleans(item) for item in schema)
    return schema


class NumbersNotBooleans(BaseModel):
    """A model whose numbers refuse ``true``/``false``: pydantic's lax mode reads ``epochs: true`` as 1 epoch
    and ``seeds: [true]`` as seed 1, a mistake taken silently. Every ``int`` and ``float`` in the model's schema
    (nested in lists, mappings and optional values too) refuses a boolean first; the rest of lax mode (``2.0``
    for 2, the fractional-part message) is kept, and each error keeps its place (``seeds[0]``)."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        return _refuse_booleans(handler(source))


class Settings(NumbersNotBooleans):
    """A stage's settings: unknown names refused, frozen, no NaN or infinity anywhere, no boolean for a number."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def option(default: Any = ..., help: str = "", *, cli: str = "option", flag: str | None = None, **constraints: Any) -> Any:
    """A settings field: ``help`` is what ``--help``, the YAML docs and the API docstring show.

    ``cli``: ``"option"`` (its own ``--flag``), ``"hidden"`` (YAML and API only), ``"argument"`` (positional)
    or ``"group:NAME"`` (set through the compound option ``--NAME``). ``flag`` overrides the option's name
    (``"--teacher"`` for the field ``spec``; ``"--lora/--full"`` for a switch).
    """
    extra = {"cli": cli, **({"flag": flag} if flag else {})}
    return Field(default, description=help, json_schema_extra=extra, **constraints)


@dataclass(frozen=True)
class Compound:
    """One CLI option that sets several fields: ``--drop truncated,no-reasoning:5``."""

    name: str  # the option is --NAME
    help: str
    metavar: str
    parse: Callable[[str], dict[str, Any]]  # text -> {field: value}; ValueError with a message when bad
    repeatable: bool = False  # given more than once: each adds to the settings (the last one wins a field)


def _extra(field: Any) -> dict[str, Any]:
    return field.json_schema_extra or {} if isinstance(field.json_schema_extra, dict) else {}


def flag_of(model: type[BaseModel], name: str) -> str:
    """How the command line spells field ``name``: its own option, or the compound option that sets it and the
    name in it (``--teacher-args workers``)."""
    field = model.model_fields.get(name)
    extra = _extra(field) if field is not None else {}
    cli = extra.get("cli", "option")
    if cli.startswith("group:"):
        group = cli.split(":", 1)[1]
        stem = group.replace("-", "_")  # decontaminate_ngram is ngram inside --decontaminate
        return f"--{group}" if name == stem else f"--{group} {name.removeprefix(stem + '_')}"
    if extra.get("flag"):
        return extra["flag"].split("/")[0]
    return "--" + name.replace("_", "-")


def build(model: type[BaseModel], values: Mapping[str, Any], *, surface: str = "api", where: str = "") -> Any:
    """``model(**values)``, or one FtcotError line naming the bad field as ``surface`` spells it.

    ``surface``: ``"cli"`` (``--max-cost``), ``"yaml"`` (``max_cost``, with its place in the file) or ``"api"``
    (``max_cost``);
    ``where`` prefixes the message (a file name, ``teach()``).
    """
    unknown = [name for name in values if name not in model.model_fields]
    if unknown:
        error = unknown_name("setting", unknown[0], model.model_fields)
        raise FtcotError(f"{where}{': ' if where else ''}{error}")
    try:
        return model(**values)
    except ValidationError as exc:
        raise FtcotError(_one_line(model, exc, surface, where)) from None


def _one_line(model: type[BaseModel], exc: ValidationError, surface: str, where: str) -> str:
    error = exc.errors()[0]
    loc = [part for part in error["loc"] if not (isinstance(part, str) and "[" in part)]  # drop validator tags
    name = str(loc[0]) if loc else ""
    if surface == "cli" and name in model.model_fields:
        shown = flag_of(model, name)
    elif surface == "api" and name:
        shown = name
    else:
        shown = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "(settings)"
    message = error["msg"].removeprefix("Value error, ")
    if not loc:  # a rule between fields (the model's own validator): its message names them
        return f"{where}{': ' if where else ''}{message}"
    field = model.model_fields.get(name)
    given = error.get("input")
    if field is not None and len(loc) == 1:
        friendly = _friendly(model, name, field, error["type"], given)
        if friendly and error["type"] == "literal_error":
            return f"{where}{': ' if where else ''}{shown}: {friendly}"
        message = friendly or message
    got = "" if isinstance(given, (dict, list)) or given is None or not loc else f" (got {given!r})"
    return f"{where}{': ' if where else ''}{shown}: {message}{got}"


_RANGE_ERRORS = ("finite_number", "greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _friendly(model: type[BaseModel], name: str, field: Any, kind: str, given: Any) -> str | None:
    """The message for a value out of range or not among the choices, naming what is valid."""
    import annotated_types

    if kind in _RANGE_ERRORS:
        bounds = {type(m).__name__: getattr(m, type(m).__name__.lower()) for m in field.metadata
                  if isinstance(m, (annotated_types.Ge, annotated_types.Gt, annotated_types.Le, annotated_types.Lt))}
        whole = _scalar(typing.get_type_hints(model)[name]) is int
        number = "a whole number" if whole else "a finite number"
        low = f"[{bounds['Ge']}" if "Ge" in bounds else f"({bounds['Gt']}" if "Gt" in bounds else None
        high = f"{bounds['Le']}]" if "Le" in bounds else f"{bounds['Lt']})" if "Lt" in bounds else None
        if low and high:
            return f"must be {number} in {low}, {high}"
        if "Ge" in bounds:
            return f"must be at least {bounds['Ge']}" if whole else f"must be {number}, {bounds['Ge']} or more"
        if "Gt" in bounds:
            return f"must be {number} above {bounds['Gt']}"
        return f"must be {number}"
    if kind == "literal_error":  # "Unknown method 'cot'. Did you mean 'zs_cot'? Valid: …"
        choices = typing.get_args(_scalar(typing.get_type_hints(model)[name]))
        return str(unknown_name(name.replace("_", " "), str(given), [str(c) for c in choices])).rstrip(".")
    return None


def _scalar(annotation: Any) -> Any:
    """``Optional[X]`` (or ``X | None``) → ``X``."""
    import types

    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    union = typing.get_origin(annotation) in (Union, types.UnionType)
    return args[0] if union and len(args) == 1 else annotation


def subset(model: type[BaseModel], name: str, *, exclude: Sequence[str] = (),
           base: type[BaseModel] = Settings) -> type[BaseModel]:
    """A model with ``model``'s fields less ``exclude`` (the YAML block of a stage whose other fields an
    experiment plans itself)."""
    hints = typing.get_type_hints(model)
    fields: dict[str, Any] = {}
    for field_name, field in model.model_fields.items():
        if field_name in exclude:
            continue
        fields[field_name] = (hints[field_name], field)
    return create_model(name, __base__=base, __validators__=_field_rules(model, fields), **fields)


def _field_rules(model: type[BaseModel], kept: Mapping[str, Any]) -> dict[str, Any]:
    """``model``'s field validators of the ``kept`` fields: a subset without them took what the stage then refused
    (a config's ``evaluate: {device: gpu}`` passed, and its stage died of the stage's own rule)."""
    from pydantic import field_validator

    rules = {}
    for name, decorator in model.__pydantic_decorators__.field_validators.items():
        names = [f for f in decorator.info.fields if f in kept]
        if names:
            function = getattr(decorator.func, "__func__", decorator.func)  # the classmethod's function
            rules[name] = field_validator(*names, mode=decorator.info.mode)(classmethod(function))
    return rules


def from_dataclass(cls: type, name: str) -> type[BaseModel]:
    """A pydantic view of a dataclass of settings (``field(metadata={"help": …, "flag": …})``): its command line
    derives from it like a Settings model's; the dataclass stays the one that validates (``__post_init__``)."""
    import dataclasses

    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for item in dataclasses.fields(cls):
        default = item.default if item.default is not dataclasses.MISSING else item.default_factory()  # type: ignore[misc]
        extra = {"cli": item.metadata.get("cli", "option"), **({"flag": item.metadata["flag"]}
                                                                if "flag" in item.metadata else {})}
        fields[item.name] = (hints[item.name], Field(default, description=item.metadata.get("help", ""),
                                                      json_schema_extra=extra))
    return create_model(name, __config__=ConfigDict(extra="forbid", frozen=True), **fields)


# ---- the command line --------------------------------------------------------------------------------------------
def cli_options(model: type[BaseModel], compounds: Sequence[Compound] = (), *,
                exclude: Sequence[str] = ()) -> list[inspect.Parameter]:
    """typer parameters for ``model``'s fields, in field order, with the model's defaults (a required field
    defaults to None: the command says it is missing); a compound option stands where its first field is."""
    import typer

    parameters: list[inspect.Parameter] = []
    placed: set[str] = set()
    by_name = {c.name: c for c in compounds}
    for name, field in model.model_fields.items():
        if name in exclude:
            continue
        extra = _extra(field)
        cli = extra.get("cli", "option")
        if cli == "hidden":
            continue
        if cli.startswith("group:"):
            group = cli.split(":", 1)[1]
            if group not in placed:
                placed.add(group)
                compound = by_name[group]
                kind = list[str] if compound.repeatable else str
                parameters.append(inspect.Parameter(
                    group.replace("-", "_"), inspect.Parameter.KEYWORD_ONLY, default=None,
                    annotation=Annotated[Optional[kind], typer.Option(
                        f"--{group}", help=compound.help + (" (repeatable)" if compound.repeatable else ""),
                        metavar=compound.metavar, show_default=False)]))
            continue
        kind = _cli_type(model, name)
        default = field.get_default(call_default_factory=True) if not field.is_required() else None
        if cli == "argument":
            parameters.append(inspect.Parameter(
                name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default,
                annotation=Annotated[Optional[kind], typer.Argument(help=field.description)]))
            continue
        flags = [extra["flag"]] if extra.get("flag") else []
        if kind is bool and not flags:
            dashed = name.replace("_", "-")
            flags = [f"--{dashed}/--no-{dashed}" if default else f"--{dashed}"]
        shown = default is not None and default != [] and default != {}
        parameters.append(inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=default,
            annotation=Annotated[Optional[kind], typer.Option(*flags, help=field.description, show_default=shown)]))
    return parameters


def _cli_type(model: type[BaseModel], name: str) -> Any:
    """The type typer parses a field's option as: its scalar type (choices are checked by the model)."""
    annotation = _scalar(typing.get_type_hints(model)[name])
    if annotation in (bool, int, float, str):
        return annotation
    if typing.get_origin(annotation) is list and typing.get_args(annotation)[0] in (int, str):
        return list[typing.get_args(annotation)[0]]
    from pathlib import Path

    if annotation is Path:
        return Path
    return str  # Literal choices and the rest: the model parses and checks the text


def cli_values(values: Mapping[str, Any], compounds: Sequence[Compound]) -> dict[str, Any]:
    """The options the user gave (None: not given), compound options parsed into their fields."""
    settings: dict[str, Any] = {}
    by_name = {c.name.replace("-", "_"): c for c in compounds}
    for name, value in values.items():
        if value is None:
            continue
        if name in by_name:
            compound = by_name[name]
            for text in [value] if isinstance(value, str) else value:  # repeated: merged, the last one wins
                try:
                    settings.update(compound.parse(text))
                except ValueError as exc:
                    raise FtcotError(f"--{compound.name} {text!r}: {exc} (see --help)") from None
        else:
            settings[name] = value
    return settings


def parse_args(text: str, valid: Sequence[str] | None = None) -> dict[str, Any]:
    """``"base_url=http://h/v1,chat=true,extra_body={"a": 1}"`` → a dict; values read as YAML (numbers,
    booleans, lists, mappings), commas inside brackets, braces or quotes kept. lm-evaluation-harness's
    ``--model_args`` style. ``valid``: the names allowed (an unknown one is a ValueError)."""
    import yaml

    parts, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    values: dict[str, Any] = {}
    for part in (p.strip() for p in parts):
        if not part:
            continue
        key, sep, raw = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"expected NAME=VALUE, got {part!r}")
        if valid is not None and key not in valid:
            close = unknown_name("name", key, valid)
            raise ValueError(str(close).removeprefix("Unknown name "))
        try:
            value = yaml.safe_load(raw.strip()) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw.strip()
        values[key] = value
    return values
