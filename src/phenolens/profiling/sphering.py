"""Sphering (whitening) of profiles on negative controls: pycytominer's `Spherize`, globally or per batch.

After sphering, the control wells the transform was fitted on have identity covariance (ZCA, PCA)
or identity correlation (ZCA-cor, PCA-cor): the directions in which controls vary by themselves
(technical variation, the same in every treatment) are shrunk, and what is left of a treated well
is what the controls do not do. The "typical variation normalisation" of Ando et al. (2017) is the
same idea. Fitted per batch, each batch is whitened against its own controls, which also removes
covariance differences between batches (at the price of fewer controls per fit).

With fewer independent control wells than features the control covariance is singular (and it
always loses one direction per plate when each plate is centred on its own controls); the missing
singular values are then set to the smallest observed one and `epsilon` is added to all of them,
pycytominer's regularisation, with a warning. Without regularisation (`epsilon` 0) the fit refuses.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from phenolens.core.errors import PhenolensError
from phenolens.core.estimators import check_is_fitted
from phenolens.core.logging import get_logger
from phenolens.profiling.settings import SPHERING_METHODS

log = get_logger(__name__)

ALL = "all"  # the one group of a global fit
SPHERED_SUFFIX = "_sphered"  # `cellprofiler` -> `cellprofiler_sphered`


class Spherer(BaseEstimator):
    """Sphering fitted on reference (control) rows, one transform per group or one for all.

    The transform is pycytominer's `Spherize` (same centring, scaling, SVD and epsilon, so on a
    full-rank reference it gives pycytominer's numbers), extended to rank-deficient references:
    pycytominer refuses any reference whose rank is below min(rows - 1, features), which every
    plate-centred control set is (centring each plate on its own controls removes one direction per
    plate). Here, as pycytominer already does when rows <= features, the singular values of the
    missing directions are set to the smallest observed one before `epsilon` is added, and the fit
    warns that it was regularised.

    A scikit-learn estimator: the constructor only stores its parameters, `fit` returns the
    spherer, learned state ends in ``_``.

    Parameters
    ----------
    method : str
        ``ZCA-cor`` (default), ``ZCA``, ``PCA-cor`` or ``PCA`` (Kessy et al. 2016).
    epsilon : float
        pycytominer's regulariser, added to the singular values of the centred reference matrix
        (so its scale grows with the square root of the number of reference rows).
    source : str
        What is sphered, for messages (e.g. "cellprofiler").

    Attributes
    ----------
    transforms_ : dict
        Group -> (centre, scale, whitening matrix).
    ranks_ : dict
        Group -> rank of its centred reference rows.
    n_features_in_ : int
        Features of the fit.
    regularised_groups_ : list of str
        Groups whose reference rows span fewer directions than there are features.
    """

    def __init__(self, method: str = "ZCA-cor", epsilon: float = 1e-6, source: str = "profiles"):
        self.method = method
        self.epsilon = epsilon
        self.source = source

    def fit(self, values: np.ndarray, groups: Sequence | None = None) -> Spherer:
        """Fit one transform per group (or one for all rows) on `values`, the reference rows.

        Parameters
        ----------
        values : numpy.ndarray
            (reference rows, features), finite.
        groups : sequence, optional
            Group (batch) of every reference row; None fits one global transform.

        Returns
        -------
        Spherer
            ``self``.

        Raises
        ------
        PhenolensError
            For an unknown method, a negative epsilon, non-finite values, a group with fewer than
            two rows, a feature constant within a group (-cor methods), or too few independent
            rows without regularisation (epsilon 0).
        """
        if self.method not in SPHERING_METHODS:
            raise PhenolensError(f"sphering method {self.method!r} is unknown; choose one of {', '.join(SPHERING_METHODS)}")
        if not self.epsilon >= 0:
            raise PhenolensError(f"sphering epsilon {self.epsilon} must be >= 0")
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or not np.isfinite(values).all():
            raise PhenolensError(f"{self.source}: sphering needs a finite 2-D table of control wells")
        labels = _labels(groups, len(values))
        self.transforms_, self.ranks_, self.regularised_groups_ = {}, {}, []
        for group in pd.unique(labels):
            self.transforms_[group] = self._fit_group(values[labels == group], group)
        self.n_features_in_ = values.shape[1]
        return self

    def _fit_group(self, rows: np.ndarray, group: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n, d = rows.shape
        if n < 2:
            raise PhenolensError(f"{self.source}: sphering needs at least 2 control wells{_where(group)}, found {n}")
        centre = rows.mean(axis=0)
        scale = np.ones(d)
        if self.method.endswith("-cor"):
            scale = rows.std(axis=0)  # population spread, as pycytominer's StandardScaler
            constant = np.flatnonzero(scale == 0)
            if len(constant):
                raise PhenolensError(
                    f"{self.source}: feature {constant[0]} is constant over the {n} control wells{_where(group)} ({len(constant)} such); "
                    f"{self.method} divides by it: drop constant features or use --sphering-method {self.method.removesuffix('-cor')}"
                )
        _, singular, rotation = np.linalg.svd((rows - centre) / scale, full_matrices=True)
        rank = int((singular > singular.max(initial=0) * max(n, d) * np.finfo(np.float64).eps).sum())
        if rank == 0:
            raise PhenolensError(f"{self.source}: the {n} control wells{_where(group)} are all the same; sphering needs varying control wells")
        self.ranks_[group] = rank
        if rank < d:
            if self.epsilon == 0:
                raise PhenolensError(
                    f"{self.source}: the {n} control wells{_where(group)} span {rank} of {d} feature directions; sphering without "
                    f"regularisation needs at least {d + 1} independent control wells: give --sphering-epsilon > 0 or use fewer features"
                )
            self.regularised_groups_.append(group)
            log.warning(
                "%s: %d control wells%s span %d of %d feature directions: the control covariance is singular, regularised by epsilon %g",
                self.source,
                n,
                _where(group),
                rank,
                d,
                self.epsilon,
            )
        singular = np.concatenate([singular[:rank], np.repeat(singular[rank - 1], d - rank)]) + self.epsilon
        whitening = (rotation / singular[:, None]).T * np.sqrt(n - 1)
        if self.method.startswith("ZCA"):
            whitening = whitening @ rotation
        return centre, scale, whitening

    def transform(self, values: np.ndarray, groups: Sequence | None = None) -> np.ndarray:
        """Sphere `values` with the transform of each row's group.

        Parameters
        ----------
        values : numpy.ndarray
            (rows, features) with the fit's features.
        groups : sequence, optional
            Group of every row (as in `fit`).

        Returns
        -------
        numpy.ndarray
            (rows, features) sphered values.

        Raises
        ------
        PhenolensError
            For another feature count or a group the spherer was not fitted on.
        """
        check_is_fitted(self, "transforms_")
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != self.n_features_in_:
            raise PhenolensError(f"{self.source}: sphering was fitted on {self.n_features_in_} features, got {values.shape[-1]}")
        labels = _labels(groups, len(values))
        unseen = sorted(set(labels) - set(self.transforms_))
        if unseen:
            raise PhenolensError(f"{self.source}: batch {unseen[0]!r} had no control wells when sphering was fitted; fit on a table that includes it")
        result = np.empty_like(values)
        for group, (centre, scale, whitening) in self.transforms_.items():
            rows = labels == group
            result[rows] = ((values[rows] - centre) / scale) @ whitening
        return result


def _labels(groups: Sequence | None, n: int) -> np.ndarray:
    if groups is None:
        return np.full(n, ALL, dtype=object)
    labels = np.asarray(groups).astype(str).astype(object)
    if len(labels) != n:
        raise PhenolensError(f"sphering: {len(labels)} group labels for {n} rows")
    return labels


def _where(group: str) -> str:
    return "" if group == ALL else f" of batch {group!r}"


def fit_spherers(
    representations: dict[str, pd.DataFrame], features: list[str], reference: np.ndarray, groups: np.ndarray | None, settings
) -> dict[str, Spherer]:
    """One `Spherer` per representation, fitted on its reference (training-control) rows; none when sphering is off.

    Parameters
    ----------
    representations : dict of str to pandas.DataFrame
        Representation name -> table with the `features` columns.
    features : list of str
        The feature columns.
    reference : numpy.ndarray
        Mask of the rows to fit on (the training controls).
    groups : numpy.ndarray or None
        Batch of every row for per-batch sphering; None for one global transform.
    settings : ProfilingSettings
        `sphering` (none, global, batch), `sphering_method`, `sphering_epsilon`.

    Returns
    -------
    dict of str to Spherer
        Empty when `settings.sphering` is none.

    Raises
    ------
    PhenolensError
        From `Spherer.fit` (too few control wells without regularisation, constant or dependent features).
    """
    if settings.sphering == "none":
        return {}
    reference = np.asarray(reference, dtype=bool)
    return {
        name: Spherer(settings.sphering_method, settings.sphering_epsilon, source=name).fit(
            frame.loc[reference, features].to_numpy(dtype=np.float64), None if groups is None else groups[reference]
        )
        for name, frame in representations.items()
    }


def sphered(
    representations: dict[str, pd.DataFrame], spherers: dict[str, Spherer], features: list[str], groups: np.ndarray | None
) -> dict[str, pd.DataFrame]:
    """The sphered copy of every representation that has a spherer, named ``<name>_sphered``.

    Parameters
    ----------
    representations : dict of str to pandas.DataFrame
        Representation name -> table.
    spherers : dict of str to Spherer
        From `fit_spherers`.
    features : list of str
        The feature columns (metadata columns are copied unchanged).
    groups : numpy.ndarray or None
        Batch of every row (per-batch sphering) or None.

    Returns
    -------
    dict of str to pandas.DataFrame
        ``<name>_sphered`` -> table.
    """
    result = {}
    for name, spherer in spherers.items():
        frame = representations[name].copy()
        frame[features] = spherer.transform(frame[features].to_numpy(dtype=np.float64), groups)
        result[name + SPHERED_SUFFIX] = frame
    return result
