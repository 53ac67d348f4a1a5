"""Nuclei from a DNA channel: per-image Otsu thresholds, nucleus masks, and crops registered on their nucleus."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from phenolens.core.errors import PhenolensError
from phenolens.data.containers import ImageSet


def otsu_thresholds(images: np.ndarray, bins: int = 256) -> np.ndarray:
    """Otsu's threshold of each (H, W) image in an (N, H, W) stack, over its non-zero pixels
    (zero is the masked background of segmented crops and the padding).

    Vectorised over images through per-image histograms; agrees with
    `skimage.filters.threshold_otsu` on the same pixels to within one histogram bin.

    Parameters
    ----------
    images : numpy.ndarray
        (N, H, W) stack.
    bins : int
        Histogram bins per image.

    Returns
    -------
    numpy.ndarray
        N thresholds (0 for an image without non-zero pixels).
    """
    n = len(images)
    flat = images.reshape(n, -1).astype(np.float64)
    foreground = flat > 0
    low = np.where(foreground, flat, np.inf).min(axis=1)
    high = np.where(foreground, flat, -np.inf).max(axis=1)
    span = np.where(high > low, high - low, 1.0)
    position = np.clip(((flat - low[:, None]) / span[:, None] * bins).astype(int), 0, bins - 1)
    counts = np.zeros((n, bins))
    rows = np.broadcast_to(np.arange(n)[:, None], flat.shape)
    np.add.at(counts, (rows[foreground], position[foreground]), 1.0)
    centres = low[:, None] + (np.arange(bins)[None, :] + 0.5) * span[:, None] / bins
    weight_below = np.cumsum(counts, axis=1)
    mass_below = np.cumsum(counts * centres, axis=1)
    total, mass = weight_below[:, -1:], mass_below[:, -1:]
    weight_above = total - weight_below
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_below = mass_below / weight_below
        mean_above = (mass - mass_below) / weight_above
        between = weight_below * weight_above * (mean_below - mean_above) ** 2
    between = np.nan_to_num(between, nan=-1.0)
    best = between.argmax(axis=1)
    return np.where(np.isfinite(low), centres[np.arange(n), best], 0.0)


def nucleus_masks(images: np.ndarray, dna_channel: int) -> np.ndarray:
    """Boolean nucleus masks: the DNA channel above its per-image Otsu threshold.

    Parameters
    ----------
    images : numpy.ndarray
        (N, C, H, W) stack.
    dna_channel : int
        Index of the DNA channel.

    Returns
    -------
    numpy.ndarray
        (N, H, W) boolean masks.
    """
    dna = np.asarray(images[:, dna_channel], dtype=np.float64)
    return dna > otsu_thresholds(dna)[:, None, None]


def centred_on_nuclei(images: ImageSet, dna_channel: int) -> ImageSet:
    """A copy of `images` in which every crop is zero-padded on one side per axis so that the centroid
    of its nucleus (the Otsu foreground of channel `dna_channel`) is the centre of the crop.

    Crops of segmented cells are centred on the whole cell, so the nucleus sits anywhere within about
    a cell radius of the centre. Registering crops on the nucleus (as DeepProfiler does) puts the
    nuclei of all cells in one place, which a population-level direction, such as ECINN's shift
    between class-mean latents, needs in order to act on the nucleus of each cell. Pixels move by
    whole pixels only (no resampling); a crop without DNA signal is left as it is. Crop to a
    common size afterwards with `ImageSet.padded`, which keeps the centre.

    Parameters
    ----------
    images : ImageSet
        The crops (not changed).
    dna_channel : int
        Index of the DNA channel.

    Returns
    -------
    ImageSet
        The registered crops, with the same labels and metadata.

    Raises
    ------
    PhenolensError
        When `dna_channel` is not a channel of `images`.
    """
    if not 0 <= dna_channel < images.n_channels:
        raise PhenolensError(f"{images.name}: no channel {dna_channel} to centre the crops on (the images have {images.n_channels})")
    return replace(images, images=[_centred(np.asarray(image), dna_channel) for image in images.images])


def _centred(image: np.ndarray, dna_channel: int) -> np.ndarray:
    if not (image[dna_channel] > 0).any():
        return image
    nucleus = nucleus_masks(image[None], dna_channel)[0]
    if not nucleus.any():  # a flat DNA channel has no foreground
        return image
    height, width = nucleus.shape
    rows, columns = np.nonzero(nucleus)
    # Padding s pixels before the centroid c moves it to c + s, the middle of the (size + s) axis when
    # s = size - 1 - 2c; a negative s pads after it instead.
    down = int(round(height - 1 - 2 * rows.mean()))
    right = int(round(width - 1 - 2 * columns.mean()))
    return np.pad(image, ((0, 0), (max(down, 0), max(-down, 0)), (max(right, 0), max(-right, 0))))
