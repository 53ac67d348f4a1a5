"""Classification metrics of predicted probabilities (scikit-learn), as plain JSON-able values."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def z_prime_factor(positive: Sequence[float], negative: Sequence[float]) -> float:
    """Z'-factor (Zhang et al. 1999) of two groups: 1 - 3 (sd_p + sd_n) / |mean_p - mean_n|.

    The same formula as `phenolens.profiling.assay_quality.z_prime_factor`; it is written here
    because training sits below profiling and may not import it.
    """
    positive, negative = np.asarray(positive, dtype=float), np.asarray(negative, dtype=float)
    gap = abs(positive.mean() - negative.mean())
    return float(1.0 - 3.0 * (positive.std(ddof=1) + negative.std(ddof=1)) / gap) if gap > 0 else float("-inf")


def classification_metrics(labels: Sequence[int], proba: np.ndarray, class_names: Sequence[str]) -> dict:
    """Accuracy, macro-F1, per-class F1, confusion matrix (rows: true, columns: predicted),
    one-vs-rest ROC-AUC and PR-AUC (average precision) per class and their macro means, and for
    two-class tasks with two or more images of each class the Z'-factor of the predicted probability of the second class."""
    from sklearn.metrics import accuracy_score, average_precision_score, confusion_matrix, f1_score, roc_auc_score

    labels, proba = np.asarray(labels), np.asarray(proba)
    k = len(class_names)
    predicted = proba.argmax(axis=1)
    all_classes = np.arange(k)
    per_class_f1 = f1_score(labels, predicted, labels=all_classes, average=None, zero_division=0)
    present = np.isin(all_classes, labels)
    roc, pr = {}, {}
    for index, name in enumerate(class_names):
        truth = labels == index
        both_sides = 0 < truth.sum() < len(truth)
        roc[name] = float(roc_auc_score(truth, proba[:, index])) if both_sides else None
        pr[name] = float(average_precision_score(truth, proba[:, index])) if both_sides else None
    metrics = {
        "n_images": int(len(labels)),
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": float(per_class_f1[present].mean()),
        "per_class_f1": {name: float(per_class_f1[i]) for i, name in enumerate(class_names) if present[i]},
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
