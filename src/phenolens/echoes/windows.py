"""Activations of long signals computed in overlapping windows, so memory does not grow with the length.

A detector's activation at a sample depends only on the samples within its `context` (the network's
receptive field, or twice a dictionary atom's half-width). A long signal is cut into windows of
`window` samples that overlap by twice the context; each window contributes only its centre (the
samples at least `context` from its edges), and the centres tile the signal. Each sample's
activation thus comes from exactly one window, so non-maximum suppression on the stitched activation
sees no echo twice at a seam. The first and last windows start and end with the signal itself (they are
not padded beyond it): a stack of zero-padded convolutions pads every layer at the signal's ends, which
zeros padded onto the input alone do not reproduce, so only a window that ends where the signal ends
sees its edge as the whole-signal operator does.
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
    if length <= window:
        return activation(signals)
    per_signal = -(-length // step)
    out = np.empty((n, per_signal * step))
    offsets, kept = np.arange(window), np.arange(step)
    pairs = np.arange(n * per_signal)
    for start in range(0, len(pairs), windows_per_batch):
        rows, positions = np.divmod(pairs[start : start + windows_per_batch], per_signal)
        first = positions * step  # the first sample this window contributes
        # the window reaches `context` before it, but never beyond the signal: the edge windows keep the signal's own ends
        begins = np.clip(first - context, 0, length - window)
        values = activation(signals[rows[:, None], begins[:, None] + offsets[None, :]])
        values = np.pad(values, ((0, 0), (0, step)))  # the last window's kept part may run past the signal's end
        out[rows[:, None], first[:, None] + kept[None, :]] = values[np.arange(len(rows))[:, None], (first - begins)[:, None] + kept[None, :]]
    return out[:, :length]
