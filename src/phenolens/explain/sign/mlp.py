"""Fully connected ReLU networks for SIGN's inference paths: train one (on true or random labels),
save it with the images and labels it was trained on, and read its hidden activations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from phenolens.core.errors import PhenolensError
from phenolens.core.seeding import numpy_rng, seed_everything
from phenolens.data.containers import ImageSet
from phenolens.data.readers import read_npz_arrays
from phenolens.explain.sign.settings import MlpTrainingSettings
from phenolens.nn.mlp import MLP
from phenolens.nn.weights import ModelCard

TRAINING_RECORD = "training.npz"  # which labelled images an MLP was trained on, with which (maybe random) labels


@dataclass
class MLPClassifier:
    """An MLP with the scalar normalisation and crop size its inputs need.

    Attributes
    ----------
    model : MLP
        The network.
    card : ModelCard
        Its config: class and channel names, normalisation (``mean``, ``std``, ``size``).
    """

    model: MLP
    card: ModelCard

    def inputs(self, images: ImageSet | np.ndarray) -> torch.Tensor:
        """Normalised, flattened network inputs.

        Parameters
        ----------
        images : ImageSet or ndarray
            Images (padded or cropped to the card's size).

        Returns
        -------
        Tensor
            (N, C*S*S) float inputs.
        """
        from phenolens.training.preprocess import padded_array

        array = padded_array(images, self.card.normalization["size"], self.card.channel_names)
        return torch.from_numpy((array.reshape(len(array), -1) - self.card.normalization["mean"]) / self.card.normalization["std"]).float()

    def hidden(self, images: ImageSet | np.ndarray, batch_size: int = 1024) -> list[np.ndarray]:
        """Post-ReLU activations of every hidden layer.

        Parameters
        ----------
        images : ImageSet or ndarray
            The examples.
        batch_size : int
            Examples per forward pass.

        Returns
        -------
        list of ndarray
            One (N, D_l) matrix per hidden layer, input to output.
        """
        x = self.inputs(images)
        with torch.no_grad():
            parts = [self.model.hidden_activations(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        return [torch.cat([p[layer] for p in parts]).numpy() for layer in range(len(self.model.hidden))]

    def predict(self, images: ImageSet | np.ndarray) -> np.ndarray:
        """Predicted classes.

        Parameters
        ----------
        images : ImageSet or ndarray
            The examples.

        Returns
        -------
        ndarray
            (N,) class indices.
        """
        with torch.no_grad():
            return self.model(self.inputs(images)).argmax(1).numpy()


def fit_mlp(
    images: ImageSet, hidden: list[int], epochs: int = 50, lr: float = 1e-3, batch_size: int = 128, random_labels: bool = False, seed: int = 0
) -> tuple[MLPClassifier, np.ndarray]:
    """Train an MLP on the labelled images with the shared training loop.

    Parameters
    ----------
    images : ImageSet
        Its labelled images are used.
    hidden : list of int
        Units per hidden layer.
    epochs, lr, batch_size : int, float, int
        Adam training.
    random_labels : bool
        Replace every label by a seeded uniform draw (the memorisation experiment).
    seed : int
        Seed of the labels, initialisation and batching.

    Returns
    -------
    tuple of (MLPClassifier, ndarray)
        The trained network and the (N,) labels it was trained on; ``card.extra["train_error"]``
        is its error on them.

    Raises
    ------
    PhenolensError
        When `images` holds no labelled image.
    """
    from phenolens.training import fit

    labelled = images.labelled()
    if len(labelled) == 0:
        raise PhenolensError(f"{images.name}: no labelled images to train on")
    seed_everything(seed)
    n_classes = len(images.class_names)
    labels = numpy_rng(seed).integers(0, n_classes, len(labelled)) if random_labels else labelled.labels
    array = labelled.padded()
    mean, std = float(array.mean()), float(array.std()) or 1.0
    size = array.shape[-1]
    model = MLP(int(np.prod(array.shape[1:])), list(hidden), n_classes)
    card = ModelCard(
        "mlp", {"in_features": model.hidden[0][0].in_features, "hidden": list(hidden), "n_classes": n_classes}, list(images.class_names),
        list(images.channel_names), {"mean": mean, "std": std, "size": size}, {"random_labels": random_labels, "seed": seed, "dataset": images.name},
    )  # fmt: skip
    classifier = MLPClassifier(model, card)
    x, y = classifier.inputs(labelled), torch.from_numpy(np.asarray(labels))

    def step(net: MLP, batch, epoch: int) -> torch.Tensor:
        return F.cross_entropy(net(batch[0]), batch[1])

    history = fit(model, (x, y), step, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, description="training MLP")
    card.extra["history"] = history.epochs
    card.extra["train_error"] = float(np.mean(classifier.predict(labelled) != labels))
    return classifier, labels


@dataclass
class TrainedMlp:
    """An MLP trained by `train_mlp`, with the images and labels it was trained on.

    Attributes
    ----------
    classifier : MLPClassifier
        The network and its card.
    index : ndarray
        Indices into the labelled images of the source it was trained on.
    labels : ndarray
        The (maybe random) labels it was trained on, one per index.
    """

    classifier: MLPClassifier
    index: np.ndarray
    labels: np.ndarray

    def metrics(self) -> dict:
        """``train_error``, ``images`` and ``random_labels`` for metrics.json.

        Returns
        -------
        dict
        """
        extra = self.classifier.card.extra
        return {"train_error": extra["train_error"], "images": len(self.index), "random_labels": extra["random_labels"]}

    def save(self, folder: str | Path) -> None:
        """Write ``model.safetensors`` + ``model.json`` (architecture ``mlp``) and ``training.npz``.

        Parameters
        ----------
        folder : path
            An existing folder (a run's staging folder).
        """
        from phenolens.nn.weights import save_model

        save_model(self.classifier.model, folder, self.classifier.card)
        np.savez(Path(folder) / TRAINING_RECORD, index=self.index, labels=self.labels)

    @classmethod
    def load(cls, folder: str | Path) -> TrainedMlp:
        """Read a folder written by `save` (the output of `phenolens sign train-mlp`).

        Parameters
        ----------
        folder : path
            The folder.

        Returns
        -------
        TrainedMlp

        Raises
        ------
        PhenolensError
            When it holds no MLP, or no training record or a damaged one.
        """
        from phenolens.nn.weights import load_model

        folder = Path(folder)
        model, card = load_model(folder, expected_architecture="mlp")
        record = folder / TRAINING_RECORD
        if not record.is_file():
            raise PhenolensError(f"{record}: missing; give the --out folder of `phenolens sign train-mlp`")
        index, labels = read_npz_arrays(record, ("index", "labels"), "training record", "re-run `phenolens sign train-mlp`")
        n_classes = len(card.class_names)
        integers = all(part.ndim == 1 and np.issubdtype(part.dtype, np.integer) for part in (index, labels))
        if not integers or len(index) != len(labels) or (index < 0).any() or ((labels < 0) | (labels >= n_classes)).any():
            raise PhenolensError(
                f"{record}: 'index' and 'labels' must be as many image indices and class numbers (0-{n_classes - 1}); "
                "re-run `phenolens sign train-mlp`"
            )
        return cls(MLPClassifier(model, card), index, labels)


def train_mlp(images: ImageSet, settings: MlpTrainingSettings) -> TrainedMlp:
    """Train an MLP on (a seeded sample of) the labelled images.

    Parameters
    ----------
    images : ImageSet
        Its labelled images are used.
    settings : MlpTrainingSettings
        Sample size, architecture and training.

    Returns
    -------
    TrainedMlp

    Raises
    ------
    PhenolensError
        When there are no labelled images.
    """
    data = images.labelled()
    wanted = settings.images
    index = numpy_rng(settings.seed).choice(len(data), wanted, replace=False) if wanted and wanted < len(data) else np.arange(len(data))
    classifier, labels = fit_mlp(data.subset(index), list(settings.hidden), settings.epochs, settings.lr, settings.batch_size,
                                 random_labels=settings.random_labels, seed=settings.seed)  # fmt: skip
    return TrainedMlp(classifier, index, np.asarray(labels))
