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

from dataclasses import dataclass

import numpy as np

from phenolens.core.seeding import numpy_rng
from phenolens.data.containers import ImageSet
from phenolens.explain.sign.graph import InferenceGraphBuilder
from phenolens.explain.sign.layers import OUTPUT
from phenolens.explain.sign.pipeline import SignFit, fit_sign
from phenolens.explain.sign.selection import InferenceGraph
from phenolens.explain.sign.settings import SignFitSettings, WatermarkSettings

ALPHA = 0.5
THRESHOLD = 3.0
MIN_OCCURRENCES = 20


def letter_glyph(letter: str = "A", size: int = 10) -> np.ndarray:
    """A letter as an opacity mask.

    Parameters
    ----------
    letter : str
        One character, rendered with PIL's default font.
    size : int
        Side of the mask in pixels.

    Returns
    -------
    ndarray
        (size, size) float mask in [0, 1], cropped to the glyph and scaled.
    """
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=4 * size)
    canvas = Image.new("L", (6 * size, 6 * size), 0)
    ImageDraw.Draw(canvas).text((size, size), letter, fill=255, font=font)
    box = canvas.getbbox()
    glyph = canvas.crop(box).resize((size, size), Image.Resampling.LANCZOS)
    return np.clip(np.asarray(glyph, dtype=np.float32) / 255.0, 0.0, 1.0)


def stamp_images(images: ImageSet, classes: list[int], glyph: np.ndarray, alpha: float = ALPHA, seed: int = 0) -> tuple[ImageSet, np.ndarray]:
    """Blend a glyph into every image of some classes at a random position.

    The ink is white or black, whichever contrasts with the pixels under the stamp. Every image
    gets a box, stamped or not (for clean images it marks where a stamp would have gone).

    Parameters
    ----------
    images : ImageSet
        The images (left unchanged).
    classes : list of int
        Class indices to stamp.
    glyph : ndarray
        (h, w) opacity mask in [0, 1].
    alpha : float
        Opacity of the stamp.
    seed : int
        Seed of the positions.

    Returns
    -------
    tuple of (ImageSet, ndarray)
        The stamped images (float32; ``meta`` gains ``stamped`` and the box columns) and every
        image's (N, 4) inclusive box (top, left, bottom, right).
    """
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
    """How often a graph's selected words sit inside the stamp box, over chance.

    Per modelled layer and selected word: the share of the word's occurrences in Omega's images
    whose field centre lies inside the image's box, over the share expected by chance (the share of
    all positions whose centre lies inside, averaged over Omega).

    Parameters
    ----------
    builder : InferenceGraphBuilder
        Fitted on the validation images.
    graph : InferenceGraph
        A class graph of `builder`.
    boxes : ndarray
        (N, 4) boxes of the validation images.
    min_occurrences : int
        Words rarer than this give noisy rates and do not count towards a layer's ratio.

    Returns
    -------
    dict of str to dict
        Layer -> ``chance``, ``ratio`` (the largest word ratio among frequent selected words),
        ``all_selected`` (the ratio of the selected words pooled) and ``words`` (per word).
    """
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
    """Check every class graph for the stamp.

    Parameters
    ----------
    builder : InferenceGraphBuilder
        Fitted on the validation images.
    boxes : ndarray
        (N, 4) boxes of the validation images.
    stamped_classes : list of int
        The stamped classes.

    Returns
    -------
    dict of str to dict
        Class name -> ``stamped``, ``stamp_ratio`` (the largest layer ratio), ``passes``
        (ratio >= THRESHOLD) and ``layers`` (see `stamp_rates`), for every predicted class.
    """
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


def watermark_experiment(settings: WatermarkSettings, seed: int) -> tuple[dict[str, dict], SignFit, np.ndarray, ImageSet]:
    """Stamp, train a CNN, fit dictionaries and check every class graph, on Fashion-MNIST, for one seed.

    Parameters
    ----------
    settings : WatermarkSettings
        Stamped classes, letter, image counts, training and dictionary settings.
    seed : int
        Seed of the samples, the stamps, the CNN and the dictionaries.

    Returns
    -------
    tuple
        (class -> `watermark_check` result, the SignFit, the test images' (N, 4) stamp boxes, the stamped test ImageSet).

    Raises
    ------
    PhenolensError
        When Fashion-MNIST is missing or a stamped class is not one of its classes.
    """
    from phenolens.core.errors import PhenolensError
    from phenolens.data import load
    from phenolens.training import fit_classifier

    fashion = load("fashion-mnist")
    unknown = [name for name in settings.stamped if name not in fashion.class_names]
    if unknown:
        raise PhenolensError(f"unknown class {unknown[0]!r} to stamp; choose from: {', '.join(fashion.class_names)}")
    stamped_index = [fashion.class_names.index(name) for name in settings.stamped]
    rng = numpy_rng(seed)
    split = fashion.meta["split"].to_numpy()
    train = fashion.subset(rng.choice(np.flatnonzero(split == "train"), settings.train_images, replace=False))
    test = fashion.subset(rng.choice(np.flatnonzero(split == "test"), settings.test_images, replace=False))
    for images, option in ((train, "--train-images"), (test, "--test-images")):
        # each side is split again by class (the CNN's validation images, the dictionaries' half)
        if np.bincount(images.labels, minlength=len(fashion.class_names)).min() < 2:
            raise PhenolensError(f"{option} {len(images)} drew fewer than 2 images of a class (seed {seed}); raise {option}")
    glyph = letter_glyph(settings.letter, settings.glyph_size)
    train, _ = stamp_images(train, stamped_index, glyph, seed=seed)
    test, boxes = stamp_images(test, stamped_index, glyph, seed=seed + 1)
    classifier = fit_classifier(
        train, "resnet18", width=0.25, blocks=[1, 1, 1], stem_stride=1, epochs=settings.cnn_epochs, batch_size=64, loss="softmax",
        augment=False, pseudo_labels=False, validation_fraction=0.1, seed=seed, description="watermark CNN",
    )  # fmt: skip
    sign_settings = SignFitSettings(layers=("stage1", "stage2", "stage3"), words=(settings.words,), epochs=settings.epochs,
                                    nodes_per_layer=settings.nodes_per_layer, validation_fraction=0.5, seed=seed)  # fmt: skip
    result = fit_sign(classifier, test, sign_settings)
    results = watermark_check(result.builder, boxes[result.validation_index], stamped_index)
    return results, result, boxes, test


@dataclass
class WatermarkStudy:
    """The watermark experiment over several seeds.

    Attributes
    ----------
    settings : WatermarkSettings
        What was run.
    per_seed : dict of int to dict
        Seed -> class -> `watermark_check` result.
    fits : dict of int to SignFit
        Seed -> the fit whose class graphs were checked.
    """

    settings: WatermarkSettings
    per_seed: dict[int, dict[str, dict]]
    fits: dict[int, SignFit]

    def summary(self) -> dict[str, dict]:
        """Per class: stamped or not, mean stamp ratio, and the ratio and verdict per seed.

        Returns
        -------
        dict of str to dict
        """
        classes = sorted({name for results in self.per_seed.values() for name in results})
        return {
            name: {
                "stamped": name in self.settings.stamped,
                "stamp_ratio": float(np.mean([r[name]["stamp_ratio"] for r in self.per_seed.values() if name in r])),
                "stamp_ratio_per_seed": {str(s): r[name]["stamp_ratio"] for s, r in self.per_seed.items() if name in r},
                "passes_per_seed": {str(s): r[name]["passes"] for s, r in self.per_seed.items() if name in r},
            }
            for name in classes
        }

    def check(self) -> dict[str, bool]:
        """Whether every stamped class passes, and every clean class fails, on every seed.

        Returns
        -------
        dict of str to bool
            ``stamped_pass_every_seed`` and ``clean_fail_every_seed``.
        """
        summary = self.summary()
        return {
            "stamped_pass_every_seed": all(all(v["passes_per_seed"].values()) for v in summary.values() if v["stamped"]),
            "clean_fail_every_seed": all(not any(v["passes_per_seed"].values()) for v in summary.values() if not v["stamped"]),
        }

    def metrics(self) -> dict:
        """metrics.json: ``classes`` (the summary), ``check`` and the full ``seeds`` results.

        Returns
        -------
        dict
        """
        return {"classes": self.summary(), "check": self.check(), "seeds": {str(s): r for s, r in self.per_seed.items()}}


def watermark_study(settings: WatermarkSettings) -> WatermarkStudy:
    """Run `watermark_experiment` for every seed of `settings`.

    Parameters
    ----------
    settings : WatermarkSettings
        The experiment.

    Returns
    -------
    WatermarkStudy

    Raises
    ------
    PhenolensError
        See `watermark_experiment`.
    """
    per_seed, fits = {}, {}
    for seed in settings.seeds:
        per_seed[seed], fits[seed], _, _ = watermark_experiment(settings, seed)
    return WatermarkStudy(settings, per_seed, fits)
