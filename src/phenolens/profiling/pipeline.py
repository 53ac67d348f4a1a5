"""The whole profiling run as one pure function: fit, represent, evaluate, explain, learning curve.

`run_profiling` does no I/O; the CLI and the demo write its results.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from phenolens.core.logging import get_logger
from phenolens.profiling.anomaly import ROLE_COLUMN, AnomalyProfiler
from phenolens.profiling.evaluate import Evaluation, EvaluationSettings, core_scores, evaluate, with_concatenation
from phenolens.profiling.explain import FeatureExplanation, explain_anomalies
from phenolens.profiling.inputs import ProfileColumns, prepare_profiles
from phenolens.profiling.normalize import TEST, TRAIN

log = get_logger(__name__)


@dataclass
class RunSettings:
    """Everything a run is configured by (recorded in metrics.json)."""

    profiler: dict = field(default_factory=dict)  # AnomalyProfiler keyword arguments
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    explain_features: int = 3
    explain_nsamples: int = 500
    curve_fractions: tuple[float, ...] = (0.25, 0.5)  # of the training controls; () disables the curve


@dataclass
class ProfilingRun:
    profiler: AnomalyProfiler
    representations: dict[str, pd.DataFrame]
    evaluation: Evaluation
    explanations: list[FeatureExplanation]
    explained_group: str
    curve: pd.DataFrame | None
    quality: dict
    metrics: dict


def run_profiling(table: pd.DataFrame, columns: ProfileColumns, settings: RunSettings | None = None, source: str = "profile table") -> ProfilingRun:
    """Fit the AnomalyProfiler on `table`'s controls, evaluate every representation and explain the
    most anomalous treatment. Returns everything the report and the output folder need."""
    settings = settings or RunSettings()
    started = time.perf_counter()
    prepared = prepare_profiles(table, columns, source)
    profiler = AnomalyProfiler(controls=columns.controls, plate_column=columns.plate, batch_column=columns.batch, **settings.profiler)
    representations = with_concatenation(profiler.fit_transform(prepared.table), columns)
    evaluation = evaluate(representations, columns, settings.evaluation)
    explanations, group = _explain_top_treatment(profiler, representations, evaluation, columns, settings)
    curve = _control_curve(prepared.table, columns, settings, profiler, representations, evaluation) if settings.curve_fractions else None
    metrics = {name: values for name, values in evaluation.metrics.items()}
    history = profiler.history_
    metrics.update(
        {
            "data": prepared.quality,
            "autoencoder": {
                "selected_features": len(profiler.selected_features_),
                "epochs": len(history.epochs),
                "best_epoch": history.best_epoch,
                "best_validation_mse": float(np.nanmin(history.column("val_loss"))),
                "controls": {role: int((profiler.roles_ == role).sum()) for role in ("train", "validation", "test", "unused")},
                "hyperparameters": dict(zip(("learning_rate", "output_l2", "dropout"), profiler.chosen_hyperparameters_)),
                "search": profiler.search_.to_dict(orient="records"),
            },
            "reproducible_treatments": evaluation.venn,
            "explained_group": group,
            "control_curve": curve.to_dict(orient="records") if curve is not None else None,
            "notes": evaluation.notes,
            "settings": {
                "columns": asdict(columns),
                "profiler": _profiler_settings(profiler),
                "evaluation": evaluation.settings,
                "explain_features": settings.explain_features,
                "explain_nsamples": settings.explain_nsamples,
                "curve_fractions": list(settings.curve_fractions),
            },
            "seconds": round(time.perf_counter() - started, 1),
        }
    )
    return ProfilingRun(profiler, representations, evaluation, explanations, group, curve, prepared.quality, metrics)


def _profiler_settings(profiler: AnomalyProfiler) -> dict:
    return {key: value for key, value in vars(profiler).items() if not key.endswith("_") and not key.startswith("_")}


def _explain_top_treatment(profiler, representations, evaluation, columns, settings) -> tuple[list[FeatureExplanation], str]:
    """SHAP for the treatment with the largest mean anomaly score."""
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
        seed=settings.evaluation.seed,
    )
    return explanations, group


def _control_curve(table, columns, settings, profiler, representations, evaluation) -> pd.DataFrame:
    """Anomaly scores when the autoencoder trains on fewer controls (everything else fixed, with the
    hyper-parameters the full run chose); cellprofiler does not depend on it and is the reference line."""
    n_train = int((profiler.roles_ == TRAIN).sum())
    chosen = dict(zip(("learning_rate", "output_l2", "dropout"), profiler.chosen_hyperparameters_))
    rows = []
    for fraction in settings.curve_fractions:
        smaller = AnomalyProfiler(
            controls=columns.controls,
            plate_column=columns.plate,
            batch_column=columns.batch,
            **{**settings.profiler, **chosen, "search_trials": 0, "max_train_controls": max(2, int(round(fraction * n_train)))},
        )
        scores = core_scores(smaller.fit_transform(table)["anomaly"], columns, settings.evaluation)
        rows.append({"training_controls": smaller.max_train_controls, "representation": "anomaly", **scores})
    rows.append({"training_controls": n_train, "representation": "anomaly", **core_scores(representations["anomaly"], columns, settings.evaluation)})
    reference = core_scores(representations["cellprofiler"], columns, settings.evaluation)
    rows += [{"training_controls": row["training_controls"], "representation": "cellprofiler", **reference} for row in rows]
    return pd.DataFrame(rows)
