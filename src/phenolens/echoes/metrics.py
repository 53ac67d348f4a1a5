"""Scoring echo detections: the envelope hit criterion, matching, precision-recall, AUC and max F1.

Hit criterion (US-CNN, Shpigler et al. 2022, eq. 6): a detection z at t_z matches a true echo x at
t_x when the squared error between their Gaussian envelope components, relative to the true
envelope's energy, is below epsilon; both envelopes use the true echo's width sigma (the original
convolves both spikes with the true pulse). With g(t) = exp(-t^2 / 2 sigma^2) the integrals are closed
form: (z^2 + x^2 - 2 z x exp(-(t_z - t_x)^2 / 4 sigma^2)) / x^2, so position and amplitude must both be
right. Detection and true amplitudes are each normalised to a unit-norm spike train per signal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from phenolens.echoes.detection import Detections


def envelope_error(det_pos, det_amp, true_pos, true_amp, sigma) -> np.ndarray:
    """Relative squared error between the envelopes |z| g(t - t_z) and |x| g(t - t_x) (broadcasting).

    Parameters
    ----------
    det_pos, det_amp : array-like
        Detected positions and amplitudes.
    true_pos, true_amp : array-like
        True positions and amplitudes.
    sigma : array-like
        True echo widths (samples).

    Returns
    -------
    numpy.ndarray
        The error, relative to the true envelope's energy.
    """
    det_amp, true_amp = np.abs(det_amp), np.abs(true_amp)
    overlap = np.exp(-((np.asarray(det_pos) - np.asarray(true_pos)) ** 2) / (4.0 * np.asarray(sigma) ** 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return (det_amp**2 + true_amp**2 - 2.0 * det_amp * true_amp * overlap) / true_amp**2


def unit_norm_rows(values: np.ndarray) -> np.ndarray:
    """Scale each row's finite entries to unit L2 norm (NaN stays NaN).

    Parameters
    ----------
    values : numpy.ndarray
        (N, K) values.

    Returns
    -------
    numpy.ndarray
    """
    norms = np.sqrt(np.nansum(np.asarray(values, dtype=np.float64) ** 2, axis=1, keepdims=True))
    return np.divide(values, norms, out=np.full(np.shape(values), np.nan), where=norms > 0)


def match_detections(detections: Detections, true_pos: np.ndarray, true_amp: np.ndarray, true_sigma: np.ndarray, epsilon: float = 0.1):
    """Greedy matching, strongest detection first, each true echo matched at most once (to its closest hit).

    True amplitudes are normalised per signal.

    Parameters
    ----------
    detections : Detections
        Detected echoes.
    true_pos, true_amp, true_sigma : numpy.ndarray
        (N, K) true positions, amplitudes and widths, NaN where absent.
    epsilon : float
        Largest envelope error of a hit.

    Returns
    -------
    tuple of numpy.ndarray
        hits (N, D) and found (N, K) boolean arrays.
    """
    truth = unit_norm_rows(true_amp)
    errors = envelope_error(
        detections.positions[:, :, None], detections.amplitudes[:, :, None], true_pos[:, None, :], truth[:, None, :], true_sigma[:, None, :]
    )
    errors = np.where(np.isfinite(errors), errors, np.inf)
    n, d_max = detections.positions.shape
    rows = np.arange(n)
    hits = np.zeros((n, d_max), dtype=bool)
    found = np.zeros(true_pos.shape, dtype=bool)
    for d in range(d_max):  # detection ranks, vectorised over signals
        candidate = np.where(found, np.inf, errors[:, d, :])
        best = np.argmin(candidate, axis=1)
        ok = candidate[rows, best] < epsilon
        hits[:, d] = ok
        found[rows[ok], best[ok]] = True
    return hits, found


@dataclass
class DetectionScore:
    """Precision-recall summary over a test set."""

    auc: float
    f1: float
    precision: np.ndarray = field(repr=False)
    recall: np.ndarray = field(repr=False)
    n_true: int = 0
    n_detections: int = 0
    n_hits: int = 0

    def summary(self) -> dict:
        """AUC, F1 and counts as a dict (for metrics.json)."""
        return {"auc": self.auc, "f1": self.f1, "n_true": self.n_true, "n_detections": self.n_detections, "n_hits": self.n_hits}


def precision_recall(scores: np.ndarray, hits: np.ndarray, n_true: int) -> DetectionScore:
    """Precision-recall curve over detection-score thresholds, recall relative to all `n_true` echoes.

    Built on scikit-learn's `precision_recall_curve` (whose recall counts only detected positives, so
    it is rescaled to all true echoes). The AUC is the area under the interpolated step curve
    (precision at recall r = best precision at recall >= r, as in PASCAL VOC average precision).

    Parameters
    ----------
    scores : numpy.ndarray
        Scores of every detection.
    hits : numpy.ndarray
        Whether each detection is a hit.
    n_true : int
        True echoes in the set.

    Returns
    -------
    DetectionScore
    """
    from sklearn.metrics import precision_recall_curve

    scores, hits = np.asarray(scores, dtype=np.float64), np.asarray(hits, dtype=bool)
    if n_true == 0 or not hits.any():
        return DetectionScore(0.0, 0.0, np.array([1.0, 0.0]), np.array([0.0, 0.0]), n_true, len(scores), int(hits.sum()))
    precision, recall, _ = precision_recall_curve(hits, scores)
    recall = recall * hits.sum() / n_true
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.nanmax(np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0))
    order = np.argsort(recall, kind="stable")
    levels, first = np.unique(recall[order], return_index=True)
    best_at_level = np.maximum.reduceat(precision[order], first)
    interpolated = np.maximum.accumulate(best_at_level[::-1])[::-1]
    area = float(np.sum(np.diff(levels, prepend=0.0) * interpolated))
    return DetectionScore(area, float(f1), interpolated, levels, n_true, len(scores), int(hits.sum()))


def score_detections(
    detections: Detections, true_pos: np.ndarray, true_amp: np.ndarray, true_sigma: np.ndarray, epsilon: float = 0.1
) -> DetectionScore:
    """Match detections to the truth and summarise the precision-recall curve (AUC, max F1).

    Parameters
    ----------
    detections : Detections
        Detected echoes.
    true_pos, true_amp, true_sigma : numpy.ndarray
        (N, K) truth, NaN where absent.
    epsilon : float
        Hit tolerance (relative envelope error).

    Returns
    -------
    DetectionScore
    """
    hits, _ = match_detections(detections, true_pos, true_amp, true_sigma, epsilon)
    present = np.isfinite(detections.positions)
    return precision_recall(detections.amplitudes[present], hits[present], int(np.isfinite(true_pos).sum()))
