"""The biased-data experiment: a letter stamped into two classes, found again by the class graphs.

A semi-transparent (alpha = 0.5) letter is stamped at a random position into every image of two
classes; a CNN trained on these images can use the letter as a shortcut. For each class graph the
check asks whether the selected words of some modelled layer occur with their receptive-field
centre inside the stamp box at >= 3x the rate expected by chance (per selected word that occurs at
least MIN_OCCURRENCES times, the best word of the best layer counts). Every image, stamped or not,
gets a random box; for clean images it marks where a stamp would have gone, so the same rate
measured there is the control.
"""

from __future__ import annotations

import numpy as np

from phenolens.core.seeding import numpy_rng
from phenolens.data.containers import ImageSet
from phenolens.explain.sign.graph import InferenceGraphBuilder
from phenolens.explain.sign.layers import OUTPUT
from phenolens.explain.sign.selection import InferenceGraph

ALPHA = 0.5
THRESHOLD = 3.0
MIN_OCCURRENCES = 20


def letter_glyph(letter: str = "A", size: int = 10) -> np.ndarray:
    """A (size, size) float mask in [0, 1] of `letter` rendered with PIL's default font, cropped and scaled."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=4 * size)
    canvas = Image.new("L", (6 * size, 6 * size), 0)
    ImageDraw.Draw(canvas).text((size, size), letter, fill=255, font=font)
    box = canvas.getbbox()
    glyph = canvas.crop(box).resize((size, size), Image.Resampling.LANCZOS)
    return np.clip(np.asarray(glyph, dtype=np.float32) / 255.0, 0.0, 1.0)


def stamp_images(images: ImageSet, classes: list[int], glyph: np.ndarray, alpha: float = ALPHA, seed: int = 0) -> tuple[ImageSet, np.ndarray]:
    """Blend `glyph` with opacity `alpha` into every image of `classes` at a random position, in white
    or black ink, whichever contrasts with the pixels under it; return the new ImageSet and every
    image's (N, 4) inclusive box (top, left, bottom, right)."""
    array = images.padded().astype(np.float32)
    height, width = array.shape[2:]
    rng = numpy_rng(seed)
    tops = rng.integers(0, height - glyph.shape[0] + 1, len(array))
    lefts = rng.integers(0, width - glyph.shape[1] + 1, len(array))
    boxes = np.stack([tops, lefts, tops + glyph.shape[0] - 1, lefts + glyph.shape[1] - 1], 1)
    stamped = np.isin(images.labels, classes)
    # a (N, H, W) opacity map: the glyph placed at each image's box, only for stamped images
    rows = tops[:, None] + np.arange(glyph.shape[0])[None]
    cols = lefts[:, None] + np.arange(glyph.shape[1])[None]
    opacity = np.zeros((len(array), height, width), dtype=np.float32)
    opacity[np.arange(len(array))[:, None, None], rows[:, :, None], cols[:, None, :]] = alpha * glyph[None]
    opacity *= stamped[:, None, None]
    full = float(np.iinfo(images.images.dtype).max) if np.issubdtype(np.asarray(images.images).dtype, np.integer) else float(array.max())
    # the ink contrasts with what lies under the stamp: white on dark background, black on a bright garment
    under = array.mean(1)[np.arange(len(array))[:, None, None], rows[:, :, None], cols[:, None, :]].mean((1, 2))
    ink = np.where(under < full / 2, full, 0.0)[:, None, None, None]
    blended = (1.0 - opacity[:, None]) * array + opacity[:, None] * ink
    meta = images.meta.assign(stamped=stamped, box_top=boxes[:, 0], box_left=boxes[:, 1], box_bottom=boxes[:, 2], box_right=boxes[:, 3])
    result = ImageSet(
        blended.astype(np.float32), images.labels, list(images.class_names), list(images.channel_names), meta, name=f"{images.name}-stamped"
    )
    return result, boxes


def stamp_rates(builder: InferenceGraphBuilder, graph: InferenceGraph, boxes: np.ndarray, min_occurrences: int = MIN_OCCURRENCES) -> dict[str, dict]:
    """Per modelled layer and selected word: the share of the word's occurrences in Omega's images whose
    field centre lies inside the image's box, over the share expected by chance (the share of all
    positions whose centre lies inside, averaged over Omega). `boxes` are the validation images' boxes.

    A layer's `ratio` is its largest word ratio among selected words occurring at least
    `min_occurrences` times (rarer words give noisy rates); `all_selected` pools the selected words."""
    rates = {}
    omega = graph.images
    for layer in graph.layers:
        if layer == OUTPUT:
            continue
        centres = builder.dictionary.fields_.input_centres(layer)  # (H, W, 2)
        box = boxes[omega][:, None, None, :]
        inside = (
            (centres[None, ..., 0] >= box[..., 0]) & (centres[None, ..., 0] <= box[..., 2])
            & (centres[None, ..., 1] >= box[..., 1]) & (centres[None, ..., 1] <= box[..., 3])
        )  # fmt: skip
        chance = float(inside.mean())
        words = builder.maps_.words[layer][omega]
        per_word = {}
        for node in graph.nodes_of(layer):
            holding = words == node.word
            count = int(holding.sum())
            share = float((inside & holding).sum() / max(count, 1))
            per_word[node.word] = {"occurrences": count, "inside_share": share, "ratio": share / chance if chance > 0 else 0.0}
        selected = np.isin(words, [n.word for n in graph.nodes_of(layer)])
        pooled = float((inside & selected).sum() / max(selected.sum(), 1)) / chance if chance > 0 else 0.0
        frequent = [w["ratio"] for w in per_word.values() if w["occurrences"] >= min_occurrences]
        rates[layer] = {"chance": chance, "ratio": max(frequent, default=0.0), "all_selected": pooled, "words": per_word}
    return rates


def watermark_check(builder: InferenceGraphBuilder, boxes: np.ndarray, stamped_classes: list[int]) -> dict[str, dict]:
    """Class -> {stamped, stamp_ratio (the largest layer ratio), passes (ratio >= 3), layers} for every class with a graph."""
    results = {}
    predicted = np.unique(builder.maps_.words[OUTPUT].ravel())
    for index in predicted:
        graph = builder.class_graph(int(index))
        rates = stamp_rates(builder, graph, boxes)
        best = max(rates.values(), key=lambda r: r["ratio"])["ratio"]
        results[builder.class_name(int(index))] = {
            "stamped": bool(index in stamped_classes),
            "stamp_ratio": best,
            "passes": bool(best >= THRESHOLD),
            "layers": rates,
        }
    return results


def watermark_experiment(
    seed: int = 0,
    stamped: tuple[str, ...] = ("Pullover", "Shirt"),
    letter: str = "A",
    glyph_size: int = 10,
    n_train: int = 24000,
    n_test: int = 2000,
    cnn_epochs: int = 12,
    words: int = 64,
    dictionary_epochs: int = 4,
    nodes_per_layer: int = 5,
):
    """Stamp, train a CNN, fit dictionaries and check every class graph, on Fashion-MNIST.

    Returns (per-class results, the SignFit, the validation images' boxes, the stamped ImageSet).
    """
    from phenolens.core.errors import PhenolensError
    from phenolens.data import load
    from phenolens.explain.sign.pipeline import fit_sign
    from phenolens.training import fit_classifier

    fashion = load("fashion-mnist")
    unknown = [name for name in stamped if name not in fashion.class_names]
    if unknown:
        raise PhenolensError(f"unknown class {unknown[0]!r} to stamp; choose from: {', '.join(fashion.class_names)}")
    stamped_index = [fashion.class_names.index(name) for name in stamped]
    rng = numpy_rng(seed)
    split = fashion.meta["split"].to_numpy()
    train = fashion.subset(rng.choice(np.flatnonzero(split == "train"), n_train, replace=False))
    test = fashion.subset(rng.choice(np.flatnonzero(split == "test"), n_test, replace=False))
    glyph = letter_glyph(letter, glyph_size)
    train, _ = stamp_images(train, stamped_index, glyph, seed=seed)
    test, boxes = stamp_images(test, stamped_index, glyph, seed=seed + 1)
    classifier = fit_classifier(
        train, "resnet18", width=0.25, blocks=[1, 1, 1], stem_stride=1, epochs=cnn_epochs, batch_size=64, loss="softmax",
        augment=False, pseudo_labels=False, validation_fraction=0.1, seed=seed, description="watermark CNN",
    )  # fmt: skip
    result = fit_sign(
        classifier, test, layers=["stage1", "stage2", "stage3"], words=words, epochs=dictionary_epochs, nodes_per_layer=nodes_per_layer,
        validation_fraction=0.5, seed=seed,
    )  # fmt: skip
    results = watermark_check(result.builder, boxes[result.validation_index], stamped_index)
    return results, result, boxes, test
