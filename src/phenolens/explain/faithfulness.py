"""Can the maps be trusted? Deletion/insertion curves and the model-randomisation sanity check.

Deletion (Petsiuk et al. 2018): remove pixels (all channels) from the most to the least
attributed, replacing them by the baseline, and follow the target probability; a faithful map
makes it fall fast (low area under the curve). Insertion: start from the baseline and add pixels
in the same order; a faithful map makes it rise fast (high area).

Randomisation (Adebayo et al. 2018): maps of a model with re-initialised weights must differ
from the trained model's maps; structural similarity (SSIM) near 1 means the method shows the
image, not the model.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from phenolens.core.seeding import seed_everything


def pixel_order_masks(scores: np.ndarray, fractions: np.ndarray) -> torch.Tensor:
    """(N, K, H, W) masks: for each fraction f, the top f share of pixels by `scores` (N, H, W).

    Parameters
    ----------
    scores : ndarray
        (N, H, W) pixel scores.
    fractions : ndarray
        (K,) shares of pixels.

    Returns
    -------
    Tensor
        Bool masks.
    """
    n, h, w = scores.shape
    order = np.argsort(-scores.reshape(n, -1), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(h * w)[None].repeat(n, 0), axis=1)
    counts = np.round(fractions * h * w).astype(int)
    return torch.from_numpy(rank[:, None, :] < counts[None, :, None]).view(n, len(fractions), h, w)


@torch.no_grad()
def deletion_insertion(
    classifier,
    inputs: torch.Tensor,
    maps: np.ndarray,
    targets: np.ndarray,
    baseline: torch.Tensor,
    covariates: torch.Tensor | None = None,
    steps: int = 16,
    batch_size: int = 32,
    pass_size: int | None = None,
) -> dict:
    """Deletion and insertion curves of the target probability.

    `inputs` are prepared (normalised) images, `maps` their (N, C, H, W) attributions (pixels are
    ranked by the sum over channels), `baseline` is (1, C, 1, 1) in normalised space.

    Parameters
    ----------
    classifier : ImageClassifier
        The model.
    inputs : Tensor
        (N, C, H, W) normalised images.
    maps : ndarray
        (N, C, H, W) attributions.
    targets : ndarray
        (N,) target classes.
    baseline : Tensor
        (1, C, 1, 1) normalised baseline.
    covariates : Tensor, optional
        One-hot covariates.
    steps : int
        Pixel fractions after 0.
    batch_size : int
        Images whose curves are computed together.
    pass_size : int, optional
        Most inputs per forward pass (an image brings ``2 (steps + 1)``; default: all of `batch_size` images' at once).
        Large images need small passes: a pass that no longer fits the caches costs twice as much per input.

    Returns
    -------
    dict
        The fractions, mean curves and per-image areas under the curves (trapezoid over the fraction).
    """
    fractions = np.linspace(0.0, 1.0, steps + 1)
    scores = maps.sum(axis=1)
    targets = torch.as_tensor(targets).long()
    deletion, insertion = [], []
    classifier.model.eval()
    for start in range(0, len(inputs), batch_size):
        x = inputs[start : start + batch_size]
        n = len(x)
        masks = pixel_order_masks(scores[start : start + batch_size], fractions)[:, :, None]  # (n, K, 1, H, W)
        deleted = torch.where(masks, baseline[:, None], x[:, None])
        inserted = torch.where(masks, x[:, None], baseline[:, None])
        both = torch.cat([deleted, inserted], dim=1).flatten(0, 1)
        cov = None if covariates is None else covariates[start : start + batch_size].repeat_interleave(2 * len(fractions), 0)
        t = targets[start : start + batch_size].repeat_interleave(2 * len(fractions))
        size = pass_size or len(both)
        logits = torch.cat([classifier.model(both[i : i + size], None if cov is None else cov[i : i + size]) for i in range(0, len(both), size)])
        proba = torch.softmax(logits, dim=1).gather(1, t[:, None]).view(n, 2, len(fractions))
        deletion.append(proba[:, 0])
        insertion.append(proba[:, 1])
    deletion, insertion = torch.cat(deletion).numpy(), torch.cat(insertion).numpy()
    return {
        "fractions": fractions,
        "deletion_curves": deletion,  # (N, steps + 1): per image, so explanations of several models can be pooled
        "insertion_curves": insertion,
        "deletion_auc": np.trapezoid(deletion, fractions, axis=1),
        "insertion_auc": np.trapezoid(insertion, fractions, axis=1),
    }


def randomized_copy(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A copy of `model` with every parameter re-initialised (BatchNorm statistics reset too).

    Parameters
    ----------
    model : Module
        The trained model (untouched).
    seed : int
        Seed of the re-initialisation.

    Returns
    -------
    Module
        The randomised copy, in eval mode.
    """
    seed_everything(seed)
    clone = copy.deepcopy(model)
    for module in clone.modules():
        if module is not clone and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return clone.eval()


def map_ssim(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Per-image SSIM between two (N, C, H, W) map stacks, each summarised as |map| summed over
    channels and scaled to [0, 1] per image: scikit-image's mean `structural_similarity` of each image.

    Parameters
    ----------
    first, second : ndarray
        (N, C, H, W) map stacks.

    Returns
    -------
    ndarray
        (N,) mean SSIM per image.
    """
    from skimage.metrics import structural_similarity

    def summary(maps: np.ndarray) -> np.ndarray:
        magnitude = np.abs(maps).sum(axis=1)
        return magnitude / np.maximum(magnitude.max(axis=(1, 2), keepdims=True), 1e-12)

    a, b = summary(first), summary(second)
    window = min(7, *a.shape[1:]) // 2 * 2 + 1 if min(a.shape[1:]) >= 3 else 3
    _, full = structural_similarity(a, b, channel_axis=0, data_range=1.0, win_size=window, full=True)
    # scikit-image's mean SSIM leaves out the border the window overhangs (there the filters see reflected pixels)
    border = (window - 1) // 2
    return full[:, border : full.shape[1] - border, border : full.shape[2] - border].mean(axis=(1, 2))


def spread_curves(faithfulness: dict, rows: np.ndarray) -> dict:
    """Deletion/insertion curves laid out per image: row ``i`` is curve ``rows[i]``, NaN where ``rows[i]`` is NaN.

    Parameters
    ----------
    faithfulness : dict
        Method -> ``{"fractions", "deletion_curves", "insertion_curves"}`` of the checked images (`deletion_insertion`).
    rows : numpy.ndarray
        (N,) for each image, the row of its curves, or NaN for an image that was not checked.

    Returns
    -------
    dict
        Method -> ``{"fractions", "deletion_curves", "insertion_curves"}`` with N rows each.
    """
    present = np.isfinite(rows)
    spread = {}
    for method, result in faithfulness.items():
        spread[method] = {"fractions": result["fractions"]}
        for kind in ("deletion_curves", "insertion_curves"):
            values = np.asarray(result[kind])
            full = np.full((len(rows), values.shape[1]), np.nan)
            full[present] = values[rows[present].astype(int)]
            spread[method][kind] = full
    return spread
