"""Percent replicating against a slow, obviously-correct reference; mAP through copairs."""

import itertools
import statistics

import numpy as np
import pandas as pd
import pytest

from phenolens.core.errors import PhenolensError
from phenolens.profiling.replicates import groups_by_label, percent_replicating, replicate_map, sample_null_groups


def reference_percent_replicating(values, treatments, null_groups, percentile=90.0):
    """Loops over treatments and pairs, np.corrcoef per pair, statistics.median: the definition, verbatim."""

    def median_correlation(rows):
        return statistics.median(np.corrcoef(values[a], values[b])[0, 1] for a, b in itertools.combinations(rows, 2))

    replicate = {}
    for name in sorted(set(treatments)):
        rows = [i for i, t in enumerate(treatments) if t == name]
        if len(rows) >= 2:
            replicate[name] = median_correlation(rows)
    null = [median_correlation(list(group)) for group in null_groups]
    threshold = np.percentile(null, percentile)
    return sum(value > threshold for value in replicate.values()) / len(replicate), replicate, threshold


def small_table(seed=0, treatments=12, features=15):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 5, size=treatments)  # 1..4 replicates, some singletons
    labels = np.repeat([f"t{i:02d}" for i in range(treatments)], sizes)
    signal = rng.normal(size=(treatments, features))[np.repeat(np.arange(treatments), sizes)]
    strength = rng.uniform(0, 2, size=treatments)[np.repeat(np.arange(treatments), sizes)][:, None]
    return strength * signal + rng.normal(size=(len(labels), features)), labels


def replay_null_groups(labels, repeats, seed):
    """The null groups percent_replicating draws, in its order (same seed, same sampler)."""
    codes, _ = pd.factorize(pd.Series(labels), sort=True)
    rng = np.random.default_rng(seed)
    groups = []
    for size, (names, _) in groups_by_label(codes).items():
        if size >= 2:
            groups += list(sample_null_groups(codes, size, repeats * len(names), rng))
    return groups


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_percent_replicating_matches_reference(seed):
    values, labels = small_table(seed)
    result = percent_replicating(values, labels, null_repeats=5, seed=seed)
    expected, replicate, threshold = reference_percent_replicating(values, labels, replay_null_groups(labels, 5, seed))
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
    value, retrieved, table = replicate_map(exact, labels, null_size=500)
    assert value == pytest.approx(1.0)
    assert retrieved == 1.0 and len(table) == 10
    noise_value, _, _ = replicate_map(rng.normal(size=(30, 12)), labels, null_size=500)
    assert noise_value < 0.5
