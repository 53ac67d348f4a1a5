"""Validated profile tables: which columns mean what, and what had to be dropped to make the table usable.

Every check a user can fail lives here, at the boundary, so the algorithms downstream can assume a
clean table: named metadata columns exist, features are numeric and finite, every plate has
negative-control wells.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd

from phenolens.core.errors import PhenolensError
from phenolens.core.logging import get_logger
from phenolens.core.settings import setting
from phenolens.data.query import select_rows
from phenolens.data.readers import IDENTIFIER_COLUMNS, require_numeric_features, text_separator

log = get_logger(__name__)

# Features whose fraction of missing (NaN/inf) wells exceeds this are dropped; pycytominer's na_cutoff.
MISSING_FEATURE_FRACTION = 0.05
# The fewest control wells a plate needs: one to fit on and one to test against.
MIN_CONTROLS_PER_PLATE = 2


@dataclass(frozen=True)
class ProfileColumns:
    """What the metadata columns of a profile table mean (a field group of the profiling settings).

    Attributes
    ----------
    controls : str or None
        Row query (`phenolens.data.query`) selecting the negative-control wells.
    plate : str
        Plate column.
    treatment : str or None
        Treatment column; replicate wells share its value.
    moa : str or None
        Mechanism-of-action column (enables MoA evaluation).
    batch : str or None
        Batch column (enables not-same-compound-or-batch evaluation and batch-pooled scales).
    compound : str or None
        Groups the concentrations of one compound (not-same-compound exclusion); default: `treatment`.
    positive_controls : str or None
        Row query selecting positive-control wells (adds Z'-factors).
    """

    controls: str | None = setting(
        None, "Row query selecting the negative-control wells, e.g. \"Metadata_pert_type == 'control'\" (comparisons only).", option="--controls"
    )
    plate: str = setting("Metadata_Plate", "Plate column.", option="--plate-column")
    treatment: str | None = setting(None, "Treatment column (replicate wells share it).", option="--treatment-column")
    moa: str | None = setting(None, "Mechanism-of-action column (optional).", option="--moa-column")
    batch: str | None = setting(None, "Batch column (optional; enables NSCB).", option="--batch-column")
    compound: str | None = setting(
        None,
        "Compound column grouping a compound's concentrations, so that NSC leaves out the query's own compound (default: the treatment column).",
        option="--compound-column",
    )
    positive_controls: str | None = setting(None, "Row query selecting positive-control wells (adds Z'-factors).", option="--positive-controls")

    @property
    def compound_column(self) -> str | None:
        """The column that groups a compound's concentrations (`compound`, else `treatment`)."""
        return self.compound or self.treatment

    def named(self) -> dict[str, str]:
        """The metadata columns this table must have, by the option that names them."""
        roles = {"plate": self.plate, "treatment": self.treatment, "moa": self.moa, "batch": self.batch, "compound": self.compound}
        return {role: column for role, column in roles.items() if column}

    def identifiers(self) -> list[str]:
        """The identifier columns: the named ones and the plate and well of the Metadata_ convention.

        They are read from text files as written (a barcode "0001" is not the number 1; see `read_profiles`).

        Returns
        -------
        list of str
            The column names, each once, the named ones first.
        """
        return list(dict.fromkeys([*self.named().values(), *IDENTIFIER_COLUMNS]))

    def column_fields(self) -> dict[str, object]:
        """The column meanings alone (for messages and metrics)."""
        return {f.name: getattr(self, f.name) for f in fields(ProfileColumns)}

    def require(self, *names: str) -> None:
        """Raise unless every named column field (``"controls"``, ``"treatment"``, ...) is given.

        Raises
        ------
        PhenolensError
            Naming the missing options (and `--dataset`, which sets them).
        """
        options = {f.name: f.metadata["option"] for f in fields(ProfileColumns)}
        missing = [options[name] for name in names if not getattr(self, name)]
        if missing:
            raise PhenolensError(f"give --dataset, or {' and '.join(missing)} for your own tables")


# Column meanings of the built-in profile datasets, by their registry name (`phenolens data list`, `phenolens.data.load`).
DATASET_PRESETS: dict[str, tuple[str, ProfileColumns]] = {
    "bbbc021-profiles": (
        "bbbc021-profiles",
        ProfileColumns(
            controls="Metadata_PertType == 'control'",
            treatment="Metadata_Treatment",
            moa="Metadata_MoA",
            batch="Metadata_Batch",
            compound="Metadata_Compound",
        ),
    ),
    "lincs-plate": (
        "lincs-plate",
        ProfileColumns(controls="Metadata_pert_type == 'control'", treatment="Metadata_broad_sample", moa="Metadata_moa"),
    ),
}

DATASET_ALIASES = {"bbbc021": "bbbc021-profiles"}
"""Short names `--dataset` also accepts (the one place they are defined): the BBBC021 well profiles are
`bbbc021-profiles` in the data registry, and `bbbc021` (used in the profiling commands since they began) means them too."""

DATASET_CHOICES = ", ".join(
    name + "".join(f" (or {alias})" for alias, target in DATASET_ALIASES.items() if target == name) for name in DATASET_PRESETS
)
"""The `--dataset` choices for help texts and messages: 'bbbc021-profiles (or bbbc021), lincs-plate'."""


def with_dataset_columns(settings, dataset: str):
    """`settings` with the column meanings of a built-in dataset filled in where they are left at their defaults.

    Parameters
    ----------
    settings : ProfileColumns
        Any profiling settings object (they all carry the column fields).
    dataset : str
        A key of `DATASET_PRESETS` (a registry name) or of `DATASET_ALIASES`.

    Returns
    -------
    tuple
        (settings with the preset's columns, the dataset's registry name).

    Raises
    ------
    PhenolensError
        For an unknown dataset.
    """
    key = DATASET_ALIASES.get(dataset, dataset)
    if key not in DATASET_PRESETS:
        raise PhenolensError(f"unknown dataset {dataset!r} for profiling; choose {DATASET_CHOICES}")
    name, preset = DATASET_PRESETS[key]
    chosen = {f.name: getattr(preset, f.name) for f in fields(ProfileColumns) if getattr(settings, f.name) == f.default}
    return replace(settings, **chosen), name


@dataclass
class PreparedProfiles:
    """A clean profile table (index 0..n-1), its feature columns, the control mask and what was dropped."""

    table: pd.DataFrame
    features: list[str]
    is_control: np.ndarray
    quality: dict = field(default_factory=dict)

    @property
    def metadata(self) -> list[str]:
        return [c for c in self.table.columns if c not in set(self.features)]


def require_columns(table: pd.DataFrame, columns: ProfileColumns, source: str) -> None:
    """Raise unless `table` has every column `columns` names.

    Parameters
    ----------
    table : pandas.DataFrame
        The profile table.
    columns : ProfileColumns
        Column meanings.
    source : str
        The table's name for messages.

    Raises
    ------
    PhenolensError
        Naming the missing column and the option that names it.
    """
    for role, column in columns.named().items():
        if column not in table.columns:
            raise PhenolensError(
                f"{source}: missing metadata column {column!r} (the {role} column); add it or pass --{role}-column with another name"
            )


def metadata_of(frame: pd.DataFrame, columns: ProfileColumns) -> list[str]:
    """The metadata columns of a profile table or representation: ``Metadata_`` columns and those `columns` names.

    Parameters
    ----------
    frame : pandas.DataFrame
        A profile table or representation.
    columns : ProfileColumns
        Column meanings.

    Returns
    -------
    list of str
        Its metadata columns in table order.
    """
    named = set(columns.named().values())
    return [c for c in frame.columns if _is_metadata(c, named)]


def features_of(frame: pd.DataFrame, columns: ProfileColumns) -> list[str]:
    """The feature columns of a profile table or representation: every column `metadata_of` does not list.

    Parameters
    ----------
    frame : pandas.DataFrame
        A profile table or representation.
    columns : ProfileColumns
        Column meanings.

    Returns
    -------
    list of str
        Its feature columns in table order.
    """
    named = set(columns.named().values())
    return [c for c in frame.columns if not _is_metadata(c, named)]


def _is_metadata(column: str, named: set[str]) -> bool:
    """The one rule: a ``Metadata_`` column or one the settings name (`named`, computed once per table, not per column)."""
    return str(column).startswith("Metadata_") or column in named


def checked_features(table: pd.DataFrame, columns: ProfileColumns, source: str) -> list[str]:
    """The feature columns of a profile table (`features_of`), after checking the named columns exist and every feature is numeric.

    Parameters
    ----------
    table : pandas.DataFrame
        The profile table.
    columns : ProfileColumns
        Column meanings.
    source : str
        The table's name for messages.

    Returns
    -------
    list of str
        Its feature columns in table order.

    Raises
    ------
    PhenolensError
        For a missing named column, no feature column, or a non-numeric one.
    """
    require_columns(table, columns, source)
    features = features_of(table, columns)
    require_numeric_features(table, features, source)
    return features


def shared_features(table: pd.DataFrame, features: list[str], plate: str, source: str) -> tuple[list[str], dict]:
    """The features every plate measured, and per plate how many it had, kept and lost.

    Per-plate feature selection (as in JUMP) leaves each plate file with its own feature list; once
    the files are concatenated, a feature a plate never had is missing in all its wells. Those
    features are dropped (the intersection), with one warning giving counts, not file names.

    Parameters
    ----------
    table : pandas.DataFrame
        The concatenated profile table.
    features : list of str
        Its numeric feature columns.
    plate : str
        The plate column.
    source : str
        The table's name for messages.

    Returns
    -------
    tuple
        (the features every plate has a finite value of, {plate: {"had", "kept", "lost"}} when
        plates differ, else {}).

    Raises
    ------
    PhenolensError
        When no feature is shared by every plate.
    """
    present = pd.DataFrame(np.isfinite(table[features].to_numpy(dtype=np.float64))).groupby(table[plate].astype(str).to_numpy()).any()
    return features_on_every_plate(present, features, source)


def features_on_every_plate(present: pd.DataFrame, features: list[str], source: str) -> tuple[list[str], dict]:
    """`shared_features` from its reduction: which plate has a finite value of which feature.

    Parameters
    ----------
    present : pandas.DataFrame
        (plates, features) booleans, indexed by plate name, columns in the order of `features`.
    features : list of str
        The feature names.
    source : str
        The table's name for messages.

    Returns
    -------
    tuple
        As `shared_features`.

    Raises
    ------
    PhenolensError
        When no feature is shared by every plate.
    """
    shared = present.all(axis=0).to_numpy()
    nowhere = ~present.any(axis=0).to_numpy()  # measured on no plate: `finite_features` drops and counts those
    if (shared | nowhere).all():
        return features, {}
    had = present.sum(axis=1)
    kept = present.loc[:, shared].sum(axis=1)
    per_plate = {str(name): {"had": int(had[name]), "kept": int(kept[name]), "lost": int(had[name] - kept[name])} for name in present.index}
    lost = had - kept
    if not shared.any():
        raise PhenolensError(f"{source}: no feature is measured on every one of the {len(present)} plates; give plates with shared features")
    log.warning(
        "%s: plates measure different features: kept the %d every plate has, dropped %d others "
        "(%d of %d plates lose some, %d-%d each); per-plate counts in metrics.json data.plate_features",
        source,
        int(shared.sum()),
        int((~shared & ~nowhere).sum()),
        int((lost > 0).sum()),
        len(present),
        int(lost.min()),
        int(lost.max()),
    )
    return [f for f, keep in zip(features, shared | nowhere) if keep], per_plate


IMPUTED_COLUMN = "Metadata_ImputedValues"  # per well: how many of its feature values were imputed (--features union)


def impute_from_plate_controls(
    table: pd.DataFrame, features: list[str], plate: str, is_control: np.ndarray, source: str, overall: pd.Series | None = None, warn: bool = True
) -> tuple[pd.DataFrame, dict]:
    """Fill every missing or infinite feature value with the median of its plate's control wells (`--features union`).

    A plate that never measured a feature has no control value for it either; its wells get the
    median over every plate's controls, which per-plate centring on controls turns into the
    control level (0) for every well of that plate: the feature then says nothing about them.
    Each well's number of imputed values is kept in ``Metadata_ImputedValues`` (the flag).

    Parameters
    ----------
    table : pandas.DataFrame
        The profile table (not modified).
    features : list of str
        Its numeric feature columns.
    plate : str
        The plate column.
    is_control : numpy.ndarray
        Mask of the negative-control wells.
    source : str
        The table's name for messages.
    overall : pandas.Series, optional
        The fallback per feature (positional) for plates without a control value; default the median
        over `table`'s controls (a study imputed plate by plate passes the median over all its controls).
    warn : bool
        Log the one-line summary (a study imputed plate by plate logs its own, once).

    Returns
    -------
    tuple
        (a copy of `table` with imputed values and the flag column, {plate: values imputed}).

    Raises
    ------
    PhenolensError
        When a feature has no finite control value on any plate.
    """
    values = table[features].to_numpy(dtype=np.float64)
    missing = ~np.isfinite(values)
    if not missing.any():  # nothing to impute (or imputed already: keep the flags)
        return (table if IMPUTED_COLUMN in table else table.assign(**{IMPUTED_COLUMN: 0})), {}
    plates = table[plate].astype(str).to_numpy()
    controls = pd.DataFrame(np.where(missing, np.nan, values)[is_control])
    by_plate = controls.groupby(plates[is_control]).median()
    overall = controls.median() if overall is None else overall
    if overall.isna().any():
        raise PhenolensError(
            f"{source}: feature {features[int(np.flatnonzero(overall.isna())[0])]!r} has no finite value in any control well; drop it"
        )
    fill = by_plate.reindex(np.unique(plates)).fillna(overall)
    rows = fill.index.get_indexer(plates)
    imputed = np.where(missing, fill.to_numpy()[rows], values)
    result = table.copy()
    result[features] = imputed
    result[IMPUTED_COLUMN] = missing.sum(axis=1)
    per_plate = pd.Series(missing.sum(axis=1)).groupby(plates).sum()
    (log.warning if warn else log.debug)(
        "%s: imputed %d missing/infinite value(s) in %d well(s) on %d plate(s) from the plates' controls (--features union); flagged in %s",
        source,
        int(missing.sum()),
        int(missing.any(axis=1).sum()),
        int((per_plate > 0).sum()),
        IMPUTED_COLUMN,
    )
    return result, {str(name): int(count) for name, count in per_plate.items()}


def finite_features(table: pd.DataFrame, features: list[str], source: str) -> tuple[list[str], np.ndarray, dict]:
    """The features and wells usable despite missing/infinite values (pycytominer's 5 % cut), counted.

    Features with more than `MISSING_FEATURE_FRACTION` non-finite values are dropped (an all-NaN
    column among them); then wells with a non-finite value in a kept feature. One warning line
    gives the counts.

    Parameters
    ----------
    table : pandas.DataFrame
        The profile table.
    features : list of str
        Its numeric feature columns.
    source : str
        The table's name for messages.

    Returns
    -------
    tuple
        (kept features, boolean mask of complete wells, counts for metrics.json).

    Raises
    ------
    PhenolensError
        When no feature is left.
    """
    values = table[features].to_numpy(dtype=np.float64)
    finite = np.isfinite(values)
    kept = features_within_missing_cut((~finite).sum(axis=0), len(table), features, source)
    dropped_features = [f for f, keep in zip(features, kept) if not keep]
    features = [f for f, keep in zip(features, kept) if keep]
    complete_wells = finite[:, kept].all(axis=1)
    if dropped_features or not complete_wells.all():
        log.warning(
            "%s: dropped %d feature(s) with >%.0f%% missing/infinite values and %d well(s) with missing/infinite values",
            source,
            len(dropped_features),
            100 * MISSING_FEATURE_FRACTION,
            int((~complete_wells).sum()),
        )
    counts = {
        "non_finite_values": int((~finite).sum()),
        "features_dropped_non_finite": dropped_features,
        "wells_dropped_non_finite": int((~complete_wells).sum()),
    }
    return features, complete_wells, counts


def features_within_missing_cut(non_finite: np.ndarray, wells: int, features: list[str], source: str) -> np.ndarray:
    """Mask of the features with at most `MISSING_FEATURE_FRACTION` missing/infinite values (pycytominer's cut), from counts.

    Parameters
    ----------
    non_finite : numpy.ndarray
        Per feature, how many wells hold a missing or infinite value (a reduction over plates).
    wells : int
        How many wells were counted.
    features : list of str
        The feature names (for the message).
    source : str
        The table's name for messages.

    Returns
    -------
    numpy.ndarray
        Boolean mask of the kept features.

    Raises
    ------
    PhenolensError
        When no feature is left.
    """
    kept = 1.0 - (wells - np.asarray(non_finite)) / wells <= MISSING_FEATURE_FRACTION
    if not kept.any():
        raise PhenolensError(f"{source}: every feature has more than {MISSING_FEATURE_FRACTION:.0%} missing or infinite values; nothing to profile")
    return kept


def read_profile_tables(paths: list[Path], datasets: list[str], columns: ProfileColumns) -> pd.DataFrame:
    """Read the profile tables of a command: files (csv, csv.gz, tsv, tsv.gz, parquet) or one built-in dataset.

    Parameters
    ----------
    paths : list of Path
        Profile tables, concatenated in order (used when `datasets` is empty).
    datasets : list of str
        A registry name (at most one) to load instead.
    columns : ProfileColumns
        The column meanings; the plate column is required in every file.

    Returns
    -------
    pandas.DataFrame
        The concatenated table.

    Raises
    ------
    PhenolensError
        For an unreadable file, a missing plate column, a non-numeric feature or a column name that
        appears twice in one file (pandas would silently rename it ``X.1``).
    """
    from phenolens.data import load, read_profiles

    if datasets:
        return load(datasets[0])
    for path in map(Path, paths):
        names = _header(path)
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise PhenolensError(f"{path}: column {duplicated[0]!r} appears more than once; rename the duplicates so every column is unique")
    return read_profiles(paths, required_metadata=(columns.plate,), identifiers=columns.identifiers())


def _header(path: Path) -> list[str]:
    """The column names of a profile file as written (before pandas renames duplicates); [] if unreadable."""
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        return list(pd.read_csv(path, nrows=1, header=None, dtype=str, keep_default_na=False, sep=text_separator(path)).iloc[0])
    except Exception:  # noqa: BLE001 - read_profiles reports an unreadable file with its own message
        return []


def prepare_profiles(
    table: pd.DataFrame, columns: ProfileColumns, source: str = "profile table", feature_set: str = "intersection"
) -> PreparedProfiles:
    """Validate a well-level profile table and drop what cannot be used, counting every drop.

    Dropped with a warning: features with more than 5% missing or infinite values, wells with a
    missing/infinite value in the remaining features, plates with fewer than two control wells,
    treated wells without a treatment label.

    Parameters
    ----------
    table : pandas.DataFrame
        Well-level profiles (not modified).
    columns : ProfileColumns
        Column meanings (any profiling settings object).
    source : str
        The table's name for messages.
    feature_set : {"intersection", "union"}
        Plates with different features: keep those every plate has, or keep all and impute
        missing values from each plate's controls (`impute_from_plate_controls`).

    Returns
    -------
    PreparedProfiles
        The clean table (index 0..n-1), its features, the control mask and what was dropped.

    Raises
    ------
    PhenolensError
        A named metadata column is missing, a feature column is not numeric, there are no
        features, the control query is not allowed or matches no well, or no plate keeps at
        least two control wells.
    """
    features = checked_features(table, columns, source)
    table = table.reset_index(drop=True)
    quality: dict = {"source": source, "wells_in": len(table), "features_in": len(features)}

    is_control = select_rows(table, columns.controls, source, "--controls")
    if not is_control.any():
        raise PhenolensError(f"{source}: the control query {columns.controls!r} matches no well; check it against the metadata values")
    if feature_set == "union":
        table, quality["imputed_by_plate"] = impute_from_plate_controls(table, features, columns.plate, is_control, source)
    features, quality["plate_features"] = shared_features(table, features, columns.plate, source)
    features, complete_wells, dropped = finite_features(table, features, source)
    quality.update(dropped)
    keep = complete_wells.copy()
    if columns.treatment:
        unlabelled = ~is_control & table[columns.treatment].isna().to_numpy()
        quality["wells_dropped_no_treatment"] = int(unlabelled.sum())
        keep &= ~unlabelled
    controls_per_plate = pd.Series(is_control & keep).groupby(table[columns.plate].to_numpy()).sum()
    poor_plates = sorted(map(str, controls_per_plate.index[controls_per_plate < MIN_CONTROLS_PER_PLATE]))
    quality["plates_excluded_few_controls"] = poor_plates
    if len(poor_plates) == len(controls_per_plate):
        raise PhenolensError(
            f"{source}: no plate has {MIN_CONTROLS_PER_PLATE} or more control wells matching {columns.controls!r}; "
            "every plate needs negative controls to normalise against"
        )
    on_poor_plate = table[columns.plate].astype(str).isin(poor_plates).to_numpy()
    quality["wells_dropped_few_controls"] = int((keep & on_poor_plate).sum())
    if poor_plates:
        log.warning("%s: excluded plate(s) with fewer than %d control wells: %s", source, MIN_CONTROLS_PER_PLATE, ", ".join(poor_plates[:10]))
    keep &= ~on_poor_plate
    metadata = metadata_of(table, columns)
    clean = table.loc[keep, metadata + features].reset_index(drop=True)
    quality.update(wells=len(clean), features=len(features), controls=int(is_control[keep].sum()), plates=int(clean[columns.plate].nunique()))
    return PreparedProfiles(clean, features, is_control[keep], quality)
