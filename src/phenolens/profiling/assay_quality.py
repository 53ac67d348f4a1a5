"""Assay quality: Z'-factor and Z-factor (Zhang, Chung & Oldenburg 1999, J Biomol Screen 4:67).

Both measure the separation band between two distributions of one readout relative to their
spread: 1 - 3 (sd_a + sd_b) / |mean_a - mean_b|. Z' compares positive with negative controls (the
assay's window); Z compares a sample (for example a treatment's wells) with the negative controls.
1 is ideal, 0.5-1 an excellent assay, 0-0.5 marginal, below 0 the bands overlap.

Degenerate cases: distinct means without spread give 1 (an ideal window); coinciding means give -inf with or
without spread, as there is no window (two identical constant groups are not an ideal assay: nothing tells them
apart, and a spread shrinking to 0 at equal means has -inf as its limit).

The formula is written once, in `phenolens.training.metrics` (`z_window`, `z_prime_factor`), which training's
image metrics also use and which this floor may import; `z_prime_factor` here is that function.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from phenolens.core.errors import PhenolensError
from phenolens.training.metrics import z_prime_factor, z_window


def z_factor(sample: Sequence[float] | np.ndarray, negative: Sequence[float] | np.ndarray) -> float:
    """Z-factor of a sample's readout values against the negative controls (same formula as Z').

    Returns 1 when the means differ and neither side spreads, -inf when the means coincide (with or without spread).

    Parameters
    ----------
    sample, negative : array-like
        Readout values of the sample's wells and of the negative controls.

    Returns
    -------
    float
        The Z-factor (<= 1).

    Raises
    ------
    PhenolensError
        When either side has fewer than two values or a non-finite value.
    """
    return z_prime_factor(sample, negative, names=("sample", "negative-control"))


def z_factors_by_group(values: np.ndarray, groups: Sequence, negative: np.ndarray) -> pd.Series:
    """Z-factor of every group of values against the same negative controls, vectorised (as `z_factor` per group).

    Groups with fewer than two values get NaN; the degenerate cases are those of `z_factor` (-inf where a group's
    mean is the controls').

    Parameters
    ----------
    values : numpy.ndarray
        Readout of every well.
    groups : sequence
        Group (treatment) of every well.
    negative : numpy.ndarray
        Readout of the negative-control wells.

    Returns
    -------
    pandas.Series
        Z-factor per group, named ``z_factor``.

    Raises
    ------
    PhenolensError
        When fewer than two negative-control values, or a non-finite one, are given.
    """
    negative = np.asarray(negative, dtype=np.float64)
    if negative.size < 2 or not np.isfinite(negative).all():
        raise PhenolensError(f"Z-factor: the negative-control readout needs two or more finite values (got {negative.size})")
    stats = pd.Series(np.asarray(values, dtype=np.float64)).groupby(np.asarray(groups)).agg(["mean", "std", "count"])
    gap = (stats["mean"] - negative.mean()).abs().to_numpy()
    result = pd.Series(z_window(gap, 3.0 * (stats["std"].to_numpy() + negative.std(ddof=1))), index=stats.index)
    return result.where(stats["count"] >= 2).rename("z_factor")
