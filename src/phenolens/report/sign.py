"""SIGN report sections: dictionary quality, class and image graphs, MLP inference paths with their
decision junctions, and the watermark experiment. The algorithms live in `phenolens.explain.sign`;
this module only draws what they return (graph drawing itself is in `phenolens.report.sign_drawing`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from phenolens.core.errors import PhenolensError
from phenolens.explain.sign.layers import OUTPUT
from phenolens.explain.sign.paths import Junction, MlpPaths, decision_junction
from phenolens.explain.sign.pipeline import SignFit
from phenolens.explain.sign.quality import centre_distances, class_counts
from phenolens.explain.sign.watermark import THRESHOLD, WatermarkStudy
from phenolens.report.explorer.sign import sign_graph_view
from phenolens.report.figures import class_colors, figure
from phenolens.report.html import Section
from phenolens.report.sign_drawing import write_graph


def quality_section(result: SignFit) -> Section:
    """Report section of a fit: BoW error and purity per layer against the max-channel baseline, centre distances.

    Parameters
    ----------
    result : SignFit
        The fit.

    Returns
    -------
    Section
    """
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
    left.set(xticks=positions, xlabel="layer", ylabel="BoW classification error (fraction)", title="Bag-of-words error per layer")
    left.set_xticklabels(quality["name"], rotation=30, ha="right")
    left.legend()
    right.plot(positions, quality["purity"], "o-", label=f"{result.dictionary.loss} words")
    right.plot(positions, quality["purity_max_channel"], "s--", label="max channel")
    right.set(xticks=positions, xlabel="layer", ylabel="cluster purity (fraction)", title="Cluster purity per layer")
    right.set_xticklabels(quality["name"], rotation=30, ha="right")
    right.legend()
    section.figure(fig, "Bag-of-words error and cluster purity per layer.", filename="sign_quality.png")
    section.figure(
        centre_figure(result),
        "Euclidean distances between word centres (colour bar: distance in the layer's activation units), words ordered by "
        "dominant class; the strip left of each map marks each word's dominant class on the validation images.",
    )
    return section


def centre_figure(result: SignFit):
    """One heat map per layer of the distances between word centres, ordered by dominant class.

    Parameters
    ----------
    result : SignFit
        The fit.

    Returns
    -------
    matplotlib.figure.Figure
    """
    layers = result.dictionary.layers_
    fig, axes = figure(width=3.8 * len(layers), height=3.9, ncols=len(layers), squeeze=False, layout="constrained")
    colours = class_colors(len(result.classifier.class_names))
    labels = result.images.labels[result.validation_index]
    for axis, layer in zip(axes[0], layers):
        dictionary = result.dictionary.dictionaries_[layer]
        counts = class_counts(result.builder.maps_.words[layer], labels, dictionary.n_words, len(colours))
        _, dominant, distances = centre_distances(dictionary.centres(), counts)
        image = axis.imshow(distances, cmap="viridis")
        axis.scatter(np.full(len(dominant), -1.5), np.arange(len(dominant)), c=[colours[d] for d in dominant], s=6, marker="s", clip_on=False)
        axis.set(title=layer, xlabel="word (by dominant class)", ylabel="word (by dominant class)", xticks=[], yticks=[])
        fig.colorbar(image, ax=axis, label="distance between word means", shrink=0.8)
    handles = [Line2D([], [], marker="s", ls="", color=colour, label=name) for colour, name in zip(colours, result.classifier.class_names)]
    fig.legend(handles=handles, title="dominant class", loc="outside lower center", ncols=min(len(handles), 6), fontsize=8)
    return fig


def class_and_image_graphs(result: SignFit, folder: Path, classes: list[str] | None = None, image_graphs: bool = True) -> tuple[Section, dict]:
    """Draw class graphs, and one image graph per class (its most confidently correct validation image).

    Parameters
    ----------
    result : SignFit
        The fit.
    folder : Path
        Receives ``class_NN.{png,svg,json}`` and ``image_NN.{png,svg,json}``.
    classes : list of str, optional
        Class names (default: every class some validation image is predicted as).
    image_graphs : bool
        Also draw one image graph per class.

    Returns
    -------
    tuple of (Section, dict)
        The report section and, per class, the images in Omega, the nodes and the graph files.

    Raises
    ------
    PhenolensError
        For an unknown class or one no validation image is predicted as.
    """
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
        section.view(sign_graph_view(graph, builder, display))
        section.figure(png, f"Class graph of {name} ({len(graph.images)} validation images predicted as it).").table(table, f"Nodes of {name}")
        summary[name] = {"images": len(graph.images), "nodes": [n.key for n in graph.nodes], "graph": f"{stem}.json"}
        correct = np.flatnonzero((predicted == index) & (labels == index))
        if image_graphs and len(correct):
            chosen = correct[np.argmax(builder.maps_.probabilities[correct, index])]
            inputs = builder.images_[chosen].numpy()
            image_graph = builder.image_graph(inputs, label=f"validation image {int(result.validation_index[chosen])} ({name})")
            png, _ = write_graph(image_graph, builder, display, folder, f"image_{index:02d}", image=display[chosen])
            section.view(sign_graph_view(image_graph, builder, display, image=display[chosen]))
            section.figure(png, f"Image graph of a validation image of {name}; red dots mark where each word occurs.")
            summary[name]["image_graph"] = f"image_{index:02d}.json"
    return section, summary


def image_graph_section(result: SignFit, raw: np.ndarray, name: str, folder: Path) -> tuple[Section, dict]:
    """Draw the image graph of one image outside the fit.

    Parameters
    ----------
    result : SignFit
        The fit.
    raw : ndarray
        (C, H, W) raw image, as read from its file.
    name : str
        How to name the image (its file name).
    folder : Path
        Receives ``image.{png,svg,json}``.

    Returns
    -------
    tuple of (Section, dict)
        The report section and the metrics (kind, image, predicted class, nodes).
    """
    from phenolens.training.preprocess import padded_array

    inputs = result.classifier.array(raw[None])
    graph = result.builder.image_graph(inputs[0], label=name)
    display = padded_array(raw[None], result.classifier.size, result.classifier.channel_names)
    png, table = write_graph(graph, result.builder, result.display(), folder, "image", image=display[0])
    section = Section("SIGN image graph").view(sign_graph_view(graph, result.builder, result.display(), image=display[0]))
    section.figure(png, f"Image graph of {name}; red dots mark where each word occurs.").table(table)
    predicted = int(graph.word_maps.predictions[0])
    metrics = {"kind": "image", "image": name, "predicted": result.classifier.class_names[predicted], "nodes": [n.key for n in graph.nodes]}
    return section, metrics


def junction_figure(junction: Junction, display: np.ndarray):
    """Draw a decision junction: the LDA scatter of its branches and three typical images per branch.

    Parameters
    ----------
    junction : Junction
        From `phenolens.explain.sign.paths.decision_junction`.
    display : ndarray
        (N, C, H, W) raw images of the modelled examples.

    Returns
    -------
    matplotlib.figure.Figure
    """
    kept = junction.kept
    colours = class_colors(len(kept))
    fig, axes = figure(width=10, height=max(3.5, 1.1 * len(kept)), ncols=4, squeeze=False, gridspec_kw={"width_ratios": [3, 1, 1, 1]})
    scatter = axes[0, 0]
    for colour, branch in zip(colours, kept):
        chosen = junction.branches == branch
        projected = junction.projected[chosen]
        scatter.scatter(projected[:, 0], projected[:, 1], s=8, color=colour, label=f"-> state {branch} ({chosen.sum()})")
    scatter.set(xlabel="LDA 1 (a.u.)", ylabel=f"{junction.second_axis} (a.u.)", title=f"Layer {junction.layer + 1}, state {junction.state}")
    scatter.legend(fontsize=7)
    for axis in axes[0, 1:]:
        axis.remove()
    grid = fig.add_gridspec(len(kept), 3, left=0.55, right=0.98, wspace=0.05, hspace=0.15)
    for row, branch in enumerate(kept):
        for col, example in enumerate(junction.typical[int(branch)]):
            axis = fig.add_subplot(grid[row, col])
            axis.imshow(display[example].mean(0), cmap="gray", interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if col == 0:
                axis.set_ylabel(f"state {branch}", fontsize=7, color=colours[row])
    return fig


def paths_section(result: MlpPaths) -> Section:
    """Report section of `phenolens sign hmm`: purity per layer and the example's decision junctions.

    Parameters
    ----------
    result : MlpPaths
        The modelled paths.

    Returns
    -------
    Section
    """
    metrics = result.metrics()
    section = Section("MLP inference paths (rectified-Gaussian HMM)").table(pd.DataFrame(metrics["layers"]), "Cluster purity per hidden layer")
    example, display = result.example, result.display()
    for layer in range(len(result.activations) - 1):
        try:
            junction = decision_junction(result.hmm, result.activations, result.paths, layer, int(result.paths[example, layer]))
        except PhenolensError as skipped:
            section.text(f"No junction at layer {layer + 1}: {skipped}")
            continue
        fig = junction_figure(junction, display)
        section.figure(fig, f"Decision junction of example {example} at hidden layer {layer + 1}.", filename=f"junction_{layer + 1}.png")
    return section


def watermark_section(study: WatermarkStudy, folder: Path) -> Section:
    """Report section of the watermark experiment, with the stamped classes' graphs of every seed.

    Parameters
    ----------
    study : WatermarkStudy
        The experiment's results.
    folder : Path
        Receives ``seedS_CLASS.{png,svg,json}``.

    Returns
    -------
    Section
    """
    settings = study.settings
    section = Section("Biased data: a stamped letter")
    section.text(
        f"The letter {settings.letter!r} is blended (alpha 0.5) at a random position into every image of {', '.join(settings.stamped)}. "
        f"The check: the selected words of some modelled layer have their receptive-field centre inside the stamp box >= {THRESHOLD:g}x "
        "as often as chance (for clean images, inside a random box where a stamp would have been)."
    )
    for seed, fitted in study.fits.items():
        display = fitted.display()
        for name in settings.stamped:
            if name in study.per_seed[seed]:
                png, _ = write_graph(fitted.builder.class_graph(name), fitted.builder, display, folder, f"seed{seed}_{name}")
                section.figure(png, f"Seed {seed}: class graph of the stamped class {name}.")
    rows = [
        {"class": name, "stamped": values["stamped"], **{f"ratio seed {s}": x for s, x in values["stamp_ratio_per_seed"].items()}}
        for name, values in study.summary().items()
    ]
    section.table(pd.DataFrame(rows), "Stamp ratio (observed / chance) of the best layer, per class and seed")
    return section
