"""Percent replicating's null: at least `null_minimum` groups in all, and the Monte-Carlo error it leaves (`null_standard_error`)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from phenolens.profiling.evaluate import evaluate_tables
from phenolens.profiling.reference import null_groups, reference_percent_replicating
from phenolens.profiling.replicates import NULL_GROUPS_MINIMUM, null_draws, null_standard_error, percent_replicating
from phenolens.profiling.settings import ProfileEvaluationSettings, ProfilingSettings
from phenolens.profiling.synthetic import synthetic_screen


def graded_table(treatments=80, replicates=3, features=20, seed=0):
    """Treatments whose replicate signal grows from none to strong, so some sit near any threshold."""
    rng = np.random.default_rng(seed)
    effects = rng.normal(size=(treatments, features)) * np.linspace(0, 1.5, treatments)[:, None]
    values = np.repeat(effects, replicates, axis=0) + rng.normal(size=(treatments * replicates, features))
    return values, np.repeat(np.arange(treatments), replicates)


def mixed_sizes_table(seed=0):
    """30 treatments of 2 wells, 10 of 3 and 10 of 4, with a graded signal."""
    rng = np.random.default_rng(seed)
    sizes = np.repeat([2, 3, 4], [30, 10, 10])
    labels = np.repeat(np.arange(len(sizes)), sizes)
    effects = rng.normal(size=(len(sizes), 12)) * rng.uniform(0, 1.5, size=(len(sizes), 1))
    return effects[labels] + rng.normal(size=(len(labels), 12)), labels


def test_null_draws_raise_the_null_in_proportion_to_the_treatments():
    assert null_draws(30, 50, 5, 0) == 150  # no floor: per treatment
    assert null_draws(30, 50, 5, 1000) == 600  # the floor, shared as the treatments are
    assert null_draws(10, 50, 5, 1001) == 201  # rounded up: never under the floor
    assert null_draws(30, 50, 100, 1000) == 3000  # per treatment when that is more


def test_percent_replicating_draws_at_least_null_minimum_groups_as_the_reference_does():
    values, labels = mixed_sizes_table()
    result = percent_replicating(values, labels, null_repeats=5, seed=1, null_minimum=500)
    assert Counter(result.null_sizes.tolist()) == {2: 300, 3: 100, 4: 100}  # 500 shared 30:10:10
    assert len(result.null) == 500
    expected, _, threshold = reference_percent_replicating(values, labels, null_groups(labels, 5, 1, null_minimum=500))
    assert result.percent_replicating == pytest.approx(expected)
    assert result.threshold == pytest.approx(threshold)
    # the default floor: 50,000 groups for 50 treatments (5 per treatment were 250)
    assert len(percent_replicating(values, labels).null) >= NULL_GROUPS_MINIMUM


def test_default_null_barely_moves_with_the_seed():
    values, labels = graded_table()
    small = [percent_replicating(values, labels, 5, 90.0, seed, null_minimum=0).percent_replicating for seed in range(10)]
    default = [percent_replicating(values, labels, 5, 90.0, seed).percent_replicating for seed in range(10)]
    assert np.std(small, ddof=1) > 0.008  # 5 groups per treatment: about one treatment in 80 either way
    assert np.std(default, ddof=1) <= 0.004
    assert ProfilingSettings().null_minimum == ProfileEvaluationSettings().null_minimum == NULL_GROUPS_MINIMUM


def test_null_standard_error_matches_a_brute_force_seed_loop():
    values, labels = graded_table()
    seed_sd = np.std([percent_replicating(values, labels, 5, 90.0, seed, null_minimum=0).percent_replicating for seed in range(300)], ddof=1)
    # a quantile's bootstrap is itself noisy: its mean over 10 draws against the seed loop's SD (0.0107 here)
    estimates = [null_standard_error(percent_replicating(values, labels, 5, 90.0, seed, null_minimum=0), seed=seed) for seed in range(10)]
    assert seed_sd == pytest.approx(0.0107, abs=0.002)
    assert np.mean(estimates) == pytest.approx(seed_sd, rel=0.35)
    # a null of one value per resample cannot move: the error is then exactly zero
    constant = percent_replicating(values, labels, 5, 90.0, 0, null_minimum=0)
    constant.null = np.full_like(constant.null, constant.threshold)
    assert null_standard_error(constant) == 0.0
    # nor does a score with no treatment near the threshold: exactly zero, not rounding noise
    far = percent_replicating(*graded_table(treatments=103), 5, 90.0, 0, null_minimum=0)
    far.treatments["replicate_correlation"] = np.repeat([2.0, -2.0], [90, 13])  # 90 of 103 (BBBC021's cellprofiler count)
    assert null_standard_error(far) == 0.0


def test_null_standard_error_is_in_the_metrics():
    screen = synthetic_screen(plates=3, batches=1, controls_per_plate=6, moas=2, compounds_per_moa=6, doses=2, features=12, effect=0.6, seed=3)
    settings = ProfileEvaluationSettings(
        controls="Metadata_PertType == 'control'", treatment="Metadata_Treatment", classifiers=("lr",), moa_repeats=1, jobs=1, map_null_size=100
    )
    evaluation, metrics = evaluate_tables(screen, settings, "screen")
    error = metrics["features"]["percent_replicating_standard_error"]
    assert error == pytest.approx(null_standard_error(evaluation.replicates["features"], seed=settings.seed))
    assert 0 <= error < 0.05
