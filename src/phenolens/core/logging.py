"""Package logger: quiet by default, `PHENOLENS_LOG=DEBUG` or the CLI's --debug turn it up."""

from __future__ import annotations

import logging
import os

_ROOT = "phenolens"


def get_logger(name: str) -> logging.Logger:
    """Return the logger for a phenolens module (pass `__name__`).

    Parameters
    ----------
    name : str
        A module name; names outside ``phenolens`` are put under it.

    Returns
    -------
    logging.Logger
        A child of the ``phenolens`` logger, whose level comes from ``PHENOLENS_LOG`` (default WARNING).
    """
    root = logging.getLogger(_ROOT)
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(os.environ.get("PHENOLENS_LOG", "WARNING").upper())
    return logging.getLogger(name if name.startswith(_ROOT) else f"{_ROOT}.{name}")


def set_level(level: str | int) -> None:
    """Set the verbosity of every phenolens logger.

    Parameters
    ----------
    level : str or int
        A `logging` level name (``"DEBUG"``) or number.
    """
    get_logger(_ROOT).setLevel(level)
    logging.getLogger(_ROOT).setLevel(level)
