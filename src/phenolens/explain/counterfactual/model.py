"""The trained counterfactual model: an i-ResNet classifier with its ECINN class means, and optionally
a convolutional autoencoder for latent interpolation; how it sees images, and how it is saved and loaded.

`phenolens.explain.counterfactual.training` trains it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from phenolens.core.errors import PhenolensError
from phenolens.core.outputs import atomic_write_bytes
from phenolens.data.containers import UNLABELLED, ImageSet, class_by_name
from phenolens.explain.counterfactual.ecinn import ECINN
from phenolens.explain.counterfactual.interpolation import LatentInterpolation
from phenolens.explain.counterfactual.settings import CounterfactualTrainingSettings
from phenolens.nn.iresnet import InvertibleResNet
from phenolens.nn.weights import ModelCard, load_model, read_tensors, save_model
from phenolens.training import ChannelNormalization, padded_array

MEANS_FILE = "ecinn_means.safetensors"
AUTOENCODER_FOLDER = "autoencoder"


@dataclass
class CounterfactualModel:
    """A trained i-ResNet + ECINN (and optional autoencoder interpolation), ready to explain images.

    Attributes
    ----------
    classifier : InvertibleResNet
        The i-ResNet, its head set to the ECINN true-class means (the fitted ``ecinn.model_``).
    ecinn : ECINN
        The fitted class latent means.
    class_names, channel_names : list of str
        The two classes (in output order) and the stains (in input order).
    normalization : ChannelNormalization
        Per-channel standardisation of the padded crops.
    data_range : float
        Intensity range of the training crops (reconstruction errors are a fraction of it).
    settings : CounterfactualTrainingSettings
        How the model was trained.
    interpolation : LatentInterpolation or None
        The fitted autoencoder alternative, when trained.
    info : dict
        Dataset, split, training histories and metrics.
    """

    classifier: InvertibleResNet
    ecinn: ECINN
    class_names: list[str]
    channel_names: list[str]
    normalization: ChannelNormalization
    data_range: float
    settings: CounterfactualTrainingSettings
    interpolation: LatentInterpolation | None = None
    info: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Height = width of the network's input crops.

        Returns
        -------
        int
            ``settings.size``.
        """
        return self.settings.size

    def tensor(self, images: ImageSet | np.ndarray) -> torch.Tensor:
        """Padded, checked, normalised network input.

        Parameters
        ----------
        images : ImageSet or numpy.ndarray
            Images with the model's channels in its order (see `match_images`).

        Returns
        -------
        torch.Tensor
            (N, C, size, size) float32.

        Raises
        ------
        PhenolensError
            On a wrong channel count or non-finite pixels.
        """
        return torch.from_numpy(self.normalization(network_crops(images, self.settings, self.channel_names)).astype(np.float32))

    def to_raw(self, inputs: np.ndarray) -> np.ndarray:
        """Model input units back to raw intensities.

        Parameters
        ----------
        inputs : numpy.ndarray
            (N, C, H, W) standardised images.

        Returns
        -------
        numpy.ndarray
            The same images in raw intensity units.
        """
        return inputs * self.normalization.std[None, :, None, None] + self.normalization.mean[None, :, None, None]

    def class_index(self, name: str) -> int:
        """The output index of class `name`.

        Parameters
        ----------
        name : str
            A class name of the model.

        Returns
        -------
        int
            Its index.

        Raises
        ------
        PhenolensError
            When the model has no such class.
        """
        return class_by_name(name, self.class_names)

    def labels_for(self, images: ImageSet) -> np.ndarray:
        """Labels of `images` as indices of this model's classes, matched by name.

        Parameters
        ----------
        images : ImageSet
            Labelled or unlabelled images.

        Returns
        -------
        numpy.ndarray
            (N,) int64 class indices; -1 for unlabelled images and classes the model does not know.
        """
        names = images.label_names()
        lookup = {name: index for index, name in enumerate(self.class_names)}
        return np.array([lookup.get(name, UNLABELLED) for name in names], dtype=np.int64)

    def match_images(self, images: ImageSet, unknown_classes: str = "error") -> ImageSet:
        """`images` with their channels in the model's order and their classes checked by name.

        Channels are matched by name, never by position: a set named DNA,GFP for a GFP,DNA model
        is reordered; a set whose names differ from the model's is refused. Classes (a folder's
        sub-folders, a manifest's labels) are matched by name too: a class the model does not know
        is refused, or (``unknown_classes="unlabelled"``) kept as unlabelled images.

        Parameters
        ----------
        images : ImageSet
            Images from a dataset, folder or manifest.
        unknown_classes : {"error", "unlabelled"}
            What to do with images of a class the model does not know.

        Returns
        -------
        ImageSet
            The images, channels reordered to the model's; labels still name classes.

        Raises
        ------
        PhenolensError
            One line naming the channels or the class at fault and the model's.
        """
        if list(images.channel_names) != list(self.channel_names):
            if sorted(images.channel_names) != sorted(self.channel_names):
                raise PhenolensError(
                    f"{images.name}: the images' channels ({', '.join(images.channel_names)}) are not the model's "
                    f"({', '.join(self.channel_names)}); name them with --channels, in any order"
                )
            images = _reordered_channels(images, [images.channel_names.index(name) for name in self.channel_names])
        present = [name for name in images.class_names if (images.label_names() == name).any()]
        unknown = [name for name in present if name not in self.class_names]
        if unknown and unknown_classes == "error":
            raise PhenolensError(
                f"{images.name}: class {unknown[0]!r} is not one of the model's classes ({', '.join(self.class_names)}); rename or remove it, "
                "or pass --unknown-classes unlabelled to explain its images without a label"
            )
        if unknown:
            keep = np.isin(images.label_names(), self.class_names)
            return dataclasses.replace(images, labels=np.where(keep, images.labels, UNLABELLED))
        return images

    def test_subset(self, images: ImageSet) -> ImageSet:
        """The held-out test images of the training run, taken from the same data it was trained on.

        Parameters
        ----------
        images : ImageSet
            The images the model was trained on (same dataset, folder or manifest).

        Returns
        -------
        ImageSet
            The test images, in the model's class order.

        Raises
        ------
        PhenolensError
            When the split does not fit these images.
        """
        data = select_classes(images, self.class_names)
        index = np.asarray(self.info.get("test_index", []), dtype=int)
        sources = self.info.get("test_sources", [])
        if not len(index) or index.max() >= len(data):
            raise PhenolensError(f"{images.name}: the checkpoint's test split does not fit these images; pass --dataset, --folder or --manifest")
        test = data.subset(index)
        if sources and "source" in test.meta and test.meta["source"].astype(str).tolist() != sources:
            raise PhenolensError(f"{images.name}: the images differ from those the checkpoint was trained on; pass --dataset, --folder or --manifest")
        return test

    def save(self, folder: str | Path) -> Path:
        """Write the model's files into `folder` (a run writer's staging folder).

        Parameters
        ----------
        folder : path
            An existing folder.

        Returns
        -------
        Path
            `folder`, now holding model.safetensors/json (i-ResNet), ecinn_means.safetensors and
            autoencoder/ (when trained).
        """
        from safetensors.torch import save

        folder = Path(folder)
        card = ModelCard(
            architecture="iresnet",
            hyperparameters=iresnet_hyperparameters(len(self.channel_names), len(self.class_names), self.settings),
            class_names=list(self.class_names),
            channel_names=list(self.channel_names),
            normalization={**self.normalization.to_dict(), "size": self.size, "data_range": self.data_range},
            extra={"settings": self.settings.to_dict(), **self.info},
        )
        save_model(self.classifier, folder, card)
        means = {"true": self.ecinn.means_true_.contiguous(), "predicted": self.ecinn.means_predicted_.contiguous()}
        atomic_write_bytes(folder / MEANS_FILE, save(means))
        if self.interpolation is not None:
            ae_card = ModelCard(
                architecture="conv-autoencoder",
                hyperparameters=autoencoder_hyperparameters(len(self.channel_names), self.settings),
                class_names=list(self.class_names),
                channel_names=list(self.channel_names),
                normalization=card.normalization,
                extra={"class_means": self.interpolation.means_.tolist(), "steps": self.interpolation.steps},
            )
            save_model(self.interpolation.autoencoder_, folder / AUTOENCODER_FOLDER, ae_card)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> CounterfactualModel:
        """Rebuild a model written by `save`.

        Parameters
        ----------
        folder : path
            The folder `save` wrote (``phenolens counterfactual train --out``).

        Returns
        -------
        CounterfactualModel
            The model, ready to explain.

        Raises
        ------
        PhenolensError
            Naming the file at fault: missing or corrupt weights or means, settings from another
            version, class or channel names that do not fit the network.
        """
        folder = Path(folder)
        classifier, card = load_model(folder, expected_architecture="iresnet")
        if "data_range" not in card.normalization:
            raise PhenolensError(f"{folder / 'model.json'}: normalization has no 'data_range'; retrain with `phenolens counterfactual train`")
        means_path = folder / MEANS_FILE
        means = read_tensors(means_path, "retrain with `phenolens counterfactual train`")
        if set(means) != {"true", "predicted"}:
            raise PhenolensError(f"{means_path}: holds {sorted(means)}, not the 'true' and 'predicted' ECINN class means; retrain the model")
        ecinn = ECINN.from_means(classifier, means["true"], means["predicted"])
        settings = CounterfactualTrainingSettings.from_dict(card.extra.get("settings", {}), source=str(folder / "model.json"))
        interpolation = None
        if (folder / AUTOENCODER_FOLDER).is_dir():
            autoencoder, ae_card = load_model(folder / AUTOENCODER_FOLDER, expected_architecture="conv-autoencoder")
            shape = (len(card.class_names), autoencoder.encoder[-1].out_features)
            means, steps = _interpolation_extras(ae_card.extra, shape, folder / AUTOENCODER_FOLDER / "model.json")
            interpolation = LatentInterpolation.from_means(autoencoder, classifier, means, steps=steps)
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


def _interpolation_extras(extra: dict, shape: tuple[int, int], config: Path) -> tuple[torch.Tensor, int]:
    """The autoencoder's saved latent class means, (classes, latent_dim) and finite, and its interpolation step count."""
    try:
        means = np.asarray(extra.get("class_means"), dtype=np.float32)
    except (TypeError, ValueError):
        means = np.zeros(0, dtype=np.float32)
    if means.shape != shape or not np.isfinite(means).all():
        raise PhenolensError(f"{config}: 'class_means' must be {shape[0]} x {shape[1]} finite numbers (classes x latent); retrain the model")
    steps = extra.get("steps", 10)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise PhenolensError(f"{config}: 'steps' must be a positive integer, got {steps!r}; retrain the model")
    return torch.from_numpy(means), steps


def _reordered_channels(images: ImageSet, order: list[int]) -> ImageSet:
    """`images` with channel i taken from channel order[i]."""
    arrays = images.images[:, order] if isinstance(images.images, np.ndarray) else [image[order] for image in images.images]
    return dataclasses.replace(images, images=arrays, channel_names=[images.channel_names[i] for i in order])


def select_classes(images: ImageSet, classes: list[str] | tuple[str, ...] | None) -> ImageSet:
    """The labelled images of two classes, relabelled 0, 1 in that order.

    Parameters
    ----------
    images : ImageSet
        Labelled images (unlabelled ones are dropped).
    classes : sequence of str, optional
        The two classes; default: the images' classes, which must then be two.

    Returns
    -------
    ImageSet
        The chosen images, labels 0 and 1.

    Raises
    ------
    PhenolensError
        When a class is not in the data or the data does not hold exactly two classes.
    """
    labelled = images.labelled()
    if classes is None:
        classes = [name for name in labelled.class_names if (labelled.label_names() == name).any()]
        if len(classes) != 2:
            raise PhenolensError(
                f"{images.name}: a counterfactual model separates two classes, and the data has {len(classes)} "
                f"({', '.join(classes)}); choose two with --classes"
            )
    classes = list(classes)
    unknown = [c for c in classes if c not in labelled.class_names]
    if unknown:
        raise PhenolensError(f"{images.name}: classes {unknown} are not in the data; known classes: {', '.join(labelled.class_names)}")
    names = labelled.label_names()
    chosen = labelled.subset(np.isin(names, classes))
    relabelled = np.array([classes.index(n) for n in chosen.label_names()], dtype=np.int64)
    return ImageSet(chosen.images, relabelled, classes, chosen.channel_names, chosen.meta, name=chosen.name)


def network_crops(images: ImageSet | np.ndarray, settings: CounterfactualTrainingSettings, channel_names: list[str]) -> np.ndarray:
    """Raw crops as the i-ResNet sees them.

    Parameters
    ----------
    images : ImageSet or numpy.ndarray
        Images with `channel_names`, in that order.
    settings : CounterfactualTrainingSettings
        ``size`` and ``centre_on``.
    channel_names : list of str
        The model's channels.

    Returns
    -------
    numpy.ndarray
        (N, C, size, size) crops, registered on the nucleus when ``settings.centre_on`` names a
        channel, centre-padded to ``settings.size``.
    """
    centre_on = None if settings.centre_on is None else channel_names.index(settings.centre_on)
    return padded_array(images, settings.size, channel_names, centre_on)


def iresnet_hyperparameters(channels: int, n_classes: int, settings: CounterfactualTrainingSettings) -> dict:
    """The `InvertibleResNet` arguments of a model trained with `settings`.

    Parameters
    ----------
    channels, n_classes : int
        Input channels and classes.
    settings : CounterfactualTrainingSettings
        The architecture fields.

    Returns
    -------
    dict
        Keyword arguments of `InvertibleResNet` (saved in model.json).
    """
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


def autoencoder_hyperparameters(channels: int, settings: CounterfactualTrainingSettings) -> dict:
    """The `ConvAutoencoder` arguments of a model trained with `settings`.

    Parameters
    ----------
    channels : int
        Input channels.
    settings : CounterfactualTrainingSettings
        ``size`` and ``latent_dim``.

    Returns
    -------
    dict
        Keyword arguments of `ConvAutoencoder` (saved in autoencoder/model.json).
    """
    return {"in_channels": channels, "image_size": settings.size, "latent_dim": settings.latent_dim}
