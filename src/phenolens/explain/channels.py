"""Which stain does the model use? Per-channel importance, per image and per class.

(a) Channel occlusion: the drop in the target logit when one channel is replaced by its training
    mean (all C perturbed copies of a batch go through the network together).
(b) Concordance of Sharma & Krishnamurthi: attention_c = ||CAM - image_c||_2 between the
    Grad-CAM map and each channel (both scaled to [0, 1] per image), divided by the largest of the
    C distances; the smaller the value, the more the model's spatial attention looks like that stain.

Neither can credit evidence that is an absence: if a class is recognised by a missing signal
(no GFP), replacing that channel by its mean adds signal rather than removing it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from phenolens.data.containers import ImageSet


@torch.no_grad()
def channel_occlusion(classifier, images: ImageSet | np.ndarray, targets: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """(N, C) drop in the target logit when each channel is set to its training mean.

    Parameters
    ----------
    classifier : ImageClassifier
        The model.
    images : ImageSet or ndarray
        The images.
    targets : ndarray
        (N,) target classes.
    batch_size : int
        Images per forward pass (each with C perturbed copies).

    Returns
    -------
    ndarray
        The logit drops.
    """
    inputs, covariates = classifier.tensor(images), classifier.covariates(images)
    n, c = inputs.shape[:2]
    targets = torch.as_tensor(targets).long()
    keep = 1.0 - torch.eye(c)[:, :, None, None]  # copy j has channel j at the mean (0 after normalisation)
    drops = []
    classifier.model.eval()
    for start in range(0, n, batch_size):
        x = inputs[start : start + batch_size]
        t = targets[start : start + batch_size]
        cov = None if covariates is None else covariates[start : start + batch_size]
        base = classifier.model(x, cov).gather(1, t[:, None])
        perturbed = (x[:, None] * keep[None]).flatten(0, 1)
        cov_rep = None if cov is None else cov.repeat_interleave(c, 0)
        logits = classifier.model(perturbed, cov_rep).gather(1, t.repeat_interleave(c)[:, None]).view(len(x), c)
        drops.append(base - logits)
    return torch.cat(drops).numpy()


def cam_concordance(cam: np.ndarray, images: np.ndarray) -> np.ndarray:
    """(N, C) attention_c = ||CAM - image_c||_2 / max_c ||CAM - image_c||_2.

    `cam` is (N, H, W) (its positive part is used) and `images` the (N, C, H, W) raw padded
    crops; both are min-max scaled to [0, 1] per image (and channel) before the distance.

    Parameters
    ----------
    cam : ndarray
        (N, H, W) Grad-CAM maps.
    images : ndarray
        (N, C, H, W) raw padded crops.

    Returns
    -------
    ndarray
        (N, C) relative distances (smaller: more alike).
    """
    cam = _unit_range(np.clip(cam, 0, None)[:, None])
    channels = _unit_range(images)
    distance = np.sqrt(((channels - cam) ** 2).sum(axis=(2, 3)))
    return distance / np.maximum(distance.max(axis=1, keepdims=True), 1e-12)


def _unit_range(stack: np.ndarray) -> np.ndarray:
    low = stack.min(axis=(2, 3), keepdims=True)
    high = stack.max(axis=(2, 3), keepdims=True)
    return (stack - low) / np.where(high > low, high - low, 1.0)


def per_class_table(values: np.ndarray, labels: np.ndarray, class_names, channel_names, mask: np.ndarray | None = None) -> pd.DataFrame:
    """Class x channel mean of per-image (N, C) values, over the images in `mask` (default all).

    Parameters
    ----------
    values : ndarray
        (N, C) per-image values.
    labels : ndarray
        (N,) class index per image.
    class_names, channel_names : sequence of str
        Row and column names.
    mask : ndarray, optional
        (N,) bool: the images to average.

    Returns
    -------
    DataFrame
        One row per class present, one column per channel.
    """
    mask = np.ones(len(labels), bool) if mask is None else mask
    frame = pd.DataFrame(values[mask], columns=list(channel_names))
    frame["class"] = np.asarray(class_names, dtype=object)[labels[mask]]
    return frame.groupby("class", sort=False).mean().reindex([c for c in class_names if c in set(frame["class"])])


def attribution_share(maps: np.ndarray) -> np.ndarray:
    """(N, C) share of each channel in the image's total absolute attribution.

    Parameters
    ----------
    maps : ndarray
        (N, C, H, W) attribution maps.

    Returns
    -------
    ndarray
        Shares summing to 1 per image (0 for an all-zero map).
    """
    per_channel = np.abs(maps).sum(axis=(2, 3))
    return per_channel / np.maximum(per_channel.sum(axis=1, keepdims=True), 1e-12)
