"""How much of the batch a representation carries, measured on control wells, and the label-free choice of settings.

Negative-control wells are biologically alike, so if a control's nearest neighbour (Pearson
correlation, wells of its own plate left out) comes from its own batch more often than the
batch's share of the candidates predicts, the representation carries the batch. The same
representations are chosen among by replicate reproducibility (mAP, then percent replicating) of
the treated wells, which needs no MoA annotation, so the NSC/NSCB answer is never consulted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from phenolens.core.errors import PhenolensError
from phenolens.data.query import select_rows
from phenolens.profiling.evaluate import features_of, replicate_space
from phenolens.profiling.identity import frame_ranks
from phenolens.profiling.inputs import ProfileColumns
from phenolens.profiling.replicates import CHUNK_BYTES, defined_rows, percent_replicating, replicate_map, row_standardize
from phenolens.profiling.settings import TVN_STEPS

CHOICE_CRITERION = (
    "replicate mAP within batch of the treated wells (replicates ranked against wells of their own batch; ties: percent replicating); "
    "MoA labels and NSC/NSCB are not consulted"
)
HYPERPARAMETERS_CHOSEN_BY = (
    "as given (--sphering and its options, --batch-icc-max, --adversary, --adversary-lambda); "
    "benchmarks/profiling_batch_effects.py chooses among them (a) label-free by " + CHOICE_CRITERION + ", and (b) by a nested "
    "leave-one-compound-out loop (phenolens.profiling.nested: chosen on the other compounds, judged on the held-out one); never by NSC itself"
)


def batch_neighbours(frame: pd.DataFrame, columns: ProfileColumns) -> pd.DataFrame:
    """Per batch: control wells, how often a control's nearest control on another plate shares its batch, and chance.

    Controls with a constant profile (no correlation with anything) are left out.

    Parameters
    ----------
    frame : pandas.DataFrame
        One representation (metadata + features).
    columns : ProfileColumns
        Column meanings (`controls`, `plate` and `batch` are used).

    Returns
    -------
    pandas.DataFrame
        Index batch (plus an ``all`` row): ``plates``, ``control_wells``, ``same_batch_neighbour``
        (share of its controls whose nearest neighbour is in the batch) and ``chance`` (the share
        of same-batch candidates a random neighbour would give).

    Raises
    ------
    PhenolensError
        Without a batch column, or with controls on one plate only.
    """
    if not columns.batch:
        raise PhenolensError("batch effects need a batch column: give --batch-column")
    controls = frame[select_rows(frame, columns.controls, "profiles", "--controls")]
    unit = row_standardize(controls[features_of(frame, columns)].to_numpy(dtype=np.float64))
    defined = defined_rows(unit)  # a constant control resembles nothing: it can be nobody's nearest neighbour, nor have one
    unit, controls = unit[defined], controls[defined]
    plates = controls[columns.plate].astype(str).to_numpy()
    batches = controls[columns.batch].astype(str).to_numpy()
    if len(set(plates)) < 2:
        raise PhenolensError("batch effects need control wells (with non-constant profiles) on two or more plates")
    nearest = np.empty(len(unit), dtype=np.int64)
    rows = max(1, CHUNK_BYTES // (8 * len(unit)))  # similarities of a block of controls at a time (a study has tens of thousands)
    for start in range(0, len(unit), rows):
        similarity = unit[start : start + rows] @ unit.T
        similarity[plates[start : start + rows, None] == plates[None, :]] = -np.inf
        nearest[start : start + rows] = np.argmax(similarity, axis=1)
    hit = batches[nearest] == batches
    table = pd.DataFrame({"batch": batches, "plate": plates, "same_batch_neighbour": hit})
    on_plate = table.groupby("plate")["batch"].transform("size").to_numpy()
    in_batch = table.groupby("batch")["plate"].transform("size").to_numpy()
    in_batch_on_plate = table.groupby(["batch", "plate"])["plate"].transform("size").to_numpy()
    table["chance"] = (in_batch - in_batch_on_plate) / (len(table) - on_plate)  # same-batch candidates on other plates / candidates
    grouped = table.groupby("batch").agg(
        plates=("plate", "nunique"), control_wells=("plate", "size"), same_batch_neighbour=("same_batch_neighbour", "mean"), chance=("chance", "mean")
    )
    grouped.loc["all"] = [len(set(plates)), len(table), table["same_batch_neighbour"].mean(), table["chance"].mean()]
    return grouped.astype({"plates": int, "control_wells": int})


def batch_effects(representations: dict[str, pd.DataFrame], columns: ProfileColumns) -> pd.DataFrame:
    """`batch_neighbours` of every representation in one long table.

    Parameters
    ----------
    representations : dict of str to pandas.DataFrame
        Representation name -> table.
    columns : ProfileColumns
        Column meanings (needs a batch column).

    Returns
    -------
    pandas.DataFrame
        Columns representation, batch, plates, control_wells, same_batch_neighbour, chance.
    """
    parts = [batch_neighbours(frame, columns).reset_index().assign(representation=name) for name, frame in representations.items()]
    table = pd.concat(parts, ignore_index=True)
    return table[["representation", "batch", "plates", "control_wells", "same_batch_neighbour", "chance"]]


def replicate_scores(frame: pd.DataFrame, settings) -> dict[str, float]:
    """Percent replicating, replicate mAP and (with a batch column) replicate mAP within batch of the treated wells
    of one representation: the label-free criteria.

    When replicates share a batch (BBBC021: every compound is screened in one week), anything that
    makes a batch's wells alike also makes replicates alike, and percent replicating and mAP reward
    it; mAP within batch ranks a treatment's replicates only against other wells of its batch.

    Parameters
    ----------
    frame : pandas.DataFrame
        One representation.
    settings : ProfileEvaluationSettings or ProfilingSettings
        Columns and replicate options (normalisation, null, seed).

    Returns
    -------
    dict of str to float
        ``percent_replicating``, ``map`` and ``map_within_batch`` (with a batch column).
    """
    treated = ~select_rows(frame, settings.controls, "profiles", "--controls")
    values = replicate_space(frame[features_of(frame, settings)].to_numpy(dtype=np.float64), frame, settings, settings)[treated]
    treatments = frame[settings.treatment].astype(str).to_numpy()[treated]
    ranks = frame_ranks(frame[treated], settings.plate, row_standardize(values))
    replicating = percent_replicating(
        values, treatments, settings.null_repeats, settings.replicate_percentile, settings.seed, ranks, settings.null_minimum
    )
    average_precision = replicate_map(values, treatments, null_size=settings.map_null_size, seed=settings.seed)
    scores = {"percent_replicating": replicating.percent_replicating, "map": average_precision.mean_average_precision}
    if settings.batch:
        batches = frame[settings.batch].astype(str).to_numpy()[treated]
        within = replicate_map(values, treatments, null_size=settings.map_null_size, seed=settings.seed, negatives_within=batches)
        scores["map_within_batch"] = within.mean_average_precision
    return scores


def choose_by_replicates(scores: pd.DataFrame) -> pd.Series:
    """The candidate with the highest replicate mAP within batch (``map`` without a batch column; ties broken by
    percent replicating, then by order).

    Parameters
    ----------
    scores : pandas.DataFrame
        One row per candidate with ``map_within_batch`` (or ``map``) and ``percent_replicating``
        columns (other columns, e.g. NSC, are carried along and never read).

    Returns
    -------
    pandas.Series
        The chosen row.

    Raises
    ------
    PhenolensError
        For an empty table.
    """
    if scores.empty:
        raise PhenolensError("no candidate settings to choose from")
    criterion = "map_within_batch" if "map_within_batch" in scores else "map"
    order = np.lexsort((-scores["percent_replicating"].to_numpy(), -scores[criterion].to_numpy()))
    return scores.iloc[order[0]]


def batch_correction_metrics(profiler, representations: dict[str, pd.DataFrame], settings) -> dict:
    """What the run did against batch effects and what is left of them, for metrics.json.

    Parameters
    ----------
    profiler : AnomalyProfiler
        The fitted profiler (its sphering and adversary).
    representations : dict of str to pandas.DataFrame
        Every representation of the run.
    settings : ProfilingSettings
        The run's settings.

    Returns
    -------
    dict
        ``sphering`` (variant, method, epsilon, reference wells, tvn's shrinkage, plate centring and optional steps,
        regularised batches), ``batch_dominated_features`` (the ICC threshold and the features dropped), ``adversary``
        (domain, its column, lambda, domain predictability from the latent code with and without it),
        ``hyperparameters`` (how they were chosen) and ``same_batch_neighbour`` per
        representation (with chance), the latter only with a batch column.
    """
    spherers = getattr(profiler, "spherers_", {})
    regularised = sorted({group for spherer in spherers.values() for group in spherer.regularised_groups_})
    metrics = {
        "sphering": {
            "variant": settings.sphering,
            "method": settings.sphering_method,
            "epsilon": settings.sphering_epsilon,
            "fitted_on": "training-split control wells" if settings.sphering_controls == "training" else "all control wells",
            "shrinkage": settings.sphering_shrinkage if settings.sphering == "tvn" else None,
            "plate_centring": settings.sphering == "tvn" and settings.sphering_plate_centring,
            **{name.removeprefix("sphering_"): getattr(settings, name) for name in TVN_STEPS if settings.sphering == "tvn"},
            "regularised_groups": regularised,
        },
        "adversary": {"domain": settings.adversary, "lambda": settings.adversary_lambda, **getattr(profiler, "domain_accuracy_", {})},
        "hyperparameters": HYPERPARAMETERS_CHOSEN_BY,
        "batch_dominated_features": {"batch_icc_max": settings.batch_icc_max, "dropped": list(getattr(profiler, "batch_dominated_features_", []))},
    }
    if settings.batch:
        table = batch_effects(representations, settings)
        overall = table[table["batch"] == "all"].set_index("representation")
        metrics["same_batch_neighbour"] = {
            name: {"rate": float(row["same_batch_neighbour"]), "chance": float(row["chance"])} for name, row in overall.iterrows()
        }
    return metrics
