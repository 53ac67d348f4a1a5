"""From an activation (network output or sparse-code amplitudes) to detected echoes.

Post-processing of US-CNN (Shpigler et al. 2022, section 3.3), vectorised over signals: greedy
non-maximum suppression within `window` samples (about 1.5 sigma_0), normalisation of the detected
spike train to unit L2 norm, and a threshold beta on the normalised amplitudes. When a layer
thickness is wanted (`min_echoes=2`), beta is lowered by factors of `lowering` (0.8) until at
least that many echoes pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Detections:
    """Detected echoes per signal, strongest first; arrays are (N, D), NaN / 0 where absent."""

    positions: np.ndarray  # samples (float), NaN where absent
    amplitudes: np.ndarray  # normalised amplitude (the detection score), 0 where absent
    thresholds: np.ndarray  # (N,) the beta finally applied to each signal

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def counts(self) -> np.ndarray:
        """Detections per signal (N,)."""
        return np.isfinite(self.positions).sum(axis=1)

    def for_signal(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """One signal's detections, strongest first.

        Parameters
        ----------
        index : int
            The signal.

        Returns
        -------
        tuple of numpy.ndarray
            (positions in samples, normalised amplitudes).
        """
        keep = np.isfinite(self.positions[index])
        return self.positions[index][keep], self.amplitudes[index][keep]

    def strongest(self, count: int = 2) -> np.ndarray:
        """Positions of the `count` largest detections per signal.

        Parameters
        ----------
        count : int
            How many.

        Returns
        -------
        numpy.ndarray
            (N, count) positions, NaN where fewer were found.
        """
        out = np.full((len(self), count), np.nan)
        width = min(count, self.positions.shape[1])
        out[:, :width] = self.positions[:, :width]
        return out


def non_maximum_suppression(activation: np.ndarray, window: int = 14, max_detections: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Greedy NMS on the positive part of (N, T) activations.

    Repeatedly takes each signal's largest remaining value and clears `window` samples on each side.

    Parameters
    ----------
    activation : numpy.ndarray
        (N, T) activations.
    window : int
        Samples cleared on each side of a peak.
    max_detections : int
        Most peaks per signal.

    Returns
    -------
    tuple of numpy.ndarray
        Positions (N, D) int (-1 where none) and values (N, D), strongest first.

    Raises
    ------
    ValueError
        When `activation` is not two-dimensional.
    """
    remaining = np.maximum(np.asarray(activation, dtype=np.float64), 0.0)
    if remaining.ndim != 2:
        raise ValueError("activation must be (N, T)")
    n, length = remaining.shape
    t = np.arange(length)
    positions = np.full((n, max_detections), -1, dtype=np.int64)
    values = np.zeros((n, max_detections))
    rows = np.arange(n)
    for d in range(max_detections):  # a loop over detection ranks, vectorised over signals
        peak = np.argmax(remaining, axis=1)
        value = remaining[rows, peak]
        found = value > 0
        if not found.any():
            break
        positions[found, d] = peak[found]
        values[found, d] = value[found]
        remaining[np.abs(t[None, :] - peak[:, None]) <= window] = 0.0
    return positions, values


def lowered_thresholds(values: np.ndarray, beta: float, min_echoes: int | None, lowering: float = 0.8) -> np.ndarray:
    """Per-signal threshold: beta, or beta * lowering^k with the smallest k that lets `min_echoes` values pass.

    Signals with fewer than `min_echoes` non-zero values keep a threshold that passes all of them.

    Parameters
    ----------
    values : numpy.ndarray
        (N, D) normalised peak values, sorted descending.
    beta : float
        The threshold.
    min_echoes : int, optional
        Echoes that must pass (None: no lowering).
    lowering : float
        Factor applied per lowering step.

    Returns
    -------
    numpy.ndarray
        (N,) thresholds.
    """
    beta_per_signal = np.full(len(values), float(beta))
    if not min_echoes or min_echoes < 1:
        return beta_per_signal
    nonzero = (values > 0).sum(axis=1)
    needed = np.minimum(min_echoes, np.maximum(nonzero, 1)) - 1
    pivot = values[np.arange(len(values)), needed]
    with np.errstate(divide="ignore"):
        steps = np.ceil(np.log(np.maximum(pivot, 1e-300) / beta) / np.log(lowering) - 1e-12)
    steps = np.where(pivot >= beta, 0, np.maximum(steps, 0))
    lowered = np.where(pivot >= beta, beta, np.minimum(beta * lowering**steps, pivot))  # min(): guard against rounding
    return np.where(pivot > 0, lowered, beta_per_signal)


def detect_echoes(
    activation: np.ndarray,
    beta: float = 0.01,
    window: int = 14,
    max_detections: int = 20,
    min_echoes: int | None = None,
    lowering: float = 0.8,
) -> Detections:
    """NMS, unit-norm normalisation of the spike train, threshold beta (lowered for `min_echoes`), renormalisation.

    Parameters
    ----------
    activation : numpy.ndarray
        (N, T) activations.
    beta : float
        Threshold on the unit-norm spike train.
    window : int
        NMS half-width (samples).
    max_detections : int
        Most echoes per signal.
    min_echoes : int, optional
        Lower beta until this many pass.
    lowering : float
        Factor per lowering step.

    Returns
    -------
    Detections
    """
    positions, values = non_maximum_suppression(activation, window, max_detections)
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    values = np.divide(values, norms, out=np.zeros_like(values), where=norms > 0)
    thresholds = lowered_thresholds(values, beta, min_echoes, lowering)
    keep = (values >= thresholds[:, None]) & (values > 0)
    values = np.where(keep, values, 0.0)
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    values = np.divide(values, norms, out=np.zeros_like(values), where=norms > 0)
    return Detections(np.where(keep, positions.astype(np.float64), np.nan), values, thresholds)


@dataclass(frozen=True)
class DetectionRule:
    """How every detector turns its activation into echoes (see `detect_echoes`).

    Parameters
    ----------
    beta : float
        Threshold on the unit-norm spike train.
    nms_window : int
        Non-maximum suppression half-width (samples).
    max_detections : int
        Most echoes per signal.
    min_echoes : int, optional
        Lower `beta` by `lowering` until this many pass (for a layer thickness).
    lowering : float
        Factor per lowering step.
    """

    beta: float = 0.01
    nms_window: int = 14
    max_detections: int = 20
    min_echoes: int | None = None
    lowering: float = 0.8

    def apply(self, activation: np.ndarray) -> Detections:
        """The echoes of an (N, T) activation.

        Parameters
        ----------
        activation : numpy.ndarray
            (N, T) activations.

        Returns
        -------
        Detections
        """
        return detect_echoes(activation, self.beta, self.nms_window, self.max_detections, self.min_echoes, self.lowering)
