"""Which images an explanation covers: the model's held-out images, every labelled image out of fold
(each by the cross-validation fold model that never trained on it), the labelled images, or all,
optionally a seeded random subset of them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from phenolens.core.errors import PhenolensError
from phenolens.core.seeding import numpy_rng
from phenolens.data.containers import ImageSet
from phenolens.nn.weights import read_card
from phenolens.training.evaluation import FOLDS_FOLDER


def at_most(images: ImageSet, max_images: int, seed: int) -> ImageSet:
    """A seeded random subset of `max_images` images, in their original order.

    Parameters
    ----------
    images : ImageSet
        The candidates.
    max_images : int
        How many to keep; 0 keeps all (as does a number larger than the set).
    seed : int
        Seed of the choice.

    Returns
    -------
    ImageSet
        The subset.
    """
    return images.subset(sample_positions(len(images), max_images, seed)) if max_images and len(images) > max_images else images


def sample_positions(count: int, max_images: int, seed: int) -> np.ndarray:
    """Positions of a seeded random subset of `max_images` of `count` images, in order (`at_most` by position).

    Parameters
    ----------
    count : int
        Number of candidates.
    max_images : int
        How many to keep; 0 keeps all (as does a number larger than `count`).
    seed : int
        Seed of the choice.

    Returns
    -------
    ndarray
        Sorted positions.
    """
    if max_images and count > max_images:
        return np.sort(numpy_rng(seed).choice(count, max_images, replace=False))
    return np.arange(count)


def held_out_sources(model: Path) -> list[str]:
    """The sources of the labelled images the model in folder `model` never trained on (from its model.json).

    Parameters
    ----------
    model : Path
        A model folder.

    Returns
    -------
    list of str
        The sources as written at training, then as absolute paths (`is_held_out` matches either); empty when
        the model lists none.
    """
    extra = read_card(model).extra
    return list(extra.get("held_out_sources", [])) + list(extra.get("held_out_paths", []))


def is_held_out(sources: pd.Series, held_out: list[str]) -> np.ndarray:
    """Which of `sources` are among `held_out` (`held_out_sources`), as written or as the same absolute path.

    A model trained on ``crops/`` lists its held-out files however they were named then; explain may name
    them ``./crops/...`` or by an absolute path, from another working folder.

    Parameters
    ----------
    sources : pandas.Series
        The candidates' ``source`` metadata.
    held_out : list of str
        From `held_out_sources`.

    Returns
    -------
    ndarray of bool
    """
    wanted = set(held_out)
    written = sources.astype(str)
    return (written.isin(wanted) | written.map(os.path.abspath).isin(wanted)).to_numpy()


def select_images(images: ImageSet, held_out: list[str], subset: str, model: Path) -> ImageSet:
    """The images to explain for `subset`: "heldout", "labelled", "all", or "auto".

    "auto" takes the model's held-out images when they are among `images`, else the labelled
    images, else all of them.

    Parameters
    ----------
    images : ImageSet
        The candidates (with a ``source`` metadata column to find the held-out ones).
    held_out : list of str
        Sources of the model's held-out images.
    subset : str
        The rule.
    model : Path
        The model folder, for messages.

    Returns
    -------
    ImageSet
        The chosen images.

    Raises
    ------
    PhenolensError
        For "heldout" when the model lists no held-out images among `images`.
    """
    return images.subset(select_positions(images.meta, images.labels, held_out, subset, model))


def select_positions(meta: pd.DataFrame, labels: np.ndarray, held_out: list[str], subset: str, model: Path) -> np.ndarray:
    """`select_images` on metadata alone: the positions of the images to explain (for a screen listed but not read).

    Parameters
    ----------
    meta : DataFrame
        The candidates' metadata (``source`` finds the held-out ones).
    labels : ndarray
        Their label indices.
    held_out, subset, model
        As `select_images`.

    Returns
    -------
    ndarray
        Positions, in order.

    Raises
    ------
    PhenolensError
        As `select_images`.
    """
    known = "source" in meta and held_out
    if subset == "heldout" and not known:
        raise PhenolensError(f"{model / 'model.json'}: lists no held-out images for these images; use --images labelled or all")
    if subset in ("heldout", "auto") and known:
        chosen = is_held_out(meta["source"], held_out)
        if chosen.any():
            return np.flatnonzero(chosen)
        if subset == "heldout":
            raise PhenolensError(f"{model / 'model.json'}: none of its held-out images are among these images; use --images labelled or all")
    if subset in ("labelled", "auto") and (labels >= 0).any():
        return np.flatnonzero(labels >= 0)
    return np.arange(len(labels))


def out_of_fold_parts(model: Path, labelled: ImageSet) -> tuple[list[Path], list[np.ndarray]]:
    """The fold models under ``model/folds`` and, for each, the indices of the images of `labelled` it never trained on.

    Parameters
    ----------
    model : Path
        A model folder trained with cross-validation (``--cv K``).
    labelled : ImageSet
        Labelled images with a ``source`` column.

    Returns
    -------
    tuple of (list of Path, list of ndarray)
        Fold folders (in fold order, folds without any of these images left out) and index arrays.

    Raises
    ------
    PhenolensError
        When there are no fold models, no sources, or none of the folds' held-out images are given.
    """
    folds = sorted((model / FOLDS_FOLDER).glob("fold-*"), key=lambda path: int(path.name.partition("-")[2] or 0))
    if not folds:
        raise PhenolensError(f"{model / FOLDS_FOLDER}: no cross-validation fold models; train the model with --cv K to explain out of fold")
    if "source" not in labelled.meta or len(labelled) == 0:
        raise PhenolensError(f"{model}: out-of-fold explanation needs labelled images with known sources; use --images labelled")
    sources = labelled.meta["source"].astype(str)
    chosen = [np.flatnonzero(is_held_out(sources, held_out_sources(fold))) for fold in folds]
    kept = [(fold, index) for fold, index in zip(folds, chosen) if len(index)]
    if not kept:
        raise PhenolensError(f"{model / FOLDS_FOLDER}: none of the folds' held-out images are among these images; pass the training images")
    return [fold for fold, _ in kept], [index for _, index in kept]
