"""Apply a trained image classifier to new images: per-image probabilities, predicted classes,
optional pooled features, and per-group class fractions (a screen's readout per well or plate).

`predict` runs the network over chunks of `batch_size` images, so its working memory is one
chunk's input whatever the number of images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from phenolens.core.errors import PhenolensError
from phenolens.data.containers import UNLABELLED, ImageSet
from phenolens.training.classifier import ImageClassifier
from phenolens.training.metrics import classification_metrics
from phenolens.training.settings import ImagePredictionSettings

PREDICTED = "predicted"
LABEL = "label"
PROBABILITY_PREFIX = "p_"
FRACTION_PREFIX = "fraction_"
EMBEDDING_PREFIX = "e_"


@dataclass
class Predictions:
    """What `predict` returns.

    Attributes
    ----------
    table : DataFrame
        One row per image: its metadata (``source`` ...), ``label`` (the known class, empty when
        unlabelled), ``p_<class>`` per class and ``predicted``.
    embeddings : DataFrame or None
        ``e_0 ... e_{D-1}`` pooled features per image (same rows), when asked for.
    groups : DataFrame or None
        Per group: ``n_images`` and ``fraction_<class>`` of the predicted classes, when grouped.
    metrics : dict
        Image and predicted-class counts; accuracy and macro-F1 etc. on the labelled images, if any.
    """

    table: pd.DataFrame
    embeddings: pd.DataFrame | None
    groups: pd.DataFrame | None
    metrics: dict


def group_fractions(table: pd.DataFrame, column: str, class_names: list[str]) -> pd.DataFrame:
    """Per value of `column`: the number of images and the share predicted as each class.

    Parameters
    ----------
    table : DataFrame
        A `Predictions.table`.
    column : str
        The grouping column (a metadata column of the images).
    class_names : list of str
        The model's classes (one fraction column each, in this order).

    Returns
    -------
    DataFrame
        `column`, ``n_images`` and ``fraction_<class>`` columns, one row per group, sorted by group.
    """
    one_hot = pd.DataFrame({FRACTION_PREFIX + name: (table[PREDICTED] == name).astype(float) for name in class_names})
    one_hot[column] = table[column].to_numpy()
    grouped = one_hot.groupby(column, sort=True)
    fractions = grouped.mean()
    fractions.insert(0, "n_images", grouped.size())
    return fractions.reset_index()


def predict(classifier: ImageClassifier, images: ImageSet, settings: ImagePredictionSettings | None = None) -> Predictions:
    """Probabilities, predicted classes (and optionally pooled features and group fractions) of `images`.

    Parameters
    ----------
    classifier : ImageClassifier
        A trained classifier.
    images : ImageSet
        The images; channels and class labels are matched to the model's by name (`ImageClassifier.conform`).
    settings : ImagePredictionSettings, optional
        Batch size, embeddings and grouping (default: `ImagePredictionSettings()`).

    Returns
    -------
    Predictions
        The tables and metrics.

    Raises
    ------
    PhenolensError
        When the images do not fit the model (channels, classes) or the grouping column is missing.
    """
    settings = settings if settings is not None else ImagePredictionSettings()
    images = classifier.conform(images)
    if settings.group_by is not None and settings.group_by not in images.meta:
        raise PhenolensError(
            f"{images.name}: no metadata column {settings.group_by!r} to group by; choose one of {', '.join(map(str, images.meta.columns))}"
        )
    proba = classifier.predict_proba(images, settings.batch_size)
    names = np.asarray(classifier.class_names, dtype=object)
    table = images.meta.copy()
    table[LABEL] = np.where(images.labels == UNLABELLED, None, names[np.maximum(images.labels, 0)]) if len(names) else None
    for k, name in enumerate(classifier.class_names):
        table[PROBABILITY_PREFIX + name] = proba[:, k]
    table[PREDICTED] = names[proba.argmax(axis=1)]
    embeddings = None
    if settings.embeddings:
        features = classifier.embed(images, settings.batch_size)
        embeddings = pd.DataFrame(features, columns=[f"{EMBEDDING_PREFIX}{d}" for d in range(features.shape[1])])
        if "source" in images.meta:
            embeddings.insert(0, "source", images.meta["source"].to_numpy())
    groups = group_fractions(table, settings.group_by, classifier.class_names) if settings.group_by else None
    metrics: dict = {
        "n_images": len(images),
        "predicted_counts": {name: int((table[PREDICTED] == name).sum()) for name in classifier.class_names},
    }
    known = images.labels != UNLABELLED
    if known.any():
        metrics["labelled"] = classification_metrics(images.labels[known], proba[known], classifier.class_names)
    if groups is not None:
        metrics["n_groups"] = len(groups)
    return Predictions(table, embeddings, groups, metrics)
