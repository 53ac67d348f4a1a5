"""A constant (Pearson) or all-zero (cosine) profile has no similarity to anything: it is never a nearest
neighbour, a constant query gets no prediction (and counts as wrong), and replicate metrics leave such wells out."""

import numpy as np
import pandas as pd
import pytest

from phenolens.profiling.moa import nearest_neighbor_moa
from phenolens.profiling.nested import nested_neighbor_accuracy
from phenolens.profiling.replicates import replicate_map

INDEX = [f"t{i}" for i in range(6)]
MOA = pd.Series(["A", "A", "A", "B", "B", "B"], index=INDEX)
COMPOUND = pd.Series([f"c{i}" for i in range(6)], index=INDEX)


def _profiles(constant: float) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    centres = {"A": rng.normal(size=20), "B": rng.normal(size=20)}
    rows = [centres[m] + 0.1 * rng.normal(size=20) for m in MOA]
    rows[0] = np.full(20, constant)
    return pd.DataFrame(rows, index=INDEX)


@pytest.mark.parametrize(("similarity", "constant"), [("pearson", 3.0), ("cosine", 0.0)])
def test_a_constant_profile_is_never_the_nearest_neighbour_and_gets_no_prediction(similarity, constant):
    result = nearest_neighbor_moa(_profiles(constant), MOA, COMPOUND, similarity=similarity)
    predictions = result.predictions
    assert pd.isna(predictions.loc["t0", "predicted"]) and not predictions.loc["t0", "correct"]  # no prediction (missing): counted wrong
    assert "t0" not in set(predictions["neighbor"].dropna())  # its NaN similarity won every argmax before
    assert predictions.loc[INDEX[1:], "correct"].all()
    assert result.accuracy == pytest.approx(5 / 6) and result.evaluated == 6


@pytest.mark.parametrize("criterion", ["accuracy", "map"])
def test_nested_choice_never_picks_a_constant_neighbour(criterion):
    good = _profiles(3.0)
    result = nested_neighbor_accuracy({"only": good}, MOA, COMPOUND, criterion=criterion)
    assert result.predictions["correct"].tolist() == [False, True, True, True, True, True]
    assert result.accuracy == pytest.approx(5 / 6)


def test_replicate_map_leaves_a_constant_well_out():
    """Percent replicating, mAP against controls and the same-batch rate with a constant well are tested in
    test_profiling_replicates.py and test_profiling_batch_effects.py."""
    rng = np.random.default_rng(0)
    treatments = np.repeat([f"T{i}" for i in range(10)], 3)
    values = rng.normal(size=(10, 30))[np.repeat(np.arange(10), 3)] + 0.3 * rng.normal(size=(30, 30))
    values[0] = 5.0
    assert replicate_map(values, treatments, seed=0, null_size=200).mean_average_precision == pytest.approx(1.0)


def test_nested_inner_score_gives_no_prediction_to_a_query_whose_neighbours_are_all_held_out_or_constant():
    """With c2 held out, q's only candidates are itself (excluded) and a constant profile: it has no neighbour in that
    fold and is wrong, as is the constant query. np.argmax of an all -inf row picked q itself (same MoA), a hit (0.5)."""
    from phenolens.profiling.nested import _leave_one_compound_out

    index = pd.Index(["q", "constant", "other"])
    frame = pd.DataFrame([[1.0, 2.0, 0.5], [3.0, 3.0, 3.0], [0.0, 1.0, 2.0]], index=index)
    moa, compound = pd.Series(["X", "X", "Y"], index=index), pd.Series(["c0", "c1", "c2"], index=index)
    loop = _leave_one_compound_out({"a": frame}, moa, compound, None, "pearson", False, "accuracy", held_out_compounds=["c2"])
    assert loop.inner_scores["c2"].tolist() == [0.0]
