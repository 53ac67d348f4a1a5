"""Seeded, stratified splits, optionally grouped (by well, site or field) so that crops of one
group never sit on both sides of a split."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from phenolens.core.errors import PhenolensError
from phenolens.data.containers import refuse_images_without

GROUP_REMEDY = "fill it in for every image"  # what to do about an image without a group, in training and prediction alike


def stratified_folds(labels: Sequence[int], n_folds: int, seed: int = 0, groups: Sequence | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """`n_folds` (train_index, test_index) pairs; every index is tested exactly once.

    With `groups`, each group stays whole in one fold (`assign_groups`): the seed decides which groups
    go where, every class with at least `n_folds` groups is in every fold, and the classes are
    balanced across folds as well as the groups allow.

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
    from sklearn.model_selection import StratifiedKFold

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
        fold = assign_groups(labels, groups, np.full(n_folds, 1.0 / n_folds), seed)
        everything = np.arange(len(labels))
        folds = [(everything[fold != number], everything[fold == number]) for number in range(n_folds)]
    return [(np.sort(train), np.sort(test)) for train, test in folds]


def stratified_split(
    labels: Sequence[int], test_fraction: float = 0.2, seed: int = 0, groups: Sequence | None = None, option: str = "the held-out fraction"
) -> tuple[np.ndarray, np.ndarray]:
    """One (train_index, test_index) split holding out about `test_fraction` of the images per class.

    Grouped splits keep each group whole on one side (`assign_groups` with shares `test_fraction`
    and 1 - `test_fraction`): the seed decides which groups are held out, and every class with at
    least two groups has one on each side.

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
        side = assign_groups(labels, np.asarray(groups), np.array([test_fraction, 1.0 - test_fraction]), seed)
        index = np.arange(len(labels))
        return index[side == 1], index[side == 0]
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


def assign_groups(labels: np.ndarray, groups: np.ndarray, shares: np.ndarray, seed: int) -> np.ndarray:
    """Put each group whole into one of `len(shares)` bins so that every class is split by `shares`.

    scikit-learn's StratifiedGroupKFold orders the groups by how uneven their classes are and shuffles
    only ties, so with groups of different sizes every seed gives the same folds. Here the seed orders
    the groups. First, for each class (in seeded order) and each bin still without it, a seeded choice
    among the class's unplaced groups goes there (largest share first), so a class with at least as many groups as bins is in
    every bin; then the other groups, in seeded order, each go to the bin where they bring the classes'
    counts closest to their targets (share x the class's images; distances relative to the class's
    size), ties broken by the seed.

    Parameters
    ----------
    labels : ndarray
        (N,) class codes (negative codes, unlabelled images, are placed with their group but not counted).
    groups : ndarray
        (N,) group per image.
    shares : ndarray
        (B,) share of every class each bin should hold (summing to 1).
    seed : int
        Seed of the orders and ties.

    Returns
    -------
    ndarray
        (N,) bin index per image.
    """
    rng = np.random.default_rng(seed)
    names, group_of = np.unique(groups, return_inverse=True)
    classes = np.unique(labels[labels >= 0])
    counted = labels >= 0
    counts = np.zeros((len(names), len(classes)))  # images of each class in each group
    np.add.at(counts, (group_of[counted], np.searchsorted(classes, labels[counted])), 1.0)
    totals = np.maximum(counts.sum(axis=0), 1.0)
    targets = np.outer(shares, counts.sum(axis=0))
    held = np.zeros((len(shares), len(classes)))
    bin_of = np.full(len(names), -1)

    def place(group: int, target_bin: int) -> None:
        bin_of[group] = target_bin
        held[target_bin] += counts[group]

    bins_largest_first = sorted(rng.permutation(len(shares)), key=lambda b: -shares[b])  # a class of one group stays in training
    for c in rng.permutation(len(classes)):
        for target_bin in sorted(bins_largest_first, key=lambda b: (-shares[b], (bin_of == b).sum())):  # emptier bins first among equals
            candidates = np.flatnonzero((bin_of < 0) & (counts[:, c] > 0))
            if held[target_bin, c] == 0 and len(candidates):
                place(int(rng.choice(candidates)), int(target_bin))
    for group in rng.permutation(len(names)):
        if bin_of[group] >= 0:
            continue
        change = (np.abs(held + counts[group] - targets) - np.abs(held - targets)) / totals
        cost = change.sum(axis=1)
        best = np.flatnonzero(np.isclose(cost, cost.min()))
        place(int(group), int(rng.choice(best)))
    return bin_of[group_of]


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
        When the column is missing, naming the columns there are, or empty for some images (which group they
        belong to is unknown).
    """
    if column is None:
        return None
    if column not in images.meta:
        raise PhenolensError(f"{images.name}: no metadata column {column!r} to group by; choose one of {', '.join(map(str, images.meta.columns))}")
    refuse_images_without(images.meta, column, images.name, "to group by", GROUP_REMEDY)
    return images.meta[column].to_numpy()
