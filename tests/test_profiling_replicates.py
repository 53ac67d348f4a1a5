"""Percent replicating against a slow, obviously-correct reference; mAP through copairs."""

import itertools
import math
from collections import Counter

import numpy as np
import pytest
from scipy import stats

from phenolens.core.errors import PhenolensError
from phenolens.profiling.reference import null_groups, reference_percent_replicating
from phenolens.profiling.replicates import draw_distinct, percent_replicating, replicate_map, sample_null_groups


def small_table(seed=0, treatments=12, features=15):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 5, size=treatments)  # 1..4 replicates, some singletons
    labels = np.repeat([f"t{i:02d}" for i in range(treatments)], sizes)
    signal = rng.normal(size=(treatments, features))[np.repeat(np.arange(treatments), sizes)]
    strength = rng.uniform(0, 2, size=treatments)[np.repeat(np.arange(treatments), sizes)][:, None]
    return strength * signal + rng.normal(size=(len(labels), features)), labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_percent_replicating_matches_reference(seed):
    values, labels = small_table(seed)
    result = percent_replicating(values, labels, null_repeats=5, seed=seed, null_minimum=0)  # the loop reference is slow
    expected, replicate, threshold = reference_percent_replicating(values, labels, null_groups(labels, 5, seed, null_minimum=0))
    assert result.percent_replicating == pytest.approx(expected)
    assert result.threshold == pytest.approx(threshold)
    assert result.treatments["replicate_correlation"].to_dict() == pytest.approx(replicate)
    assert result.single_replicate == sum(1 for t in set(labels) if list(labels).count(t) == 1)
    assert len(result.null) == 5 * len(replicate)


def test_null_groups_draw_distinct_treatments():
    labels = np.repeat(np.arange(6), 3)
    groups = sample_null_groups(labels, 4, 500, np.random.default_rng(0))
    assert groups.shape == (500, 4)
    assert all(len(set(labels[g])) == 4 for g in groups)
    with pytest.raises(PhenolensError, match="only 6 treatments"):
        sample_null_groups(labels, 7, 10, np.random.default_rng(0))


def test_perfect_replicates_score_one_and_noise_scores_low():
    rng = np.random.default_rng(3)
    signal = rng.normal(size=(30, 20))
    labels = np.repeat(np.arange(30), 3)
    assert percent_replicating(signal[labels] + 0.01 * rng.normal(size=(90, 20)), labels).percent_replicating == 1.0
    assert percent_replicating(rng.normal(size=(90, 20)), labels).percent_replicating < 0.35
    with pytest.raises(PhenolensError, match="two or more replicate"):
        percent_replicating(rng.normal(size=(5, 4)), np.arange(5))


def test_replicate_map_uses_copairs_and_finds_perfect_replicates():
    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(10), 3)
    exact = rng.normal(size=(10, 12))[labels] + 0.01 * rng.normal(size=(30, 12))
    result = replicate_map(exact, labels, null_size=500)
    assert result.mean_average_precision == pytest.approx(1.0)
    assert result.fraction_retrieved == 1.0 and len(result.treatments) == 10
    noise_value = replicate_map(rng.normal(size=(30, 12)), labels, null_size=500).mean_average_precision
    assert noise_value < 0.5


@pytest.mark.parametrize("missing", [None, np.nan])
def test_wells_without_a_treatment_are_left_out_of_percent_replicating_and_map(missing):
    """factorize codes a missing label -1, which indexed the last treatment's name: the missing wells were a replicate
    group shown under that treatment (a duplicated row); copairs ranked them as the treatment 'nan'/'None'."""
    values, labels = small_table(seed=5)
    rng = np.random.default_rng(9)
    extra = rng.normal(size=(4, values.shape[1]))
    with_missing = np.concatenate([labels.astype(object), [missing] * 4])
    got = percent_replicating(np.vstack([values, extra]), with_missing, seed=3)
    want = percent_replicating(values, labels, seed=3)
    assert got.treatments.index.is_unique and list(got.treatments.index) == list(want.treatments.index)
    assert got.treatments["replicate_correlation"].tolist() == pytest.approx(want.treatments["replicate_correlation"].tolist())
    assert got.threshold == pytest.approx(want.threshold) and got.percent_replicating == want.percent_replicating
    got_map = replicate_map(np.vstack([values, extra]), with_missing, null_size=200)
    want_map = replicate_map(values, labels, null_size=200)
    assert list(got_map.treatments.index) == list(want_map.treatments.index)
    assert got_map.mean_average_precision == pytest.approx(want_map.mean_average_precision)


# -- exact null groups: known answers from exhaustive enumeration (independent of the sampler) --------------


def _enumerated_well_groups(counts, size):
    """Every null group of `size` wells from distinct labels, by brute force, with its exact probability."""
    wells = np.repeat(np.arange(len(counts)), counts)
    groups, probabilities = [], []
    for labels in itertools.combinations(range(len(counts)), size):
        for members in itertools.product(*(np.flatnonzero(wells == label) for label in labels)):
            groups.append(tuple(sorted(members)))
            probabilities.append(1 / math.comb(len(counts), size) / math.prod(counts[list(labels)]))
    return wells, groups, np.array(probabilities)


@pytest.mark.parametrize(("counts", "size"), [((1, 2, 3, 2, 1, 3), 2), ((1, 2, 2, 3, 1, 2), 4), ((2, 1, 3), 3)])
def test_null_groups_follow_the_exhaustively_enumerated_distribution(counts, size):
    counts = np.array(counts)
    wells, groups, probabilities = _enumerated_well_groups(counts, size)
    assert probabilities.sum() == pytest.approx(1.0)
    draws = 40 * len(groups)
    drawn = np.sort(sample_null_groups(wells, size, draws, np.random.default_rng(7)), axis=1)
    index = {group: i for i, group in enumerate(groups)}
    observed = np.bincount([index[tuple(row)] for row in drawn.tolist()], minlength=len(groups))
    assert observed.sum() == draws  # every drawn group is one of the enumerated ones (distinct labels)
    assert stats.chisquare(observed, probabilities * draws).pvalue > 1e-3


@pytest.mark.parametrize("size", [2, 4, 16, 48, 100])
@pytest.mark.parametrize("method", ["floyd", "keys"])
def test_distinct_draws_are_uniform_over_every_subset(size, method):
    """Exhaustive: with n = size + 2 (size + 1 at 100) items every size-subset is one of C(n, size), each equally likely."""
    n_items = size + (1 if size == 100 else 2)
    subsets = {frozenset(c) for c in itertools.combinations(range(n_items), size)}
    draws = 40 * len(subsets)
    chosen = draw_distinct(n_items, size, draws, np.random.default_rng(size), method)
    assert chosen.shape == (draws, size)
    assert (np.diff(np.sort(chosen, axis=1), axis=1) > 0).all()  # distinct inside every row
    left_out = np.ones((draws, n_items), dtype=bool)
    np.put_along_axis(left_out, chosen, False, axis=1)
    keys = [frozenset(range(n_items)) - frozenset(np.flatnonzero(row)) for row in left_out]
    assert set(keys) <= subsets
    observed = np.array([count for count in Counter(keys).values()] + [0] * (len(subsets) - len(set(keys))))
    assert stats.chisquare(observed).pvalue > 1e-3


@pytest.mark.parametrize("size", [2, 4, 16, 48, 100])
def test_null_groups_have_distinct_treatments_and_exact_well_probabilities(size):
    """Known answer: a well of a treatment with r wells is in a null group with probability size / T / r."""
    rng = np.random.default_rng(size)
    counts = rng.integers(1, 5, size=120)
    wells = rng.permutation(np.repeat(np.arange(120), counts))
    draws = 4000
    groups = sample_null_groups(wells, size, draws, np.random.default_rng(1))
    assert groups.shape == (draws, size)
    assert all(len(set(row)) == size for row in wells[groups].tolist())
    hits = np.bincount(groups.ravel(), minlength=len(wells))
    p = size / 120 / counts[wells]
    z = (hits - draws * p) / np.sqrt(draws * p * (1 - p))
    assert np.abs(z).max() < 5


def test_twelve_plate_replicate_counts_no_longer_fail():
    """Issue 20: 48 replicates per compound, 60 compounds: the rejection sampler gave up; the exact one does not."""
    labels = np.repeat(np.arange(60), 48)
    groups = sample_null_groups(labels, 48, 300, np.random.default_rng(0))
    assert all(len(set(row)) == 48 for row in labels[groups].tolist())
    assert len(np.unique(labels[groups])) == 60


@pytest.mark.parametrize("constant", ["treated", "control"])
def test_map_against_controls_leaves_a_constant_profile_out_as_replicate_map_does(constant):
    """A constant well has no correlation with anything (NaN): as a query it came out of the NaN-ordered rank list with
    AP 1, and as a replicate or control it was ranked arbitrarily; `replicate_map` leaves such wells out."""
    from phenolens.profiling.replicates import control_similarities, replicate_map_against_controls, row_standardize

    rng = np.random.default_rng(0)
    plates = np.repeat(["P0", "P1", "P2"], 12)
    is_control = np.tile(np.arange(12) < 3, 3)
    treatments = np.where(is_control, "DMSO", np.array([f"T{w % 4}" for w in range(36)]))
    values = rng.normal(size=(36, 6)) + 0.8 * rng.normal(size=(4, 6))[np.arange(36) % 4]
    dead = np.flatnonzero(~is_control if constant == "treated" else is_control)[1]
    values[dead] = 1.0

    def mean_average_precisions(keep):
        unit = row_standardize(values[keep])
        queries, similarities = control_similarities(unit, plates[keep], is_control[keep])
        treated = ~is_control[keep]
        return replicate_map_against_controls(unit[treated], treatments[keep][treated], queries, similarities, null_size=50).treatments

    without = mean_average_precisions(np.arange(36) != dead)
    got = mean_average_precisions(np.ones(36, dtype=bool))
    np.testing.assert_allclose(got["mean_average_precision"], without["mean_average_precision"], atol=1e-12)


def test_a_constant_profile_is_left_out_of_percent_replicating_and_its_null():
    """A constant well (NaN correlation with everything) made a NaN null median, hence a NaN threshold: percent
    replicating 0.0 instead of 0.9 for one dead well of 60. It is now left out, as a well without a treatment (and as mAP)."""
    from phenolens.profiling.replicates import percent_replicating_of_unit_rows, row_standardize

    rng = np.random.default_rng(0)
    treatments = np.repeat([f"t{i:02d}" for i in range(20)], 3).astype(object)
    values = rng.normal(size=(60, 10)) + 1.2 * rng.normal(size=(20, 10))[np.repeat(np.arange(20), 3)]
    values[5] = 0.0
    unlabelled = treatments.copy()
    unlabelled[5] = None
    got = percent_replicating(values, treatments)
    expected = percent_replicating(values, unlabelled)
    assert np.isfinite(got.threshold) and got.percent_replicating == expected.percent_replicating > 0.8
    assert got.threshold == expected.threshold and np.array_equal(got.null, expected.null)
    assert got.treatments.loc["t01", "n_replicates"] == 2
    streamed = percent_replicating_of_unit_rows(row_standardize(values).astype(np.float32), treatments)
    assert streamed.percent_replicating == got.percent_replicating
