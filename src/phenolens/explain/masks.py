"""The share of an attribution map that falls inside the nucleus masks (`phenolens.data.nuclei`)."""

from __future__ import annotations

import numpy as np


def nucleus_mass_fraction(maps: np.ndarray, masks: np.ndarray, channel: int) -> np.ndarray:
    """Per image, the fraction of the positive attribution of `channel` that lies inside the mask
    (NaN where the map has no positive mass).

    Parameters
    ----------
    maps : ndarray
        (N, C, H, W) attribution maps.
    masks : ndarray
        (N, H, W) bool masks.
    channel : int
        The channel whose attribution is measured.

    Returns
    -------
    ndarray
        (N,) fractions in [0, 1].
    """
    positive = np.clip(maps[:, channel], 0.0, None)
    total = positive.sum(axis=(1, 2))
    inside = (positive * masks).sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, inside / total, np.nan)
