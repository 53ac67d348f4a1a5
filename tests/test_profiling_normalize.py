"""Control split, leave-one-out standardisation with pooled scales, and feature selection (pycytominer oracle)."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phenolens.core.errors import PhenolensError
from phenolens.profiling.anomaly import AnomalyProfiler
from phenolens.profiling.normalize import split_controls, standardize, whole_plate_normalize
from phenolens.profiling.select import select_features
from phenolens.profiling.settings import ProfilingSettings
from phenolens.profiling.synthetic import synthetic_screen


def test_split_controls_fractions_per_plate_and_seed():
    plates = np.repeat(["a", "b", "c"], [6, 24, 3])
    is_control = np.ones(len(plates), bool)
    is_control[-1] = False
    roles = split_controls(plates, is_control, seed=1)
    counts = pd.crosstab(plates, roles)
    assert counts.loc["a", ["train", "validation", "test"]].tolist() == [2, 1, 3]
    assert counts.loc["b", ["train", "validation", "test"]].tolist() == [10, 2, 12]
    assert counts.loc["c", ["train", "test"]].tolist() == [1, 1] and counts.loc["c", ""] == 1
    assert (split_controls(plates, is_control, seed=1) == roles).all()
    assert not (split_controls(plates, is_control, seed=2) == roles).all()
    with pytest.raises(PhenolensError, match="sum to 1"):
        split_controls(plates, is_control, (0.5, 0.5, 0.5))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 30), min_size=1, max_size=6),
    st.floats(0.01, 0.98),
    st.floats(0.0, 1.0),
    st.integers(0, 2**16),
)
def test_every_plate_keeps_a_train_and_a_test_control_whatever_the_fractions(controls, train, validation_share, seed):
    """A train fraction >= 0.75 once gave a 2-control plate two training controls and no test control (the fit then failed)."""
    validation = validation_share * (1 - train)
    plates = np.repeat(np.arange(len(controls)), [n + 2 for n in controls])  # two treated wells per plate
    is_control = np.concatenate([np.r_[np.ones(n, bool), False, False] for n in controls])
    roles = split_controls(plates, is_control, (train, validation, 1 - train - validation), seed=seed)
    assert (roles[~is_control] == "").all() and set(roles[is_control]) <= {"train", "validation", "test"}
    for plate, n in enumerate(controls):
        mine = roles[(plates == plate) & is_control]
        assert (mine == "train").sum() >= min(n, 1)
        assert (mine == "test").sum() >= (1 if n >= 2 else 0)


def test_standardize_centres_per_plate_and_pools_scale():
    rng = np.random.default_rng(0)
    plates = np.repeat(["p1", "p2"], 10)
    values = rng.normal(size=(20, 3)) * [1, 2, 3] + np.where(plates == "p1", 5.0, -5.0)[:, None]
    reference = np.tile([True] * 6 + [False] * 4, 2)
    result, stats = standardize(values, reference, plates, np.full(20, "all"), leave_one_out=False)
    assert np.allclose(result[reference & (plates == "p1")].mean(axis=0), 0)
    residual = np.concatenate([values[reference & (plates == p)] - values[reference & (plates == p)].mean(0) for p in ("p1", "p2")])
    assert np.allclose(stats.scale.loc["all"], np.sqrt((residual**2).sum(0) / (12 - 2)))
    assert np.allclose(stats.transform(values, plates, np.full(20, "all")), result)


def test_leave_one_out_equals_refitting_without_the_row():
    rng = np.random.default_rng(1)
    plates = np.repeat(["a", "b", "c"], 5)
    values = rng.normal(size=(15, 4))
    reference = rng.random(15) < 0.7
    reference[[0, 5, 10, 11]] = True
    batches = np.where(plates == "c", "y", "x")
    loo, _ = standardize(values, reference, plates, batches)
    for row in np.flatnonzero(reference):
        others = reference.copy()
        others[row] = False
        if (others & (plates == plates[row])).sum() == 0:
            continue
        refit, _ = standardize(values, others, plates, batches, leave_one_out=False)
        assert np.allclose(loo[row], refit[row])


def test_standardize_errors_name_the_plate_or_group():
    values = np.zeros((4, 2))
    with pytest.raises(PhenolensError, match="plate 'b'"):
        standardize(values, np.array([1, 1, 0, 0], bool), ["a", "a", "b", "b"], ["s"] * 4)
    with pytest.raises(PhenolensError, match=r"one control well per plate.*pool it over more plates"):
        standardize(values, np.array([1, 0, 1, 0], bool), ["a", "a", "b", "b"], ["a", "a", "b", "b"])
    # pooled over every plate already: advising to pool over all plates (as it once did) cannot help
    with pytest.raises(PhenolensError, match=r"scale group 'all' has one control well per plate.*more reference control wells"):
        standardize(values, np.array([1, 0, 1, 0], bool), ["a", "a", "b", "b"], ["all"] * 4)


def test_whole_plate_normalize_gives_zero_mean_unit_sd_per_plate():
    rng = np.random.default_rng(2)
    values = rng.normal(3, 2, size=(12, 5))
    plates = np.repeat(["x", "y"], 6)
    normalized = whole_plate_normalize(values, plates)
    for plate in ("x", "y"):
        assert np.allclose(normalized[plates == plate].mean(0), 0)
        assert np.allclose(normalized[plates == plate].std(0, ddof=1), 1)


def test_select_features_matches_pycytominer():
    from pycytominer import feature_select

    rng = np.random.default_rng(5)
    base = rng.normal(size=(60, 12))
    table = pd.DataFrame(base, columns=[f"Cells_F{i:02d}" for i in range(12)])
    table["Cells_Copy"] = table["Cells_F03"]  # exact duplicate: a tie pycytominer breaks by its sort
    table["Cells_Near"] = table["Cells_F05"] * 2 + 0.01 * rng.normal(size=60)
    table["Cells_Anti"] = -table["Cells_F06"]  # negative correlation is kept (pycytominer tests correlation > t)
    table["Cells_Rare"] = np.where(np.arange(60) < 2, 1.0, 0.0)  # fails the frequency cut
    table["Cells_Const"] = 4.0
    table["Cells_Few"] = np.arange(60) % 2 * 1.0  # 2 unique values: passes frequency, fails unique cut at 0.05
    table.insert(0, "Metadata_Plate", "p")
    features = [c for c in table.columns if c.startswith("Cells_")]
    for unique_cut in (0.01, 0.05):
        expected = feature_select(
            table,
            features=features,
            operation=["frequency_threshold", "variance_threshold", "correlation_threshold"],
            unique_cut=unique_cut,
        )
        chosen = select_features(table, features, unique_cut=unique_cut)
        assert chosen == [f for f in features if f in expected.columns]
    assert "Cells_Anti" in chosen and "Cells_Rare" not in chosen and "Cells_Const" not in chosen
    with pytest.raises(PhenolensError, match="removed every feature"):
        select_features(table, ["Cells_Const"])


def test_pooling_the_spread_per_batch_without_a_batch_column_is_refused():
    """It pooled over all plates, while run.json and the model card said 'batch'."""
    table = synthetic_screen(plates=6, controls_per_plate=8, features=6, seed=0)
    settings = ProfilingSettings(controls="Metadata_PertType == 'control'", batch=None, scale_pooling="batch", max_epochs=1)
    with pytest.raises(PhenolensError, match=r"scale_pooling \(--scale-pooling\).*needs a batch column") as caught:
        AnomalyProfiler(settings).fit(table)
    assert "\n" not in str(caught.value)
