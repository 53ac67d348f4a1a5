"""A study's profile files as shards, and the first pass over them: what each file holds, reduced.

A study is one or more profile files (csv, csv.gz, tsv, tsv.gz, parquet; a folder stands for the files in it),
each holding one or more plates. `scan_shard` reads one file and returns only what the global steps
need: its schema, per plate which features have a finite value, per feature how many wells do not,
and its control wells (a few percent of the wells). `plan_features` reduces the scans to the
feature list and the control table the profiler is fitted on, exactly as `prepare_profiles` would
on the concatenated table, without ever building it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pandas as pd

from phenolens.core.errors import PhenolensError
from phenolens.core.executor import cached
from phenolens.data.query import select_rows
from phenolens.data.readers import TAB_SEPARATED_SUFFIXES, identifiers_as_text, mixed_identifiers
from phenolens.profiling.inputs import (
    MIN_CONTROLS_PER_PLATE,
    ProfileColumns,
    checked_features,
    features_of,
    features_on_every_plate,
    features_within_missing_cut,
    impute_from_plate_controls,
    metadata_of,
)

PROFILE_SUFFIXES = (".parquet", ".csv", ".csv.gz", *TAB_SEPARATED_SUFFIXES)
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"  # the folder name of a missing partition value


@dataclass(frozen=True)
class StudyShard:
    """One unit of per-plate work: a profile file (all its plates), or a whole built-in dataset.

    Attributes
    ----------
    index : int
        Position in the study (outputs are written and read back in this order).
    path : str or None
        The profile file.
    dataset : str or None
        The registry name of a built-in dataset (read whole: it is small).
    partitions : tuple of (str, value) pairs
        The columns a hive-partitioned folder holds in its folder names (``Metadata_Plate=P1/``), with this file's values.
    """

    index: int
    path: str | None = None
    dataset: str | None = None
    partitions: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        """The file (or dataset) for messages."""
        return self.path or str(self.dataset)


def study_shards(paths: list[Path], datasets: list[str]) -> list[StudyShard]:
    """The shards of a study: every file given, the profile files inside every folder given, or one dataset.

    Parameters
    ----------
    paths : list of Path
        Profile files and folders of profile files (a parquet dataset written one file per plate).
    datasets : list of str
        A registry name to read instead (at most one).

    Returns
    -------
    list of StudyShard
        In the order given; a folder's files sorted by path. A folder written hive-partitioned
        (``df.to_parquet(folder, partition_cols=[...])``) gives each file the values of its ``key=value`` folder
        names (`hive_partitions`), read as pandas and pyarrow read them.

    Raises
    ------
    PhenolensError
        For a folder without profile files.
    """
    if datasets:
        return [StudyShard(0, dataset=datasets[0])]
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(PROFILE_SUFFIXES) and not p.name.startswith("."))
            if not inside:
                raise PhenolensError(f"{path}: a folder without {'/'.join(PROFILE_SUFFIXES)} profile files; give the files or another folder")
            # pyarrow types a partition column over the whole folder: whole numbers only where every file's value is one
            texts = {file: _hive_texts(path, file) for file in inside}  # each file's folder names parsed once
            whole = set.intersection(*(_whole_number_keys(values) for values in texts.values()))
            files += [(file, _typed(values, whole)) for file, values in texts.items()]
        else:
            files.append((path, {}))
    return [StudyShard(index, path=str(path), partitions=tuple(partitions.items())) for index, (path, partitions) in enumerate(files)]


def hive_partitions(folder: Path, file: Path) -> dict[str, Any]:
    """The columns of a hive-partitioned dataset that `file` holds only in the names of the folders below `folder`.

    As pyarrow's hive partitioning reads them: ``key=value`` folder names, values URI-decoded, ``HIVE_NULL`` missing,
    and a whole number read as an integer where the key's value is a whole number (pyarrow infers one type per key
    over the dataset: `study_shards` reads as integers only the keys whose values are whole numbers in every file).

    Parameters
    ----------
    folder : Path
        The folder given as the study.
    file : Path
        A profile file inside it.

    Returns
    -------
    dict
        Column name -> value (str, int or None), outermost folder first; empty when no folder name is ``key=value``.
    """
    values = _hive_texts(folder, file)
    return _typed(values, _whole_number_keys(values))


def _hive_texts(folder: Path, file: Path) -> dict[str, str | None]:
    """A file's ``key=value`` folder names below `folder`: key -> URI-decoded value (None for `HIVE_NULL`)."""
    values: dict[str, str | None] = {}
    for name in file.relative_to(folder).parent.parts:
        key, equals, text = name.partition("=")
        if equals and key:
            value = unquote(text)
            values[key] = None if value == HIVE_NULL else value
    return values


def _whole_number_keys(values: dict[str, str | None]) -> set[str]:
    """The keys of one file's partition values (`_hive_texts`) whose value is a whole number or missing."""
    return {key for key, value in values.items() if value is None or re.fullmatch(r"-?\d+", value)}


def _typed(values: dict[str, str | None], whole_numbers: set[str]) -> dict[str, Any]:
    """One file's partition values with the `whole_numbers` keys read as integers (missing stays None)."""
    return {key: int(value) if key in whole_numbers and value is not None else value for key, value in values.items()}


def read_shard(shard: StudyShard, columns: ProfileColumns) -> pd.DataFrame:
    """Read one shard's wells (a file, or a dataset once per process).

    Parameters
    ----------
    shard : StudyShard
        The shard.
    columns : ProfileColumns
        Column meanings (the plate column is required).

    Returns
    -------
    pandas.DataFrame
        The shard's wells, as the file holds them (not to be modified: a dataset is shared).

    Raises
    ------
    PhenolensError
        For a missing, unreadable, empty or corrupt file, a missing plate column or a non-numeric feature.
    """
    from phenolens.data import load, read_profiles

    if shard.dataset:
        return cached(("profile dataset", shard.dataset), lambda: load(shard.dataset))
    partitions = dict(shard.partitions)
    table = read_profiles([shard.path], tuple(c for c in (columns.plate,) if c not in partitions), columns.identifiers())
    for column, value in partitions.items():
        if column not in table:  # a column the file holds is taken from the file, as pyarrow does
            table[column] = value
    return table


@dataclass
class ShardScan:
    """What the global steps need to know of one shard (`scan_shard`).

    Attributes
    ----------
    shard : StudyShard
        The shard.
    columns : list of str
        Its columns, in file order.
    metadata : list of str
        Its non-feature columns.
    features : list of str
        Its feature columns.
    wells : pandas.Series
        Wells per plate, in order of appearance.
    present : pandas.DataFrame
        (plates, features): whether the plate has a finite value of the feature.
    non_finite : numpy.ndarray
        Per feature, wells with a missing or infinite value.
    controls : pandas.DataFrame
        The control wells (every column), in file order.
    """

    shard: StudyShard
    columns: list[str]
    metadata: list[str]
    features: list[str]
    wells: pd.Series
    present: pd.DataFrame
    non_finite: np.ndarray
    controls: pd.DataFrame


def scan_shard(task: tuple[StudyShard, ProfileColumns]) -> ShardScan:
    """Read one shard and reduce it (a shard function of `Executor.map`).

    Parameters
    ----------
    task : tuple
        (the shard, the column meanings: any profiling settings object).

    Returns
    -------
    ShardScan
        Its schema, feature presence, non-finite counts and control wells.

    Raises
    ------
    PhenolensError
        For an unreadable file, a missing named column, a non-numeric feature, or a plate without
        control wells (each naming the file).
    """
    shard, columns = task
    table = read_shard(shard, columns)
    source = shard.name
    features = checked_features(table, columns, source)
    is_control = select_rows(table, columns.controls, source, "--controls")
    plates = table[columns.plate].astype(str).to_numpy()
    without = pd.unique(plates[~np.isin(plates, plates[is_control])])
    if not is_control.any():
        raise PhenolensError(
            f"{source}: the control query {columns.controls!r} matches no well (plate {without[0]!r} has no controls); "
            "check it against the metadata values: every plate needs negative controls to normalise against"
        )
    if len(without):
        raise PhenolensError(
            f"{source}: plate {without[0]!r} has no well matching the control query {columns.controls!r}; "
            "every plate needs negative controls to normalise against (fix --controls or leave the plate out)"
        )
    finite = np.isfinite(table[features].to_numpy(dtype=np.float64))
    return ShardScan(
        shard=shard,
        columns=list(table.columns),
        metadata=[c for c in table.columns if c not in set(features)],
        features=features,
        wells=pd.Series(plates).value_counts(sort=False),
        present=pd.DataFrame(finite, columns=features).groupby(plates).any(),
        non_finite=(~finite).sum(axis=0),
        controls=table[is_control],
    )


@dataclass
class FeaturePlan:
    """The study's features and the control wells the profiler is fitted on (`plan_features`).

    Attributes
    ----------
    features : list of str
        The features kept, in the order of the concatenated table.
    metadata : list of str
        The metadata columns of the clean table, in order.
    controls : pandas.DataFrame
        The usable control wells of every plate (index 0..n-1), in study order, imputed with --features union.
    controls_per_shard : list of int
        How many of them each shard holds (they are contiguous).
    excluded_plates : list of str
        Plates with fewer than `MIN_CONTROLS_PER_PLATE` usable controls (their wells are left out).
    fallback : pandas.Series or None
        With --features union: the median over every control of each feature, for plates without one.
    quality : dict
        What `prepare_profiles` reports, for what is known before the second pass.
    text_identifiers : list of str
        Identifier columns that are text in one file and numbers in another: text in every file (`mixed_identifiers`).
    """

    features: list[str]
    metadata: list[str]
    controls: pd.DataFrame
    controls_per_shard: list[int]
    excluded_plates: list[str]
    fallback: pd.Series | None
    quality: dict
    text_identifiers: list[str]


def plan_features(scans: list[ShardScan], columns: ProfileColumns, feature_set: str, source: str) -> FeaturePlan:
    """Reduce the scans to the features and the control table, as `prepare_profiles` would on the concatenated table.

    Parameters
    ----------
    scans : list of ShardScan
        One per shard, in study order.
    columns : ProfileColumns
        Column meanings.
    feature_set : {"intersection", "union"}
        Plates with different features: keep those every plate has, or impute from the plate's controls.
    source : str
        The study's name for messages.

    Returns
    -------
    FeaturePlan
        Features, control table and what was dropped.

    Raises
    ------
    PhenolensError
        When a file's metadata columns differ from the first file's, a plate is in two files, no
        feature is shared or usable, or no plate keeps two usable controls.
    """
    first = scans[0]
    for scan in scans[1:]:
        if set(scan.metadata) != set(first.metadata):
            missing, extra = sorted(set(first.metadata) - set(scan.metadata)), sorted(set(scan.metadata) - set(first.metadata))
            raise PhenolensError(
                f"{scan.shard.name}: its metadata columns differ from {first.shard.name}'s "
                f"(missing {missing or 'none'}, extra {extra or 'none'}); give every plate file the same metadata columns"
            )
    # The evaluation normalises each file's plates on their own wells and controls: a plate in two files would be split.
    seen: dict[str, str] = {}
    for scan in scans:
        for plate in scan.wells.index.astype(str):
            if plate in seen:
                raise PhenolensError(f"plate {plate} is in both {seen[plate]} and {scan.shard.name}; give each plate's wells in one file")
            seen[plate] = scan.shard.name
    text_identifiers = mixed_identifiers([scan.controls for scan in scans], columns.identifiers())
    controls = pd.concat([identifiers_as_text(scan.controls, text_identifiers) for scan in scans], ignore_index=True)
    candidates = features_of(controls, columns)
    wells = sum(int(scan.wells.sum()) for scan in scans)
    quality: dict = {"source": source, "wells_in": wells, "features_in": len(candidates)}
    fallback = None
    if feature_set == "union":
        values = controls[candidates].to_numpy(dtype=np.float64)
        fallback = pd.DataFrame(np.where(np.isfinite(values), values, np.nan)).median()
        controls = impute_from_plate_controls(controls, candidates, columns.plate, np.ones(len(controls), dtype=bool), source, warn=False)[0]
        features, quality["plate_features"], non_finite = candidates, {}, np.zeros(len(candidates), dtype=np.int64)
    else:
        present = pd.concat([scan.present.reindex(columns=candidates, fill_value=False) for scan in scans]).groupby(level=0).any()
        features, quality["plate_features"] = features_on_every_plate(present, candidates, source)
        non_finite = sum(
            pd.Series(scan.non_finite, index=scan.features).reindex(candidates, fill_value=int(scan.wells.sum())).to_numpy() for scan in scans
        )
        non_finite = pd.Series(non_finite, index=candidates)[features].to_numpy()
    kept = features_within_missing_cut(non_finite, wells, features, source)
    quality["non_finite_values"] = int(non_finite.sum())
    quality["features_dropped_non_finite"] = [f for f, keep in zip(features, kept) if not keep]
    features = [f for f, keep in zip(features, kept) if keep]
    complete = np.isfinite(controls[features].to_numpy(dtype=np.float64)).all(axis=1)
    plates = controls[columns.plate].astype(str).to_numpy()
    all_plates = pd.unique(np.concatenate([scan.wells.index.to_numpy(dtype=str) for scan in scans]))
    usable = pd.Series(complete).groupby(plates).sum().reindex(all_plates, fill_value=0)
    excluded = sorted(map(str, usable.index[usable < MIN_CONTROLS_PER_PLATE]))
    if len(excluded) == len(usable):
        raise PhenolensError(
            f"{source}: no plate has {MIN_CONTROLS_PER_PLATE} or more control wells matching {columns.controls!r}; "
            "every plate needs negative controls to normalise against"
        )
    keep = complete & ~np.isin(plates, excluded)
    metadata = metadata_of(controls, columns)  # every column but the candidates (and the imputed-values flag, a Metadata_ column)
    shard_of = np.repeat(np.arange(len(scans)), [len(scan.controls) for scan in scans])
    per_shard = np.bincount(shard_of[keep], minlength=len(scans)).tolist()
    quality["plates_excluded_few_controls"] = excluded
    kept_controls = controls.loc[keep, metadata + features].reset_index(drop=True)
    return FeaturePlan(features, metadata, kept_controls, per_shard, excluded, fallback, quality, text_identifiers)


def clean_shard(table: pd.DataFrame, plan: FeaturePlan, columns: ProfileColumns, source: str) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """One shard's usable wells, as `prepare_profiles` keeps them from the concatenated table.

    Parameters
    ----------
    table : pandas.DataFrame
        The shard's wells (not modified).
    plan : FeaturePlan
        The study's features and excluded plates.
    columns : ProfileColumns
        Column meanings.
    source : str
        The shard's name for messages.

    Returns
    -------
    tuple
        (the clean wells: metadata + features, index 0..n-1; their control mask; per-plate counts of
        wells in, kept, dropped for missing values, without a treatment, on excluded plates, and imputed values).
    """
    table = identifiers_as_text(table, plan.text_identifiers)
    is_control = select_rows(table, columns.controls, source, "--controls")
    plates = table[columns.plate].astype(str).to_numpy()
    imputed = pd.Series(0, index=pd.unique(plates))
    if plan.fallback is not None:
        absent = [f for f in plan.features if f not in table.columns]
        widened = table.reindex(columns=list(table.columns) + absent) if absent else table
        table, by_plate = impute_from_plate_controls(widened, plan.features, columns.plate, is_control, source, plan.fallback, warn=False)
        imputed = imputed.add(pd.Series(by_plate, dtype=np.int64), fill_value=0)
    complete = np.isfinite(table[plan.features].to_numpy(dtype=np.float64)).all(axis=1)
    unlabelled = ~is_control & table[columns.treatment].isna().to_numpy() if columns.treatment else np.zeros(len(table), dtype=bool)
    excluded = np.isin(plates, plan.excluded_plates)
    keep = complete & ~unlabelled & ~excluded
    counts = (
        pd.DataFrame(
            {
                "wells_in": 1,
                "wells": keep,
                "controls": keep & is_control,
                "dropped_non_finite": ~complete,
                "dropped_no_treatment": unlabelled,
                "dropped_few_controls": complete & ~unlabelled & excluded,
            }
        )
        .groupby(plates, sort=False)
        .sum()
    )
    counts["imputed_values"] = imputed.reindex(counts.index, fill_value=0).astype(int)
    clean = table.loc[keep, plan.metadata + plan.features].reset_index(drop=True)
    return clean, is_control[keep], counts
