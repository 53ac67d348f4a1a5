"""1-NN MoA with NSC/NSCB exclusion on hand-built profiles; oversampling; nested-CV classifiers."""

import numpy as np
import pandas as pd
import pytest

from phenolens.core.errors import PhenolensError
from phenolens.profiling.moa import OversampledClassifier, classify_moa, nearest_neighbor_moa, treatment_profiles


def hand_built():
    # four treatments: A1/A2 same compound (moa X), B (moa X, other batch), C (moa Y)
    profiles = pd.DataFrame(
        [[1.0, 0.0, 0.0, 0.2], [1.0, 0.1, 0.0, 0.1], [0.7, 0.0, 0.5, 0.0], [0.0, 1.0, 0.0, 0.0]],
        index=["A1", "A2", "B", "C"],
    )
    moa = pd.Series({"A1": "X", "A2": "X", "B": "X", "C": "Y"})
    compound = pd.Series({"A1": "a", "A2": "a", "B": "b", "C": "c"})
    batch = pd.Series({"A1": "w1", "A2": "w1", "B": "w1", "C": "w2"})
    return profiles, moa, compound, batch


def test_nsc_excludes_same_compound():
    profiles, moa, compound, _ = hand_built()
    plain = nearest_neighbor_moa(profiles, moa, pd.Series(profiles.index, index=profiles.index))
    assert plain.predictions.loc["A1", "neighbor"] == "A2"
    nsc = nearest_neighbor_moa(profiles, moa, compound)
    assert nsc.predictions.loc["A1", "neighbor"] == "B"
    assert nsc.predictions["correct"].to_dict() == {"A1": True, "A2": True, "B": True, "C": False}
    # C's MoA has no other compound: it cannot be right, so it is not evaluated
    assert nsc.accuracy == 1.0 and nsc.evaluated == 3 and nsc.unevaluable_moas == ["Y"]


def test_nscb_raises_when_nothing_can_be_matched():
    profiles, moa, compound, batch = hand_built()
    with pytest.raises(PhenolensError, match="same MoA from another compound"):
        nearest_neighbor_moa(profiles, moa, compound, batch)


def reference_neighbors(profiles, moa, compound, batch):
    """Loop over queries and candidates with np.corrcoef: the definition, verbatim."""
    predicted = {}
    for query in profiles.index:
        best, best_r = None, -np.inf
        for other in profiles.index:
            shares_batch = set(batch[query].split("|")) & set(batch[other].split("|"))
            if compound[other] == compound[query] or shares_batch:
                continue
            r = np.corrcoef(profiles.loc[query], profiles.loc[other])[0, 1]
            if r > best_r:
                best, best_r = other, r
        predicted[query] = best
    return predicted


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nscb_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    index = [f"t{i}" for i in range(16)]
    profiles = pd.DataFrame(rng.normal(size=(16, 6)), index=index)
    moa = pd.Series(rng.choice(["X", "Y", "Z"], 16), index=index)
    compound = pd.Series(rng.choice(list("abcdefgh"), 16), index=index)
    batch = pd.Series(rng.choice(["w1", "w2", "w3", "w1|w2"], 16), index=index)
    result = nearest_neighbor_moa(profiles, moa, compound, batch)
    expected = reference_neighbors(profiles, moa, compound, batch)
    assert {q: n if isinstance(n, str) else None for q, n in result.predictions["neighbor"].items()} == expected
    evaluated = result.predictions[result.predictions["evaluated"]]
    assert result.accuracy == pytest.approx((evaluated["moa"] == moa[[expected[q] for q in evaluated.index]].to_numpy()).mean())


def test_treatment_profiles_average_replicates():
    values = np.array([[1.0, 2.0], [3.0, 4.0], [10.0, 10.0]])
    table = treatment_profiles(values, np.array(["t", "t", "u"]))
    assert table.loc["t"].tolist() == [2.0, 3.0] and table.loc["u"].tolist() == [10.0, 10.0]


def test_oversampling_balances_classes_reproducibly():
    from sklearn.dummy import DummyClassifier

    X = np.arange(12.0)[:, None]
    y = np.array(["a"] * 9 + ["b"] * 3)
    model = OversampledClassifier(DummyClassifier(strategy="prior"), seed=0).fit(X, y)
    assert model.estimator_.class_prior_ == pytest.approx([0.5, 0.5])
    assert list(model.classes_) == ["a", "b"]


def test_classifiers_separate_clear_moas_and_compare_with_welch():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 10)) * 3
    labels = np.repeat(["m0", "m1", "m2"], 8)
    compounds = np.array([f"c{i // 2}" for i in range(24)])  # two doses per compound
    clear = pd.DataFrame(centres[np.repeat(np.arange(3), 8)] + rng.normal(size=(24, 10)), index=[f"t{i}" for i in range(24)])
    noise = pd.DataFrame(rng.normal(size=(24, 10)), index=clear.index)
    moa = pd.Series(labels, index=clear.index)
    groups = pd.Series(compounds, index=clear.index)
    result = classify_moa({"clear": clear, "noise": noise}, moa, groups, ("lr",), repeats=3, min_per_class=5, seed=0)
    assert result.f1["clear"]["lr"].mean() > 0.9 and result.f1["noise"]["lr"].mean() < 0.6
    assert result.welch.loc[0, "p_value"] < 0.05 and result.n_treatments == 24
    again = classify_moa({"noise": noise}, moa, groups, ("lr",), repeats=2, min_per_class=5, seed=0, jobs=2)
    assert np.array_equal(again.f1["noise"]["lr"], result.f1["noise"]["lr"][:2])  # processes do not change results
    sparse = classify_moa({"clear": clear.iloc[:20]}, moa, groups, ("lr",), repeats=1, min_per_class=5)
    assert sparse.excluded_moas == {"m2": 4}


@pytest.mark.parametrize(("compounds", "folds"), [(4, 5), (5, 2)])
def test_too_few_compounds_for_grouped_folds_is_a_one_line_error(compounds, folds):
    """sklearn's StratifiedGroupKFold raised a ValueError mid-run (outer: 4 compounds for 5 folds; inner: a 2-compound training
    part for 3 folds), which `profile run` and `profile evaluate` do not catch: the whole evaluation crashed."""
    index = [f"c{c}@{dose}" for c in range(compounds) for dose in range(3)]
    moa = pd.Series(["A" if int(name[1]) % 2 else "B" for name in index], index=index)
    compound = pd.Series([name.split("@")[0] for name in index], index=index)
    profiles = pd.DataFrame(np.random.default_rng(0).normal(size=(len(index), 4)), index=index)
    with pytest.raises(PhenolensError, match=f"from {compounds} compounds: too few for {folds} outer folds"):
        classify_moa({"x": profiles}, moa, compound, ("lr",), repeats=2, folds=folds, jobs=1)
    assert classify_moa({"x": profiles}, moa, None, ("lr",), repeats=1, folds=folds, jobs=1).n_treatments == len(index)
