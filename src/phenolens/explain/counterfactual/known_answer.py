"""Known-answer check for translocation assays: does a counterfactual move the signal into the nucleus?

The nucleus is the Otsu foreground of the DNA channel of the *original* image (over its non-zero
pixels, `phenolens.data.nuclei`); the cell is every pixel where any channel is non-zero (the whole
frame when nothing is masked). The
statistic is the mean signal inside the nucleus minus the mean signal in the rest of the cell, so a
counterfactual towards "nuclear" should raise it and one towards "cytoplasmic" should lower it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from phenolens.core.errors import PhenolensError
from phenolens.data.nuclei import nucleus_masks
from phenolens.explain.masks import nucleus_mass_fraction


@dataclass
class NucleusRegions:
    """The signal channel and the (N, H, W) nucleus and cell masks of a set of original images: found
    once, then used for every counterfactual of those images.

    Attributes
    ----------
    signal : int
        Index of the signal channel.
    nuclei, cells : numpy.ndarray
        (N, H, W) boolean masks of the nucleus and of the cell.
    """

    signal: int
    nuclei: np.ndarray
    cells: np.ndarray

    @classmethod
    def of(cls, originals: np.ndarray, channel_names: list[str], nucleus_channel: str, signal_channel: str | None = None) -> NucleusRegions:
        """Find the nucleus and cell masks of the original images.

        Parameters
        ----------
        originals : numpy.ndarray
            (N, C, H, W) original images, raw intensities.
        channel_names : list of str
            Their channels.
        nucleus_channel : str
            The DNA channel.
        signal_channel : str, optional
            The measured channel; default: the first channel that is not the nucleus channel.

        Returns
        -------
        NucleusRegions
            The masks and the signal channel.

        Raises
        ------
        PhenolensError
            When a channel is not among `channel_names`, or only the nucleus channel exists.
        """
        nucleus_index = _channel_index(channel_names, nucleus_channel, "--nucleus-channel")
        if signal_channel is None:
            others = [i for i in range(len(channel_names)) if i != nucleus_index]
            if not others:
                raise PhenolensError(
                    f"the images have only the nucleus channel {nucleus_channel!r}; a signal channel is needed for the nuclear contrast"
                )
            signal_index = others[0]
        else:
            signal_index = _channel_index(channel_names, signal_channel, "--signal-channel")
        cells = (originals != 0).any(axis=1)
        cells[~cells.any(axis=(1, 2))] = True  # an all-zero crop: treat the frame as the cell
        return cls(signal_index, nucleus_masks(originals, nucleus_index) & cells, cells)

    def contrast(self, images: np.ndarray) -> np.ndarray:
        """Mean signal inside the nucleus minus mean signal in the rest of the cell, per image.

        Parameters
        ----------
        images : numpy.ndarray
            (N, C, H, W) images (originals or their counterfactuals), raw intensities.

        Returns
        -------
        numpy.ndarray
            (N,) contrasts in raw intensity units; NaN when either region is empty.
        """
        signal = images[:, self.signal]
        outside = self.cells & ~self.nuclei
        with np.errstate(invalid="ignore", divide="ignore"):
            inside_mean = (signal * self.nuclei).sum(axis=(1, 2)) / self.nuclei.sum(axis=(1, 2))
            outside_mean = (signal * outside).sum(axis=(1, 2)) / outside.sum(axis=(1, 2))
        return inside_mean - outside_mean

    def added_in_nucleus(self, originals: np.ndarray, counterfactuals: np.ndarray) -> np.ndarray:
        """Per image, the share of the signal a counterfactual adds (its positive change) that lies
        inside the nucleus (NaN when it adds none). Where the contrast says whether the signal moved
        towards the nucleus, this says how much of the change is placed on it.

        Parameters
        ----------
        originals, counterfactuals : numpy.ndarray
            (N, C, H, W) raw intensities.

        Returns
        -------
        numpy.ndarray
            (N,) shares in [0, 1], NaN where nothing is added.
        """
        added = np.clip(counterfactuals[:, self.signal] - originals[:, self.signal], 0.0, None)
        return nucleus_mass_fraction(added[:, None], self.nuclei, 0)


def _channel_index(channel_names: list[str], name: str, option: str) -> int:
    if name not in channel_names:
        raise PhenolensError(f"{option} {name!r} is not one of the model's channels ({', '.join(channel_names)})")
    return channel_names.index(name)
