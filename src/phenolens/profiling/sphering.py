"""Sphering (whitening) of profiles on negative controls: pycytominer's `Spherize`, globally or per batch.

After sphering, the control wells the transform was fitted on have identity covariance (ZCA, PCA)
or identity correlation (ZCA-cor, PCA-cor): the directions in which controls vary by themselves
(technical variation, the same in every treatment) are shrunk, and what is left of a treated well
is what the controls do not do. The "typical variation normalisation" of Ando et al. (2017) is the
same idea. Fitted per batch, each batch is whitened against its own controls, which also removes
covariance differences between batches (at the price of fewer controls per fit: a dozen controls per
batch in 100+ dimensions whiten mostly noise). `TypicalVariationNormalizer` keeps the global whitening
and only aligns each batch's control covariance to the global one, shrunk towards it, so that a dozen
controls per batch suffice.

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
from phenolens.profiling.settings import GROUPED_SPHERING, SPHERING_METHODS

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
        values = _fitted_input(self, "transforms_", values, "sphering")
        labels = _labels(groups, len(values))
        unseen = sorted(set(labels) - set(self.transforms_))
        if unseen:
            raise PhenolensError(f"{self.source}: batch {unseen[0]!r} had no control wells when sphering was fitted; fit on a table that includes it")
        result = np.empty_like(values)
        for group, (centre, scale, whitening) in self.transforms_.items():
            rows = labels == group
            result[rows] = ((values[rows] - centre) / scale) @ whitening
        return result


class TypicalVariationNormalizer(BaseEstimator):
    """Typical variation normalisation: global sphering on all reference controls, then per-batch alignment.

    Ando, McLean & Berndl (2017, "Improving phenotypic measurements in high-content imaging screens",
    bioRxiv 161422) whiten embeddings by the covariance of the negative controls (PCA whitening). The
    public BBBC021 evaluation of Caicedo et al. (2018; broadinstitute/DeepProfilerExperiments,
    ``bbbc021/profiling-evaluation.ipynb``) follows it with CORAL (Sun, Feng & Saenko 2016): each
    batch is multiplied by the inverse square root of its controls' covariance and by the square root
    of the global one, so every batch's controls share one covariance. Here the batch covariance is
    shrunk towards the global one, ``C_b = (1 - shrinkage) * cov(batch controls) + shrinkage * C``,
    which keeps the estimate full-rank and stable with a dozen controls per batch (shrinkage 1
    leaves the global sphering alone), and each batch is first centred on its own controls. With
    `plates` given to `fit` and `transform`, every plate is first centred on the median of its
    reference controls (robust per-plate normalisation against controls, before the global sphering).

    Three optional steps, all fitted on the reference (control) rows only, so they need no labels:
    `yeo_johnson` first applies a per-feature Yeo-Johnson power transform (variance stabilising,
    sklearn's `PowerTransformer` without standardising); `plate_scaling` also divides each plate by the spread of its
    controls (1.4826 x median absolute deviation, pycytominer's ``mad_robustize`` against controls;
    a feature with no spread on a plate is left unscaled there); `nuisance_components` k > 0 projects
    out, after the batch alignment, the k leading principal directions of the aligned controls (the
    directions controls still vary most in: removing unwanted variation, as RUV does with controls).
    `feature_weights` finally multiplies every output feature by a weight fixed before the fit (e.g. `batch_icc_weights`
    of the raw controls: batch-dominated features count less in every similarity, without being dropped; a weight
    applied before the sphering would be undone by it).

    Parameters
    ----------
    method : str
        Sphering method of the global step (`Spherer`).
    epsilon : float
        Its regulariser (`Spherer`).
    shrinkage : float
        In (0, 1]: weight of the global control covariance in each batch's.
    source : str
        What is normalised, for messages.
    plate_scaling : bool
        With plates: divide each plate by its controls' robust spread after centring it.
    yeo_johnson : bool
        Variance-stabilise every feature first (Yeo-Johnson, fitted on the controls).
    nuisance_components : int
        Leading principal directions of the aligned controls projected out (0: none).
    feature_weights : numpy.ndarray, optional
        (features,) finite, non-negative multipliers of the output features (None: all 1).

    Attributes
    ----------
    power_ : sklearn.preprocessing.PowerTransformer or None
        The Yeo-Johnson transform (None without `yeo_johnson`).
    plate_centres_ : dict
        Plate -> median of its reference rows (empty when fitted without plates).
    plate_scales_ : dict
        Plate -> robust spread of its reference rows (empty without `plate_scaling`).
    nuisance_ : numpy.ndarray
        (k, features) directions projected out.
    spherer_ : Spherer
        The global sphering.
    alignments_ : dict
        Batch -> (centre in sphered space, alignment matrix).
    n_features_in_ : int
        Features of the fit.
    regularised_groups_ : list of str
        As `Spherer`'s (the global fit's).
    """

    def __init__(
        self,
        method: str = "ZCA-cor",
        epsilon: float = 1.0,
        shrinkage: float = 0.5,
        source: str = "profiles",
        plate_scaling: bool = False,
        yeo_johnson: bool = False,
        nuisance_components: int = 0,
        feature_weights: np.ndarray | None = None,
    ):
        self.method = method
        self.epsilon = epsilon
        self.shrinkage = shrinkage
        self.source = source
        self.plate_scaling = plate_scaling
        self.yeo_johnson = yeo_johnson
        self.nuisance_components = nuisance_components
        self.feature_weights = feature_weights

    def fit(self, values: np.ndarray, groups: Sequence, plates: Sequence | None = None) -> TypicalVariationNormalizer:
        """Fit the plate centres (with `plates`), the global sphering on all `values` (reference rows) and one
        alignment per group (batch).

        Parameters
        ----------
        values : numpy.ndarray
            (reference rows, features), finite.
        groups : sequence
            Batch of every reference row.
        plates : sequence, optional
            Plate of every reference row: centre each plate on the median of its reference rows first.

        Returns
        -------
        TypicalVariationNormalizer
            ``self``.

        Raises
        ------
        PhenolensError
            For a shrinkage outside (0, 1], a batch with fewer than 2 reference rows, feature weights that are not one
            finite non-negative number per feature, or what `Spherer.fit` raises.
        """
        if not 0 < self.shrinkage <= 1:
            raise PhenolensError(f"{self.source}: tvn shrinkage {self.shrinkage} must be in (0, 1]")
        values = np.asarray(values, dtype=np.float64)
        self.n_features_in_ = values.shape[1]
        self.feature_weights_ = np.ones(values.shape[1]) if self.feature_weights is None else np.asarray(self.feature_weights, dtype=np.float64)
        if self.feature_weights_.shape != (values.shape[1],) or not (np.isfinite(self.feature_weights_) & (self.feature_weights_ >= 0)).all():
            raise PhenolensError(f"{self.source}: tvn feature weights must be {values.shape[1]} finite numbers >= 0, one per feature")
        labels = _labels(groups, len(values))
        self.power_ = None
        if self.yeo_johnson:
            from sklearn.preprocessing import PowerTransformer

            self.power_ = PowerTransformer(method="yeo-johnson", standardize=False).fit(values)
            values = self.power_.transform(values)
        self.plate_centres_, self.plate_scales_ = {}, {}
        if plates is not None:
            plate_labels = _labels(plates, len(values))
            self.plate_centres_ = {plate: np.median(values[plate_labels == plate], axis=0) for plate in pd.unique(plate_labels)}
            if self.plate_scaling:
                self.plate_scales_ = {plate: _robust_spread(values[plate_labels == plate]) for plate in self.plate_centres_}
            values = self._centre_plates(values, plate_labels)
        self.spherer_ = Spherer(self.method, self.epsilon, self.source).fit(values)
        self.regularised_groups_ = self.spherer_.regularised_groups_
        sphered_values = self.spherer_.transform(values)
        target = np.cov(sphered_values, rowvar=False, bias=True)
        target_root = _matrix_power(target, 0.5)
        self.alignments_ = {}
        for group in pd.unique(labels):
            rows = sphered_values[labels == group]
            if len(rows) < 2:
                raise PhenolensError(f"{self.source}: tvn needs at least 2 control wells{_where(group)}, found {len(rows)}")
            covariance = (1 - self.shrinkage) * np.cov(rows, rowvar=False, bias=True) + self.shrinkage * target
            self.alignments_[group] = (rows.mean(axis=0), _matrix_power(covariance, -0.5) @ target_root)
        aligned = self._align(sphered_values, labels)
        if self.nuisance_components > min(aligned.shape):
            raise PhenolensError(
                f"{self.source}: {self.nuisance_components} nuisance components asked for, but {len(aligned)} control wells in "
                f"{aligned.shape[1]} features have at most {min(aligned.shape)}"
            )
        self.nuisance_ = np.linalg.svd(aligned - aligned.mean(axis=0), full_matrices=False)[2][: self.nuisance_components]
        return self

    def transform(self, values: np.ndarray, groups: Sequence, plates: Sequence | None = None) -> np.ndarray:
        """Centre each plate (when fitted with plates), sphere globally, then centre and align each row with its batch's transform.

        Parameters
        ----------
        values : numpy.ndarray
            (rows, features) with the fit's features.
        groups : sequence
            Batch of every row.
        plates : sequence, optional
            Plate of every row; required when the normaliser was fitted with plates.

        Returns
        -------
        numpy.ndarray
            (rows, features).

        Raises
        ------
        PhenolensError
            For another feature count, a batch or plate the normaliser was not fitted on, or missing plates.
        """
        values = _fitted_input(self, "alignments_", values, "tvn")
        if self.power_ is not None:
            values = self.power_.transform(values)
        if self.plate_centres_:
            if plates is None:
                raise PhenolensError(f"{self.source}: tvn was fitted with plate centring; give the plate of every row")
            values = self._centre_plates(values, _labels(plates, len(values)))
        labels = _labels(groups, len(values))
        unseen = sorted(set(labels) - set(self.alignments_))
        if unseen:
            raise PhenolensError(f"{self.source}: batch {unseen[0]!r} had no control wells when tvn was fitted; fit on a table that includes it")
        aligned = self._align(self.spherer_.transform(values), labels)
        return (aligned - (aligned @ self.nuisance_.T) @ self.nuisance_) * self.feature_weights_

    def _align(self, sphered_values: np.ndarray, labels: np.ndarray) -> np.ndarray:
        aligned = sphered_values.copy()
        for group, (centre, alignment) in self.alignments_.items():
            rows = labels == group
            aligned[rows] = (sphered_values[rows] - centre) @ alignment
        return aligned

    def _centre_plates(self, values: np.ndarray, plate_labels: np.ndarray) -> np.ndarray:
        unseen = sorted(set(plate_labels) - set(self.plate_centres_))
        if unseen:
            raise PhenolensError(f"{self.source}: plate {unseen[0]!r} had no control wells when tvn was fitted; fit on a table that includes it")
        centred = values.copy()
        for plate, centre in self.plate_centres_.items():
            rows = plate_labels == plate
            centred[rows] -= centre
            if self.plate_scales_:
                centred[rows] /= self.plate_scales_[plate]
        return centred


def batch_icc(values: np.ndarray, batches: Sequence) -> np.ndarray:
    """Every feature's intraclass correlation between batches: one-way ANOVA ICC(1) with unequal group sizes.

    ``(MSB - MSW) / (MSB + (n0 - 1) MSW)`` with ``n0 = (N - sum(n_b^2) / N) / (k - 1)`` (Shrout & Fleiss 1979;
    the share of the variance that lies between batch means). Features with no variance get 0; with one batch
    every feature gets 0.

    Parameters
    ----------
    values : numpy.ndarray
        (rows, features), e.g. control wells.
    batches : sequence
        Batch of every row.

    Returns
    -------
    numpy.ndarray
        (features,) ICC, at most 1 (negative when batch means vary less than chance).
    """
    labels = _labels(batches, len(values))
    names, codes = np.unique(labels, return_inverse=True)
    k, n = len(names), len(values)
    if k < 2 or n <= k:
        return np.zeros(values.shape[1])
    sizes = np.bincount(codes).astype(float)
    means = np.stack([values[codes == b].mean(axis=0) for b in range(k)])
    between = (sizes[:, None] * (means - values.mean(axis=0)) ** 2).sum(axis=0) / (k - 1)
    within = ((values - means[codes]) ** 2).sum(axis=0) / (n - k)
    n0 = (n - (sizes**2).sum() / n) / (k - 1)
    denominator = between + (n0 - 1) * within
    return np.divide(between - within, denominator, out=np.zeros(values.shape[1]), where=denominator > 0)


def batch_icc_weights(icc: np.ndarray, power: float) -> np.ndarray:
    """Soft down-weighting of batch-dominated features: ``(1 - ICC) ** power``, the ICC clipped to [0, 1].

    Parameters
    ----------
    icc : numpy.ndarray
        (features,) intraclass correlation between batches (`batch_icc`).
    power : float
        0 weighs every feature 1; larger powers weigh batch-dominated features down harder.

    Returns
    -------
    numpy.ndarray
        (features,) weights in [0, 1].
    """
    return (1.0 - np.clip(np.asarray(icc, dtype=np.float64), 0.0, 1.0)) ** power


def _robust_spread(rows: np.ndarray) -> np.ndarray:
    """1.4826 x the median absolute deviation of every column (the standard deviation for normal data); 1 where it is 0."""
    spread = 1.4826 * np.median(np.abs(rows - np.median(rows, axis=0)), axis=0)
    spread[~(spread > 0)] = 1.0
    return spread


def _matrix_power(matrix: np.ndarray, power: float) -> np.ndarray:
    """A symmetric positive semi-definite matrix to a power (eigenvalues below 1e-12 of the largest are floored there)."""
    eigenvalues, vectors = np.linalg.eigh(matrix)
    eigenvalues = np.maximum(eigenvalues, eigenvalues.max(initial=0) * 1e-12)
    return (vectors * eigenvalues**power) @ vectors.T


def _labels(groups: Sequence | None, n: int) -> np.ndarray:
    if groups is None:
        return np.full(n, ALL, dtype=object)
    labels = np.asarray(groups).astype(str).astype(object)
    if len(labels) != n:
        raise PhenolensError(f"sphering: {len(labels)} group labels for {n} rows")
    return labels


def _where(group: str) -> str:
    return "" if group == ALL else f" of batch {group!r}"


def sphering_layout(
    settings, is_control: np.ndarray, is_training: np.ndarray, batches: np.ndarray | None, plates: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """What the sphering of `settings` is fitted on and grouped by: reference rows, batches, plates to centre.

    Parameters
    ----------
    settings : ProfilingSettings
        `sphering`, `sphering_controls`, `sphering_plate_centring`.
    is_control, is_training : numpy.ndarray
        Masks of the control wells and of the training-split control wells.
    batches : numpy.ndarray or None
        Batch of every row (None without a batch column).
    plates : numpy.ndarray
        Plate of every row.

    Returns
    -------
    tuple
        (reference mask, then `sphering_groups`' batch of every row or None and plate of every row or None).
    """
    reference = np.asarray(is_training if settings.sphering_controls == "training" else is_control, dtype=bool)
    return (reference, *sphering_groups(settings, batches, plates))


def sphering_groups(settings, batches: np.ndarray | None, plates: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """How the sphering of `settings` groups rows when it transforms them: by batch, and by plate to centre.

    Parameters
    ----------
    settings : ProfilingSettings
        `sphering`, `sphering_plate_centring`.
    batches : numpy.ndarray or None
        Batch of every row (None without a batch column).
    plates : numpy.ndarray
        Plate of every row.

    Returns
    -------
    tuple
        (batch of every row or None for a global fit, plate of every row or None without plate centring).
    """
    groups = None if settings.sphering not in GROUPED_SPHERING else np.asarray(batches).astype(str)
    centring = np.asarray(plates).astype(str) if settings.sphering == "tvn" and settings.sphering_plate_centring else None
    return groups, centring


def fit_spherers(
    representations: dict[str, pd.DataFrame],
    features: list[str],
    reference: np.ndarray,
    groups: np.ndarray | None,
    settings,
    plates: np.ndarray | None = None,
    feature_weights: np.ndarray | None = None,
) -> dict[str, Spherer | TypicalVariationNormalizer]:
    """One `Spherer` (or, for ``tvn``, `TypicalVariationNormalizer`) per representation, fitted on its reference
    (control) rows; none when sphering is off.

    Parameters
    ----------
    representations : dict of str to pandas.DataFrame
        Representation name -> table with the `features` columns.
    features : list of str
        The feature columns.
    reference : numpy.ndarray
        Mask of the rows to fit on (the training controls).
    groups : numpy.ndarray or None
        Batch of every row for per-batch sphering and tvn; None for one global transform.
    settings : ProfilingSettings
        `sphering` (none, global, batch, tvn), `sphering_method`, `sphering_epsilon`, `sphering_shrinkage` and tvn's
        optional steps (`sphering_plate_scaling`, `sphering_yeo_johnson`, `sphering_nuisance_components`).
    plates : numpy.ndarray, optional
        Plate of every row: tvn first centres each plate on the median of its reference controls.
    feature_weights : numpy.ndarray, optional
        tvn only: (features,) multipliers of its output features (`TypicalVariationNormalizer`).

    Returns
    -------
    dict of str to Spherer or TypicalVariationNormalizer
        Empty when `settings.sphering` is none.

    Raises
    ------
    PhenolensError
        From `Spherer.fit` (too few control wells without regularisation, constant or dependent features).
    """
    if settings.sphering == "none":
        return {}
    reference = np.asarray(reference, dtype=bool)
    if settings.sphering == "tvn":
        return {
            name: TypicalVariationNormalizer(
                settings.sphering_method,
                settings.sphering_epsilon,
                settings.sphering_shrinkage,
                source=name,
                plate_scaling=settings.sphering_plate_scaling,
                yeo_johnson=settings.sphering_yeo_johnson,
                nuisance_components=settings.sphering_nuisance_components,
                feature_weights=feature_weights,
            ).fit(frame.loc[reference, features].to_numpy(dtype=np.float64), groups[reference], None if plates is None else plates[reference])
            for name, frame in representations.items()
        }
    return {
        name: Spherer(settings.sphering_method, settings.sphering_epsilon, source=name).fit(
            frame.loc[reference, features].to_numpy(dtype=np.float64), None if groups is None else groups[reference]
        )
        for name, frame in representations.items()
    }


def sphered(
    representations: dict[str, pd.DataFrame],
    spherers: dict[str, Spherer | TypicalVariationNormalizer],
    features: list[str],
    groups: np.ndarray | None,
    plates: np.ndarray | None = None,
) -> dict[str, pd.DataFrame]:
    """The sphered copy of every representation that has a spherer, named ``<name>_sphered``.

    Parameters
    ----------
    representations : dict of str to pandas.DataFrame
        Representation name -> table.
    spherers : dict of str to Spherer or TypicalVariationNormalizer
        From `fit_spherers`.
    features : list of str
        The feature columns (metadata columns are copied unchanged).
    groups : numpy.ndarray or None
        Batch of every row (per-batch sphering, tvn) or None.
    plates : numpy.ndarray, optional
        Plate of every row (a tvn fitted with plates needs them).

    Returns
    -------
    dict of str to pandas.DataFrame
        ``<name>_sphered`` -> table.
    """
    result = {}
    for name, spherer in spherers.items():
        frame = representations[name].copy()
        frame[features] = sphere(spherer, frame[features].to_numpy(dtype=np.float64), groups, plates)
        result[name + SPHERED_SUFFIX] = frame
    return result


def sphere(
    spherer: Spherer | TypicalVariationNormalizer, values: np.ndarray, groups: np.ndarray | None, plates: np.ndarray | None = None
) -> np.ndarray:
    """`values` sphered by `spherer` (a typical variation normaliser also centres each plate when fitted with plates).

    Parameters
    ----------
    spherer : Spherer or TypicalVariationNormalizer
        One of `fit_spherers`' results.
    values : numpy.ndarray
        (rows, features) in the fit's feature order.
    groups : numpy.ndarray or None
        Batch of every row (per-batch sphering, tvn) or None.
    plates : numpy.ndarray, optional
        Plate of every row (a tvn fitted with plates needs them).

    Returns
    -------
    numpy.ndarray
        The sphered values.
    """
    if isinstance(spherer, TypicalVariationNormalizer):
        return spherer.transform(values, groups, plates)
    return spherer.transform(values, groups)


def _fitted_input(estimator, attribute: str, values: np.ndarray, method: str) -> np.ndarray:
    """`values` as float64 rows after checking `estimator` is fitted (`attribute`) on as many features as they have."""
    check_is_fitted(estimator, attribute)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != estimator.n_features_in_:
        raise PhenolensError(f"{estimator.source}: {method} was fitted on {estimator.n_features_in_} features, got {values.shape[-1]}")
    return values
