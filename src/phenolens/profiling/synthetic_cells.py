"""Synthetic CellProfiler single-cell output with known well medians, for tests and benchmarks (never for results).

Every well has a true value per feature; its cells are that value plus offsets that come in
pairs ``+d, -d`` around one cell at exactly the true value, so each well holds an odd number of
cells whose median *and* mean are the true value. The cells are spread over the well's images
(sites) in random order, and every cell has a cytoplasm and a nucleus with the same object
number, linked as CellProfiler and cytominer-database link them.

Two layouts are written:

- `write_cytominer_sqlite`: the SQLite schema cytominer-database writes: tables ``Image``
  (``TableNumber``, ``ImageNumber``, ``Metadata_Plate``, ``Metadata_Well``, ``Metadata_Site``,
  ``Metadata_Row`` as in the JUMP backends, or ``Image_Metadata_*`` as CellProfiler's own export
  names them; ``Image_Count_Cells``, ``Image_FileName_DNA``),
  ``Cells``, ``Cytoplasm`` and ``Nuclei`` (``TableNumber``, ``ImageNumber``, ``ObjectNumber``,
  ``Cytoplasm_Parent_Cells``, ``Cytoplasm_Parent_Nuclei``, then ``<Compartment>_*`` features);
- `write_cytotable_parquet`: one joined single-cell table as CytoTable writes it
  (``Metadata_ImageNumber``, ``Image_Metadata_Plate``, ``Image_Metadata_Well``, ...,
  ``Metadata_ObjectNumber``, then the features of every compartment).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from phenolens.core.seeding import numpy_rng

COMPARTMENTS = ("Cells", "Cytoplasm", "Nuclei")
FEATURE_KINDS = ("AreaShape_Area", "Intensity_MeanIntensity_DNA", "Texture_Contrast_RNA", "Granularity_1_Mito", "RadialDistribution_FracAtD_ER")


@dataclass(frozen=True)
class SingleCellDesign:
    """The shape of a synthetic single-cell screen.

    Attributes
    ----------
    plates : int
        Plates (each becomes one cytominer-database table number).
    wells_per_plate : int
        Wells per plate, named A01, A02, ... row by row (12 per row).
    sites_per_well : int
        Images per well.
    cells_per_well : tuple of (int, int)
        Smallest and largest cell count of a well; each well gets an odd count in this range.
    features_per_compartment : int
        Features of each of Cells, Cytoplasm, Nuclei.
    image_metadata_prefix : str
        Prefix of the Image table's metadata columns: ``"Metadata_"`` (cytominer-database on the
        JUMP backends) or ``"Image_Metadata_"`` (CellProfiler's ExportToDatabase).
    seed : int
        Seed of every draw.
    """

    plates: int = 2
    wells_per_plate: int = 6
    sites_per_well: int = 2
    cells_per_well: tuple[int, int] = (5, 15)
    features_per_compartment: int = 3
    image_metadata_prefix: str = "Metadata_"
    seed: int = 0

    @property
    def feature_names(self) -> list[str]:
        """Every feature, compartment by compartment, named like CellProfiler's."""
        kinds = [f"{FEATURE_KINDS[i % len(FEATURE_KINDS)]}_{i // len(FEATURE_KINDS)}" for i in range(self.features_per_compartment)]
        return [f"{compartment}_{kind}" for compartment in COMPARTMENTS for kind in kinds]

    def plate_name(self, plate: int) -> str:
        """The barcode of plate number `plate`."""
        return f"SQ{plate:05d}"


def _well_name(index: int) -> str:
    return f"{chr(ord('A') + index // 12)}{index % 12 + 1:02d}"


def true_well_values(design: SingleCellDesign) -> pd.DataFrame:
    """The known answer: one row per plate x well with its cell count and the true (median = mean) features.

    Parameters
    ----------
    design : SingleCellDesign
        The screen.

    Returns
    -------
    pandas.DataFrame
        ``Metadata_Plate``, ``Metadata_Well``, ``Metadata_Row``, ``Metadata_Count_Cells``, then the
        features (float64), sorted by plate and well.
    """
    rng = numpy_rng(design.seed)
    n_wells = design.plates * design.wells_per_plate
    low, high = design.cells_per_well
    pairs = rng.integers(max(low - 1, 0) // 2, max(high - 1, 0) // 2 + 1, size=n_wells)
    features = design.feature_names
    values = rng.normal(size=(n_wells, len(features))) + 5.0 * rng.normal(size=len(features))
    wells = [_well_name(w) for w in range(design.wells_per_plate)] * design.plates
    metadata = pd.DataFrame(
        {
            "Metadata_Plate": np.repeat([design.plate_name(p) for p in range(design.plates)], design.wells_per_plate),
            "Metadata_Well": wells,
            "Metadata_Row": [w[0] for w in wells],
            "Metadata_Count_Cells": 2 * pairs + 1,
        }
    )
    return pd.concat([metadata, pd.DataFrame(values, columns=features)], axis=1)


def _plate_seed(design: SingleCellDesign, plate: int) -> np.random.Generator:
    return numpy_rng(np.random.SeedSequence([design.seed, 1 + plate]))


def plate_tables(design: SingleCellDesign, truth: pd.DataFrame, plate: int) -> dict[str, pd.DataFrame]:
    """The cytominer-database tables (Image, Cells, Cytoplasm, Nuclei) of one plate.

    Parameters
    ----------
    design : SingleCellDesign
        The screen.
    truth : pandas.DataFrame
        `true_well_values` of the design.
    plate : int
        The plate number.

    Returns
    -------
    dict of str to pandas.DataFrame
        ``"Image"`` and one table per compartment, as cytominer-database writes them.
    """
    rng = _plate_seed(design, plate)
    name = design.plate_name(plate)
    wells = truth[truth["Metadata_Plate"] == name]
    features = design.feature_names
    table_number = hashlib.md5(name.encode()).hexdigest()  # cytominer-database numbers a table by a hash of its source
    counts = wells["Metadata_Count_Cells"].to_numpy()
    n_cells = int(counts.sum())
    well_of_cell = np.repeat(np.arange(len(wells)), counts)
    # Offsets +d, -d in pairs and one 0 per well: the well's median and mean are exactly its true value.
    offsets = np.zeros((n_cells, len(features)))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    for start, count in zip(starts, counts):
        half = (count - 1) // 2
        spread = np.abs(rng.normal(size=(half, len(features)))) + 0.1
        block = np.concatenate([spread, -spread, np.zeros((1, len(features)))])
        offsets[start : start + count] = block[rng.permutation(count)]
    values = wells[features].to_numpy()[well_of_cell] + offsets
    site = rng.integers(0, design.sites_per_well, size=n_cells)
    image_number = 1 + well_of_cell * design.sites_per_well + site
    order = np.lexsort((np.arange(n_cells), image_number))
    image_number, values = image_number[order], values[order]
    object_number = 1 + np.arange(n_cells) - np.searchsorted(image_number, image_number)
    images = pd.DataFrame(
        {
            "TableNumber": table_number,
            "ImageNumber": np.arange(1, len(wells) * design.sites_per_well + 1),
            "Plate": name,
            "Well": np.repeat(wells["Metadata_Well"].to_numpy(), design.sites_per_well),
            "Site": np.tile(np.arange(1, design.sites_per_well + 1), len(wells)),
            "Row": np.repeat(wells["Metadata_Row"].to_numpy(), design.sites_per_well),
        }
    )
    images["Image_Count_Cells"] = np.bincount(image_number, minlength=len(images) + 1)[1:]
    images["Image_FileName_DNA"] = [f"{name}_{w}_s{s}_DNA.tiff" for w, s in zip(images["Well"], images["Site"])]
    images = images.rename(columns={key: design.image_metadata_prefix + key for key in ("Plate", "Well", "Site", "Row")})
    tables = {"Image": images}
    per_compartment = len(features) // len(COMPARTMENTS)
    for index, compartment in enumerate(COMPARTMENTS):
        links = {"TableNumber": table_number, "ImageNumber": image_number, "ObjectNumber": object_number}
        if compartment == "Cytoplasm":
            links |= {"Cytoplasm_Parent_Cells": object_number, "Cytoplasm_Parent_Nuclei": object_number}
        block = values[:, index * per_compartment : (index + 1) * per_compartment]
        tables[compartment] = pd.concat(
            [pd.DataFrame(links), pd.DataFrame(block, columns=features[index * per_compartment : (index + 1) * per_compartment])], axis=1
        )
    return tables


def _plates(design: SingleCellDesign, truth: pd.DataFrame) -> Iterator[dict[str, pd.DataFrame]]:
    for plate in range(design.plates):
        yield plate_tables(design, truth, plate)


def write_cytominer_sqlite(path: str | os.PathLike, design: SingleCellDesign) -> pd.DataFrame:
    """Write the screen as one SQLite file in the cytominer-database schema, one plate at a time.

    Parameters
    ----------
    path : path
        The new ``.sqlite`` file (replaced if it exists).
    design : SingleCellDesign
        The screen.

    Returns
    -------
    pandas.DataFrame
        `true_well_values` of the design (the known aggregate).
    """
    path = Path(path)
    path.unlink(missing_ok=True)
    truth = true_well_values(design)
    with sqlite3.connect(path) as connection:
        for tables in _plates(design, truth):
            for name, table in tables.items():
                table.to_sql(name, connection, if_exists="append", index=False, chunksize=10_000)
    connection.close()
    return truth


def joined_cells(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One plate's compartments joined per cell, named as CytoTable's cellprofiler_sqlite preset names them.

    Parameters
    ----------
    tables : dict of str to pandas.DataFrame
        `plate_tables` of one plate.

    Returns
    -------
    pandas.DataFrame
        One row per cell: ``Metadata_TableNumber``, ``Metadata_ImageNumber``, ``Image_Metadata_*``,
        ``Metadata_ObjectNumber``, ``Metadata_Cytoplasm_Parent_*``, then every compartment's features.
    """
    images = tables["Image"].rename(
        columns={"TableNumber": "Metadata_TableNumber", "ImageNumber": "Metadata_ImageNumber"}
        | {c: "Image_" + c for c in tables["Image"].columns if c.startswith("Metadata_")}
    )
    keys = ["Metadata_TableNumber", "Metadata_ImageNumber", "Metadata_ObjectNumber"]
    renamed = {
        name: tables[name].rename(
            columns={"TableNumber": keys[0], "ImageNumber": keys[1], "ObjectNumber": keys[2]}
            | {c: f"Metadata_{c}" for c in tables[name].columns if "_Parent_" in c}
        )
        for name in COMPARTMENTS
    }
    joined = renamed["Cytoplasm"].merge(renamed["Cells"], on=keys).merge(renamed["Nuclei"], on=keys)
    return images.drop(columns=["Image_Count_Cells"]).merge(joined, on=keys[:2])


def write_cytotable_parquet(path: str | os.PathLike, design: SingleCellDesign) -> pd.DataFrame:
    """Write the screen as one joined single-cell parquet file, as CytoTable writes it (a row group per plate).

    Parameters
    ----------
    path : path
        The new ``.parquet`` file.
    design : SingleCellDesign
        The screen.

    Returns
    -------
    pandas.DataFrame
        `true_well_values` of the design (the known aggregate).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    truth = true_well_values(design)
    writer = None
    try:
        for tables in _plates(design, truth):
            table = pa.Table.from_pandas(joined_cells(tables), preserve_index=False)
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    return truth
