"""Nested leave-one-compound-out choice: pick a representation or setting by 1-NN MoA accuracy without its answer.

Choosing among representations (or sphering epsilons, adversary strengths) by their NSC and
reporting that NSC tunes on the test answer. Here every compound is held out in turn: the
candidate with the best NSC (or NSCB) on the OTHER compounds, with the held-out compound's
treatments removed from the reference set as well, is chosen, and only then are the held-out
treatments matched with it (against every other compound, as plain NSC does). The accuracy over
all held-out treatments is an honest estimate of "choose the best candidate, then use it".
Label-free criteria (replicate mAP) cannot see whether profiles stay comparable across batches
when replicates never leave their batch; this loop uses the MoA labels, but never those it is judged on.

The inner score is 1-NN accuracy (``criterion="accuracy"``) or the mean average precision of
retrieving same-MoA treatments (``criterion="map"``): with ~100 treatments, candidates often differ by
one or two 1-NN hits, so the accuracy winner changes with whichever compound is held out (holding out
a compound a candidate gets right lowers that candidate's inner score), which biases the nested
estimate down; the mAP ranks every eligible same-MoA treatment and varies less from one held-out
compound to the next.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from phenolens.core.errors import PhenolensError
from phenolens.profiling.moa import neighbor_setup, neighbor_similarities, unit_rows

CRITERIA = ("accuracy", "map")  # what the nested loop maximises on the other compounds
COMBINATIONS = ("mean", "min")  # how a joint choice combines the inner NSC and NSCB scores


@dataclass
class NestedResult:
    """The outcome of `nested_neighbor_accuracy`.

    Attributes
    ----------
    accuracy : float
        Share of evaluated held-out treatments whose nearest eligible neighbour (under the candidate
        chosen without their compound) shares their MoA.
    evaluated : int
        Held-out treatments that had an eligible neighbour of their MoA.
    chosen : pandas.Series
        Per compound: the candidate chosen while it was held out.
    predictions : pandas.DataFrame
        Per treatment: compound, chosen candidate, correct, evaluated.
    """

    accuracy: float
    evaluated: int
    chosen: pd.Series
    predictions: pd.DataFrame


def nested_neighbor_accuracy(
    candidates: dict[str, pd.DataFrame],
    moa: pd.Series,
    compound: pd.Series,
    batch: pd.Series | None = None,
    similarity: str = "pearson",
    drop_unevaluable_moas: bool = False,
    criterion: str = "accuracy",
) -> NestedResult:
    """Leave-one-compound-out NSC (or, with `batch`, NSCB) accuracy of choosing the best candidate on the other compounds.

    Parameters
    ----------
    candidates : dict of str to pandas.DataFrame
        Candidate name -> treatment profiles (index: treatment; every candidate has the same index).
    moa, compound : pandas.Series
        Per treatment.
    batch : pandas.Series, optional
        Per treatment ('|'-separated batches): neighbours sharing a batch are excluded (NSCB).
    similarity : str
        ``pearson`` (default) or ``cosine`` (`phenolens.profiling.moa.unit_rows`).
    drop_unevaluable_moas : bool
        Remove MoAs that cannot be scored from the candidate neighbours too, the field's NSCB
        (`phenolens.profiling.moa.neighbor_setup`); the per-treatment outcome then lists the kept treatments.
    criterion : str
        What is maximised on the other compounds: ``accuracy`` (1-NN, as judged) or ``map`` (mean average
        precision of the eligible same-MoA treatments in each query's ranking).

    Returns
    -------
    NestedResult
        The nested accuracy, the choice per held-out compound and the per-treatment outcome.

    Raises
    ------
    PhenolensError
        Without candidates, with candidates on different treatments, with fewer than two compounds, or for an
        unknown criterion.
    """
    loop = _leave_one_compound_out(candidates, moa, compound, batch, similarity, drop_unevaluable_moas, criterion)
    chosen = {held_out: loop.names[int(np.argmax(scores))] for held_out, scores in loop.inner_scores.items()}  # ties: the first
    return loop.result(chosen)


def nested_joint_accuracy(
    candidates: dict[str, pd.DataFrame],
    moa: pd.Series,
    compound: pd.Series,
    batch: pd.Series,
    similarity: str = "pearson",
    drop_unevaluable_moas: bool = False,
    criterion: str = "map",
    combine: str = "mean",
) -> dict[str, NestedResult]:
    """Leave-one-compound-out NSC and NSCB of ONE candidate per held-out compound, chosen for both at once.

    `nested_neighbor_accuracy` chooses separately for NSC and for NSCB, so the two nested figures may come from
    two different candidates. Here, for each held-out compound, every candidate's inner NSC score and inner NSCB
    score (both on the other compounds) are combined (their mean, or the smaller of the two) and the best
    candidate judges the held-out compound's treatments for both: the estimate of "choose one representation,
    then report its NSC and NSCB".

    Parameters
    ----------
    candidates : dict of str to pandas.DataFrame
        Candidate name -> treatment profiles (index: treatment; every candidate has the same index).
    moa, compound, batch : pandas.Series
        Per treatment (batches '|'-separated).
    similarity : str
        ``pearson`` (default) or ``cosine``.
    drop_unevaluable_moas : bool
        The field's NSCB (`nested_neighbor_accuracy`).
    criterion : str
        Inner score: ``map`` (default) or ``accuracy`` (`nested_neighbor_accuracy`).
    combine : str
        ``mean`` (default) or ``min`` of the inner NSC and NSCB scores.

    Returns
    -------
    dict of str to NestedResult
        ``nsc`` and ``nscb``; their `chosen` agree on every compound both evaluate.

    Raises
    ------
    PhenolensError
        For an unknown `combine`, and as `nested_neighbor_accuracy`.
    """
    if combine not in COMBINATIONS:
        raise PhenolensError(f"nested choice: combination {combine!r} is unknown; choose one of {', '.join(COMBINATIONS)}")
    every = pd.unique(compound.loc[next(iter(candidates.values())).index].astype(str)) if candidates else []
    loops = {
        "nsc": _leave_one_compound_out(candidates, moa, compound, None, similarity, drop_unevaluable_moas, criterion, every),
        "nscb": _leave_one_compound_out(candidates, moa, compound, batch, similarity, drop_unevaluable_moas, criterion, every),
    }
    combined = {held_out: np.stack([loop.inner_scores[held_out] for loop in loops.values()]) for held_out in every}
    reduce = np.mean if combine == "mean" else np.min
    chosen = {held_out: loops["nsc"].names[int(np.argmax(reduce(scores, axis=0)))] for held_out, scores in combined.items()}
    return {kind: loop.result(chosen) for kind, loop in loops.items()}


@dataclass
class _Loop:
    """One definition's leave-one-compound-out: every candidate's inner score per held-out compound and its own 1-NN hits."""

    names: list[str]
    index: pd.Index
    compounds: np.ndarray
    inner_scores: dict[str, np.ndarray]
    correct: np.ndarray  # (candidates, treatments): the 1-NN among every other compound's treatments shares the MoA
    evaluated: np.ndarray

    def result(self, chosen: dict[str, str]) -> NestedResult:
        """The held-out treatments judged with the candidate chosen for their compound."""
        position = {name: k for k, name in enumerate(self.names)}
        picked = np.array([position[chosen[c]] for c in self.compounds], dtype=int)
        correct = self.correct[picked, np.arange(len(self.compounds))] & self.evaluated
        if not self.evaluated.any():
            raise PhenolensError("nested choice: no held-out treatment has an eligible neighbour of its MoA")
        predictions = pd.DataFrame(
            {"compound": self.compounds, "chosen": [chosen[c] for c in self.compounds], "correct": correct, "evaluated": self.evaluated},
            index=self.index,
        )
        held_out = pd.Series({c: chosen[c] for c in pd.unique(self.compounds)}, name="chosen")
        return NestedResult(float(correct[self.evaluated].mean()), int(self.evaluated.sum()), held_out, predictions)


def _leave_one_compound_out(candidates, moa, compound, batch, similarity, drop_unevaluable_moas, criterion, held_out_compounds=None) -> _Loop:
    """Inner scores of every candidate with each compound held out (default: each compound kept by the definition)."""
    if criterion not in CRITERIA:
        raise PhenolensError(f"nested choice: criterion {criterion!r} is unknown; choose one of {', '.join(CRITERIA)}")
    if not candidates:
        raise PhenolensError("nested choice: no candidates")
    names = list(candidates)
    index = candidates[names[0]].index
    if any(not frame.index.equals(index) for frame in candidates.values()):
        raise PhenolensError("nested choice: every candidate must profile the same treatments in the same order")
    batches = None if batch is None else batch.loc[index]
    setup = neighbor_setup(moa.loc[index].to_numpy(), compound.loc[index].to_numpy(), batches, drop_unevaluable_moas)
    index = index[setup.kept]
    compounds = compound.loc[index].astype(str).to_numpy()
    if len(set(compounds)) < 2:
        raise PhenolensError("nested choice: needs treatments of two or more compounds")
    excluded, same_moa = setup.excluded, setup.same_moa
    # similarity[k, q, r]: candidate k, query q, reference r; excluded pairs and constant profiles can never be neighbours
    units = [unit_rows(frame.loc[index].to_numpy(dtype=np.float64), similarity) for frame in candidates.values()]
    similarity_matrix = np.stack([neighbor_similarities(unit, excluded) for unit in units])
    # a query without a finite similarity (a constant one; in an inner fold, also one whose candidates are all held out or
    # constant) has no neighbour: no prediction, counted wrong (np.argmax of an all -inf row would pick the first reference)
    has_neighbor = np.isfinite(similarity_matrix).any(axis=2)
    eligible = same_moa & ~excluded
    inner_scores = {}
    for held_out in pd.unique(compounds) if held_out_compounds is None else held_out_compounds:
        out = compounds == held_out
        inner = similarity_matrix[:, ~out][:, :, ~out]
        positives = eligible[~out][:, ~out]
        inner_eligible = positives.any(axis=1)
        if criterion == "accuracy":
            inner_hits = same_moa[~out][:, ~out][np.arange(inner.shape[1]), inner.argmax(axis=2)] & inner_eligible & np.isfinite(inner).any(axis=2)
            inner_scores[held_out] = inner_hits.sum(axis=1) / max(1, inner_eligible.sum())
        else:
            inner_scores[held_out] = _mean_average_precision(inner, positives, inner_eligible)
    correct = same_moa[np.arange(len(index)), similarity_matrix.argmax(axis=2)] & has_neighbor
    return _Loop(names, index, compounds, inner_scores, correct, setup.evaluable)


def _mean_average_precision(similarity: np.ndarray, positives: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Per candidate: mean over `queries` of the average precision of their `positives` in the ranking by similarity.

    similarity is (candidates, queries, references) with -inf at excluded pairs (ranked last, never positive) and at
    undefined similarities (a constant profile: never retrieved, so a constant query's average precision is 0).
    """
    order = np.argsort(-similarity, axis=2, kind="stable")
    hits = np.take_along_axis(np.broadcast_to(positives, similarity.shape), order, axis=2)
    retrieved = hits & np.isfinite(np.take_along_axis(similarity, order, axis=2))
    precision = np.cumsum(retrieved, axis=2) / np.arange(1, similarity.shape[2] + 1)
    average = (precision * retrieved).sum(axis=2) / np.maximum(hits.sum(axis=2), 1)
    return average[:, queries].mean(axis=1) if queries.any() else np.zeros(len(similarity))
