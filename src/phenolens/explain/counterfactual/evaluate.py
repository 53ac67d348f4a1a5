"""Explain a set of images with a trained counterfactual model, and measure it.

One run computes, on the same images: ECINN counterfactuals at alpha_0 and alpha_1, the
gradient (Wachter) baseline timed side by side with ECINN, the autoencoder interpolation (when the
model has one), alpha sweeps for animation, and the nuclear-contrast known answer (when a nucleus
channel is named). Metrics use the keys of the `phenolens counterfactual explain` metrics.json.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from phenolens.core.errors import PhenolensError
from phenolens.data.containers import ImageSet
from phenolens.explain.counterfactual.ecinn import ECINN, Counterfactuals
from phenolens.explain.counterfactual.gradient import GradientCounterfactuals, wachter_counterfactuals
from phenolens.explain.counterfactual.interpolation import InterpolationCounterfactuals
from phenolens.explain.counterfactual.known_answer import NucleusRegions
from phenolens.explain.counterfactual.model import CounterfactualModel, network_crops
from phenolens.explain.counterfactual.settings import CounterfactualExplanationSettings

ECINN_EVALUATIONS = 3  # forward f(x), inverse f^-1(z + alpha Delta), forward of the counterfactual
MAX_MATCHED_CONFIDENCE = 0.999  # beyond this, float32 softmax saturates and the search could not stop


@dataclass
class ExplanationRun:
    """Everything one explain run produced (raw intensity units unless a name says otherwise).

    Attributes
    ----------
    target : int
        Target class index.
    class_names, channel_names, sources : list of str
        The model's classes and channels; one source (file or image number) per image.
    labels : numpy.ndarray
        (N,) label of each image as a model class index, -1 when unlabelled.
    originals : numpy.ndarray
        (N, C, H, W) the images as the network saw them (padded, registered).
    ecinn : Counterfactuals
        ECINN results (model input units).
    ecinn_raw : dict of str to numpy.ndarray
        ECINN counterfactuals by alpha, raw intensities.
    gradient : GradientCounterfactuals or None
        The Wachter baseline on the images that get a counterfactual.
    interpolation : InterpolationCounterfactuals or None
        The autoencoder alternative.
    interpolation_raw : dict of str to numpy.ndarray
        Its reconstruction, boundary and full images, raw intensities.
    sweeps : list of dict
        alpha sweeps: ``index``, ``alphas``, ``images``, ``probabilities``.
    contrast : dict of str to numpy.ndarray
        Known answer: nuclear contrast ``before`` and ``after`` alpha_1, and the images counted (``basis``).
    metrics : dict
        Everything written to metrics.json.
    """

    target: int
    class_names: list[str]
    channel_names: list[str]
    sources: list[str]
    labels: np.ndarray
    originals: np.ndarray
    ecinn: Counterfactuals
    ecinn_raw: dict[str, np.ndarray]
    gradient: GradientCounterfactuals | None = None
    interpolation: InterpolationCounterfactuals | None = None
    interpolation_raw: dict[str, np.ndarray] = field(default_factory=dict)
    sweeps: list[dict] = field(default_factory=list)
    contrast: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


def explain_counterfactuals(
    model: CounterfactualModel,
    images: ImageSet,
    settings: CounterfactualExplanationSettings | None = None,
    *,
    classified: dict | None = None,
    **changes,
) -> ExplanationRun:
    """Counterfactuals of `images` towards ``settings.target``, with every measurement of the pipeline.

    Parameters
    ----------
    model : CounterfactualModel
        A trained model (its inverse tolerance is ``settings.inverse_tolerance`` when given; the
        model itself is not changed).
    images : ImageSet
        Images with the model's channels, in any order: channels and classes are matched to the
        model's by name (`CounterfactualModel.match_images`).
    settings : CounterfactualExplanationSettings, optional
        What to run: ``baseline=False`` skips the gradient baseline (no speed-up then),
        ``autoencoder=False`` the interpolation alternative; ``nucleus_channel`` turns on the
        nuclear-contrast known answer.
    classified : dict, optional
        `classification_metrics` of the same model on the same `images`, when the caller has them already (it
        explains several targets of one image set): they are reused, not computed again, unless
        ``inverse_tolerance`` is set (the run then classifies with a copy of the model that inverts differently,
        so the given figures would describe another model).
    **changes
        Fields to replace in `settings` (``target="NuclearGFP"``).

    Returns
    -------
    ExplanationRun
        Counterfactuals, baseline, interpolation, sweeps, known answer and metrics.

    Raises
    ------
    PhenolensError
        When no target is given, the target or a channel is not the model's, the images' channels
        or classes do not match the model's, or every image is already predicted as the target.
    """
    settings = (settings or CounterfactualExplanationSettings()).replace(**changes)
    if settings.inverse_tolerance is not None:
        model = dataclasses.replace(model, classifier=copy.deepcopy(model.classifier))
        model.classifier.inverse_tolerance = settings.inverse_tolerance
        model.ecinn = ECINN.from_means(model.classifier, model.ecinn.means_true_, model.ecinn.means_predicted_, model.ecinn.batch_size)
    target, nucleus_channel, signal_channel = settings.target, settings.nucleus_channel, settings.signal_channel
    target_index = check_request(model, target, nucleus_channel, signal_channel)
    images = model.match_images(images, settings.unknown_classes)
    inputs = model.tensor(images)
    labels = model.labels_for(images)
    # the crops themselves: undoing the standardisation leaves float32 rounding on the black padding, which then counts as cell
    originals = network_crops(images, model.settings, model.channel_names)
    metrics: dict = {"target": target, "n_images": len(inputs), "crops_centred_on": model.settings.centre_on}
    reusable = classified is not None and settings.inverse_tolerance is None
    metrics.update(classified if reusable else classification_metrics(model, inputs, labels))

    ecinn = model.ecinn.explain(inputs, target_index)
    valid = ecinn.valid
    count = int(valid.sum())
    if count == 0:
        raise PhenolensError(f"every image is already predicted as {target!r}; pick images of another class or another --target")
    # Timed on the images that get a counterfactual, as the baseline is: an image already predicted
    # as the target decodes its own latent, which the warm start does in one iteration per block.
    started = time.perf_counter()
    model.ecinn.explain(inputs[torch.from_numpy(valid)], target_index, which=("alpha1",))
    ecinn_seconds = (time.perf_counter() - started) / count
    ecinn_raw = {key: model.to_raw(value) for key, value in ecinn.images.items()}
    metrics.update(
        n_counterfactuals=count,
        flip_rate_alpha0=ecinn.flip_rate("alpha0"),
        flip_rate_alpha1=ecinn.flip_rate("alpha1"),
        evaluations_per_counterfactual=ECINN_EVALUATIONS,
        inverse_fixed_point_iterations=ecinn.inverse_iterations,
        inverse_relative_residual=ecinn.inverse_residual,
        seconds_per_counterfactual=ecinn_seconds,
        alpha0_median=float(np.nanmedian(ecinn.alphas["alpha0"])),
        alpha1_median=float(np.nanmedian(ecinn.alphas["alpha1"])),
        l2_proximity_alpha1=_l2(ecinn.images["alpha1"], inputs.numpy(), valid),
        change_similarity_alpha1=change_similarity(ecinn.images["alpha1"][valid], inputs.numpy()[valid]),
    )
    run = ExplanationRun(
        target=target_index,
        class_names=model.class_names,
        channel_names=model.channel_names,
        sources=images.meta["source"].astype(str).tolist() if "source" in images.meta else [f"image {i}" for i in range(len(inputs))],
        labels=labels,
        originals=originals,
        ecinn=ecinn,
        ecinn_raw=ecinn_raw,
        metrics=metrics,
    )
    if settings.baseline:
        _run_baseline(run, model, inputs, settings, ecinn_seconds)
    if settings.autoencoder and model.interpolation is not None:
        _run_interpolation(run, model, inputs)
    if nucleus_channel is not None:
        _known_answer(run, nucleus_channel, signal_channel)
    run.sweeps = _sweeps(model, inputs, ecinn, settings.sweeps, settings.sweep_steps)
    return run


def check_request(model: CounterfactualModel, target: str | None, nucleus_channel: str | None = None, signal_channel: str | None = None) -> int:
    """Validate the target class and channel names before any work.

    Parameters
    ----------
    model : CounterfactualModel
        The trained model.
    target : str or None
        The target class name.
    nucleus_channel, signal_channel : str, optional
        Channels of the known answer.

    Returns
    -------
    int
        The target's class index.

    Raises
    ------
    PhenolensError
        When the target is missing or unknown, or a channel is not the model's.
    """
    if target is None:
        raise PhenolensError(f"no target class: pass --target, one of {', '.join(model.class_names)}")
    for option, channel in (("--nucleus-channel", nucleus_channel), ("--signal-channel", signal_channel)):
        if channel is not None and channel not in model.channel_names:
            raise PhenolensError(f"{option} {channel!r} is not one of the model's channels ({', '.join(model.channel_names)})")
    return model.class_index(target)


def classification_metrics(model: CounterfactualModel, inputs: torch.Tensor, labels: np.ndarray) -> dict:
    """Accuracy and inverse reconstruction error of the model on some images.

    Parameters
    ----------
    model : CounterfactualModel
        The trained model.
    inputs : torch.Tensor
        (N, C, H, W) images in model input units.
    labels : numpy.ndarray
        (N,) class indices; -1 for images without one of the model's classes.

    Returns
    -------
    dict
        ``test_accuracy`` (on the labelled images), ``n_labelled`` and ``reconstruction_mae``, the
        mean absolute error of f^-1(f(x)) as a fraction of the training data's intensity range.
    """
    with torch.no_grad():
        z, logits = model.ecinn.latents(inputs)
        reconstructed = torch.cat([model.classifier.decode(z[i : i + 32].view(-1, *model.classifier.latent_shape)) for i in range(0, len(z), 32)])
    labelled = labels >= 0
    accuracy = float((logits.argmax(1).numpy()[labelled] == labels[labelled]).mean()) if labelled.any() else float("nan")
    error = np.abs(model.to_raw(reconstructed.numpy()) - model.to_raw(inputs.numpy())).mean()
    return {"test_accuracy": accuracy, "n_labelled": int(labelled.sum()), "reconstruction_mae": float(error / model.data_range)}


def _run_baseline(
    run: ExplanationRun, model: CounterfactualModel, inputs: torch.Tensor, settings: CounterfactualExplanationSettings, ecinn_seconds: float
) -> None:
    """The Wachter search on the same images, stopped at the first flip (the issue's "same flip rate",
    and the cheapest rule) and, when `settings.match_confidence`, once p(target) reaches the value
    ECINN's alpha_1 counterfactual has for that image (same flip and same confidence)."""
    valid = run.ecinn.valid
    protocols = {"gradient": None}
    if settings.match_confidence:
        protocols["gradient_matched"] = np.minimum(run.ecinn.probabilities_at["alpha1"][valid, run.target], MAX_MATCHED_CONFIDENCE)
    for prefix, confidence in protocols.items():
        started = time.perf_counter()
        result = wachter_counterfactuals(
            model.classifier,
            inputs[valid],
            run.target,
            proximity=settings.proximity,
            lr=settings.baseline_lr,
            max_steps=settings.baseline_steps,
            confidence=confidence,
            patience=settings.baseline_patience,
        )
        seconds = (time.perf_counter() - started) / int(valid.sum())
        suffix = "" if confidence is None else "_matched_confidence"
        run.metrics.update(
            {
                f"{prefix}_flip_rate": result.flip_rate(),
                f"{prefix}_stopping_rule_met": float(result.reached.mean()),
                f"{prefix}_seconds_per_counterfactual": seconds,
                f"{prefix}_evaluations_per_counterfactual": float(result.evaluations.mean()),
                f"{prefix}_steps_median": float(np.median(result.steps)),
                f"l2_proximity_{prefix}": _l2(result.images, inputs.numpy()[valid], np.ones(len(result.images), dtype=bool)),
                f"change_similarity_{prefix}": change_similarity(result.images, inputs.numpy()[valid]),
                f"speedup_vs_gradient{suffix}": seconds / ecinn_seconds,
            }
        )
        if confidence is None:
            run.gradient = result
    run.metrics["gradient_settings"] = {
        "lr": settings.baseline_lr,
        "proximity": settings.proximity,
        "max_steps": settings.baseline_steps,
        "patience": settings.baseline_patience,
        "match_confidence": settings.match_confidence,
    }


def _run_interpolation(run: ExplanationRun, model: CounterfactualModel, inputs: torch.Tensor) -> None:
    started = time.perf_counter()
    result = model.interpolation.explain(inputs, run.target)
    seconds = (time.perf_counter() - started) / len(inputs)
    run.interpolation = result
    run.interpolation_raw = {
        "reconstruction": model.to_raw(result.reconstructions),
        "boundary": model.to_raw(result.images_boundary),
        "full": model.to_raw(result.images_full),
    }
    steps = model.interpolation.steps
    run.metrics.update(
        autoencoder_flip_rate_boundary=result.flip_rate("boundary"),
        autoencoder_flip_rate_full=result.flip_rate("full"),
        autoencoder_reconstruction_mae=float(np.abs(run.interpolation_raw["reconstruction"] - run.originals).mean() / model.data_range),
        autoencoder_seconds_per_counterfactual=seconds,
        # from its own reconstruction, as for the known answer
        autoencoder_change_similarity=change_similarity(result.images_full[run.ecinn.valid], result.reconstructions[run.ecinn.valid]),
        autoencoder_evaluations_per_counterfactual=1 + 2 * (steps + 1),  # encode, then decode + classify each step
        autoencoder_steps=steps,
    )


def _known_answer(run: ExplanationRun, nucleus_channel: str, signal_channel: str | None) -> None:
    """Nuclear contrast of the signal before and after the alpha_1 (and autoencoder) counterfactuals.

    The rates are those of the correctly classified images of the other classes, when the images
    are labelled: "CytoplasmicGFP -> NuclearGFP" is a statement about cytoplasmic cells, and an
    image the model misreads as cytoplasmic is already nuclear, so moving it further towards
    NuclearGFP says nothing about the relation learned. The rates over every image predicted as
    another class are reported beside them (`..._all_predicted`)."""
    valid = run.ecinn.valid
    labels = run.labels[valid]
    correct = labels == run.ecinn.predicted[valid]
    labelled = bool((labels >= 0).all() and correct.any())
    basis = correct if labelled else np.ones_like(correct)
    originals = run.originals[valid]
    regions = NucleusRegions.of(originals, run.channel_names, nucleus_channel, signal_channel)  # masks of the originals, found once
    before, after = regions.contrast(originals), regions.contrast(run.ecinn_raw["alpha1"][valid])
    run.contrast = {"before": before, "after": after, "basis": basis}
    run.metrics["nuclear_gfp_basis"] = "correctly classified images" if labelled else "every image predicted as another class"
    run.metrics.update(_contrast_rates(before[basis], after[basis], "nuclear_gfp"))
    run.metrics.update(_contrast_rates(before, after, "nuclear_gfp", suffix="_all_predicted"))
    inside = regions.added_in_nucleus(originals, run.ecinn_raw["alpha1"][valid])[basis]
    run.metrics["nuclear_gfp_added_in_nucleus_median"] = float(np.nanmedian(inside)) if np.isfinite(inside).any() else float("nan")
    if run.interpolation is not None:
        # The autoencoder's change is measured from its own reconstruction (see interpolation.py).
        end = regions.contrast(run.interpolation_raw["full"][valid])
        reconstructed = regions.contrast(run.interpolation_raw["reconstruction"][valid])
        run.contrast.update(autoencoder_before=reconstructed, autoencoder_after=end)
        run.metrics.update(_contrast_rates(reconstructed[basis], end[basis], "autoencoder_nuclear_gfp"))


def _contrast_rates(before: np.ndarray, after: np.ndarray, prefix: str, suffix: str = "") -> dict:
    finite = np.isfinite(before) & np.isfinite(after)
    change = after[finite] - before[finite]
    return {
        f"{prefix}_increase_rate{suffix}": float((change > 0).mean()) if finite.any() else float("nan"),
        f"{prefix}_decrease_rate{suffix}": float((change < 0).mean()) if finite.any() else float("nan"),
        f"{prefix}_contrast_change_median{suffix}": float(np.median(change)) if finite.any() else float("nan"),
        f"{prefix}_images{suffix}": int(finite.sum()),
    }


def _sweeps(model: CounterfactualModel, inputs: torch.Tensor, ecinn: Counterfactuals, count: int, steps: int) -> list[dict]:
    """alpha sweeps (0 .. 1.25 alpha_1, at least 0 .. 1.2) of the first `count` valid images, raw units."""
    sweeps = []
    for index in np.flatnonzero(ecinn.valid)[:count]:
        alphas = np.linspace(0.0, max(1.2, 1.25 * float(ecinn.alphas["alpha1"][index])), steps)
        decoded, probabilities = model.ecinn.sweep(inputs[index], ecinn.target, alphas)
        sweeps.append({"index": int(index), "alphas": alphas, "images": model.to_raw(decoded), "probabilities": probabilities})
    return sweeps


def change_similarity(changed: np.ndarray, original: np.ndarray, limit: int = 500) -> float:
    """Median Pearson correlation between the change maps (changed - original) of every pair of the
    first `limit` images: near 1 when a method makes the same change to every image, whatever the
    image (ECINN's one class-mean shift through a near-linear inverse does), lower when the change
    follows each image's own structure.

    Parameters
    ----------
    changed, original : numpy.ndarray
        (N, ...) changed images and their originals.
    limit : int
        At most this many images are compared (pairs grow quadratically).

    Returns
    -------
    float
        The median correlation; NaN for fewer than two images.
    """
    change = (changed - original).reshape(len(changed), -1)[:limit]
    if len(change) < 2:
        return float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        correlations = np.corrcoef(change)
    return float(np.nanmedian(correlations[np.triu_indices(len(change), 1)]))


def _l2(changed: np.ndarray, original: np.ndarray, rows: np.ndarray) -> float:
    """Mean L2 norm of the change over `rows`, in model input (standardised) units."""
    return float(np.linalg.norm((changed - original).reshape(len(changed), -1), axis=1)[rows].mean()) if rows.any() else float("nan")
