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
    """`training.metrics.z_prime_factor` once gave -inf for two identical constant groups where profiling gave 1,
    though both said they were the same formula; the formula is now written once (training's, used by profiling)."""
    from phenolens.training.metrics import z_prime_factor as training_z_prime

    assert training_z_prime(positive, negative) == z_prime_factor(positive, negative) == pytest.approx(expected)


def test_every_z_factor_entry_point_agrees_on_random_and_degenerate_inputs():
    """Training's Z' (image metrics, screen readout), profiling's Z' and Z and the vectorised per-group Z: the same
    number on random groups and on the degenerate ones (equal means, no spread), and the same refusal of NaN."""
    from phenolens.training.metrics import z_prime_factor as training_z_prime

    rng = np.random.default_rng(17)
    cases = [(rng.normal(rng.normal(), rng.uniform(0.1, 3), rng.integers(2, 9)), rng.normal(size=rng.integers(2, 9))) for _ in range(50)]
    cases += [(np.array([2.0, 4.0]), np.array([1.0, 5.0])), (np.full(3, 7.0), np.full(4, 7.0))]  # equal means: -inf
    cases += [(np.full(3, 2.0), np.full(2, -1.0))]  # no spread, distinct means: 1
    groups = np.concatenate([np.full(len(sample), index) for index, (sample, _) in enumerate(cases)])
    expected = []
    for sample, negative in cases:
        value = training_z_prime(sample, negative)
        gap, spread = abs(sample.mean() - negative.mean()), 3 * (sample.std(ddof=1) + negative.std(ddof=1))
        by_hand = 1 - spread / gap if gap > 0 else -np.inf
        assert value == z_prime_factor(sample, negative) == z_factor(sample, negative) == pytest.approx(by_hand)
        expected.append(value)
    assert expected[-3:] == [-np.inf, -np.inf, 1.0]
    # the per-group form, with one control set for every group, against the scalar form
    negative = cases[0][1]
    per_group = z_factors_by_group(np.concatenate([sample for sample, _ in cases]), groups, negative)
    assert per_group.to_numpy() == pytest.approx([training_z_prime(sample, negative) for sample, _ in cases])
    constant = np.full(4, 7.0)  # controls without spread: the equal-means group reads -inf, as one at a time
    per_group = z_factors_by_group(np.concatenate([sample for sample, _ in cases]), groups, constant)
    assert per_group.to_numpy() == pytest.approx([training_z_prime(sample, constant) for sample, _ in cases])
    assert per_group.iloc[-2] == -np.inf
    for bad in ([1.0, np.nan], [np.inf, 1.0], [1.0]):
        for function in (training_z_prime, z_prime_factor, z_factor):
            with pytest.raises(PhenolensError, match="two or more finite values"):
                function(bad, [0.0, 1.0])
            with pytest.raises(PhenolensError, match="negative-control"):
                function([0.0, 1.0], bad)


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
