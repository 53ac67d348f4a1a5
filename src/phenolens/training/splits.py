"""Seeded, stratified splits, optionally grouped (by well, site or field) so that crops of one
group never sit on both sides of a split."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from phenolens.core.errors import PhenolensError


def stratified_folds(labels: Sequence[int], n_folds: int, seed: int = 0, groups: Sequence | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """`n_folds` (train_index, test_index) pairs; every index is tested exactly once.

    With `groups`, scikit-learn's StratifiedGroupKFold keeps each group on one side and balances
    the classes as well as the groups allow.

    Parameters
    ----------
    labels : sequence of int
        Class per image.
    n_folds : int
        Number of folds (>= 2).
    seed : int
        Seed of the shuffling.
    groups : sequence, optional
        Group per image (well, site, field).

    Returns
    -------
    list of (ndarray, ndarray)
        Sorted train and test indices per fold.

    Raises
    ------
    PhenolensError
        When a class or the groups are too few for the folds.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    labels = np.asarray(labels)
    counts = np.bincount(labels[labels >= 0]) if len(labels) else np.array([0])
    if n_folds < 2:
        raise PhenolensError(f"cross-validation needs at least 2 folds, got {n_folds}")
    smallest = counts[counts > 0].min() if (counts > 0).any() else 0
    if smallest < n_folds:
        raise PhenolensError(f"the smallest class has {smallest} images, fewer than the {n_folds} folds asked for; use fewer folds")
    if groups is None:
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        folds = splitter.split(np.zeros(len(labels)), labels)
    else:
        groups = np.asarray(groups)
        if len(np.unique(groups)) < n_folds:
            raise PhenolensError(f"only {len(np.unique(groups))} groups for {n_folds} folds; group by a finer column or use fewer folds")
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        folds = splitter.split(np.zeros(len(labels)), labels, groups)
    return [(np.sort(train), np.sort(test)) for train, test in folds]


def stratified_split(
    labels: Sequence[int], test_fraction: float = 0.2, seed: int = 0, groups: Sequence | None = None, option: str = "the held-out fraction"
) -> tuple[np.ndarray, np.ndarray]:
    """One (train_index, test_index) split holding out about `test_fraction` of the images per class.

    Grouped splits take the first fold of round(1 / test_fraction) stratified group folds.

    Parameters
    ----------
    labels : sequence of int
        Class per image.
    test_fraction : float
        Held-out share, in (0, 1).
    seed : int
        Seed of the split.
    groups : sequence, optional
        Group per image (groups never straddle the split).
    option : str
        The option that sets `test_fraction`, named when no split can hold out that share.

    Returns
    -------
    tuple of ndarray
        Sorted train and test indices.

    Raises
    ------
    PhenolensError
        For a fraction outside (0, 1), a class with a single image, or a fraction that leaves one side
        of the split empty or with fewer images than there are classes.
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise PhenolensError(f"test fraction must lie between 0 and 1, got {test_fraction}")
    labels = np.asarray(labels)
    if groups is not None:
        return stratified_folds(labels, max(2, round(1.0 / test_fraction)), seed, groups)[0]
    counts = np.bincount(labels)
    if (counts[counts > 0] < 2).any():
        raise PhenolensError("a class has a single image; it cannot sit on both sides of a stratified split")
    index = np.arange(len(labels))
    try:
        train, test = train_test_split(index, test_size=test_fraction, stratify=labels, random_state=seed)
    except ValueError:  # an empty side, or a side with fewer images than classes
        raise PhenolensError(
            f"{option} {test_fraction:g} of {len(labels)} images cannot put every one of the {len(counts[counts > 0])} classes on both sides; "
            f"change {option} or add images"
        ) from None
    return np.sort(train), np.sort(test)


def group_column(images, column: str | None) -> np.ndarray | None:
    """The values of metadata `column` of an ImageSet (the groups of a grouped split), or None.

    Parameters
    ----------
    images : ImageSet
        The images.
    column : str or None
        A metadata column, or None for no grouping.

    Returns
    -------
    ndarray or None
        One value per image.

    Raises
    ------
    PhenolensError
        When the column is missing, naming the columns there are.
    """
    if column is None:
        return None
    if column not in images.meta:
        raise PhenolensError(f"{images.name}: no metadata column {column!r} to group by; choose one of {', '.join(map(str, images.meta.columns))}")
    return images.meta[column].to_numpy()
