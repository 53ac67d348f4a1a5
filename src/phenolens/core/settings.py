"""Settings objects: one frozen, validated dataclass per pipeline step, shared by the API and the CLI.

A settings class is a frozen dataclass whose fields are declared with `setting(...)`. The field
metadata (help text, allowed values, bounds) is the single source of truth: construction checks
every value against it and raises `PhenolensError` naming the field (and its CLI option) before any
work starts, and `phenolens.cli.options` builds the command-line options from the same fields, so a
default exists exactly once.

Example
-------
>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class SmoothingSettings(Settings):
...     window: int = setting(5, "Window length in samples.", minimum=1)
>>> SmoothingSettings(window=3).window
3
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self

from phenolens.core.errors import PhenolensError

_REGISTRY: dict[str, type[Settings]] = {}


def setting(
    default: Any,
    help: str,
    *,
    choices: Sequence[Any] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    option: str | None = None,
    cli: bool = True,
) -> Any:
    """Declare one field of a `Settings` class.

    Parameters
    ----------
    default : Any
        The default value; the only place it is written. Lists are stored as tuples.
    help : str
        One sentence for `--help` and the API reference.
    choices : sequence, optional
        Allowed values (for strings: the words a user may type).
    minimum, maximum : float, optional
        Bounds for numbers (each element of a tuple of numbers is checked).
    exclusive_minimum : bool
        The value must be strictly greater than `minimum`.
    option : str, optional
        The command-line option name (default: ``--field-name``).
    cli : bool
        False keeps the field out of the command line (API-only tuning knobs).

    Returns
    -------
    dataclasses.Field
        A field carrying the metadata that validation and the CLI read.
    """
    if isinstance(default, list):
        default = tuple(default)
    metadata = {
        "help": help,
        "choices": None if choices is None else tuple(choices),
        "minimum": minimum,
        "maximum": maximum,
        "exclusive_minimum": exclusive_minimum,
        "option": option,
        "cli": cli,
    }
    return dataclasses.field(default=default, metadata=metadata)


def option_name(field: dataclasses.Field) -> str:
    """The command-line option of a settings field (``--stem-stride`` for ``stem_stride``).

    Parameters
    ----------
    field : dataclasses.Field
        A field declared with `setting`.

    Returns
    -------
    str
        Its ``option=`` if given, else ``--`` and the field name with dashes.
    """
    return field.metadata.get("option") or "--" + field.name.replace("_", "-")


@functools.cache
def field_types(settings_type: type) -> dict[str, Any]:
    """The resolved annotation of every field of a settings class (computed once per class)."""
    return typing.get_type_hints(settings_type)


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(type without None, whether None is allowed) for a resolved annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (members[0] if len(members) == 1 else annotation), True
    return annotation, False


class Settings:
    """Base of every settings class: validation on construction, dict round trip, a registry by name.

    Subclasses are ``@dataclass(frozen=True)`` with fields declared by `setting`. Override `check`
    for rules that involve several fields (raise `PhenolensError` through `self.fail`).
    """

    step: ClassVar[str] = ""  # what the settings configure, for messages and run.json

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__name__ in _REGISTRY and _REGISTRY[cls.__name__].__module__ != cls.__module__:
            raise TypeError(f"two settings classes are named {cls.__name__}: settings names must be unique")
        if not cls.__name__.endswith("Settings"):
            raise TypeError(f"{cls.__name__}: settings class names end in 'Settings'")
        _REGISTRY[cls.__name__] = cls

    def __post_init__(self) -> None:
        hints = field_types(type(self))
        for field in dataclasses.fields(self):
            value = self._coerced(field, hints[field.name], getattr(self, field.name))
            object.__setattr__(self, field.name, value)
        self.check()

    # -- validation --------------------------------------------------------------------------

    def fail(self, field_name: str, problem: str) -> None:
        """Raise the one-line error for a bad value of `field_name`.

        Parameters
        ----------
        field_name : str
            The field whose value is wrong (the message names it and its option).
        problem : str
            What is wrong and what to do, e.g. ``"must be below --size"``.

        Raises
        ------
        PhenolensError
            Always.
        """
        field = next(f for f in dataclasses.fields(self) if f.name == field_name)
        where = f"{type(self).__name__}.{field_name}"
        if field.metadata.get("cli", True):
            where += f" ({option_name(field)})"
        raise PhenolensError(f"{where} = {getattr(self, field_name)!r}: {problem}")

    def check(self) -> None:
        """Cross-field rules; the base class has none.

        Subclasses override it and call `fail` on the first violated rule; it runs after every
        field has been validated on its own.
        """

    def _coerced(self, field: dataclasses.Field, annotation: Any, value: Any) -> Any:
        base, optional = _base_type(annotation)
        if value is None:
            if optional:
                return None
            self._bad(field, value, "must be given")
        if typing.get_origin(base) is tuple:
            element = typing.get_args(base)[0]
            if isinstance(value, str):
                value = [v for v in value.split(",") if v.strip()]
            if not isinstance(value, Sequence):
                self._bad(field, value, "must be a comma-separated list")
            value = tuple(self._scalar(field, element, v) for v in value)
            for v in value:
                self._check_bounds(field, v)
            return value
        value = self._scalar(field, base, value)
        self._check_bounds(field, value)
        return value

    def _scalar(self, field: dataclasses.Field, kind: Any, value: Any) -> Any:
        if kind is bool:
            if isinstance(value, bool):
                return value
            self._bad(field, value, "must be true or false")
        if kind is int:
            if isinstance(value, bool):
                self._bad(field, value, "must be a whole number")
            if isinstance(value, str):
                value = value.strip()
            try:
                number = float(value)
            except (TypeError, ValueError):
                self._bad(field, value, "must be a whole number")
            if not math.isfinite(number) or number != int(number):
                self._bad(field, value, "must be a whole number")
            return int(number)
        if kind is float:
            try:
                number = float(value)
            except (TypeError, ValueError):
                self._bad(field, value, "must be a number")
            if isinstance(value, bool) or not math.isfinite(number):
                self._bad(field, value, "must be a finite number")
            return number
        if kind is str:
            if not isinstance(value, str):
                self._bad(field, value, "must be text")
            choices = field.metadata.get("choices")
            if choices is not None and value not in choices:
                self._bad(field, value, f"choose one of {', '.join(map(str, choices))}")
            return value
        return value

    def _check_bounds(self, field: dataclasses.Field, value: Any) -> None:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return
        minimum, maximum = field.metadata.get("minimum"), field.metadata.get("maximum")
        exclusive = field.metadata.get("exclusive_minimum")
        if minimum is not None and (value <= minimum if exclusive else value < minimum):
            self._bad(field, value, f"must be {'>' if exclusive else '>='} {minimum:g}")
        if maximum is not None and value > maximum:
            self._bad(field, value, f"must be <= {maximum:g}")
        choices = field.metadata.get("choices")
        if choices is not None and value not in choices:
            self._bad(field, value, f"choose one of {', '.join(map(str, choices))}")

    def _bad(self, field: dataclasses.Field, value: Any, problem: str) -> typing.NoReturn:
        where = f"{type(self).__name__}.{field.name}"
        if field.metadata.get("cli", True):
            where += f" ({option_name(field)})"
        raise PhenolensError(f"{where} = {value!r}: {problem}")

    # -- round trip --------------------------------------------------------------------------

    def replace(self, **changes: Any) -> Self:
        """A copy with `changes` applied (validated like a new object).

        Parameters
        ----------
        **changes
            New values by field name.

        Returns
        -------
        Settings
            A new object of the same class.

        Raises
        ------
        PhenolensError
            When a new value is invalid.
        """
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (tuples become lists).

        Returns
        -------
        dict
            Field name -> value; `from_dict` rebuilds the object from it.
        """
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "settings") -> Self:
        """Rebuild from `to_dict` output; unknown keys are an error naming `source`.

        Parameters
        ----------
        values : Mapping
            Field name -> value; missing fields take their defaults.
        source : str
            Where the values come from (a file name), for error messages.

        Returns
        -------
        Settings
            The validated object.

        Raises
        ------
        PhenolensError
            For values that are not a mapping, an unknown field or an invalid value (each naming `source`).
        """
        if not isinstance(values, Mapping):
            raise PhenolensError(f"{source}: the {cls.__name__} must be a JSON object, got {type(values).__name__}; restore the file")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise PhenolensError(f"{source}: {cls.__name__} has no setting {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        try:
            return cls(**values)
        except PhenolensError as error:
            raise PhenolensError(f"{source}: {error}") from None

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """Field name -> help text (for documentation).

        Returns
        -------
        dict of str to str
            The ``help`` of every field, in declaration order.
        """
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def settings_class(name: str) -> type[Settings]:
    """The settings class registered under `name` (as run.json records it).

    Parameters
    ----------
    name : str
        A class name such as ``"ImageTrainingSettings"``.

    Returns
    -------
    type of Settings
        The class (its module must have been imported).

    Raises
    ------
    PhenolensError
        When no imported settings class has that name (the message lists the known ones).
    """
    if name not in _REGISTRY:
        raise PhenolensError(f"unknown settings {name!r}; this phenolens knows {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def registered_settings() -> dict[str, type[Settings]]:
    """Every settings class imported so far, by name.

    Returns
    -------
    dict of str to type
        Class name -> class (a copy; changing it changes nothing).
    """
    return dict(_REGISTRY)
