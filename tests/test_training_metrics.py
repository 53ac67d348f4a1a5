"""Macro-F1 and per-class F1 follow scikit-learn's convention: the classes true or predicted."""

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from phenolens.training.metrics import classification_metrics, f1_scores


def test_a_class_predicted_but_never_true_counts_with_f1_zero_as_in_scikit_learn():
    truth = np.array([0, 0, 1, 1])
    proba = np.eye(4)[[0, 2, 1, 1]]  # one image of class "a" predicted as "c", which no image is; "d" neither true nor predicted
    metrics = classification_metrics(truth, proba, ["a", "b", "c", "d"])
    oracle = f1_score(truth, proba.argmax(1), average="macro")
    assert np.isclose(oracle, (2 / 3 + 1 + 0) / 3)
    assert np.isclose(metrics["macro_f1"], oracle)  # the classes of the truth alone would give (2/3 + 1) / 2
    assert metrics["per_class_f1"] == {"a": 2 / 3, "b": 1.0, "c": 0.0}


def test_f1_scores_marks_a_class_neither_true_nor_predicted_as_not_measured():
    per_class, macro = f1_scores(["x", "y", "y"], ["x", "y", "z"], ["w", "x", "y", "z"])
    assert np.isnan(per_class[0]) and np.allclose(per_class[1:], [1.0, 2 / 3, 0.0])
    assert np.isclose(macro, f1_score(["x", "y", "y"], ["x", "y", "z"], average="macro"))


def test_moa_per_class_f1_uses_the_same_helper(monkeypatch):
    from phenolens.profiling import moa

    rng = np.random.default_rng(0)
    index = [f"t{i}" for i in range(24)]
    labels = pd.Series(np.repeat(["m1", "m2", "m3"], 8), index=index)
    profiles = {"raw": pd.DataFrame(rng.normal(size=(24, 3)) + np.repeat(np.eye(3), 8, axis=0) * 3, index=index)}
    calls = []
    original = moa.f1_scores
    monkeypatch.setattr(moa, "f1_scores", lambda *a: calls.append(a) or original(*a))
    result = moa.classify_moa(profiles, labels, classifiers=("lr",), repeats=1, folds=2, inner_folds=2, seed=0)
    assert calls and list(result.per_class_f1.columns) == ["m1", "m2", "m3"]
