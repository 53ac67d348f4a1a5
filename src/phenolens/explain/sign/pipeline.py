"""SIGN on a trained phenolens image classifier and an ImageSet: dictionaries, quality, graphs, report.

The labelled images are split (stratified, seeded) into a fitting part, on which the dictionaries
and the bag-of-words classifiers are trained, and a validation part, on which co-occurrences are
counted, purity is measured and graph examples are drawn from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from phenolens.core.errors import PhenolensError
from phenolens.data.containers import ImageSet
from phenolens.explain.sign.dictionary import SignDictionary
from phenolens.explain.sign.graph import InferenceGraphBuilder
from phenolens.explain.sign.layers import OUTPUT
from phenolens.explain.sign.quality import centre_distances, class_counts, dictionary_quality
from phenolens.nn.backbones import networks
from phenolens.report.html import Section
from phenolens.training.classifier import ImageClassifier
from phenolens.training.preprocess import padded_array
from phenolens.training.splits import stratified_split


@dataclass
class SignFit:
    """A fitted SignDictionary on a classifier, the split it used, its quality and a graph builder."""

    classifier: ImageClassifier
    images: ImageSet  # the labelled images, in the order the indices refer to
    fit_index: np.ndarray
    validation_index: np.ndarray
    dictionary: SignDictionary
    builder: InferenceGraphBuilder
    quality: pd.DataFrame

    def display(self) -> np.ndarray:
        """Raw (padded, not normalised) validation images for drawing."""
        return padded_array(self.images.subset(self.validation_index), self.classifier.size, self.classifier.channel_names)

    def metrics(self) -> dict:
        """The `metrics.json` of a fit: `layers`, input to output, with name, bow_error, bow_error_max_channel, purity."""
        keys = ["name", "bow_error", "bow_error_max_channel", "purity", "purity_max_channel", "words", "channels"]
        return {
            "loss": self.dictionary.loss,
            "layers": [{key: row[key] for key in keys} for row in self.quality.to_dict("records")],
            "validation_accuracy": float(np.mean(self.builder.maps_.predictions == self.images.labels[self.validation_index])),
            "n_fit": len(self.fit_index),
            "n_validation": len(self.validation_index),
        }


def check_classifier(classifier: ImageClassifier) -> None:
    """SIGN reads the activations of one image-only network."""
    if classifier.covariate is not None:
        raise PhenolensError(f"the model uses the covariate {classifier.covariate.column!r}; SIGN models image-only classifiers, retrain without it")
    count = len(networks(classifier.model))
    if count > 1:
        raise PhenolensError(f"the model is an ensemble of {count} networks; SIGN models one network's activations, train with --members 1")


def split(labels: np.ndarray, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (fit, validation) indices."""
    return stratified_split(labels, validation_fraction, seed)


def fit_sign(
    classifier: ImageClassifier,
    images: ImageSet,
    layers: list[str] | None = None,
    words: int | list[int] = 64,
    loss: str = "discriminative",
    epochs: int = 8,
    nodes_per_layer: int = 3,
    validation_fraction: float = 0.3,
    seed: int = 0,
    index: tuple[np.ndarray, np.ndarray] | None = None,
) -> SignFit:
    """Fit dictionaries on the fitting part of `images`' labelled images, count statistics on the rest.

    `index` gives a ready (fit, validation) split of the labelled images instead of a new one.
    """
    check_classifier(classifier)
    labelled = images.labelled()
    fit_index, validation_index = index if index is not None else split(labelled.labels, validation_fraction, seed)
    inputs = classifier.array(labelled)
    dictionary = SignDictionary(classifier.model, layers=layers, words=words, loss=loss, epochs=epochs, seed=seed)
    dictionary.fit(inputs[fit_index], labelled.labels[fit_index])
    builder = InferenceGraphBuilder(dictionary, nodes_per_layer, class_names=classifier.class_names)
    builder.fit(inputs[validation_index], labelled.labels[validation_index])
    quality = dictionary_quality(
        dictionary, dictionary.encode(inputs[fit_index]), labelled.labels[fit_index], builder.maps_, labelled.labels[validation_index], seed
    )
    return SignFit(classifier, labelled, fit_index, validation_index, dictionary, builder, quality)


def quality_section(result: SignFit) -> Section:
    """Report section: BoW error and purity per layer against the max-channel baseline, centre distances."""
    from phenolens.report.figures import figure

    quality = result.quality
    section = Section(f"SIGN dictionaries ({result.dictionary.loss} loss)")
    section.text(
        "Each modelled layer's activation columns are clustered into visual words (diagonal Gaussian mixture). "
        "Bag-of-words error: a logistic regression on each image's word histogram, trained on the fitting images and scored on "
        f"{len(result.validation_index)} held-out images; the max-channel baseline assigns each column to its most active channel."
    )
    section.table(quality, "Dictionary quality per layer, input to output")
    fig, (left, right) = figure(width=10, height=3.6, ncols=2)
    positions = np.arange(len(quality))
    left.plot(positions, quality["bow_error"], "o-", label=f"{result.dictionary.loss} words")
    left.plot(positions, quality["bow_error_max_channel"], "s--", label="max channel")
    left.set(xticks=positions, xlabel="layer", ylabel="BoW classification error (fraction)", title="Errors fall with depth")
    left.set_xticklabels(quality["name"], rotation=30, ha="right")
    left.legend()
    right.plot(positions, quality["purity"], "o-", label=f"{result.dictionary.loss} words")
    right.plot(positions, quality["purity_max_channel"], "s--", label="max channel")
    right.set(xticks=positions, xlabel="layer", ylabel="cluster purity (fraction)", title="Purity rises with depth")
    right.set_xticklabels(quality["name"], rotation=30, ha="right")
    right.legend()
    section.figure(fig, "Bag-of-words error and cluster purity per layer.", filename="sign_quality.png")
    section.figure(centre_figure(result), "Distances between word centres, words ordered by dominant class (colour bar on the axes).")
    return section


def centre_figure(result: SignFit):
    """One heat map per layer of the distances between word centres, ordered by dominant class."""
    from phenolens.report.figures import class_colors, figure

    layers = result.dictionary.layers_
    fig, axes = figure(width=3.2 * len(layers), height=3.4, ncols=len(layers), squeeze=False)
    colours = class_colors(len(result.classifier.class_names))
    labels = result.images.labels[result.validation_index]
    for axis, layer in zip(axes[0], layers):
        dictionary = result.dictionary.dictionaries_[layer]
        counts = class_counts(result.builder.maps_.words[layer], labels, dictionary.n_words, len(colours))
        _, dominant, distances = centre_distances(dictionary.centres(), counts)
        axis.imshow(distances, cmap="viridis")
        axis.scatter(np.full(len(dominant), -1.5), np.arange(len(dominant)), c=[colours[d] for d in dominant], s=6, marker="s", clip_on=False)
        axis.set(title=layer, xlabel="word (by dominant class)", ylabel="word (by dominant class)", xticks=[], yticks=[])
    return fig


def class_and_image_graphs(result: SignFit, folder: Path, classes: list[str] | None = None, image_graphs: bool = True) -> tuple[Section, dict]:
    """Class graphs (and one image graph per class: its most confidently correct validation image)
    written into `folder`; returns the report section and a metrics summary."""
    from phenolens.explain.sign.drawing import write_graph

    builder, display = result.builder, result.display()
    labels = result.images.labels[result.validation_index]
    predicted = builder.maps_.words[OUTPUT].ravel()
    names = classes or [result.classifier.class_names[c] for c in np.unique(predicted)]
    section = Section("SIGN inference graphs")
    section.text(
        "Words chosen by maximum-likelihood node selection, top layer first; each word shows its six most probable validation "
        "examples (receptive-field patches, or the whole image with a red box when the field covers over a quarter of it). "
        "Arrows: each lower word's two strongest connections, coloured by log P(lower|upper)/P(lower): black < 1, light green "
        "1-2, mid green 2-3, dark green >= 3."
    )
    summary = {}
    for name in names:
        index = builder.class_index(name)
        graph = builder.class_graph(name)
        stem = f"class_{index:02d}"
        png, table = write_graph(graph, builder, display, folder, stem)
        section.figure(png, f"Class graph of {name} ({len(graph.images)} validation images predicted as it).").table(table, f"Nodes of {name}")
        summary[name] = {"images": len(graph.images), "nodes": [n.key for n in graph.nodes], "graph": f"{stem}.json"}
        correct = np.flatnonzero((predicted == index) & (labels == index))
        if image_graphs and len(correct):
            chosen = correct[np.argmax(builder.maps_.probabilities[correct, index])]
            inputs = builder.images_[chosen].numpy()
            image_graph = builder.image_graph(inputs, label=f"validation image {int(result.validation_index[chosen])} ({name})")
            png, _ = write_graph(image_graph, builder, display, folder, f"image_{index:02d}", image=display[chosen])
            section.figure(png, f"Image graph of a validation image of {name}; red dots mark where each word occurs.")
            summary[name]["image_graph"] = f"image_{index:02d}.json"
    return section, summary


def save_sign(result: SignFit, folder: Path, source: dict) -> None:
    """Make `folder` a self-contained SIGN run: the classifier, the dictionaries, the split, the
    quality table and `run.json` (how to re-read the images: `source` as given to the CLI)."""
    from phenolens.core.outputs import write_json

    result.classifier.save(folder / "model")
    result.dictionary.save(folder / "dictionary")
    np.savez(folder / "split.npz", fit=result.fit_index, validation=result.validation_index)
    result.quality.to_csv(folder / "quality.csv", index=False)
    write_json(folder / "run.json", {"source": source, "nodes_per_layer": result.builder.nodes_per_layer, "seed": result.dictionary.seed})


def load_sign(folder: Path, read_source, nodes_per_layer: int | None = None) -> SignFit:
    """Reload a run written by `save_sign`; `read_source(source) -> ImageSet` re-reads its images.

    The validation statistics are recounted (they are cheap next to fitting)."""
    import json

    import torch

    folder = Path(folder)
    config = folder / "run.json"
    if not config.is_file():
        raise PhenolensError(f"{config}: not a SIGN run folder; give the --out folder of `phenolens sign fit`")
    run = json.loads(config.read_text())
    classifier = ImageClassifier.load(folder / "model")
    labelled = read_source(run["source"]).labelled()
    split_file = np.load(folder / "split.npz")
    fit_index, validation_index = split_file["fit"], split_file["validation"]
    if max(fit_index.max(), validation_index.max()) >= len(labelled):
        raise PhenolensError(
            f"{folder / 'split.npz'}: indices beyond the {len(labelled)} labelled images of {run['source']}; the images changed, refit"
        )
    inputs = classifier.array(labelled.subset(validation_index))
    dictionary = SignDictionary.load(folder / "dictionary", classifier.model, torch.from_numpy(inputs[:1]))
    builder = InferenceGraphBuilder(dictionary, nodes_per_layer or run["nodes_per_layer"], class_names=classifier.class_names)
    builder.fit(inputs, labelled.labels[validation_index])
    quality = pd.read_csv(folder / "quality.csv")
    return SignFit(classifier, labelled, fit_index, validation_index, dictionary, builder, quality)
