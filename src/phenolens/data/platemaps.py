"""Plate maps: what each well of a plate holds (treatment, control type, ...), as a table keyed by well.

A plate map is a CSV or TSV file with a well column (``Metadata_Well``, or ``well_position`` as in the
JUMP plate maps), optionally a plate column, and any annotations. `phenolens profile aggregate
--platemap` adds its columns to the well profiles.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from phenolens.core.errors import PhenolensError

PLATEMAP_PLATE = ("Metadata_Plate", "plate", "Plate")
PLATEMAP_WELL = ("Metadata_Well", "well_position", "Metadata_well_position", "Well", "well")


def read_platemap(path: str | os.PathLike) -> pd.DataFrame:
    """Read a plate map (CSV or TSV): a well column, optionally a plate column, and well annotations.

    Columns are read as text and prefixed ``Metadata_`` where they are not already, so they stay
    metadata in `profile run`. The well column is ``Metadata_Well`` or ``well_position`` (JUMP);
    with a ``Metadata_Plate``/``plate`` column the map is matched on plate and well, without one
    the same layout applies to every plate.

    Parameters
    ----------
    path : path
        The plate map.

    Returns
    -------
    pandas.DataFrame
        ``Metadata_Well`` (and ``Metadata_Plate``) plus the annotations.

    Raises
    ------
    PhenolensError
        When the file is unreadable or empty, has no well column, or lists a well twice.
    """
    path = Path(path)
    try:
        table = pd.read_csv(path, sep=None, engine="python", dtype=str)
    except FileNotFoundError:
        raise PhenolensError(f"{path}: plate map not found; check --platemap") from None
    except Exception as error:  # noqa: BLE001 - pandas raises many types for a damaged file
        raise PhenolensError(f"{path}: cannot read the plate map ({type(error).__name__}); give a CSV or TSV file") from None
    if table.empty:
        raise PhenolensError(f"{path}: the plate map has no rows")
    well = next((c for c in PLATEMAP_WELL if c in table), None)
    if well is None:
        raise PhenolensError(f"{path}: no well column ({' or '.join(PLATEMAP_WELL)}) in the plate map; it has {', '.join(table.columns[:8])}")
    plate = next((c for c in PLATEMAP_PLATE if c in table), None)
    renamed = {c: c if c.startswith("Metadata_") else f"Metadata_{c}" for c in table.columns}
    renamed[well] = "Metadata_Well"
    if plate is not None:
        renamed[plate] = "Metadata_Plate"
    table = table.rename(columns=renamed)
    keys = [c for c in ("Metadata_Plate", "Metadata_Well") if c in table]
    duplicated = table.duplicated(keys)
    if duplicated.any():
        raise PhenolensError(f"{path}: the plate map lists {' '.join(table.loc[duplicated, keys].iloc[0])} twice; give each well once")
    return table
