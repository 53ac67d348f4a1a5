"""The canonical order of wells: by what identifies them, never by where they sit in the table.

Seeded draws over wells (the percent-replicating null, the control split) walk the wells in this order, so the
same plate exported with its rows in another order gives the same numbers at the same seed. A well is identified
by its plate and well names (names are identity, as treatment names are); wells that share both (a well measured
twice, or a table without a well column) are told apart by their content, so two wells that tie on every key are
the same numbers and either order draws the same. A table already sorted by plate and well (BBBC021, the
synthetic screens) is in canonical order: its draws are those of table order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from phenolens.data.platemaps import PLATEMAP_WELL


def content_keys(values: np.ndarray) -> np.ndarray:
    """A hash of every row's values rounded to float32 (the tie-breaker of wells that share plate and well).

    Rounded to float32 so that rows kept as float32 (a streamed study's unit rows) and the same rows in
    float64 hash alike.

    Parameters
    ----------
    values : numpy.ndarray
        (wells, features).

    Returns
    -------
    numpy.ndarray
        uint64 key of every row; equal rows have equal keys.
    """
    rounded = pd.DataFrame(np.asarray(values, dtype=np.float32))
    return pd.util.hash_pandas_object(rounded, index=False).to_numpy()


def well_names(frame: pd.DataFrame) -> np.ndarray | None:
    """The well name of every row (the first of `PLATEMAP_WELL`'s columns the table has), as str; None without one.

    Parameters
    ----------
    frame : pandas.DataFrame
        A profile table.

    Returns
    -------
    numpy.ndarray or None
        Well names, or None when the table has no well column.
    """
    column = next((c for c in PLATEMAP_WELL if c in frame), None)
    return None if column is None else frame[column].astype(str).to_numpy()


def well_ranks(plates, wells: np.ndarray | None, contents: np.ndarray) -> np.ndarray:
    """Rank of every well in the canonical order: by plate name, then well name, then content.

    Parameters
    ----------
    plates : sequence
        Plate of every well (compared as str).
    wells : numpy.ndarray or None
        Well name of every well (`well_names`), or None when the table has none.
    contents : numpy.ndarray
        Content key of every well (`content_keys`).

    Returns
    -------
    numpy.ndarray
        int64 rank of every well (0 = first); a table sorted by plate and well (and content) gets 0, 1, 2, ...
    """
    keys = [np.asarray(contents)]
    if wells is not None:
        keys.append(pd.factorize(np.asarray(wells).astype(str), sort=True)[0])
    keys.append(pd.factorize(np.asarray(plates).astype(str), sort=True)[0])
    order = np.lexsort(keys)  # the last key sorts first; stable, so wells equal on every key keep table order
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(len(order))
    return ranks


def frame_ranks(frame: pd.DataFrame, plate: str, values: np.ndarray) -> np.ndarray:
    """`well_ranks` of a table's rows, told apart by `values` where plate and well tie.

    Parameters
    ----------
    frame : pandas.DataFrame
        The table (plate and, when it has one, well column).
    plate : str
        Plate column.
    values : numpy.ndarray
        (rows, features) of the table's rows, for `content_keys`.

    Returns
    -------
    numpy.ndarray
        int64 rank of every row.
    """
    return well_ranks(frame[plate].to_numpy(), well_names(frame), content_keys(values))
