"""Checks of network hyperparameters, run before anything is allocated.

A ``model.json`` is user input: a damaged or foreign one (``n_classes: 1e9``, a string size, a list
where a number belongs) must fail with one line, not a traceback or a many-gigabyte allocation.
"""

from __future__ import annotations

from phenolens.core.errors import PhenolensError


def check_whole_number(architecture: str, name: str, value: object, low: int, high: int) -> None:
    """Refuse a hyperparameter that is not a whole number in [low, high].

    Parameters
    ----------
    architecture : str
        The network, for the message (``i-ResNet``).
    name : str
        The hyperparameter.
    value : object
        Its value.
    low, high : int
        The allowed range (inclusive).

    Raises
    ------
    PhenolensError
        Naming the architecture, the hyperparameter, its value and the range.
    """
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise PhenolensError(
            f"{architecture} {name}={value!r}: must be a whole number from {low} to {high}; the model configuration is damaged or foreign"
        )


def check_whole_numbers(architecture: str, name: str, values: object, low: int, high: int) -> None:
    """Refuse a hyperparameter that is not a non-empty list of whole numbers in [low, high].

    Parameters
    ----------
    architecture : str
        The network, for the message.
    name : str
        The hyperparameter.
    values : object
        Its value.
    low, high : int
        The allowed range of each element (inclusive).

    Raises
    ------
    PhenolensError
        Naming the architecture, the hyperparameter and the offending value.
    """
    if not isinstance(values, (list, tuple)) or not values:
        raise PhenolensError(f"{architecture} {name}={values!r}: give a non-empty list of whole numbers")
    for value in values:
        check_whole_number(architecture, name, value, low, high)
