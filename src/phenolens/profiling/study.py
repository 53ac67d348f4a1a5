"""`profile run` on a whole study, one plate file at a time, serially or on a Dask cluster.

Two passes over the files. The first (`scan_shard`) reduces every file to its schema, feature
presence, non-finite counts and control wells; the profiler (and the control-count curve's smaller
profilers) are fitted on the control table alone: they never use treated wells, so the fit equals a
fit on the concatenated study; so are sphering (on the training controls) and the adversarial
autoencoder (trained on the training controls). The second (`represent_shard`) represents one file's
wells in every representation and saves them (a small metadata part, parquet, and an npz of arrays,
no pickles) with what the evaluation needs, in float32: replicate-space unit rows of treated wells,
anomaly scores, similarities to the plate's own controls and per-treatment sums (for a median or MODZ
consensus, where the MoA-labelled wells are: their rows are read back a block of treatments at a time). The evaluation takes
one representation at a time and reads its unit rows from one file on disk by index (`RowFile`), so
memory holds per-well numbers, not rows; profiles.parquet is written at the end in large row groups
(cellprofiler values float32, their exact type; the others float64). A killed run resumes from its
last finished file.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from phenolens.core.errors import PhenolensError
from phenolens.core.executor import Executor
from phenolens.core.logging import get_logger
from phenolens.core.parts import PartStore
from phenolens.data.query import select_rows
from phenolens.profiling.anomaly import ROLE_COLUMN, AnomalyProfiler
from phenolens.profiling.batch_effects import batch_correction_metrics
from phenolens.profiling.evaluate import (
    SEPARATOR,
    Evaluation,
    concatenation_members,
    features_of,
    finish_evaluation,
    is_concatenation,
    replicate_space,
    score_representation,
    with_concatenation,
)
from phenolens.profiling.explain import FeatureExplanation
from phenolens.profiling.hits import anomaly_score
from phenolens.profiling.identity import content_keys, frame_ranks, well_names, well_ranks
from phenolens.profiling.moa import nearest_neighbor_moa, treatment_profiles
from phenolens.profiling.normalize import TRAIN, VALIDATION, Standardization
from phenolens.profiling.pipeline import autoencoder_metrics, curve_profilers, explain_top_treatment
from phenolens.profiling.plates import FeaturePlan, StudyShard, clean_shard, plan_features, read_shard, scan_shard
from phenolens.profiling.replicates import (
    control_similarities,
    percent_replicating_of_unit_rows,
    replicate_map,
    replicate_map_against_controls,
    row_standardize,
)
from phenolens.profiling.rows import RowFile, write_rows
from phenolens.profiling.settings import ProfilingSettings

log = get_logger(__name__)

PARTS = "profiles.parts"  # per-file metadata parts (parquet) and arrays (npz, no pickles); merged into profiles.parquet at the end
ROWS_PER_GROUP = 25_000  # rows of one row group of profiles.parquet: wide tables pay per column chunk
CONSENSUS_BLOCK_BYTES = 64 * 2**20  # replicate rows read back at once for a median or MODZ consensus
BASE = ("cellprofiler", "anomaly")  # what the explanation of the most anomalous treatment reads


@dataclass
class ShardModel:
    """What a shard function needs of the fit, restricted to one shard's plates (small enough to send to a worker).

    Attributes
    ----------
    settings : ProfilingSettings
        The run's settings.
    plan : FeaturePlan
        Features and excluded plates (without the control table).
    profiler : AnomalyProfiler
        The fitted profiler, its standardisation restricted to the shard's plates.
    control_values : dict of str to numpy.ndarray
        Per representation of the fit, the shard's usable controls as the fit represented them
        (leave-one-out for reference controls; cellprofiler float32, the others float64).
    control_roles : numpy.ndarray
        Their control split.
    curve : list of tuple
        Per control-count-curve profiler: (it, restricted; its anomaly of the shard's controls).
    """

    settings: ProfilingSettings
    plan: FeaturePlan
    profiler: AnomalyProfiler
    control_values: dict[str, np.ndarray]
    control_roles: np.ndarray
    curve: list


@dataclass(frozen=True)
class ShardTask:
    """One call of `represent_shard`: the shard, its model and the parts folder it writes into."""

    shard: StudyShard
    model: ShardModel
    parts: str


@dataclass
class StudyRun:
    """Everything a streamed `profile run` produced, for the report and the run folder.

    Attributes
    ----------
    profiler : AnomalyProfiler
        The fitted profiler.
    evaluation : Evaluation
        Metrics and what the report draws.
    explanations : list of FeatureExplanation
        Anomaly SHAP of the most anomalous treatment.
    explained_group : str
        That treatment.
    curve : pandas.DataFrame or None
        The control-count curve.
    plates : pandas.DataFrame
        Per plate: its file, wells in and used, controls, treated wells and drops.
    score_distributions : dict of str to numpy.ndarray
        Anomaly scores of held-out controls and of treated wells.
    metrics : dict
        metrics.json.
    """

    profiler: AnomalyProfiler
    evaluation: Evaluation
    explanations: list[FeatureExplanation]
    explained_group: str
    curve: pd.DataFrame | None
    plates: pd.DataFrame
    score_distributions: dict[str, np.ndarray]
    metrics: dict


def _restricted(profiler: AnomalyProfiler, plates: list[str]) -> AnomalyProfiler:
    """A shallow copy of a fitted profiler that knows only `plates` (the model is shared, not copied)."""
    light = copy.copy(profiler)
    for name in ("input_standardization_", "error_standardization_", "adversarial_error_standardization_"):
        stats = getattr(profiler, name, None)
        if stats is None:  # no adversary
            continue
        setattr(light, name, Standardization(stats.center.loc[stats.center.index.intersection(plates)], stats.scale))
    light.scale_keys_ = {plate: key for plate, key in profiler.scale_keys_.items() if plate in set(plates)}
    light.roles_ = profiler.roles_[:0]
    return light


def represent_shard(task: ShardTask) -> dict:
    """Represent one shard's wells and save them with its evaluation arrays into the parts folder (a shard function).

    Parameters
    ----------
    task : ShardTask
        The shard, the fitted model restricted to it and the parts folder.

    Returns
    -------
    dict
        Per-plate counts (``plates``).

    Raises
    ------
    PhenolensError
        For an unreadable file, or one that changed since the first pass.
    """
    model, source = task.model, task.shard.name
    settings, profiler = model.settings, model.profiler
    clean, is_control, counts = clean_shard(read_shard(task.shard, settings), model.plan, settings, source)
    if int(is_control.sum()) != len(model.control_roles):
        raise PhenolensError(f"{source}: the file changed while the run read it (its control wells differ); re-run")
    plates = clean[settings.plate].astype(str).to_numpy()
    batches = clean[settings.batch].astype(str).to_numpy() if settings.batch else None
    raw = clean.loc[~is_control, profiler.selected_features_].to_numpy(dtype=np.float64)
    stored = _with_controls(profiler, raw, plates, batches, is_control, model.control_values)
    values = {name: block.astype(np.float64, copy=False) for name, block in stored.items()}
    for name, members in concatenation_members(list(stored)).items():
        values[name] = np.hstack([values[member] for member in members])
    for number, (smaller, control_anomaly) in enumerate(model.curve):
        control_values = {"cellprofiler": model.control_values["cellprofiler"], "anomaly": control_anomaly}
        values[f"curve{number}"] = _with_controls(smaller, raw, plates, None, is_control, control_values)["anomaly"]
    arrays = _evaluation_arrays(clean, is_control, plates, values, settings)
    arrays.update({f"profiles_{name}": block for name, block in stored.items()})
    arrays["plates"] = np.array(json.dumps(counts.rename_axis("plate").reset_index().to_dict(orient="records")))
    store = PartStore(task.parts)
    target = store.folder / f"{task.shard.index:06d}.npz"
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}.npz")
    np.savez(staging, **arrays)
    os.replace(staging, target)
    metadata = clean[model.plan.metadata].copy()
    metadata[ROLE_COLUMN] = _spread(model.control_roles, is_control)
    store.write_table(task.shard.index, metadata)  # last: a part on disk means the shard is complete
    return {"plates": json.loads(str(arrays["plates"]))}


def _with_controls(profiler, raw, plates, batches, is_control, control_values) -> dict[str, np.ndarray]:
    """Every representation of a shard's wells: treated wells represented now, controls as the fit represented them."""
    treated = profiler.represent_values(raw, plates[~is_control], None if batches is None else batches[~is_control])
    result = {}
    for name, block in treated.items():
        result[name] = np.empty((len(is_control), block.shape[1]), dtype=block.dtype)
        result[name][is_control], result[name][~is_control] = control_values[name], block
    return result


def _spread(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`values` placed at the True positions of `mask` (other positions empty strings)."""
    out = np.full(len(mask), "", dtype=object)
    out[mask] = values
    return out


def _evaluation_arrays(clean: pd.DataFrame, is_control: np.ndarray, plates: np.ndarray, values: dict[str, np.ndarray], settings) -> dict:
    """What the evaluation needs of one shard, per representation: treated wells' unit rows (float32), scores,
    similarities to their plate's controls, treatment sums for MoA (curve representations: unit rows and sums); with a
    median or MODZ consensus, the positions and treatments of the MoA-labelled wells instead of sums (and the curve
    representations' rows of those wells)."""
    treated = ~is_control
    treatments = clean[settings.treatment].astype(str).to_numpy().astype(str)  # fixed-width strings: saved without pickles
    wells = well_names(clean)  # with the plates and each representation's content keys: the wells' canonical order
    arrays = {
        "treatments": treatments[treated],
        "well_plates": plates[treated].astype(str),
        "well_names": (np.full(len(clean), "") if wells is None else wells)[treated].astype(str),
    }
    if settings.positive_controls:
        arrays["positive"] = select_rows(clean, settings.positive_controls, "profiles", "--positive-controls")[treated]
    labelled = treated & clean[settings.moa].notna().to_numpy() if settings.moa else None
    for name, block in values.items():
        # float32, as stored; the controls' similarities come from the same rows, so that a replicate whose profile
        # equals a control's ties with it (`replicate_map_against_controls`), as in memory, not by float32 rounding
        unit = row_standardize(replicate_space(block, clean, settings, settings)).astype(np.float32)
        arrays[f"unit__{name}"] = unit[treated]
        arrays[f"content__{name}"] = content_keys(unit[treated])
        if not name.startswith("curve"):
            arrays[f"score__{name}"] = anomaly_score(block)[treated]
            if settings.map_negatives == "plate_controls":
                arrays[f"negq__{name}"], arrays[f"negs__{name}"] = control_similarities(unit, plates, is_control)
        if labelled is not None and settings.consensus == "mean":  # means add up file by file
            arrays[f"sum__{name}"] = pd.DataFrame(block[labelled]).groupby(treatments[labelled]).sum().to_numpy()
        elif labelled is not None and name.startswith("curve"):  # not among the stored profiles: kept for the consensus
            arrays[f"rows__{name}"] = block[labelled]
    if labelled is not None and settings.consensus != "mean":  # a median or MODZ needs every replicate: where they are
        arrays["moa_wells"] = np.flatnonzero(labelled)
        arrays["moa_well_treatments"] = treatments[labelled]
    if labelled is not None:
        grouped = clean[labelled].groupby(treatments[labelled])
        arrays["moa_treatments"] = np.asarray(sorted(set(treatments[labelled])), dtype=str)
        arrays["moa_counts"] = grouped.size().to_numpy()
        arrays["moa_moa"] = grouped[settings.moa].first().to_numpy().astype(str)
        arrays["moa_compound"] = grouped[settings.compound_column].first().to_numpy().astype(str)
        if settings.batch:
            arrays["moa_batches"] = grouped[settings.batch].agg(lambda b: "|".join(sorted(set(map(str, b))))).to_numpy().astype(str)
    return arrays


def profile_study(
    shards: list[StudyShard],
    settings: ProfilingSettings,
    source: str,
    run,
    executor: Executor | None = None,
    progress: Callable[[str], None] | None = None,
) -> StudyRun:
    """Fit the anomaly profiler on a study's controls and represent and evaluate it file by file, writing into `run`.

    Parameters
    ----------
    shards : list of StudyShard
        The study's files (`study_shards`).
    settings : ProfilingSettings
        Columns, profiler, evaluation, explanation and curve settings.
    source : str
        The study's name for messages and metrics.
    run : RunWriter
        The entered run folder; the profiles are written into it as they are made (and a resumed run
        skips the files it finished).
    executor : Executor, optional
        Where the per-file steps run (default: this process).
    progress : callable, optional
        Called with one line per plate as its file is finished.

    Returns
    -------
    StudyRun
        Everything the report and metrics.json need (profiles.parquet is already in `run`).

    Raises
    ------
    PhenolensError
        For input that cannot be used (each message names the file), settings that do not fit the
        study, or a Dask worker that died more often than Dask retries.
    """
    settings.require("controls", "treatment")
    if settings.moa_projection != "none":  # it refits on every held-out compound's complement: all treated wells at once
        settings.fail("moa_projection", "needs the whole table in memory: give one profile file (or --dataset) and --scheduler serial")
    executor = executor or Executor()
    progress = progress or (lambda line: None)
    started = time.perf_counter()
    scans = [scan for _, scan in executor.map(scan_shard, [(shard, settings) for shard in shards])]
    plan = plan_features(scans, settings, settings.feature_set, source)
    profiler = AnomalyProfiler(settings)
    controls = profiler.fit_transform(plan.controls)
    smaller = curve_profilers(profiler, settings) if settings.curve and settings.curve_fractions else []
    curve_controls = [model.fit_transform(plan.controls)["anomaly"] for model in smaller]
    parts = run.parts(PARTS)
    done = parts.completed()
    if done:
        progress(f"resuming: {len(done)} of {len(shards)} files already done")
    tasks = _tasks(shards, scans, plan, profiler, controls, list(zip(smaller, curve_controls)), settings, parts.folder)
    for index, result in executor.map(represent_shard, tasks, skip=done):
        run.mark_resumable()
        for plate in result["plates"]:
            progress(f"plate {plate['plate']} ({shards[index].name}, file {index + 1}/{len(shards)}): {plate['wells']} wells used")
    arrays = [SavedArrays(parts.folder / f"{shard.index:06d}.npz") for shard in shards]
    plates = pd.concat([pd.DataFrame(json.loads(str(a["plates"]))).assign(file=shard.name) for a, shard in zip(arrays, shards)], ignore_index=True)
    quality = _quality(plan, plates, settings)
    null = ~controls["anomaly"][ROLE_COLUMN].isin([TRAIN, VALIDATION]).to_numpy()
    distributions = {
        "held-out control wells": anomaly_score(controls["anomaly"][profiler.selected_features_].to_numpy())[null],
        "treated wells": _gather(arrays, "score__anomaly"),
    }
    every = with_concatenation(controls, settings)
    evaluation = _evaluate(arrays, every, settings)
    members = _members(parts, arrays, profiler.selected_features_, evaluation, settings)
    subset = {name: pd.concat([controls[name], members[name]], ignore_index=True) for name in BASE}
    explanations, group = explain_top_treatment(profiler, subset, evaluation, settings, settings)
    curve = _curve(arrays, smaller, profiler, evaluation, settings) if smaller else None
    _merge_parts(parts, arrays, list(controls), profiler.selected_features_, run.file("profiles.parquet"))
    del arrays
    shutil.rmtree(parts.folder)
    metrics = dict(evaluation.metrics)
    metrics.update(
        {
            "data": quality,
            "consensus": settings.consensus,
            "autoencoder": autoencoder_metrics(profiler),
            "batch_correction": batch_correction_metrics(profiler, every, settings),
            "reproducible_treatments": evaluation.venn,
            "explained_group": group,
            "control_curve": curve.to_dict(orient="records") if curve is not None else None,
            "notes": evaluation.notes,
            "plates": plates.to_dict(orient="records"),
            "executor": executor.description,
            "seconds": round(time.perf_counter() - started, 1),
        }
    )
    return StudyRun(profiler, evaluation, explanations, group, curve, plates, distributions, metrics)


def _tasks(shards, scans, plan, profiler, controls, curve, settings, parts):
    """The shard tasks, built lazily (each carries its own plates' part of the fit)."""
    light_plan = dataclasses.replace(plan, controls=plan.controls.iloc[:0], quality={})
    offsets = np.concatenate([[0], np.cumsum(plan.controls_per_shard)])
    selected = profiler.selected_features_
    values = {name: frame[selected].to_numpy(dtype=np.float32 if name == "cellprofiler" else np.float64) for name, frame in controls.items()}
    roles = controls["anomaly"][ROLE_COLUMN].to_numpy()
    curve_anomaly = [(model, frame[selected].to_numpy(dtype=np.float64)) for model, frame in curve]
    for shard, scan in zip(shards, scans):
        rows = slice(offsets[shard.index], offsets[shard.index + 1])
        plates = list(scan.wells.index.astype(str))
        model = ShardModel(
            settings,
            light_plan,
            _restricted(profiler, plates),
            {name: block[rows] for name, block in values.items()},
            roles[rows],
            [(_restricted(smaller, plates), values[rows]) for smaller, values in curve_anomaly],
        )
        yield ShardTask(shard, model, str(parts))


def _quality(plan: FeaturePlan, plates: pd.DataFrame, settings) -> dict:
    """The `data` block of metrics.json, as `prepare_profiles` reports it for the concatenated table."""
    quality = dict(plan.quality)
    if settings.feature_set == "union":
        by_plate = plates.groupby("plate")["imputed_values"].sum()
        quality["imputed_by_plate"] = {str(plate): int(count) for plate, count in by_plate.items()}
    totals = plates[["wells_in", "wells", "dropped_non_finite", "dropped_no_treatment", "dropped_few_controls"]].sum()
    quality["wells_dropped_non_finite"] = int(totals["dropped_non_finite"])
    if settings.treatment:
        quality["wells_dropped_no_treatment"] = int(totals["dropped_no_treatment"])
    quality["wells_dropped_few_controls"] = int(totals["dropped_few_controls"])
    quality.update(
        wells=int(totals["wells"]),
        features=len(plan.features),
        controls=len(plan.controls),
        plates=int(plates.groupby("plate")["wells"].sum().gt(0).sum()),
    )
    if quality["wells_dropped_non_finite"] or quality["features_dropped_non_finite"]:
        log.warning(
            "%s: dropped %d feature(s) with >5%% missing/infinite values and %d well(s) with missing/infinite values",
            quality["source"],
            len(quality["features_dropped_non_finite"]),
            quality["wells_dropped_non_finite"],
        )
    return quality


class SavedArrays:
    """One file's saved arrays, opened only while one is read (a study has more files than a process may keep open).

    Parameters
    ----------
    path : Path
        The npz file `represent_shard` wrote.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def __getitem__(self, key: str) -> np.ndarray:
        with np.load(self.path, allow_pickle=False) as saved:
            return saved[key]


def _gather(arrays, key: str) -> np.ndarray:
    """One array of every file's `key`, in file order."""
    return np.concatenate([a[key] for a in arrays])


def _wells(arrays) -> tuple[np.ndarray, np.ndarray]:
    """The plate and well name of the study's treated wells, read once for every representation's `_ranks`."""
    return _gather(arrays, "well_plates"), _gather(arrays, "well_names")


def _ranks(arrays, wells: tuple[np.ndarray, np.ndarray], name: str) -> np.ndarray:
    """The canonical ranks of the study's treated wells (`wells`) in representation `name` (`well_ranks`), as in memory."""
    return well_ranks(*wells, _gather(arrays, f"content__{name}"))


def _unit_rows(arrays, name: str, rows: list[int]) -> RowFile:
    """Representation `name`'s treated unit rows of every file, in file order, written beside the files' arrays as
    one ``.npy`` file one file's piece at a time (the evaluation reads them by index; the caller removes the file)."""
    key = f"unit__{name}"
    columns = arrays[0][key].shape[1]
    return write_rows(arrays[0].path.with_name(f"{key}.npy"), (a[key] for a in arrays), sum(rows), columns)


def _evaluate(arrays, every: dict[str, pd.DataFrame], settings: ProfilingSettings) -> Evaluation:
    """The evaluation of `evaluate`, from the per-file arrays: one representation at a time, its unit rows read from
    disk by index (`RowFile`), so memory holds a few per-well numbers of the study, not its rows."""
    treatments = _gather(arrays, "treatments")
    wells = _wells(arrays)
    null = ~every["anomaly"][ROLE_COLUMN].isin([TRAIN, VALIDATION]).to_numpy()
    control_values = {name: frame[features_of(frame, settings)].to_numpy(dtype=np.float64) for name, frame in every.items()}
    positive = _gather(arrays, "positive") if settings.positive_controls else None
    rows = [len(a["treatments"]) for a in arrays]
    offsets = np.concatenate([[0], np.cumsum(rows)])
    scored = {}
    for name in control_values:  # every representation of the fit, then the concatenations, as `evaluate` orders them
        unit = _unit_rows(arrays, name, rows)
        if settings.map_negatives == "plate_controls":
            queries = np.concatenate([a[f"negq__{name}"] + offset for a, offset in zip(arrays, offsets)])
            retrieval = replicate_map_against_controls(
                unit, treatments, queries, _gather(arrays, f"negs__{name}"), settings.seed, settings.map_null_size
            )
        else:  # copairs ranks every well against every other: it needs all rows at once
            retrieval = replicate_map(unit[np.arange(len(unit))], treatments, settings.seed, settings.map_null_size)
        scores = _gather(arrays, f"score__{name}")
        null_scores = anomaly_score(control_values[name])[null]
        null_ranks = frame_ranks(every[name][null], settings.plate, control_values[name][null])
        scored[name] = score_representation(
            unit,
            treatments,
            retrieval,
            scores,
            null_scores,
            None if positive is None else scores[positive],
            settings,
            _ranks(arrays, wells, name),
            null_ranks,
        )
        unit.path.unlink()
    profiles, meta = _treatment_level(arrays, list(control_values), settings) if settings.moa else ({}, None)
    for name, frame in profiles.items():
        frame.columns = features_of(every[name], settings)
    return finish_evaluation(scored, profiles, meta, settings)


def _treatment_level(arrays, names, settings) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """`treatment_level` from the per-file arrays: consensus profiles (means from per-file treatment sums; a median or
    MODZ from the replicate rows, read back a block of treatments at a time) and per-treatment moa, compound, batches."""
    labels = [a["moa_treatments"] for a in arrays]
    index = np.concatenate(labels)
    counts = pd.Series(_gather(arrays, "moa_counts"), index=index).groupby(level=0).sum()
    if settings.consensus == "mean":
        profiles = {name: _summed_means(arrays, name, labels, counts) for name in names}
    else:
        members = concatenation_members([name for name in names if not is_concatenation(name)])
        profiles = {name: _consensus_of_saved_rows(arrays, name, members, settings.consensus) for name in names}
    meta = pd.DataFrame(
        {
            "moa": pd.Series(_gather(arrays, "moa_moa"), index=index).groupby(level=0).first(),
            "compound": pd.Series(_gather(arrays, "moa_compound"), index=index).groupby(level=0).first(),
        }
    )
    if settings.batch:
        batches = pd.Series(_gather(arrays, "moa_batches"), index=index).groupby(level=0).agg(lambda b: "|".join(sorted(set("|".join(b).split("|")))))
        meta["batch"] = batches
    return profiles, meta


def _summed_means(arrays, name: str, labels: list[np.ndarray], counts: pd.Series) -> pd.DataFrame:
    """Mean profiles of representation `name`: the sums of one file at a time added into one row per treatment (not
    every file's rows at once), divided by the treatments' well counts."""
    sums = None
    for saved, label in zip(arrays, labels):
        part = saved[f"sum__{name}"]  # one row per treatment the file holds
        sums = np.zeros((len(counts), part.shape[1])) if sums is None else sums
        sums[counts.index.get_indexer(label)] += part
    return pd.DataFrame(sums, index=counts.index).div(counts, axis=0)


def _replicate_rows(saved: SavedArrays, name: str, members: dict[str, list[str]]) -> np.ndarray:
    """One file's MoA-labelled wells in representation `name` (a concatenation joins its members' rows), float64."""
    if name in members:
        return np.hstack([_replicate_rows(saved, member, members) for member in members[name]])
    if name.startswith("curve"):
        return saved[f"rows__{name}"]
    return saved[f"profiles_{name}"][saved["moa_wells"]].astype(np.float64)


def _consensus_of_saved_rows(arrays, name: str, members: dict[str, list[str]], consensus: str) -> pd.DataFrame:
    """`treatment_profiles` of representation `name` over every file's MoA-labelled wells, written once to one
    ``.npy`` file (a file's piece at a time) and read back a block of whole treatments at a time (`RowFile`), so
    memory holds at most about `CONSENSUS_BLOCK_BYTES` of rows (or one treatment's, when it is larger)."""
    treatments = _gather(arrays, "moa_well_treatments")
    pieces = (_replicate_rows(saved, name, members) for saved in arrays)
    first = next(pieces)  # its width sizes the file
    rows = write_rows(
        arrays[0].path.with_name(f"rows__{name}.npy"), itertools.chain([first], pieces), len(treatments), first.shape[1], dtype=np.float64
    )
    order = np.argsort(treatments, kind="stable")
    starts = np.flatnonzero(np.r_[True, treatments[order][1:] != treatments[order][:-1]])  # first well of each treatment
    ends = np.append(starts[1:], len(order))
    budget = max(1, CONSENSUS_BLOCK_BYTES // rows.row_bytes)
    blocks, first = [], 0
    while first < len(starts):
        last = max(first + 1, int(np.searchsorted(ends, starts[first] + budget, side="right")))  # whole treatments within the budget
        wells = order[starts[first] : ends[last - 1]]
        blocks.append(treatment_profiles(rows[wells], treatments[wells], consensus))
        first = last
    rows.path.unlink()
    return pd.concat(blocks)


def _members(parts: PartStore, arrays, selected: list[str], evaluation: Evaluation, settings) -> dict[str, pd.DataFrame]:
    """The wells of the most anomalous treatment, read back from the parts (the explanation's subjects)."""
    if settings.explain_features < 1:
        return {name: pd.DataFrame() for name in BASE}
    group = str(evaluation.hits["anomaly"]["score"].idxmax())
    found = {name: [] for name in BASE}
    for index, shard_arrays in enumerate(arrays):
        metadata = pd.read_parquet(parts.part_path(index))
        members = (metadata[settings.treatment].astype(str) == group).to_numpy()
        if members.any():
            for name in BASE:
                values = pd.DataFrame(shard_arrays[f"profiles_{name}"][members].astype(np.float64), columns=selected)
                found[name].append(pd.concat([metadata[members].reset_index(drop=True), values], axis=1))
    return {name: pd.concat(frames, ignore_index=True) for name, frames in found.items()}


def _curve(arrays, smaller: list[AnomalyProfiler], profiler: AnomalyProfiler, evaluation: Evaluation, settings) -> pd.DataFrame:
    """The control-count curve of `run_profiling`, from the curve profilers' unit rows the second pass kept."""
    rows = []
    treatments = _gather(arrays, "treatments")
    wells = _wells(arrays)
    for number, model in enumerate(smaller):
        name = f"curve{number}"
        unit = _unit_rows(arrays, name, [len(a["treatments"]) for a in arrays])
        scores = {
            "percent_replicating": percent_replicating_of_unit_rows(
                unit,
                treatments,
                settings.null_repeats,
                settings.replicate_percentile,
                settings.seed,
                _ranks(arrays, wells, name),
                settings.null_minimum,
            ).percent_replicating
        }
        unit.path.unlink()
        if settings.moa:
            profiles, meta = _treatment_level(arrays, (name,), settings)
            scores["nsc_accuracy"] = nearest_neighbor_moa(profiles[name], meta["moa"], meta["compound"]).accuracy
        rows.append({"training_controls": model.settings.max_train_controls, "representation": "anomaly", **scores})
    n_train = int((profiler.roles_ == TRAIN).sum())
    keys = ("percent_replicating", "nsc_accuracy") if settings.moa else ("percent_replicating",)
    reference = {key: evaluation.metrics["cellprofiler"][key] for key in keys}
    rows.append({"training_controls": n_train, "representation": "anomaly", **{key: evaluation.metrics["anomaly"][key] for key in keys}})
    rows += [{"training_controls": row["training_controls"], "representation": "cellprofiler", **reference} for row in rows]
    return pd.DataFrame(rows)


def _merge_parts(parts: PartStore, arrays, representations: list[str], selected: list[str], target: Path) -> None:
    """Write the metadata parts and the `representations`' profile arrays as one parquet file, in row groups of about
    `ROWS_PER_GROUP` wells."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = [f"{name}{SEPARATOR}{feature}" for name in representations for feature in selected]
    # The metadata types of all the files, not of the first row group's: a column without a value there (null) takes the
    # later files' text, and whole numbers in some files and fractions in others are fractions throughout.
    unified = pa.unify_schemas([pq.read_schema(parts.part_path(index)) for index in range(len(arrays))], promote_options="permissive")
    metadata_schema = pa.schema(list(unified))
    writer, batch, rows = None, [], 0
    for index, shard_arrays in enumerate(arrays):
        batch.append((pd.read_parquet(parts.part_path(index)), shard_arrays))
        rows += len(batch[-1][0])
        if rows < ROWS_PER_GROUP and index < len(arrays) - 1:
            continue
        metadata = pa.Table.from_pandas(pd.concat([m for m, _ in batch], ignore_index=True), preserve_index=False).cast(metadata_schema)
        columns = []
        for name in representations:
            block = None  # features x wells, filled file by file: each feature's column is one contiguous row (no copy into arrow)
            for start, (frame, saved) in zip(np.cumsum([0] + [len(m) for m, _ in batch]), batch):
                piece = saved[f"profiles_{name}"]
                block = np.empty((piece.shape[1], rows), dtype=piece.dtype) if block is None else block
                block[:, start : start + len(frame)] = piece.T
            columns += [pa.array(column) for column in block]
        table = pa.Table.from_arrays(list(metadata.columns) + columns, names=metadata.column_names + names)
        del columns, block
        if writer is None:
            writer = pq.ParquetWriter(target, table.schema)
        writer.write_table(table.cast(writer.schema))
        batch, rows = [], 0
    writer.close()
