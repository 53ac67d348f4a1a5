"""From an ImageSet to the tensor a classifier sees: pad to a common size, check, normalise per channel.

The per-channel mean and standard deviation come from the training images (after padding, which
is what the network sees) and travel with the weights, so the same numbers are applied at
prediction and explanation time. Covariates (one metadata column, one-hot encoded) likewise keep
their category list.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from phenolens.core.errors import PhenolensError
from phenolens.data.containers import ImageSet
from phenolens.data.nuclei import centred_on_nuclei


@dataclass
class ChannelNormalization:
    """Per-channel (x - mean) / std with statistics of the training images.

    Parameters
    ----------
    mean, std : ndarray
        (C,) float32 statistics.
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, images: np.ndarray) -> ChannelNormalization:
        """Statistics of an (N, C, H, W) array over images and pixels (a constant channel gets std 1).

        Parameters
        ----------
        images : ndarray
            The padded training images.

        Returns
        -------
        ChannelNormalization
            The fitted normalisation.
        """
        mean = images.mean(axis=(0, 2, 3), dtype=np.float64)
        std = images.std(axis=(0, 2, 3), dtype=np.float64)
        return cls(mean.astype(np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return (images - self.mean[None, :, None, None]) / self.std[None, :, None, None]

    def constant(self, raw: float | np.ndarray) -> np.ndarray:
        """(1, C, 1, 1) float32: the normalised value of a raw intensity (a scalar or one per channel).

        Parameters
        ----------
        raw : float or ndarray
            The raw intensity; ``constant(0.0)`` is black, the value of the centre-padding.

        Returns
        -------
        ndarray
            The normalised value per channel.
        """
        return self(np.broadcast_to(np.asarray(raw, dtype=np.float32), self.mean.shape)[None, :, None, None]).astype(np.float32, copy=False)

    def to_dict(self) -> dict:
        """JSON-ready ``{"mean": [...], "std": [...]}``.

        Returns
        -------
        dict
            The statistics as lists.
        """
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, values: dict) -> ChannelNormalization:
        """Rebuild from `to_dict` output.

        Parameters
        ----------
        values : dict
            ``mean`` and ``std`` lists.

        Returns
        -------
        ChannelNormalization
            The normalisation.
        """
        return cls(np.asarray(values["mean"], dtype=np.float32), np.asarray(values["std"], dtype=np.float32))


@dataclass
class CovariateEncoding:
    """One-hot encoding of one metadata column (e.g. cell line or plate), categories fixed at training.

    Parameters
    ----------
    column : str
        The metadata column.
    categories : list of str
        Its values seen in training, in one-hot order.
    """

    column: str
    categories: list[str]

    @classmethod
    def fit(cls, images: ImageSet, column: str) -> CovariateEncoding:
        """The encoding of `column` with the sorted values it takes in `images`.

        Parameters
        ----------
        images : ImageSet
            The training images.
        column : str
            A metadata column.

        Returns
        -------
        CovariateEncoding
            The encoding.

        Raises
        ------
        PhenolensError
            When the column is missing.
        """
        if column not in images.meta:
            raise PhenolensError(
                f"{images.name}: no metadata column {column!r} for covariates; choose one of {', '.join(map(str, images.meta.columns))}"
            )
        return cls(column, sorted(map(str, images.meta[column].unique())))

    def __call__(self, images: ImageSet) -> torch.Tensor:
        if self.column not in images.meta:
            raise PhenolensError(f"{images.name}: the model needs the metadata column {self.column!r} (its covariate); add it to the manifest")
        values = images.meta[self.column].astype(str).to_numpy()
        unknown = sorted(set(values) - set(self.categories))
        if unknown:
            raise PhenolensError(f"{images.name}: column {self.column!r} has values {unknown[:3]} unseen in training; known: {self.categories}")
        one_hot = (values[:, None] == np.asarray(self.categories)[None, :]).astype(np.float32)
        return torch.from_numpy(one_hot)


def padded_array(images: ImageSet | np.ndarray, size: int, channel_names: list[str], centre_on: int | None = None) -> np.ndarray:
    """(N, C, size, size) float32 array of centre-padded crops, checked for channel count and finite pixels.

    With `centre_on` (a DNA channel index) each crop is first registered on its nucleus
    (`phenolens.data.nuclei.centred_on_nuclei`).

    Parameters
    ----------
    images : ImageSet or ndarray
        The images (an array is (N, C, H, W) in the given channel order).
    size : int
        Crop size.
    channel_names : list of str
        The channels expected, for the count check and messages.
    centre_on : int, optional
        A DNA channel index to register each crop on its nucleus first.

    Returns
    -------
    ndarray
        (N, C, size, size) float32.

    Raises
    ------
    PhenolensError
        For another channel count, no images, or NaN/infinite pixels (naming the first such file).
    """
    if isinstance(images, ImageSet):
        if images.n_channels != len(channel_names):
            raise PhenolensError(
                f"{images.name}: the images have {images.n_channels} channels ({', '.join(images.channel_names)}) but the model "
                f"was trained on {len(channel_names)} ({', '.join(channel_names)}); give images with the same stains in the same order"
            )
    else:
        array = np.asarray(images, dtype=np.float32)
        if array.ndim != 4 or array.shape[1] != len(channel_names):
            raise PhenolensError(f"expected (N, {len(channel_names)}, H, W) images ({', '.join(channel_names)}), got shape {array.shape}")
        images = ImageSet(array, np.full(len(array), -1), [], list(channel_names))
    if centre_on is not None:
        images = centred_on_nuclei(images, centre_on)
    array = images.padded(size)
    if len(array) == 0:
        raise PhenolensError("no images to process; check the folder, manifest or subset")
    finite = np.isfinite(array).all(axis=(1, 2, 3))
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        source = images.meta["source"].iloc[first] if "source" in images.meta else f"image {first}"
        raise PhenolensError(f"{source}: has NaN or infinite pixels ({int((~finite).sum())} image(s) affected); clean or drop them")
    return array.astype(np.float32, copy=False)
