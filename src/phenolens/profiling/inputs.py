"""Validated profile tables: which columns mean what, and what had to be dropped to make the table usable.

Every check a user can fail lives here, at the boundary, so the algorithms downstream can assume a
clean table: named metadata columns exist, features are numeric and finite, every plate has
negative-control wells.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from phenolens.core.errors import PhenolensError
from phenolens.core.logging import get_logger
from phenolens.data.query import select_rows
from phenolens.data.readers import feature_columns, require_numeric_features

log = get_logger(__name__)

# Features whose fraction of missing (NaN/inf) wells exceeds this are dropped; pycytominer's na_cutoff.
MISSING_FEATURE_FRACTION = 0.05
# The fewest control wells a plate needs: one to fit on and one to test against.
MIN_CONTROLS_PER_PLATE = 2


@dataclass(frozen=True)
class ProfileColumns:
    """What the metadata columns of a profile table mean.

    `controls` is a pandas query selecting the negative-control wells. `compound` groups the
    concentrations of one compound (not-same-compound exclusion); it defaults to `treatment`.
    `batch` (optional) enables not-same-compound-or-batch evaluation and batch-pooled scales.
    """

    controls: str
    plate: str = "Metadata_Plate"
    treatment: str | None = "Metadata_Treatment"
    moa: str | None = None
    batch: str | None = None
    compound: str | None = None
    positive_controls: str | None = None

    @property
    def compound_column(self) -> str | None:
        return self.compound or self.treatment

    def named(self) -> dict[str, str]:
        """The metadata columns this table must have, by the option that names them."""
        roles = {"plate": self.plate, "treatment": self.treatment, "moa": self.moa, "batch": self.batch, "compound": self.compound}
        return {role: column for role, column in roles.items() if column}


# Column meanings of the built-in profile datasets (keys are what `--dataset` accepts).
DATASET_PRESETS: dict[str, tuple[str, ProfileColumns]] = {
    "bbbc021": (
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


def select_wells(table: pd.DataFrame, query: str, source: str, option: str = "--controls") -> np.ndarray:
    """Boolean mask of the wells a row query selects (`phenolens.data.query`: comparisons only, never code).

    Parameters
    ----------
    table : pandas.DataFrame
        The profile table.
    query : str
        E.g. ``"Metadata_pert_type == 'control'"``.
    source : str
        The table's name (a file path) for messages.
    option : str
        The option the query came from, for messages.

    Returns
    -------
    numpy.ndarray
        Boolean mask, one entry per well.

    Raises
    ------
    PhenolensError
        One line naming the query when it is not allowed, names an unknown column or cannot be evaluated.
    """
    return select_rows(table, query, source, option)


def prepare_profiles(table: pd.DataFrame, columns: ProfileColumns, source: str = "profile table") -> PreparedProfiles:
    """Validate a well-level profile table and drop what cannot be used, counting every drop.

    Errors (PhenolensError): a named metadata column is missing, a feature column is not numeric,
    there are no features, the control query is invalid or matches no well, or no plate keeps
    at least two control wells. Dropped with a warning: features with more than 5% missing or
    infinite values, wells with a missing/infinite value in the remaining features, plates with
    fewer than two control wells, treated wells without a treatment label.
    """
    for role, column in columns.named().items():
        if column not in table.columns:
            raise PhenolensError(
                f"{source}: missing metadata column {column!r} (the {role} column); add it or pass --{role}-column with another name"
            )
    named = set(columns.named().values())
    features = [c for c in feature_columns(table) if c not in named]
    require_numeric_features(table, features, source)
    table = table.reset_index(drop=True)
    quality: dict = {"source": source, "wells_in": len(table), "features_in": len(features)}

    values = table[features].to_numpy(dtype=np.float64)
    finite = np.isfinite(values)
    quality["non_finite_values"] = int((~finite).sum())
    missing_fraction = 1.0 - finite.mean(axis=0)
    dropped_features = [f for f, fraction in zip(features, missing_fraction) if fraction > MISSING_FEATURE_FRACTION]
    kept = missing_fraction <= MISSING_FEATURE_FRACTION
    features = [f for f, keep in zip(features, kept) if keep]
    if not features:
        raise PhenolensError(f"{source}: every feature has more than {MISSING_FEATURE_FRACTION:.0%} missing or infinite values; nothing to profile")
    complete_wells = finite[:, kept].all(axis=1)
    quality["features_dropped_non_finite"] = dropped_features
    quality["wells_dropped_non_finite"] = int((~complete_wells).sum())
    if dropped_features or not complete_wells.all():
        log.warning(
            "%s: dropped %d feature(s) with >%.0f%% missing/infinite values and %d well(s) with missing/infinite values",
            source,
            len(dropped_features),
            100 * MISSING_FEATURE_FRACTION,
            int((~complete_wells).sum()),
        )

    is_control = select_wells(table, columns.controls, source)
    if not is_control.any():
        raise PhenolensError(f"{source}: the control query {columns.controls!r} matches no well; check it against the metadata values")
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
    candidate_features = set(feature_columns(table))
    metadata = [c for c in table.columns if c not in candidate_features or c in named]
    clean = table.loc[keep, metadata + features].reset_index(drop=True)
    quality.update(wells=len(clean), features=len(features), controls=int(is_control[keep].sum()), plates=int(clean[columns.plate].nunique()))
    return PreparedProfiles(clean, features, is_control[keep], quality)
