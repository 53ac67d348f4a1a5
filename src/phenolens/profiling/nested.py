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
from phenolens.profiling.moa import neighbor_setup, unit_rows

CRITERIA = ("accuracy", "map")  # what the nested loop maximises on the other compounds


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
    # similarity[k, q, r]: candidate k, query q, reference r; excluded pairs can never be neighbours
    units = [unit_rows(frame.loc[index].to_numpy(dtype=np.float64), similarity) for frame in candidates.values()]
    similarity_matrix = np.stack([unit @ unit.T for unit in units])
    similarity_matrix[:, excluded] = -np.inf
    eligible = same_moa & ~excluded
    chosen, correct, evaluated = {}, np.zeros(len(index), bool), setup.evaluable
    for held_out in pd.unique(compounds):
        out = compounds == held_out
        inner = similarity_matrix[:, ~out][:, :, ~out]
        positives = eligible[~out][:, ~out]
        inner_eligible = positives.any(axis=1)
        if criterion == "accuracy":
            inner_hits = same_moa[~out][:, ~out][np.arange(inner.shape[1]), inner.argmax(axis=2)] & inner_eligible
            scores = inner_hits.sum(axis=1) / max(1, inner_eligible.sum())
        else:
            scores = _mean_average_precision(inner, positives, inner_eligible)
        best = int(np.argmax(scores))  # ties: the first candidate
        chosen[held_out] = names[best]
        rows = np.flatnonzero(out)
        neighbour = similarity_matrix[best, rows].argmax(axis=1)
        correct[rows] = same_moa[rows, neighbour]
    predictions = pd.DataFrame(
        {"compound": compounds, "chosen": [chosen[c] for c in compounds], "correct": correct & evaluated, "evaluated": evaluated}, index=index
    )
    if not evaluated.any():
        raise PhenolensError("nested choice: no held-out treatment has an eligible neighbour of its MoA")
    return NestedResult(float(correct[evaluated].mean()), int(evaluated.sum()), pd.Series(chosen, name="chosen"), predictions)


def _mean_average_precision(similarity: np.ndarray, positives: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Per candidate: mean over `queries` of the average precision of their `positives` in the ranking by similarity.

    similarity is (candidates, queries, references) with -inf at excluded pairs (ranked last, never positive).
    """
    order = np.argsort(-similarity, axis=2, kind="stable")
    hits = np.take_along_axis(np.broadcast_to(positives, similarity.shape), order, axis=2)
    precision = np.cumsum(hits, axis=2) / np.arange(1, similarity.shape[2] + 1)
    average = (precision * hits).sum(axis=2) / np.maximum(hits.sum(axis=2), 1)
    return average[:, queries].mean(axis=1) if queries.any() else np.zeros(len(similarity))
