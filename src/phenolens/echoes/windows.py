"""Activations of long signals computed in overlapping windows, so memory does not grow with the length.

A detector's activation at a sample depends only on the samples within its `context` (the network's
receptive field, or twice a dictionary atom's half-width). A long signal is cut into windows of
`window` samples that overlap by twice the context; each window contributes only its centre (the
samples at least `context` from its edges), and the centres tile the signal. Each sample's
activation thus comes from exactly one window, so non-maximum suppression on the stitched activation
sees no echo twice at a seam. The signal's own ends are padded with zeros, as the whole-signal
operators (zero-padded convolutions and correlations) do.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from phenolens.core.errors import PhenolensError


def windowed_activation(
    activation: Callable[[np.ndarray], np.ndarray], signals: np.ndarray, window: int, context: int, windows_per_batch: int = 16
) -> np.ndarray:
    """Apply a batch activation to (N, T) signals window by window and stitch the window centres.

    Parameters
    ----------
    activation : callable
        Maps (B, window) signals to (B, window) activations.
    signals : numpy.ndarray
        (N, T) float signals.
    window : int
        Samples per window.
    context : int
        Samples on each side that influence one activation value; windows overlap by twice this.
    windows_per_batch : int
        Windows passed to `activation` at once (bounds the working memory).

    Returns
    -------
    numpy.ndarray
        (N, T) activation.

    Raises
    ------
    PhenolensError
        When `window` leaves no centre after removing `context` samples on each side.
    """
    step = window - 2 * context
    if step < 1:
        raise PhenolensError(
            f"a window of {window} samples is too short for a context of {context} samples on each side; use at least {2 * context + 1}"
        )
    n, length = signals.shape
    per_signal = -(-length // step)
    padded = np.zeros((n, per_signal * step + 2 * context))
    padded[:, context : context + length] = signals
    out = np.empty((n, per_signal * step))
    offsets = np.arange(window)
    pairs = np.arange(n * per_signal)
    for start in range(0, len(pairs), windows_per_batch):
        rows, positions = np.divmod(pairs[start : start + windows_per_batch], per_signal)
        batch = padded[rows[:, None], positions[:, None] * step + offsets[None, :]]
        centres = activation(batch)[:, context : context + step]
        out[rows[:, None], positions[:, None] * step + np.arange(step)[None, :]] = centres
    return out[:, :length]
