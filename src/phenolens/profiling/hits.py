"""Hits: treatments whose anomaly score exceeds the negative-control distribution at a chosen FDR."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import false_discovery_control

from phenolens.core.errors import PhenolensError
from phenolens.core.seeding import numpy_rng

KEY_BLOCK_BYTES = 32 * 2**20  # uniform keys of one block of null groups (float64)


def anomaly_score(values: np.ndarray) -> np.ndarray:
    """One number per well: the mean squared value of its control-referenced features (mean z^2).

    Parameters
    ----------
    values : numpy.ndarray
        (wells, features) control-referenced values.

    Returns
    -------
    numpy.ndarray
        One score per well.
    """
    return np.mean(np.asarray(values, dtype=np.float64) ** 2, axis=1)


def call_hits(
    scores: np.ndarray,
    treatments: np.ndarray,
    control_scores: np.ndarray,
    fdr: float = 0.05,
    permutations: int = 10000,
    seed: int = 0,
    control_ranks: np.ndarray | None = None,
) -> pd.DataFrame:
    """Test every treatment's mean well score against means of as many random control wells.

    The p-value is (1 + #null means >= observed) / (1 + permutations), with `permutations` control
    groups of the treatment's size drawn without replacement (with replacement when the treatment
    has more wells than there are controls); Benjamini-Hochberg q-values; `hit` = q < fdr.
    `control_scores` must come from control wells that were not used to fit the representation.

    Parameters
    ----------
    scores : numpy.ndarray
        Anomaly score of every treated well.
    treatments : numpy.ndarray
        Treatment of every treated well.
    control_scores : numpy.ndarray
        Scores of held-out control wells (the null).
    fdr : float
        Benjamini-Hochberg false discovery rate.
    permutations : int
        Random control groups per treatment size.
    seed : int
        Seed of the draws.
    control_ranks : numpy.ndarray, optional
        Canonical rank of every control well (`phenolens.profiling.identity.well_ranks`): the draws walk the
        controls in this order, so the same wells in another row order draw the same null; default: their order.

    Returns
    -------
    pandas.DataFrame
        Per treatment: score, wells, p_value, q_value, hit.

    Raises
    ------
    PhenolensError
        With fewer than two control wells.
    """
    control_scores = np.asarray(control_scores, dtype=np.float64)
    if control_ranks is not None:
        control_scores = control_scores[np.argsort(control_ranks, kind="stable")]
    if control_scores.size < 2:
        raise PhenolensError(f"hit calling needs two or more held-out control wells (got {control_scores.size})")
    table = pd.DataFrame({"score": scores, "treatment": treatments}).groupby("treatment")["score"].agg(["mean", "count"])
    rng = numpy_rng(seed)
    exceed = np.zeros(len(table))
    for size in np.unique(table["count"]):
        null_means = np.sort(_null_means(control_scores, int(size), permutations, rng))
        members = (table["count"] == size).to_numpy()
        exceed[members] = permutations - np.searchsorted(null_means, table["mean"].to_numpy()[members], side="left")
    table["p_value"] = (1.0 + exceed) / (1.0 + permutations)
    table["q_value"] = false_discovery_control(table["p_value"].to_numpy(), method="bh")
    table["hit"] = table["q_value"] < fdr
    return table.rename(columns={"mean": "score", "count": "n_wells"})


def _null_means(control_scores: np.ndarray, size: int, permutations: int, rng: np.random.Generator) -> np.ndarray:
    """Means of `permutations` random groups of `size` control scores (without replacement while there are enough).

    Without replacement, each group is the `size` smallest of one row of uniform keys per control; the
    keys are drawn a block of rows at a time (the same stream as one draw), so memory stays at one block
    however many controls a study has.
    """
    if size > control_scores.size:
        return control_scores[rng.integers(0, control_scores.size, size=(permutations, size))].mean(axis=1)
    rows = max(1, KEY_BLOCK_BYTES // (8 * control_scores.size))
    means = np.empty(permutations)
    for start in range(0, permutations, rows):
        keys = rng.random((min(rows, permutations - start), control_scores.size))
        means[start : start + len(keys)] = control_scores[np.argpartition(keys, size - 1, axis=1)[:, :size]].mean(axis=1)
    return means
