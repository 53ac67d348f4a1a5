"""Class-model visualisation (Simonyan, Vedaldi & Zisserman 2014): the image a network scores highest for a class.

The image is optimised by gradient ascent on the class logit, regularised as in Simonyan et al., plus the
jitter and periodic Gaussian blur of Yosinski et al. (2015), which keep the image from filling with
high-frequency patterns the network happens to like.

Unlike the original, the image is kept physical: intensities are non-negative and start from black, in
units of each channel's training standard deviation, so the result is light the network wants *added*
to an empty field, channel by channel, and its intensities can be compared between classes (the
known-answer check of BBBC013 measures how much of the GFP a class model places in the nucleus).

Two choices make the result a member of its class rather than a picture of the network's response to
near-black input (session 12, issue 24):

- The regulariser is a *light budget*: each optimised channel's L2 norm is at most that of a typical
  training crop (root-mean-square over the crops, known from the model's normalisation), so the class
  model holds a cell's worth of light, placed where the class wants it. A per-pixel L2 decay strong enough
  to bound the image kept it so dim (a few grey levels of 255) that the network scored the
  NuclearGFP and CytoplasmicGFP models as NoGFP. The decay is still available (``l2_decay``).
- Each step is normalised per image, not per pixel: the image moves along the gradient divided by its
  mean absolute value, with a step size annealed linearly to 0 (the periodic blur smooths that step, so
  light placed early is not diffused again by every later blur). Adam's per-pixel normalisation gives a
  pixel whose gradient is faintly but steadily positive as much light as the decisive ones, which
  covers the field in a haze that no training crop (background masked to 0) has.

No existing library does this without torchvision (Lucent needs it), so it is plain torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from phenolens.core.errors import PhenolensError
from phenolens.core.settings import Settings, setting

if TYPE_CHECKING:  # torch loads on first use, so that the command line reads the settings without it
    import torch
    from torch import nn

    from phenolens.data.containers import ImageSet
    from phenolens.training.classifier import ImageClassifier


@dataclass(frozen=True)
class ClassModelSettings(Settings):
    """How class-model images are optimised (`class_models`, `phenolens images visualise`)."""

    classes: tuple[str, ...] = setting((), "Comma-separated classes to visualise (default: every class of the model).")
    hold: tuple[str, ...] = setting(
        (), "Comma-separated channels held at the mean crop of the given images (e.g. DNA); the others are optimised around it."
    )
    steps: int = setting(256, "Gradient-ascent steps.", minimum=1)
    lr: float = setting(
        0.05,
        "First step size, in each channel's standard deviations per pixel on average (steps follow the gradient, normalised per image, "
        "and shrink linearly to 0).",
        minimum=0,
        exclusive_minimum=True,
    )
    budget: float = setting(
        1.0,
        "Light budget: each optimised channel's L2 norm is at most this many times that of a typical training crop (0: no budget).",
        minimum=0,
    )
    l2_decay: float = setting(
        0.0, "Weight of an L2 penalty that pulls every pixel back to black (Simonyan's lambda; the budget already bounds the image).", minimum=0
    )
    jitter: int = setting(2, "Largest random shift (px) applied before each step (0: none).", minimum=0)
    blur_every: int = setting(
        4, "Blur the step every this many steps (0: never); blurring the image instead would diffuse its light again at every blur.", minimum=0
    )
    blur_sigma: float = setting(0.5, "Standard deviation (px) of that Gaussian blur.", minimum=0)
    seed: int = setting(0, "Seed of the starting noise and the jitter.")


def _gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Depthwise Gaussian blur with reflect padding, one kernel for every channel.

    The augmentation's blur (`phenolens.training.augment.gaussian_blur`): its kernel radius is ceil(3 sigma) cut to
    the image less a pixel, as reflect padding cannot reach past the far border; a small model blurred by a wide
    sigma (8 px, sigma 3) is blurred by the widest kernel the image allows instead of failing.
    """
    import torch

    from phenolens.training.augment import gaussian_blur

    return gaussian_blur(images, torch.full((len(images),), float(sigma), dtype=images.dtype))


def class_models(
    model: nn.Module,
    classes: list[int],
    channels: int,
    size: int,
    mean: np.ndarray,
    std: np.ndarray,
    settings: ClassModelSettings | None = None,
    template: np.ndarray | None = None,
    free_channels: list[int] | None = None,
) -> np.ndarray:
    """Optimise one image per class, in raw intensities.

    Parameters
    ----------
    model : torch.nn.Module
        Maps normalised (N, C, size, size) inputs to (N, K) logits; it is used in eval mode and
        left as it was found.
    classes : list of int
        The logit index to maximise for each output image.
    channels, size : int
        The input's channel count and side length (px).
    mean, std : numpy.ndarray
        Per-channel normalisation of the model's inputs: the network sees ``(raw - mean) / std``. They are
        the statistics of the training crops' pixels, so a typical crop's L2 norm in a channel is
        ``size * sqrt(mean**2 + std**2)``: the light budget.
    settings : ClassModelSettings, optional
        Optimisation settings (default: `ClassModelSettings()`).
    template : numpy.ndarray, optional
        (C, size, size) raw image that the channels not in `free_channels` are held at, e.g. the
        mean training crop, so that the free channels are optimised around a typical cell. A network
        pooled over space is nearly translation invariant and places a class's pattern anywhere in
        an empty field; a fixed nucleus says where "inside the nucleus" is.
    free_channels : list of int, optional
        The channels that are optimised (default: all; then `template` is unused).

    Returns
    -------
    numpy.ndarray
        (len(classes), C, size, size) float32 raw intensities, non-negative.
    """
    import torch

    settings = settings or ClassModelSettings()
    mean_t = torch.as_tensor(np.asarray(mean, dtype=np.float32)).view(1, -1, 1, 1)
    std_t = torch.as_tensor(np.asarray(std, dtype=np.float32)).view(1, -1, 1, 1)
    generator = torch.Generator().manual_seed(int(settings.seed))
    # Light in units of each channel's standard deviation, from black plus a little noise.
    light = (0.01 * torch.rand(len(classes), channels, size, size, generator=generator)).requires_grad_(True)
    free = torch.ones(1, channels, 1, 1)
    held = torch.zeros(1, channels, size, size)
    if free_channels is not None:
        free = torch.zeros(1, channels, 1, 1)
        free[:, free_channels] = 1.0
        if template is not None:
            held = torch.as_tensor(np.asarray(template, dtype=np.float32))[None] / std_t * (1 - free)
    # A typical training crop's L2 norm per channel, in units of std (see `mean, std` above).
    budget = settings.budget * size * torch.sqrt(mean_t**2 + std_t**2) / std_t
    targets = torch.as_tensor(classes)
    rows = torch.arange(len(classes))
    was_training = model.training
    requires_grad = [p.requires_grad for p in model.parameters()]
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    try:
        for step in range(settings.steps):
            shown = light * free + held
            if settings.jitter:
                dx, dy = (torch.randint(-settings.jitter, settings.jitter + 1, (2,), generator=generator)).tolist()
                shown = torch.roll(shown, shifts=(dy, dx), dims=(2, 3))
            logits = model(shown - mean_t / std_t)
            objective = logits[rows, targets].sum() - settings.l2_decay * ((light * free) ** 2).sum()
            light.grad = None
            objective.backward()
            with torch.no_grad():
                gradient = light.grad * free
                if settings.blur_every and settings.blur_sigma > 0 and (step + 1) % settings.blur_every == 0:
                    gradient = _gaussian_blur(gradient, settings.blur_sigma)
                scale = gradient.abs().flatten(1).mean(1).clamp(min=1e-12).view(-1, 1, 1, 1)
                light.add_(settings.lr * (1.0 - step / settings.steps) * gradient / scale)
                light.clamp_(min=0.0)  # physical light only: nothing darker than black
                if settings.budget > 0:  # then onto the budget's ball: the projection onto both sets, as the ball is centred at 0
                    norms = light.flatten(2).norm(dim=2).clamp(min=1e-12)[..., None, None]
                    light.mul_(torch.clamp(budget / norms, max=1.0))
    finally:
        model.train(was_training)
        for parameter, flag in zip(model.parameters(), requires_grad):
            parameter.requires_grad_(flag)
    return ((light.detach() * free + held) * std_t).numpy().astype(np.float32)


def central_disc_share(images: np.ndarray, radius: float) -> np.ndarray:
    """Share of each image's intensity inside the central disc of `radius` px.

    Parameters
    ----------
    images : numpy.ndarray
        (..., H, W) non-negative intensities.
    radius : float
        Disc radius in pixels, centred on the image centre.

    Returns
    -------
    numpy.ndarray
        (...) shares in [0, 1] (0 for an all-black image).
    """
    height, width = images.shape[-2:]
    yy, xx = np.mgrid[:height, :width]
    disc = (yy - (height - 1) / 2) ** 2 + (xx - (width - 1) / 2) ** 2 <= radius**2
    total = images.sum(axis=(-2, -1))
    inside = (images * disc).sum(axis=(-2, -1))
    return np.divide(inside, total, out=np.zeros_like(total, dtype=np.float64), where=total > 0)


def first_layer_filters(model: nn.Module) -> np.ndarray:
    """The weights of the network's first convolution, (out_channels, in_channels, k, k).

    Raises
    ------
    ValueError
        When the model has no 2-D convolution.
    """
    from torch import nn

    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.weight.detach().cpu().numpy().copy()
    raise ValueError("the model has no Conv2d layer")


def visualise_classes(classifier: ImageClassifier, settings: ClassModelSettings | None = None, images: ImageSet | None = None) -> np.ndarray:
    """Class-model images of a trained image classifier, in raw intensities (for a model trained with
    ``--intensity-normalization``, in intensity-normalised units (divided by a brightness or quantile-mapped), the units its
    standardisation reads).

    Parameters
    ----------
    classifier : ImageClassifier
        A trained classifier (its network, crop size and normalisation are used; it is not changed).
    settings : ClassModelSettings, optional
        Which classes, which channels to hold, and how to optimise.
    images : ImageSet, optional
        Images whose mean crop fixes the held channels (needed when ``settings.hold`` names any).

    Returns
    -------
    numpy.ndarray
        (len(classes), C, size, size) float32, classes in ``settings.classes`` order (default: the model's).

    Raises
    ------
    PhenolensError
        An unknown class or channel, held channels without images, or a model that needs covariates.
    """
    settings = settings or ClassModelSettings()
    if classifier.covariate is not None:
        raise PhenolensError(f"the model needs the covariate {classifier.covariate.column!r}; class models of such models are not supported")
    names = list(settings.classes) or list(classifier.class_names)
    indices = [classifier.class_index(name) for name in names]
    unknown = [channel for channel in settings.hold if channel not in classifier.channel_names]
    if unknown:
        raise PhenolensError(f"--hold {unknown[0]!r} is not a channel of the model, which has {', '.join(classifier.channel_names)}")
    template, free = None, None
    if settings.hold:
        if images is None or len(images) == 0:
            raise PhenolensError("--hold needs images to take the mean crop from: give --dataset, --folder or --manifest")
        normalised = classifier.array(classifier.conform(images))
        std, mean = classifier.normalization.std, classifier.normalization.mean
        template = normalised.mean(axis=0) * std[:, None, None] + mean[:, None, None]
        free = [index for index, channel in enumerate(classifier.channel_names) if channel not in settings.hold]
    return class_models(
        classifier.model,
        indices,
        len(classifier.channel_names),
        classifier.size,
        classifier.normalization.mean,
        classifier.normalization.std,
        settings,
        template=template,
        free_channels=free,
    )


def class_model_probabilities(classifier: ImageClassifier, pictures: np.ndarray) -> np.ndarray:
    """The classifier's class probabilities of class-model images, as the optimisation presented them to the network.

    `class_models` optimises the standardised input ``(picture - mean) / std`` directly, so the pictures are in the
    units the network's standardisation reads: for a model that first normalises each image's intensities
    (``--intensity-normalization``), normalising them again (``classifier.predict_proba``) would score other images
    (and a bare array has no field to look its statistics up for).

    Parameters
    ----------
    classifier : ImageClassifier
        The classifier the pictures were optimised for (no covariates).
    pictures : numpy.ndarray
        (N, C, size, size) images from `visualise_classes`.

    Returns
    -------
    numpy.ndarray
        (N, K) softmax probabilities.
    """
    import torch

    classifier.model.eval()
    with torch.no_grad():
        logits = classifier.model(torch.from_numpy(classifier.normalization(pictures).astype(np.float32)))
    return torch.softmax(logits, dim=1).numpy()
