"""Train and evaluate an image classifier: one held-out split or k-fold cross-validation.

Unlabelled images (label -1) never enter a test fold; they join every training fold as the
pseudo-labelling pool. The returned classifier is the one trained without the test images it is
evaluated on (the first fold's model under cross-validation), so explanations can be computed on
images it never saw; under cross-validation every fold's model is kept too, so that each labelled
image can be explained by the model that did not train on it (out of fold).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phenolens.data.containers import UNLABELLED, ImageSet
from phenolens.training.adversary import PROBE_OPTION, adversary_metrics, domain_codes, probe_metrics
from phenolens.training.classifier import ImageClassifier
from phenolens.training.erasure import erasure_metrics
from phenolens.training.fitting import ImageClassifierEstimator
from phenolens.training.metrics import classification_metrics
from phenolens.training.settings import ImageTrainingSettings
from phenolens.training.splits import group_column, stratified_folds, stratified_split

FOLDS_FOLDER = "folds"  # under a cross-validated model folder: fold-1 ... fold-k, each a model with its own held-out list
HELD_OUT_TABLE = "held_out.csv"


@dataclass
class FoldModel:
    """One cross-validation fold: its classifier and the labelled images it never trained on.

    Attributes
    ----------
    classifier : ImageClassifier
        The fold's model.
    test_index : ndarray
        Indices into ``images.labelled()`` of the fold's held-out images.
    trained_index : ndarray
        Indices into ``images.labelled()`` of the images its network trained on (neither held out nor in its validation split).
    unerased : ImageClassifier or None
        With ``erase_column``, the fold's network before erasure.
    """

    classifier: ImageClassifier
    test_index: np.ndarray
    trained_index: np.ndarray
    unerased: ImageClassifier | None = None


@dataclass
class TrainingRun:
    """A trained classifier with its held-out evaluation.

    Attributes
    ----------
    classifier : ImageClassifier
        The model trained without the test images it is evaluated on (the first fold's under cross-validation).
    metrics : dict
        Computed on all out-of-fold predictions under cross-validation, else on the held-out split.
    test_index : ndarray
        Indices into ``images.labelled()`` of the images `classifier` never trained on.
    test_proba : ndarray
        Its probabilities on them.
    fold_metrics : list of dict
        Per-fold metrics.
    folds : list of FoldModel
        Every fold's model under cross-validation (empty otherwise).
    """

    classifier: ImageClassifier
    metrics: dict
    test_index: np.ndarray
    test_proba: np.ndarray
    fold_metrics: list[dict] = field(default_factory=list)
    folds: list[FoldModel] = field(default_factory=list)

    def save(self, folder: str | Path, labelled: ImageSet) -> Path:
        """Save the model into `folder` and every fold's model under ``folder/folds/fold-k``, each with its held-out list.

        Parameters
        ----------
        folder : path
            Destination folder.
        labelled : ImageSet
            ``images.labelled()`` of the images the run was trained on (the indices refer to it).

        Returns
        -------
        Path
            `folder`.
        """
        folder = Path(folder)
        save_with_held_out(self.classifier, labelled, self.test_index, folder)
        for number, fold in enumerate(self.folds, start=1):  # `phenolens images explain --images out-of-fold` reads these
            save_with_held_out(fold.classifier, labelled, fold.test_index, folder / FOLDS_FOLDER / f"fold-{number}")
        return folder


def save_with_held_out(classifier: ImageClassifier, labelled: ImageSet, test_index: np.ndarray, folder: str | Path) -> Path:
    """Save `classifier` into `folder` with the list of labelled images it never trained on.

    The list goes into model.json (``extra.held_out_sources``, and ``extra.held_out_paths``: each as an absolute
    path, read by explain's ``--images heldout``) and into held_out.csv (their metadata and labels).

    Parameters
    ----------
    classifier : ImageClassifier
        The model to save.
    labelled : ImageSet
        The labelled images `test_index` refers to.
    test_index : ndarray
        Indices of the held-out images.
    folder : path
        Destination folder.

    Returns
    -------
    Path
        The folder.
    """
    folder = Path(folder)
    held_out = labelled.meta.iloc[test_index].assign(label=labelled.label_names()[test_index])
    sources = held_out["source"].astype(str).tolist() if "source" in held_out else []
    # also as absolute paths: explain may name the same files from another folder or spelled otherwise
    paths = [os.path.abspath(source) for source in sources]
    classifier.save(folder, extra={"dataset": labelled.name, "held_out_sources": sources, "held_out_paths": paths})
    held_out.to_csv(folder / HELD_OUT_TABLE, index=False)
    return folder


def without_labels(images: ImageSet) -> ImageSet:
    """`images` with every label replaced by UNLABELLED (what an adversary may read of the evaluation fields).

    Parameters
    ----------
    images : ImageSet
        Any images.

    Returns
    -------
    ImageSet
        The same images, channels and metadata, no labels.
    """
    unlabelled = np.full(len(images), UNLABELLED)
    return ImageSet(images.images, unlabelled, list(images.class_names), list(images.channel_names), images.meta, images.unlabelled_name, images.name)


def with_pool(labelled: ImageSet, pool: ImageSet) -> ImageSet:
    """`labelled` followed by the unlabelled `pool` in one ImageSet.

    Parameters
    ----------
    labelled, pool : ImageSet
        Labelled images and unlabelled ones with the same classes and channels.

    Returns
    -------
    ImageSet
        Both, labelled first.
    """
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


def train_and_evaluate(images: ImageSet, settings: ImageTrainingSettings | None = None, **changes: Any) -> TrainingRun:
    """Train on `images` and evaluate on held-out labelled images.

    With ``settings.cv`` >= 2, stratified k-fold cross-validation (grouped by the ``group_by``
    metadata column when given) adds ``cv_macro_f1`` (mean over folds) and ``cv_macro_f1_sd``
    to the metrics; otherwise one stratified split holds out ``test_fraction``. Unlabelled images
    join every training fold as the pseudo-labelling pool. With ``settings.adversary_column`` the
    metrics gain ``adversary``: how well a linear probe reads that column from the embedding of the
    labelled images (`adversary_metrics`), and with ``adversary_baseline`` the same for a model trained
    on the same splits without the adversary, with its macro-F1. With ``settings.erase_column`` the metrics gain
    ``erasure`` (`erasure_metrics`): the same probe after and before erasure, and the macro-F1 before it. With
    ``settings.probe_column`` they gain ``probe`` (`probe_metrics`): the same probe of that column on the (first fold's) network.

    Parameters
    ----------
    images : ImageSet
        Labelled (and unlabelled) images.
    settings : ImageTrainingSettings, optional
        Training and evaluation settings (default: `ImageTrainingSettings()`).
    **changes
        Field values that replace those of `settings` (the same validated object).

    Returns
    -------
    TrainingRun
        The first fold's (or the split's) classifier, metrics, and under cross-validation every fold's model.

    Raises
    ------
    PhenolensError
        For bad settings or images that cannot be split or trained on.
    """
    settings = settings if settings is not None else ImageTrainingSettings()
    if changes:
        settings = settings.replace(**changes)
    if settings.size is None:  # one crop size for every fold's model (not each fold's largest image): out-of-fold maps line up
        settings = settings.replace(size=int(images.shapes().max()))
    labelled, pool = images.labelled(), images.unlabelled()
    groups = group_column(labelled, settings.group_by)
    seed, cv = settings.seed, settings.cv
    if cv:
        folds = stratified_folds(labelled.labels, cv, seed, groups)
    else:
        folds = [stratified_split(labelled.labels, settings.test_fraction, seed, groups, "--test-fraction")]
    if settings.probe_column:  # a missing column or one with a single value is refused before any training
        domain_codes(labelled, settings.probe_column, PROBE_OPTION)
    metrics, fold_metrics, fold_models, out_of_fold = _held_out_runs(labelled, pool, folds, settings, "")
    classifier, test_index = fold_models[0].classifier, fold_models[0].test_index
    if settings.adversary_column:
        baseline, baseline_metrics = None, None
        if settings.adversary_baseline:  # the same splits and seeds without the adversary, for the report's comparison
            baseline_metrics, _, baseline_models, _ = _held_out_runs(
                labelled, pool, folds, settings.replace(adversary_column=None), ", without the adversary"
            )
            baseline = baseline_models[0].classifier
        metrics["adversary"] = adversary_metrics(labelled, settings, classifier, baseline, baseline_metrics, fold_models[0].trained_index)
    if settings.erase_column:
        metrics["erasure"] = erasure_metrics(labelled, settings, fold_models)
    if settings.probe_column:
        metrics["probe"] = probe_metrics(labelled, settings, classifier, fold_models[0].trained_index)
    return TrainingRun(classifier, metrics, test_index, out_of_fold[test_index], fold_metrics, fold_models if cv else [])


def _held_out_runs(
    labelled: ImageSet, pool: ImageSet, folds: list, settings: ImageTrainingSettings, note: str
) -> tuple[dict, list[dict], list[FoldModel], np.ndarray]:
    """Train one model per (train, test) split: the metrics of all held-out predictions, per fold, the fold models and the probabilities."""
    out_of_fold = np.full((len(labelled), len(labelled.class_names)), np.nan)
    fold_metrics, fold_models = [], []
    for number, (train_index, test_index) in enumerate(folds, start=1):
        transductive = settings.adversary_column and settings.adversary_unlabelled == "evaluation"  # the adversary reads them, labels stripped
        held_out = without_labels(labelled.subset(test_index)) if transductive else None
        estimator = ImageClassifierEstimator(settings, f"fold {number}/{len(folds)}{note}").fit(
            with_pool(labelled.subset(train_index), pool), held_out
        )
        proba = estimator.classifier_.predict_proba(labelled.subset(test_index))
        out_of_fold[test_index] = proba
        fold_metrics.append(classification_metrics(labelled.labels[test_index], proba, labelled.class_names))
        fold_models.append(FoldModel(estimator.classifier_, test_index, train_index[estimator.train_index_], estimator.unerased_))
    tested = np.flatnonzero(~np.isnan(out_of_fold[:, 0]))
    metrics = classification_metrics(labelled.labels[tested], out_of_fold[tested], labelled.class_names)
    if settings.cv:
        scores = [m["macro_f1"] for m in fold_metrics]
        metrics.update(cv_folds=settings.cv, cv_macro_f1=float(np.mean(scores)), cv_macro_f1_sd=float(np.std(scores, ddof=1)), fold_macro_f1=scores)
    return metrics, fold_metrics, fold_models, out_of_fold
