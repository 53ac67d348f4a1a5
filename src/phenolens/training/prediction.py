"""Apply a trained image classifier to new images: per-image probabilities, predicted classes,
optional pooled features, and per-group class fractions with, against negative-control groups,
each class's Z-factor and the hits (a screen's readout per well or plate).

`predict` works on images in memory. `predict_screen` streams a whole screen: its `ImageChunk`
objects run through an `Executor` (in this process or on Dask workers, each loading the model once
from its safetensors folder), each chunk's rows are appended as a parquet part of the run, and the
summary is reduced from the parts one at a time, so memory holds one chunk whatever the number of
images, and a killed run resumes from its last complete chunk with the same output. A model that
normalises each field by its brightness (or maps its quantiles) first gets, in a pass of its own over the
same chunks (`screen_field_statistics`), every field's brightness (or quantiles) over all the screen's images, so that a
field cut by a chunk boundary is normalised as in memory, whatever the chunking.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from phenolens.core.errors import PhenolensError
from phenolens.core.executor import Executor, cached
from phenolens.core.logging import get_logger
from phenolens.core.outputs import atomic_write_text
from phenolens.core.parts import PartStore
from phenolens.core.runs import RunWriter
from phenolens.data.chunks import SKIPPED_COLUMNS, ImageChunk, ImageChunkSettings, ImageSource, auto_chunk_size, chunk_progress
from phenolens.data.containers import UNLABELLED, ImageSet, refuse_images_without
from phenolens.data.query import select_rows
from phenolens.data.readers import read_csv_as_written
from phenolens.training.classifier import ImageClassifier
from phenolens.training.metrics import classification_metrics, z_prime_factor
from phenolens.training.preprocess import FIELD_NORMALIZATIONS, FieldStatistics, field_column, field_statistics
from phenolens.training.settings import ImagePredictionSettings
from phenolens.training.splits import GROUP_REMEDY

PREDICTED = "predicted"
LABEL = "label"
CONTROL = "control"
PROBABILITY_PREFIX = "p_"
FRACTION_PREFIX = "fraction_"
EMBEDDING_PREFIX = "e_"
PREDICTIONS_FILE = "predictions.parquet"
EMBEDDINGS_FILE = "embeddings.parquet"
SKIPPED_PARTS = "skipped-parts"  # per-chunk images a chunk could not decode; joined into skipped.csv at the end
SKIPPED_FILE = "skipped.csv"

progress_log = get_logger("phenolens.progress")


@dataclass
class Predictions:
    """What `predict` and `predict_screen` return.

    Attributes
    ----------
    table : DataFrame or None
        One row per image: its metadata (``source`` ...), ``label`` (the known class, empty when
        unlabelled), ``p_<class>`` per class and ``predicted``. None from `predict_screen` (the rows
        are in the run's ``predictions.parquet``).
    embeddings : DataFrame or None
        ``e_0 ... e_{D-1}`` pooled features per image (same rows), when asked for (None from `predict_screen`).
    groups : DataFrame or None
        Per group: ``n_images`` and ``fraction_<class>`` of the predicted classes, when grouped; with
        controls also ``control`` and per class ``z_<class>``, ``q_<class>`` and ``hit_<class>``.
    metrics : dict
        Image and predicted-class counts; accuracy and macro-F1 etc. on the labelled images, if any;
        with controls, each class's Z-factor and number of hits.
    skipped : DataFrame
        Images left out (``source``, ``reason``) with ``skip_bad``.
    field_brightness : dict or None
        From `predict_screen` with a model that normalises per field: each field's statistics over the screen
        (`field_statistics`: brightness, or quantiles with ``field-quantile``).
    """

    table: pd.DataFrame | None
    embeddings: pd.DataFrame | None
    groups: pd.DataFrame | None
    metrics: dict
    skipped: pd.DataFrame | None = None
    field_brightness: FieldStatistics | None = None


def cached_classifier(model: str | Path) -> ImageClassifier:
    """The classifier of a model folder, loaded once per process (per Dask worker) and reused.

    Parameters
    ----------
    model : path
        A `phenolens images train` folder.

    Returns
    -------
    ImageClassifier
        The classifier (shared: do not modify it).
    """
    folder = Path(model).resolve()
    weights = folder / "model.safetensors"
    stamp = weights.stat().st_mtime_ns if weights.is_file() else 0
    return cached(("image-classifier", str(folder), stamp), lambda: ImageClassifier.load(folder))


def prediction_rows(classifier: ImageClassifier, images: ImageSet, settings: ImagePredictionSettings) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The rows of ``predictions.parquet`` (and ``embeddings.parquet``) for some images.

    Parameters
    ----------
    classifier : ImageClassifier
        A trained classifier.
    images : ImageSet
        The images, already in the model's terms (`ImageClassifier.conform`).
    settings : ImagePredictionSettings
        Batch size and whether to embed.

    Returns
    -------
    tuple of (DataFrame, DataFrame or None)
        The prediction rows and the embedding rows.
    """
    classifier = classifier.for_fields_of(images, settings.batch_size)  # the fields' brightness once for both passes
    proba = classifier.predict_proba(images, settings.batch_size).astype(np.float64)
    names = np.asarray(classifier.class_names, dtype=object)
    table = images.meta.copy()
    table[LABEL] = pd.Series(np.where(images.labels == UNLABELLED, None, names[np.maximum(images.labels, 0)]), dtype=object)
    for k, name in enumerate(classifier.class_names):
        table[PROBABILITY_PREFIX + name] = proba[:, k]
    table[PREDICTED] = pd.Series(names[proba.argmax(axis=1)] if len(proba) else [], dtype=object)
    embeddings = None
    if settings.embeddings:
        features = classifier.embed(images, settings.batch_size).astype(np.float32)
        embeddings = pd.DataFrame(features, columns=[f"{EMBEDDING_PREFIX}{d}" for d in range(features.shape[1])])
        if "source" in images.meta:
            embeddings.insert(0, "source", images.meta["source"].astype(str).to_numpy())
    return table, embeddings


def predict(classifier: ImageClassifier, images: ImageSet, settings: ImagePredictionSettings | None = None) -> Predictions:
    """Probabilities, predicted classes (and optionally pooled features and the group readout) of images in memory.

    Parameters
    ----------
    classifier : ImageClassifier
        A trained classifier.
    images : ImageSet
        The images; channels and class labels are matched to the model's by name (`ImageClassifier.conform`).
    settings : ImagePredictionSettings, optional
        Batch size, embeddings, grouping and controls (default: `ImagePredictionSettings()`).

    Returns
    -------
    Predictions
        The tables and metrics.

    Raises
    ------
    PhenolensError
        When the images do not fit the model (channels, classes), the grouping column is missing or the
        controls cannot be told apart.
    """
    settings = settings if settings is not None else ImagePredictionSettings()
    images = classifier.conform(images)
    check_grouping(images.meta, settings, images.name)
    table, embeddings = prediction_rows(classifier, images, settings)
    groups, metrics = summarise([table], classifier.class_names, settings)
    return Predictions(table, embeddings, groups, metrics)


def check_grouping(meta: pd.DataFrame, settings: ImagePredictionSettings, source: str) -> None:
    """Refuse, before any work, a grouping column the images lack and controls that split a group.

    Parameters
    ----------
    meta : DataFrame
        The images' metadata.
    settings : ImagePredictionSettings
        Supplies `group_by` and `controls`.
    source : str
        Named in the messages.

    Raises
    ------
    PhenolensError
        For a missing column, an image without a group, a bad query, no control group, or a group with both control and
        other images.
    """
    if settings.group_by is None:
        return
    if settings.group_by not in meta:
        raise PhenolensError(f"{source}: no metadata column {settings.group_by!r} to group by; choose one of {', '.join(map(str, meta.columns))}")
    # an image without a group would be predicted (n_images) but silently left out of groups.parquet
    refuse_images_without(meta, settings.group_by, source, "to group by", GROUP_REMEDY)
    if settings.controls is None:
        return
    control = select_rows(meta, settings.controls, source, option="--controls")
    share = pd.Series(control).groupby(meta[settings.group_by].to_numpy()).mean()
    mixed = share[(share > 0) & (share < 1)]
    if len(mixed):
        raise PhenolensError(
            f"{source}: --group-by {settings.group_by} group {mixed.index[0]!r} holds both control and other images; "
            "group by a column whose groups are all control or all not (such as the well)"
        )
    if (share == 1).sum() < 2:
        raise PhenolensError(f"{source}: --controls {settings.controls!r} selects {int((share == 1).sum())} group(s); the readout needs two or more")


def summarise(tables: Iterable[pd.DataFrame], class_names: list[str], settings: ImagePredictionSettings) -> tuple[pd.DataFrame | None, dict]:
    """Reduce prediction rows, given a chunk at a time, to the group readout and the metrics.

    Only per-group counts and the labelled images' probabilities are kept between chunks.

    Parameters
    ----------
    tables : iterable of DataFrame
        Prediction rows (`prediction_rows`), e.g. the parts of ``predictions.parquet`` in order.
    class_names : list of str
        The model's classes.
    settings : ImagePredictionSettings
        Grouping, controls and FDR.

    Returns
    -------
    tuple of (DataFrame or None, dict)
        The groups (see `Predictions.groups`) and the metrics.
    """
    counts = pd.DataFrame()
    n_images, predicted_counts = 0, np.zeros(len(class_names), dtype=np.int64)
    labelled_labels, labelled_proba = [], []
    lookup = {name: k for k, name in enumerate(class_names)}
    for table in tables:
        n_images += len(table)
        predicted = table[PREDICTED].map(lookup).to_numpy(dtype=np.int64)
        predicted_counts += np.bincount(predicted, minlength=len(class_names))
        known = table[LABEL].notna().to_numpy()
        if known.any():
            labelled_labels.append(table.loc[known, LABEL].map(lookup).to_numpy(dtype=np.int64))
            labelled_proba.append(table.loc[known, [PROBABILITY_PREFIX + name for name in class_names]].to_numpy())
        if settings.group_by is not None:
            one_hot = pd.DataFrame(np.eye(len(class_names), dtype=np.int64)[predicted], columns=class_names)
            one_hot["n_images"] = 1
            if settings.controls is not None:
                one_hot[CONTROL] = select_rows(table, settings.controls, PREDICTIONS_FILE, option="--controls").astype(np.int64)
            part = one_hot.groupby(table[settings.group_by].to_numpy(), sort=False).sum()
            counts = part if counts.empty else counts.add(part, fill_value=0)
    metrics: dict = {"n_images": n_images, "predicted_counts": {name: int(count) for name, count in zip(class_names, predicted_counts)}}
    if labelled_labels:
        metrics["labelled"] = classification_metrics(np.concatenate(labelled_labels), np.concatenate(labelled_proba), class_names)
    if settings.group_by is None:
        return None, metrics
    counts = counts.sort_index()
    groups = pd.DataFrame({settings.group_by: counts.index.to_numpy(), "n_images": counts["n_images"].to_numpy(dtype=np.int64)})
    for name in class_names:
        groups[FRACTION_PREFIX + name] = counts[name].to_numpy(dtype=np.float64) / groups["n_images"].to_numpy()
    metrics["n_groups"] = len(groups)
    if settings.controls is not None:
        groups[CONTROL] = counts[CONTROL].to_numpy() == counts["n_images"].to_numpy()
        metrics.update(control_readout(groups, class_names, settings.fdr))
    return groups, metrics


def control_readout(groups: pd.DataFrame, class_names: list[str], fdr: float) -> dict:
    """Each class's Z-factor and hits: groups whose class fraction differs from the control groups'.

    For class k, the control groups' fractions give a mean and a standard deviation; every other
    group gets z = (fraction - mean) / sd, a two-sided normal p-value and a Benjamini-Hochberg q-value
    over the non-control groups; a hit has q < `fdr`. The Z-factor compares the non-control groups'
    fractions with the control groups' (1 - 3 (sd_s + sd_c) / |mean_s - mean_c|).
    Adds columns ``z_<class>``, ``q_<class>`` and ``hit_<class>`` to `groups` (NaN/False for controls).

    Parameters
    ----------
    groups : DataFrame
        ``fraction_<class>`` and ``control`` per group; modified in place.
    class_names : list of str
        The classes.
    fdr : float
        The false discovery rate.

    Returns
    -------
    dict
        ``z_factor`` and ``hits`` (class -> value), ``n_control_groups`` and ``fdr``.

    Raises
    ------
    PhenolensError
        With fewer than two control groups.
    """
    from scipy.stats import false_discovery_control, norm

    control = groups[CONTROL].to_numpy(dtype=bool)
    if control.sum() < 2:
        raise PhenolensError(f"the control readout needs two or more control groups, got {int(control.sum())}; widen --controls")
    z_factors, hits = {}, {}
    for name in class_names:
        values = groups[FRACTION_PREFIX + name].to_numpy()
        reference = values[control]
        spread = reference.std(ddof=1)
        gap = values - reference.mean()
        z = np.divide(gap, spread, out=np.where(gap == 0, 0.0, np.copysign(np.inf, gap)), where=spread > 0)
        q = np.full(len(values), np.nan)
        if (~control).any():
            q[~control] = false_discovery_control(2.0 * norm.sf(np.abs(z[~control])), method="bh")
        groups[f"z_{name}"] = np.where(control, np.nan, z)
        groups[f"q_{name}"] = q
        groups[f"hit_{name}"] = ~control & (q < fdr)
        hits[name] = int(groups[f"hit_{name}"].sum())
        z_factors[name] = z_prime_factor(values[~control], reference) if (~control).sum() >= 2 else None
    return {"z_factor": z_factors, "hits": hits, "n_control_groups": int(control.sum()), "fdr": fdr}


@dataclass(frozen=True)
class PredictionTask:
    """One chunk's work for `predict_chunk` (small: what to read, not the pixels).

    Attributes
    ----------
    model : str
        The model folder.
    chunk : ImageChunk
        The images.
    settings : ImagePredictionSettings
        How to predict.
    field_brightness : dict or None
        Every field's statistics over the screen (`screen_field_statistics`: brightness, or quantiles with ``field-quantile``),
        with a model that normalises per field.
    """

    model: str
    chunk: ImageChunk
    settings: ImagePredictionSettings
    field_brightness: FieldStatistics | None = None


def predict_chunk(task: PredictionTask) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame]:
    """Predict one chunk (a shard function: runs in this process or on a Dask worker).

    Parameters
    ----------
    task : PredictionTask
        The model, the chunk and the settings.

    Returns
    -------
    tuple of (DataFrame, DataFrame or None, DataFrame)
        Prediction rows, embedding rows (None also when no image of the chunk could be decoded) and the images
        left out (``source``, ``reason``).
    """
    classifier = cached_classifier(task.model).with_field_brightness(task.field_brightness)
    images, skipped, _ = task.chunk.read()
    if not len(images):  # none of the chunk's images could be decoded (skip_bad): a part without rows
        names = [PROBABILITY_PREFIX + name for name in classifier.class_names]
        return pd.DataFrame(columns=[*images.meta.columns, LABEL, *names, PREDICTED]), None, skipped
    table, embeddings = prediction_rows(classifier, classifier.conform(images), task.settings)
    return table, embeddings, skipped


def chunk_field_statistics(shard: tuple[str, ImageChunk]) -> tuple[np.ndarray, np.ndarray]:
    """The field and `image_statistics` (per-channel mean intensity or quantiles) of each padded image of one chunk (a shard function).

    Images the chunk cannot decode are left out exactly as the main pass leaves them out (``skip_bad``),
    or stop the run with the same one-line error.

    Parameters
    ----------
    shard : tuple of (str, ImageChunk)
        The model folder and the chunk (small: what to read).

    Returns
    -------
    tuple of ndarray
        (n,) fields and (n, C) means or (n, C, L) quantiles (`ImageClassifier.field_statistics`).
    """
    model, chunk = shard
    classifier = cached_classifier(model)
    return classifier.field_statistics(classifier.conform(chunk.read()[0]))


def screen_field_statistics(model: str | Path, chunks: list[ImageChunk], executor: Executor) -> FieldStatistics | None:
    """Every field's table (brightness, or quantiles with ``field-quantile``) over all the images of `chunks`, read a chunk at a
    time (None unless the model normalises per field).

    The first pass of a streamed screen: its result (fields x channels, small) goes with every chunk,
    so each image is normalised by the median over its whole field as in memory, whatever the chunking.
    It is recomputed, not stored, on ``--resume``: the same images give the same table.

    Parameters
    ----------
    model : path
        The model folder.
    chunks : list of ImageChunk
        The chunks the main pass reads.
    executor : Executor
        Where chunks run.

    Returns
    -------
    dict or None
        Field -> its statistics (`phenolens.training.preprocess.field_brightness`): (C,) brightness, or (C, L)
        quantiles with ``field-quantile``.

    Raises
    ------
    PhenolensError
        When the images carry no field column, or a chunk holds an unreadable image (without ``skip_bad``).
    """
    classifier = cached_classifier(model)
    if classifier.normalization.intensity not in FIELD_NORMALIZATIONS:
        return None
    started = time.perf_counter()
    parts = [(np.zeros(0, dtype=str), np.zeros((0, *classifier.field_statistics_shape)))]  # no chunks: an empty table
    shards = ((str(model), chunk) for chunk in chunks)
    parts += [result for _, result in chunk_progress(executor.map(chunk_field_statistics, shards), chunks, "field statistics")]
    fields = np.concatenate([part[0] for part in parts])
    brightness = field_statistics(np.concatenate([part[1] for part in parts]), fields)
    progress_log.info("field statistics: %d fields from %d images in %.1f s", len(brightness), len(fields), time.perf_counter() - started)
    return brightness


def chunk_size_for(source: ImageSource, classifier: ImageClassifier, chunks: ImageChunkSettings) -> int:
    """The chunk size in force: the one asked for, else `auto_chunk_size` of the network input.

    Parameters
    ----------
    source : ImageSource
        The images.
    classifier : ImageClassifier
        Supplies the input size.
    chunks : ImageChunkSettings
        Supplies `chunk_size`.

    Returns
    -------
    int
        Images per chunk.
    """
    return chunks.chunk_size or auto_chunk_size(len(source.channel_names) or 1, classifier.size)


def predict_screen(
    model: str | Path,
    source: ImageSource,
    run,
    settings: ImagePredictionSettings | None = None,
    chunks: ImageChunkSettings | None = None,
    executor: Executor | None = None,
) -> Predictions:
    """Predict every image of a source chunk by chunk into a run folder (``predictions.parquet`` parts).

    Chunks a resumed run already finished are skipped; the summary is reduced from all the parts.

    Parameters
    ----------
    model : path
        A `phenolens images train` folder.
    source : ImageSource
        The images, scanned (`ImageSource.scan`).
    run : RunWriter
        The entered run writer; receives ``predictions.parquet`` (and ``embeddings.parquet``) as parts.
    settings : ImagePredictionSettings, optional
        Batch size, embeddings, grouping and controls.
    chunks : ImageChunkSettings, optional
        Chunk size and ``skip_bad``.
    executor : Executor, optional
        Where chunks run (default: this process).

    Returns
    -------
    Predictions
        Groups, metrics and the skipped images (the rows are in the run folder).

    Raises
    ------
    PhenolensError
        When the images do not fit the model, lack a group or (for a model normalising per field) a field, or a chunk holds
        an unreadable image (without ``skip_bad``).
    """
    settings = settings if settings is not None else ImagePredictionSettings()
    chunks = chunks if chunks is not None else ImageChunkSettings()
    executor = executor if executor is not None else Executor()
    classifier = cached_classifier(model)
    check_grouping(source.meta, settings, source.location or source.name)
    if classifier.normalization.intensity in FIELD_NORMALIZATIONS:
        field_column(source, classifier.normalization.intensity_column)  # the whole screen's images without a field, before any chunk
    work = source.chunks(chunk_size_for(source, classifier, chunks), chunks.skip_bad)
    brightness = screen_field_statistics(model, work, executor)
    table_parts = run.parts(PREDICTIONS_FILE)
    embedding_parts = run.parts(EMBEDDINGS_FILE) if settings.embeddings else None
    skipped_parts = run.parts(SKIPPED_PARTS)
    done = table_parts.completed()
    tasks = (PredictionTask(str(model), chunk, settings, brightness) for chunk in work)
    already = sum(len(chunk) for chunk in work if chunk.index in done)
    for index, (table, embeddings, skipped) in chunk_progress(executor.map(predict_chunk, tasks, skip=done), work, "predict", already):
        if embedding_parts is not None and embeddings is not None:
            embedding_parts.write_table(index, embeddings)
        if len(skipped):
            skipped_parts.write_table(index, skipped)
        table_parts.write_table(index, table)  # last: a chunk counts as done once its prediction part exists
    skipped = write_skipped(run, source, skipped_parts)
    groups, metrics = summarise(read_parts(table_parts), classifier.class_names, settings)
    for store in (table_parts, embedding_parts):
        if store is not None:
            store.finish()
    metrics["n_skipped"] = len(skipped)
    metrics["chunks"] = len(work)
    return Predictions(None, None, groups, metrics, skipped, brightness)


def write_skipped(run: RunWriter, source: ImageSource, store: PartStore) -> pd.DataFrame:
    """Write the images the scan and the chunks left out to the run's ``skipped.csv``, then remove the chunks' parts.

    Called once every chunk is done. The file is written (atomically) before the parts are removed, and a run
    resumed after that reads it back, so a kill at any point leaves the same ``skipped.csv`` and ``n_skipped``.

    Parameters
    ----------
    run : RunWriter
        The entered run writer.
    source : ImageSource
        The screen; its ``skipped`` lists the images the scan left out.
    store : PartStore
        The chunks' skipped images (``SKIPPED_PARTS``).

    Returns
    -------
    pandas.DataFrame
        The skipped images, one row each (no file is written when there is none).
    """
    path = run.file(SKIPPED_FILE)
    if path.is_file():  # a resumed run killed after writing it: the parts are already gone
        skipped = read_csv_as_written(path, SKIPPED_COLUMNS)
    else:
        skipped = pd.concat([source.skipped, store.read_table()], ignore_index=True)
        if len(skipped):
            atomic_write_text(path, skipped.to_csv(index=False))
    shutil.rmtree(store.folder)
    return skipped


def read_parts(store: PartStore) -> Iterable[pd.DataFrame]:
    """The table parts of a store one at a time, in shard order (memory: one part); the one part-by-part reader
    of the screen paths (predict here, explain's per-image rows).

    Parameters
    ----------
    store : PartStore
        The store (`RunWriter.parts`).

    Yields
    ------
    pandas.DataFrame
        One part's rows, shard after shard (not by file name, which stops sorting past 999,999 shards).
    """
    for path in store.paths():
        yield pd.read_parquet(path)


def predicted_sample(
    classifier: ImageClassifier, source: ImageSource, limit: int, seed: int = 0, skip_bad: bool = False, brightness: FieldStatistics | None = None
):
    """A seeded random sample of at most `limit` images of a screen, with their class probabilities and penultimate features.

    What a report's cell map shows of a screen too large to draw whole; memory is bounded by `limit`.

    Parameters
    ----------
    classifier : ImageClassifier
        The model.
    source : ImageSource
        The screen's images.
    limit : int
        Most images drawn.
    seed : int
        Seed of the sample.
    skip_bad : bool
        Leave out images that cannot be read (as the run did).
    brightness : dict, optional
        Every field's statistics over the screen (`Predictions.field_brightness`: brightness, or quantiles with ``field-quantile``),
        with a model that normalises per field.

    Returns
    -------
    tuple of (ImageSet, ndarray, ndarray)
        The images (in the model's terms), their (n, K) probabilities and (n, D) features.
    """
    index = np.sort(np.random.default_rng(seed).choice(len(source), size=min(limit, len(source)), replace=False))
    classifier = classifier.with_field_brightness(brightness)
    images = classifier.conform(source.subset(index).chunks(max(1, len(index)), skip_bad)[0].read()[0])
    classifier = classifier.for_fields_of(images)  # without a table: the sample's own fields, once for both passes
    return images, classifier.predict_proba(images), classifier.embed(images)
