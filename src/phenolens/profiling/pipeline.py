"""The whole profiling run as one pure function: fit, represent, evaluate, explain, learning curve.

`run_profiling` does no I/O; the CLI and the demo write its results.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from phenolens.core.logging import get_logger
from phenolens.data.chunks import progress_log
from phenolens.profiling.anomaly import ROLE_COLUMN, AnomalyProfiler
from phenolens.profiling.batch_effects import batch_correction_metrics
from phenolens.profiling.evaluate import Evaluation, core_scores, evaluate, with_concatenation
from phenolens.profiling.explain import FeatureExplanation, explain_anomalies
from phenolens.profiling.inputs import prepare_profiles
from phenolens.profiling.normalize import TEST, TRAIN
from phenolens.profiling.settings import ProfilingSettings

log = get_logger(__name__)


@dataclass
class ProfilingRun:
    """Everything a profiling run produced, for the report and the run folder.

    Attributes
    ----------
    profiler : AnomalyProfiler
        The fitted profiler.
    representations : dict of str to pandas.DataFrame
        cellprofiler, anomaly and concatenation tables.
    evaluation : Evaluation
        Metrics and what the report draws.
    explanations : list of FeatureExplanation
        Anomaly SHAP of the most anomalous treatment.
    explained_group : str
        That treatment.
    curve : pandas.DataFrame or None
        The control-count curve.
    quality : dict
        What `prepare_profiles` dropped and kept.
    metrics : dict
        metrics.json.
    """

    profiler: AnomalyProfiler
    representations: dict[str, pd.DataFrame]
    evaluation: Evaluation
    explanations: list[FeatureExplanation]
    explained_group: str
    curve: pd.DataFrame | None
    quality: dict
    metrics: dict


def run_profiling(table: pd.DataFrame, settings: ProfilingSettings, source: str = "profile table") -> ProfilingRun:
    """Fit the AnomalyProfiler on `table`'s controls, evaluate every representation and explain the most anomalous treatment.

    Parameters
    ----------
    table : pandas.DataFrame
        Well-level profiles (not modified).
    settings : ProfilingSettings
        Columns, profiler, evaluation, explanation and curve settings.
    source : str
        The table's name (file paths or dataset) for messages and metrics.

    Returns
    -------
    ProfilingRun
        Everything the report and the output folder need.

    Raises
    ------
    PhenolensError
        For a table or settings that cannot be used (missing columns or controls, too few replicates...).
    """
    settings.require("controls", "treatment")
    columns = settings
    started = time.perf_counter()
    prepared = prepare_profiles(table, columns, source, settings.feature_set)
    progress_log.info(
        "profile run: %d wells x %d features; fitting the autoencoder on the training share of %d control wells",
        *(len(prepared.table), len(prepared.features), int(prepared.is_control.sum())),
    )
    profiler = AnomalyProfiler(settings)
    representations = with_concatenation(profiler.fit_transform(prepared.table), columns)
    progress_log.info("profile run: scoring %d representations (%d MoA classifier repeats)", len(representations), settings.moa_repeats)
    evaluation = evaluate(representations, settings)
    if settings.explain_features:
        progress_log.info("profile run: Kernel SHAP of the most anomalous treatment (%d features)", settings.explain_features)
    explanations, group = explain_top_treatment(profiler, representations, evaluation, columns, settings)
    if settings.curve and settings.curve_fractions:
        progress_log.info("profile run: learning curve, the autoencoder refitted on fewer training controls")
    curve = _control_curve(prepared.table, settings, profiler, representations) if settings.curve and settings.curve_fractions else None
    metrics = {name: values for name, values in evaluation.metrics.items()}
    metrics.update(
        {
            "data": prepared.quality,
            "consensus": settings.consensus,
            "autoencoder": autoencoder_metrics(profiler),
            "batch_correction": batch_correction_metrics(profiler, representations, settings),
            "reproducible_treatments": evaluation.venn,
            "explained_group": group,
            "control_curve": curve.to_dict(orient="records") if curve is not None else None,
            "notes": evaluation.notes,
            "seconds": round(time.perf_counter() - started, 1),
        }
    )
    return ProfilingRun(profiler, representations, evaluation, explanations, group, curve, prepared.quality, metrics)


def autoencoder_metrics(profiler: AnomalyProfiler) -> dict:
    """The ``autoencoder`` block of metrics.json: selected features, training, control split, hyper-parameters.

    Parameters
    ----------
    profiler : AnomalyProfiler
        A fitted profiler.

    Returns
    -------
    dict
        JSON-ready figures of its fit.
    """
    history = profiler.history_
    return {
        "selected_features": len(profiler.selected_features_),
        "epochs": len(history.epochs),
        "best_epoch": history.best_epoch,
        "best_validation_mse": float(np.nanmin(history.column("val_loss"))),
        "controls": {role: int((profiler.roles_ == role).sum()) for role in ("train", "validation", "test", "unused")},
        "hyperparameters": dict(zip(("learning_rate", "output_l2", "dropout"), profiler.chosen_hyperparameters_)),
        "search": profiler.search_.to_dict(orient="records"),
    }


def curve_profilers(profiler: AnomalyProfiler, settings: ProfilingSettings) -> list[AnomalyProfiler]:
    """Unfitted profilers of the control-count curve: the chosen hyper-parameters, fewer training controls.

    Parameters
    ----------
    profiler : AnomalyProfiler
        The fitted profiler of the full run.
    settings : ProfilingSettings
        Its settings (``curve_fractions``).

    Returns
    -------
    list of AnomalyProfiler
        One per curve fraction.
    """
    n_train = int((profiler.roles_ == TRAIN).sum())
    chosen = dict(zip(("learning_rate", "output_l2", "dropout"), profiler.chosen_hyperparameters_))
    return [
        # the curve reads `anomaly` alone: no sphering, no adversary
        AnomalyProfiler(
            settings.unsphered().replace(**chosen, search_trials=0, max_train_controls=max(2, int(round(fraction * n_train))), adversary="none")
        )
        for fraction in settings.curve_fractions
    ]


def explain_top_treatment(profiler, representations, evaluation, columns, settings) -> tuple[list[FeatureExplanation], str]:
    """SHAP for the treatment with the largest mean anomaly score.

    Parameters
    ----------
    profiler : AnomalyProfiler
        The fitted profiler.
    representations : dict of str to pandas.DataFrame
        ``cellprofiler`` and ``anomaly`` rows holding at least that treatment's wells and the test controls.
    evaluation : Evaluation
        Its hits choose the treatment.
    columns : ProfileColumns
        Column meanings.
    settings : ProfilingSettings
        Explanation settings.

    Returns
    -------
    tuple
        (one explanation per explained feature, the treatment); ([], "") with ``explain_features`` 0.
    """
    if settings.explain_features < 1:
        return [], ""
    group = str(evaluation.hits["anomaly"]["score"].idxmax())
    cellprofiler, anomaly = representations["cellprofiler"], representations["anomaly"]
    members = (cellprofiler[columns.treatment].astype(str) == group).to_numpy()
    background = (cellprofiler[ROLE_COLUMN] == TEST).to_numpy()
    explanations = explain_anomalies(
        profiler.model_,
        profiler.standardized_inputs(cellprofiler[members]),
        anomaly.loc[members, profiler.selected_features_].to_numpy(),
        profiler.standardized_inputs(cellprofiler[background]),
        profiler.selected_features_,
        top_features=settings.explain_features,
        nsamples=settings.explain_nsamples,
        seed=settings.seed,
    )
    return explanations, group


def _control_curve(table, settings: ProfilingSettings, profiler, representations) -> pd.DataFrame:
    """Anomaly scores when the autoencoder trains on fewer controls (everything else fixed, with the
    hyper-parameters the full run chose); cellprofiler does not depend on it and is the reference line."""
    n_train = int((profiler.roles_ == TRAIN).sum())
    rows = []
    for smaller in curve_profilers(profiler, settings):
        scores = core_scores(smaller.fit_transform(table)["anomaly"], settings, settings)
        rows.append({"training_controls": smaller.settings.max_train_controls, "representation": "anomaly", **scores})
    rows.append({"training_controls": n_train, "representation": "anomaly", **core_scores(representations["anomaly"], settings, settings)})
    reference = core_scores(representations["cellprofiler"], settings, settings)
    rows += [{"training_controls": row["training_controls"], "representation": "cellprofiler", **reference} for row in rows]
    return pd.DataFrame(rows)
