"""Explain an image classifier on a set of images: maps per method, channel importance, per-class
summaries, faithfulness, the randomisation sanity check and (when a DNA channel is named) the
share of attribution inside the nucleus. `explain_images` gathers them for a classifier in memory;
`explain_model` for a saved model folder (held-out or out-of-fold images); `Explanation.metrics()`
is what `phenolens images explain` writes to metrics.json."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from phenolens.core.errors import PhenolensError
from phenolens.core.seeding import numpy_rng
from phenolens.data.containers import UNLABELLED, ImageSet
from phenolens.data.nuclei import nucleus_masks
from phenolens.explain.attribution import (
    AttributionSettings,
    attribute,
    attribute_tensor,
    baseline_tensor,
    inputs_per_pass,
    is_spatial_only,
    prepare_model,
    resolve_targets,
)
from phenolens.explain.channels import attribution_share, cam_concordance, channel_occlusion, per_class_table
from phenolens.explain.faithfulness import deletion_insertion, map_ssim, randomized_copy
from phenolens.explain.masks import nucleus_mass_fraction
from phenolens.explain.selection import at_most, held_out_sources, out_of_fold_parts, select_images
from phenolens.training.classifier import ImageClassifier
from phenolens.training.preprocess import padded_array


@dataclass
class Explanation:
    """Everything computed for one set of images (arrays are per image, in input geometry)."""

    class_names: list[str]
    channel_names: list[str]
    raw: np.ndarray  # (N, C, S, S) padded crops before standardisation (intensity-normalised with --intensity-normalization)
    labels: np.ndarray  # -1 where unknown
    proba: np.ndarray
    targets: np.ndarray
    maps: dict[str, np.ndarray]
    channel_occlusion: np.ndarray  # (N, C)
    cam_concordance: np.ndarray  # (N, C)
    faithfulness: dict[str, dict] = field(default_factory=dict)
    sanity_ssim: dict[str, np.ndarray] = field(default_factory=dict)
    nucleus_masks: np.ndarray | None = None
    nucleus_fraction: dict[str, np.ndarray] = field(default_factory=dict)
    cell_fraction: dict[str, np.ndarray] = field(default_factory=dict)  # reporter mass inside the non-zero crop
    reporter_channel: str | None = None
    settings: dict = field(default_factory=dict)
    checked: np.ndarray | None = None  # (N,) bool: the images of the faithfulness check (its curves are theirs, in order)
    sanity_checked: np.ndarray | None = None  # (N,) bool: the images of the randomisation check

    @classmethod
    def concatenate(cls, parts: Sequence[Explanation]) -> Explanation:
        """One explanation of the images of all `parts`, in order (for example each cross-validation
        fold's model on its own held-out images). Per-image arrays are joined; class, channel and reporter
        names must agree; the first part's settings are kept.

        Parameters
        ----------
        parts : sequence of Explanation
            Explanations made with one set of options.

        Returns
        -------
        Explanation
            The pooled explanation.

        Raises
        ------
        PhenolensError
            When the parts differ in classes, channels or reporter channel.
        """
        first = parts[0]
        for part in parts[1:]:
            if (part.class_names, part.channel_names, part.reporter_channel) != (first.class_names, first.channel_names, first.reporter_channel):
                raise PhenolensError("explanations to pool must share classes, channels and reporter channel; explain them with one set of options")
        joined = {}
        for name, value in vars(first).items():
            values = [getattr(part, name) for part in parts]
            if isinstance(value, np.ndarray):
                joined[name] = np.concatenate(values)
            elif name == "faithfulness":
                methods = dict.fromkeys(method for v in values for method in v)  # a part may have no checked image
                joined[name] = {  # per-image curves and AUCs are joined; the shared pixel fractions are kept
                    method: {
                        key: np.concatenate([v[method][key] for v in values if method in v]) if key != "fractions" else kept
                        for key, kept in next(v[method] for v in values if method in v).items()
                    }
                    for method in methods
                }
            elif isinstance(value, dict) and name != "settings":
                keys = dict.fromkeys(key for v in values for key in v)
                joined[name] = {key: np.concatenate([v[key] for v in values if key in v]) for key in keys}
            else:
                joined[name] = value
        return cls(**joined)

    @property
    def predicted(self) -> np.ndarray:
        """The predicted class of each image.

        Returns
        -------
        ndarray
            (N,) class indices.
        """
        return self.proba.argmax(axis=1)

    @property
    def correct(self) -> np.ndarray:
        """Images whose label is known and predicted (the ones per-class summaries use).

        Returns
        -------
        ndarray
            (N,) bool.
        """
        return (self.labels != UNLABELLED) & (self.predicted == self.labels)

    def summary_labels(self) -> np.ndarray:
        """The class each image is summarised under: its label, or its prediction if unlabelled.

        Returns
        -------
        ndarray
            (N,) class indices.
        """
        return np.where(self.labels == UNLABELLED, self.predicted, self.labels)

    def channel_tables(self) -> dict:
        """Per-class tables: channel occlusion, CAM concordance, and each method's attribution share.

        Returns
        -------
        dict
            Name -> class x channel DataFrame.
        """
        correct = self.correct if self.correct.any() else np.ones(len(self.labels), bool)
        labels = self.summary_labels()
        tables = {
            "occlusion_logit_drop": per_class_table(self.channel_occlusion, labels, self.class_names, self.channel_names, correct),
            "cam_concordance": per_class_table(self.cam_concordance, labels, self.class_names, self.channel_names, correct),
        }
        for method, maps in self.maps.items():
            if not is_spatial_only(method):
                tables[f"{method}_share"] = per_class_table(attribution_share(maps), labels, self.class_names, self.channel_names, correct)
        return tables

    def metrics(self) -> dict:
        """JSON-ready results: channel_importance (class -> channel -> logit drop), cam_concordance,
        attribution shares, faithfulness (method -> AUCs), sanity SSIM and nucleus_mass_fraction.

        Returns
        -------
        dict
            What ``metrics.json`` holds.
        """
        tables = self.channel_tables()
        correct = self.correct
        labels = self.summary_labels()
        result = {
            "n_images": int(len(self.labels)),
            "n_correct": int(correct.sum()),
            "accuracy": float(correct.sum() / max((self.labels != UNLABELLED).sum(), 1)),
            **channel_metrics(tables),
            "faithfulness": {
                method: {"deletion_auc": float(np.mean(f["deletion_auc"])), "insertion_auc": float(np.mean(f["insertion_auc"]))}
                for method, f in self.faithfulness.items()
            },
            "sanity_ssim": {method: float(np.nanmean(values)) for method, values in self.sanity_ssim.items()},
            "settings": self.settings,
        }
        if self.nucleus_fraction:
            result["nucleus_reporter_channel"] = self.reporter_channel
            result["nucleus_mass_fraction"] = {
                method: {
                    name: _nanmean(fraction[correct & (labels == k)]) for k, name in enumerate(self.class_names) if (correct & (labels == k)).any()
                }
                for method, fraction in self.nucleus_fraction.items()
            }
            result["cell_mass_fraction"] = {method: _nanmean(fraction[correct]) for method, fraction in self.cell_fraction.items()}
        return result


def _nanmean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else None


def _nested(table) -> dict:
    return {str(cls): {str(ch): float(v) for ch, v in row.items()} for cls, row in table.iterrows()}


def channel_metrics(tables: dict) -> dict:
    """The channel part of ``metrics.json`` from the class x channel tables (`Explanation.channel_tables`), for one
    batch of images and for a whole screen alike.

    Parameters
    ----------
    tables : dict
        ``occlusion_logit_drop``, ``cam_concordance`` and ``METHOD_share`` tables (class x channel).

    Returns
    -------
    dict
        ``channel_importance`` and ``cam_concordance`` (class -> channel -> value) and ``attribution_share``
        (method -> class -> channel -> share).
    """
    return {
        "channel_importance": _nested(tables["occlusion_logit_drop"]),
        "cam_concordance": _nested(tables["cam_concordance"]),
        "attribution_share": {name[: -len("_share")]: _nested(t) for name, t in tables.items() if name.endswith("_share")},
    }


def channel_index(channel_names: Sequence[str], name: str, option: str) -> int:
    """Index of a channel name.

    Parameters
    ----------
    channel_names : sequence of str
        The model's channels.
    name : str
        The channel asked for.
    option : str
        The option that named it, for the message.

    Returns
    -------
    int
        Its index.

    Raises
    ------
    PhenolensError
        Naming the option and the channels when `name` is not one of them.
    """
    if name not in channel_names:
        raise PhenolensError(f"{option} {name!r} is not a channel of the model; its channels are {', '.join(channel_names)}")
    return list(channel_names).index(name)


def check_sample(count: int, settings: AttributionSettings) -> tuple[np.ndarray, np.ndarray]:
    """Which of `count` explained images the aggregate checks use: a seeded random sample of fixed size.

    One seeded permutation orders the images; the faithfulness check takes its first `check_images`
    (all when 0), the randomisation check its first `sanity_images` of those (never an image outside
    the faithfulness sample: a screen keeps both checks' results in one row per checked image). The
    sample depends only on the count and the seed, not on how the images are chunked or where the chunks run.

    Parameters
    ----------
    count : int
        Number of explained images.
    settings : AttributionSettings
        Supplies `check_images`, `sanity_images` and `seed`.

    Returns
    -------
    tuple of ndarray
        (count,) bool masks: faithfulness images, randomisation images.
    """
    order = numpy_rng(settings.seed).permutation(count)
    checked, sanity = np.zeros(count, bool), np.zeros(count, bool)
    faithfulness = order[: settings.check_images or count]
    checked[faithfulness] = True
    sanity[faithfulness[: settings.sanity_images]] = True
    return checked, sanity


def explain_images(
    classifier: ImageClassifier,
    images: ImageSet,
    settings: AttributionSettings | None = None,
    sample: tuple[np.ndarray, np.ndarray] | None = None,
    **changes: Any,
) -> Explanation:
    """Maps of every method for `images`, channel importance, faithfulness and sanity checks.

    Parameters
    ----------
    classifier : ImageClassifier
        The model.
    images : ImageSet
        The images to explain; channels and class labels are matched to the model's by name.
    settings : AttributionSettings, optional
        Methods, target, per-method options and checks (default: `AttributionSettings()`).
        `nucleus_channel` (a DNA stain) gives Otsu nucleus masks; `reporter_channel` (default: the
        first other channel) is the channel whose positive attribution mass is measured inside them.
        `subset` and `max_images` are not used here (see `explain_model`).
    sample : tuple of ndarray, optional
        (N,) bool masks of the images given to the faithfulness and randomisation checks (default:
        `check_sample` of these images).
    **changes
        Field values that replace those of `settings` (the same validated object).

    Returns
    -------
    Explanation
        Per-image arrays and per-method results.

    Raises
    ------
    PhenolensError
        For a channel name the model lacks, a bad target, or images that do not fit the model.
    """
    settings = settings if settings is not None else AttributionSettings()
    if changes:
        settings = settings.replace(**changes)
    images = classifier.conform(images)
    methods = list(settings.methods)
    nucleus = channel_index(classifier.channel_names, settings.nucleus_channel, "--nucleus-channel") if settings.nucleus_channel else None
    checked, sanity = sample if sample is not None else check_sample(len(images), settings)
    proba = classifier.predict_proba(images)
    target = settings.target
    targets = proba.argmax(1) if target == "predicted" else resolve_targets(classifier, images, target)
    maps = {method: attribute(classifier, images, method, targets, settings) for method in methods}
    cam = maps["gradcam"] if "gradcam" in maps else attribute(classifier, images, "gradcam", targets, settings)
    # the crops as the network reads them before standardising (intensity-normalised), taken as such: undoing the
    # standardisation leaves float32 rounding (~1e-7) on the black padding, which then counts as cell
    padded = padded_array(images, classifier.size, classifier.channel_names)
    raw = classifier.normalization.intensities(images, padded)
    explanation = Explanation(
        class_names=list(classifier.class_names),
        channel_names=list(classifier.channel_names),
        raw=raw,
        labels=np.asarray(images.labels),
        proba=proba,
        targets=targets,
        maps=maps,
        channel_occlusion=channel_occlusion(
            classifier, images, targets, inputs_per_pass(settings.forward_batch, classifier.size, len(classifier.channel_names) + 1)
        ),
        cam_concordance=cam_concordance(cam[:, 0], raw),
        settings=settings.to_dict(),
        checked=checked,
        sanity_checked=sanity,
    )
    inputs, covariates = classifier.tensor(images), classifier.covariates(images)
    baseline = baseline_tensor(classifier, settings.baseline)
    steps = settings.faithfulness_steps
    pass_size = inputs_per_pass(settings.forward_batch, classifier.size)
    per_pass = max(1, pass_size // (2 * (steps + 1)))
    if checked.any():
        chosen = torch.from_numpy(np.flatnonzero(checked))
        cov = None if covariates is None else covariates[chosen]
        for method, method_maps in maps.items():
            explanation.faithfulness[method] = deletion_insertion(
                classifier, inputs[chosen], method_maps[checked], targets[checked], baseline, cov, steps, per_pass, pass_size
            )
    if sanity.any():
        chosen = torch.from_numpy(np.flatnonzero(sanity))
        cov = None if covariates is None else covariates[chosen]
        explanation.sanity_ssim = sanity_check(
            classifier, inputs[chosen], targets[sanity], {m: v[sanity] for m, v in maps.items()}, settings, cov, settings.seed
        )
    if nucleus is not None:
        reporter_channel = settings.reporter_channel
        reporter = channel_index(classifier.channel_names, reporter_channel, "--reporter-channel") if reporter_channel else (1 if nucleus == 0 else 0)
        # segmented on the crops themselves: field-quantile maps the black padding to the reference's lowest level
        explanation.nucleus_masks = nucleus_masks(padded, nucleus)
        explanation.reporter_channel = classifier.channel_names[reporter]
        explanation.nucleus_fraction = {method: nucleus_mass_fraction(m, explanation.nucleus_masks, reporter) for method, m in maps.items()}
        # Segmented crops have a zero background: the share inside the cell shows maps that sit on the padding.
        cell = padded.sum(axis=1) > 0
        explanation.cell_fraction = {method: nucleus_mass_fraction(m, cell, reporter) for method, m in maps.items()}
    return explanation


def sanity_check(classifier, inputs, targets, maps: dict, settings: AttributionSettings, covariates=None, seed: int = 0) -> dict[str, np.ndarray]:
    """Per-method, per-image SSIM between the trained model's maps and a re-initialised model's.

    Parameters
    ----------
    classifier : ImageClassifier
        The trained model.
    inputs : Tensor
        Normalised inputs of the checked images.
    targets : ndarray
        Their target classes.
    maps : dict
        Method -> the trained model's maps (the first ``len(inputs)`` are compared).
    settings : AttributionSettings
        The methods' options.
    covariates : Tensor, optional
        Covariates of the images.
    seed : int
        Seed of the re-initialisation.

    Returns
    -------
    dict
        Method -> (len(inputs),) SSIM values.
    """
    random_model = randomized_copy(classifier.model, seed)
    target_tensor = torch.as_tensor(targets)
    baseline = baseline_tensor(classifier, settings.baseline)
    step = min(settings.batch_size, inputs_per_pass(settings.forward_batch, max(inputs.shape[2:])))
    result = {}
    for method, trained in maps.items():
        prepared = prepare_model(random_model, method)
        random_maps = [
            attribute_tensor(
                random_model,
                inputs[i : i + step],
                target_tensor[i : i + step],
                method,
                baseline,
                None if covariates is None else covariates[i : i + step],
                settings,
                prepared,
            )
            for i in range(0, len(inputs), step)
        ]
        result[method] = map_ssim(trained[: len(inputs)], torch.cat(random_maps).numpy())
    return result


@dataclass
class ModelExplanation:
    """What `explain_model` returns.

    Attributes
    ----------
    explanation : Explanation
        The maps and checks.
    images : ImageSet
        The explained images, in the explanation's order (in the model's class and channel terms).
    metrics : dict
        ``explanation.metrics()`` plus how the images were explained (``fold_images`` out of fold).
    """

    explanation: Explanation
    images: ImageSet
    metrics: dict

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays of attributions.npz: the crops as `Explanation.raw`, labels, targets, probabilities, channel checks, maps and nucleus masks.

        Returns
        -------
        dict
            Name -> array.
        """
        explanation = self.explanation
        arrays = {
            "images": explanation.raw.astype(np.float32),
            "labels": explanation.labels,
            "targets": explanation.targets,
            "proba": explanation.proba,
            "channel_occlusion": explanation.channel_occlusion,
            "cam_concordance": explanation.cam_concordance,
            **{f"maps_{method}": maps.astype(np.float32) for method, maps in explanation.maps.items()},
        }
        if explanation.nucleus_masks is not None:
            arrays["nucleus_masks"] = explanation.nucleus_masks
        return arrays

    def per_image_table(self) -> pd.DataFrame:
        """One row per explained image (see `per_image_rows`).

        Returns
        -------
        DataFrame
            What ``per_image.parquet`` holds.
        """
        return per_image_rows(self.explanation, self.images.meta, self.images.unlabelled_name)


def per_image_rows(explanation: Explanation, meta: pd.DataFrame, unlabelled_name: str = "Unlabelled") -> pd.DataFrame:
    """One row per explained image: source, label, target, predicted class, probabilities, channel importance,
    attribution shares, nucleus and cell fractions, and whether the image is in the checks' sample.

    Parameters
    ----------
    explanation : Explanation
        The explanation.
    meta : DataFrame
        The explained images' metadata (``source`` is kept).
    unlabelled_name : str
        How an unlabelled image's label is written.

    Returns
    -------
    DataFrame
        The rows, in the explanation's order.
    """
    count = len(explanation.labels)
    names = np.asarray(explanation.class_names + [unlabelled_name], dtype=object)
    table = pd.DataFrame(
        {
            "source": meta["source"].astype(str).to_numpy() if "source" in meta else np.arange(count).astype(str),
            "label": names[np.where(explanation.labels < 0, len(explanation.class_names), explanation.labels)],
            "target": names[explanation.targets],
            "predicted": names[explanation.predicted],
            "probability": explanation.proba[np.arange(count), explanation.targets].astype(np.float64),
        }
    )
    for k, name in enumerate(explanation.class_names):
        table[f"p_{name}"] = explanation.proba[:, k].astype(np.float64)
    for c, channel in enumerate(explanation.channel_names):
        table[f"occlusion_drop_{channel}"] = explanation.channel_occlusion[:, c].astype(np.float64)
        table[f"cam_concordance_{channel}"] = explanation.cam_concordance[:, c].astype(np.float64)
    for method, maps in explanation.maps.items():
        if not is_spatial_only(method):
            shares = attribution_share(maps)
            for c, channel in enumerate(explanation.channel_names):
                table[f"share_{method}_{channel}"] = shares[:, c].astype(np.float64)
    for method, fraction in explanation.nucleus_fraction.items():
        table[f"nucleus_fraction_{method}"] = fraction.astype(np.float64)
    for method, fraction in explanation.cell_fraction.items():
        table[f"cell_fraction_{method}"] = fraction.astype(np.float64)
    table["checked"] = explanation.checked if explanation.checked is not None else False
    return table


def explain_model(model: str | Path, images: ImageSet, settings: AttributionSettings | None = None) -> ModelExplanation:
    """Explain a saved classifier (a `phenolens images train` folder) on the images `settings.subset` picks.

    ``subset="out-of-fold"`` explains every labelled image with the cross-validation fold model that
    never trained on it (the checks' sample is drawn once over all of them); the other subsets use
    the saved model. `max_images` keeps a seeded random subset.

    Parameters
    ----------
    model : path
        The model folder.
    images : ImageSet
        Candidate images; class folders and channels are matched to the model's by name.
    settings : AttributionSettings, optional
        What to compute (default: `AttributionSettings()`).

    Returns
    -------
    ModelExplanation
        The explanation, the explained images and the metrics.

    Raises
    ------
    PhenolensError
        For a folder without a model (or without fold models out of fold), or images that do not fit it.
    """
    settings = settings if settings is not None else AttributionSettings()
    model = Path(model)
    classifier = ImageClassifier.load(model)
    images = classifier.conform(images)
    classifier = classifier.for_fields_of(images)  # a field's brightness over all its given images, explained or not
    if settings.subset != "out-of-fold":
        chosen = at_most(select_images(images, held_out_sources(model), settings.subset, model), settings.max_images, settings.seed)
        explanation = explain_images(classifier, chosen, settings)
        return ModelExplanation(explanation, chosen, {**explanation.metrics(), "model": str(model), "dataset": images.name})
    labelled = at_most(images.labelled(), settings.max_images, settings.seed)
    folds, indices = out_of_fold_parts(model, labelled)
    # one sample of the checks over all the explained images, in fold order (as `phenolens images explain` draws it)
    checked, sanity = check_sample(sum(len(index) for index in indices), settings)
    starts = np.cumsum([0, *(len(index) for index in indices)])
    brightness = classifier.normalization.field_brightness
    parts = [
        explain_images(
            ImageClassifier.load(fold).with_field_brightness(brightness),
            labelled.subset(index),
            settings,
            sample=(checked[start : start + len(index)], sanity[start : start + len(index)]),
        )
        for fold, index, start in zip(folds, indices, starts)
    ]
    explanation = Explanation.concatenate(parts)
    explanation.settings = {
        **settings.to_dict(),
        "explained_by": f"out of fold: each image by the one of {len(folds)} fold models that never trained on it",
    }
    fold_images = {fold.name: len(index) for fold, index in zip(folds, indices)}
    metrics = {**explanation.metrics(), "fold_images": fold_images, "model": str(model), "dataset": images.name}
    return ModelExplanation(explanation, labelled.subset(np.concatenate(indices)), metrics)
