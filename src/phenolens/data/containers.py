"""Typed containers returned by the loaders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from phenolens.core.errors import PhenolensError

UNLABELLED = -1


def find_class(target: int | str, class_names: Sequence[str] | None, n_classes: int | None = None, what: str = "class") -> int:
    """The index of a class given by name or by index: a name first, then a string of digits (or a number) as an index.

    Class folders are often named 1, 2, 3: ``--target 2`` then means the class named "2" (index 1), and a string of
    digits is an index only where no class has that name. The one rule of `sign graph --class` and `images explain --target`.

    Parameters
    ----------
    target : int or str
        A class name, or an index (a number, or a string of digits that names no class).
    class_names : sequence of str or None
        The model's classes in output order (None: a model without names, indices only).
    n_classes : int, optional
        Number of classes (default: ``len(class_names)``).
    what : str
        What the target is called in the messages.

    Returns
    -------
    int
        The class index.

    Raises
    ------
    PhenolensError
        For a name that is no class (and no string of digits), or an index out of range.
    """
    names = [str(name) for name in class_names or []]
    n_classes = len(names) if n_classes is None else n_classes
    if isinstance(target, str) and target in names:
        return names.index(target)
    if isinstance(target, str) and not target.isdigit():
        raise PhenolensError(f"unknown {what} {target!r}; the model knows {', '.join(names or map(str, range(n_classes)))}")
    index = int(target)
    if not 0 <= index < n_classes:
        raise PhenolensError(f"{what} index {index} is out of range; the model has {n_classes} classes")
    return index


def class_by_name(name: str, class_names: Sequence[str]) -> int:
    """The index of a class given by its name only (no index): an image classifier's and a counterfactual model's
    `class_index` (`find_class` also takes an index, for ``images explain --target`` and ``sign graph --class``).

    Parameters
    ----------
    name : str
        A class name.
    class_names : sequence of str
        The model's classes in output order.

    Returns
    -------
    int
        Its index in `class_names`.

    Raises
    ------
    PhenolensError
        Naming the known classes when `name` is not one of them.
    """
    if name not in class_names:
        raise PhenolensError(f"unknown target class {name!r}; the model knows {', '.join(class_names)}")
    return list(class_names).index(name)


def refuse_images_without(meta: pd.DataFrame, column: str, source: str, what: str, remedy: str) -> None:
    """Refuse images whose metadata `column` is empty, in one line naming the column, how many and one of them.

    Parameters
    ----------
    meta : pandas.DataFrame
        The images' metadata (with ``source``, the image's file, where known); `column` is in it.
    column : str
        The metadata column every image needs a value in.
    source : str
        The images (a manifest, a dataset), named first.
    what : str
        What the column is needed for, e.g. ``"to group by"``.
    remedy : str
        What to do, e.g. ``"fill it in for every image"``.

    Raises
    ------
    PhenolensError
        When `column` is empty for one or more images.
    """
    missing = meta[column].isna().to_numpy()
    if missing.any():
        first = int(np.argmax(missing))
        example = meta["source"].iloc[first] if "source" in meta else f"image {first}"
        raise PhenolensError(f"{source}: {int(missing.sum())} image(s) have no {column!r} {what} (e.g. {example}); {remedy}")


@dataclass
class ImageSet:
    """Multi-channel images with labels and per-image metadata.

    Attributes
    ----------
    images : numpy.ndarray or list of numpy.ndarray
        One (C, H, W) array per image (sizes may differ), or one (N, C, H, W) array.
    labels : numpy.ndarray
        Int array of length N indexing `class_names`; -1 (`UNLABELLED`) marks an unlabelled image.
    class_names : list of str
        Names of the label classes.
    channel_names : list of str
        One name per channel (stain).
    meta : pandas.DataFrame
        One row per image (well, site, source file, ...).
    unlabelled_name : str
        How unlabelled images are named in summaries.
    name : str
        Dataset name for reports and error messages.

    Raises
    ------
    PhenolensError
        On construction, when the numbers of images, labels and metadata rows differ, an image is
        not (C, H, W) with one channel per channel name, or a label indexes no class.
    """

    images: np.ndarray | list[np.ndarray]
    labels: np.ndarray
    class_names: list[str]
    channel_names: list[str]
    meta: pd.DataFrame = field(default_factory=pd.DataFrame)
    unlabelled_name: str = "Unlabelled"
    name: str = "images"

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        count = len(self.images)
        if len(self.labels) != count:
            raise PhenolensError(f"{self.name}: {count} images but {len(self.labels)} labels")
        if self.meta.empty:
            self.meta = pd.DataFrame(index=range(count))
        if len(self.meta) != count:
            raise PhenolensError(f"{self.name}: {count} images but {len(self.meta)} metadata rows")
        self.meta = self.meta.reset_index(drop=True)
        for index, image in enumerate(self.images[:1] if isinstance(self.images, np.ndarray) else self.images):
            if image.ndim != 3 or image.shape[0] != len(self.channel_names):
                source = self.meta["source"].iloc[index] if "source" in self.meta else f"image {index}"
                raise PhenolensError(
                    f"{source}: expected {len(self.channel_names)} channels "
                    f"({', '.join(self.channel_names)}) shaped (C, H, W), got shape {tuple(image.shape)}"
                )
        if self.labels.size and self.labels.max(initial=UNLABELLED) >= len(self.class_names):
            raise PhenolensError(f"{self.name}: label index beyond the {len(self.class_names)} class names")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def n_channels(self) -> int:
        """Number of channels (stains) of every image."""
        return len(self.channel_names)

    def subset(self, index: Sequence[int] | np.ndarray) -> ImageSet:
        """A new ImageSet with the images at `index` (ints or a boolean mask).

        Parameters
        ----------
        index : sequence of int or numpy.ndarray
            Positions, in the order wanted, or a boolean mask of length N.

        Returns
        -------
        ImageSet
            The selected images with their labels and metadata rows (re-indexed from 0).
        """
        index = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index, dtype=int)
        images = self.images[index] if isinstance(self.images, np.ndarray) else [self.images[i] for i in index]
        return ImageSet(
            images=images,
            labels=self.labels[index],
            class_names=list(self.class_names),
            channel_names=list(self.channel_names),
            meta=self.meta.iloc[index].reset_index(drop=True),
            unlabelled_name=self.unlabelled_name,
            name=self.name,
        )

    def labelled(self) -> ImageSet:
        """Only the images that carry a label.

        Returns
        -------
        ImageSet
            The labelled images, in their original order.
        """
        return self.subset(self.labels != UNLABELLED)

    def unlabelled(self) -> ImageSet:
        """Only the images without a label (a pseudo-labelling pool).

        Returns
        -------
        ImageSet
            The unlabelled images, in their original order.
        """
        return self.subset(self.labels == UNLABELLED)

    def label_names(self) -> np.ndarray:
        """Per-image label names; unlabelled images get `unlabelled_name`.

        Returns
        -------
        numpy.ndarray
            Object array of N names.
        """
        names = np.array(list(self.class_names) + [self.unlabelled_name], dtype=object)
        return names[np.where(self.labels == UNLABELLED, len(self.class_names), self.labels)]

    def class_counts(self) -> dict[str, int]:
        """Images per class name in class order, unlabelled last when present.

        Returns
        -------
        dict of str to int
            Class name -> number of images.
        """
        names = self.label_names()
        counts = {c: int((names == c).sum()) for c in self.class_names}
        if (self.labels == UNLABELLED).any():
            counts[self.unlabelled_name] = int((self.labels == UNLABELLED).sum())
        return counts

    def shapes(self) -> np.ndarray:
        """Image heights and widths.

        Returns
        -------
        numpy.ndarray
            (N, 2) array of (height, width).
        """
        if isinstance(self.images, np.ndarray):
            return np.tile(self.images.shape[2:], (len(self), 1))
        return np.array([image.shape[1:] for image in self.images])

    def padded(self, size: int | None = None, dtype=np.float32) -> np.ndarray:
        """All images in one (N, C, S, S) array, centred and zero-padded (never stretched).

        Parameters
        ----------
        size : int, optional
            S; defaults to the largest height or width. Larger images are centre-cropped to it.
        dtype : numpy dtype
            Type of the result.

        Returns
        -------
        numpy.ndarray
            (N, C, S, S) array.
        """
        if isinstance(self.images, np.ndarray) and (size is None or self.images.shape[2:] == (size, size)):
            return self.images.astype(dtype, copy=False)
        size = int(size or self.shapes().max())
        out = np.zeros((len(self), self.n_channels, size, size), dtype=dtype)
        for i, image in enumerate(self.images):
            h, w = image.shape[1:]
            crop_top, crop_left = max(0, (h - size) // 2), max(0, (w - size) // 2)
            image = image[:, crop_top : crop_top + size, crop_left : crop_left + size]
            h, w = image.shape[1:]
            top, left = (size - h) // 2, (size - w) // 2
            out[i, :, top : top + h, left : left + w] = image
        return out


@dataclass
class Signal:
    """One measured 1-D signal (an ultrasonic A-scan) with its fitted parameters, if any.

    Attributes
    ----------
    name : str
        The signal's name (unique within a `SignalSet`).
    values : numpy.ndarray
        The samples, float64, 1-D.
    params : dict
        Fitted pulse parameters, when the source provides them.
    source : str
        The file it was read from, for error messages.

    Raises
    ------
    PhenolensError
        On construction, for an empty signal or one with NaN or infinite samples.
    """

    name: str
    values: np.ndarray
    params: dict = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64).reshape(-1)
        if self.values.size == 0:
            raise PhenolensError(f"{self.source or self.name}: the signal is empty; give a file with samples")
        if not np.isfinite(self.values).all():
            raise PhenolensError(f"{self.source or self.name}: the signal has NaN or infinite samples; clean or crop it")


@dataclass
class SignalSet:
    """Named signals, in a stable order; ``signals["name"]`` selects one.

    Attributes
    ----------
    signals : list of Signal
        The signals.
    name : str
        Dataset name for reports and error messages.
    """

    signals: list[Signal]
    name: str = "signals"

    def __len__(self) -> int:
        return len(self.signals)

    def __getitem__(self, key: str) -> Signal:
        for signal in self.signals:
            if signal.name == key:
                return signal
        raise PhenolensError(f"{self.name} has no signal {key!r}; choose one of: {', '.join(self.names)}")

    @property
    def names(self) -> list[str]:
        """The signals' names, in order."""
        return [s.name for s in self.signals]
