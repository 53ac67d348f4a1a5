"""Train, save and load the counterfactual models: an i-ResNet classifier with its ECINN class
means, and optionally a convolutional autoencoder for latent interpolation.

Training reuses the image-classifier machinery: stratified (optionally grouped) splits, per-channel
normalisation of padded crops, flips/turns/rotations, and the one training loop `fit`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from phenolens.core.errors import PhenolensError
from phenolens.core.outputs import atomic_write_bytes
from phenolens.core.seeding import seed_everything, torch_generator
from phenolens.data.containers import UNLABELLED, ImageSet
from phenolens.explain.counterfactual.ecinn import ECINN
from phenolens.explain.counterfactual.interpolation import LatentInterpolation
from phenolens.nn.autoencoder import ConvAutoencoder
from phenolens.nn.iresnet import InvertibleResNet
from phenolens.nn.weights import ModelCard, load_model, save_model
from phenolens.training import ChannelNormalization, EarlyStopping, ReduceLROnPlateau, fit, flips_and_rotations, padded_array, stratified_split

MEANS_FILE = "ecinn_means.safetensors"
AUTOENCODER_FOLDER = "autoencoder"


@dataclass
class TrainingSettings:
    """What `train_counterfactual_model` does; every field is saved with the weights."""

    size: int = 64
    blocks: list[int] = field(default_factory=lambda: [4, 4])  # BBBC013 test accuracy, seed 0: [2, 2] 0.80-0.86, [3, 3] 0.94, [4, 4] 0.97
    hidden: list[int] = field(default_factory=lambda: [16, 32])
    # Channel (e.g. DNA) each crop is registered on; `phenolens.data.nuclei.centred_on_nuclei` says why ECINN needs it.
    centre_on: str | None = None
    pad_channels: int = 0  # see `train_counterfactual_model`: padding makes f^-1(z + alpha Delta) leave the image space
    coeff: float = 0.8
    n_power_iterations: int = 5
    inverse_iterations: int = 100
    # Relative residual per block. At 1e-3 the counterfactuals lie within 4e-5 (BBBC021) and 1.9e-4 (BBBC013) of the
    # data range of a tightly converged inverse (1/90 and 1/20 of an 8-bit grey level; same predictions) in 3-4 fixed-point
    # iterations per block instead of 4-5 at 1e-4 (BBBC021, measured alone: 23 -> 15 ms per counterfactual).
    # `explain --inverse-tolerance` sets it.
    inverse_tolerance: float = 1e-3
    epochs: int = 80
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.0
    patience: int = 20
    max_rotation: float = 10.0
    test_fraction: float = 0.25
    validation_fraction: float = 0.15
    group_by: str | None = None
    autoencoder: bool = True
    autoencoder_epochs: int = 40
    latent_dim: int = 64
    seed: int = 0


@dataclass
class CounterfactualModel:
    """A trained i-ResNet + ECINN (and optional autoencoder interpolation), ready to explain images."""

    classifier: InvertibleResNet
    ecinn: ECINN
    class_names: list[str]
    channel_names: list[str]
    normalization: ChannelNormalization
    data_range: float
    settings: TrainingSettings
    interpolation: LatentInterpolation | None = None
    info: dict = field(default_factory=dict)  # dataset, split, histories, training metrics

    @property
    def size(self) -> int:
        return self.settings.size

    def tensor(self, images: ImageSet | np.ndarray) -> torch.Tensor:
        """Padded, checked, normalised network input (N, C, size, size)."""
        return torch.from_numpy(self.normalization(network_crops(images, self.settings, self.channel_names)).astype(np.float32))

    def to_raw(self, inputs: np.ndarray) -> np.ndarray:
        """Model input units back to raw intensities."""
        return inputs * self.normalization.std[None, :, None, None] + self.normalization.mean[None, :, None, None]

    def class_index(self, name: str) -> int:
        if name not in self.class_names:
            raise PhenolensError(f"unknown target class {name!r}; the model knows {', '.join(self.class_names)}")
        return self.class_names.index(name)

    def labels_for(self, images: ImageSet) -> np.ndarray:
        """Labels of `images` as indices of this model's classes (-1 for other or no labels)."""
        names = images.label_names()
        lookup = {name: index for index, name in enumerate(self.class_names)}
        return np.array([lookup.get(name, UNLABELLED) for name in names], dtype=np.int64)

    def test_subset(self, images: ImageSet) -> ImageSet:
        """The held-out test images of the training run, taken from the same data it was trained on."""
        data = select_classes(images, self.class_names)
        index = np.asarray(self.info.get("test_index", []), dtype=int)
        sources = self.info.get("test_sources", [])
        if not len(index) or index.max() >= len(data):
            raise PhenolensError(f"{images.name}: the checkpoint's test split does not fit these images; pass --dataset or --images to explain")
        test = data.subset(index)
        if sources and "source" in test.meta and test.meta["source"].astype(str).tolist() != sources:
            raise PhenolensError(f"{images.name}: the images differ from those the checkpoint was trained on; pass --dataset or --images to explain")
        return test

    def save(self, folder: str | Path) -> Path:
        """model.safetensors/json (i-ResNet), ecinn_means.safetensors, autoencoder/ (when trained)."""
        from safetensors.torch import save

        folder = Path(folder)
        card = ModelCard(
            architecture="iresnet",
            hyperparameters=_iresnet_hyperparameters(len(self.channel_names), len(self.class_names), self.settings),
            class_names=list(self.class_names),
            channel_names=list(self.channel_names),
            normalization={**self.normalization.to_dict(), "size": self.size, "data_range": self.data_range},
            extra={"settings": vars(self.settings), **self.info},
        )
        save_model(self.classifier, folder, card)
        means = {"true": self.ecinn.means_true_.contiguous(), "predicted": self.ecinn.means_predicted_.contiguous()}
        atomic_write_bytes(folder / MEANS_FILE, save(means))
        if self.interpolation is not None:
            ae_card = ModelCard(
                architecture="conv-autoencoder",
                hyperparameters=_autoencoder_hyperparameters(len(self.channel_names), self.settings),
                class_names=list(self.class_names),
                channel_names=list(self.channel_names),
                normalization=card.normalization,
                extra={"class_means": self.interpolation.means_.tolist(), "steps": self.interpolation.steps},
            )
            save_model(self.interpolation.autoencoder, folder / AUTOENCODER_FOLDER, ae_card)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> CounterfactualModel:
        """Rebuild a model written by `save`; errors name the file at fault."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        classifier, card = load_model(folder, expected_architecture="iresnet")
        means_path = folder / MEANS_FILE
        try:
            means = load_file(means_path)
            ecinn = ECINN(classifier)
            ecinn.means_true_, ecinn.means_predicted_ = means["true"], means["predicted"]
        except (FileNotFoundError, SafetensorError, OSError, KeyError) as error:
            raise PhenolensError(
                f"{means_path}: missing or unreadable ECINN class means ({error}); retrain with `phenolens counterfactual train`"
            ) from None
        try:
            settings = TrainingSettings(**card.extra.get("settings", {}))
        except TypeError as error:
            raise PhenolensError(f"{folder / 'model.json'}: training settings from another phenolens version ({error}); retrain the model") from None
        interpolation = None
        if (folder / AUTOENCODER_FOLDER).is_dir():
            autoencoder, ae_card = load_model(folder / AUTOENCODER_FOLDER, expected_architecture="conv-autoencoder")
            interpolation = LatentInterpolation(autoencoder, classifier, steps=int(ae_card.extra.get("steps", 10)))
            interpolation.means_ = torch.tensor(ae_card.extra["class_means"], dtype=torch.float32)
        info = {k: v for k, v in card.extra.items() if k != "settings"}
        return cls(
            classifier=classifier,
            ecinn=ecinn,
            class_names=card.class_names,
            channel_names=card.channel_names,
            normalization=ChannelNormalization.from_dict(card.normalization),
            data_range=float(card.normalization["data_range"]),
            settings=settings,
            interpolation=interpolation,
            info=info,
        )


def select_classes(images: ImageSet, classes: list[str] | None) -> ImageSet:
    """The labelled images of `classes` (all classes when None), relabelled 0..K-1 in that order."""
    labelled = images.labelled()
    classes = list(classes or labelled.class_names)
    unknown = [c for c in classes if c not in labelled.class_names]
    if unknown:
        raise PhenolensError(f"{images.name}: classes {unknown} are not in the data; known classes: {', '.join(labelled.class_names)}")
    if len(classes) < 2:
        raise PhenolensError(f"{images.name}: a counterfactual needs at least 2 classes, got {classes}")
    names = labelled.label_names()
    chosen = labelled.subset(np.isin(names, classes))
    relabelled = np.array([classes.index(n) for n in chosen.label_names()], dtype=np.int64)
    return ImageSet(chosen.images, relabelled, classes, chosen.channel_names, chosen.meta, name=chosen.name)


def train_counterfactual_model(
    images: ImageSet, classes: list[str] | None = None, settings: TrainingSettings | None = None
) -> tuple[CounterfactualModel, dict]:
    """Split `images` (test held out, grouped by `settings.group_by`), train the i-ResNet (and the
    autoencoder) on the rest, fit the class means; return the model and the split (indices into the
    selected images, plus the sources of the test images)."""
    settings = settings or TrainingSettings()
    seed_everything(settings.seed)
    data = select_classes(images, classes)
    if settings.group_by and settings.group_by not in data.meta:
        raise PhenolensError(
            f"{images.name}: no metadata column {settings.group_by!r} to group the split by; choose one of {', '.join(map(str, data.meta.columns))}"
        )
    if settings.centre_on is not None and settings.centre_on not in data.channel_names:
        raise PhenolensError(
            f"{images.name}: no channel {settings.centre_on!r} to centre the crops on; choose one of {', '.join(data.channel_names)}"
        )
    groups = data.meta[settings.group_by].to_numpy() if settings.group_by else None
    train_index, test_index = stratified_split(data.labels, settings.test_fraction, settings.seed, groups)
    fit_index, val_index = stratified_split(
        data.labels[train_index], settings.validation_fraction, settings.seed, None if groups is None else groups[train_index]
    )
    fit_index, val_index = train_index[fit_index], train_index[val_index]
    raw = network_crops(data, settings, data.channel_names)
    normalization = ChannelNormalization.fit(raw[fit_index])
    inputs, labels = torch.from_numpy(normalization(raw).astype(np.float32)), torch.from_numpy(data.labels)
    classifier = InvertibleResNet(**_iresnet_hyperparameters(data.n_channels, len(data.class_names), settings))
    augment = _augmenter(settings, normalization)

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
        callbacks=[EarlyStopping(settings.patience), ReduceLROnPlateau(0.5, max(1, settings.patience // 2))],
        seed=settings.seed,
        description="training i-ResNet",
    )
    classifier.converge_spectral_norms()
    classifier.eval()
    ecinn = ECINN(classifier).fit(inputs[train_index], labels[train_index])
    interpolation, ae_history = None, None
    if settings.autoencoder:
        autoencoder, ae_history = _train_autoencoder(inputs, fit_index, val_index, data.n_channels, settings, normalization)
        interpolation = LatentInterpolation(autoencoder, classifier).fit(inputs[train_index], labels[train_index])
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
        classifier=classifier,
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


def network_crops(images: ImageSet | np.ndarray, settings: TrainingSettings, channel_names: list[str]) -> np.ndarray:
    """Raw (N, C, size, size) crops as the i-ResNet sees them: registered on the nucleus when
    `settings.centre_on` names a channel, centre-padded to `settings.size`."""
    centre_on = None if settings.centre_on is None else channel_names.index(settings.centre_on)
    return padded_array(images, settings.size, channel_names, centre_on)


def _augmenter(settings: TrainingSettings, normalization: ChannelNormalization):
    generator = torch_generator(settings.seed + 1)
    black = torch.from_numpy(normalization.constant(0.0))  # rotated-in corners match the padding
    return lambda x: flips_and_rotations(x, generator, max_degrees=settings.max_rotation, fill=black)


def _train_autoencoder(
    inputs: torch.Tensor, fit_index: np.ndarray, val_index: np.ndarray, channels: int, settings: TrainingSettings, normalization: ChannelNormalization
):
    autoencoder = ConvAutoencoder(**_autoencoder_hyperparameters(channels, settings))
    augment = _augmenter(settings, normalization)

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
        callbacks=[EarlyStopping(settings.patience), ReduceLROnPlateau(0.5, max(1, settings.patience // 2))],
        seed=settings.seed,
        description="training autoencoder",
    )
    return autoencoder.eval(), history


def _iresnet_hyperparameters(channels: int, n_classes: int, settings: TrainingSettings) -> dict:
    return {
        "in_channels": channels,
        "n_classes": n_classes,
        "image_size": settings.size,
        "blocks": list(settings.blocks),
        "hidden": list(settings.hidden),
        "pad_channels": settings.pad_channels,
        "coeff": settings.coeff,
        "n_power_iterations": settings.n_power_iterations,
        "inverse_iterations": settings.inverse_iterations,
        "inverse_tolerance": settings.inverse_tolerance,
    }


def _autoencoder_hyperparameters(channels: int, settings: TrainingSettings) -> dict:
    return {"in_channels": channels, "image_size": settings.size, "latent_dim": settings.latent_dim}
