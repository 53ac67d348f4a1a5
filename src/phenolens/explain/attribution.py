"""Attribution maps for image classifiers, built on Captum: one method, one class, one calling convention.

`attribute(classifier, images, method, target)` returns an (N, C, S, S) array shaped like the
network input (crops centre-padded to the classifier's size S): one map per channel. Each method is
a small `AttributionMethod` subclass registered by name (`register_method`):

- "saliency": |d logit / d pixel| (Captum `Saliency`, abs=True as in Captum).
- "gradcam": Grad-CAM at a named layer (default: the last stage, i.e. the last conv block),
  Captum `LayerGradCam` (signed, as Captum returns it) upsampled bilinearly to S; one spatial map,
  repeated for every channel.
- "occlusion": drop in the target logit when a window of one channel is replaced by the baseline
  (Captum `Occlusion`, window and stride configurable, many occluded copies per forward pass).
- "integrated_gradients" ("ig"): Captum `IntegratedGradients` from a baseline, with internal batching.

A new method is one subclass of `AttributionMethod` with ``@register_method``: its name then appears
in `AttributionSettings.methods` choices, the CLI's ``--methods`` and every report.

Images are processed in batches (Captum handles a batch per call), never one by one, on a copy of
the model prepared for the method (`AttributionMethod.prepare`): channels-last memory (and batch norm folded
into the convolutions for Grad-CAM, in-place ReLUs for occlusion); for saliency, convolutions that pick the same
backend as a one-image call, so the batched maps equal Captum's per-image ones (see `Saliency.prepare`).
`attribute_tensor` is the same on an already prepared input tensor (a pure function over a shard).
"""

from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from phenolens.core.errors import PhenolensError
from phenolens.core.progress import progress
from phenolens.core.settings import Settings, setting
from phenolens.data.containers import find_class

if TYPE_CHECKING:  # torch is imported where maps are computed, so that the settings load without it
    import torch

    from phenolens.data.containers import ImageSet

OUTPUTS = ("logit", "log_probability")
REFERENCE_SIDE = 64  # px: the input side that --forward-batch and the 8 px occlusion window were chosen for
SMALL_WINDOW = 8
FIRST_IG_STEPS = 16  # intervals of an image's first integrated-gradients grid (converged_integrated_gradients)
SUBSETS = ("auto", "heldout", "out-of-fold", "labelled", "all")
ATTRIBUTION_METHODS: dict[str, type[AttributionMethod]] = {}
_ALIASES: dict[str, str] = {}


def register_method(cls: type[AttributionMethod]) -> type[AttributionMethod]:
    """Class decorator: make an `AttributionMethod` available by its `name` (and `aliases`).

    Parameters
    ----------
    cls : type
        A subclass of `AttributionMethod` with a unique `name`.

    Returns
    -------
    type
        `cls`, registered.

    Raises
    ------
    TypeError
        When the name or an alias is already taken.
    """
    for word in (cls.name, *cls.aliases):
        if word in _ALIASES:
            raise TypeError(f"attribution method name {word!r} is taken by {_ALIASES[word]}")
        _ALIASES[word] = cls.name
    ATTRIBUTION_METHODS[cls.name] = cls
    return cls


def attribution_methods() -> tuple[str, ...]:
    """Names of the registered attribution methods, in registration order.

    Returns
    -------
    tuple of str
        The canonical names.
    """
    return tuple(ATTRIBUTION_METHODS)


def method_name(method: str) -> str:
    """Canonical name of `method` (a registered name or alias, any case).

    Parameters
    ----------
    method : str
        A name or alias such as ``ig``.

    Returns
    -------
    str
        The registered name.

    Raises
    ------
    PhenolensError
        Listing the methods when `method` is unknown.
    """
    name = _ALIASES.get(method.lower().replace("-", "_"), _ALIASES.get(method.lower()))
    if name is None:
        known = ", ".join(f"{n} ({', '.join(ATTRIBUTION_METHODS[n].aliases)})" if ATTRIBUTION_METHODS[n].aliases else n for n in ATTRIBUTION_METHODS)
        raise PhenolensError(f"unknown attribution method {method!r}; choose from {known}")
    return name


def method_title(method: str) -> str:
    """How reports name a registered method.

    Parameters
    ----------
    method : str
        A registered name or alias.

    Returns
    -------
    str
        Its title (its name when it has none).
    """
    chosen = ATTRIBUTION_METHODS[method_name(method)]
    return chosen.title or chosen.name


def is_spatial_only(method: str) -> bool:
    """Whether `method`'s map is one spatial map repeated for every channel (Grad-CAM).

    Parameters
    ----------
    method : str
        A registered name or alias.

    Returns
    -------
    bool
        True when the map says nothing about channels.
    """
    return ATTRIBUTION_METHODS[method_name(method)].spatial_only


def attribution_method(method: str) -> AttributionMethod:
    """An instance of the method registered as `method`.

    Parameters
    ----------
    method : str
        A name or alias.

    Returns
    -------
    AttributionMethod
        The method.

    Raises
    ------
    PhenolensError
        For an unknown method.
    """
    return ATTRIBUTION_METHODS[method_name(method)]()


def resolve_targets(classifier, images: ImageSet | np.ndarray, target: str | int = "predicted") -> np.ndarray:
    """Per-image target classes.

    Parameters
    ----------
    classifier : ImageClassifier
        The model.
    images : ImageSet or ndarray
        The images.
    target : str or int
        "predicted", "true" (the labels, matched to the model's classes by name), a class name or a class index.

    Returns
    -------
    ndarray
        (N,) class indices.

    Raises
    ------
    PhenolensError
        For "true" on unlabelled images (or a label that is not a class of the model), an unknown class name or an index out of range.
    """
    if isinstance(target, str) and target == "predicted":
        return classifier.predict(images)
    if isinstance(target, str) and target == "true":
        from phenolens.data.containers import UNLABELLED, ImageSet

        # the labels index the images' own class list: re-index them to the model's classes by name
        labels = classifier.conform(images).labels if isinstance(images, ImageSet) else None
        if labels is None or (labels == UNLABELLED).any():
            raise PhenolensError("target 'true' needs labelled images; use --target predicted or a class name")
        return np.asarray(labels)
    return np.full(len(images), find_class(target, classifier.class_names, what="target class"))  # a class named with digits: by its name


def baseline_tensor(classifier, baseline: str | float) -> torch.Tensor:
    """(1, C, 1, 1) baseline in the network's normalised space.

    Parameters
    ----------
    classifier : ImageClassifier
        Supplies the normalisation.
    baseline : str or float
        "zero" (a black raw image), "mean" (the training mean) or a raw intensity.

    Returns
    -------
    Tensor
        The normalised baseline.

    Raises
    ------
    PhenolensError
        When `baseline` is neither a keyword nor a finite number, or is a non-zero raw intensity for a model
        that normalises each image's intensities per crop or per field (no one value stands for it in every image).
    """
    import torch

    norm = classifier.normalization
    if baseline == "mean":
        raw = norm.mean
    elif baseline == "zero":
        raw = 0.0
    else:
        raw = _raw_baseline(baseline)
        if raw != 0.0 and norm.intensity != "none":
            raise PhenolensError(
                f"baseline {baseline!r}: the model normalises each image's intensities (--intensity-normalization {norm.intensity}), "
                "so a raw intensity has another value in every image; use --baseline zero or mean"
            )
    return torch.from_numpy(norm.constant(raw))


def _raw_baseline(baseline: str | float) -> float:
    try:
        raw = float(baseline)
    except (TypeError, ValueError):
        raw = math.nan
    if not math.isfinite(raw):
        raise PhenolensError(f"baseline {baseline!r}: use zero, mean or a finite number (a raw intensity)")
    return raw


def occlusion_geometry(settings: AttributionSettings, side: int) -> tuple[int, int]:
    """Occlusion window and stride for inputs of `side` px: the settings' values, or defaults that scale with the image.

    The default window is 1/8 of the side (at least `SMALL_WINDOW`, at most the side) and the default
    stride half the window, so an image has about 15 x 15 windows per channel whatever its size
    (a fixed 8 px window with a 4 px stride gives ~7,500 on a 348 px image).

    Parameters
    ----------
    settings : AttributionSettings
        Supplies `window` and `stride` (None: scale with the image).
    side : int
        The input's side (px).

    Returns
    -------
    tuple of int
        (window, stride).
    """
    window = settings.window if settings.window is not None else min(side, max(SMALL_WINDOW, round(side / 8)))
    stride = settings.stride if settings.stride is not None else max(1, window // 2)
    return window, stride


def inputs_per_pass(forward_batch: int, side: int, copies: int = 1) -> int:
    """How many images go through one forward pass when each brings `copies` inputs of `side` px.

    `forward_batch` counts inputs of `REFERENCE_SIDE` px; larger inputs count for their pixels, so a
    pass never holds more pixels than `forward_batch` small crops (large passes thrash memory).

    Parameters
    ----------
    forward_batch : int
        Inputs per pass at the reference side.
    side : int
        The input side (px).
    copies : int
        Inputs per image in the pass (perturbed copies, curve steps).

    Returns
    -------
    int
        Images per pass (at least 1).
    """
    scale = max(1.0, (side / REFERENCE_SIDE) ** 2)
    return max(1, int(forward_batch / scale) // copies)


def find_layers(model: torch.nn.Module, layer: str | None) -> list[torch.nn.Module]:
    """The module named `layer` in each network of `model`: one module, or one per member of an ensemble.

    Parameters
    ----------
    model : Module
        A classifier network or ensemble.
    layer : str or None
        A stage name or submodule path (default: the last stage).

    Returns
    -------
    list of Module
        The layers.

    Raises
    ------
    PhenolensError
        Naming the stages when the layer does not exist.
    """
    from phenolens.nn.backbones import networks

    stages = model.stage_names()
    name = layer or stages[-1]
    try:
        return [net.stages[name] if name in stages else net.get_submodule(name) for net in networks(model)]
    except AttributeError:
        raise PhenolensError(f"the model has no layer {name!r}; use a stage ({', '.join(stages)}) or a submodule path like stages.stage4.1") from None


def _plain_copy(model: torch.nn.Module) -> torch.nn.Module:
    """An eval-mode copy of `model` whose parameters need no gradients (only input or layer gradients are taken)."""
    return copy.deepcopy(model).eval().requires_grad_(False)


class AttributionMethod:
    """One attribution method: how to prepare the model and how to attribute a batch.

    Subclasses set `name` (and `aliases`), override `attribute`, and may override `prepare` (the
    model copy the method runs on) and `check` (option errors before the model is copied). Register
    them with `register_method`.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""  # as reports write it (default: the name)
    aliases: ClassVar[tuple[str, ...]] = ()
    spatial_only: ClassVar[bool] = False  # the map is the same for every channel
    needs_input_gradient: ClassVar[bool] = True
    memory_format: ClassVar[str] = "channels_last"  # a torch memory format, by name

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """The copy of `model` the batched passes run on (the caller's model is untouched): channels-last memory.

        Parameters
        ----------
        model : Module
            The classifier network.

        Returns
        -------
        Module
            A prepared copy.
        """
        import torch

        return _plain_copy(model).to(memory_format=torch.channels_last)

    def check(self, model: torch.nn.Module, settings: AttributionSettings) -> None:
        """Raise `PhenolensError` when `settings` cannot work on `model` (before any copy is made).

        Parameters
        ----------
        model : Module
            The classifier network.
        settings : AttributionSettings
            The method's options.
        """

    def attribute(
        self,
        model: torch.nn.Module,
        inputs: torch.Tensor,
        target: torch.Tensor,
        baseline: torch.Tensor | float,
        covariates: torch.Tensor | None,
        settings: AttributionSettings,
    ) -> torch.Tensor:
        """(N, C, H, W) maps of `inputs` (normalised, in `memory_format`) for `target`.

        Parameters
        ----------
        model : Module
            The prepared network (`prepare`).
        inputs : Tensor
            The batch; requires grad when `needs_input_gradient`.
        target : Tensor
            (N,) class indices.
        baseline : Tensor or float
            Shaped like `inputs`, or a scalar, in normalised space.
        covariates : Tensor or None
            Extra forward arguments of the network.
        settings : AttributionSettings
            The method's options.

        Returns
        -------
        Tensor
            The maps.
        """
        raise NotImplementedError

    @staticmethod
    def forward(model: torch.nn.Module, settings: AttributionSettings) -> torch.nn.Module:
        """What the maps explain: `model`'s logits, or their log-softmax (`settings.output`).

        Parameters
        ----------
        model : Module
            The prepared network.
        settings : AttributionSettings
            Supplies `output`.

        Returns
        -------
        Module
            `model` or a `LogProbability` wrapper of it.
        """
        from phenolens.explain.prepared import LogProbability

        return LogProbability(model).eval() if settings.output == "log_probability" else model


@register_method
class Saliency(AttributionMethod):
    """|d output / d pixel| (Captum `Saliency`, abs=True)."""

    name = "saliency"
    title = "Saliency"
    memory_format = "contiguous_format"

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model as it is (contiguous memory, batch norm as such) with `OneImageBackendConv2d`
        convolutions, so its ReLU gates are bitwise those of a per-image call (see there); see `AttributionMethod.prepare`."""
        import torch

        from phenolens.explain.prepared import OneImageBackendConv2d

        prepared = _plain_copy(model)
        for module in prepared.modules():
            if type(module) is torch.nn.Conv2d:
                module.__class__ = OneImageBackendConv2d
        return prepared

    def attribute(self, model, inputs, target, baseline, covariates, settings) -> torch.Tensor:
        """Captum `Saliency` with abs=True (see `AttributionMethod.attribute`)."""
        from captum.attr import Saliency as CaptumSaliency

        return CaptumSaliency(self.forward(model, settings)).attribute(inputs, target=target, abs=True, additional_forward_args=covariates)


@register_method
class GradCam(AttributionMethod):
    """Grad-CAM at `settings.layer` (Captum `LayerGradCam`), upsampled bilinearly and repeated for every channel."""

    name = "gradcam"
    title = "Grad-CAM"
    aliases = ("grad-cam", "grad_cam")
    spatial_only = True

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Channels-last with batch norm folded into the convolutions (`fold_batch_norm`: one kernel
        instead of two, logits move by ~1e-6; the maps moved by ~1e-6); see `AttributionMethod.prepare`."""
        import torch

        from phenolens.nn.backbones import fold_batch_norm

        prepared = _plain_copy(model)
        fold_batch_norm(prepared)
        return prepared.to(memory_format=torch.channels_last)

    def check(self, model: torch.nn.Module, settings: AttributionSettings) -> None:
        """The layer must exist (a clear error before the model is copied); see `AttributionMethod.check`."""
        find_layers(model, settings.layer)

    def attribute(self, model, inputs, target, baseline, covariates, settings) -> torch.Tensor:
        """Sum of the members' CAMs (an ensemble's logit is their mean, so each comes out scaled by 1 / members);
        see `AttributionMethod.attribute`."""
        from captum.attr import LayerAttribution, LayerGradCam

        forward = self.forward(model, settings)
        layers = find_layers(model, settings.layer)
        cam = sum(LayerGradCam(forward, layer).attribute(inputs, target=target, additional_forward_args=covariates) for layer in layers)
        return LayerAttribution.interpolate(cam, tuple(inputs.shape[2:]), "bilinear").expand_as(inputs)


@register_method
class Occlusion(AttributionMethod):
    """Drop of the output when a window of one channel is set to the baseline (Captum `Occlusion`)."""

    name = "occlusion"
    title = "Occlusion"
    needs_input_gradient = False

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Channels-last, ReLUs in place (`inplace_relus`: no gradients, no hooks; bitwise the same) and
        the head in float64 (`Float64Head`). Batch norms are kept: folding saved ~8 % of the time but moved
        2 of 300 benchmark maps just past 1e-5 (a map is a difference of two logits, mostly float32 rounding
        where occlusion hardly changes the logit). See `AttributionMethod.prepare`."""
        import torch

        from phenolens.explain.prepared import Float64Head
        from phenolens.nn.backbones import inplace_relus, networks

        prepared = _plain_copy(model)
        inplace_relus(prepared)
        for net in networks(prepared):
            if isinstance(getattr(net, "head", None), torch.nn.Module):
                net.head = Float64Head(net.head)
        return prepared.to(memory_format=torch.channels_last)

    def attribute(self, model, inputs, target, baseline, covariates, settings) -> torch.Tensor:
        """Captum `Occlusion` with `settings.window`/`stride`, `settings.forward_batch` inputs per forward pass;
        see `AttributionMethod.attribute`."""
        import torch
        from captum.attr import Occlusion as CaptumOcclusion

        window, stride = occlusion_geometry(settings, max(inputs.shape[2:]))
        if window > min(inputs.shape[2:]):
            raise PhenolensError(f"occlusion window {window} px is larger than the {tuple(inputs.shape[2:])} images; use a smaller --window")
        with torch.no_grad():
            maps = CaptumOcclusion(self.forward(model, settings)).attribute(
                inputs,
                sliding_window_shapes=(1, window, window),
                strides=(1, stride, stride),
                baselines=baseline,
                target=target,
                additional_forward_args=covariates,
                perturbations_per_eval=max(1, inputs_per_pass(settings.forward_batch, max(inputs.shape[2:])) // len(inputs)),
            )
        return maps.to(inputs.dtype)  # the float64 head's differences, back to the input's precision


@register_method
class IntegratedGradients(AttributionMethod):
    """Integrated gradients from the baseline: path points added until each image's map settles (`converged_integrated_gradients`),
    or Captum `IntegratedGradients` in exactly `settings.n_steps` Gauss-Legendre steps when `settings.ig_tolerance` is 0.

    The model keeps its batch norms: its 17-50 input gradients per image are as gate-sensitive as
    saliency's, and folding moved them by 1e-4 in the unit test.
    """

    name = "integrated_gradients"
    title = "Integrated gradients"
    aliases = ("ig", "integrated-gradients")

    def attribute(self, model, inputs, target, baseline, covariates, settings) -> torch.Tensor:
        """Path integral of the gradients, `settings.forward_batch` path points per pass; see `AttributionMethod.attribute`."""
        from captum.attr import IntegratedGradients as CaptumIntegratedGradients

        pass_size = max(inputs_per_pass(settings.forward_batch, max(inputs.shape[2:])), len(inputs))
        forward = self.forward(model, settings)
        if settings.ig_tolerance > 0:
            return converged_integrated_gradients(forward, inputs, target, baseline, covariates, settings.n_steps, settings.ig_tolerance, pass_size)
        return CaptumIntegratedGradients(forward).attribute(
            inputs, baselines=baseline, target=target, additional_forward_args=covariates, n_steps=settings.n_steps, internal_batch_size=pass_size
        )


def converged_integrated_gradients(
    forward: torch.nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    baseline: torch.Tensor | float,
    covariates: torch.Tensor | None,
    most_steps: int,
    tolerance: float,
    pass_size: int,
) -> torch.Tensor:
    """Integrated gradients by the trapezoid rule on a grid of the path that is halved for each image until its map settles.

    An image starts with `FIRST_IG_STEPS` intervals (``min(most_steps, FIRST_IG_STEPS)``); its map is compared with
    the map from every other point of the same grid (half the steps, no extra pass), and while the relative L2
    change exceeds `tolerance` and doubling stays within `most_steps`, the midpoints of its grid are added (the
    points already evaluated are kept). With riemann trapezoid points this is Captum's
    ``IntegratedGradients(method="riemann_trapezoid", n_steps=steps + 1)`` for each image's final step count.
    Gradients of all images' pending points go through passes of `pass_size` inputs.

    Parameters
    ----------
    forward : Module
        The prepared network (or its log-probability wrapper).
    inputs : Tensor
        (N, C, H, W) normalised images.
    target : Tensor
        (N,) class indices.
    baseline : Tensor or float
        Shaped like `inputs`, or a scalar.
    covariates : Tensor or None
        (N, K) extra forward arguments.
    most_steps : int
        The most intervals of an image's path.
    tolerance : float
        Relative L2 change of the map between a step count and half of it below which an image stops.
    pass_size : int
        Path points per forward+backward pass.

    Returns
    -------
    Tensor
        (N, C, H, W) maps.
    """
    import torch

    inputs = inputs.detach()
    start = baseline.detach().expand_as(inputs) if isinstance(baseline, torch.Tensor) else torch.full_like(inputs, float(baseline))
    difference = inputs - start
    count = len(inputs)

    def gradient_sums(points: list[tuple[int, float]]) -> torch.Tensor:
        """Per image, the sum of d forward[target] / d input over its path points (image, alpha): start + alpha x difference, as Captum."""
        total = torch.zeros_like(inputs)
        for offset in range(0, len(points), pass_size):
            image, alpha = zip(*points[offset : offset + pass_size])
            index, share = torch.tensor(image), torch.tensor(alpha, dtype=inputs.dtype)
            path = (start[index] + share[:, None, None, None] * difference[index]).requires_grad_(True)
            output = forward(path, None if covariates is None else covariates[index])
            (grad,) = torch.autograd.grad(output.gather(1, target[index, None].long()).sum(), path)
            total.index_add_(0, index, grad.detach())
        return total

    def interior(images: list[int], steps: list[int], first: int, every: int) -> torch.Tensor:
        """Gradient sums over the points k / steps, first <= k < steps in strides of `every`, of each of `images`."""
        return gradient_sums([(i, k / n) for i, n in zip(images, steps) for k in range(first, n, every)])

    def trapezoid(sums: torch.Tensor, intervals: torch.Tensor) -> torch.Tensor:
        return difference * (ends / 2 + sums) / intervals.to(inputs.dtype)[:, None, None, None]

    everyone = list(range(count))
    steps = torch.full((count,), min(most_steps, FIRST_IG_STEPS))
    ends = gradient_sums([(i, alpha) for i in everyone for alpha in (0.0, 1.0)])
    even_sums = interior(everyone, steps.tolist(), 2, 2)  # the grid of half the steps
    sums = even_sums + interior(everyone, steps.tolist(), 1, 2)
    current = trapezoid(sums, steps)
    coarse = trapezoid(even_sums, (steps // 2).clamp_min(1))
    active = (steps % 2 == 0) & (2 * steps <= most_steps)
    while bool(active.any()):
        change = (current - coarse).flatten(1).norm(dim=1) / current.flatten(1).norm(dim=1).clamp_min(torch.finfo(inputs.dtype).tiny)
        active &= change > tolerance
        if not bool(active.any()):
            break
        steps = torch.where(active, 2 * steps, steps)
        growing = active.nonzero().flatten().tolist()
        sums += interior(growing, steps[active].tolist(), 1, 2)  # the midpoints; zero for the others
        coarse = torch.where(active[:, None, None, None], current, coarse)
        current = torch.where(active[:, None, None, None], trapezoid(sums, steps), current)
        active &= 2 * steps <= most_steps
    return current


def prepare_model(model: torch.nn.Module, method: str) -> torch.nn.Module:
    """The copy of `model` that the batched passes of `method` run on (see each method's `prepare`).

    Parameters
    ----------
    model : Module
        The classifier network (untouched).
    method : str
        A registered method name or alias.

    Returns
    -------
    Module
        The prepared copy.
    """
    return attribution_method(method).prepare(model)


@dataclass(frozen=True)
class AttributionSettings(Settings):
    """What `phenolens images explain` computes and how: methods, target, per-method options, images, checks.

    Each attribution method uses the options that concern it; `explain_images` uses the rest.

    Raises
    ------
    PhenolensError
        On construction, for an unknown method or output, a window/stride/steps/batch below 1,
        or a baseline that is neither zero, mean nor a finite number.
    """

    step: ClassVar[str] = "image attribution"

    methods: tuple[str, ...] = setting(
        ("saliency", "gradcam", "occlusion", "integrated_gradients"),
        "Attribution methods, comma-separated.",
        choices=tuple(_ALIASES),
    )
    target: str = setting(
        "predicted", "Class each map explains: predicted, true, a class name or a class index (digits that name a class mean that class)."
    )
    layer: str | None = setting(None, "Grad-CAM layer: a stage name or submodule path (default: the last stage).")
    window: int | None = setting(
        None,
        f"Occlusion window (px); default 1/8 of the input side, at least {SMALL_WINDOW} (8 px on 64 px crops, 44 px on 348 px images).",
        minimum=1,
    )
    stride: int | None = setting(None, "Occlusion stride (px); default half the window.", minimum=1)
    baseline: str = setting("zero", "Baseline of occlusion, integrated gradients and deletion/insertion: zero, mean or a raw intensity.")
    n_steps: int = setting(
        50, "Integrated-gradients steps: the most an image gets (see --ig-tolerance), or exactly this many with --ig-tolerance 0.", minimum=1
    )
    ig_tolerance: float = setting(
        0.2,
        f"Integrated gradients: an image starts with {FIRST_IG_STEPS} steps and doubles them while its map changes by more than this "
        "(relative L2 against half the steps) and --n-steps allows; 0 = exactly --n-steps Gauss-Legendre steps (Captum).",
        minimum=0,
    )
    batch_size: int = setting(64, "Images per Captum call (fewer for large images: see --forward-batch).", minimum=1)
    forward_batch: int = setting(
        512,
        f"Inputs per forward pass at {REFERENCE_SIDE} x {REFERENCE_SIDE} px (occluded copies, integrated-gradients path points, "
        "deletion/insertion steps); larger inputs get proportionally fewer, so a pass holds the same number of pixels.",
        minimum=1,
    )
    output: str = setting("logit", "What the maps explain: logit, or log_probability (log-softmax of the target).", choices=OUTPUTS)
    nucleus_channel: str | None = setting(None, "DNA channel: nucleus mask by Otsu threshold; reports nucleus_mass_fraction.")
    reporter_channel: str | None = setting(None, "Channel whose positive attribution is measured inside the nucleus (default: the other one).")
    subset: str = setting(
        "auto",
        "heldout (the images the model never trained on), out-of-fold (every labelled image, each explained by the cross-validation fold "
        "model that never trained on it; needs train --cv), labelled, all, or auto (held-out if listed, else labelled, else all).",
        choices=SUBSETS,
        option="--images",
    )
    max_images: int = setting(0, "Explain at most this many images (a seeded random subset); 0 = all.", minimum=0)
    sanity_images: int = setting(32, "Images given to the model-randomisation check (the first of the --check-images sample).", minimum=1)
    check_images: int = setting(
        32, "Images given to the deletion/insertion (faithfulness) check: a seeded random sample of the explained images; 0 = all.", minimum=0
    )
    faithfulness_steps: int = setting(16, "Pixel fractions of the deletion/insertion curves.", minimum=2)
    seed: int = setting(0, "Seed of the image subset and the randomised model.", minimum=0)

    def __post_init__(self) -> None:
        # The API may name a raw baseline or a class index by number; both are kept as text.
        for name in ("baseline", "target"):
            value = getattr(self, name)
            if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):  # numpy scalars too, written as Python's
                object.__setattr__(self, name, repr(int(value) if isinstance(value, numbers.Integral) else float(value)))
        if isinstance(self.methods, str):
            object.__setattr__(self, "methods", tuple(m.strip().lower() for m in self.methods.split(",") if m.strip()))
        super().__post_init__()
        object.__setattr__(self, "methods", tuple(dict.fromkeys(method_name(m) for m in self.methods)))

    def check(self) -> None:
        """A baseline keyword or a finite number; at least one method; a reporter channel only with a nucleus channel."""
        if self.baseline not in ("zero", "mean"):
            try:
                _raw_baseline(self.baseline)
            except PhenolensError:
                self.fail("baseline", "use zero, mean or a finite number (a raw intensity)")
        if not self.methods:
            self.fail("methods", f"name at least one of {', '.join(ATTRIBUTION_METHODS)}")
        if self.reporter_channel and not self.nucleus_channel:
            self.fail("reporter_channel", "needs --nucleus-channel (the DNA stain that gives the nucleus mask)")


def attribute_tensor(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    method: str,
    baseline: torch.Tensor | float = 0.0,
    covariates: torch.Tensor | None = None,
    settings: AttributionSettings | None = None,
    prepared: torch.nn.Module | None = None,
) -> torch.Tensor:
    """Attribution maps (N, C, H, W) of one batch of prepared (normalised) inputs.

    Parameters
    ----------
    model : Module
        The classifier network (untouched).
    inputs : Tensor
        (N, C, H, W) normalised inputs.
    targets : Tensor
        (N,) class indices.
    method : str
        A registered method name or alias.
    baseline : Tensor or float
        (1, C, 1, 1) or a scalar, in normalised space.
    covariates : Tensor, optional
        One-hot covariates of the batch.
    settings : AttributionSettings, optional
        The method's options (default: `AttributionSettings()`).
    prepared : Module, optional
        ``prepare_model(model, method)`` when the caller already made it (one per run).

    Returns
    -------
    Tensor
        The maps, detached.
    """
    import torch

    from phenolens.explain.prepared import no_nan_fill

    settings = settings or AttributionSettings()
    chosen = attribution_method(method)
    model.eval()
    chosen.check(model, settings)
    prepared = chosen.prepare(model) if prepared is None else prepared
    inputs = inputs.detach().clone(memory_format=getattr(torch, chosen.memory_format)).requires_grad_(chosen.needs_input_gradient)
    if isinstance(baseline, torch.Tensor):  # Captum wants the input's shape (or a scalar)
        baseline = baseline.expand_as(inputs).contiguous()
    with no_nan_fill():
        return chosen.attribute(prepared, inputs, targets.long(), baseline, covariates, settings).detach()


def attribute(
    classifier,
    images: ImageSet | np.ndarray,
    method: str = "integrated_gradients",
    target: str | int | np.ndarray = "predicted",
    settings: AttributionSettings | None = None,
) -> np.ndarray:
    """Attribution maps of `images` in the geometry of the network input (centre-padded crops).

    Parameters
    ----------
    classifier : ImageClassifier
        The model.
    images : ImageSet or ndarray
        The images (an ImageSet's channels are matched to the model's by name).
    method : str
        A registered method name or alias.
    target : str, int or ndarray
        Per-image class indices, or a rule for `resolve_targets`.
    settings : AttributionSettings, optional
        The method's options (default: `AttributionSettings()`).

    Returns
    -------
    ndarray
        (N, C, S, S) float32 maps.
    """
    import torch

    settings = settings or AttributionSettings()
    chosen = attribution_method(method)
    inputs, covariates = classifier.tensor(images), classifier.covariates(images)
    targets = torch.as_tensor(target if isinstance(target, np.ndarray) else resolve_targets(classifier, images, target))
    baseline = baseline_tensor(classifier, settings.baseline)
    model = classifier.model
    chosen.check(model, settings)
    prepared = chosen.prepare(model)  # once per run
    # Large images: no more images per Captum call than fit one forward pass (Captum's passes hold at least the whole call).
    step = min(settings.batch_size, inputs_per_pass(settings.forward_batch, max(inputs.shape[2:])))
    chunks = range(0, len(inputs), step)
    maps = [
        attribute_tensor(
            model,
            inputs[i : i + step],
            targets[i : i + step],
            chosen.name,
            baseline,
            None if covariates is None else covariates[i : i + step],
            settings,
            prepared,
        )
        for i in progress(chunks, f"{chosen.name} maps", total=len(chunks))
    ]
    return torch.cat(maps).contiguous().numpy()
