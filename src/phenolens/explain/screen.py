"""Explain a whole screen chunk by chunk: maps into Zarr, per-image rows into parquet parts, checks on a sample.

`explain_screen` picks the images to explain from a listed `ImageSource` (held-out, out-of-fold,
labelled or all, as `explain_model`), cuts them into chunks and maps `explain_chunk` over them with
an `Executor`. Each chunk's maps land in its own region of ``maps.zarr`` (one Zarr v3 array per
method, (N, C, S, S) float32, N the images explained: an image that cannot be decoded under
``skip_bad`` gets no row, `compact_rows`), then its rows are appended to
``per_image.parquet`` (and ``checks.parquet`` for its images in the checks' sample), so a killed
run resumes from the last complete chunk. The faithfulness and randomisation checks run on a
seeded sample of fixed size (`check_sample`). The metrics are reduced from the parts one at a time
(per-class sums), and the report's gallery reads back only the images it shows. A model that
normalises each field by its brightness gets it over all the source's images of the explained
images' fields, in a first pass (`screen_field_statistics`), as `explain_model` does in memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from phenolens.core.executor import Executor
from phenolens.core.logging import get_logger
from phenolens.data.chunks import ImageChunk, ImageChunkSettings, ImageSource, auto_chunk_size, chunk_progress
from phenolens.data.containers import UNLABELLED
from phenolens.explain.attribution import FIRST_IG_STEPS, AttributionSettings, is_spatial_only, occlusion_geometry
from phenolens.explain.faithfulness import spread_curves
from phenolens.explain.images import Explanation, _nanmean, channel_metrics, check_sample, explain_images, per_image_rows
from phenolens.explain.selection import held_out_sources, out_of_fold_parts, sample_positions, select_positions
from phenolens.training.prediction import SKIPPED_PARTS, cached_classifier, read_parts, screen_field_statistics, write_skipped
from phenolens.training.preprocess import FIELD_NORMALIZATIONS, FieldStatistics, field_column, padded_array

progress_log = get_logger("phenolens.progress")  # the estimate is a progress line: shown unless PHENOLENS_LOG says otherwise

MAPS_STORE = "maps.zarr"
PER_IMAGE_FILE = "per_image.parquet"
CHECKS_FILE = "checks.parquet"
MAP_INDEX = "map_index"  # the image's row in every array of maps.zarr


@dataclass(frozen=True)
class ExplainTask:
    """One chunk's work for `explain_chunk` (small: what to read and which model explains each image).

    Attributes
    ----------
    models : tuple of str
        Model folders (one, or the fold models out of fold).
    model_of : ndarray
        Per image of the chunk, its model's index in `models`.
    chunk : ImageChunk
        The images.
    settings : AttributionSettings
        What to compute.
    checked, sanity : ndarray
        Per image of the chunk: in the faithfulness sample, in the randomisation sample.
    field_brightness : dict or None
        The statistics of every field of the explained images (`screen_field_statistics`: brightness, or quantiles with
        ``field-quantile``), with a model that normalises per field.
    """

    models: tuple[str, ...]
    model_of: np.ndarray
    chunk: ImageChunk
    settings: AttributionSettings
    checked: np.ndarray
    sanity: np.ndarray
    field_brightness: FieldStatistics | None = None


@dataclass
class ChunkExplanation:
    """What `explain_chunk` returns.

    Attributes
    ----------
    rows : DataFrame
        `per_image_rows` with ``map_index`` (here the position among the chosen images; `compact_rows` renumbers it), in chunk order.
    maps : dict
        Method -> (len(chunk), C, S, S) float32 maps (NaN for images left out).
    nucleus_masks : ndarray or None
        (len(chunk), S, S) masks, with a nucleus channel.
    checks : DataFrame
        Per checked image: ``map_index``, AUCs, SSIM and curve points per method.
    skipped : DataFrame
        Images left out (``source``, ``reason``).
    """

    rows: pd.DataFrame
    maps: dict[str, np.ndarray]
    nucleus_masks: np.ndarray | None
    checks: pd.DataFrame
    skipped: pd.DataFrame


def explain_chunk(task: ExplainTask) -> ChunkExplanation:
    """Explain one chunk (a shard function: runs in this process or on a Dask worker).

    Parameters
    ----------
    task : ExplainTask
        The chunk, its models, the settings and its part of the checks' samples.

    Returns
    -------
    ChunkExplanation
        Rows, maps and check results of the chunk.
    """
    images, skipped, kept = task.chunk.read()
    size = len(task.chunk)
    rows, checks, maps, masks = [], [], {}, None
    for number, model in enumerate(task.models):
        local = np.flatnonzero(task.model_of[kept] == number)
        if not len(local):
            continue
        classifier = cached_classifier(model).with_field_brightness(task.field_brightness)
        positions = kept[local]
        part = classifier.conform(images.subset(local))
        explanation = explain_images(classifier, part, task.settings, sample=(task.checked[positions], task.sanity[positions]))
        table = per_image_rows(explanation, part.meta, part.unlabelled_name)
        table.insert(0, MAP_INDEX, task.chunk.start + positions)
        rows.append(table)
        checks.append(_check_rows(explanation, task.chunk.start + positions))
        for method, values in explanation.maps.items():
            maps.setdefault(method, np.full((size, *values.shape[1:]), np.nan, np.float32))[positions] = values
        if explanation.nucleus_masks is not None:
            masks = np.zeros((size, *explanation.nucleus_masks.shape[1:]), bool) if masks is None else masks
            masks[positions] = explanation.nucleus_masks
    rows_table = pd.concat(rows, ignore_index=True).sort_values(MAP_INDEX, kind="stable").reset_index(drop=True) if rows else pd.DataFrame()
    checks_table = pd.concat(checks, ignore_index=True).sort_values(MAP_INDEX, kind="stable").reset_index(drop=True) if checks else pd.DataFrame()
    return ChunkExplanation(rows_table, maps, masks, checks_table, skipped)


def _check_rows(explanation: Explanation, map_index: np.ndarray) -> pd.DataFrame:
    """One row per checked image: AUCs and curve points per method, SSIM against the randomised model (NaN outside its sample)."""
    checked = explanation.checked
    columns: dict[str, np.ndarray] = {MAP_INDEX: map_index[checked]}
    sanity_of_checked = explanation.sanity_checked[checked]
    for method, result in explanation.faithfulness.items():
        columns[f"deletion_auc_{method}"] = result["deletion_auc"]
        columns[f"insertion_auc_{method}"] = result["insertion_auc"]
        for k in range(result["deletion_curves"].shape[1]):
            columns[f"deletion_{method}_{k}"] = result["deletion_curves"][:, k]
            columns[f"insertion_{method}_{k}"] = result["insertion_curves"][:, k]
        ssim = np.full(int(checked.sum()), np.nan)
        if method in explanation.sanity_ssim:
            # the randomisation sample is the start of the faithfulness sample whenever sanity_images <= check_images
            ssim[sanity_of_checked] = explanation.sanity_ssim[method][: int(sanity_of_checked.sum())]
        columns[f"sanity_ssim_{method}"] = ssim
    return pd.DataFrame(columns)


def compact_rows(result: ChunkExplanation, chunk_start: int, first_row: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A chunk's per-image and check rows renumbered to the rows of maps.zarr they get: consecutive from `first_row`.

    Parameters
    ----------
    result : ChunkExplanation
        The chunk's rows, ``map_index`` counting the chosen images (`explain_chunk`).
    chunk_start : int
        The chunk's first chosen image.
    first_row : int
        The first row of maps.zarr free for this chunk.

    Returns
    -------
    tuple of DataFrame
        The per-image rows (with ``_chunk_position``, each image's position in the chunk, to take its maps)
        and the check rows.
    """
    if MAP_INDEX not in result.rows:  # no image of the chunk could be decoded
        return result.rows.assign(_chunk_position=np.zeros(0, np.int64)), result.checks
    renumber = pd.Series(np.arange(first_row, first_row + len(result.rows)), index=result.rows[MAP_INDEX].to_numpy())
    rows = result.rows.assign(_chunk_position=result.rows[MAP_INDEX].to_numpy() - chunk_start)
    rows[MAP_INDEX] = renumber.to_numpy()
    checks = result.checks
    if len(checks):
        checks = checks.assign(**{MAP_INDEX: renumber.loc[checks[MAP_INDEX].to_numpy()].to_numpy()})
    return rows, checks


@dataclass
class ScreenExplanation:
    """What `explain_screen` returns.

    Attributes
    ----------
    metrics : dict
        As `Explanation.metrics`, plus the chunks, the checks' sample sizes, the cost estimate and skipped images.
    tables : dict
        Class x channel tables (`Explanation.channel_tables`) over all images.
    gallery : Explanation
        The images the report shows (most and least confident correct images per class) with the
        sample's faithfulness curves and SSIMs.
    skipped : DataFrame
        Images left out (``source``, ``reason``).
    curves : dict or None
        Per method, deletion/insertion curves for each gallery image in gallery order (NaN rows for those
        outside the checks' sample), for the explorer.
    features : ndarray or None
        (n, D) penultimate features of the gallery images (two or more), for the explorer's map.
    """

    metrics: dict
    tables: dict
    gallery: Explanation
    skipped: pd.DataFrame
    curves: dict | None = None
    features: np.ndarray | None = None


def explanation_plan(model: Path, source: ImageSource, settings: AttributionSettings) -> tuple[ImageSource, tuple[str, ...], np.ndarray, dict]:
    """The images to explain and which model explains each (`explain_model`'s choice, on metadata alone).

    Parameters
    ----------
    model : Path
        The model folder.
    source : ImageSource
        The candidates (listed and scanned).
    settings : AttributionSettings
        Supplies `subset`, `max_images` and `seed`.

    Returns
    -------
    tuple
        The chosen source, the model folders, each image's model index, and the fold sizes (out of fold; else empty).

    Raises
    ------
    PhenolensError
        As `explain_model`.
    """
    if settings.subset != "out-of-fold":
        chosen = select_positions(source.meta, source.labels, held_out_sources(model), settings.subset, model)
        chosen = chosen[sample_positions(len(chosen), settings.max_images, settings.seed)]
        return source.subset(chosen), (str(model),), np.zeros(len(chosen), dtype=np.int64), {}
    labelled = source.subset(np.flatnonzero(source.labels != UNLABELLED))
    labelled = labelled.subset(sample_positions(len(labelled), settings.max_images, settings.seed))
    folds, indices = out_of_fold_parts(model, labelled)
    order = np.concatenate(indices)
    model_of = np.concatenate([np.full(len(index), k) for k, index in enumerate(indices)])
    return labelled.subset(order), tuple(str(fold) for fold in folds), model_of, {fold.name: len(index) for fold, index in zip(folds, indices)}


def estimate_cost(classifier, settings: AttributionSettings, count: int, workers: int = 1) -> dict:
    """Forward-pass equivalents per image and a time estimate, measured on one pass of blank inputs of the model's size.

    A backward pass counts as two forward passes. The checks are spread over all images (they run on samples).

    Parameters
    ----------
    classifier : ImageClassifier
        The model (its input size and channels).
    settings : AttributionSettings
        Methods and their options.
    count : int
        Images to explain.
    workers : int
        Chunks run at once.

    Returns
    -------
    dict
        ``passes_per_image`` (total and per part), ``seconds_per_pass`` and ``estimated_seconds``.
    """
    import torch

    side, channels = classifier.size, len(classifier.channel_names)
    window, stride = occlusion_geometry(settings, side)
    windows = ((max(side - window, 0) // stride) + 1) ** 2
    # integrated gradients: the first grid's points when steps adapt (more for images whose maps have not settled)
    path_points = min(settings.n_steps, FIRST_IG_STEPS) + 1 if settings.ig_tolerance > 0 else settings.n_steps
    per_method = {"saliency": 3, "gradcam": 3, "integrated_gradients": 3 * path_points, "occlusion": 1 + channels * windows}
    parts = {method: per_method.get(method, 3) for method in settings.methods}
    parts["channel occlusion"] = 2 + channels + (0 if "gradcam" in settings.methods else 3)
    checked, sanity = (min(count, n) / max(count, 1) for n in (settings.check_images or count, settings.sanity_images))
    parts["faithfulness (sample)"] = round(checked * 2 * (settings.faithfulness_steps + 1) * len(settings.methods), 1)
    parts["randomisation (sample)"] = round(sanity * sum(per_method.get(m, 3) for m in settings.methods), 1)
    blank = torch.zeros(2, channels, side, side)
    covariates = None if classifier.covariate is None else torch.zeros(2, len(classifier.covariate.categories))
    with torch.no_grad():
        classifier.model.eval()(blank, covariates)  # warm-up
        started = time.perf_counter()
        classifier.model(blank, covariates)
        seconds = (time.perf_counter() - started) / 2
    total = float(sum(parts.values()))
    return {
        "passes_per_image": round(total, 1),
        "passes": parts,
        "seconds_per_pass": seconds,
        "estimated_seconds": round(total * seconds * count / max(workers, 1), 1),
    }


def explain_screen(
    model: str | Path,
    source: ImageSource,
    run,
    settings: AttributionSettings | None = None,
    chunks: ImageChunkSettings | None = None,
    executor: Executor | None = None,
) -> ScreenExplanation:
    """Explain the chosen images of a source chunk by chunk into a run folder.

    Parameters
    ----------
    model : path
        A `phenolens images train` folder.
    source : ImageSource
        The candidate images, scanned.
    run : RunWriter
        The entered run writer: receives ``maps.zarr``, ``per_image.parquet`` and ``checks.parquet``.
    settings : AttributionSettings, optional
        What to compute.
    chunks : ImageChunkSettings, optional
        Chunk size and ``skip_bad``.
    executor : Executor, optional
        Where chunks run (default: this process).

    Returns
    -------
    ScreenExplanation
        Metrics, tables, the report's gallery and the skipped images.

    Raises
    ------
    PhenolensError
        As `explain_model`, or for an unreadable image (without ``skip_bad``).
    """
    import zarr

    settings = settings if settings is not None else AttributionSettings()
    chunks = chunks if chunks is not None else ImageChunkSettings()
    executor = executor if executor is not None else Executor()
    model = Path(model)
    classifier = cached_classifier(model)
    chosen, models, model_of, fold_images = explanation_plan(model, source, settings)
    count, side, channels = len(chosen), classifier.size, len(classifier.channel_names)
    checked, sanity = check_sample(count, settings)
    size = chunks.chunk_size or auto_chunk_size(channels, side)
    work = chosen.chunks(size, chunks.skip_bad)
    cost = estimate_cost(classifier, settings, count, executor.workers)
    brightness = screen_field_statistics(model, _field_images(classifier, source, chosen).chunks(size, chunks.skip_bad), executor)
    progress_log.info(
        "explain: %d images of %d x %d x %d px in %d chunks; about %.0f forward passes per image, so roughly %.0f s on %s",
        *(count, channels, side, side, len(work), cost["passes_per_image"], cost["estimated_seconds"], executor.description),
    )
    maps_store, rows_store, checks_store, skipped_store = (run.parts(name) for name in (MAPS_STORE, PER_IMAGE_FILE, CHECKS_FILE, SKIPPED_PARTS))
    group = zarr.open_group(str(maps_store.folder), mode="a")
    group.attrs.update({"methods": list(settings.methods), "channel_names": list(classifier.channel_names), "class_names": classifier.class_names})
    layers = [*settings.methods, *(["nucleus_masks"] if settings.nucleus_channel else [])]
    for name in layers:
        if name not in group:
            shape, dtype, fill = (
                ((count, side, side), "bool", False) if name == "nucleus_masks" else ((count, channels, side, side), "float32", np.nan)
            )
            group.create_array(name, shape=shape, chunks=(size, *shape[1:]), dtype=dtype, fill_value=fill)
    done = rows_store.completed()
    tasks = (
        ExplainTask(
            models,
            model_of[c.start : c.start + len(c)],
            c,
            settings,
            checked[c.start : c.start + len(c)],
            sanity[c.start : c.start + len(c)],
            brightness,
        )
        for c in work
    )
    already = sum(len(c) for c in work if c.index in done)
    # Maps are stored without gaps: an image a chunk could not decode (skip_bad) gets no row, so each chunk's rows
    # start after the explained images of the chunks before it (results come in chunk order; a resumed run counts
    # the rows of the chunks it finished) and the arrays are cut to the images explained at the end.
    explained = np.full(len(work), -1, dtype=np.int64)
    for index in done:
        explained[index] = pq.ParquetFile(rows_store.part_path(index)).metadata.num_rows
    for index, result in chunk_progress(executor.map(explain_chunk, tasks, skip=done), work, "explain", already):
        first = int(explained[:index].sum())
        if (explained[:index] < 0).any():
            raise RuntimeError(f"chunk {index} finished before the chunks ahead of it")  # the executor yields in order
        rows, checks = compact_rows(result, work[index].start, first)
        region = slice(first, first + len(rows))
        kept = rows.pop("_chunk_position").to_numpy()
        for method, values in result.maps.items():
            group[method][region] = values[kept]
        if result.nucleus_masks is not None:
            group["nucleus_masks"][region] = result.nucleus_masks[kept]
        maps_store.mark_done(index, f"{len(rows)} images")
        if len(result.skipped):
            skipped_store.write_table(index, result.skipped)
        if len(checks):
            checks_store.write_table(index, checks)
        rows_store.write_table(index, rows)  # last: the chunk counts as done once its rows exist
        explained[index] = len(rows)
    total = int(explained.sum())
    for name in layers:
        if group[name].shape[0] != total:  # images left out while decoding: no rows of NaN
            group[name].resize((total, *group[name].shape[1:]))
    record = settings.to_dict()
    if fold_images:
        record["explained_by"] = f"out of fold: each image by the one of {len(models)} fold models that never trained on it"
    summary = _Summary(classifier.class_names, classifier.channel_names, settings, record)
    for rows in read_parts(rows_store):
        summary.add(rows)
    checks_table = checks_store.read_table()
    gallery, features = summary.gallery(chosen, classifier.with_field_brightness(brightness), group, checks_table)
    metrics = summary.metrics(checks_table)
    skipped = write_skipped(run, source, skipped_store)
    metrics.update(
        chunks=len(work),
        chunk_size=size,
        check_images=int(checked.sum()),
        sanity_images=int(sanity.sum()),
        checks_sample=f"seeded random sample (seed {settings.seed}) of {int(checked.sum())} images for faithfulness, the first {int(sanity.sum())} "
        "of it for the randomisation check; listed in checks.parquet",
        cost_estimate=cost,
        n_skipped=len(skipped),
        **({"fold_images": fold_images} if fold_images else {}),
    )
    for store in (maps_store, rows_store, checks_store):
        store.finish()
    shown = summary.candidates.sort_values(MAP_INDEX)[MAP_INDEX].to_numpy(dtype=np.int64) if not summary.candidates.empty else np.zeros(0, np.int64)
    return ScreenExplanation(metrics, summary.tables(), gallery, skipped, gallery_curves(shown, checks_table, settings), features)


def _field_images(classifier, source: ImageSource, chosen: ImageSource) -> ImageSource:
    """The images of `source` in the fields of the `chosen` ones: each field's brightness is the median over all of them
    (none when the model does not normalise per field)."""
    if classifier.normalization.intensity not in FIELD_NORMALIZATIONS:
        return chosen.subset(np.zeros(0, dtype=int))
    column = classifier.normalization.intensity_column
    fields = field_column(source, column).astype(str)
    return source.subset(np.isin(fields, field_column(chosen, column).astype(str)))


def gallery_curves(shown: np.ndarray, checks: pd.DataFrame, settings: AttributionSettings) -> dict | None:
    """Deletion/insertion curves of the images `shown` (map indices), NaN rows for those the checks did not sample."""
    if checks.empty:
        return None
    rows = pd.Series(np.arange(len(checks)), index=checks[MAP_INDEX].to_numpy()).reindex(shown).to_numpy(dtype=np.float64)
    return spread_curves(_faithfulness(checks, settings), rows)


class _Summary:
    """Per-class sums of the per-image rows, added a part at a time (memory: the classes, not the images)."""

    def __init__(self, class_names: list[str], channel_names: list[str], settings: AttributionSettings, record: dict) -> None:
        self.class_names, self.channel_names, self.settings, self.record = list(class_names), list(channel_names), settings, record
        self.lookup = {name: k for k, name in enumerate(class_names)}
        self.sums = pd.DataFrame()
        self.counts = pd.DataFrame()
        self.n_images = self.n_labelled = 0
        self.candidates = pd.DataFrame()

    def add(self, rows: pd.DataFrame) -> None:
        """Add one part of ``per_image.parquet``."""
        if rows.empty:
            return
        labels = rows["label"].map(self.lookup).fillna(UNLABELLED).to_numpy(dtype=np.int64)
        predicted = rows["predicted"].map(self.lookup).to_numpy(dtype=np.int64)
        correct = (labels != UNLABELLED) & (predicted == labels)
        summary_class = np.where(labels == UNLABELLED, predicted, labels)
        self.n_images += len(rows)
        self.n_labelled += int((labels != UNLABELLED).sum())
        values = rows[
            [c for c in rows.columns if c.startswith(("occlusion_drop_", "cam_concordance_", "share_", "nucleus_fraction_", "cell_fraction_"))]
        ]
        values = values.where(np.isfinite(values))
        keys = [summary_class, correct]
        sums, counts = values.groupby(keys).sum(), values.notna().groupby(keys).sum()
        self.sums = sums if self.sums.empty else self.sums.add(sums, fill_value=0)
        self.counts = counts if self.counts.empty else self.counts.add(counts, fill_value=0)
        self.candidates = _extremes(pd.concat([self.candidates, rows.assign(_class=summary_class)[correct]]))

    def _means(self, prefix: str, use_correct: bool | None = None) -> pd.DataFrame:
        columns = [c for c in self.sums.columns if c.startswith(prefix)]
        sums, counts = self.sums[columns], self.counts[columns]
        if use_correct is None:
            use_correct = bool(self.n_correct)
        if use_correct:
            keep = sums.index.get_level_values(1).astype(bool)
            sums, counts = sums[keep], counts[keep]
        means = sums.groupby(level=0).sum() / counts.groupby(level=0).sum().where(lambda c: c > 0)
        means.index = [self.class_names[k] for k in means.index]
        return means.reindex([c for c in self.class_names if c in means.index]).rename(columns=lambda c: c[len(prefix) :])

    @property
    def n_correct(self) -> int:
        if self.counts.empty:
            return 0
        first = self.counts.columns[0]
        return int(self.counts[first][self.counts.index.get_level_values(1).astype(bool)].sum())

    def tables(self) -> dict:
        """Class x channel tables as `Explanation.channel_tables` names them, over all images."""
        tables = {"occlusion_logit_drop": self._means("occlusion_drop_"), "cam_concordance": self._means("cam_concordance_")}
        for method in self.settings.methods:
            if not is_spatial_only(method):
                tables[f"{method}_share"] = self._means(f"share_{method}_")
        return tables

    def metrics(self, checks: pd.DataFrame) -> dict:
        """`Explanation.metrics` over all the images, the checks over their sample."""
        tables = self.tables()
        methods = list(self.settings.methods)
        result = {
            "n_images": self.n_images,
            "n_correct": self.n_correct,
            "accuracy": float(self.n_correct / max(self.n_labelled, 1)),
            **channel_metrics(tables),
            "faithfulness": {
                m: {"deletion_auc": float(checks[f"deletion_auc_{m}"].mean()), "insertion_auc": float(checks[f"insertion_auc_{m}"].mean())}
                for m in methods
                if f"deletion_auc_{m}" in checks
            },
            "sanity_ssim": {m: _nanmean(checks[f"sanity_ssim_{m}"].to_numpy()) for m in methods if f"sanity_ssim_{m}" in checks},
            "settings": self.record,
        }
        if self.settings.nucleus_channel and self.n_correct:
            nucleus = self._means("nucleus_fraction_", use_correct=True)
            result["nucleus_reporter_channel"] = self.settings.reporter_channel or next(
                c for c in self.channel_names if c != self.settings.nucleus_channel
            )
            result["nucleus_mass_fraction"] = {m: {cls: _finite(nucleus.loc[cls, m]) for cls in nucleus.index} for m in nucleus.columns}
            cell_columns = [c for c in self.sums.columns if c.startswith("cell_fraction_")]
            correct = self.sums.index.get_level_values(1).astype(bool)
            totals = self.sums.loc[correct, cell_columns].sum() / self.counts.loc[correct, cell_columns].sum().where(lambda c: c > 0)
            result["cell_mass_fraction"] = {c[len("cell_fraction_") :]: _finite(v) for c, v in totals.items()}
        return result

    def gallery(self, chosen: ImageSource, classifier, group, checks: pd.DataFrame) -> tuple[Explanation, np.ndarray | None]:
        """The report's images (the candidates) read back with their maps and the sample's check results, and their
        penultimate features (two or more images; read with their fields, so a field-normalising model sees them as it did)."""
        if self.candidates.empty:  # no correctly classified image: the report shows no gallery
            rows = pd.DataFrame({MAP_INDEX: np.zeros(0, np.int64), "label": [], "target": [], "probability": np.zeros(0)})
            for column in [
                *(f"p_{n}" for n in self.class_names),
                *(f"{k}_{c}" for k in ("occlusion_drop", "cam_concordance") for c in self.channel_names),
            ]:
                rows[column] = np.zeros(0)
        else:
            rows = self.candidates.sort_values(MAP_INDEX)
        index = rows[MAP_INDEX].to_numpy(dtype=np.int64)
        side, channels = classifier.size, self.channel_names
        if len(index):  # maps.zarr rows skip images that could not be decoded: find the chosen images by their source
            first_of_source = pd.Series(np.arange(len(chosen.meta)), index=chosen.meta["source"].astype(str).to_numpy()).groupby(level=0).first()
            positions = first_of_source.loc[rows["source"].astype(str).to_numpy()].to_numpy()
            images = classifier.conform(chosen.subset(positions).chunks(len(positions))[0].read()[0])
            raw = padded_array(images, side, channels)
        else:
            raw = np.zeros((0, len(channels), side, side), np.float32)
        features = classifier.embed(images) if len(index) >= 2 else None
        labels = rows["label"].map(self.lookup).fillna(UNLABELLED).to_numpy(dtype=np.int64)
        proba = rows[[f"p_{name}" for name in self.class_names]].to_numpy()
        nucleus = "nucleus_masks" in group
        explanation = Explanation(
            class_names=self.class_names,
            channel_names=channels,
            raw=raw,
            labels=labels,
            proba=proba,
            targets=rows["target"].map(self.lookup).to_numpy(dtype=np.int64),
            maps={m: group[m].oindex[index] for m in self.settings.methods},
            channel_occlusion=rows[[f"occlusion_drop_{c}" for c in channels]].to_numpy(),
            cam_concordance=rows[[f"cam_concordance_{c}" for c in channels]].to_numpy(),
            faithfulness=_faithfulness(checks, self.settings),
            nucleus_masks=group["nucleus_masks"].oindex[index] if nucleus else None,
            reporter_channel=self.settings.reporter_channel,
            settings=self.record,
        )
        return explanation, features


def _extremes(frame: pd.DataFrame) -> pd.DataFrame:
    """The two most and two least confident rows of each class (what the gallery shows)."""
    ranked = frame.sort_values(["_class", "probability", MAP_INDEX], ascending=[True, False, True])
    by_class = ranked.groupby("_class")
    return pd.concat([by_class.head(2), by_class.tail(2)]).drop_duplicates(MAP_INDEX)


def _faithfulness(checks: pd.DataFrame, settings: AttributionSettings) -> dict:
    """Per method, the `deletion_insertion` result of the checked images, rebuilt from checks.parquet."""
    steps = settings.faithfulness_steps + 1
    result = {}
    for method in settings.methods:
        if f"deletion_auc_{method}" not in checks:
            continue
        result[method] = {
            "fractions": np.linspace(0.0, 1.0, steps),
            "deletion_curves": checks[[f"deletion_{method}_{k}" for k in range(steps)]].to_numpy(),
            "insertion_curves": checks[[f"insertion_{method}_{k}" for k in range(steps)]].to_numpy(),
            "deletion_auc": checks[f"deletion_auc_{method}"].to_numpy(),
            "insertion_auc": checks[f"insertion_auc_{method}"].to_numpy(),
        }
    return result


def _finite(value) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None
