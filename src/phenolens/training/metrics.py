"""Classification metrics of predicted probabilities (scikit-learn), as plain JSON-able values."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from phenolens.core.errors import PhenolensError


def z_window(gap, spread):
    """Zhang et al.'s (1999) separation of two readouts, 1 - spread / gap, elementwise: the one Z'/Z-factor formula.

    The means coinciding (``gap == 0``) leaves no window whatever the spread, so it gives -inf (two identical
    constant groups are not an ideal assay: nothing tells them apart, and a spread shrinking to 0 at equal means
    has -inf as its limit); distinct means without spread give 1.

    Parameters
    ----------
    gap : float or numpy.ndarray
        ``|mean_a - mean_b|`` (>= 0).
    spread : float or numpy.ndarray
        ``3 (sd_a + sd_b)``, broadcast against `gap`.

    Returns
    -------
    numpy.ndarray
        The factor (<= 1) per element (a 0-d array for scalars).
    """
    gap = np.asarray(gap, dtype=np.float64)
    return np.where(gap > 0, 1.0 - spread / np.where(gap > 0, gap, 1.0), -np.inf)


def z_prime_factor(
    positive: Sequence[float] | np.ndarray, negative: Sequence[float] | np.ndarray, names: tuple[str, str] = ("positive-control", "negative-control")
) -> float:
    """Z'-factor (Zhang et al. 1999) of two groups: 1 - 3 (sd_p + sd_n) / |mean_p - mean_n| (sample sd, ddof=1).

    The one implementation: `phenolens.profiling.assay_quality` exports it as its Z'-factor and its Z-factor
    (a sample against the negative controls) with other `names`.

    Parameters
    ----------
    positive, negative : array-like
        The two groups' values (two or more finite values each).
    names : tuple of str
        What the two groups are, for the error message.

    Returns
    -------
    float
        The Z'-factor (<= 1): 1 when the means differ and neither group spreads; -inf when the means coincide,
        with or without spread (`z_window`).

    Raises
    ------
    PhenolensError
        When either group has fewer than two values or a non-finite one.
    """
    groups = [np.asarray(values, dtype=np.float64).ravel() for values in (positive, negative)]
    for values, name in zip(groups, names):
        if values.size < 2 or not np.isfinite(values).all():
            raise PhenolensError(f"Z-factor: the {name} readout needs two or more finite values (got {values.size})")
    first, second = groups
    return float(z_window(abs(first.mean() - second.mean()), 3.0 * (first.std(ddof=1) + second.std(ddof=1))))


def f1_scores(truth: Sequence, predicted: Sequence, classes: Sequence) -> tuple[np.ndarray, float]:
    """Per-class F1 over a classifier's known classes and their macro mean, by scikit-learn's convention.

    The one place phenolens computes F1 per class or macro-F1. A class predicted but never true counts
    with F1 0 (its predictions are all wrong); a class neither true nor predicted has no F1 (NaN) and
    is left out of the mean. The macro mean is therefore scikit-learn's ``f1_score(average="macro")``,
    the mean over the classes true or predicted (not only those of the truth).

    Parameters
    ----------
    truth, predicted : sequence
        True and predicted class of each sample (indices or names).
    classes : sequence
        The classifier's classes, in the order of the returned scores.

    Returns
    -------
    per_class : numpy.ndarray
        (len(classes),) F1 of each class; NaN for a class neither true nor predicted.
    macro : float
        Mean of the defined per-class F1 (NaN when no class is).
    """
    from sklearn.metrics import f1_score

    per_class = f1_score(truth, predicted, labels=list(classes), average=None, zero_division=np.nan)
    defined = ~np.isnan(per_class)
    return per_class, float(per_class[defined].mean()) if defined.any() else float("nan")


def classification_metrics(labels: Sequence[int], proba: np.ndarray, class_names: Sequence[str]) -> dict:
    """Held-out metrics of predicted class probabilities.

    Parameters
    ----------
    labels : sequence of int
        (N,) true class index of each image.
    proba : numpy.ndarray
        (N, K) predicted probabilities; the prediction is the argmax.
    class_names : sequence of str
        The model's K classes.

    Returns
    -------
    dict
        Accuracy; macro-F1 and per-class F1 over the classes true or predicted (`f1_scores`: a class
        predicted but absent from the truth counts with F1 0); confusion matrix (rows: true, columns:
        predicted) over all K classes; one-vs-rest ROC-AUC and PR-AUC (average precision) per class and
        their macro means; and for two-class tasks with two or more images of each class the Z'-factor of
        the predicted probability of the second class.
    """
    from sklearn.metrics import accuracy_score, average_precision_score, confusion_matrix, roc_auc_score

    labels, proba = np.asarray(labels), np.asarray(proba)
    k = len(class_names)
    predicted = proba.argmax(axis=1)
    all_classes = np.arange(k)
    per_class_f1, macro_f1 = f1_scores(labels, predicted, all_classes)
    measured = ~np.isnan(per_class_f1)
    roc, pr = {}, {}
    for index, name in enumerate(class_names):
        truth = labels == index
        both_sides = 0 < truth.sum() < len(truth)
        roc[name] = float(roc_auc_score(truth, proba[:, index])) if both_sides else None
        pr[name] = float(average_precision_score(truth, proba[:, index])) if both_sides else None
    metrics = {
        "n_images": int(len(labels)),
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": macro_f1,
        "per_class_f1": {name: float(per_class_f1[i]) for i, name in enumerate(class_names) if measured[i]},
        "confusion_matrix": confusion_matrix(labels, predicted, labels=all_classes).tolist(),
        "class_names": list(class_names),
        "roc_auc": roc,
        "pr_auc": pr,
        "macro_roc_auc": _mean_defined(roc.values()),
        "macro_pr_auc": _mean_defined(pr.values()),
    }
    if k == 2 and (np.bincount(labels, minlength=2)[:2] >= 2).all():  # a sample sd needs two images of each class
        metrics["z_prime"] = z_prime_factor(proba[labels == 1, 1], proba[labels == 0, 1])
    return metrics


def _mean_defined(values) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None
