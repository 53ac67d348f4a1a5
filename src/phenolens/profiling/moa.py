"""Mechanism-of-action evaluation of treatment-level profiles.

(a) 1-nearest-neighbour by Pearson correlation with not-same-compound (NSC) and
not-same-compound-or-batch (NSCB) exclusion (Ljosa et al. 2013, J Biomol Screen 18:1321).
(b) Logistic regression and MLP classifiers, nested stratified 5-fold cross-validation with
random oversampling of minority classes inside the training folds, weighted F1, repeated with
different seeds; Welch's t-test compares representations.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from scipy.stats import rankdata, ttest_ind
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from phenolens.core.errors import PhenolensError
from phenolens.core.seeding import numpy_rng
from phenolens.profiling.replicates import row_standardize
from phenolens.profiling.settings import CLASSIFIERS, CONSENSUS, INNER_FOLDS


def treatment_profiles(values: np.ndarray, treatments: np.ndarray, consensus: str = "mean") -> pd.DataFrame:
    """Consensus profile over the replicate wells of every treatment (index: treatment, sorted).

    Parameters
    ----------
    values : numpy.ndarray
        (wells, features).
    treatments : numpy.ndarray
        Treatment of every well.
    consensus : str
        ``mean`` (default), ``median``, or ``modz``: the LINCS moderated z-score, a weighted mean whose
        weights are each replicate's mean Spearman correlation with the others (negative ones as 0, at
        least 0.01), normalised to sum 1 and rounded to 4 decimals, as pycytominer's ``consensus(operation="modz")``
        (Subramanian et al. 2017).

    Returns
    -------
    pandas.DataFrame
        One row per treatment.

    Raises
    ------
    PhenolensError
        For an unknown consensus.
    """
    if consensus not in CONSENSUS:
        raise PhenolensError(f"consensus {consensus!r} is unknown; choose one of {', '.join(CONSENSUS)}")
    values, treatments = np.asarray(values, dtype=np.float64), np.asarray(treatments)
    if consensus != "modz":
        return pd.DataFrame(values).groupby(treatments).agg(consensus)
    names, codes = np.unique(treatments, return_inverse=True)  # sorted, as groupby sorts
    sizes = np.bincount(codes, minlength=len(names))
    order = np.argsort(codes, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    profiles = np.empty((len(names), values.shape[1]))
    for size in np.unique(sizes):  # treatments with the same number of replicates at once
        same = np.flatnonzero(sizes == size)
        profiles[same] = _modz(values[order[starts[same, None] + np.arange(size)]])
    return pd.DataFrame(profiles, index=names)


def _modz(replicates: np.ndarray, min_weight: float = 0.01) -> np.ndarray:
    """The moderated z-scores of (treatments, replicates, features) wells: (treatments, features)."""
    if replicates.shape[1] == 1:
        return replicates[:, 0]
    ranks = rankdata(replicates, axis=2)
    unit = row_standardize(ranks.reshape(-1, ranks.shape[2])).reshape(ranks.shape)  # a constant replicate: NaN, left out
    correlation = np.clip(np.einsum("tif,tjf->tij", unit, unit), 0, 1)
    correlation[:, np.arange(replicates.shape[1]), np.arange(replicates.shape[1])] = np.nan  # a replicate's own correlation
    with warnings.catch_warnings():  # a constant replicate correlates with nothing: it gets the least weight, not a NaN profile
        warnings.simplefilter("ignore", RuntimeWarning)
        weights = np.clip(np.nan_to_num(np.nanmean(correlation, axis=2), nan=min_weight), min_weight, None)
    weights = np.round(weights / weights.sum(axis=1, keepdims=True), 4)  # rounded as pycytominer does
    return np.einsum("tk,tkf->tf", weights, replicates)


@dataclass
class NeighborResult:
    """1-NN MoA prediction of `nearest_neighbor_moa`.

    Attributes
    ----------
    accuracy : float
        Fraction of evaluated treatments whose nearest eligible neighbour shares their MoA.
    evaluated : int
        Treatments with an eligible neighbour.
    predictions : pandas.DataFrame
        Per treatment: moa, predicted, neighbor, correct, evaluated.
    unevaluable_moas : list of str
        MoAs none of whose treatments had an eligible neighbour.
    """

    accuracy: float
    evaluated: int
    predictions: pd.DataFrame  # index treatment; moa, predicted, neighbor, correct, evaluated
    unevaluable_moas: list[str] = field(default_factory=list)


SIMILARITIES = ("pearson", "cosine")  # how treatment profiles are compared for 1-NN MoA matching


def unit_rows(values: np.ndarray, similarity: str = "pearson") -> np.ndarray:
    """Rows scaled so that their dot products are the chosen similarity.

    Parameters
    ----------
    values : numpy.ndarray
        (rows, features).
    similarity : str
        ``pearson`` (rows centred, then unit norm: dot products are correlations) or ``cosine``
        (unit norm only, as Ljosa et al. 2013 and Caicedo et al. 2018 compare treatment profiles).

    Returns
    -------
    numpy.ndarray
        (rows, features) float64; NaN for a constant (pearson) or all-zero (cosine) row.

    Raises
    ------
    PhenolensError
        For an unknown similarity.
    """
    if similarity not in SIMILARITIES:
        raise PhenolensError(f"similarity {similarity!r} is unknown; choose one of {', '.join(SIMILARITIES)}")
    values = np.asarray(values, dtype=np.float64)
    if similarity == "pearson":
        return row_standardize(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return values / np.linalg.norm(values, axis=1, keepdims=True)


@dataclass
class NeighborSetup:
    """Who may be whose neighbour in NSC/NSCB matching (`neighbor_setup`).

    Attributes
    ----------
    kept : numpy.ndarray
        Mask of the treatments that take part (queries and references).
    excluded : numpy.ndarray
        (kept, kept) pairs that may never be neighbours (same compound; with a batch, a shared batch).
    same_moa : numpy.ndarray
        (kept, kept) pairs of one MoA.
    evaluable : numpy.ndarray
        Per kept treatment: it has an eligible neighbour of its MoA (only these are scored).
    unevaluable_moas : list of str
        MoAs none of whose treatments has an eligible neighbour of their MoA.
    """

    kept: np.ndarray
    excluded: np.ndarray
    same_moa: np.ndarray
    evaluable: np.ndarray
    unevaluable_moas: list[str]


def neighbor_setup(moa: np.ndarray, compound: np.ndarray, batch: pd.Series | None = None, drop_unevaluable_moas: bool = False) -> NeighborSetup:
    """The eligibility rules of NSC (not same compound) and NSCB (not same compound, not same batch).

    A query is scored only if some treatment of its MoA, of another compound (and, for NSCB, of no batch
    the query is in) is left to match it. With `drop_unevaluable_moas`, MoAs none of whose treatments
    can be scored are removed altogether, as queries AND as candidate neighbours: the field's NSCB.
    Caicedo et al. (2018, CVPR, "Weakly supervised learning of single-cell feature embeddings"; public
    code broadinstitute/DeepProfilerExperiments, ``bbbc021/profiling-evaluation.ipynb``, function
    ``nscb``) drop "Cholesterol-lowering" and "Kinase inhibitors" from BBBC021 for NSCB because their
    compounds sit in one batch, leaving 92 of the 103 treatments, following Ando et al. (2017). Without
    it (phenolens up to session 12) those treatments are not scored but stay as (always wrong)
    candidate neighbours of the other queries.

    Parameters
    ----------
    moa, compound : numpy.ndarray
        Per treatment.
    batch : pandas.Series, optional
        Per treatment ('|'-separated batches), positionally aligned with `moa`; enables NSCB.
    drop_unevaluable_moas : bool
        Remove MoAs that cannot be scored from the reference set as well (the field's NSCB).

    Returns
    -------
    NeighborSetup
        The kept treatments and, among them, the excluded pairs, same-MoA pairs and the scored queries.
    """
    moa, compound = np.asarray(moa), np.asarray(compound).astype(str)
    excluded = compound[:, None] == compound[None, :]
    if batch is not None:
        members = pd.Series(np.asarray(batch)).astype(str).str.get_dummies(sep="|").to_numpy()
        excluded |= (members @ members.T) > 0
    same_moa = moa[:, None] == moa[None, :]
    evaluable = (same_moa & ~excluded).any(axis=1)
    unevaluable = sorted(set(map(str, moa)) - set(map(str, moa[evaluable])))
    kept = np.ones(len(moa), bool)
    if drop_unevaluable_moas:
        kept = ~np.isin(moa.astype(str), unevaluable)
    rows = np.ix_(kept, kept)
    return NeighborSetup(kept, excluded[rows], same_moa[rows], evaluable[kept], unevaluable)


def nearest_neighbor_moa(
    profiles: pd.DataFrame,
    moa: pd.Series,
    compound: pd.Series,
    batch: pd.Series | None = None,
    similarity: str = "pearson",
    drop_unevaluable_moas: bool = False,
) -> NeighborResult:
    """1-NN MoA prediction, never matching a treatment of the same compound (NSC) and,
    when `batch` is given, of any batch the query shares (NSCB).

    `moa`, `compound`, `batch` are indexed by treatment (a batch cell may hold several batches
    separated by '|'). Queries whose MoA has no eligible treatment left cannot be right and are not
    evaluated; they are listed in `unevaluable_moas`. The field's NSCB (Caicedo et al. 2018; see
    `neighbor_setup`) also removes those MoAs from the candidate neighbours and compares profiles by
    cosine: ``similarity="cosine", drop_unevaluable_moas=True``.

    Parameters
    ----------
    profiles : pandas.DataFrame
        Treatment profiles (index: treatment).
    moa, compound : pandas.Series
        Per treatment.
    batch : pandas.Series, optional
        Per treatment ('|'-separated batches); enables NSCB.
    similarity : str
        ``pearson`` (default) or ``cosine``.
    drop_unevaluable_moas : bool
        Drop MoAs that cannot be scored from the candidate neighbours too (the field's NSCB).

    Returns
    -------
    NeighborResult
        Accuracy, evaluated count, predictions (of the kept treatments), unevaluable MoAs.

    Raises
    ------
    PhenolensError
        When no treatment can be evaluated, or for an unknown similarity.
    """
    setup = neighbor_setup(
        moa.loc[profiles.index].to_numpy(),
        compound.loc[profiles.index].to_numpy(),
        None if batch is None else batch.loc[profiles.index],
        drop_unevaluable_moas,
    )
    profiles = profiles[setup.kept]
    moa = moa.loc[profiles.index].to_numpy()
    unit = unit_rows(profiles.to_numpy(), similarity)
    similarity_matrix = unit @ unit.T
    similarity_matrix[setup.excluded | np.isnan(similarity_matrix)] = -np.inf  # a constant profile (NaN) is nobody's neighbour
    neighbor = np.argmax(similarity_matrix, axis=1)
    has_candidate = np.isfinite(similarity_matrix).any(axis=1)
    predictions = pd.DataFrame(
        {
            "moa": moa,
            "predicted": np.where(has_candidate, moa[neighbor], None),
            "neighbor": np.where(has_candidate, profiles.index[neighbor], None),
            "evaluated": setup.evaluable,
        },
        index=profiles.index,
    )
    predictions["correct"] = predictions["moa"] == predictions["predicted"]
    evaluated = predictions[predictions["evaluated"]]
    if evaluated.empty:
        raise PhenolensError("no treatment has a neighbour of the same MoA from another compound; MoA evaluation needs 2+ compounds per MoA")
    return NeighborResult(float(evaluated["correct"].mean()), len(evaluated), predictions, setup.unevaluable_moas)


class OversampledClassifier(ClassifierMixin, BaseEstimator):
    """Fit `estimator` after randomly oversampling every class up to the largest class's count."""

    def __init__(self, estimator=None, seed: int = 0):
        self.estimator, self.seed = estimator, seed

    def fit(self, X, y):
        y = np.asarray(y)
        self.classes_, codes, counts = np.unique(y, return_inverse=True, return_counts=True)
        deficit = counts.max() - counts
        order = np.argsort(codes, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        extra_class = np.repeat(np.arange(len(counts)), deficit)
        offsets = np.floor(numpy_rng(self.seed).random(len(extra_class)) * counts[extra_class]).astype(int)
        rows = np.concatenate([np.arange(len(y)), order[starts[extra_class] + offsets]])
        self.estimator_ = clone(self.estimator).fit(np.asarray(X)[rows], y[rows])
        return self

    def predict(self, X):
        return self.estimator_.predict(X)


def _search(kind: str, seed: int, inner_folds: int, grouped: bool) -> GridSearchCV:
    """The inner loop: a small grid scored by weighted F1. Features are scaled on the training fold
    (this also makes lbfgs converge in ~4x fewer iterations on z-scored profiles)."""
    if kind == "lr":
        base, grid = LogisticRegression(max_iter=1000, tol=1e-3), {"estimator__logisticregression__C": [0.01, 0.1, 1.0]}
    else:  # "mlp" (classify_moa validated the name)
        base = MLPClassifier(hidden_layer_sizes=(64,), solver="lbfgs", max_iter=200, random_state=seed)
        grid = {"estimator__mlpclassifier__alpha": [1e-3, 1e-2]}
    splitter = (StratifiedGroupKFold if grouped else StratifiedKFold)(n_splits=inner_folds, shuffle=True, random_state=seed)
    return GridSearchCV(OversampledClassifier(make_pipeline(StandardScaler(), base), seed), grid, cv=splitter, scoring="f1_weighted")


@dataclass
class ClassifierResult:
    """Nested-CV MoA classification of `classify_moa`.

    Attributes
    ----------
    f1 : dict
        Representation -> classifier -> weighted F1 per repeat.
    per_class_f1 : pandas.DataFrame
        Rows (representation, classifier), columns MoA: mean F1 over repeats.
    welch : pandas.DataFrame
        Welch's t-tests between representations.
    classes : list of str
        The MoAs classified.
    excluded_moas : dict
        MoA -> eligible treatments, for MoAs below the minimum.
    n_treatments : int
        Treatments classified.
    """

    f1: dict[str, dict[str, np.ndarray]]  # representation -> classifier -> weighted F1 per repeat
    per_class_f1: pd.DataFrame  # rows (representation, classifier), columns MoA, mean over repeats
    welch: pd.DataFrame  # classifier, representation_a, representation_b, mean_a, mean_b, t, p_value
    classes: list[str]
    excluded_moas: dict[str, int]  # MoA -> number of eligible treatments (< min_per_class)
    n_treatments: int


def classify_moa(
    profiles: dict[str, pd.DataFrame],
    moa: pd.Series,
    groups: pd.Series | None = None,
    classifiers: tuple[str, ...] = CLASSIFIERS,
    repeats: int = 10,
    folds: int = 5,
    inner_folds: int = INNER_FOLDS,
    min_per_class: int = 5,
    seed: int = 0,
    jobs: int = 1,
) -> ClassifierResult:
    """Nested-CV MoA classification of the treatments in `profiles` (one frame per representation,
    same index). MoAs with fewer than `min_per_class` treatments are excluded. With `groups`
    (compound per treatment), folds keep all concentrations of a compound together, so a
    classifier is never tested on a compound it was trained on. Repeats run in `jobs` processes
    (each single-threaded); results do not depend on `jobs`.

    Parameters
    ----------
    profiles : dict of str to pandas.DataFrame
        Treatment profiles per representation (same index).
    moa : pandas.Series
        MoA per treatment.
    groups : pandas.Series, optional
        Compound per treatment (grouped folds).
    classifiers : tuple of str
        'lr' and/or 'mlp'.
    repeats, folds, inner_folds : int
        Repeats and folds of the nested cross-validation.
    min_per_class : int
        MoAs with fewer treatments are excluded.
    seed : int
        Seed of the first repeat.
    jobs : int
        Processes.

    Returns
    -------
    ClassifierResult
        F1 per repeat, per class, Welch tests.

    Raises
    ------
    PhenolensError
        For an unknown classifier, fewer than two MoAs with enough treatments, or (with `groups`) too few
        compounds for the folds.
    """
    unknown = sorted(set(classifiers) - set(CLASSIFIERS))
    if unknown:
        raise PhenolensError(f"unknown classifier {unknown[0]!r}; choose from {', '.join(CLASSIFIERS)}")
    index = next(iter(profiles.values())).index
    labels = moa.loc[index]
    counts = labels.value_counts()
    excluded = {str(k): int(v) for k, v in counts[counts < min_per_class].items()}
    keep = labels.isin(counts.index[counts >= min_per_class]).to_numpy()
    y = labels.to_numpy()[keep]
    classes = sorted(set(y))
    if len(classes) < 2:
        raise PhenolensError(f"MoA classification needs two or more MoAs with {min_per_class}+ reproducible treatments; found {len(classes)}")
    group_values = groups.loc[index].to_numpy()[keep] if groups is not None else None
    if group_values is not None:
        _require_compounds_for_folds(y, group_values, folds, inner_folds, [seed + repeat for repeat in range(repeats)])
    tasks = [(name, kind, repeat) for name in profiles for kind in classifiers for repeat in range(repeats)]
    matrices = {name: frame.to_numpy(dtype=np.float64)[keep] for name, frame in profiles.items()}
    predictions = Parallel(n_jobs=jobs)(
        delayed(_cross_validated_predictions)(matrices[name], y, group_values, kind, seed + repeat, folds, inner_folds)
        for name, kind, repeat in tasks
    )
    f1: dict[str, dict[str, np.ndarray]] = {name: {} for name in profiles}
    per_class = {}
    for name in profiles:
        for kind in classifiers:
            runs = [predicted for (n, k, _), predicted in zip(tasks, predictions) if (n, k) == (name, kind)]
            f1[name][kind] = np.array([f1_score(y, predicted, average="weighted") for predicted in runs])
            per_class[(name, kind)] = np.mean([f1_score(y, predicted, average=None, labels=classes) for predicted in runs], axis=0)
    per_class_f1 = pd.DataFrame(
        list(per_class.values()), index=pd.MultiIndex.from_tuples(list(per_class), names=["representation", "classifier"]), columns=classes
    )
    return ClassifierResult(f1, per_class_f1, welch_tests(f1), classes, excluded, int(keep.sum()))


def _require_compounds_for_folds(y: np.ndarray, groups: np.ndarray, folds: int, inner_folds: int, seeds: list[int]) -> None:
    """Refuse (one line) what sklearn's StratifiedGroupKFold would refuse mid-run: fewer compounds than outer folds, or
    an outer training part of some repeat with fewer compounds than inner folds (the splits are cheap to draw)."""
    compounds = len(pd.unique(groups))
    problem = compounds < folds
    for seed in [] if problem else seeds:
        splits = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups)
        if any(len(pd.unique(groups[train])) < inner_folds for train, _ in splits):
            problem = True
            break
    if problem:
        raise PhenolensError(
            f"MoA classification keeps each compound in one fold, and the {len(y)} treatments of the classified MoAs come from "
            f"{compounds} compounds: too few for {folds} outer folds with {inner_folds} inner folds in each training part"
        )


def _cross_validated_predictions(X, y, groups, kind: str, seed: int, folds: int, inner_folds: int) -> np.ndarray:
    """Out-of-fold predictions of one repeat of nested cross-validation (single-threaded BLAS:
    these matrices are tiny and threads only contend)."""
    grouped = groups is not None
    outer = (StratifiedGroupKFold if grouped else StratifiedKFold)(n_splits=folds, shuffle=True, random_state=seed)
    predicted = np.empty(len(y), dtype=object)
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny classes: sklearn warns about folds and convergence on every fit
        for train, test in outer.split(X, y, groups):
            search = _search(kind, seed, inner_folds, grouped)
            search.fit(X[train], y[train], **({"groups": groups[train]} if grouped else {}))
            predicted[test] = search.predict(X[test])
    return predicted


def welch_tests(f1: dict[str, dict[str, np.ndarray]]) -> pd.DataFrame:
    """Welch's unequal-variance t-test between every pair of representations, per classifier.

    Parameters
    ----------
    f1 : dict
        Representation -> classifier -> F1 per repeat.

    Returns
    -------
    pandas.DataFrame
        One row per classifier and pair of representations: means, t, p_value.
    """
    rows = []
    for a, b in itertools.combinations(f1, 2):
        for kind in f1[a]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # identical scores: scipy warns and returns NaN
                test = ttest_ind(f1[a][kind], f1[b][kind], equal_var=False)
            rows.append(
                {
                    "classifier": kind,
                    "representation_a": a,
                    "representation_b": b,
                    "mean_a": f1[a][kind].mean(),
                    "mean_b": f1[b][kind].mean(),
                    "t": float(test.statistic),
                    "p_value": float(test.pvalue),
                }
            )
    return pd.DataFrame(rows)
