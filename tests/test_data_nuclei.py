"""Crops registered on their nucleus: the DNA centroid moves to the centre, no pixel changes value."""

import numpy as np
import pytest

from phenolens.core.errors import PhenolensError
from phenolens.data.containers import ImageSet
from phenolens.data.nuclei import centred_on_nuclei, nucleus_masks


def _cell(height: int, width: int, nucleus_top: int, nucleus_left: int) -> np.ndarray:
    """A (2, H, W) crop: dim cytoplasm everywhere (channel 0) and a bright 5 x 7 nucleus in the DNA channel 1."""
    image = np.zeros((2, height, width), dtype=np.uint8)
    image[0] = 40
    image[1] = 10
    image[1, nucleus_top : nucleus_top + 5, nucleus_left : nucleus_left + 7] = 200
    return image


def _centroid(image: np.ndarray) -> np.ndarray:
    rows, columns = np.nonzero(nucleus_masks(image[None].astype(float), 1)[0])
    return np.array([rows.mean(), columns.mean()])


@pytest.mark.parametrize(("height", "width", "top", "left"), [(30, 40, 2, 3), (31, 20, 20, 10), (25, 25, 1, 16)])
def test_nucleus_centroid_moves_to_the_centre_of_the_padded_crop(height, width, top, left):
    cells = ImageSet([_cell(height, width, top, left)], np.array([0]), ["cell"], ["GFP", "DNA"])
    centred = centred_on_nuclei(cells, dna_channel=1)
    image = centred.images[0]
    assert np.abs(_centroid(image) - (np.array(image.shape[1:]) - 1) / 2).max() <= 0.5
    assert image.dtype == np.uint8 and image.sum() == cells.images[0].sum()  # zero padding only
    framed = centred.padded(64)
    assert np.abs(_centroid(framed[0]) - 31.5).max() <= 1.0
    assert np.abs(_centroid(cells.padded(64)[0]) - 31.5).max() > 4  # it was not centred before


def test_crops_without_dna_signal_are_kept_and_bad_channels_fail():
    empty = np.zeros((2, 9, 11), dtype=np.uint8)
    flat = np.full((2, 9, 11), 7, dtype=np.uint8)
    kept = centred_on_nuclei(ImageSet([empty, flat], np.array([0, 0]), ["cell"], ["GFP", "DNA"]), 1)
    assert kept.images[0] is empty and kept.images[1] is flat
    with pytest.raises(PhenolensError, match="no channel 2"):
        centred_on_nuclei(kept, 2)
