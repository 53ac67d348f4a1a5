"""Command-line options derived from settings classes, so that every default exists once.

`settings_options` turns each parameter of a command annotated with a `Settings` class into one
typer option per settings field (name, default, help and choices from the field), and hands the
command a validated settings object. A bad value is the settings object's one-line error.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import rich.markup
import typer
from typer.core import TyperCommand, TyperGroup

from phenolens.core.executor import SCHEDULER_HELP
from phenolens.core.settings import Settings, _base_type, field_types, option_name

# The words `--help` shows for a value, the same for the options built here and the plain ones; a flag takes none
# (typer >= 0.26 would otherwise label it `<bool>`, as though `--overwrite` wanted a value, and other values `<path>`, `<str>`).
TYPE_METAVARS = {bool: "", int: "INTEGER", float: "NUMBER", str: "TEXT", Path: "PATH"}


def _option_for(field: dataclasses.Field, annotation: Any, prefix: str) -> tuple[str, Any, typer.models.OptionInfo]:
    """(parameter name, CLI type, typer option) for one settings field."""
    base, optional = _base_type(annotation)
    # typer draws help with rich, which reads "[this, 1]" as a style tag and drops it: escaped, brackets show as written
    help_text = rich.markup.escape(field.metadata.get("help", ""))
    choices = field.metadata.get("choices")
    if choices:
        help_text += f" One of: {', '.join(map(str, choices))}."
    name = option_name(field)
    if prefix:
        name = f"--{prefix}-{name[2:]}"
    default = field.default
    if typing.get_origin(base) is tuple:
        # Lists travel as comma-separated text; the settings object parses and checks them.
        text = "" if default is None else ",".join(map(str, default))
        return field.name, str, typer.Option(text, name, help=help_text, metavar="LIST", show_default=bool(text))
    if base is bool:
        flag = f"{name}/--no-{name[2:]}"
        return field.name, bool, typer.Option(default, flag, help=help_text)
    # Numbers are parsed by the settings object too, so that `nan`, `inf` and `0` get its message.
    cli_type = str if base in (int, float) else base
    metavar = TYPE_METAVARS.get(base, "TEXT")
    shown = None if default is None else str(default)
    if optional:
        return field.name, cli_type | None, typer.Option(shown, name, help=help_text, metavar=metavar, show_default=shown is not None)
    return field.name, cli_type, typer.Option(shown, name, help=help_text, metavar=metavar)


def cli_fields(settings_type: type[Settings]) -> list[dataclasses.Field]:
    """The fields of `settings_type` that appear on the command line."""
    return [f for f in dataclasses.fields(settings_type) if f.metadata.get("cli", True)]


def settings_options(**prefixes: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Expand every `Settings`-annotated parameter of a command into its options.

    Parameters
    ----------
    **prefixes : str
        Optional option-name prefix per settings parameter (``explain="explain"`` gives
        ``--explain-batch-size``), for commands that take two settings with a shared field name.

    Returns
    -------
    callable
        A decorator; the decorated command receives built settings objects.
    """

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(command)
        signature = inspect.signature(command)
        parameters: list[inspect.Parameter] = []
        annotations: dict[str, Any] = {}
        expanded: dict[str, tuple[type[Settings], list[str]]] = {}
        taken: set[str] = set()
        for parameter in signature.parameters.values():
            annotation = hints.get(parameter.name, parameter.annotation)
            if isinstance(annotation, type) and issubclass(annotation, Settings):
                field_hints = field_types(annotation)
                names = []
                for field in cli_fields(annotation):
                    name, cli_type, option = _option_for(field, field_hints[field.name], prefixes.get(parameter.name, ""))
                    key = f"{parameter.name}__{name}"
                    if name in taken:
                        raise TypeError(f"{command.__name__}: option {name} appears twice; give a prefix")
                    taken.add(name)
                    parameters.append(inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=cli_type))
                    annotations[key] = cli_type
                    names.append(name)
                expanded[parameter.name] = (annotation, names)
            else:
                taken.add(parameter.name)
                parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=annotation))
                annotations[parameter.name] = annotation

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            for parameter_name, (settings_type, names) in expanded.items():
                field_hints = field_types(settings_type)
                values = {}
                for name in names:
                    value = kwargs.pop(f"{parameter_name}__{name}")
                    is_list = typing.get_origin(_base_type(field_hints[name])[0]) is tuple
                    if is_list and value == "":
                        value = settings_type.__dataclass_fields__[name].default
                    values[name] = value
                kwargs[parameter_name] = settings_type(**values)
            return command(**kwargs)

        del wrapper.__wrapped__  # typer must read the expanded signature, not the original
        wrapper.__signature__ = inspect.Signature(parameters, return_annotation=signature.return_annotation)
        wrapper.__annotations__ = annotations
        wrapper.settings_parameters = {name: kind for name, (kind, _) in expanded.items()}
        return wrapper

    return decorate


OVERWRITE = typer.Option(False, "--overwrite", help="Replace OUT when it holds an earlier phenolens run (never any other folder).")
RESUME = typer.Option(
    False, "--resume", help="Continue the run a crash or kill interrupted at OUT (same options), skipping its finished chunks or epochs."
)
SCHEDULER = typer.Option("serial", "--scheduler", help=SCHEDULER_HELP, metavar="serial|local:N|tcp://HOST:PORT|FILE.json")


def plain_metavar(parameter: Any) -> str | None:
    """The metavar `--help` shows for a command-line parameter that was given none.

    Parameters
    ----------
    parameter : typer parameter
        An option or argument of a built command.

    Returns
    -------
    str or None
        An argument's name in capitals (as the help texts name it: FILES, RUN), nothing for a flag, the word of
        `TYPE_METAVARS` for an option's value type, or None (typer's own label) for any other type.
    """
    if getattr(parameter, "param_type_name", "") == "argument":
        return (parameter.name or "").upper()
    if getattr(parameter, "is_flag", False):
        return ""
    annotation = getattr(getattr(parameter, "type_descriptor", None), "annotation", None)
    return TYPE_METAVARS.get(annotation)


class _PlainMetavars:
    """Gives every parameter without a metavar (the help flag, typer options written in a command) its plain one."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        for parameter in params:
            if parameter.metavar is None:
                parameter.metavar = plain_metavar(parameter)
        return params


class Command(_PlainMetavars, TyperCommand):
    """A typer command whose `--help` shows plain metavars (see `plain_metavar`)."""


class Group(_PlainMetavars, TyperGroup):
    """A typer group whose `--help` shows plain metavars (see `plain_metavar`)."""


def use_plain_metavars(app: typer.Typer) -> None:
    """Build `app`, its sub-groups and all their commands with `Command` and `Group`.

    Parameters
    ----------
    app : typer.Typer
        The root application, after its groups and commands are registered.
    """
    app.info.cls = Group
    for command in app.registered_commands:
        if command.cls in (None, TyperCommand):
            command.cls = Command
    for group in app.registered_groups:
        use_plain_metavars(group.typer_instance)
