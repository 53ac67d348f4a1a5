"""Train an image classifier: `ImageClassifierEstimator` (the scikit-learn shape) and `fit_classifier`.

Training runs in three steps, each a function of its own:

1. `prepare_training_data` pads and normalises the labelled images, splits off a validation share,
   and gathers the pseudo-labelling pool, the class weights and the covariates;
2. `train_member` trains one network on them from one seed (a deep ensemble trains several);
3. `ImageClassifierEstimator.fit` joins the members and records what was done in an `ImageClassifier`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator

from phenolens.core.errors import PhenolensError
from phenolens.core.estimators import check_is_fitted
from phenolens.core.logging import get_logger
from phenolens.core.seeding import seed_everything, torch_generator
from phenolens.data.containers import ImageSet
from phenolens.nn.adversary import DomainAdversary
from phenolens.nn.backbones import Ensemble, ImageClassifierNet, build_backbone
from phenolens.nn.style_mixing import StyleMixing, attach_style_mixing
from phenolens.training.adversary import OPTION as ADVERSARY_OPTION
from phenolens.training.adversary import AdversaryTraining, domain_codes
from phenolens.training.augment import channel_gains, cutmix, dim, flips_and_rotations, pseudo_label_weight, random_blur
from phenolens.training.classifier import EpochLog, ImageClassifier
from phenolens.training.erasure import OPTION as ERASE_OPTION
from phenolens.training.erasure import erase_within_class, within_class_contrasts
from phenolens.training.loop import Callback, CosineAnnealing, EarlyStopping, History, ReduceLROnPlateau, fit
from phenolens.training.preprocess import ChannelNormalization, CovariateEncoding, intensity_normalized, padded_array, training_quantiles
from phenolens.training.settings import ImageTrainingSettings
from phenolens.training.splits import group_column, stratified_split

log = get_logger(__name__)
ADVERSARY_RAMPED = 0.3  # share of training after which ganin_lambda is above 90 % of its final value


@dataclass
class TrainingData:
    """The tensors one training run feeds its members (all members share them).

    Attributes
    ----------
    train, val : tuple of tensors
        (inputs, labels[, covariates]) of the training and validation images; `val` is None without a validation split.
    pool_inputs, pool_covariates : tensor or None
        The normalised unlabelled images (and their covariates) of the pseudo-labelling pool.
    class_weights : tensor
        (K,) loss weight per class (all 1 unless balanced).
    black : tensor
        (1, C, 1, 1) normalised value of a black pixel: the fill of rotations and dimming.
    size, normalization, encoding, hyperparameters, n_train, n_validation
        What the trained `ImageClassifier` records.
    train_index : ndarray
        Indices into ``images.labelled()`` of the training share (the rest is the validation split).
    domain_names : list of str or None
        With an adversary, the domains (values of its column); `train` then ends with their (N,) codes.
    adversary_images : tuple of tensors or None
        (inputs[, covariates], domain codes) of the images only the adversary trains on, their class unused
        (``adversary_unlabelled="evaluation"``: the validation split and the `unlabelled_for_adversary` images).
    """

    train: tuple[torch.Tensor, ...]
    val: tuple[torch.Tensor, ...] | None
    pool_inputs: torch.Tensor | None
    pool_covariates: torch.Tensor | None
    class_weights: torch.Tensor
    black: torch.Tensor
    size: int
    normalization: ChannelNormalization
    encoding: CovariateEncoding | None
    hyperparameters: dict[str, Any]
    n_train: int
    n_validation: int
    train_index: np.ndarray
    domain_names: list[str] | None = None
    adversary_images: tuple[torch.Tensor, ...] | None = None


def prepare_training_data(images: ImageSet, settings: ImageTrainingSettings, unlabelled_for_adversary: ImageSet | None = None) -> TrainingData:
    """Pad, split, normalise and weight the images of one training run.

    Parameters
    ----------
    images : ImageSet
        Labelled images (and unlabelled ones, label -1, for the pseudo-labelling pool).
    settings : ImageTrainingSettings
        The size, validation share, grouping, covariate, balancing and architecture to prepare for.
    unlabelled_for_adversary : ImageSet, optional
        With ``adversary_unlabelled="evaluation"``, images only the adversary trains on (the held-out fields);
        their labels are never read.

    Returns
    -------
    TrainingData
        Tensors and the normalisation fitted on the training share.

    Raises
    ------
    PhenolensError
        When fewer than 2 classes carry labelled images, a grouping/covariate/adversary column is missing, or the adversary's has one value.
    """
    labelled = images.labelled()
    present = np.unique(labelled.labels)
    if len(labelled) == 0 or len(present) < 2:
        raise PhenolensError(
            f"{images.name}: training needs labelled images of at least 2 classes, found {len(present)} class(es) in {len(labelled)} images"
        )
    size = int(settings.size or images.shapes().max())
    raw = padded_array(labelled, size, images.channel_names)
    if settings.validation_fraction > 0:
        train_index, val_index = stratified_split(
            labelled.labels, settings.validation_fraction, settings.seed, group_column(labelled, settings.group_by), "--validation-fraction"
        )
    else:
        train_index, val_index = np.arange(len(labelled)), np.array([], dtype=int)
    kind, column = settings.intensity_normalization, settings.intensity_column
    reference = training_quantiles(labelled, raw, column, train_index) if kind == "field-quantile" else None
    raw = intensity_normalized(labelled, raw, kind, column, reference=reference)
    normalization = ChannelNormalization.fit(raw[train_index], kind, column, reference)
    encoding = CovariateEncoding.fit(images, settings.covariate) if settings.covariate else None
    tensors = (torch.from_numpy(normalization(raw)), torch.from_numpy(labelled.labels), *([encoding(labelled)] if encoding else []))
    domains, domain_names = domain_codes(labelled, settings.adversary_column) if settings.adversary_column else (None, None)
    adversary_images = None
    if settings.adversary_column and settings.adversary_unlabelled == "evaluation":
        domains, domain_names, adversary_images = _adversary_images(
            labelled, val_index, tensors, unlabelled_for_adversary, normalization, encoding, size, settings.adversary_column
        )
    pool = images.unlabelled() if settings.pseudo_labels else None
    pool_inputs = None
    if pool is not None and len(pool):
        pool_inputs = torch.from_numpy(normalization.inputs(pool, padded_array(pool, size, images.channel_names)))
    counts = np.bincount(labelled.labels[train_index], minlength=len(images.class_names))
    inverse = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max((counts > 0).sum(), 1), 0.0)
    hyperparameters = {
        "in_channels": images.n_channels,
        "n_classes": len(images.class_names),
        "width": settings.width,
        "stem_stride": settings.stem_stride,
        "n_covariates": len(encoding.categories) if encoding else 0,
        "loss": settings.loss,
        **({"blocks": list(settings.blocks)} if settings.blocks else {}),
    }
    return TrainingData(
        train=tuple(t[train_index] for t in tensors) + ((torch.from_numpy(domains[train_index]),) if domains is not None else ()),
        val=tuple(t[val_index] for t in tensors) if len(val_index) else None,
        pool_inputs=pool_inputs,
        pool_covariates=encoding(pool) if encoding and pool_inputs is not None else None,
        class_weights=torch.tensor(inverse if settings.balanced else np.ones(len(counts)), dtype=torch.float32),
        black=torch.from_numpy(normalization.constant(0.0)),
        size=size,
        normalization=normalization,
        encoding=encoding,
        hyperparameters=hyperparameters,
        n_train=int(len(train_index)),
        n_validation=int(len(val_index)),
        train_index=train_index,
        domain_names=domain_names,
        adversary_images=adversary_images,
    )


def _adversary_images(
    labelled: ImageSet,
    val_index: np.ndarray,
    tensors: tuple[torch.Tensor, ...],
    others: ImageSet | None,
    normalization: ChannelNormalization,
    encoding: CovariateEncoding | None,
    size: int,
    column: str,
) -> tuple[np.ndarray, list[str], tuple[torch.Tensor, ...]]:
    """Domain codes of the labelled images over the domains of all the images, the names, and the
    (inputs[, covariates], domains) of the validation split and `others`, whose classes are not read."""
    values = [labelled.meta[column].astype(str).to_numpy(), labelled.meta[column].astype(str).to_numpy()[val_index]]
    inputs, covariates = [tensors[0][val_index]], [tensors[2][val_index]] if encoding else []
    if others is not None and len(others):
        if column not in others.meta:
            raise PhenolensError(f"{others.name}: {ADVERSARY_OPTION} {column!r} is not a metadata column of the adversary's unlabelled images")
        values.append(others.meta[column].astype(str).to_numpy())
        inputs.append(torch.from_numpy(normalization.inputs(others, padded_array(others, size, labelled.channel_names))))
        covariates += [encoding(others)] if encoding else []
    names = sorted(set(np.concatenate(values)))
    codes = [np.searchsorted(names, part).astype(np.int64) for part in values]
    extra_domains = torch.from_numpy(np.concatenate(codes[1:]))
    return codes[0], names, (torch.cat(inputs), *([torch.cat(covariates)] if encoding else []), extra_domains)


def _schedule_callbacks(settings: ImageTrainingSettings, has_validation: bool, description: str) -> list[Callback]:
    """Early stopping and learning-rate schedule: cosine always, plateau and early stopping only with a validation split."""
    # a ramped adversary shapes the embedding only once its strength is near full (90 % at 0.3 of the steps);
    # early stopping on the class loss alone would otherwise restore the weights from before it acted
    first = math.ceil(ADVERSARY_RAMPED * settings.epochs) if settings.adversary_column else 0
    callbacks: list[Callback] = [EarlyStopping(patience=settings.patience, first=first)] if has_validation else []
    if settings.schedule == "cosine":
        callbacks.append(CosineAnnealing(settings.epochs))
    elif has_validation:
        callbacks.append(ReduceLROnPlateau(factor=0.5, patience=max(2, settings.patience // 2)))
    callbacks.append(EpochLog(description))
    return callbacks


def train_member(data: TrainingData, settings: ImageTrainingSettings, member_seed: int, description: str) -> tuple[ImageClassifierNet, History]:
    """Train one network of `settings.arch` on `data` from `member_seed`.

    Each batch is augmented (flips, turns, rotations, optional blur, stain gains and dimming), CutMixed, and joined by as
    many pseudo-labelled pool images once their weight alpha(t) is above 0; the loss of the mixed
    images is the CutMix-weighted sum over both labels, times the class weights. With ``style_mixing`` the training
    forward passes mix the feature statistics of the batch's images after the inner stages (MixStyle,
    `phenolens.nn.style_mixing`); the returned network holds no trace of it.

    Parameters
    ----------
    data : TrainingData
        From `prepare_training_data`.
    settings : ImageTrainingSettings
        Architecture, optimisation, augmentation and pseudo-labelling choices.
    member_seed : int
        Seed of initialisation, augmentation and batching.
    description : str
        Label of the progress bar and log lines.

    Returns
    -------
    tuple of (ImageClassifierNet, History)
        The trained network (in eval mode after training) and its per-epoch record.
    """
    seed_everything(member_seed)
    generator = torch_generator(member_seed)
    model = build_backbone(settings.arch, **data.hyperparameters)
    start, full = settings.pseudo_schedule()
    mix_share = settings.cutmix_probability if settings.augment else 0.0

    def augmented(x: torch.Tensor) -> torch.Tensor:
        if not settings.augment:
            return x
        x = flips_and_rotations(x, generator, settings.max_rotation, fill=data.black)
        x = random_blur(x, generator, settings.blur_augmentation) if settings.blur_augmentation else x
        x = channel_gains(x, generator, settings.channel_gain, data.black) if settings.channel_gain else x
        return dim(x, generator, settings.dimming, data.black) if settings.dimming else x

    adversary = _adversary_training(data, settings, model)

    def train_step(net: ImageClassifierNet, batch, epoch: int) -> torch.Tensor:
        x, y, *cov = batch
        domains = cov.pop() if adversary is not None else None
        x = augmented(x)
        mixed = cutmix(x, y, generator, mix_share)
        alpha = pseudo_label_weight(epoch, start, full, settings.pseudo_weight) if data.pool_inputs is not None else 0.0
        covariates = cov[0] if cov else None
        # one forward pass over the labelled batch, the pseudo-labelled pool images and the adversary's unlabelled images
        inputs, extra_covariates = [mixed.images], [covariates]
        if alpha > 0:
            pick = torch.randint(0, len(data.pool_inputs), (len(x),), generator=generator)
            inputs.append(augmented(data.pool_inputs[pick]))
            extra_covariates.append(data.pool_covariates[pick] if covariates is not None else None)
        if adversary is not None and data.adversary_images is not None:
            chosen = torch.randint(0, len(data.adversary_images[0]), (len(x),), generator=generator)
            inputs.append(augmented(data.adversary_images[0][chosen]))
            extra_covariates.append(data.adversary_images[1][chosen] if covariates is not None else None)
        features = net.embed(torch.cat(inputs), torch.cat(extra_covariates) if covariates is not None else None).split([len(i) for i in inputs])
        labelled_features, pool_loss = features[0], 0.0
        if alpha > 0:
            with torch.no_grad():
                guesses = net.head(features[1]).argmax(1)
            pool_loss = alpha * net.head.loss(features[1], guesses)
        weights = data.class_weights
        own = net.head.loss(labelled_features, mixed.labels, mixed.weight * weights[mixed.labels])
        partner = net.head.loss(labelled_features, mixed.partner_labels, (1.0 - mixed.weight) * weights[mixed.partner_labels])
        if adversary is None:
            return own + partner + pool_loss
        unlabelled = None
        if data.adversary_images is not None:  # their class is never read: the adversary is told the network's prediction
            with torch.no_grad():
                predicted = torch.softmax(net.head(features[-1]), dim=1)
            unlabelled = (features[-1], predicted, data.adversary_images[-1][chosen])
        return own + partner + pool_loss + adversary(labelled_features, mixed, domains, unlabelled)

    def val_step(net: ImageClassifierNet, batch, epoch: int) -> torch.Tensor:
        x, y, *cov = batch
        return net.head.loss(net.embed(x, cov[0] if cov else None), y)

    # MixStyle acts on the training forward passes only (hooks in train mode), and is taken off the trained network
    handles = attach_style_mixing(model, StyleMixing(settings.style_mixing, generator=generator)) if settings.style_mixing else []
    try:
        history = fit(
            model,
            data.train,
            train_step,
            val=data.val,
            val_step=val_step,
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            lr=settings.lr,
            weight_decay=settings.weight_decay,
            callbacks=_schedule_callbacks(settings, data.val is not None, description) + ([adversary] if adversary is not None else []),
            seed=member_seed,
            description=description,
            generators=[generator],
            drop_last=_lone_image_fails(model, data, settings.batch_size),
        )
    finally:
        for handle in handles:
            handle.remove()
    return model, history


def _lone_image_fails(model: ImageClassifierNet, data: TrainingData, batch_size: int) -> bool:
    """Whether a last training batch of one image would stop training: batch norm cannot train on one value per
    channel, which a single image gives where the deepest feature maps are 1 x 1 (crops of 16 px or less at the defaults)."""
    if data.n_train % batch_size != 1 or data.n_train < batch_size:
        return False
    with torch.no_grad():
        side = model.eval().feature_maps(torch.zeros(1, data.train[0].shape[1], data.size, data.size)).shape[-2:]
    return tuple(side) == (1, 1)


def _adversary_training(data: TrainingData, settings: ImageTrainingSettings, model: ImageClassifierNet) -> AdversaryTraining | None:
    """The adversary of `model`'s training (its own optimiser), or None without an adversary column."""
    if data.domain_names is None:
        return None
    n_classes = data.hyperparameters["n_classes"]
    adversary = DomainAdversary(
        model.feature_dim + data.hyperparameters["n_covariates"],
        len(data.domain_names),
        n_classes if settings.adversary_by_class else 0,
        depth=settings.adversary_depth,
    )
    labels, domains = data.train[1], data.train[-1]
    class_domains = torch.zeros(n_classes, len(data.domain_names))
    class_domains[labels, domains] = 1.0
    return AdversaryTraining(
        adversary,
        class_domains,
        settings.adversary_weight,
        settings.adversary_lambda,
        settings.epochs * math.ceil(data.n_train / settings.batch_size),
        loss=settings.adversary_loss,
        steps=settings.adversary_steps,
        lr=settings.adversary_lr or settings.lr,
        reset_every=settings.adversary_reset,
        refit_on=data.train if settings.adversary_refit else None,
    )


def _joined(
    trained: list[tuple[ImageClassifierNet, History]], settings: ImageTrainingSettings, hyperparameters: dict
) -> tuple[torch.nn.Module, dict]:
    """The single network, or an `Ensemble` of the members, and the hyperparameters that rebuild it."""
    if len(trained) == 1:
        return trained[0][0], hyperparameters
    hyperparameters = {"member_architecture": settings.arch, "n_members": len(trained), **hyperparameters}
    ensemble = Ensemble(**hyperparameters)
    ensemble.members = torch.nn.ModuleList(net for net, _ in trained)
    return ensemble.eval(), hyperparameters


class ImageClassifierEstimator(BaseEstimator):
    """An image classifier in the scikit-learn shape: settings in, `fit(images)`, then predict.

    Parameters
    ----------
    settings : ImageTrainingSettings, optional
        How to train (default: `ImageTrainingSettings()`); stored as given.
    description : str
        Label of the progress bar and log lines.

    Attributes
    ----------
    classifier_ : ImageClassifier
        The trained model with its names, crop size and normalisation (what `save` writes).
    history_ : History
        Per-epoch losses of the first network.
    classes_ : list of str
        Class names, in the order of the probability columns.
    channel_names_ : list of str
        The stains the model expects, in order.
    train_index_ : ndarray
        Indices into ``images.labelled()`` of the images the networks trained on (not the validation split).
    unerased_ : ImageClassifier or None
        With ``erase_column``, the same network before erasure (its trained head, no eraser); None otherwise.

    Examples
    --------
    >>> estimator = ImageClassifierEstimator(ImageTrainingSettings(epochs=5)).fit(images)  # doctest: +SKIP
    >>> estimator.predict_proba(images).shape  # doctest: +SKIP
    (120, 3)
    """

    def __init__(self, settings: ImageTrainingSettings | None = None, description: str = "training classifier"):
        self.settings = settings
        self.description = description

    def fit(self, images: ImageSet, unlabelled_for_adversary: ImageSet | None = None) -> ImageClassifierEstimator:
        """Train on the labelled images of `images` (unlabelled ones, label -1, are the pseudo-labelling pool).

        Images are centre-padded to `size` and normalised per channel with statistics of the
        training share. A `validation_fraction` share (stratified, grouped by `group_by`) drives
        early stopping and the plateau schedule. With `members` > 1 member m trains from seed
        `seed + m` on the same split and normalisation (member 0 is the single model).

        Parameters
        ----------
        images : ImageSet
            The training images; not modified.
        unlabelled_for_adversary : ImageSet, optional
            With ``adversary_unlabelled="evaluation"``, images (the held-out fields) that only the adversary
            trains on, beside the validation split; their labels are never read.

        Returns
        -------
        ImageClassifierEstimator
            self, fitted.

        Raises
        ------
        PhenolensError
            When the settings do not suit the images (fewer than 2 labelled classes, unknown columns, a bad layout).
        """
        settings = self.settings if self.settings is not None else ImageTrainingSettings()
        if not isinstance(settings, ImageTrainingSettings):
            raise PhenolensError(f"settings must be an ImageTrainingSettings, got {type(settings).__name__}")
        # refused before any work: a missing column or one with a single value; one value within every class, before training
        erased = domain_codes(images.labelled(), settings.erase_column, ERASE_OPTION)[0] if settings.erase_column else None
        data = prepare_training_data(images, settings, unlabelled_for_adversary)
        contrasts = None if erased is None else within_class_contrasts(erased[data.train_index], data.train[1].numpy(), settings.erase_column)
        count = settings.members
        trained = [
            train_member(data, settings, settings.seed + m, self.description if count == 1 else f"{self.description}, member {m + 1}/{count}")
            for m in range(count)
        ]
        model, hyperparameters = _joined(trained, settings, data.hyperparameters)
        unerased = None
        if contrasts is not None:  # the network before erasure is kept for the comparison (`erasure_metrics`)
            unerased = (copy.deepcopy(model), hyperparameters)
            erase_within_class(model, data.train, contrasts, data.class_weights, settings)
            hyperparameters = {**hyperparameters, "erasure": True}
        start, full = settings.pseudo_schedule()
        record = {
            **settings.to_dict(),
            "hyperparameters": hyperparameters,
            "pseudo_schedule": {"start": start, "full": full, "weight": settings.pseudo_weight},
            "n_train": data.n_train,
            "n_validation": data.n_validation,
            "n_unlabelled": 0 if data.pool_inputs is None else len(data.pool_inputs),
            **({"n_adversary_unlabelled": len(data.adversary_images[0])} if data.adversary_images is not None else {}),
        }
        history = trained[0][1]
        log.info("trained %d %s on %d images (%d epochs run by the first)", count, settings.arch, data.n_train, len(history.epochs))
        names = list(images.class_names), list(images.channel_names)
        self.classifier_ = ImageClassifier(model, *names, data.size, data.normalization, data.encoding, history, record)
        if unerased is not None:
            unerased = ImageClassifier(
                unerased[0], *names, data.size, data.normalization, data.encoding, history, {**record, "hyperparameters": unerased[1]}
            )
        self.history_ = history
        self.classes_ = list(images.class_names)
        self.channel_names_ = list(images.channel_names)
        self.train_index_ = data.train_index
        self.unerased_ = unerased
        return self

    def predict_proba(self, images: ImageSet | np.ndarray) -> np.ndarray:
        """(N, K) class probabilities, columns in `classes_` order.

        Parameters
        ----------
        images : ImageSet or ndarray
            Images with the training stains (an ImageSet's class folders and stains are matched by name).

        Returns
        -------
        ndarray
            Softmax of the logits.
        """
        check_is_fitted(self, "classifier_")
        return self.classifier_.predict_proba(images)

    def predict(self, images: ImageSet | np.ndarray) -> np.ndarray:
        """(N,) predicted class indices into `classes_`.

        Parameters
        ----------
        images : ImageSet or ndarray
            As for `predict_proba`.

        Returns
        -------
        ndarray
            Index of the largest logit per image.
        """
        check_is_fitted(self, "classifier_")
        return self.classifier_.predict(images)

    def save(self, folder, extra: dict | None = None):
        """Write the trained model into `folder` (`ImageClassifier.save` of `classifier_`).

        Parameters
        ----------
        folder, extra
            As for `ImageClassifier.save`.

        Returns
        -------
        Path
            The folder.
        """
        check_is_fitted(self, "classifier_")
        return self.classifier_.save(folder, extra)


def fit_classifier(
    images: ImageSet,
    arch: str | None = None,
    *,
    settings: ImageTrainingSettings | None = None,
    description: str = "training classifier",
    **changes: Any,
) -> ImageClassifier:
    """Train an image classifier on `images` and return it (`ImageClassifierEstimator(settings).fit(images).classifier_`).

    Parameters
    ----------
    images : ImageSet
        Labelled images (and unlabelled ones for pseudo-labelling).
    arch : str, optional
        Shorthand for ``changes["arch"]``.
    settings : ImageTrainingSettings, optional
        The training settings (default: `ImageTrainingSettings()`).
    description : str
        Label of the progress bar and log lines.
    **changes
        Field values that replace those of `settings` (``epochs=5``): a convenience that builds the
        same validated settings object, with no defaults of its own.

    Returns
    -------
    ImageClassifier
        The trained classifier.

    Raises
    ------
    PhenolensError
        For a bad setting (named with its option) or images that cannot be trained on.
    """
    settings = settings if settings is not None else ImageTrainingSettings()
    if arch is not None:
        changes["arch"] = arch
    if changes:
        settings = settings.replace(**changes)
    return ImageClassifierEstimator(settings, description).fit(images).classifier_
