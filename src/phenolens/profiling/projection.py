"""Reference-supervised projections of well profiles, judged leave-one-compound-out.

A lab with annotated reference compounds can learn which directions of its profiles separate
mechanisms of action and which only vary within one (plates, batches, compounds of one MoA), and
match a new compound in that space. `DiscriminantProjection` is that metric: scikit-learn's linear
discriminant analysis with Ledoit-Wolf shrinkage (no free hyperparameter), fitted on well profiles
with a class per well (the MoA of reference compounds; or, weakly supervised, the treatment).

Judging it by NSC/NSCB is only honest when the compound being matched is not among the references:
`leave_one_compound_out_neighbors` refits the projection for every held-out compound on the OTHER
compounds' wells and their MoA, then matches the held-out compound's treatments with the field's
1-NN rules (`phenolens.profiling.moa.nearest_neighbor_moa`), as leave-one-compound-out MoA
evaluations do (Kensert et al. 2019 on BBBC021).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from phenolens.core.errors import PhenolensError
from phenolens.core.estimators import check_is_fitted
from phenolens.profiling.moa import NeighborResult, nearest_neighbor_moa, neighbor_setup, treatment_profiles


class DiscriminantProjection(TransformerMixin, BaseEstimator):
    """Profiles projected onto the directions that separate annotated classes (shrinkage LDA).

    A thin scikit-learn transformer around ``LinearDiscriminantAnalysis(solver="eigen", shrinkage=...)``:
    `transform` is the fitted LDA's, ``X @ scalings_`` on at most ``classes - 1`` components. It does not
    re-centre, so the origin of the input (the controls' centre after control-based normalisation) stays
    the origin, which is what cosine similarity of treatment profiles compares against.

    Parameters
    ----------
    shrinkage : str or float
        LDA's covariance shrinkage: ``"auto"`` (Ledoit-Wolf, default) or a number in [0, 1].

    Attributes
    ----------
    lda_ : sklearn.discriminant_analysis.LinearDiscriminantAnalysis
        The fitted LDA.
    classes_ : numpy.ndarray
        The classes it was fitted on.
    n_components_ : int
        Dimensions of the projection.
    """

    def __init__(self, shrinkage: str | float = "auto"):
        self.shrinkage = shrinkage

    def fit(self, X, y) -> DiscriminantProjection:
        """Fit the LDA on well profiles `X` with a class per well `y`.

        Parameters
        ----------
        X : array-like
            (wells, features), finite.
        y : array-like
            Class of every well (two or more classes).

        Returns
        -------
        DiscriminantProjection
            self.

        Raises
        ------
        PhenolensError
            For a shape mismatch, non-finite values or fewer than two classes.
        """
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
        if X.ndim != 2 or len(X) != len(y):
            raise PhenolensError(f"discriminant projection: {X.shape} profiles and {len(y)} class labels do not match; give one label per well")
        if not np.isfinite(X).all():
            raise PhenolensError("discriminant projection: the profiles hold missing or infinite values; drop or impute those wells first")
        classes = np.unique(y)
        if len(classes) < 2:
            raise PhenolensError(f"discriminant projection: needs wells of two or more classes; found {len(classes)}")
        self.lda_ = LinearDiscriminantAnalysis(solver="eigen", shrinkage=self.shrinkage).fit(X, y)
        self.classes_ = self.lda_.classes_
        self.n_components_ = int(self.lda_.transform(X[:1]).shape[1])
        return self

    def transform(self, X) -> np.ndarray:
        """Project profiles.

        Parameters
        ----------
        X : array-like
            (wells, features) with the features it was fitted on.

        Returns
        -------
        numpy.ndarray
            (wells, `n_components_`).

        Raises
        ------
        NotFittedError
            Before `fit`.
        """
        check_is_fitted(self, "lda_")
        return self.lda_.transform(np.asarray(X, dtype=np.float64))


def leave_one_compound_out_neighbors(
    values: np.ndarray,
    treatments: np.ndarray,
    meta: pd.DataFrame,
    projection: BaseEstimator | None = None,
    consensus: str = "mean",
    similarity: str = "cosine",
    drop_unevaluable_moas: bool = True,
    option: str = "--moa-projection",
) -> dict[str, NeighborResult]:
    """NSC (and, with a batch, NSCB) with a projection refitted for every held-out compound on the other compounds' MoA.

    For each compound with a treatment that NSC can score, a clone of `projection` is fitted on the wells of
    every OTHER compound with their MoA as the class (the held-out compound's wells are never in a fit), every
    well is transformed, treatment profiles are built (`treatment_profiles`) and matched by
    `nearest_neighbor_moa`; only the held-out compound's treatments are kept from that fold. The candidate
    neighbours are every other compound's treatments, as in plain NSC/NSCB: they are the annotated reference
    set. Each scored treatment is judged once, in its own compound's fold.

    Parameters
    ----------
    values : numpy.ndarray
        (wells, features) of the treated wells with a MoA (no controls), finite.
    treatments : numpy.ndarray
        Treatment of every well; each is a row of `meta`.
    meta : pandas.DataFrame
        Per treatment (index): ``moa``, ``compound`` and optionally ``batch`` ('|'-separated), as
        `phenolens.profiling.evaluate.treatment_level` returns it.
    projection : sklearn estimator, optional
        fit(X, y) / transform(X); default `DiscriminantProjection()`. Never modified (cloned per fold).
    consensus : str
        How replicate wells make a treatment profile (`treatment_profiles`).
    similarity : str
        ``cosine`` (the field's, default) or ``pearson``.
    drop_unevaluable_moas : bool
        The field's NSCB (default; `phenolens.profiling.moa.neighbor_setup`).
    option : str
        The option named in error messages.

    Returns
    -------
    dict of str to NeighborResult
        ``nsc`` and (with a ``batch`` column in `meta` and a treatment NSCB can score) ``nscb``; their predictions
        hold the treatments of the compounds that were held out.

    Raises
    ------
    PhenolensError
        For wells and treatments that do not match, non-finite values, fewer than two MoAs, or no treatment that
        NSC can score.
    """
    values, treatments = np.asarray(values, dtype=np.float64), np.asarray(treatments).astype(str)
    projection = DiscriminantProjection() if projection is None else projection
    if values.ndim != 2 or len(values) != len(treatments):
        raise PhenolensError(f"{option}: {values.shape} well profiles and {len(treatments)} treatments do not match")
    unknown = sorted(set(treatments) - set(meta.index.astype(str)))
    if unknown:
        raise PhenolensError(f"{option}: treatment {unknown[0]!r} has wells but no MoA/compound row; every treated well needs a MoA")
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values).all(axis=1)).sum())
        raise PhenolensError(f"{option}: {bad} treated well(s) hold missing or infinite values; drop them first")
    well_moa = meta["moa"].astype(str).loc[treatments].to_numpy()
    well_compound = meta["compound"].astype(str).loc[treatments].to_numpy()
    if len(set(well_moa)) < 2:
        raise PhenolensError(f"{option}: needs treated wells of two or more MoAs to learn from; found only {well_moa[0]!r}")
    kinds = {"nsc": None}
    if "batch" in meta and neighbor_setup(meta["moa"].to_numpy(), meta["compound"].to_numpy(), meta["batch"]).evaluable.any():
        kinds["nscb"] = meta["batch"]
    scored = neighbor_setup(meta["moa"].to_numpy(), meta["compound"].to_numpy()).evaluable
    treatment_compound = meta["compound"].astype(str)
    held_out = pd.unique(treatment_compound[scored])  # a compound NSC cannot score needs no fold
    if not len(held_out):
        raise PhenolensError(f"{option}: no treatment has a treatment of its MoA from another compound to match; each MoA needs 2+ compounds")
    folds: dict[str, list[pd.DataFrame]] = {kind: [] for kind in kinds}
    unevaluable: dict[str, list[str]] = {}
    for compound in held_out:
        fitted = clone(projection).fit(values[well_compound != compound], well_moa[well_compound != compound])
        profiles = treatment_profiles(fitted.transform(values), treatments, consensus)
        for kind, batch in kinds.items():
            result = nearest_neighbor_moa(profiles, meta["moa"], meta["compound"], batch, similarity, drop_unevaluable_moas)
            own = result.predictions.index.isin(meta.index[treatment_compound == compound])
            folds[kind].append(result.predictions[own])
            unevaluable[kind] = result.unevaluable_moas
    results = {}
    for kind, parts in folds.items():
        predictions = pd.concat(parts)
        predictions = predictions.loc[meta.index[meta.index.isin(predictions.index)]]  # in the treatments' order
        evaluated = predictions[predictions["evaluated"]]
        if evaluated.empty:
            raise PhenolensError(f"{option}: no held-out treatment has a neighbour of its MoA from another compound ({kind.upper()})")
        results[kind] = NeighborResult(float(evaluated["correct"].mean()), len(evaluated), predictions, unevaluable[kind])
    return results
