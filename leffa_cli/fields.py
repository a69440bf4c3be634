"""CLI options generated from a pydantic model's fields, so a settings model is the one list of its options.

Each field ``some_name`` becomes ``--some-name`` with the field's description as help; booleans get a
``--name/--no-name`` pair; ``Literal`` fields a choice; tuples and lists take text (``1024x768``, ``a,b``) that the
model's own validators parse. Every option defaults to ``None`` ("not given"), so lower layers (a config file, the
environment, presets) keep their say.
"""

from __future__ import annotations

import inspect
import types
import typing
from pathlib import Path
from typing import Any, Literal

import typer
from pydantic import BaseModel

# Library parameters whose CLI option has another name.
RENAMED = {"allow_extra_gt": "--ignore-extra-gt", "results": "--compare", "config_file": "--config"}


def flag(name: str) -> str:
    """The CLI spelling of a setting or parameter name: ``max_batch`` -> ``--max-batch`` (or its ``RENAMED`` flag)."""
    return RENAMED.get(name) or "--" + name.replace("_", "-")


def _option_type(annotation: Any) -> tuple[Any, dict]:
    """(Python type typer parses, extra ``typer.Option`` arguments) for a field annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return _option_type(inner[0]) if len(inner) == 1 else (str, {})
    if origin is Literal or annotation in (bool, int, float, str, Path):
        return annotation, {}
    return str, {}  # tuples, lists: text the model's validators parse


def options_from_model(model: type[BaseModel], skip: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """One keyword parameter per field of ``model`` (except ``skip``), with a ``typer.Option`` default of ``None``."""
    parameters = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        kind, extra = _option_type(field.annotation)
        declaration = f"{flag(name)}/--no-{name.replace('_', '-')}" if kind is bool else flag(name)
        if typing.get_origin(field.annotation) in (tuple, list):
            extra.setdefault("metavar", "<text>")
        option = typer.Option(None, declaration, help=field.description, show_default=False, **extra)
        parameters.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind | None)
        )
    return parameters


def with_model_options(model: type[BaseModel], skip: tuple[str, ...] = ()):
    """Decorator: add ``model``'s fields as options to a command taking ``**settings`` (typer reads the signature)."""

    def decorate(command):
        signature = inspect.signature(command)
        fixed = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        command.__signature__ = signature.replace(parameters=fixed + options_from_model(model, skip))
        return command

    return decorate
