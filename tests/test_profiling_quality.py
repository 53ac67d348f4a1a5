"""Z'-factor / Z-factor known answers, and hit calling at an FDR."""

import numpy as np
import pytest

from phenolens.core.errors import PhenolensError
from phenolens.profiling.assay_quality import z_factor, z_factors_by_group, z_prime_factor
from phenolens.profiling.hits import anomaly_score, call_hits


def test_z_prime_known_answer():
    positive = np.array([9.0, 10.0, 11.0])  # mean 10, sd 1
    negative = np.array([0.0, 1.0, 2.0])  # mean 1, sd 1
    assert z_prime_factor(positive, negative) == pytest.approx(1 - 3 * 2 / 9)
    assert z_prime_factor(negative, positive) == pytest.approx(1 - 3 * 2 / 9)
    assert z_factor([1.0, 1.0], [1.0, 1.0]) == float("-inf")  # no window: nothing separates the groups
    assert z_factor([0.0, 2.0], [0.0, 2.0]) == float("-inf")
    assert z_factor([3.0, 3.0], [1.0, 1.0]) == 1.0  # a window and no spread: ideal
    assert z_factor([5.0, 7.0], [0.0, 2.0]) == pytest.approx(1 - 3 * (2**0.5 + 2**0.5) / 5)


@pytest.mark.parametrize(
    ("positive", "negative", "expected"),
    [
        ([1.0, 1.0], [1.0, 1.0], -np.inf),  # identical constant groups: no window at all
        ([0.0, 2.0], [0.0, 2.0], -np.inf),  # same means, spread
        ([3.0, 3.0], [1.0, 1.0], 1.0),  # a window, no spread
        ([9.0, 10.0, 11.0], [0.0, 1.0, 2.0], 1 - 3 * 2 / 9),
    ],
)
def test_the_training_z_prime_agrees_with_the_profiling_one_in_every_case(positive, negative, expected):
    """`training.metrics.z_prime_factor` (which training cannot import from profiling) gave -inf for two identical
    constant groups where profiling gave 1, though both said they were the same formula."""
    from phenolens.training.metrics import z_prime_factor as training_z_prime

    assert training_z_prime(positive, negative) == z_prime_factor(positive, negative) == pytest.approx(expected)


def test_z_factor_rejects_too_few_or_non_finite_values():
    with pytest.raises(PhenolensError, match="positive-control"):
        z_prime_factor([1.0], [0.0, 1.0])
    with pytest.raises(PhenolensError, match="negative-control"):
        z_factor([1.0, 2.0], [0.0, np.nan])


def test_z_factors_by_group_equals_one_at_a_time():
    rng = np.random.default_rng(0)
    values = rng.normal(size=12) + np.repeat([0, 3, 6, 9], 3)
    groups = np.repeat(list("abcd"), 3)
    negative = rng.normal(size=10)
    by_group = z_factors_by_group(values, groups, negative)
    for name in "abcd":
        assert by_group[name] == pytest.approx(z_factor(values[groups == name], negative))
    assert np.isnan(z_factors_by_group(values[:4], ["a", "a", "a", "b"], negative)["b"])
    # means that coincide: -inf with or without spread, as one at a time
    level = np.array([1.0, 2.0, 3.0, 5.0, 5.0])
    both = z_factors_by_group(np.concatenate([level[:3], level[3:]]), list("aaabb"), np.array([1.0, 3.0]))
    assert both["a"] == z_factor(level[:3], [1.0, 3.0]) == -np.inf
    assert z_factors_by_group(level[3:], list("bb"), np.array([5.0, 5.0]))["b"] == z_factor(level[3:], [5.0, 5.0]) == -np.inf
    with pytest.raises(PhenolensError, match="finite"):
        z_factors_by_group(values, groups, np.array([0.0, np.nan, 1.0]))


def test_hits_find_shifted_treatments_only():
    rng = np.random.default_rng(1)
    controls = anomaly_score(rng.normal(size=(200, 30)))
    null_wells = rng.normal(size=(30, 30))
    strong_wells = rng.normal(size=(9, 30)) + 2.0
    scores = np.concatenate([anomaly_score(null_wells), anomaly_score(strong_wells)])
    treatments = np.concatenate([np.repeat([f"null{i}" for i in range(10)], 3), np.repeat(["hitA", "hitB", "hitC"], 3)])
    table = call_hits(scores, treatments, controls, fdr=0.05, permutations=2000)
    assert set(table.index[table["hit"]]) == {"hitA", "hitB", "hitC"}
    assert (table["q_value"] >= table["p_value"]).all()
    assert table.loc["hitA", "p_value"] == pytest.approx(1 / 2001)
    assert (call_hits(scores, treatments, controls, permutations=2000) == table).all().all()
