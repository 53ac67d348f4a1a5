"""Single cells to wells: CellProfiler single-cell output aggregated to one profile per plate x well.

The input is read one plate at a time (`phenolens.data.single_cells`), so memory is bounded by
the largest plate, never by the file. Each plate is a shard: `aggregate_plate` joins the plate's
objects to its images and aggregates them with pycytominer, compartment by compartment, exactly
as ``pycytominer.cyto_utils.cells.SingleCells.aggregate_profiles`` does (each compartment's
median or mean per well, then the compartments side by side on plate and well), and counts the
cells and images of every well. Plates run on the `phenolens.core.executor.Executor` (serial or
Dask) and, in a run folder, are written as parts, so a killed run resumes from its last plate.

The result is a well-level profile table in the phenolens/pycytominer convention that
`phenolens profile run` reads directly: ``Metadata_Plate``, ``Metadata_Well``,
``Metadata_Count_Cells`` (objects of the first compartment), ``Metadata_Site_Count`` (images, SQLite
input), the well-level metadata of the input (columns constant within every well), the columns of a
plate map, then float32 features.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from phenolens.core.errors import PhenolensError
from phenolens.core.executor import Executor
from phenolens.core.logging import get_logger
from phenolens.core.progress import progress
from phenolens.data.platemaps import read_platemap
from phenolens.data.single_cells import SingleCellSource, inspect_single_cells, read_plate_cells, read_plate_images, read_plate_objects
from phenolens.profiling.settings import ProfileAggregationSettings

log = get_logger(__name__)

STRATA = ["Metadata_Plate", "Metadata_Well"]
SITE_COUNT = "Metadata_Site_Count"  # pycytominer's name for the images (fields of view) of a well
PROFILES = "profiles.parquet"
PLATE_PARTS = "plates.parts"  # per-plate parts while the run is under way (removed once profiles.parquet is written)


@dataclass(frozen=True)
class PlateShard:
    """One plate of one single-cell file: what `aggregate_plate` reads and aggregates (small, picklable).

    Attributes
    ----------
    source : SingleCellSource
        The checked file.
    plate : object
        The plate, as the file stores it.
    operation : str
        ``"median"`` or ``"mean"``.
    """

    source: SingleCellSource
    plate: object
    operation: str


def _pycytominer_aggregate(population: pd.DataFrame, features: Sequence[str], operation: str, count: bool) -> pd.DataFrame:
    from pycytominer import aggregate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return aggregate(
            population, strata=STRATA, features=list(features), operation=operation, compute_object_count=count, object_feature="ObjectNumber"
        )


def _well_metadata(frame: pd.DataFrame, candidates: Sequence[str]) -> pd.DataFrame:
    """Per well: the `candidates` that are constant within every well of `frame`, named ``Metadata_*``."""
    wells = frame.groupby(STRATA, sort=True, dropna=False)
    kept = [c for c in candidates if wells[c].nunique(dropna=False).max() <= 1] if candidates else []
    values = wells[kept].first().reset_index() if kept else wells.size().reset_index()[STRATA]
    renamed = {c: "Metadata_" + c.removeprefix("Image_Metadata_") for c in kept if c.startswith("Image_Metadata_")}
    # A column present under both names (Metadata_Row and Image_Metadata_Row) is kept once.
    duplicates = [c for c, name in renamed.items() if name in values.columns]
    return values.drop(columns=duplicates).rename(columns=renamed)


def aggregate_plate(shard: PlateShard) -> pd.DataFrame:
    """Aggregate the cells of one plate to wells (the shard function; top-level so Dask can ship it).

    Parameters
    ----------
    shard : PlateShard
        The file, the plate and the operation.

    Returns
    -------
    pandas.DataFrame
        One row per well, sorted by well: plate, well, the object count (and image count for
        SQLite), the plate's well-level metadata, then the features as float32.

    Raises
    ------
    PhenolensError
        When the plate's rows cannot be read (one line naming the file and table).
    """
    source = shard.source
    strata_names = {source.plate_column: "Metadata_Plate", source.well_column: "Metadata_Well"}
    counts_name = f"Metadata_Count_{source.compartments[0][0].title()}"
    if source.kind == "sqlite":
        from pycytominer.cyto_utils import aggregate_fields_count

        images = read_plate_images(source, shard.plate).rename(columns=strata_names)
        wells = _well_metadata(images, source.metadata)
        sites = aggregate_fields_count(images, STRATA, source.site_column or "ImageNumber")
        profiles = None
        for index, (table, features) in enumerate(source.compartments):
            objects = read_plate_objects(source, images, table, features)
            # The join of SingleCells.aggregate_compartment: objects take their image's plate and well.
            population = images[[*source.merge_columns, *STRATA]].merge(objects, on=list(source.merge_columns), how="inner")
            aggregated = _pycytominer_aggregate(population, features, shard.operation, count=index == 0)
            profiles = aggregated if profiles is None else profiles.merge(aggregated, on=STRATA, how="inner")
        profiles = sites.merge(profiles, on=STRATA, how="right").rename(columns={"Metadata_Object_Count": counts_name})
    else:
        cells = read_plate_cells(source, shard.plate).rename(columns=strata_names)
        wells = _well_metadata(cells, source.metadata)
        profiles = _pycytominer_aggregate(cells, source.features, shard.operation, count=False)
        profiles.insert(2, counts_name, cells.groupby(STRATA, sort=True, dropna=False).size().to_numpy())
    profiles = wells.merge(profiles, on=STRATA, how="right")
    leading = [*STRATA, counts_name, *([SITE_COUNT] if SITE_COUNT in profiles else [])]
    ordered = profiles[[*leading, *[c for c in wells.columns if c not in leading], *source.features]]
    ordered = ordered.astype({feature: np.float32 for feature in source.features})
    return ordered.sort_values(STRATA, kind="stable").reset_index(drop=True)


# -- planning ---------------------------------------------------------------------------------


def plan_aggregation(paths: Sequence[str | os.PathLike], settings: ProfileAggregationSettings) -> list[PlateShard]:
    """Check every input and list its plates: one shard per plate of each file, in file then plate order.

    Features are those every file has (a warning counts what was left out).

    Parameters
    ----------
    paths : sequence of path
        Single-cell files (SQLite, parquet, CSV).
    settings : ProfileAggregationSettings
        Tables, columns, compartments and operation.

    Returns
    -------
    list of PlateShard
        The shards.

    Raises
    ------
    PhenolensError
        For a bad input (see `phenolens.data.single_cells.inspect_single_cells`), no feature
        shared by every file, or a plate found in two files.
    """
    if not paths:
        raise PhenolensError("no input: give one or more single-cell files (.sqlite, .parquet, .csv)")
    sources = [
        inspect_single_cells(path, settings.compartments, settings.image_table, settings.plate_column, settings.well_column, settings.features)
        for path in paths
    ]
    common = set.intersection(*(set(source.features) for source in sources))
    if not common:
        raise PhenolensError(f"{sources[0].path} and {sources[1].path} share no feature column; aggregate them separately")
    lost = {str(source.path): len(source.features) - len(common) for source in sources if len(source.features) > len(common)}
    if lost:
        log.warning("kept the %d features every input has; left out %s", len(common), ", ".join(f"{n} of {Path(p).name}" for p, n in lost.items()))
    seen: dict[str, Path] = {}
    for source in sources:
        for plate in source.plates:
            if str(plate) in seen:
                raise PhenolensError(f"plate {plate} is in both {seen[str(plate)]} and {source.path}; give each plate's cells in one file")
            seen[str(plate)] = source.path
    return [PlateShard(source.restricted_to(common), plate, settings.operation) for source in sources for plate in source.plates]


# -- plate map ---------------------------------------------------------------------------------


def annotate_wells(profiles: pd.DataFrame, platemap: pd.DataFrame | None) -> pd.DataFrame:
    """Add the plate map's columns to well profiles (matched on plate and well, or well alone).

    Parameters
    ----------
    profiles : pandas.DataFrame
        Well profiles (``Metadata_Plate``, ``Metadata_Well``, ...), e.g. one plate's.
    platemap : pandas.DataFrame or None
        `read_platemap`'s table; None returns `profiles` unchanged.

    Returns
    -------
    pandas.DataFrame
        `profiles` with the plate map's columns after the count columns; wells the map lacks get
        empty values (a warning counts them).

    Raises
    ------
    PhenolensError
        When a plate-map column already is a column of the profiles, or a plate map without a plate
        column matches none of a plate's wells (the well names are written differently).
    """
    if platemap is None:
        return profiles
    keys = [c for c in STRATA if c in platemap]
    clash = [c for c in platemap.columns if c not in keys and c in profiles]
    if clash:
        raise PhenolensError(f"--platemap: column {clash[0]} is already in the single-cell metadata; rename or drop it in the plate map")
    matched = profiles[keys].astype(str).merge(platemap, on=keys, how="left", indicator=True)
    missing = int((matched.pop("_merge") == "left_only").sum())
    if missing == len(profiles) and keys == ["Metadata_Well"]:
        raise PhenolensError(
            f"--platemap: none of the wells of plate {profiles['Metadata_Plate'].iloc[0]} (e.g. {profiles['Metadata_Well'].iloc[0]}) "
            f"is in the plate map (e.g. {platemap['Metadata_Well'].iloc[0]}); write the wells the same way"
        )
    if missing:
        log.warning(
            "plate %s: %d of %d wells are not in the plate map; their plate-map columns are empty",
            profiles["Metadata_Plate"].iloc[0],
            missing,
            len(profiles),
        )
    added = [c for c in platemap.columns if c not in keys]
    features_at = next((i for i, c in enumerate(profiles.columns) if not c.startswith("Metadata_")), len(profiles.columns))
    annotated = profiles.copy()
    for offset, column in enumerate(added):
        annotated.insert(features_at + offset, column, matched[column].to_numpy())
    return annotated


# -- in memory and into a run folder ------------------------------------------------------------


def _shared_columns(column_lists: Sequence[Sequence[str]]) -> list[str]:
    """Columns of the first list that every list has (a metadata column constant on one plate only is dropped)."""
    shared = set.intersection(*(set(columns) for columns in column_lists))
    return [c for c in column_lists[0] if c in shared]


def aggregate_cells(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    settings: ProfileAggregationSettings | None = None,
    platemap: str | os.PathLike | None = None,
    scheduler: str = "serial",
) -> pd.DataFrame:
    """Aggregate CellProfiler single cells to one profile per plate x well, in memory.

    Plates are read and aggregated one at a time (on Dask with ``scheduler="local:N"`` etc.); only
    the well-level result is kept. Use `aggregate_cells_into` (or ``phenolens profile aggregate``)
    to write a resumable run folder instead.

    Parameters
    ----------
    paths : path or sequence of paths
        SQLite (cytominer-database), parquet (CytoTable) or CSV single-cell files.
    settings : ProfileAggregationSettings, optional
        Operation, compartments, tables and columns (default settings when None).
    platemap : path, optional
        A plate map whose columns are added to the wells (see `read_platemap`).
    scheduler : str
        ``serial``, ``local:N``, ``tcp://HOST:PORT`` or a scheduler file.

    Returns
    -------
    pandas.DataFrame
        The well profiles; ``Metadata_*`` columns then float32 features.

    Raises
    ------
    PhenolensError
        For a bad input file, plate map or scheduler (one line naming it).

    Examples
    --------
    >>> wells = aggregate_cells("plate1.sqlite")  # doctest: +SKIP
    >>> wells[["Metadata_Plate", "Metadata_Well", "Metadata_Count_Cells"]].head()  # doctest: +SKIP
    """
    settings = settings or ProfileAggregationSettings()
    shards = plan_aggregation([paths] if isinstance(paths, (str, os.PathLike)) else list(paths), settings)
    plates = read_platemap(platemap) if platemap is not None else None
    with Executor.from_option(scheduler) as executor:
        frames = [frame for _, frame in executor.map(aggregate_plate, shards)]
    columns = _shared_columns([list(frame.columns) for frame in frames])
    return pd.concat([annotate_wells(frame[columns], plates) for frame in frames], ignore_index=True)


@dataclass
class AggregationSummary:
    """What `aggregate_cells_into` did: per-plate counts and the run's metrics.

    Attributes
    ----------
    plates : pandas.DataFrame
        One row per plate: source file, wells, cells, cells per well (min, median, max).
    cells_per_well : dict of str to numpy.ndarray
        Every well's cell count, per plate (for the report's distribution).
    metrics : dict
        JSON-ready: cells, wells, plates, features, cells per well, seconds, cells per second,
        operation, scheduler, plates resumed.
    """

    plates: pd.DataFrame
    cells_per_well: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


def aggregate_cells_into(run, shards: Sequence[PlateShard], executor: Executor, platemap: pd.DataFrame | None = None) -> AggregationSummary:
    """Aggregate single cells plate by plate into a run folder: resumable parts, then one ``profiles.parquet``.

    Each finished plate is written as a part (``plates.parts/``) as soon as it is done; a resumed
    run (``RunWriter(..., resume=True)``) skips the plates whose parts exist. Once every plate is
    done the parts are streamed, one at a time, into ``profiles.parquet`` (well level, the input of
    ``phenolens profile run``) and removed.

    Parameters
    ----------
    run : phenolens.core.runs.RunWriter
        An entered run writer.
    shards : sequence of PlateShard
        `plan_aggregation` of the inputs (checked before any work starts).
    executor : Executor
        Where plates run (serial or Dask).
    platemap : pandas.DataFrame, optional
        `read_platemap` of a plate map whose columns are added to the wells.

    Returns
    -------
    AggregationSummary
        Per-plate counts and metrics (the caller writes them as ``metrics.json`` and the report).

    Raises
    ------
    PhenolensError
        For a plate that cannot be read, a plate map that matches no well, or a metadata column
        whose type differs between plates.
    """
    started = time.perf_counter()
    store = run.parts(PLATE_PARTS)
    done = store.completed()
    todo = len(shards) - len(done & set(range(len(shards))))
    if done:
        log.info("resuming: %d of %d plates already aggregated", len(shards) - todo, len(shards))
    for index, frame in progress(executor.map(aggregate_plate, shards, skip=done), "aggregating plates", total=todo):
        store.write_table(index, frame)
        log.info("plate %s: %d wells, %d objects", shards[index].plate, len(frame), int(frame[_count_of(frame.columns)].sum()))
    parts = [store.part_path(index) for index in range(len(shards))]
    summary = _write_profiles(run.file(PROFILES), parts, shards, platemap)
    shutil.rmtree(store.folder)
    seconds = time.perf_counter() - started
    counts = np.concatenate(list(summary.cells_per_well.values()))
    summary.metrics = {
        "cells": int(counts.sum()),
        "wells": int(len(counts)),
        "plates": len(shards),
        "files": len({shard.source.path for shard in shards}),
        "features": len(shards[0].source.features),
        "operation": shards[0].operation,
        "cells_per_well": {"min": int(counts.min()), "median": float(np.median(counts)), "max": int(counts.max())},
        "seconds": round(seconds, 3),
        "cells_per_second": float(counts.sum() / seconds) if seconds > 0 else None,
        "scheduler": executor.description,
        "plates_resumed": len(shards) - todo,
        "per_plate": summary.plates.to_dict(orient="records"),
    }
    return summary


def _write_profiles(target: Path, parts: Sequence[Path], shards: Sequence[PlateShard], platemap: pd.DataFrame | None) -> AggregationSummary:
    """Stream the per-plate parts into one parquet file (one part in memory at a time); count cells per plate."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = _shared_columns([pq.read_schema(part).names for part in parts])
    count = _count_of(columns)
    schema = pa.unify_schemas([pq.read_schema(part) for part in parts], promote_options="permissive")
    schema = pa.schema([schema.field(c) for c in columns])
    # The plate map's columns are text on every plate, also on a plate none of whose wells it lists (all empty there).
    mapped = pa.Schema.from_pandas(platemap, preserve_index=False) if platemap is not None else pa.schema([])
    rows, counts, writer = [], {}, None
    try:
        for part, shard in zip(parts, shards):
            wells = annotate_wells(pd.read_parquet(part, columns=columns), platemap)
            try:
                table = pa.Table.from_pandas(wells, preserve_index=False)
                table = table.cast(pa.schema([_field_of(c, schema, mapped, table.schema) for c in table.column_names]))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                raise PhenolensError(
                    f"{shard.source.path}: plate {shard.plate}: a metadata column has another type than on other plates ({error})"
                ) from None
            writer = writer or pq.ParquetWriter(target, table.schema)
            writer.write_table(table)
            per_well = wells[count].to_numpy()
            counts[str(shard.plate)] = per_well
            spread = {"min": per_well.min(), "median": np.median(per_well), "max": per_well.max()} if len(per_well) else {}
            rows.append(
                {"plate": str(shard.plate), "source": shard.source.path.name, "wells": len(wells), "cells": int(per_well.sum())}
                | {f"cells_per_well_{key}": float(value) for key, value in spread.items()}
            )
    finally:
        if writer is not None:
            writer.close()
    if not any(len(c) for c in counts.values()):
        raise PhenolensError(f"{shards[0].source.path}: no object belongs to an image of the Image table; check TableNumber and ImageNumber")
    return AggregationSummary(pd.DataFrame(rows), counts)


def _field_of(column: str, *schemas):
    """The field of `column` in the first of `schemas` that has it."""
    return next(schema.field(column) for schema in schemas if column in schema.names)


def _count_of(columns: Sequence[str]) -> str:
    """The object-count column of a well table (``Metadata_Count_<compartment>``)."""
    return next(c for c in columns if c.startswith("Metadata_Count_"))
