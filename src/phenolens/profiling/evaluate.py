"""Evaluate representations side by side: reproducibility, MoA prediction, hits and assay quality."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from phenolens.core.errors import PhenolensError
from phenolens.core.logging import get_logger
from phenolens.data.query import select_rows
from phenolens.profiling.anomaly import ROLE_COLUMN, TRAIN, VALIDATION
from phenolens.profiling.assay_quality import z_factors_by_group, z_prime_factor
from phenolens.profiling.hits import anomaly_score, call_hits
from phenolens.profiling.identity import content_keys, frame_ranks, well_names, well_ranks
from phenolens.profiling.inputs import (
    IMPUTED_COLUMN,
    ProfileColumns,
    checked_features,
    features_of,
    finite_features,
    impute_from_plate_controls,
    metadata_of,
    shared_features,
)
from phenolens.profiling.moa import CLASSIFIERS, ClassifierResult, NeighborResult, classify_moa, nearest_neighbor_moa, treatment_profiles
from phenolens.profiling.normalize import whole_plate_normalize
from phenolens.profiling.projection import leave_one_compound_out_neighbors
from phenolens.profiling.replicates import (
    ReplicateMap,
    ReplicateResult,
    control_similarities,
    null_standard_error,
    percent_replicating_of_unit_rows,
    replicate_map,
    replicate_map_against_controls,
    row_standardize,
)
from phenolens.profiling.settings import ProfileEvaluationSettings
from phenolens.profiling.sphering import SPHERED_SUFFIX

log = get_logger(__name__)

SEPARATOR = "__"  # wide tables name columns <representation>__<feature>
CONCATENATION = "concatenation"


@dataclass
class Evaluation:
    """What `evaluate` measured, per representation.

    Attributes
    ----------
    metrics : dict
        Representation -> headline metrics (metrics.json).
    replicates : dict
        Representation -> `ReplicateResult`.
    maps : dict
        Representation -> per-treatment mAP table.
    neighbors : dict
        Representation -> {"nsc"/"nscb": `NeighborResult`}.
    classifiers : ClassifierResult or None
        Nested-CV MoA classification (None when skipped).
    hits : dict
        Representation -> per-treatment hit calls.
    z_factors : dict
        Representation -> per-treatment Z-factors.
    notes : list of str
        What was skipped or excluded, in words.
    settings : dict
        The evaluation settings as plain values.
    venn : dict
        Reproducible-treatment counts per representation and their overlaps.
    treatment_profiles : pandas.DataFrame or None
        The treatment profiles the MoA evaluation used (`treatment_table`); None without a MoA column.
    """

    metrics: dict[str, dict]
    replicates: dict[str, ReplicateResult]
    maps: dict[str, pd.DataFrame]
    neighbors: dict[str, dict[str, NeighborResult]]
    classifiers: ClassifierResult | None
    hits: dict[str, pd.DataFrame]
    z_factors: dict[str, pd.Series]
    notes: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    venn: dict[str, int] = field(default_factory=dict)
    treatment_profiles: pd.DataFrame | None = None


def wide_table(representations: dict[str, pd.DataFrame], columns: ProfileColumns) -> pd.DataFrame:
    """One table: shared metadata, then every representation's features named `<name>__<feature>`.

    Parameters
    ----------
    representations : dict of str to pandas.DataFrame
        Same wells in the same order.
    columns : ProfileColumns
        Column meanings.

    Returns
    -------
    pandas.DataFrame
        The wide table.
    """
    first = next(iter(representations.values()))
    metadata = metadata_of(first, columns)
    parts = [first[metadata]]
    for name, frame in representations.items():
        parts.append(frame[features_of(frame, columns)].add_prefix(f"{name}{SEPARATOR}"))
    return pd.concat(parts, axis=1)


def split_wide_table(table: pd.DataFrame, columns: ProfileColumns) -> dict[str, pd.DataFrame]:
    """Inverse of `wide_table`; a table without `<name>__` columns is one representation, 'features'.

    Parameters
    ----------
    table : pandas.DataFrame
        A wide table (or a plain one).
    columns : ProfileColumns
        Column meanings.

    Returns
    -------
    dict of str to pandas.DataFrame
        Representation name -> table (the concatenation is left out; `with_concatenation` rebuilds it).
    """
    metadata = metadata_of(table, columns)
    prefixed = [c for c in table.columns if c not in metadata and SEPARATOR in c]
    if not prefixed:
        return {"features": table}
    names = list(dict.fromkeys(c.split(SEPARATOR, 1)[0] for c in prefixed))
    return {
        name: pd.concat(
            [table[metadata], table[[c for c in prefixed if c.startswith(name + SEPARATOR)]].rename(columns=lambda c: c.split(SEPARATOR, 1)[1])],
            axis=1,
        )
        for name in names
        if not is_concatenation(name)
    }


def with_concatenation(representations: dict[str, pd.DataFrame], columns: ProfileColumns) -> dict[str, pd.DataFrame]:
    """Add the concatenation of every representation (features prefixed by their representation), and
    ``concatenation_sphered``, the concatenation of the sphered ones.

    Parameters
    ----------
    representations : dict of str to pandas.DataFrame
        Representation name -> table; concatenated when there are two or more (sphered and not
        sphered ones apart).
    columns : ProfileColumns
        Which columns are metadata (kept once).

    Returns
    -------
    dict of str to pandas.DataFrame
        The representations plus ``concatenation`` and ``concatenation_sphered`` (each when it joins two or more).
    """
    result = dict(representations)
    for name, members in concatenation_members(list(representations)).items():
        result[name] = wide_table({member: representations[member] for member in members}, columns)
    return result


def concatenation_members(names: list[str]) -> dict[str, list[str]]:
    """The concatenations `with_concatenation` makes of representations `names`, and the representations each joins.

    Parameters
    ----------
    names : list of str
        Representation names, in order.

    Returns
    -------
    dict of str to list of str
        ``concatenation`` -> the representations that are not sphered, ``concatenation_sphered`` ->
        the sphered ones; each only when it joins two or more.
    """
    groups = {}
    for suffix in ("", SPHERED_SUFFIX):
        members = [name for name in names if name.endswith(SPHERED_SUFFIX) == bool(suffix)]
        if len(members) >= 2:
            groups[CONCATENATION + suffix] = members
    return groups


def is_concatenation(name: str) -> bool:
    """Whether representation `name` is a concatenation (rebuilt from the others, never stored).

    Parameters
    ----------
    name : str
        A representation name.

    Returns
    -------
    bool
        True for ``concatenation`` and ``concatenation_sphered``.
    """
    return name in (CONCATENATION, CONCATENATION + SPHERED_SUFFIX)


def evaluate(representations: dict[str, pd.DataFrame], settings: ProfileEvaluationSettings) -> Evaluation:
    """Evaluate every representation (tables with the same wells in the same order).

    Treated wells give percent replicating, mAP, NSC/NSCB 1-NN accuracy and nested-CV classifier
    F1 (on the treatments reproducible in any representation, MoAs with enough of them). Control
    wells never used for fitting (test split, or all controls of an external table) are the null
    for hits and Z-factors; Z' is computed when `settings.positive_controls` is given.

    Parameters
    ----------
    representations : dict of str to pandas.DataFrame
        Representation name -> table (metadata + finite features), same wells in the same order.
    settings : ProfileEvaluationSettings or ProfilingSettings
        Column meanings and evaluation options.

    Returns
    -------
    Evaluation
        Metrics per representation and everything the report draws.

    Raises
    ------
    PhenolensError
        When the controls query or the treatment column is missing, or the controls query matches no well.
    """
    columns = settings
    columns.require("controls", "treatment")
    if settings.moa_projection != "none" and not columns.moa:
        settings.fail("moa_projection", f"{settings.moa_projection!r} learns from MoA annotations: give --moa-column")
    reference = next(iter(representations.values()))
    is_control = select_rows(reference, columns.controls, "profiles", "--controls")
    if not is_control.any():
        raise PhenolensError(f"profiles: the control query {columns.controls!r} matches no well; check it against the metadata values")
    treated = ~is_control
    null_controls = is_control & ~reference.get(ROLE_COLUMN, pd.Series("", index=reference.index)).isin([TRAIN, VALIDATION]).to_numpy()
    treatments = reference[columns.treatment].astype(str).to_numpy()
    positive = select_rows(reference, columns.positive_controls, "profiles", "--positive-controls") if columns.positive_controls else None
    plates = reference[columns.plate].astype(str).to_numpy()
    wells = well_names(reference)
    scored = {}
    for name, frame in representations.items():
        values = frame[features_of(frame, columns)].to_numpy(dtype=np.float64)
        for_replicates = replicate_space(values, frame, columns, settings)
        unit = row_standardize(for_replicates)
        if settings.map_negatives == "plate_controls":
            queries, similarities = control_similarities(unit, plates, is_control)
            retrieval = replicate_map_against_controls(
                unit[treated], treatments[treated], queries, similarities, settings.seed, settings.map_null_size
            )
        else:
            retrieval = replicate_map(for_replicates[treated], treatments[treated], settings.seed, settings.map_null_size)
        scores = anomaly_score(values)
        scored[name] = score_representation(
            unit[treated],
            treatments[treated],
            retrieval,
            scores[treated],
            scores[null_controls],
            None if positive is None else scores[positive],
            settings,
            well_ranks(plates[treated], None if wells is None else wells[treated], content_keys(unit[treated])),
            frame_ranks(frame[null_controls], columns.plate, values[null_controls]),
        )
    profiles, meta = treatment_level(representations, columns, treated, settings.consensus) if columns.moa else ({}, None)
    evaluation = finish_evaluation(scored, profiles, meta, settings)
    if meta is not None and settings.moa_projection != "none":
        add_projected_neighbors(evaluation, representations, treated, meta, settings)
    return evaluation


def add_projected_neighbors(
    evaluation: Evaluation, representations: dict[str, pd.DataFrame], treated: np.ndarray, meta: pd.DataFrame, settings: ProfileEvaluationSettings
) -> None:
    """Add the field's NSC/NSCB after a projection learnt from the other compounds' MoA (`--moa-projection`).

    Per representation, `leave_one_compound_out_neighbors` refits the projection for every held-out compound on
    the other compounds' treated wells; the figures go into the metrics as ``nsc_field_accuracy_<projection>``,
    ``nscb_field_accuracy_<projection>`` (and ``*_treatments_<projection>``, the treatments scored), the results
    into `evaluation.neighbors` as ``nsc_<projection>`` / ``nscb_<projection>``, and a note says what they used.
    Where the projection cannot learn from the annotations (`leave_one_compound_out_neighbors` refuses them), that
    representation's figures are None and a note says why, as for the plain NSC/NSCB: the run's other results stay.

    Parameters
    ----------
    evaluation : Evaluation
        Updated in place.
    representations : dict of str to pandas.DataFrame
        The well-level representations `evaluate` scored.
    treated : numpy.ndarray
        Mask of treated wells.
    meta : pandas.DataFrame
        Per-treatment moa, compound (and batch) of `treatment_level`.
    settings : ProfileEvaluationSettings or ProfilingSettings
        Columns, consensus and the projection (``lda``).
    """
    suffix = settings.moa_projection
    labelled, treatments = moa_wells(next(iter(representations.values())), settings, treated)
    for name, frame in representations.items():
        values = frame.loc[labelled, features_of(frame, settings)].to_numpy(dtype=np.float64)
        try:
            results = leave_one_compound_out_neighbors(values, treatments, meta, consensus=settings.consensus)
        except PhenolensError as error:  # a note, as for the plain NSC/NSCB: a finished run's other results are not lost
            results = {}
            evaluation.notes.append(f"{name}: NSC/NSCB *_{suffix} not evaluated: {error}.")
        for kind in ("nsc", "nscb"):
            result = results.get(kind)
            evaluation.metrics[name][f"{kind}_field_accuracy_{suffix}"] = None if result is None else result.accuracy
            evaluation.metrics[name][f"{kind}_field_treatments_{suffix}"] = None if result is None else result.evaluated
            if result is not None:
                evaluation.neighbors[name][f"{kind}_{suffix}"] = result
    evaluation.notes.append(
        f"NSC/NSCB *_{suffix} use the MoA annotations of the OTHER compounds: for every held-out compound a shrinkage LDA "
        "(Ledoit-Wolf) is fitted on the other compounds' treated wells with their MoA as the class, and the held-out "
        "compound's treatments are matched in that projection (cosine 1-NN, the field's NSC/NSCB; leave-one-compound-out)."
    )


@dataclass
class RepresentationScores:
    """The well-level evaluation of one representation (what `finish_evaluation` gathers).

    Attributes
    ----------
    replicates : ReplicateResult
        Percent replicating.
    retrieval : ReplicateMap
        mAP of replicate retrieval.
    hits : pandas.DataFrame
        Per-treatment hit calls.
    z_factors : pandas.Series
        Per-treatment Z-factors.
    metrics : dict
        The representation's headline metrics so far.
    """

    replicates: ReplicateResult
    retrieval: ReplicateMap
    hits: pd.DataFrame
    z_factors: pd.Series
    metrics: dict


def score_representation(
    unit: np.ndarray,
    treatments: np.ndarray,
    retrieval: ReplicateMap,
    scores: np.ndarray,
    null_scores: np.ndarray,
    positive_scores: np.ndarray | None,
    settings: ProfileEvaluationSettings,
    ranks: np.ndarray | None = None,
    null_ranks: np.ndarray | None = None,
) -> RepresentationScores:
    """Percent replicating, hits and Z-factors of one representation's treated wells (mAP given).

    Parameters
    ----------
    unit : numpy.ndarray or RowFile
        Treated wells' replicate-space rows, centred and scaled to unit norm (`row_standardize`), in
        memory or on disk (`phenolens.profiling.rows.RowFile`).
    treatments : numpy.ndarray
        Their treatments.
    retrieval : ReplicateMap
        Their mAP (`replicate_map` or `replicate_map_against_controls`).
    scores : numpy.ndarray
        Their anomaly scores (`anomaly_score`).
    null_scores : numpy.ndarray
        Anomaly scores of the control wells never used for fitting (the null of hits and Z-factors).
    positive_scores : numpy.ndarray or None
        Anomaly scores of positive-control wells (adds the Z'-factor).
    settings : ProfileEvaluationSettings
        Evaluation options.
    ranks : numpy.ndarray, optional
        Their canonical ranks (`phenolens.profiling.identity.well_ranks`), which order percent replicating's null
        draw; default: their order.
    null_ranks : numpy.ndarray, optional
        The canonical ranks of the null's control wells, which order the hits' null draw; default: their order.

    Returns
    -------
    RepresentationScores
        Everything measured, with the headline metrics.
    """
    replicates = percent_replicating_of_unit_rows(
        unit, treatments, settings.null_repeats, settings.replicate_percentile, settings.seed, ranks, settings.null_minimum
    )
    hits = call_hits(scores, treatments, null_scores, settings.fdr, seed=settings.seed, control_ranks=null_ranks)
    z_factors = z_factors_by_group(scores, treatments, null_scores)
    metrics = {
        "percent_replicating": replicates.percent_replicating,
        "percent_replicating_standard_error": null_standard_error(replicates, seed=settings.seed),
        "replicate_threshold": replicates.threshold,
        "map": retrieval.mean_average_precision,
        "map_fraction_retrieved": retrieval.fraction_retrieved,
        "hits": int(hits["hit"].sum()),
        "median_z_factor": float(z_factors.median()),
    }
    if positive_scores is not None:
        metrics["z_prime_factor"] = z_prime_factor(positive_scores, null_scores)
    return RepresentationScores(replicates, retrieval, hits, z_factors, metrics)


def finish_evaluation(
    scored: dict[str, RepresentationScores], profiles: dict[str, pd.DataFrame], meta: pd.DataFrame | None, settings: ProfileEvaluationSettings
) -> Evaluation:
    """Gather the representations' scores, add MoA evaluation on treatment profiles and the notes.

    Parameters
    ----------
    scored : dict of str to RepresentationScores
        Per representation, from `score_representation`.
    profiles : dict of str to pandas.DataFrame
        Treatment profiles per representation (`treatment_level`); empty without a MoA column.
    meta : pandas.DataFrame or None
        Per-treatment moa, compound (and batch) of `treatment_level`; None without a MoA column.
    settings : ProfileEvaluationSettings
        Evaluation options.

    Returns
    -------
    Evaluation
        Metrics per representation and everything the report draws.
    """
    metrics = {name: result.metrics for name, result in scored.items()}
    replicates = {name: result.replicates for name, result in scored.items()}
    notes = []
    if not settings.positive_controls:
        notes.append(
            "No positive-control query: Z'-factors were not computed; the median Z-factor of the treatments' anomaly scores "
            "against held-out negative controls is reported instead."
        )
    single = next(iter(replicates.values())).single_replicate
    if single:
        notes.append(f"{single} treatment(s) with a single well were excluded from percent replicating and mAP.")
    if settings.map_negatives == "plate_controls":
        notes.append("mAP ranks every treated well's replicates (on any plate) against the control wells of its own plate.")
    neighbors, classifiers = _moa(profiles, meta, replicates, settings, metrics, notes)
    return Evaluation(
        metrics,
        replicates,
        {name: result.retrieval.treatments for name, result in scored.items()},
        neighbors,
        classifiers,
        {name: result.hits for name, result in scored.items()},
        {name: result.z_factors for name, result in scored.items()},
        notes,
        settings.to_dict(),
        venn_counts(replicates),
        None if meta is None else treatment_table(profiles, meta, settings),
    )


def treatment_table(profiles: dict[str, pd.DataFrame], meta: pd.DataFrame, columns: ProfileColumns) -> pd.DataFrame:
    """One row per treatment: its treatment, MoA, compound (and batches) columns, then every stored representation's
    consensus profile named ``<representation>__<feature>`` (concatenations left out, as in profiles.parquet).

    Parameters
    ----------
    profiles : dict of str to pandas.DataFrame
        Treatment profiles per representation (`treatment_level`).
    meta : pandas.DataFrame
        Per-treatment moa, compound (and batch) of `treatment_level`.
    columns : ProfileColumns
        Column meanings (the metadata columns are named as in the well-level table).

    Returns
    -------
    pandas.DataFrame
        The treatment-level table (treatment_profiles.parquet).
    """
    names = {"moa": columns.moa, "compound": columns.compound, "batch": columns.batch}
    kept = [key for key in meta.columns if names[key]]  # without a compound column, the compound is the treatment itself
    table = meta[kept].rename(columns=names).rename_axis(columns.treatment).reset_index()
    features = [
        frame.loc[meta.index].add_prefix(f"{name}{SEPARATOR}").reset_index(drop=True)
        for name, frame in profiles.items()
        if not is_concatenation(name)
    ]
    return pd.concat([table, *features], axis=1)


def evaluate_tables(table: pd.DataFrame, settings: ProfileEvaluationSettings, source: str) -> tuple[Evaluation, dict]:
    """Evaluate a profile table as `profile evaluate` does: a wide table of several representations
    (``<name>__<feature>`` columns, as `profile run` writes) or one plain representation.

    Non-finite values and treated wells without a treatment are handled as `profile run` handles
    them (features with more than 5 % missing/infinite values dropped, then wells with any left, and
    treated wells whose treatment is missing), and counted in the metrics.

    Parameters
    ----------
    table : pandas.DataFrame
        The profiles (not modified).
    settings : ProfileEvaluationSettings
        Column meanings and evaluation options.
    source : str
        The table's name for messages.

    Returns
    -------
    tuple
        (the `Evaluation`, metrics.json as a dict).

    Raises
    ------
    PhenolensError
        For a missing column, a non-numeric or all-missing feature set, treated wells none of which has a
        treatment, or an evaluation that cannot run.
    """
    settings.require("controls", "treatment")
    features = checked_features(table, settings, source)
    metadata = metadata_of(table, settings)
    is_control = select_rows(table, settings.controls, source, "--controls")
    imputed = {}
    if settings.feature_set == "union":
        table, imputed = impute_from_plate_controls(table, features, settings.plate, is_control, source)
        metadata.append(IMPUTED_COLUMN)
    features, plate_features = shared_features(table, features, settings.plate, source)
    features, complete, counts = finite_features(table, features, source)
    # As `prepare_profiles`: a treated well without a treatment is no replicate of anything (all such wells were one treatment, 'nan').
    unlabelled = ~is_control & table[settings.treatment].isna().to_numpy()
    if unlabelled.any() and unlabelled.sum() == (~is_control).sum():
        raise PhenolensError(f"{source}: no treated well has a treatment in {settings.treatment!r}; check the treatment column (--treatment-column)")
    counts["wells_dropped_no_treatment"] = int(unlabelled.sum())
    clean = table.loc[complete & ~unlabelled, metadata + features].reset_index(drop=True)
    representations = with_concatenation(split_wide_table(clean, settings), settings)
    evaluation = evaluate(representations, settings)
    data = {
        "source": source,
        "wells_in": len(table),
        "wells": len(clean),
        "features_in": len(table.columns) - len(metadata),
        **counts,
        "plate_features": plate_features,
        "imputed_by_plate": imputed,
    }
    metrics = {**evaluation.metrics, "data": data, "consensus": settings.consensus, "reproducible_treatments": evaluation.venn}
    metrics["notes"] = evaluation.notes
    return evaluation, metrics


def venn_counts(replicates: dict[str, ReplicateResult]) -> dict[str, int]:
    """How many treatments each representation makes reproducible, their union and intersection,
    and how many only one representation does.

    Parameters
    ----------
    replicates : dict of str to ReplicateResult
        Percent replicating per representation.

    Returns
    -------
    dict of str to int
        Counts per representation, union, all, only_<name> and treatments.
    """
    sets = {name: set(result.treatments.index[result.treatments["reproducible"]]) for name, result in replicates.items()}
    counts = {name: len(members) for name, members in sets.items()}
    counts["union"] = len(set().union(*sets.values()))
    counts["all"] = len(set.intersection(*sets.values()))
    for name, members in sets.items():
        counts[f"only_{name}"] = len(members - set().union(*(m for n, m in sets.items() if n != name)))
    counts["treatments"] = len(next(iter(replicates.values())).treatments)
    return counts


def replicate_space(values: np.ndarray, frame: pd.DataFrame, columns: ProfileColumns, settings: ProfileEvaluationSettings) -> np.ndarray:
    """The values replicate reproducibility is measured on: whole-plate normalised by default.

    Parameters
    ----------
    values : numpy.ndarray
        (wells, features) of one representation.
    frame : pandas.DataFrame
        The representation (for the plate column).
    columns : ProfileColumns
        Column meanings.
    settings : ProfileEvaluationSettings
        Chooses the normalisation.

    Returns
    -------
    numpy.ndarray
        The values replicate metrics use.
    """
    return whole_plate_normalize(values, frame[columns.plate]) if settings.replicate_normalization == "whole_plate" else values


def treatment_level(
    representations: dict[str, pd.DataFrame], columns: ProfileColumns, treated: np.ndarray, consensus: str = "mean"
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Treatment profiles (the `consensus` of their replicate wells) of the treated wells with a MoA, per
    representation, and per-treatment metadata: moa, compound and (with a batch column) batches.

    Parameters
    ----------
    representations : dict of str to pandas.DataFrame
        Same wells in the same order.
    columns : ProfileColumns
        Column meanings (a MoA column is required).
    treated : numpy.ndarray
        Mask of treated wells.
    consensus : str
        ``mean``, ``median`` or ``modz`` (`treatment_profiles`).

    Returns
    -------
    tuple
        (representation -> treatment profiles, per-treatment metadata).
    """
    reference = next(iter(representations.values()))
    labelled, treatments = moa_wells(reference, columns, treated)
    grouped = reference[labelled].groupby(treatments)
    metadata = pd.DataFrame({"moa": grouped[columns.moa].first(), "compound": grouped[columns.compound_column].first().astype(str)})
    if columns.batch:
        metadata["batch"] = grouped[columns.batch].agg(lambda b: "|".join(sorted(set(map(str, b)))))
    profiles = {}
    for name, frame in representations.items():
        features = features_of(frame, columns)
        profiles[name] = treatment_profiles(frame.loc[labelled, features].to_numpy(dtype=np.float64), treatments, consensus)
        profiles[name].columns = features
    return profiles, metadata


def moa_wells(frame: pd.DataFrame, columns: ProfileColumns, treated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The wells MoA evaluation uses (treated, with a MoA) and their treatments.

    Parameters
    ----------
    frame : pandas.DataFrame
        A representation (its metadata).
    columns : ProfileColumns
        Column meanings (a MoA column is required).
    treated : numpy.ndarray
        Mask of treated wells.

    Returns
    -------
    tuple
        (mask of the wells, their treatments as str).
    """
    labelled = treated & frame[columns.moa].notna().to_numpy()
    return labelled, frame.loc[labelled, columns.treatment].astype(str).to_numpy()


def canonical_percent_replicating(frame: pd.DataFrame, plate: str, values: np.ndarray, treatments: np.ndarray, settings) -> ReplicateResult:
    """`percent_replicating` of a table's rows, its null walked in canonical well order (`frame_ranks` of the unit rows).

    The rows are standardised once (`row_standardize`), for the ranks' content keys and for the correlations.

    Parameters
    ----------
    frame : pandas.DataFrame
        The rows' table (plate and, when it has one, well column).
    plate : str
        Plate column.
    values : numpy.ndarray
        (rows, features) of the table's rows.
    treatments : numpy.ndarray
        Treatment label of every row.
    settings : ProfileEvaluationSettings or ProfilingSettings
        Null repeats, null minimum, percentile and seed.

    Returns
    -------
    ReplicateResult
        As `percent_replicating` returns it.
    """
    unit = row_standardize(np.asarray(values, dtype=np.float64))
    ranks = frame_ranks(frame, plate, unit)
    return percent_replicating_of_unit_rows(
        unit, treatments, settings.null_repeats, settings.replicate_percentile, settings.seed, ranks, settings.null_minimum
    )


def core_scores(frame: pd.DataFrame, columns: ProfileColumns, settings: ProfileEvaluationSettings) -> dict[str, float]:
    """Percent replicating and NSC accuracy of one representation: the cheap metrics, for curves.

    Parameters
    ----------
    frame : pandas.DataFrame
        One representation.
    columns : ProfileColumns
        Column meanings.
    settings : ProfileEvaluationSettings
        Evaluation options.

    Returns
    -------
    dict of str to float
        percent_replicating (and nsc_accuracy with a MoA column).
    """
    treated = ~select_rows(frame, columns.controls, "profiles", "--controls")
    values = replicate_space(frame[features_of(frame, columns)].to_numpy(dtype=np.float64), frame, columns, settings)
    treatments = frame[columns.treatment].astype(str).to_numpy()
    replicating = canonical_percent_replicating(frame[treated], columns.plate, values[treated], treatments[treated], settings)
    scores = {"percent_replicating": replicating.percent_replicating}
    if columns.moa:
        profiles, meta = treatment_level({"representation": frame}, columns, treated, settings.consensus)
        scores["nsc_accuracy"] = nearest_neighbor_moa(profiles["representation"], meta["moa"], meta["compound"]).accuracy
    return scores


def _moa(profiles, meta, replicates, settings, metrics, notes):
    if meta is None:
        notes.append("No MoA column: MoA evaluation skipped.")
        return {}, None
    notes.append(f"Treatment profiles (NSC/NSCB, MoA classifiers) are the {settings.consensus} of each treatment's replicate wells.")
    neighbors = {name: {} for name in profiles}
    for kind, batch in (("nsc", None), ("nscb", meta.get("batch"))):
        if kind == "nscb" and batch is None:
            for name in profiles:
                metrics[name]["nscb_accuracy"] = metrics[name]["nscb_field_accuracy"] = None
            continue
        try:
            for name, table in profiles.items():
                neighbors[name][kind] = nearest_neighbor_moa(table, meta["moa"], meta["compound"], batch)
                metrics[name][f"{kind}_accuracy"] = neighbors[name][kind].accuracy
                metrics[name][f"{kind}_treatments"] = neighbors[name][kind].evaluated
                # the field's definition beside it (cosine; MoAs that cannot be scored dropped as neighbours too): `neighbor_setup`
                field_result = nearest_neighbor_moa(table, meta["moa"], meta["compound"], batch, similarity="cosine", drop_unevaluable_moas=True)
                metrics[name][f"{kind}_field_accuracy"] = field_result.accuracy
        except PhenolensError as error:
            notes.append(f"{kind.upper()} not evaluated: {error}.")
            for name in profiles:
                metrics[name][f"{kind}_accuracy"] = metrics[name][f"{kind}_field_accuracy"] = None
    first = next(iter(neighbors.values()))
    for kind, result in first.items():
        if result.unevaluable_moas:
            names = ", ".join(result.unevaluable_moas[:8]) + (
                f" and {len(result.unevaluable_moas) - 8} more" if len(result.unevaluable_moas) > 8 else ""
            )
            notes.append(f"{kind.upper()}: {len(result.unevaluable_moas)} MoA(s) had no eligible treatment to match and were not evaluated: {names}.")
    reproducible = set().union(*(set(r.treatments.index[r.treatments["reproducible"]]) for r in replicates.values()))
    chosen = [t for t in meta.index if t in reproducible]
    try:
        classifiers = classify_moa(
            {name: table.loc[chosen] for name, table in profiles.items()},
            meta["moa"],
            meta["compound"],
            settings.classifiers,
            settings.moa_repeats,
            settings.moa_folds,
            min_per_class=settings.min_treatments_per_moa,
            seed=settings.seed,
            jobs=settings.jobs,
        )
    except PhenolensError as error:
        notes.append(f"MoA classifiers skipped: {error}.")
        classifiers = None
    for name in profiles:
        for kind in CLASSIFIERS:
            metrics[name][f"moa_f1_{kind}"] = float(classifiers.f1[name][kind].mean()) if classifiers and kind in settings.classifiers else None
    if classifiers and classifiers.excluded_moas:
        excluded = ", ".join(f"{k} ({v})" for k, v in sorted(classifiers.excluded_moas.items()))
        notes.append(
            f"MoA classifiers use the {classifiers.n_treatments} treatments reproducible in any representation; "
            f"MoAs with fewer than {settings.min_treatments_per_moa} such treatments were excluded: {excluded}."
        )
    return neighbors, classifiers
