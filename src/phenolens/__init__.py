"""phenolens: interpret deep networks on scientific measurements.

Subpackages load on first use (``phenolens.profiling`` etc.) so that ``import phenolens`` and the
command line start quickly.
"""

from __future__ import annotations

import importlib

from phenolens.core.errors import PhenolensError

__version__ = "0.1.0"

_SUBPACKAGES = {"core", "data", "nn", "training", "profiling", "explain", "echoes", "report", "cli", "images"}


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"phenolens.{name}")
    raise AttributeError(f"module 'phenolens' has no attribute {name!r}")


def load_run(path):
    """Read a finished run folder back (see `phenolens.core.runs.load_run`)."""
    from phenolens.core.runs import load_run as _load_run

    return _load_run(path)


__all__ = ["PhenolensError", "__version__", "load_run", *sorted(_SUBPACKAGES)]
