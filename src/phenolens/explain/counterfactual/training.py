"""Train the counterfactual model: the i-ResNet classifier, its ECINN class means and, optionally,
the autoencoder for latent interpolation.

Training reuses the image-classifier machinery: stratified (optionally grouped) splits, per-channel
normalisation of padded crops, flips/turns/rotations, and the one training loop `fit`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from phenolens.core.errors import PhenolensError
from phenolens.core.seeding import seed_everything, torch_generator
from phenolens.data.containers import ImageSet
from phenolens.explain.counterfactual.ecinn import ECINN
from phenolens.explain.counterfactual.interpolation import LatentInterpolation
from phenolens.explain.counterfactual.model import (
    CounterfactualModel,
    autoencoder_hyperparameters,
    iresnet_hyperparameters,
    network_crops,
    select_classes,
)
from phenolens.explain.counterfactual.settings import CounterfactualTrainingSettings
from phenolens.nn.autoencoder import ConvAutoencoder
from phenolens.nn.iresnet import InvertibleResNet
from phenolens.training import ChannelNormalization, EarlyStopping, ReduceLROnPlateau, fit, flips_and_rotations, stratified_split


def train_counterfactual_model(images: ImageSet, settings: CounterfactualTrainingSettings | None = None) -> tuple[CounterfactualModel, dict]:
    """Train the i-ResNet (and the autoencoder) and fit the class means.

    The images of ``settings.classes`` are split (test held out, grouped by ``settings.group_by``);
    the networks train on the rest.

    Parameters
    ----------
    images : ImageSet
        Labelled images.
    settings : CounterfactualTrainingSettings, optional
        Default: ``CounterfactualTrainingSettings()``.

    Returns
    -------
    tuple of (CounterfactualModel, dict)
        The model, and the split: ``train_index``, ``test_index`` (indices into ``data``),
        ``test_sources`` and ``data`` (the selected images).

    Raises
    ------
    PhenolensError
        When the classes, the grouping column or the centring channel are not in the data.
    """
    settings = settings or CounterfactualTrainingSettings()
    seed_everything(settings.seed)
    data = select_classes(images, settings.classes)
    if settings.group_by and settings.group_by not in data.meta:
        raise PhenolensError(
            f"{images.name}: no metadata column {settings.group_by!r} to group the split by; choose one of {', '.join(map(str, data.meta.columns))}"
        )
    if settings.centre_on is not None and settings.centre_on not in data.channel_names:
        raise PhenolensError(
            f"{images.name}: no channel {settings.centre_on!r} to centre the crops on; choose one of {', '.join(data.channel_names)}"
        )
    groups = data.meta[settings.group_by].to_numpy() if settings.group_by else None
    train_index, test_index = stratified_split(data.labels, settings.test_fraction, settings.seed, groups, "--test-fraction")
    fit_groups = None if groups is None else groups[train_index]
    fit_index, val_index = stratified_split(
        data.labels[train_index], settings.validation_fraction, settings.seed, fit_groups, option="--validation-fraction"
    )
    fit_index, val_index = train_index[fit_index], train_index[val_index]
    raw = network_crops(data, settings, data.channel_names)
    normalization = ChannelNormalization.fit(raw[fit_index])
    inputs, labels = torch.from_numpy(normalization(raw).astype(np.float32)), torch.from_numpy(data.labels)
    classifier = InvertibleResNet(**iresnet_hyperparameters(data.n_channels, len(data.class_names), settings))
    augment, generator = _augmenter(settings, normalization)

    def classification_step(model, batch, epoch):
        x, y = batch
        z = model.encode(augment(x) if model.training else x)
        if model.training:
            model.head.observe(z, y)
        return F.cross_entropy(model.classify(z), y)

    history = fit(
        classifier,
        (inputs[fit_index], labels[fit_index]),
        classification_step,
        val=(inputs[val_index], labels[val_index]),
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        callbacks=_stopping(settings),
        seed=settings.seed,
        description="training i-ResNet",
        generators=[generator],
    )
    classifier.converge_spectral_norms()
    ecinn = ECINN(classifier.eval()).fit(inputs[train_index], labels[train_index])
    interpolation, ae_history = None, None
    if settings.autoencoder:
        autoencoder, ae_history = _train_autoencoder(inputs, fit_index, val_index, data.n_channels, settings, normalization)
        interpolation = LatentInterpolation(autoencoder, ecinn.model_).fit(inputs[train_index], labels[train_index])
    split = {
        "train_index": train_index.tolist(),
        "test_index": test_index.tolist(),
        "test_sources": data.meta["source"].iloc[test_index].astype(str).tolist() if "source" in data.meta else [],
    }
    info = {
        "dataset": images.name,
        "classes": list(data.class_names),
        "test_index": split["test_index"],
        "test_sources": split["test_sources"],
        "history": history.epochs,
        "autoencoder_history": None if ae_history is None else ae_history.epochs,
    }
    model = CounterfactualModel(
        classifier=ecinn.model_,
        ecinn=ecinn,
        class_names=list(data.class_names),
        channel_names=list(data.channel_names),
        normalization=normalization,
        data_range=float(raw[train_index].max() - raw[train_index].min()) or 1.0,
        settings=settings,
        interpolation=interpolation,
        info=info,
    )
    return model, {**split, "data": data}


def _stopping(settings: CounterfactualTrainingSettings) -> list:
    """Early stopping and the plateau schedule (the rate halves after patience // 2 epochs) of both networks."""
    return [EarlyStopping(settings.patience), ReduceLROnPlateau(0.5, max(1, settings.patience // 2))]


def _augmenter(settings: CounterfactualTrainingSettings, normalization: ChannelNormalization):
    """Random flips and rotations of a batch, and the generator they draw from (a checkpoint keeps its state)."""
    generator = torch_generator(settings.seed + 1)
    black = torch.from_numpy(normalization.constant(0.0))  # rotated-in corners match the padding
    return (lambda x: flips_and_rotations(x, generator, max_degrees=settings.max_rotation, fill=black)), generator


def _train_autoencoder(
    inputs: torch.Tensor,
    fit_index: np.ndarray,
    val_index: np.ndarray,
    channels: int,
    settings: CounterfactualTrainingSettings,
    normalization: ChannelNormalization,
):
    autoencoder = ConvAutoencoder(**autoencoder_hyperparameters(channels, settings))
    augment, generator = _augmenter(settings, normalization)

    def reconstruction_step(model, batch, epoch):
        (x,) = batch
        x = augment(x) if model.training else x
        return F.mse_loss(model(x), x)

    history = fit(
        autoencoder,
        (inputs[fit_index],),
        reconstruction_step,
        val=(inputs[val_index],),
        epochs=settings.autoencoder_epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        callbacks=_stopping(settings),
        seed=settings.seed,
        description="training autoencoder",
        generators=[generator],
    )
    return autoencoder.eval(), history
