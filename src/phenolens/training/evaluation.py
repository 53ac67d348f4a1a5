"""Train and evaluate an image classifier: one held-out split or k-fold cross-validation.

Unlabelled images (label -1) never enter a test fold; they join every training fold as the
pseudo-labelling pool. The returned classifier is the one trained without the test images it is
evaluated on (the first fold's model under cross-validation), so explanations can be computed on
images it never saw; under cross-validation every fold's model is kept too, so that each labelled
image can be explained by the model that did not train on it (out of fold).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from phenolens.data.containers import ImageSet
from phenolens.training.classifier import ImageClassifier, fit_classifier
from phenolens.training.metrics import classification_metrics
from phenolens.training.splits import group_column, stratified_folds, stratified_split


@dataclass
class FoldModel:
    """One cross-validation fold: its classifier and the labelled images it never trained on."""

    classifier: ImageClassifier
    test_index: np.ndarray


@dataclass
class TrainingRun:
    """A trained classifier with its held-out evaluation.

    `test_index` indexes `images.labelled()`: the images `classifier` never trained on.
    `test_proba` are its probabilities on them. `metrics` are computed on all out-of-fold
    predictions under cross-validation, else on the held-out split. `folds` holds every fold's
    model under cross-validation (empty otherwise).
    """

    classifier: ImageClassifier
    metrics: dict
    test_index: np.ndarray
    test_proba: np.ndarray
    fold_metrics: list[dict] = field(default_factory=list)
    folds: list[FoldModel] = field(default_factory=list)


def with_pool(labelled: ImageSet, pool: ImageSet) -> ImageSet:
    """`labelled` followed by the unlabelled `pool` in one ImageSet."""
    if len(pool) == 0:
        return labelled
    return ImageSet(
        list(labelled.images) + list(pool.images),
        np.concatenate([labelled.labels, pool.labels]),
        list(labelled.class_names),
        list(labelled.channel_names),
        pd.concat([labelled.meta, pool.meta], ignore_index=True),
        labelled.unlabelled_name,
        labelled.name,
    )


def train_and_evaluate(
    images: ImageSet, cv: int = 0, test_fraction: float = 0.2, group_by: str | None = None, seed: int = 0, **fit_options
) -> TrainingRun:
    """Train on `images` and evaluate on held-out labelled images.

    `cv` >= 2 runs stratified (grouped by the `group_by` metadata column when given) k-fold
    cross-validation and adds `cv_macro_f1` (mean over folds) and `cv_macro_f1_sd` to the metrics;
    otherwise one stratified split holds out `test_fraction`. `fit_options` go to `fit_classifier`.
    """
    labelled, pool = images.labelled(), images.unlabelled()
    groups = group_column(labelled, group_by)
    folds = stratified_folds(labelled.labels, cv, seed, groups) if cv else [stratified_split(labelled.labels, test_fraction, seed, groups)]
    out_of_fold = np.full((len(labelled), len(images.class_names)), np.nan)
    fold_metrics, fold_models, first = [], [], None
    for number, (train_index, test_index) in enumerate(folds, start=1):
        classifier = fit_classifier(
            with_pool(labelled.subset(train_index), pool), group_by=group_by, seed=seed, description=f"fold {number}/{len(folds)}", **fit_options
        )
        proba = classifier.predict_proba(labelled.subset(test_index))
        out_of_fold[test_index] = proba
        fold_metrics.append(classification_metrics(labelled.labels[test_index], proba, images.class_names))
        fold_models.append(FoldModel(classifier, test_index))
        first = first or (classifier, test_index, proba)
    tested = np.flatnonzero(~np.isnan(out_of_fold[:, 0]))
    metrics = classification_metrics(labelled.labels[tested], out_of_fold[tested], images.class_names)
    if cv:
        scores = [m["macro_f1"] for m in fold_metrics]
        metrics.update(cv_folds=cv, cv_macro_f1=float(np.mean(scores)), cv_macro_f1_sd=float(np.std(scores, ddof=1)), fold_macro_f1=scores)
    classifier, test_index, proba = first
    return TrainingRun(classifier, metrics, test_index, proba, fold_metrics, fold_models if cv else [])
