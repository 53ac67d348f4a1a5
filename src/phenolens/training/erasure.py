"""Closed-form erasure of a metadata column (well, plate) from a trained classifier's embedding: LEACE.

After training, `erase_within_class` embeds the unaugmented training images, fits LEACE (Belrose et al. 2023,
`concept_erasure.LeaceFitter`) to the within-class contrasts of the column, inserts the eraser as a fixed affine
layer at the end of the network's embedding (`phenolens.nn.erasure.AffineEraser`) and refits the head on the
erased embeddings. After it, no linear reader of the training embeddings tells the column's values apart within a
class better than a constant (their means within each class are equal), while the class itself is not the
concept erased. `erasure_metrics` measures it with the probe of the adversary (`embedding_probes`).

Why within-class contrasts, not the one-hot of the column: when the values nest in the classes (each well
holds one treatment), equal means per well force equal means per class, so erasing the one-hot column would
erase the class. The contrast z_w = 1[value = w] - share of w in the image's class sums to zero within each
class and is uncorrelated with any function of the class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from phenolens.core.errors import PhenolensError
from phenolens.data.containers import ImageSet
from phenolens.nn.erasure import AffineEraser
from phenolens.training.adversary import domain_codes, embed_tensors, embedding_probes
from phenolens.training.metrics import classification_metrics

if TYPE_CHECKING:
    from phenolens.nn.backbones import ImageClassifierNet
    from phenolens.training.settings import ImageTrainingSettings

OPTION = "--erase-column"
HEAD_REFIT_STEPS = 200  # full-batch Adam steps of the head on the erased training embeddings (declared in benchmarks/images_adversary.py)


def within_class_contrasts(domains: np.ndarray, classes: np.ndarray, column: str = "") -> np.ndarray:
    """Each image's within-class contrast of its domain: one-hot of the domain minus the domains' shares in its class.

    Parameters
    ----------
    domains : ndarray
        (N,) domain codes (0 .. W-1).
    classes : ndarray
        (N,) class codes.
    column : str
        The column's name, for the error message.

    Returns
    -------
    ndarray
        (N, W) float64; every class's rows sum to zero over its images, column by column.

    Raises
    ------
    PhenolensError
        When no class holds two domains (nothing within a class to erase), naming the option.
    """
    domains, classes = np.asarray(domains), np.asarray(classes)
    one_hot = (domains[:, None] == np.arange(domains.max() + 1)[None]).astype(np.float64)
    contrasts = one_hot.copy()
    spanning = 0
    for label in np.unique(classes):
        members = classes == label
        contrasts[members] -= one_hot[members].mean(axis=0)
        spanning += len(np.unique(domains[members])) > 1
    if not spanning:
        raise PhenolensError(
            f"{OPTION} {column!r} has one value within every class of the training images: there is nothing within a class to erase "
            "(erasing it would erase the class); choose a column that varies within a class, such as well or plate"
        )
    return contrasts


def fit_leace(features: torch.Tensor, contrasts: np.ndarray):
    """LEACE's eraser of `contrasts` from `features`, the library's defaults, in float64.

    Parameters
    ----------
    features : Tensor
        (N, D) embeddings.
    contrasts : ndarray
        (N, W) concept (`within_class_contrasts`).

    Returns
    -------
    concept_erasure.LeaceEraser
        The fitted eraser (float64).
    """
    from concept_erasure import LeaceFitter

    return LeaceFitter.fit(features.double(), torch.from_numpy(contrasts)).eraser


def refit_head(
    model: ImageClassifierNet, features: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor, settings: ImageTrainingSettings
) -> None:
    """Refit `model.head` in place on fixed features: `HEAD_REFIT_STEPS` full-batch Adam steps from its weights, the training loss.

    Parameters
    ----------
    model : ImageClassifierNet
        The network (only its head changes).
    features : Tensor
        (N, D) features the head reads (the erased embeddings of the training images).
    labels : Tensor
        (N,) their classes.
    class_weights : Tensor
        (K,) the training's loss weight per class.
    settings : ImageTrainingSettings
        Its learning rate and weight decay.
    """
    optimizer = torch.optim.Adam(model.head.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    for _ in range(HEAD_REFIT_STEPS):
        optimizer.zero_grad(set_to_none=True)
        model.head.loss(features, labels, class_weights[labels]).backward()
        optimizer.step()
    model.eval()


def erase_within_class(
    model: ImageClassifierNet, train: tuple[torch.Tensor, ...], contrasts: np.ndarray, class_weights: torch.Tensor, settings: ImageTrainingSettings
) -> None:
    """Fit LEACE to `contrasts` on the training images' embedding, insert it into `model`, refit its head.

    Parameters
    ----------
    model : ImageClassifierNet
        A trained single network without an eraser; changed in place (its ``eraser`` set, its head refitted).
    train : tuple of tensors
        (inputs, labels[, covariates]) of the unaugmented training images.
    contrasts : ndarray
        (N, W) their `within_class_contrasts`.
    class_weights : Tensor
        (K,) the training's loss weight per class.
    settings : ImageTrainingSettings
        The run's learning rate and weight decay.
    """
    inputs, labels, *covariates = train
    features = embed_tensors(model, inputs, covariates[0] if covariates else None)
    model.eraser = AffineEraser.from_leace(fit_leace(features, contrasts))
    refit_head(model, model.eraser(features), labels, class_weights, settings)


def erasure_metrics(labelled: ImageSet, settings: ImageTrainingSettings, folds: list) -> dict:
    """How predictable the erased column is from the embedding of `labelled`, after and before erasure, and both macro-F1s.

    Parameters
    ----------
    labelled : ImageSet
        The labelled images of the run.
    settings : ImageTrainingSettings
        The run's settings (``erase_column``, grouping, seed).
    folds : list of FoldModel
        Each fold's erased classifier, its network before erasure (``unerased``), test and trained indices; the probes read
        the first fold's, the macro-F1 before erasure is over every fold's held-out images.

    Returns
    -------
    dict
        ``column``, ``domains``, ``probe_groups``, ``with_erasure`` and ``without_erasure`` (`embedding_probes` of the first
        fold's model after and before erasure), ``macro_f1_without_erasure`` and ``head_refit_steps``.
    """
    domains, names = domain_codes(labelled, settings.erase_column, OPTION)
    proba = np.full((len(labelled), len(labelled.class_names)), np.nan)
    for fold in folds:
        proba[fold.test_index] = fold.unerased.predict_proba(labelled.subset(fold.test_index))
    tested = np.flatnonzero(~np.isnan(proba[:, 0]))
    before = classification_metrics(labelled.labels[tested], proba[tested], labelled.class_names)
    first = folds[0]
    return {
        "column": settings.erase_column,
        "domains": names,
        "method": "leace",
        "head_refit_steps": HEAD_REFIT_STEPS,
        "probe_groups": settings.group_by,
        "with_erasure": embedding_probes(first.classifier, labelled, domains, settings, first.trained_index),
        "without_erasure": embedding_probes(first.unerased, labelled, domains, settings, first.trained_index),
        "macro_f1_without_erasure": before["macro_f1"],
    }
