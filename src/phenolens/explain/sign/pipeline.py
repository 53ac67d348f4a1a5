"""SIGN on a trained phenolens image classifier and an ImageSet: dictionaries, quality, statistics.

The labelled images are split (stratified, seeded) into a fitting part, on which the dictionaries
and the bag-of-words classifiers are trained, and a validation part, on which co-occurrences are
counted, purity is measured and graph examples are drawn from. The figures and report sections
live in `phenolens.report.sign`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from phenolens.core.errors import PhenolensError
from phenolens.core.runs import Run
from phenolens.data.containers import ImageSet
from phenolens.data.readers import read_json_object, read_npz_arrays
from phenolens.explain.sign.dictionary import SignDictionary
from phenolens.explain.sign.graph import InferenceGraphBuilder
from phenolens.explain.sign.quality import dictionary_quality
from phenolens.explain.sign.settings import SignFitSettings
from phenolens.nn.backbones import networks
from phenolens.training.classifier import ImageClassifier
from phenolens.training.preprocess import padded_array
from phenolens.training.splits import stratified_split

SOURCE_FILE = "source.json"  # how to re-read the run's images (the image options of `phenolens sign fit`)


@dataclass
class SignFit:
    """A fitted SignDictionary on a classifier, the split it used, its quality and a graph builder.

    Attributes
    ----------
    classifier : ImageClassifier
        The modelled network (never changed by SIGN).
    images : ImageSet
        The labelled images, in the order the indices refer to.
    fit_index, validation_index : ndarray
        The stratified split: dictionaries are fitted on the first, statistics counted on the second.
    dictionary : SignDictionary
        Fitted dictionaries.
    builder : InferenceGraphBuilder
        Statistics over the validation images.
    quality : DataFrame
        One row per modelled layer (see `dictionary_quality`).
    """

    classifier: ImageClassifier
    images: ImageSet
    fit_index: np.ndarray
    validation_index: np.ndarray
    dictionary: SignDictionary
    builder: InferenceGraphBuilder
    quality: pd.DataFrame

    def display(self) -> np.ndarray:
        """Raw validation images for drawing.

        Returns
        -------
        ndarray
            (N, C, H, W) padded, not normalised.
        """
        return padded_array(self.images.subset(self.validation_index), self.classifier.size, self.classifier.channel_names)

    def metrics(self) -> dict:
        """The metrics.json of a fit.

        Returns
        -------
        dict
            ``loss``, ``layers`` (input to output: name, bow_error, bow_error_max_channel, purity,
            purity_max_channel, words, channels), ``validation_accuracy``, ``n_fit``, ``n_validation``.
        """
        keys = ["name", "bow_error", "bow_error_max_channel", "purity", "purity_max_channel", "words", "channels"]
        return {
            "loss": self.dictionary.loss,
            "layers": [{key: row[key] for key in keys} for row in self.quality.to_dict("records")],
            "validation_accuracy": float(np.mean(self.builder.maps_.predictions == self.images.labels[self.validation_index])),
            "n_fit": len(self.fit_index),
            "n_validation": len(self.validation_index),
        }


def check_classifier(classifier: ImageClassifier) -> None:
    """Check that SIGN can model a classifier: one image-only network.

    Parameters
    ----------
    classifier : ImageClassifier
        The classifier.

    Raises
    ------
    PhenolensError
        For a classifier with a covariate or an ensemble.
    """
    if classifier.covariate is not None:
        raise PhenolensError(f"the model uses the covariate {classifier.covariate.column!r}; SIGN models image-only classifiers, retrain without it")
    count = len(networks(classifier.model))
    if count > 1:
        raise PhenolensError(f"the model is an ensemble of {count} networks; SIGN models one network's activations, train with --members 1")


def split(labels: np.ndarray, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split of labelled images.

    Parameters
    ----------
    labels : ndarray
        (N,) class of each image.
    validation_fraction : float
        Share kept for validation.
    seed : int
        Seed.

    Returns
    -------
    tuple of ndarray
        (fit, validation) indices.
    """
    return stratified_split(labels, validation_fraction, seed, option="--validation-fraction")


def fit_sign(
    classifier: ImageClassifier,
    images: ImageSet,
    settings: SignFitSettings | None = None,
    index: tuple[np.ndarray, np.ndarray] | None = None,
) -> SignFit:
    """Fit dictionaries on the fitting part of the labelled images, count statistics on the rest.

    Parameters
    ----------
    classifier : ImageClassifier
        A trained image-only classifier (left unchanged).
    images : ImageSet
        Its labelled images are used.
    settings : SignFitSettings, optional
        Layers, words, loss, training, nodes per layer, split and seed (default: `SignFitSettings()`).
    index : tuple of ndarray, optional
        A ready (fit, validation) split of the labelled images instead of a new one.

    Returns
    -------
    SignFit

    Raises
    ------
    PhenolensError
        For a classifier SIGN cannot model or settings the network cannot take (see `SignDictionary.fit`).
    """
    settings = settings or SignFitSettings()
    check_classifier(classifier)
    labelled = images.labelled()
    fit_index, validation_index = index if index is not None else split(labelled.labels, settings.validation_fraction, settings.seed)
    inputs = classifier.array(labelled)
    dictionary = SignDictionary.from_settings(classifier.model, settings).fit(inputs[fit_index], labelled.labels[fit_index])
    builder = InferenceGraphBuilder(dictionary, settings.nodes_per_layer, class_names=classifier.class_names)
    builder.fit(inputs[validation_index], labelled.labels[validation_index])
    quality = dictionary_quality(
        dictionary, dictionary.encode(inputs[fit_index]), labelled.labels[fit_index], builder.maps_, labelled.labels[validation_index], settings.seed
    )
    return SignFit(classifier, labelled, fit_index, validation_index, dictionary, builder, quality)


def save_sign(result: SignFit, folder: Path, source: dict) -> None:
    """Write what `load_sign` needs to rebuild a fit: the classifier, the dictionaries, the split, the
    quality table and how to re-read the images.

    Parameters
    ----------
    result : SignFit
        The fit.
    folder : Path
        An existing folder (a run's staging folder).
    source : dict
        How to re-read the images (the image options as given to the CLI), written to ``source.json``.
    """
    from phenolens.core.outputs import write_json

    result.classifier.save(folder / "model")
    result.dictionary.save(folder / "dictionary")
    np.savez(folder / "split.npz", fit=result.fit_index, validation=result.validation_index)
    result.quality.to_csv(folder / "quality.csv", index=False)
    write_json(folder / SOURCE_FILE, source)


def load_sign(run: Run, read_source: Callable[[dict], ImageSet], nodes_per_layer: int | None = None) -> SignFit:
    """Rebuild a fit from a finished `phenolens sign fit` run; the validation statistics are recounted
    (they are cheap next to fitting).

    Parameters
    ----------
    run : Run
        The run folder as read by `phenolens.core.runs.load_run`.
    read_source : callable
        ``read_source(source) -> ImageSet`` re-reads the images from the recorded source.
    nodes_per_layer : int, optional
        Words per layer in graphs (default: the fit's setting).

    Returns
    -------
    SignFit

    Raises
    ------
    PhenolensError
        When the run is not a SIGN fit, its images changed since, or one of its files is missing or damaged.
    """
    import torch

    if run.command != "sign fit":
        raise PhenolensError(f"{run.path}: a {run.command!r} run, not a SIGN fit; give the --out folder of `phenolens sign fit`")
    folder = Path(run.path)
    settings = run.setting(SignFitSettings)
    classifier = ImageClassifier.load(folder / "model")
    source = read_source_record(folder / SOURCE_FILE)
    labelled = read_source(source).labelled()
    fit_index, validation_index = read_split(folder / "split.npz", len(labelled))
    # the inputs of all labelled images, as `fit_sign` made them: a per-field intensity normalisation takes each field's
    # brightness over the images given, so normalising the validation images alone would change what the network sees
    inputs = classifier.array(labelled)[validation_index]
    dictionary = SignDictionary.load(folder / "dictionary", classifier.model, torch.from_numpy(inputs[:1]))
    builder = InferenceGraphBuilder(dictionary, nodes_per_layer or settings.nodes_per_layer, class_names=classifier.class_names)
    builder.fit(inputs, labelled.labels[validation_index])
    quality = run.table("quality.csv")
    return SignFit(classifier, labelled, fit_index, validation_index, dictionary, builder, quality)


SOURCE_KEYS = ("dataset", "folder", "manifest", "channels", "unlabelled")


def read_source_record(path: Path) -> dict:
    """The image options a SIGN fit recorded in ``source.json``, checked: each one text or null.

    Parameters
    ----------
    path : Path
        The fit's ``source.json``.

    Returns
    -------
    dict
        ``dataset``, ``folder``, ``manifest``, ``channels`` and ``unlabelled`` (str or None).

    Raises
    ------
    PhenolensError
        When the file is missing, unreadable, not a JSON object, or holds another key or a value that is not text.
    """
    source = read_json_object(path, "record of the fit's images")
    if set(source) - set(SOURCE_KEYS) or not all(value is None or isinstance(value, str) for value in source.values()):
        raise PhenolensError(f"{path}: must map {', '.join(SOURCE_KEYS)} to text or null; re-run `phenolens sign fit`")
    return {key: source.get(key) for key in SOURCE_KEYS}


def read_split(path: Path, n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """The fit and validation indices a SIGN fit saved, checked against the images they index.

    Parameters
    ----------
    path : Path
        The fit's ``split.npz``.
    n_images : int
        How many labelled images the fit's source holds now.

    Returns
    -------
    tuple of numpy.ndarray
        (fit indices, validation indices), 1-D int64, each non-empty and in [0, n_images).

    Raises
    ------
    PhenolensError
        When the file is missing, unreadable, lacks an array, or holds anything but such indices.
    """
    parts = read_npz_arrays(path, ("fit", "validation"), "split", "re-run `phenolens sign fit`")
    for name, part in zip(("fit", "validation"), parts):
        if part.ndim != 1 or part.size == 0 or not np.issubdtype(part.dtype, np.integer):
            raise PhenolensError(f"{path}: {name!r} is not a non-empty list of image indices; re-run `phenolens sign fit`")
        if part.min() < 0 or part.max() >= n_images:
            raise PhenolensError(f"{path}: {name!r} indices leave the {n_images} labelled images; the images changed, re-run `phenolens sign fit`")
    return parts[0].astype(np.int64), parts[1].astype(np.int64)
