"""Slow, obviously-correct implementations kept as oracles for tests and benchmarks (not for use).

They follow the definitions literally, with Python loops over treatments and pairs, so the
vectorised code in `replicates.py` can be checked against them value for value.
"""

from __future__ import annotations

import itertools
import statistics

import numpy as np
import pandas as pd

from phenolens.core.seeding import numpy_rng
from phenolens.profiling.replicates import NULL_GROUPS_MINIMUM, groups_by_label, null_draws, sample_null_groups


def median_pair_correlation(values: np.ndarray, rows) -> float:
    """Median Pearson correlation over every pair of `rows`, one np.corrcoef call per pair.

    Parameters
    ----------
    values : numpy.ndarray
        (rows, features).
    rows : sequence of int
        The group's rows.

    Returns
    -------
    float
        The median pairwise Pearson correlation.
    """
    return statistics.median(np.corrcoef(values[a], values[b])[0, 1] for a, b in itertools.combinations(rows, 2))


def null_groups(
    treatments, null_repeats: int = 5, seed: int = 0, ranks: np.ndarray | None = None, null_minimum: int = NULL_GROUPS_MINIMUM
) -> list[np.ndarray]:
    """The null groups `percent_replicating` draws for these labels and seed, in its order.

    Parameters
    ----------
    treatments : sequence
        Treatment label of every well.
    null_repeats : int
        Null groups per treatment.
    seed : int
        The seed `percent_replicating` is given.
    ranks : numpy.ndarray, optional
        The canonical ranks `percent_replicating` is given.
    null_minimum : int
        The fewest null groups in all `percent_replicating` is given.

    Returns
    -------
    list of numpy.ndarray
        The null groups, in `percent_replicating`'s order.
    """
    codes, _ = pd.factorize(pd.Series(treatments), sort=True)
    rng = numpy_rng(seed)
    by_size = {size: labels for size, (labels, _) in groups_by_label(codes).items() if size >= 2}
    replicated = sum(len(labels) for labels in by_size.values())
    groups = []
    for size, labels in by_size.items():
        groups += list(sample_null_groups(codes, size, null_draws(len(labels), replicated, null_repeats, null_minimum), rng, ranks))
    return groups


def reference_percent_replicating(values: np.ndarray, treatments, groups: list[np.ndarray], percentile: float = 90.0):
    """(score, {treatment: median replicate correlation}, threshold) for given null groups.

    Parameters
    ----------
    values : numpy.ndarray
        (wells, features).
    treatments : sequence
        Treatment label of every well.
    groups : list of numpy.ndarray
        Null groups (from `null_groups`).
    percentile : float
        Percentile of the null used as the threshold.

    Returns
    -------
    tuple
        (score, {treatment: median replicate correlation}, threshold).
    """
    replicate = {}
    for name in sorted(set(treatments)):
        rows = [i for i, t in enumerate(treatments) if t == name]
        if len(rows) >= 2:
            replicate[name] = median_pair_correlation(values, rows)
    null = [median_pair_correlation(values, list(group)) for group in groups]
    threshold = float(np.percentile(null, percentile))
    return sum(value > threshold for value in replicate.values()) / len(replicate), replicate, threshold
