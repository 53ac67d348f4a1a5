"""Nested leave-one-compound-out choice: pick a representation or setting by 1-NN MoA accuracy without its answer.

Choosing among representations (or sphering epsilons, adversary strengths) by their NSC and
reporting that NSC tunes on the test answer. Here every compound is held out in turn: the
candidate with the best NSC (or NSCB) on the OTHER compounds, with the held-out compound's
treatments removed from the reference set as well, is chosen, and only then are the held-out
treatments matched with it (against every other compound, as plain NSC does). The accuracy over
all held-out treatments is an honest estimate of "choose the best candidate, then use it".
Label-free criteria (replicate mAP) cannot see whether profiles stay comparable across batches
when replicates never leave their batch; this loop uses the MoA labels, but never those it is judged on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from phenolens.core.errors import PhenolensError
from phenolens.profiling.replicates import row_standardize


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
    candidates: dict[str, pd.DataFrame], moa: pd.Series, compound: pd.Series, batch: pd.Series | None = None
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

    Returns
    -------
    NestedResult
        The nested accuracy, the choice per held-out compound and the per-treatment outcome.

    Raises
    ------
    PhenolensError
        Without candidates, with candidates on different treatments, or with fewer than two compounds.
    """
    if not candidates:
        raise PhenolensError("nested choice: no candidates")
    names = list(candidates)
    index = candidates[names[0]].index
    if any(not frame.index.equals(index) for frame in candidates.values()):
        raise PhenolensError("nested choice: every candidate must profile the same treatments in the same order")
    moas, compounds = moa.loc[index].to_numpy(), compound.loc[index].astype(str).to_numpy()
    if len(set(compounds)) < 2:
        raise PhenolensError("nested choice: needs treatments of two or more compounds")
    excluded = compounds[:, None] == compounds[None, :]
    if batch is not None:
        members = batch.loc[index].astype(str).str.get_dummies(sep="|").to_numpy()
        excluded |= (members @ members.T) > 0
    same_moa = moas[:, None] == moas[None, :]
    # similarity[k, q, r]: candidate k, query q, reference r; excluded pairs can never be neighbours
    units = [row_standardize(frame.to_numpy(dtype=np.float64)) for frame in candidates.values()]
    similarity = np.stack([unit @ unit.T for unit in units])
    similarity[:, excluded] = -np.inf
    chosen, correct, evaluated = {}, np.zeros(len(index), bool), np.zeros(len(index), bool)
    for held_out in pd.unique(compounds):
        out = compounds == held_out
        inner = similarity[:, ~out][:, :, ~out]
        inner_eligible = (same_moa[~out][:, ~out] & ~excluded[~out][:, ~out]).any(axis=1)
        inner_hits = same_moa[~out][:, ~out][np.arange(inner.shape[1]), inner.argmax(axis=2)] & inner_eligible
        scores = inner_hits.sum(axis=1) / max(1, inner_eligible.sum())
        best = int(np.argmax(scores))  # ties: the first candidate
        chosen[held_out] = names[best]
        rows = np.flatnonzero(out)
        neighbour = similarity[best, rows].argmax(axis=1)
        correct[rows] = same_moa[rows, neighbour]
        evaluated[rows] = (same_moa[rows] & ~excluded[rows]).any(axis=1)
    predictions = pd.DataFrame(
        {"compound": compounds, "chosen": [chosen[c] for c in compounds], "correct": correct & evaluated, "evaluated": evaluated}, index=index
    )
    if not evaluated.any():
        raise PhenolensError("nested choice: no held-out treatment has an eligible neighbour of its MoA")
    return NestedResult(float(correct[evaluated].mean()), int(evaluated.sum()), pd.Series(chosen, name="chosen"), predictions)
