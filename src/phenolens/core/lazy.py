"""Packages whose names load on first use.

The command line is built from settings classes; importing a package's settings must not import
torch, Captum or scikit-learn, which take seconds. A package lists its public names with the module
that defines each, and `lazy_exports` gives it the module-level ``__getattr__`` and ``__dir__``
(PEP 562) that import a name's module when the name is first read.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str | tuple[str, str]]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module ``__getattr__`` and ``__dir__`` that import each exported name from its module on first use.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    exports : mapping of str to str or (str, str)
        Public name -> the sub-module (relative to `package`) that defines it under that name, or
        (absolute module, attribute) for a name that re-exports another's under a new name.

    Returns
    -------
    tuple of callable
        ``(__getattr__, __dir__)`` to assign at the package's top level.

    Examples
    --------
    >>> __getattr__, __dir__ = lazy_exports(__name__, {"fit_classifier": "fitting"})  # doctest: +SKIP
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        where = exports[name]
        module, attribute = (f"{package}.{where}", name) if isinstance(where, str) else where
        return getattr(importlib.import_module(module), attribute)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
