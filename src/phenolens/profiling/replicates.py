"""Replicate reproducibility: percent replicating (vectorised) and mAP of replicate retrieval (copairs).

Percent replicating (Way et al. 2022; as in the anomaly-representation work): a treatment's
replicate correlation is the median Pearson correlation over all pairs of its replicate wells.
The null is the same statistic over random groups of wells of the same sizes, each group drawn
from distinct treatments, repeated `null_repeats` times; the threshold is the null's 90th
percentile, and the score is the fraction of treatments (with two or more replicates) above it.
The null is a Monte-Carlo draw, so the score moves with the seed: its noise shrinks with the null's
total size, not with the groups per treatment, so a study with few treatments draws more per treatment
(`null_draws`, at least `NULL_GROUPS_MINIMUM` in all); `null_standard_error` says how much is left.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass

import numpy as np
import pandas as pd

from phenolens.core.errors import PhenolensError
from phenolens.core.seeding import numpy_rng

# Memory for one chunk of stacked replicate profiles (groups x replicates x features, float64).
CHUNK_BYTES = 64 * 2**20

NULL_GROUPS_MINIMUM = 50_000
"""Fewest null groups in all: on BBBC021 (103 treatments) about 500 per treatment, where the score's seed-to-seed SD
falls under 0.005 (docs/results.md, session 17); a study of 10,000 treatments or more draws 5 per treatment anyway."""

NULL_RESAMPLES = 200
"""Bootstrap resamples of the null in `null_standard_error`."""

SIMILARITY_DECIMALS = 12
"""Decimals the similarities of `replicate_map_against_controls` are ranked at. Replicate and control similarities
come from different products (pairs vs plate blocks) whose last bits differ, so a replicate whose profile equals a
control's would be ranked above or below it by rounding noise; copairs computes both alike and ranks the tie
replicates first."""


@dataclass
class ReplicateResult:
    """Per-treatment replicate correlations, the null, the threshold and the score.

    Attributes
    ----------
    treatments : pandas.DataFrame
        Index: treatment; columns n_replicates, replicate_correlation, reproducible.
    null : numpy.ndarray
        Median correlation of every null group.
    null_sizes : numpy.ndarray
        Wells in every null group (the replicate count it matches).
    percentile : float
        Percentile of the null taken as the threshold.
    threshold : float
        That percentile.
    percent_replicating : float
        Share of the treatments whose replicate correlation exceeds it.
    single_replicate : int
        Treatments with one well (excluded).
    """

    treatments: pd.DataFrame
    null: np.ndarray
    null_sizes: np.ndarray
    percentile: float
    threshold: float
    percent_replicating: float
    single_replicate: int


def row_standardize(values: np.ndarray) -> np.ndarray:
    """Centre each row and scale it to unit norm, so dot products of rows are Pearson correlations.

    Parameters
    ----------
    values : numpy.ndarray
        (rows, features).

    Returns
    -------
    numpy.ndarray
        Centred unit-norm rows (NaN for a constant row).
    """
    centred = values - values.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(centred, axis=1, keepdims=True)
    return centred / np.where(norm > 0, norm, np.nan)


def median_pairwise_correlations(unit_rows: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Median correlation over all pairs inside each group.

    `unit_rows` comes from `row_standardize`; `groups` is an (n_groups, k) index matrix, k >= 2.

    Parameters
    ----------
    unit_rows : numpy.ndarray or RowFile
        Rows from `row_standardize` (read by index, a chunk of groups at a time).
    groups : numpy.ndarray
        (n_groups, k) row indices, k >= 2.

    Returns
    -------
    numpy.ndarray
        One median correlation per group.
    """
    n_groups, size = groups.shape
    upper = np.triu_indices(size, k=1)
    chunk = max(1, CHUNK_BYTES // max(1, size * unit_rows.shape[1] * 8))
    medians = np.empty(n_groups)
    for start in range(0, n_groups, chunk):
        stacked = unit_rows[groups[start : start + chunk]].astype(np.float64, copy=False)  # float32 rows: sums in float64
        correlations = np.einsum("gkp,glp->gkl", stacked, stacked)
        medians[start : start + chunk] = np.median(correlations[:, upper[0], upper[1]], axis=1)
    return medians


def defined_rows(unit_rows: np.ndarray) -> np.ndarray:
    """Mask of the rows with no NaN: `row_standardize` gives a constant row NaN (it correlates with nothing).

    Parameters
    ----------
    unit_rows : numpy.ndarray or RowFile
        Rows from `row_standardize` (read by index, a chunk at a time).

    Returns
    -------
    numpy.ndarray
        (rows,) bool.
    """
    chunk = max(1, CHUNK_BYTES // max(1, unit_rows.shape[1] * 8))
    defined = np.empty(len(unit_rows), dtype=bool)
    for start in range(0, len(unit_rows), chunk):
        index = np.arange(start, min(start + chunk, len(unit_rows)))
        defined[index] = np.isfinite(unit_rows[index]).all(axis=1)
    return defined


def groups_by_label(codes: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """For each group size k: (labels, (n_labels, k) index matrix) of the labels with k members.

    Parameters
    ----------
    codes : numpy.ndarray
        Integer label of every row.

    Returns
    -------
    dict
        Group size -> (labels of that size, (n_labels, size) row-index matrix).
    """
    order = np.argsort(codes, kind="stable")
    labels, starts, counts = np.unique(codes[order], return_index=True, return_counts=True)
    by_size = {}
    for size in np.unique(counts):
        chosen = counts == size
        by_size[int(size)] = (labels[chosen], order[starts[chosen][:, None] + np.arange(size)])
    return by_size


def draw_distinct(n_items: int, size: int, n_rows: int, rng: np.random.Generator, method: str = "auto") -> np.ndarray:
    """(n_rows, size) indices in ``range(n_items)``, each row a uniformly random `size`-subset (no repeats).

    Parameters
    ----------
    n_items : int
        How many items to choose from.
    size : int
        Items per row, 1 <= size <= n_items.
    n_rows : int
        Independent rows to draw.
    rng : numpy.random.Generator
        The random source.
    method : {"auto", "floyd", "keys"}
        ``floyd``: Floyd's algorithm, one vectorised step per column, O(n_rows * size^2), best when
        size^2 is small next to n_items; ``keys``: the `size` smallest of n_items uniform keys per row,
        O(n_rows * n_items), best when size is a sizeable share of n_items; ``auto`` picks the cheaper.

    Returns
    -------
    numpy.ndarray
        int64 indices; each row's set is uniform over all size-subsets (the order inside a row is not).
    """
    if not 1 <= size <= n_items:
        raise ValueError(f"cannot draw {size} distinct items from {n_items}")
    if method == "auto":
        method = "floyd" if size * size <= n_items else "keys"
    if method == "floyd":
        chosen = np.empty((n_rows, size), dtype=np.int64)
        for column, top in enumerate(range(n_items - size, n_items)):
            candidate = rng.integers(0, top + 1, size=n_rows)
            taken = (chosen[:, :column] == candidate[:, None]).any(axis=1)
            chosen[:, column] = np.where(taken, top, candidate)
        return chosen
    if method != "keys":
        raise ValueError(f"unknown method {method!r}")
    rows_per_chunk = max(1, CHUNK_BYTES // (8 * n_items))
    parts = []
    for start in range(0, n_rows, rows_per_chunk):
        keys = rng.random((min(rows_per_chunk, n_rows - start), n_items))
        parts.append(np.argpartition(keys, size - 1, axis=1)[:, :size].astype(np.int64))
    return np.concatenate(parts) if parts else np.empty((0, size), dtype=np.int64)


def sample_null_groups(codes: np.ndarray, size: int, n_groups: int, rng: np.random.Generator, ranks: np.ndarray | None = None) -> np.ndarray:
    """(n_groups, size) well indices for the percent-replicating null, drawn exactly.

    Each row takes `size` distinct labels uniformly without replacement (`draw_distinct`), then one
    well of each label uniformly among that label's wells; valid for any size up to the number of labels. Labels are
    walked in code order (names are identity) and a label's wells in `ranks` order, so the draw does not depend on
    where the wells sit in the table.

    Parameters
    ----------
    codes : numpy.ndarray
        Integer label (treatment) of every well.
    size : int
        Wells per group (the replicate count being matched).
    n_groups : int
        Groups to draw.
    rng : numpy.random.Generator
        The random source.
    ranks : numpy.ndarray, optional
        Canonical rank of every well (`phenolens.profiling.identity.well_ranks`); default: table order.

    Returns
    -------
    numpy.ndarray
        (n_groups, size) int64 row indices into `codes`.

    Raises
    ------
    PhenolensError
        When there are fewer labels than `size`.
    """
    order = np.argsort(codes, kind="stable") if ranks is None else np.lexsort((ranks, codes))
    _, starts, counts = np.unique(codes[order], return_index=True, return_counts=True)
    if len(counts) < size:
        raise PhenolensError(
            f"cannot draw null groups of {size} wells from distinct treatments: only {len(counts)} treatments; "
            f"percent replicating needs at least as many treatments as a treatment has replicates"
        )
    labels = draw_distinct(len(counts), size, n_groups, rng)
    return order[starts[labels] + rng.integers(0, counts[labels])]


def null_draws(labels_of_size: int, labels_replicated: int, null_repeats: int, null_minimum: int) -> int:
    """Null groups to draw for the treatments of one replicate count.

    `null_repeats` per treatment, raised so that all replicate counts together draw at least `null_minimum`,
    shared in proportion to their treatments (so the null's mix of group sizes stays the treatments' mix).

    Parameters
    ----------
    labels_of_size : int
        Treatments with this replicate count.
    labels_replicated : int
        Treatments with two or more replicates, all counts together.
    null_repeats : int
        Null groups per treatment, at least.
    null_minimum : int
        Null groups in all, at least.

    Returns
    -------
    int
        Null groups of this size.
    """
    return max(null_repeats * labels_of_size, math.ceil(null_minimum * labels_of_size / labels_replicated))


def percent_replicating(
    values: np.ndarray,
    treatments: np.ndarray,
    null_repeats: int = 5,
    percentile: float = 90.0,
    seed: int = 0,
    ranks: np.ndarray | None = None,
    null_minimum: int = NULL_GROUPS_MINIMUM,
) -> ReplicateResult:
    """Percent replicating of well profiles labelled by treatment.

    Parameters
    ----------
    values : numpy.ndarray
        Well profiles (wells x features); a constant profile (no correlation with any other well) is left
        out, as `replicate_map` leaves it out.
    treatments : numpy.ndarray
        Treatment label of every well; treatments with one well are excluded (and counted), wells without
        one (None/NaN), or with a constant profile (no correlation with anything), are left out.
    null_repeats : int
        Null groups drawn per treatment of each replicate count (`sample_null_groups`), at least.
    percentile : float
        Percentile of the null a treatment's median replicate correlation must exceed.
    seed : int
        Seed of the null draw.
    ranks : numpy.ndarray, optional
        Canonical rank of every well (`phenolens.profiling.identity.well_ranks`): the null walks a treatment's wells
        in this order, so the same wells in another row order draw the same null; default: table order.
    null_minimum : int
        Null groups in all, at least (`null_draws`): the score's Monte-Carlo noise shrinks with the null's total size.

    Returns
    -------
    ReplicateResult
        Per-treatment correlations, the null, the threshold and the score.

    Raises
    ------
    PhenolensError
        When no treatment has two wells, or a replicate count exceeds the number of treatments.
    """
    unit = row_standardize(np.asarray(values, dtype=np.float64))
    return percent_replicating_of_unit_rows(unit, treatments, null_repeats, percentile, seed, ranks, null_minimum)


def percent_replicating_of_unit_rows(
    unit: np.ndarray,
    treatments: np.ndarray,
    null_repeats: int = 5,
    percentile: float = 90.0,
    seed: int = 0,
    ranks: np.ndarray | None = None,
    null_minimum: int = NULL_GROUPS_MINIMUM,
) -> ReplicateResult:
    """`percent_replicating` of rows already centred and scaled to unit norm (`row_standardize`).

    A study streamed plate by plate keeps its rows in this form (float32 is enough), so the
    correlations are dot products and no float64 copy of the whole study is made; its rows stay on
    disk (`phenolens.profiling.rows.RowFile`) and only the groups' rows are read.

    Parameters
    ----------
    unit : numpy.ndarray or RowFile
        (wells, features) unit rows (float32 or float64), read by index a chunk of groups at a time; NaN
        rows (constant profiles) are left out.
    treatments : numpy.ndarray
        Treatment label of every well (wells without one, or with a constant profile: NaN rows, are left out).
    null_repeats, percentile, seed, ranks, null_minimum
        As in `percent_replicating`.

    Returns
    -------
    ReplicateResult
        Per-treatment correlations, the null, the threshold and the score.

    Raises
    ------
    PhenolensError
        When no treatment has two wells, or a replicate count exceeds the number of treatments.
    """
    codes, names = pd.factorize(pd.Series(treatments), sort=True)
    # a well without a treatment (code -1) is nobody's replicate, nor in the null; nor is a constant well (a NaN unit row:
    # no correlation with anything, as `replicate_map` leaves it out), whose NaN would make the null's percentile NaN
    labelled = np.flatnonzero((codes >= 0) & defined_rows(unit))
    codes = codes[labelled]
    ranks = None if ranks is None else np.asarray(ranks)[labelled]
    rng = numpy_rng(seed)
    by_size = groups_by_label(codes)
    single = len(by_size.get(1, ((), ()))[0])
    replicated = sum(len(group_labels) for size, (group_labels, _) in by_size.items() if size >= 2)
    labels, medians, replicates, null, null_sizes = [], [], [], [], []
    for size, (group_labels, groups) in by_size.items():
        if size < 2:
            continue
        labels.append(group_labels)
        medians.append(median_pairwise_correlations(unit, labelled[groups]))
        replicates.append(np.full(len(group_labels), size))
        draws = null_draws(len(group_labels), replicated, null_repeats, null_minimum)
        null.append(median_pairwise_correlations(unit, labelled[sample_null_groups(codes, size, draws, rng, ranks)]))
        null_sizes.append(np.full(len(null[-1]), size))
    if not labels:
        raise PhenolensError("no treatment has two or more replicate wells; percent replicating needs replicates")
    null_values = np.concatenate(null)
    threshold = float(np.percentile(null_values, percentile))
    table = pd.DataFrame(
        {"n_replicates": np.concatenate(replicates), "replicate_correlation": np.concatenate(medians)},
        index=pd.Index(np.asarray(names)[np.concatenate(labels)], name="treatment"),
    ).sort_index()
    table["reproducible"] = table["replicate_correlation"] > threshold
    return ReplicateResult(table, null_values, np.concatenate(null_sizes), percentile, threshold, float(table["reproducible"].mean()), single)


def null_standard_error(result: ReplicateResult, resamples: int = NULL_RESAMPLES, seed: int = 0) -> float:
    """Monte-Carlo standard error of percent replicating: how much it moves with the seed of the null draw.

    The treatments' replicate correlations are fixed; only the threshold is random (a percentile of
    independently drawn null groups). A bootstrap of the null groups, resampled within each group size
    (the draw fixes how many groups of each size there are), re-derives the threshold `resamples` times;
    the standard deviation of the resulting scores estimates the seed-to-seed standard deviation.

    Parameters
    ----------
    result : ReplicateResult
        From `percent_replicating` or `percent_replicating_of_unit_rows`.
    resamples : int
        Bootstrap resamples of the null, >= 2.
    seed : int
        Seed of the resampling.

    Returns
    -------
    float
        Standard deviation of percent replicating over the resamples.
    """
    rng = numpy_rng(seed)
    strata = [np.flatnonzero(result.null_sizes == size) for size in np.unique(result.null_sizes)]
    correlations = np.sort(result.treatments["replicate_correlation"].to_numpy())
    rows_per_chunk = max(1, CHUNK_BYTES // (16 * len(result.null)))  # the drawn indices and their values, per resample
    thresholds = np.empty(resamples)
    for start in range(0, resamples, rows_per_chunk):
        rows = min(rows_per_chunk, resamples - start)
        drawn = np.concatenate([stratum[rng.integers(0, len(stratum), size=(rows, len(stratum)))] for stratum in strata], axis=1)
        thresholds[start : start + rows] = np.percentile(result.null[drawn], result.percentile, axis=1)
    above = len(correlations) - np.searchsorted(correlations, thresholds, side="right")  # `reproducible`: correlation > threshold
    return float(np.std(above, ddof=1)) / len(correlations)  # on the integer counts: exactly 0 when no resample moves one


@dataclass
class ReplicateMap:
    """mAP of replicate retrieval, as `replicate_map` returns it.

    Attributes
    ----------
    mean_average_precision : float
        Mean over treatments of the mean average precision of retrieving their replicate wells.
    fraction_retrieved : float
        Fraction of treatments whose mAP has an FDR-corrected p-value below `alpha`.
    treatments : pandas.DataFrame
        Per treatment: copairs' mean_average_precision, p_value, corrected_p_value, below_p, below_corrected_p.
    """

    mean_average_precision: float
    fraction_retrieved: float
    treatments: pd.DataFrame


def replicate_map(
    values: np.ndarray, treatments: np.ndarray, seed: int = 0, null_size: int = 10000, alpha: float = 0.05, negatives_within: np.ndarray | None = None
) -> ReplicateMap:
    """Mean average precision of retrieving a treatment's replicate wells among all wells (copairs, Pearson correlation).

    Parameters
    ----------
    values : numpy.ndarray
        Well profiles (wells x features), finite; constant profiles (no correlation with anything) are left out.
    treatments : numpy.ndarray
        Treatment label of every well; wells without one (None/NaN) are left out.
    seed : int
        Seed of copairs' null distribution.
    null_size : int
        Size of copairs' null distribution per replicate count.
    alpha : float
        Significance level of the FDR-corrected p-values.
    negatives_within : numpy.ndarray, optional
        A label per well (e.g. the batch): non-replicates count only when they share the query's
        label, so a signature the replicates share with their whole batch does not help retrieval.

    Returns
    -------
    ReplicateMap
        The mean mAP, the fraction retrieved and the per-treatment table.

    Raises
    ------
    PhenolensError
        When no treatment has two or more wells with non-constant profiles, when every well has the same
        treatment, or when no well has a non-replicate sharing its `negatives_within` label.
    """
    from copairs.map import average_precision, mean_average_precision
    from copairs.matching import UnpairedException

    values = np.asarray(values, dtype=np.float64)
    varying = np.ptp(values, axis=1) > 0  # a constant profile has no correlation with any other well: it can neither retrieve nor be retrieved
    varying &= pd.notna(pd.Series(treatments)).to_numpy()  # nor can a well without a treatment (it was the treatment 'nan')
    meta = pd.DataFrame({"treatment": np.asarray(treatments).astype(str)[varying]})
    if meta.empty or meta["treatment"].value_counts().max() < 2:
        raise PhenolensError("no treatment has two or more replicate wells with non-constant profiles; mAP needs replicates")
    if meta["treatment"].nunique() < 2:
        raise PhenolensError(
            f"every treated well has the same treatment ({meta['treatment'].iloc[0]!r}), so there are no non-replicates to rank against; "
            "check that the treatment column names the treatments (--treatment-column)"
        )
    negatives_sameby = []
    if negatives_within is not None:
        meta["within"] = np.asarray(negatives_within).astype(str)[varying]
        negatives_sameby = ["within"]
    try:
        scores = average_precision(
            meta, values[varying], ["treatment"], [], negatives_sameby, ["treatment"], distance="correlation", progress_bar=False
        )
    except UnpairedException:  # only `negatives_within` can leave a query without non-replicates now
        raise PhenolensError(
            "no well has a well of another treatment in its own batch, so mAP within batches has no non-replicates; check the batch column"
        ) from None
    with tempfile.TemporaryDirectory(prefix="copairs-") as cache:
        maps = mean_average_precision(scores, ["treatment"], null_size=null_size, threshold=alpha, seed=seed, progress_bar=False, cache_dir=cache)
    table = maps.drop(columns=["indices"]).set_index("treatment")
    return ReplicateMap(float(table["mean_average_precision"].mean()), float(table["below_corrected_p"].mean()), table)


def control_similarities(unit: np.ndarray, plates: np.ndarray, is_control: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correlation of every treated well with every control well of its own plate (the negatives of `replicate_map_against_controls`).

    Parameters
    ----------
    unit : numpy.ndarray
        (wells, features) unit rows (`row_standardize`) of one or more plates.
    plates : numpy.ndarray
        Plate of every well.
    is_control : numpy.ndarray
        Control mask.

    Returns
    -------
    tuple of numpy.ndarray
        (query: the treated well's position among the treated wells, in row order; similarity), one
        entry per (treated well, same-plate control) pair.
    """
    plates = np.asarray(plates).astype(str)
    treated_rank = np.cumsum(~is_control) - 1
    queries, similarities = [np.zeros(0, dtype=np.int64)], [np.zeros(0)]  # no well at all (a file whose plates were all left out): no pair
    for plate in pd.unique(plates):
        on_plate = plates == plate
        treated, controls = np.flatnonzero(on_plate & ~is_control), np.flatnonzero(on_plate & is_control)
        block = unit[treated].astype(np.float64) @ unit[controls].astype(np.float64).T
        queries.append(np.repeat(treated_rank[treated], len(controls)))
        similarities.append(block.ravel())
    return np.concatenate(queries).astype(np.int64), np.concatenate(similarities)


def replicate_pairs(treatments: np.ndarray) -> np.ndarray:
    """Every pair (i < j) of wells that share a treatment.

    Parameters
    ----------
    treatments : numpy.ndarray
        Treatment label of every well.

    Returns
    -------
    numpy.ndarray
        (pairs, 2) int64 row indices.
    """
    codes = pd.factorize(pd.Series(treatments), sort=True)[0]
    pairs = [np.empty((0, 2), dtype=np.int64)]
    for size, (_, groups) in groups_by_label(codes).items():
        if size >= 2:
            first, second = np.triu_indices(size, k=1)
            pairs.append(np.stack([groups[:, first].ravel(), groups[:, second].ravel()], axis=1).astype(np.int64))
    return np.concatenate(pairs)


def pair_correlations(unit: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Dot products of unit rows (Pearson correlations) for index pairs, in float64, chunked.

    Parameters
    ----------
    unit : numpy.ndarray or RowFile
        (wells, features) unit rows, read by index a chunk of pairs at a time.
    pairs : numpy.ndarray
        (pairs, 2) row indices.

    Returns
    -------
    numpy.ndarray
        One correlation per pair.
    """
    chunk = max(1, CHUNK_BYTES // max(1, 2 * unit.shape[1] * 8))
    result = np.empty(len(pairs))
    for start in range(0, len(pairs), chunk):
        part = pairs[start : start + chunk]
        result[start : start + chunk] = np.einsum("ij,ij->i", unit[part[:, 0]].astype(np.float64), unit[part[:, 1]].astype(np.float64))
    return result


def replicate_map_against_controls(
    unit: np.ndarray,
    treatments: np.ndarray,
    negative_queries: np.ndarray,
    negative_similarities: np.ndarray,
    seed: int = 0,
    null_size: int = 10000,
    alpha: float = 0.05,
) -> ReplicateMap:
    """mAP of retrieving a treatment's replicate wells (on any plate) against the control wells of the query's own plate.

    This is the JUMP evaluations' phenotypic-activity mAP (copairs with a reference index on the
    controls and ``neg_sameby`` the plate): for every treated well, its replicates are the positives
    and its plate's controls (`control_similarities`) the negatives; copairs turns the ranked lists
    into average precisions (`ap_contiguous`) and their means into p-values. Its cost grows with the
    wells, not with their square, so it runs on whole studies.

    Parameters
    ----------
    unit : numpy.ndarray or RowFile
        (treated wells, features) unit rows (only the replicate pairs' rows are read); a NaN row (a constant
        profile) is left out, and so is a control whose similarities are NaN.
    treatments : numpy.ndarray
        Treatment of every treated well.
    negative_queries, negative_similarities : numpy.ndarray
        From `control_similarities`: the treated well of each negative pair and its similarity.
    seed, null_size, alpha
        As in `replicate_map`.

    Returns
    -------
    ReplicateMap
        The mean mAP, the fraction retrieved and the per-treatment table.

    Raises
    ------
    PhenolensError
        When no treatment has two or more wells, or no plate has controls.
    """
    from copairs.compute import ap_contiguous
    from copairs.map import mean_average_precision
    from copairs.map.normalization import normalize_ap

    treatments = np.asarray(treatments).astype(str)
    pairs = replicate_pairs(treatments)
    if not len(pairs):
        raise PhenolensError("no treatment has two or more replicate wells; mAP needs replicates")
    if not len(negative_queries):
        raise PhenolensError("no treated well shares a plate with a control well; mAP against controls needs them")
    positives = pair_correlations(unit, pairs)
    # a constant profile correlates with nothing (NaN): left out, as `replicate_map` leaves it out
    defined, negatives_defined = np.isfinite(positives), np.isfinite(negative_similarities)
    pairs, positives = pairs[defined], positives[defined]
    negative_queries, negative_similarities = negative_queries[negatives_defined], negative_similarities[negatives_defined]
    if not len(pairs):
        raise PhenolensError("no treatment has two or more replicate wells with non-constant profiles; mAP needs replicates")
    queries = np.concatenate([pairs.ravel(), negative_queries])
    similarities = np.round(np.concatenate([np.repeat(positives, 2), negative_similarities]), SIMILARITY_DECIMALS)  # exact ties stay ties
    relevant = np.concatenate([np.ones(pairs.size, dtype=np.uint32), np.zeros(len(negative_queries), dtype=np.uint32)])
    order = np.lexsort([-similarities, queries])  # by query, most similar first (copairs' rank lists)
    ranked, counts = np.unique(queries, return_counts=True)
    scores, configurations = ap_contiguous(relevant[order], counts.astype(np.uint32))
    has_positive = configurations[:, 0] > 0
    frame = pd.DataFrame(
        {
            "treatment": treatments[ranked][has_positive],
            "average_precision": scores[has_positive],
            "n_pos_pairs": configurations[has_positive, 0],
            "n_total_pairs": configurations[has_positive, 1],
        }
    )
    frame["normalized_average_precision"] = normalize_ap(
        frame["average_precision"].to_numpy(), frame["n_pos_pairs"].to_numpy(), (frame["n_total_pairs"] - frame["n_pos_pairs"]).to_numpy()
    )
    with tempfile.TemporaryDirectory(prefix="copairs-") as cache:
        maps = mean_average_precision(frame, ["treatment"], null_size=null_size, threshold=alpha, seed=seed, progress_bar=False, cache_dir=cache)
    table = maps.drop(columns=["indices"], errors="ignore").set_index("treatment")
    return ReplicateMap(float(table["mean_average_precision"].mean()), float(table["below_corrected_p"].mean()), table)
