"""Progress bars for long loops: shown on a terminal, silent when output is redirected."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate over `items` with a rich progress bar when stderr is a terminal.

    Parameters
    ----------
    items : iterable
        What to iterate over.
    description : str
        The bar's label.
    total : int, optional
        Number of items, when `items` has no length.

    Yields
    ------
    object
        The items, unchanged.
    """
    if not sys.stderr.isatty():
        yield from items
        return
    from rich.progress import track

    yield from track(items, description=description, total=total, transient=True)
