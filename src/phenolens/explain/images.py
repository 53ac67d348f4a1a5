"""Explain an image classifier on a set of images: maps per method, channel importance, per-class
summaries, faithfulness, the randomisation sanity check and (when a DNA channel is named) the
share of attribution inside the nucleus. `explain_images` gathers them; `Explanation.metrics()`
is what `phenolens explain` writes to metrics.json."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from phenolens.core.errors import PhenolensError
from phenolens.data.containers import UNLABELLED, ImageSet
from phenolens.data.nuclei import nucleus_masks
from phenolens.explain.attribution import AttributionSettings, attribute, attribute_tensor, baseline_tensor, method_name, resolve_targets
from phenolens.explain.channels import attribution_share, cam_concordance, channel_occlusion, per_class_table
from phenolens.explain.faithfulness import deletion_insertion, map_ssim, randomized_copy
from phenolens.explain.masks import nucleus_mass_fraction

SANITY_IMAGES = 32  # images given to the model-randomisation check


@dataclass
class Explanation:
    """Everything computed for one set of images (arrays are per image, in input geometry)."""

    class_names: list[str]
    channel_names: list[str]
    raw: np.ndarray  # (N, C, S, S) padded raw crops
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

    @classmethod
    def concatenate(cls, parts: Sequence[Explanation]) -> Explanation:
        """One explanation of the images of all `parts`, in order (for example each cross-validation
        fold's model on its own held-out images). Per-image arrays are joined; class, channel and reporter
        names must agree; the first part's settings are kept."""
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
                joined[name] = {  # per-image curves and AUCs are joined; the shared pixel fractions are kept
                    method: {key: kept if key == "fractions" else np.concatenate([v[method][key] for v in values]) for key, kept in results.items()}
                    for method, results in value.items()
                }
            elif isinstance(value, dict) and name != "settings":
                joined[name] = {key: np.concatenate([v[key] for v in values]) for key in value}
            else:
                joined[name] = value
        return cls(**joined)

    @property
    def predicted(self) -> np.ndarray:
        return self.proba.argmax(axis=1)

    @property
    def correct(self) -> np.ndarray:
        """Images whose label is known and predicted (the ones per-class summaries use)."""
        return (self.labels != UNLABELLED) & (self.predicted == self.labels)

    def summary_labels(self) -> np.ndarray:
        """The class each image is summarised under: its label, or its prediction if unlabelled."""
        return np.where(self.labels == UNLABELLED, self.predicted, self.labels)

    def channel_tables(self) -> dict:
        """Per-class tables: channel occlusion, CAM concordance, and each method's attribution share."""
        correct = self.correct if self.correct.any() else np.ones(len(self.labels), bool)
        labels = self.summary_labels()
        tables = {
            "occlusion_logit_drop": per_class_table(self.channel_occlusion, labels, self.class_names, self.channel_names, correct),
            "cam_concordance": per_class_table(self.cam_concordance, labels, self.class_names, self.channel_names, correct),
        }
        for method, maps in self.maps.items():
            if method != "gradcam":
                tables[f"{method}_share"] = per_class_table(attribution_share(maps), labels, self.class_names, self.channel_names, correct)
        return tables

    def metrics(self) -> dict:
        """JSON-ready results: channel_importance (class -> channel -> logit drop), cam_concordance,
        attribution shares, faithfulness (method -> AUCs), sanity SSIM and nucleus_mass_fraction."""
        tables = self.channel_tables()
        correct = self.correct
        labels = self.summary_labels()
        result = {
            "n_images": int(len(self.labels)),
            "n_correct": int(correct.sum()),
            "accuracy": float(correct.sum() / max((self.labels != UNLABELLED).sum(), 1)),
            "channel_importance": _nested(tables["occlusion_logit_drop"]),
            "cam_concordance": _nested(tables["cam_concordance"]),
            "attribution_share": {name[: -len("_share")]: _nested(t) for name, t in tables.items() if name.endswith("_share")},
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


def channel_index(channel_names: Sequence[str], name: str, option: str) -> int:
    """Index of a channel name; a clear error names the option and the channels."""
    if name not in channel_names:
        raise PhenolensError(f"{option} {name!r} is not a channel of the model; its channels are {', '.join(channel_names)}")
    return list(channel_names).index(name)


def explain_images(
    classifier,
    images: ImageSet,
    methods: Sequence[str] = ("saliency", "gradcam", "occlusion", "integrated_gradients"),
    target: str | int = "predicted",
    settings: AttributionSettings | None = None,
    nucleus_channel: str | None = None,
    reporter_channel: str | None = None,
    sanity_images: int = SANITY_IMAGES,
    faithfulness_steps: int = 16,
    seed: int = 0,
) -> Explanation:
    """Maps of every method for `images`, channel importance, faithfulness and sanity checks.

    `nucleus_channel` (a DNA stain) gives Otsu nucleus masks; `reporter_channel` (default: the
    first other channel) is the channel whose positive attribution mass is measured inside them.
    The randomisation check uses the first `sanity_images` images.
    """
    settings = settings or AttributionSettings()
    methods = list(dict.fromkeys(method_name(m) for m in methods))
    nucleus = channel_index(classifier.channel_names, nucleus_channel, "--nucleus-channel") if nucleus_channel else None
    if reporter_channel and nucleus is None:
        raise PhenolensError("--reporter-channel needs --nucleus-channel (the DNA stain that gives the nucleus mask)")
    proba = classifier.predict_proba(images)
    targets = resolve_targets(classifier, images, target) if not (isinstance(target, str) and target == "predicted") else proba.argmax(1)
    maps = {method: attribute(classifier, images, method, targets, settings) for method in methods}
    cam = maps["gradcam"] if "gradcam" in maps else attribute(classifier, images, "gradcam", targets, settings)
    raw = classifier.normalization.std[None, :, None, None] * classifier.tensor(images).numpy() + classifier.normalization.mean[None, :, None, None]
    explanation = Explanation(
        class_names=list(classifier.class_names),
        channel_names=list(classifier.channel_names),
        raw=raw,
        labels=np.asarray(getattr(images, "labels", np.full(len(raw), UNLABELLED))),
        proba=proba,
        targets=targets,
        maps=maps,
        channel_occlusion=channel_occlusion(classifier, images, targets, settings.batch_size),
        cam_concordance=cam_concordance(cam[:, 0], raw),
        settings={"methods": methods, "target": str(target), **vars(settings)},
    )
    inputs, covariates = classifier.tensor(images), classifier.covariates(images)
    baseline = baseline_tensor(classifier, settings.baseline)
    for method, method_maps in maps.items():
        explanation.faithfulness[method] = deletion_insertion(classifier, inputs, method_maps, targets, baseline, covariates, faithfulness_steps)
    explanation.sanity_ssim = sanity_check(classifier, inputs[:sanity_images], targets[:sanity_images], maps, settings, covariates, seed)
    if nucleus is not None:
        reporter = channel_index(classifier.channel_names, reporter_channel, "--reporter-channel") if reporter_channel else (1 if nucleus == 0 else 0)
        explanation.nucleus_masks = nucleus_masks(raw, nucleus)
        explanation.reporter_channel = classifier.channel_names[reporter]
        explanation.nucleus_fraction = {method: nucleus_mass_fraction(m, explanation.nucleus_masks, reporter) for method, m in maps.items()}
        # Segmented crops have a zero background: the share inside the cell shows maps that sit on the padding.
        cell = raw.sum(axis=1) > 0
        explanation.cell_fraction = {method: nucleus_mass_fraction(m, cell, reporter) for method, m in maps.items()}
    return explanation


def sanity_check(classifier, inputs, targets, maps: dict, settings: AttributionSettings, covariates=None, seed: int = 0) -> dict[str, np.ndarray]:
    """Per-method, per-image SSIM between the trained model's maps and a re-initialised model's."""
    random_model = randomized_copy(classifier.model, seed)
    target_tensor = torch.as_tensor(targets)
    baseline = baseline_tensor(classifier, settings.baseline)
    cov = None if covariates is None else covariates[: len(inputs)]
    return {
        method: map_ssim(trained[: len(inputs)], attribute_tensor(random_model, inputs, target_tensor, method, baseline, cov, settings).numpy())
        for method, trained in maps.items()
    }
