"""Control-referenced standardisation, the seeded control split, and feature selection (pycytominer).

Plates in high-content screens often hold few negative controls (BBBC021: 6 per plate, of which
40 % train an autoencoder), too few to estimate a per-plate spread of hundreds of features.
`standardize` therefore centres each plate on its own reference controls but can pool the spread
(the within-plate standard deviation) over the plates of a batch or over all plates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from phenolens.core.errors import PhenolensError
from phenolens.core.seeding import numpy_rng
from phenolens.profiling.settings import SCALE_POOLING

TRAIN, VALIDATION, TEST = "train", "validation", "test"


def split_controls(
    plates: Sequence,
    is_control: np.ndarray,
    fractions: tuple[float, float, float] = (0.4, 0.1, 0.5),
    seed: int = 0,
    ranks: np.ndarray | None = None,
) -> np.ndarray:
    """Split the control wells of every plate at random into train / validation / test.

    Returns one role per well ('train', 'validation', 'test'; '' for non-controls). Counts per
    plate are the rounded cumulative fractions, with at least one train and one test control on
    every plate that has two or more; validation wells may be absent from small plates. The seeded
    random keys go to the controls in `ranks` order, so the same wells in another row order split alike.

    Parameters
    ----------
    plates : sequence
        Plate of every well.
    is_control : numpy.ndarray
        Control mask.
    fractions : tuple of float
        Train, validation, test fractions (sum 1).
    seed : int
        Seed of the split.
    ranks : numpy.ndarray, optional
        Canonical rank of every well (`phenolens.profiling.identity.well_ranks`); default: table order.

    Returns
    -------
    numpy.ndarray
        Role of every well.

    Raises
    ------
    PhenolensError
        When the fractions are negative or do not sum to 1.
    """
    if not np.isclose(sum(fractions), 1.0) or min(fractions) < 0:
        raise PhenolensError(f"control split fractions {fractions} must be non-negative and sum to 1")
    is_control = np.asarray(is_control, dtype=bool)
    plate_codes = pd.factorize(np.asarray(plates))[0]
    controls = np.flatnonzero(is_control)
    keys = numpy_rng(seed).random(len(controls))
    if ranks is not None:  # the k-th control in canonical order takes the k-th key
        keys = keys[np.argsort(np.argsort(np.asarray(ranks)[controls], kind="stable"), kind="stable")]
    order = controls[np.lexsort((keys, plate_codes[controls]))]
    ordered_plates = plate_codes[order]
    first = np.searchsorted(ordered_plates, ordered_plates, side="left")
    rank = np.arange(len(order)) - first
    count = np.bincount(ordered_plates)[ordered_plates]
    n_train = np.maximum(1, np.minimum(np.floor(fractions[0] * count + 0.5), count - 1))  # a test control is left on every plate of 2+
    n_train_val = np.maximum(n_train, np.floor((fractions[0] + fractions[1]) * count + 0.5))
    n_train_val = np.minimum(n_train_val, count - 1)
    roles = np.full(len(plate_codes), "", dtype=object)
    roles[order] = np.where(rank < n_train, TRAIN, np.where(rank < n_train_val, VALIDATION, TEST))
    return roles


def _indicator(codes: np.ndarray, n_groups: int) -> sparse.csr_matrix:
    return sparse.csr_matrix((np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(n_groups, len(codes)))


@dataclass
class Standardization:
    """Per-group centres (one row per centre group) and pooled spreads (one row per scale group)."""

    center: pd.DataFrame
    scale: pd.DataFrame

    def transform(self, values: np.ndarray, center_keys: Sequence, scale_keys: Sequence) -> np.ndarray:
        """Standardise rows with the centre/scale of their groups; a group never seen in fit is an error."""
        center_keys, scale_keys = np.asarray(center_keys).astype(str), np.asarray(scale_keys).astype(str)
        for keys, known, what in ((center_keys, self.center.index, "plate"), (scale_keys, self.scale.index, "scale group")):
            unseen = sorted(map(str, set(keys) - set(known)))
            if unseen:
                raise PhenolensError(f"{what} {unseen[0]!r} was not in the table the profiler was fitted on; fit on a table that includes it")
        center = self.center.to_numpy()[self.center.index.get_indexer(center_keys)]
        scale = self.scale.to_numpy()[self.scale.index.get_indexer(scale_keys)]
        return (values - center) / scale


def standardize(
    values: np.ndarray,
    reference: np.ndarray,
    center_keys: Sequence,
    scale_keys: Sequence,
    leave_one_out: bool = True,
) -> tuple[np.ndarray, Standardization]:
    """Centre every row on the mean of its centre group's reference rows and divide by the pooled
    within-group standard deviation of its scale group's reference rows.

    With `leave_one_out`, each reference row is standardised with statistics computed without it
    (so reference wells look like unseen wells, which matters for the control null of hits and
    Z'-factors); reference rows alone in their centre group keep the in-sample value. Features
    constant in the reference get scale 1. Returns the standardised values and the statistics.

    Parameters
    ----------
    values : numpy.ndarray
        (wells, features).
    reference : numpy.ndarray
        Mask of the reference rows.
    center_keys, scale_keys : sequence
        Centre group (plate) and scale group of every row.
    leave_one_out : bool
        Standardise reference rows without themselves.

    Returns
    -------
    tuple
        (standardised values, `Standardization`).

    Raises
    ------
    PhenolensError
        When a centre group has no reference rows or a scale group too few to estimate a spread.
    """
    reference = np.asarray(reference, dtype=bool)
    center_keys, scale_keys = np.asarray(center_keys).astype(str), np.asarray(scale_keys).astype(str)
    reference_rows = values[reference]
    center_names, center_codes = np.unique(center_keys[reference], return_inverse=True)
    scale_names, scale_codes = np.unique(scale_keys[reference], return_inverse=True)
    missing = sorted(map(str, set(center_keys) - set(center_names)))
    if missing:
        raise PhenolensError(f"plate {missing[0]!r} has no reference control wells to standardise against; give it controls or exclude it")
    counts = np.bincount(center_codes, minlength=len(center_names)).astype(float)
    sums = _indicator(center_codes, len(center_names)) @ reference_rows
    center = sums / counts[:, None]
    residual = reference_rows - center[center_codes]
    squares = _indicator(scale_codes, len(scale_names)) @ residual**2
    groups_per_scale = np.array([len(np.unique(center_codes[scale_codes == h])) for h in range(len(scale_names))])
    dof = np.bincount(scale_codes, minlength=len(scale_names)) - groups_per_scale
    if (dof < 1).any():
        worst = int(np.argmin(dof))
        remedy = (  # pooling cannot help a group that already pools several plates (e.g. 'all' with one test control per plate)
            "give its plates more reference control wells (more controls, or a larger share of them in --control-split)"
            if groups_per_scale[worst] > 1
            else "pool it over more plates (scale_pooling 'all')"
        )
        raise PhenolensError(f"scale group {str(scale_names[worst])!r} has one control well per plate, too few to estimate a spread; {remedy}")
    scale = np.sqrt(squares / dof[:, None])
    scale[~(scale > 0)] = 1.0
    stats = Standardization(
        center=pd.DataFrame(center, index=pd.Index(center_names, name="center")),
        scale=pd.DataFrame(scale, index=pd.Index(scale_names, name="scale")),
    )
    standardized = stats.transform(values, center_keys, scale_keys)
    if leave_one_out:
        n_group = counts[center_codes][:, None]
        can_leave = (n_group[:, 0] > 1) & (dof[scale_codes] > 1)
        shrink = n_group / np.maximum(n_group - 1, 1)
        loo_squares = squares[scale_codes] - shrink * residual**2
        loo_scale = np.sqrt(np.clip(loo_squares, 0, None) / np.maximum(dof[scale_codes] - 1, 1)[:, None])
        loo_scale[~(loo_scale > 0)] = 1.0
        loo_values = shrink * residual / loo_scale
        rows = np.flatnonzero(reference)[can_leave]
        standardized[rows] = loo_values[can_leave]
    return standardized, stats


def whole_plate_normalize(values: np.ndarray, plates: Sequence) -> np.ndarray:
    """Standardise every feature per plate with the mean and standard deviation of all its wells.

    Parameters
    ----------
    values : numpy.ndarray
        (wells, features).
    plates : sequence
        Plate of every well.

    Returns
    -------
    numpy.ndarray
        Standardised values.
    """
    everything = np.ones(len(values), dtype=bool)
    return standardize(values, everything, plates, plates, leave_one_out=False)[0]


def scale_keys_for(table: pd.DataFrame, pooling: str, plate_column: str, batch_column: str | None) -> np.ndarray:
    """The group each well's spread is pooled over: its plate, its batch, or all wells.

    Parameters
    ----------
    table : pandas.DataFrame
        The profile table.
    pooling : str
        'plate', 'batch' or 'all'.
    plate_column : str
        Plate column.
    batch_column : str or None
        Batch column ('batch' pooling falls back to 'all' without one).

    Returns
    -------
    numpy.ndarray
        The scale group of every well.

    Raises
    ------
    PhenolensError
        For an unknown pooling.
    """
    if pooling not in SCALE_POOLING:
        raise PhenolensError(f"scale pooling {pooling!r} is not one of {', '.join(SCALE_POOLING)}")
    if pooling == "plate":
        return table[plate_column].astype(str).to_numpy()
    if pooling == "batch" and batch_column:
        return table[batch_column].astype(str).to_numpy()
    return np.full(len(table), "all", dtype=object)
