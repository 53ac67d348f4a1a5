"""`ImageClassifier`: a trained image classifier and everything needed to apply it correctly.

The object carries class and channel names, the crop size, the per-channel normalisation and the
covariate encoding. It is saved with `phenolens.nn.weights` (safetensors + JSON), so nothing is ever
unpickled. Images given to it are matched to the model by name (`conform`): channels are put in the
model's order, class labels are re-indexed to the model's classes. Training lives in
`phenolens.training.fitting`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from phenolens.core.errors import PhenolensError
from phenolens.core.logging import get_logger
from phenolens.core.runs import is_partial
from phenolens.data.containers import UNLABELLED, ImageSet, class_by_name
from phenolens.nn.backbones import ImageClassifierNet
from phenolens.nn.weights import ModelCard, load_model, save_model
from phenolens.training.loop import Callback, History
from phenolens.training.preprocess import (
    FIELD_NORMALIZATIONS,
    ChannelNormalization,
    CovariateEncoding,
    FieldStatistics,
    field_column,
    field_statistics,
    image_statistics,
    padded_array,
)
from phenolens.training.settings import PREDICTION_BATCH

log = get_logger(__name__)

_UNNAMED_CHANNEL = re.compile(r"ch\d+")  # the names a reader gives channels when the user named none


class EpochLog(Callback):
    """Log each epoch's losses (visible with PHENOLENS_LOG=INFO when no progress bar is shown).

    Parameters
    ----------
    description : str
        What is being trained, at the start of each line.
    """

    def __init__(self, description: str):
        self.description = description

    def on_epoch_end(self, epoch: int, record: dict, model: torch.nn.Module) -> bool:
        """Log the epoch's record; never stops training (see `Callback.on_epoch_end`)."""
        log.info("%s: epoch %d train_loss %.4f val_loss %.4f", self.description, epoch, record["train_loss"], record.get("val_loss", float("nan")))
        return False


def image_chunks(images: ImageSet | np.ndarray, batch_size: int) -> Iterator[ImageSet | np.ndarray]:
    """Consecutive chunks of at most `batch_size` images, in order.

    Parameters
    ----------
    images : ImageSet or ndarray
        The images to split.
    batch_size : int
        Images per chunk (>= 1).

    Returns
    -------
    iterator
        Sub-ImageSets (or array slices).
    """
    for start in range(0, len(images), batch_size):
        stop = min(start + batch_size, len(images))
        yield images.subset(np.arange(start, stop)) if isinstance(images, ImageSet) else images[start:stop]


@dataclass
class ImageClassifier:
    """A trained image classifier and what it needs to be applied: names, size, normalisation.

    Parameters
    ----------
    model : ImageClassifierNet
        The network (a single one or an `Ensemble`).
    class_names : list of str
        Output classes, in logit order.
    channel_names : list of str
        The stains the network reads, in input order.
    size : int
        Crop size: images are centre-padded (or centre-cropped) to it.
    normalization : ChannelNormalization
        Per-channel statistics of the training images.
    covariate : CovariateEncoding, optional
        One-hot encoding of a metadata column, when the model was trained with one.
    history : History, optional
        Per-epoch losses of training.
    settings : dict
        What training recorded (settings, hyperparameters, split sizes); saved in model.json.
    """

    model: ImageClassifierNet
    class_names: list[str]
    channel_names: list[str]
    size: int
    normalization: ChannelNormalization
    covariate: CovariateEncoding | None = None
    history: History | None = None
    settings: dict = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        """The registered architecture name of the network.

        Returns
        -------
        str
            ``resnet18``, ``vgg``, ``densenet`` or ``ensemble``.
        """
        return type(self.model).architecture_name

    def conform(self, images: ImageSet) -> ImageSet:
        """`images` with the model's channel order and class indices, both matched by name.

        Channels named like the model's but in another order are reordered; channels without names
        (``ch0, ch1, ...``: none were given) are taken in the model's order. Labels are re-indexed
        to the model's class names (a class folder ``AAA`` is never read as the model's first class).

        Parameters
        ----------
        images : ImageSet
            Images read from a folder, manifest or dataset.

        Returns
        -------
        ImageSet
            The same images (unchanged object when nothing differs) in the model's terms.

        Raises
        ------
        PhenolensError
            When channel names differ from the model's, or a labelled image's class is not one of the model's.
        """
        return self._with_model_classes(self._with_model_channels(images))

    def _with_model_channels(self, images: ImageSet) -> ImageSet:
        given, wanted = list(images.channel_names), list(self.channel_names)
        if given == wanted or len(given) != len(wanted):
            return images  # a different count is `padded_array`'s one-line error
        if sorted(given) == sorted(wanted):
            order = [given.index(name) for name in wanted]
            log.info("%s: channels %s reordered to the model's %s", images.name, ",".join(given), ",".join(wanted))
            chosen = images.images[:, order] if isinstance(images.images, np.ndarray) else [image[order] for image in images.images]
        elif all(_UNNAMED_CHANNEL.fullmatch(name) for name in given):
            chosen = images.images
        else:
            raise PhenolensError(
                f"{images.name}: the images' channels are {', '.join(given)} but the model reads {', '.join(wanted)}; "
                "name the files' channels with --channels (in the files' order) using the model's names"
            )
        return ImageSet(chosen, images.labels, list(images.class_names), wanted, images.meta, images.unlabelled_name, images.name)

    def _with_model_classes(self, images: ImageSet) -> ImageSet:
        if list(images.class_names) == list(self.class_names):
            return images
        used = sorted({images.class_names[label] for label in np.unique(images.labels) if label != UNLABELLED})
        unknown = [name for name in used if name not in self.class_names]
        if unknown:
            raise PhenolensError(
                f"{images.name}: class {', '.join(repr(u) for u in unknown)} is not a class of the model, which knows "
                f"{', '.join(self.class_names)}; rename the class folder (or manifest label) to one of those"
            )
        index = np.array([self.class_names.index(name) if name in self.class_names else UNLABELLED for name in images.class_names] + [UNLABELLED])
        labels = index[np.where(images.labels == UNLABELLED, len(images.class_names), images.labels)]
        return ImageSet(images.images, labels, list(self.class_names), list(images.channel_names), images.meta, images.unlabelled_name, images.name)

    def array(self, images: ImageSet | np.ndarray) -> np.ndarray:
        """Padded, checked and normalised (N, C, size, size) float32 array.

        With an intensity normalisation per field, each field's statistics (brightness or quantiles) are the
        normalisation's `field_brightness` table when set (`with_field_brightness`), else the medians over the
        images of that field given here.

        Parameters
        ----------
        images : ImageSet or ndarray
            An ImageSet (channels matched by name) or an (N, C, H, W) array in the model's channel order.

        Returns
        -------
        ndarray
            The network input.

        Raises
        ------
        PhenolensError
            With an intensity normalisation per field, for images without the field column or a field missing from the table.
        """
        if isinstance(images, ImageSet):
            images = self._with_model_channels(images)
        return self.normalization.inputs(images, padded_array(images, self.size, self.channel_names)).astype(np.float32)

    def tensor(self, images: ImageSet | np.ndarray) -> torch.Tensor:
        """The network input for `images` as a tensor (see `array`).

        Parameters
        ----------
        images : ImageSet or ndarray
            The images.

        Returns
        -------
        Tensor
            (N, C, size, size) float32.
        """
        return torch.from_numpy(self.array(images))

    def covariates(self, images: ImageSet | np.ndarray) -> torch.Tensor | None:
        """One-hot covariates for `images`, or None when the model was trained without them.

        Parameters
        ----------
        images : ImageSet or ndarray
            The images.

        Returns
        -------
        Tensor or None
            (N, categories) float32.

        Raises
        ------
        PhenolensError
            When the model needs a covariate and `images` is a bare array or lacks the column.
        """
        if self.covariate is None:
            return None
        if not isinstance(images, ImageSet):
            raise PhenolensError(f"the model needs the covariate column {self.covariate.column!r}: pass an ImageSet with that metadata")
        return self.covariate(images)

    @torch.no_grad()
    def _batched(self, images: ImageSet | np.ndarray, function: Callable, batch_size: int) -> np.ndarray:
        """`function(inputs, covariates)` over chunks of `images`: only one chunk's input is in memory at a time
        (a field split across chunks keeps the brightness of all its images given here)."""
        self.model.eval()
        # one chunk: the medians over it are those over all the images, so no separate pass over the fields
        classifier = self.for_fields_of(images, batch_size) if len(images) > batch_size else self
        return torch.cat([function(classifier.tensor(chunk), self.covariates(chunk)) for chunk in image_chunks(images, batch_size)]).numpy()

    @property
    def field_statistics_shape(self) -> tuple[int, ...]:
        """The shape of one image's entry in a field table under this model's intensity normalisation: (C,) or (C, L)."""
        return image_statistics(np.zeros((0, len(self.channel_names), 1, 1), dtype=np.float32), self.normalization.intensity).shape[1:]

    def field_statistics(self, images: ImageSet | np.ndarray, batch_size: int = PREDICTION_BATCH) -> tuple[np.ndarray, np.ndarray]:
        """Each image's field of view and the `image_statistics` of its padded image (a chunk at a time): its mean intensity
        per channel, or its quantiles per channel with ``field-quantile``.

        What `field_statistics` reduces to a field's table; a streamed screen gathers it chunk by chunk.

        Parameters
        ----------
        images : ImageSet or ndarray
            The images.
        batch_size : int
            Images padded at a time.

        Returns
        -------
        tuple of ndarray
            (N,) fields as text and (N, C) (or (N, C, L)) float64 statistics (none for no images, as a chunk whose images were all skipped).

        Raises
        ------
        PhenolensError
            When the images carry no field column (`intensity_column`; a bare array has none).
        """
        fields = field_column(images, self.normalization.intensity_column).astype(str)
        chunks = image_chunks(self._with_model_channels(images), batch_size)  # field_column refused a bare array
        kind = self.normalization.intensity
        means = [image_statistics(padded_array(chunk, self.size, self.channel_names), kind) for chunk in chunks]
        return fields, np.concatenate(means) if means else np.zeros((0, *self.field_statistics_shape))

    def with_field_brightness(self, brightness: FieldStatistics | None) -> ImageClassifier:
        """This classifier normalising each image by its field's statistics in `brightness` (the network is shared, not copied).

        Parameters
        ----------
        brightness : dict or None
            A `field_statistics` table (None: the medians over the images given at once).

        Returns
        -------
        ImageClassifier
            A new classifier object (self when the model does not normalise per field).
        """
        if self.normalization.intensity not in FIELD_NORMALIZATIONS:
            return self
        return replace(self, normalization=replace(self.normalization, field_brightness=brightness))

    def for_fields_of(self, images: ImageSet | np.ndarray, batch_size: int = PREDICTION_BATCH) -> ImageClassifier:
        """This classifier with the brightness of the fields of `images` (unchanged when it does not normalise per field
        or has a table already).

        Parameters
        ----------
        images : ImageSet or ndarray
            All the images whose fields matter (e.g. a whole dataset, of which a subset is then explained).
        batch_size : int
            Images padded at a time.

        Returns
        -------
        ImageClassifier
            The classifier to apply to `images` or any subset of them.
        """
        if self.normalization.intensity not in FIELD_NORMALIZATIONS or self.normalization.field_brightness is not None:
            return self
        fields, means = self.field_statistics(images, batch_size)
        return self.with_field_brightness(field_statistics(means, fields))

    def logits(self, images: ImageSet | np.ndarray, batch_size: int = PREDICTION_BATCH) -> np.ndarray:
        """(N, K) logits.

        Parameters
        ----------
        images : ImageSet or ndarray
            An ImageSet (channels matched to the model's by name) or an (N, C, H, W) array in the model's channel order.
        batch_size : int
            Images per forward pass (only one batch's input is in memory at a time).

        Returns
        -------
        ndarray
            Logits, columns in `class_names` order.
        """
        return self._batched(images, self.model, batch_size)

    def predict_proba(self, images: ImageSet | np.ndarray, batch_size: int = PREDICTION_BATCH) -> np.ndarray:
        """(N, K) class probabilities (softmax of the logits).

        Parameters
        ----------
        images, batch_size
            As for `logits`.

        Returns
        -------
        ndarray
            Probabilities, columns in `class_names` order.
        """
        return torch.softmax(torch.from_numpy(self.logits(images, batch_size)), dim=1).numpy()

    def predict(self, images: ImageSet | np.ndarray, batch_size: int = PREDICTION_BATCH) -> np.ndarray:
        """(N,) predicted class indices.

        Parameters
        ----------
        images, batch_size
            As for `logits`.

        Returns
        -------
        ndarray
            Indices into `class_names`.
        """
        return self.logits(images, batch_size).argmax(axis=1)

    def embed(self, images: ImageSet | np.ndarray, batch_size: int = PREDICTION_BATCH) -> np.ndarray:
        """(N, D) penultimate features (pooled maps plus covariates).

        Parameters
        ----------
        images, batch_size
            As for `logits`.

        Returns
        -------
        ndarray
            The features (an ensemble's members side by side).
        """
        return self._batched(images, self.model.embed, batch_size)

    def class_index(self, name: str) -> int:
        """Index of a class name.

        Parameters
        ----------
        name : str
            A class name.

        Returns
        -------
        int
            Its index in `class_names`.

        Raises
        ------
        PhenolensError
            Naming the known classes when `name` is not one of them.
        """
        return class_by_name(name, self.class_names)

    def card(self, extra: dict | None = None) -> ModelCard:
        """The JSON description saved beside the weights (architecture, names, normalisation, settings, history).

        Parameters
        ----------
        extra : dict, optional
            More JSON-ready fields for ``extra``.

        Returns
        -------
        ModelCard
            The card.
        """
        return ModelCard(
            architecture=self.architecture,
            hyperparameters=dict(self.settings.get("hyperparameters", {})),
            class_names=list(self.class_names),
            channel_names=list(self.channel_names),
            normalization={**self.normalization.to_dict(), "size": self.size},
            extra={
                "covariate": None if self.covariate is None else {"column": self.covariate.column, "categories": self.covariate.categories},
                "settings": {k: v for k, v in self.settings.items() if k != "hyperparameters"},
                "history": None if self.history is None else self.history.epochs,
                **(extra or {}),
            },
        )

    def save(self, folder: str | Path, extra: dict | None = None) -> Path:
        """Write `model.safetensors` + `model.json` into `folder`.

        Parameters
        ----------
        folder : path
            Destination folder (created).
        extra : dict, optional
            More JSON-ready fields for model.json's ``extra``.

        Returns
        -------
        Path
            The folder.
        """
        return save_model(self.model, folder, self.card(extra))

    @classmethod
    def load(cls, folder: str | Path) -> ImageClassifier:
        """Rebuild a classifier saved by `save`.

        Parameters
        ----------
        folder : path
            A folder with model.safetensors and model.json (a `phenolens images train` output).

        Returns
        -------
        ImageClassifier
            The classifier, ready to apply.

        Raises
        ------
        PhenolensError
            Naming the file and what is wrong when the folder holds no image classifier or a damaged one.
        """
        if is_partial(folder):
            raise PhenolensError(f"{folder}: the staging folder of an interrupted run, not a finished model; re-run the training command")
        model, card = load_model(folder)
        if not isinstance(model, ImageClassifierNet):
            raise PhenolensError(
                f"{Path(folder) / 'model.json'}: holds a {card.architecture!r} model, not an image classifier; pass a `phenolens train` output"
            )
        if model.in_channels != len(card.channel_names) or "size" not in card.normalization:
            raise PhenolensError(f"{Path(folder) / 'model.json'}: channel names or crop size do not match the weights; retrain or restore the file")
        covariate, history, settings = _card_extras(card.extra, model.n_covariates, Path(folder) / "model.json")
        return cls(
            model=model,
            class_names=card.class_names,
            channel_names=card.channel_names,
            size=int(card.normalization["size"]),
            normalization=ChannelNormalization.from_dict(card.normalization),
            covariate=covariate,
            history=history,
            settings={**settings, "hyperparameters": card.hyperparameters},
        )


def _card_extras(extra: dict, n_covariates: int, config: Path) -> tuple[CovariateEncoding | None, History | None, dict]:
    """The covariate encoding, training history and settings a saved classifier's ``extra`` holds, checked against the network."""
    covariate = extra.get("covariate")
    if covariate is not None:
        categories = covariate.get("categories") if isinstance(covariate, dict) else None
        if (
            set(covariate if isinstance(covariate, dict) else ()) != {"column", "categories"}
            or not isinstance(covariate["column"], str)
            or not isinstance(categories, list)
            or not all(isinstance(name, str) for name in categories)
        ):
            raise PhenolensError(f'{config}: \'covariate\' must be {{"column": NAME, "categories": [NAMES]}} or null; restore the config')
        covariate = CovariateEncoding(covariate["column"], categories)
    if (0 if covariate is None else len(covariate.categories)) != n_covariates:
        raise PhenolensError(f"{config}: the covariate categories do not match the network's {n_covariates} covariate inputs; restore the config")
    history = extra.get("history")
    if history is not None and not (isinstance(history, list) and all(isinstance(record, dict) for record in history)):
        raise PhenolensError(f"{config}: 'history' must be a list of per-epoch records; restore the config")
    settings = extra.get("settings", {})
    if not isinstance(settings, dict):
        raise PhenolensError(f"{config}: 'settings' must be a JSON object, got {type(settings).__name__}; restore the config")
    return covariate, History(epochs=history) if history else None, settings
