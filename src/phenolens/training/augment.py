"""Batch augmentations for cell crops, vectorised over the batch and driven by a torch Generator.

Cells have no up/down or left/right: flips and 90-degree turns are free label-preserving copies;
small rotations (+-10 degrees) break the pixel grid; CutMix (Yun et al. 2019) pastes a box of one
crop into another and mixes their labels by the pasted area; dimming scales a crop's brightness, as
a shorter exposure would; a random blur softens a crop, as a field slightly out of focus would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def flips_and_rotations(
    x: torch.Tensor, generator: torch.Generator, max_degrees: float = 10.0, turns: bool = True, fill: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """Random horizontal/vertical flips, 90-degree turns (square inputs) and rotations of up to
    `max_degrees`, per image, as one affine resampling of the whole batch.

    `fill` (a scalar or (1, C, 1, 1), in the units of `x`) enters the corners that a rotation brings
    in from outside the frame. For normalised crops it should be the value of a raw 0, the value
    centre-padding gives: a normalised 0 is the channel mean, grey corners that no test image has.

    Parameters
    ----------
    x : Tensor
        (N, C, H, W) batch.
    generator : Generator
        Source of the random draws.
    max_degrees : float
        Largest small rotation.
    turns : bool
        Also draw 90-degree turns (square inputs only).
    fill : Tensor or float
        Value of the corners brought in from outside.

    Returns
    -------
    Tensor
        The transformed batch.
    """
    n = len(x)
    angle = (torch.rand(n, generator=generator) * 2.0 - 1.0) * math.radians(max_degrees)
    if turns and x.shape[-1] == x.shape[-2]:
        angle = angle + torch.randint(0, 4, (n,), generator=generator) * (math.pi / 2)
    flip_x = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    flip_y = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Rotation times diagonal flip, in the normalised [-1, 1] coordinates of affine_grid.
    theta = torch.stack(
        [torch.stack([cos * flip_x, -sin * flip_y, torch.zeros(n)], 1), torch.stack([sin * flip_x, cos * flip_y, torch.zeros(n)], 1)], 1
    )
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def dim(x: torch.Tensor, generator: torch.Generator, dimming: float, black: torch.Tensor) -> torch.Tensor:
    """Multiply each image's raw intensities (every channel) by one gain g ~ U(1 - dimming, 1).

    `x` is normalised and `black` (1, C, 1, 1) is the normalised raw 0, so the dimmed image is
    black + g (x - black). The point is the path of integrated gradients from a black baseline,
    which runs through the dimmed copies of each image: a model that never saw them behaves
    arbitrarily there, and the attribution integrates that behaviour.

    Parameters
    ----------
    x : Tensor
        (N, C, H, W) normalised batch.
    generator : Generator
        Source of the gains.
    dimming : float
        Largest relative dimming, in [0, 1).
    black : Tensor
        (1, C, 1, 1) normalised raw 0.

    Returns
    -------
    Tensor
        The dimmed batch.
    """
    gain = 1.0 - dimming * torch.rand(len(x), 1, 1, 1, generator=generator, dtype=x.dtype)
    return black + gain * (x - black)


def channel_gains(x: torch.Tensor, generator: torch.Generator, spread: float, black: torch.Tensor) -> torch.Tensor:
    """Multiply each channel of each image's raw intensities by its own gain g ~ U(1 - spread, 1 + spread).

    Fields, wells and plates differ in how bright each stain came out; a network that has seen every crop
    at other brightnesses per stain cannot tell them apart by that alone. As in `dim`, the result is
    black + g (x - black) with `black` the normalised raw 0.

    Parameters
    ----------
    x, generator, black
        As for `dim`.
    spread : float
        Largest relative change, in [0, 1).

    Returns
    -------
    Tensor
        The re-stained batch.
    """
    gain = 1.0 + spread * (2.0 * torch.rand(len(x), x.shape[1], 1, 1, generator=generator, dtype=x.dtype) - 1.0)
    return black + gain * (x - black)


def gaussian_blur(x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Blur each image by a Gaussian of its own standard deviation, separably (rows, then columns), every channel alike.

    The kernel spans 3 standard deviations of the largest sigma each side (cut to the image, less a pixel) and sums to 1,
    and the borders are reflected, so a constant image is unchanged; a sigma of 0 is a one-pixel kernel, the identity.
    Being linear with weights summing to 1, the blur commutes with the per-channel standardisation: blurring the
    normalised crop is blurring the raw one.

    Parameters
    ----------
    x : Tensor
        (N, C, H, W) batch.
    sigmas : Tensor
        (N,) standard deviations in pixels, each >= 0.

    Returns
    -------
    Tensor
        The blurred batch.
    """
    n, c, height, width = x.shape
    radius = min(math.ceil(3.0 * float(sigmas.max())), height - 1, width - 1) if len(x) else 0
    if radius < 1:
        return x
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype)
    # a sigma of 0 leaves exp(-huge) = 0 off the centre: the identity kernel without a special case
    kernels = torch.exp(-0.5 * (offsets[None] / sigmas.to(x.dtype).clamp_min(1e-6)[:, None]) ** 2)
    kernels = (kernels / kernels.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (N C, K): one kernel per image, every channel
    planes = x.reshape(1, n * c, height, width)  # one group per image and channel: the whole batch in two grouped convolutions
    planes = F.conv2d(F.pad(planes, (radius, radius, 0, 0), mode="reflect"), kernels[:, None, None, :], groups=n * c)
    planes = F.conv2d(F.pad(planes, (0, 0, radius, radius), mode="reflect"), kernels[:, None, :, None], groups=n * c)
    return planes.reshape(n, c, height, width)


def random_blur(x: torch.Tensor, generator: torch.Generator, max_sigma: float) -> torch.Tensor:
    """Blur each image by a Gaussian of standard deviation sigma ~ U(0, max_sigma) pixels (`gaussian_blur`).

    Fields differ in how sharp they came out (focus, position under the objective); a network that has seen every
    crop at other sharpnesses cannot tell its field by that alone.

    Parameters
    ----------
    x : Tensor
        (N, C, H, W) batch.
    generator : Generator
        Source of the sigmas.
    max_sigma : float
        Largest standard deviation, in pixels.

    Returns
    -------
    Tensor
        The blurred batch.
    """
    return gaussian_blur(x, max_sigma * torch.rand(len(x), generator=generator, dtype=x.dtype))


@dataclass
class CutMixBatch:
    """A CutMix batch: the loss is `weight * loss(labels) + (1 - weight) * loss(partner_labels)`."""

    images: torch.Tensor
    labels: torch.Tensor
    partner_labels: torch.Tensor
    weight: torch.Tensor  # per image: the fraction of its area that kept its own pixels
    partner: torch.Tensor  # per image: the index in the batch of the image its box came from


def cutmix(x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator, probability: float = 0.5) -> CutMixBatch:
    """Paste a random box of a partner image (a permutation of the batch) into each selected image.

    lambda ~ Beta(1, 1) (uniform) sets the box area to (1 - lambda) of the image; the box is clipped
    at the border, so the label weight is recomputed from the area actually pasted.

    Parameters
    ----------
    x : Tensor
        (N, C, H, W) batch.
    labels : Tensor
        (N,) labels.
    generator : Generator
        Source of the partners, boxes and choices.
    probability : float
        Share of the images that get a box (the others keep weight 1).

    Returns
    -------
    CutMixBatch
        Mixed images, both labels, the per-image weight of the own label and the partner's index.
    """
    n, _, height, width = x.shape
    partner = torch.randperm(n, generator=generator)
    lam = torch.rand(n, generator=generator)
    lam = torch.where(torch.rand(n, generator=generator) < probability, lam, torch.ones(n))
    cut_h, cut_w = (height * torch.sqrt(1 - lam)).round(), (width * torch.sqrt(1 - lam)).round()
    centre_y, centre_x = torch.rand(n, generator=generator) * height, torch.rand(n, generator=generator) * width
    top, bottom = (centre_y - cut_h / 2).clamp(0, height).round(), (centre_y + cut_h / 2).clamp(0, height).round()
    left, right = (centre_x - cut_w / 2).clamp(0, width).round(), (centre_x + cut_w / 2).clamp(0, width).round()
    rows, cols = torch.arange(height), torch.arange(width)
    inside_rows = (rows[None] >= top[:, None]) & (rows[None] < bottom[:, None])
    inside_cols = (cols[None] >= left[:, None]) & (cols[None] < right[:, None])
    box = inside_rows[:, :, None] & inside_cols[:, None, :]
    mixed = torch.where(box[:, None], x[partner], x)
    weight = 1.0 - box.flatten(1).float().mean(1)
    return CutMixBatch(mixed, labels, labels[partner], weight, partner)


def pseudo_label_weight(epoch: int, start: int, full: int, final_weight: float) -> float:
    """alpha(t) of Lee (2013): 0 before epoch `start`, rising linearly to `final_weight` at `full`, then constant.

    Parameters
    ----------
    epoch : int
        The current epoch.
    start, full : int
        Epochs where the ramp starts and ends.
    final_weight : float
        The weight from `full` on.

    Returns
    -------
    float
        The pseudo-label loss weight.
    """
    if epoch < start:
        return 0.0
    if epoch >= full:
        return float(final_weight)
    return float(final_weight) * (epoch - start) / max(full - start, 1)
