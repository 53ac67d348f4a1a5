"""Profiling: anomaly-based representations of well-level profiles and their evaluation.

Layers: `aggregate` (single cells to wells, `aggregate_cells`), `settings` (ProfilingSettings,
ProfileEvaluationSettings, ProfileExplanationSettings, ProfileAggregationSettings) and
`inputs` (validated tables) -> `normalize` / `select` (control-referenced standardisation,
pycytominer feature selection) -> `anomaly` (AnomalyProfiler) -> `replicates`, `moa`, `hits`,
`assay_quality`, `explain` -> `evaluate` / `pipeline` (everything side by side).

Names load on first use, so `from phenolens.profiling.assay_quality import z_prime_factor` does not
import torch or scikit-learn.
"""

from __future__ import annotations

from phenolens.core.lazy import lazy_exports

_EXPORTS = {
    "AggregationSummary": "aggregate",
    "aggregate_cells": "aggregate",
    "aggregate_cells_into": "aggregate",
    "AnomalyProfiler": "anomaly",
    "z_factor": "assay_quality",
    "z_factors_by_group": "assay_quality",
    "z_prime_factor": "assay_quality",
    "Evaluation": "evaluate",
    "evaluate": "evaluate",
    "evaluate_tables": "evaluate",
    "with_concatenation": "evaluate",
    "FeatureExplanation": "explain",
    "GroupExplanation": "explain",
    "explain_anomalies": "explain",
    "explain_group": "explain",
    "anomaly_score": "hits",
    "call_hits": "hits",
    "DATASET_PRESETS": "inputs",
    "ProfileColumns": "inputs",
    "prepare_profiles": "inputs",
    "classify_moa": "moa",
    "nearest_neighbor_moa": "moa",
    "treatment_profiles": "moa",
    "ProfilingRun": "pipeline",
    "run_profiling": "pipeline",
    "StudyShard": "plates",
    "DiscriminantProjection": "projection",
    "leave_one_compound_out_neighbors": "projection",
    "study_shards": "plates",
    "ReplicateMap": "replicates",
    "ReplicateResult": "replicates",
    "percent_replicating": "replicates",
    "replicate_map": "replicates",
    "ProfileAggregationSettings": "settings",
    "ProfileEvaluationSettings": "settings",
    "ProfileExplanationSettings": "settings",
    "ProfilingSettings": "settings",
    "StudyRun": "study",
    "profile_study": "study",
    "synthetic_study": "synthetic",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
