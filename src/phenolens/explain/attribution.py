"""Attribution maps for image classifiers, built on Captum, all called the same way.

`attribute(classifier, images, method, target)` returns an (N, C, S, S) array shaped like the
network input (crops centre-padded to the classifier's size S): one map per channel. Methods:

- "saliency": |d logit / d pixel| (Captum `Saliency`, abs=True as in Captum).
- "gradcam": Grad-CAM at a named layer (default: the last stage, i.e. the last conv block),
  Captum `LayerGradCam` (signed, as Captum returns it) upsampled bilinearly to S; one spatial map,
  repeated for every channel.
- "occlusion": drop in the target logit when a window of one channel is replaced by the baseline
  (Captum `Occlusion`, window and stride configurable, many occluded copies per forward pass).
- "integrated_gradients": Captum `IntegratedGradients` from a baseline, with internal batching.

Images are processed in batches (Captum handles a batch per call), never one by one, on a copy of
the model prepared for the method (`prepare_model`): channels-last memory (and batch norm folded
into the convolutions for Grad-CAM, in-place ReLUs for occlusion); for saliency, convolutions that pick the same
backend as a one-image call, so the batched maps equal Captum's per-image ones (see `prepare_model`).
`attribute_tensor` is the same on an already prepared input tensor (a pure function over a shard).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import numpy as np
import torch

from phenolens.core.errors import PhenolensError
from phenolens.core.progress import progress
from phenolens.data.containers import UNLABELLED, ImageSet
from phenolens.nn.backbones import fold_batch_norm, inplace_relus, networks

METHODS = ("saliency", "gradcam", "occlusion", "integrated_gradients")
ALIASES = {"ig": "integrated_gradients", "grad-cam": "gradcam", "grad_cam": "gradcam", "integrated-gradients": "integrated_gradients"}
SPATIAL_ONLY = {"gradcam"}  # methods whose map is the same for every channel


@dataclass
class AttributionSettings:
    """Options shared by the methods; each uses the ones that concern it."""

    layer: str | None = None  # Grad-CAM layer: a stage name or any submodule path
    window: int = 8  # occlusion window (pixels, one channel at a time)
    stride: int = 4  # occlusion stride
    baseline: str | float = "zero"  # "zero" (black raw image), "mean" (training mean) or a raw value
    n_steps: int = 50  # integrated-gradients steps (Captum's default)
    batch_size: int = 64  # images per Captum call
    output: str = "logit"  # what is attributed: "logit" or "log_probability" (log-softmax of the target)
    forward_batch: int = 512  # inputs per forward pass: occluded copies, or integrated-gradients path points


def method_name(method: str) -> str:
    """Canonical method name; a clear error lists the methods."""
    name = ALIASES.get(method.lower(), method.lower())
    if name not in METHODS:
        raise PhenolensError(f"unknown attribution method {method!r}; choose from {', '.join(METHODS)} (or ig)")
    return name


def resolve_targets(classifier, images: ImageSet | np.ndarray, target: str | int = "predicted") -> np.ndarray:
    """Per-image target classes: "predicted", "true" (the labels), a class name or a class index."""
    if isinstance(target, str) and target == "predicted":
        return classifier.predict(images)
    if isinstance(target, str) and target == "true":
        labels = getattr(images, "labels", None)
        if labels is None or (labels == UNLABELLED).any():
            raise PhenolensError("target 'true' needs labelled images; use --target predicted or a class name")
        return np.asarray(labels)
    if isinstance(target, str) and not target.lstrip("-").isdigit():
        return np.full(len(images), classifier.class_index(target))
    index = int(target)
    if not 0 <= index < len(classifier.class_names):
        raise PhenolensError(f"target class index {index} is out of range; the model has {len(classifier.class_names)} classes")
    return np.full(len(images), index)


def baseline_tensor(classifier, baseline: str | float) -> torch.Tensor:
    """(1, C, 1, 1) baseline in the network's normalised space."""
    norm = classifier.normalization
    if baseline == "mean":
        raw = norm.mean
    elif baseline == "zero":
        raw = 0.0
    else:
        try:
            raw = float(baseline)
        except ValueError:
            raise PhenolensError(f"unknown baseline {baseline!r}; use zero, mean or a number (raw intensity)") from None
    return torch.from_numpy(norm.constant(raw))


class LogProbability(torch.nn.Module):
    """Wraps a classifier so attributions explain log p(target) instead of the target logit.

    Evidence shared by several classes (e.g. "there is GFP" for both GFP classes) raises their
    logits together and cancels in the log-probability, which keeps what sets the target apart.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, covariates: torch.Tensor | None = None) -> torch.Tensor:
        return torch.log_softmax(self.model(x, covariates), dim=1)


OUTPUTS = ("logit", "log_probability")


def find_layers(model: torch.nn.Module, layer: str | None) -> list[torch.nn.Module]:
    """The module named `layer` (a stage name or submodule path; the last stage by default) in each
    network of `model`: one module, or one per member of an ensemble."""
    stages = model.stage_names()
    name = layer or stages[-1]
    try:
        return [net.stages[name] if name in stages else net.get_submodule(name) for net in networks(model)]
    except AttributeError:
        raise PhenolensError(f"the model has no layer {name!r}; use a stage ({', '.join(stages)}) or a submodule path like stages.stage4.1") from None


@contextlib.contextmanager
def _native_convolution():
    """Convolutions in this block use PyTorch's own kernels (im2col + GEMM), not oneDNN or NNPACK."""
    previous = torch._C._get_mkldnn_enabled(), torch._C._get_nnpack_enabled()
    torch._C._set_mkldnn_enabled(False)
    torch._C._set_nnpack_enabled(False)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(previous[0])
        torch._C._set_nnpack_enabled(previous[1])


class OneImageBackendConv2d(torch.nn.Conv2d):
    """A Conv2d that convolves a batch with the backend PyTorch would pick for one image of it.

    For a single small image (up to 20,480 input values per layer, 3x3 or 1x1 kernels) PyTorch's
    CPU convolution is its native im2col + GEMM (`Slow2d`), one GEMM per image; for a batch it is
    oneDNN, which rounds differently (~1e-7 relative). Saliency is |d logit / d input| and the
    gradient passes a ReLU only where its input is > 0: where a pre-activation lies within that
    rounding of 0 the gate differs between the batched and the per-image pass and so does the whole
    map of that image (about 1.4 % of MitoCheck crops for the benchmark's ResNet-18, up to 0.16 after
    max-abs normalisation). Flagging such near-ties does not work: each image has ~200k
    pre-activations and a handful lie within float32 noise of 0 in nearly every image, although the
    gate flips in only ~1 in 70. So the forward pass of the batch is run with the backend a one-image
    call gets: `Slow2d` on a batch issues the very same per-image GEMMs, the pre-activations are
    bitwise those of the per-image call, and so are the gates (the backward pass, which only
    multiplies by the gates, keeps the fast default backend; it differs by rounding, ~1e-6).
    Where one image would already go to oneDNN (large layers) the batch does too, as before.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        select = getattr(torch._C, "_select_conv_backend", None)
        if select is None or isinstance(self.padding, str) or self.padding_mode != "zeros" or not x.is_cpu:
            return super().forward(x)
        geometry = list(self.stride), list(self.padding), list(self.dilation), False, [0] * len(self.stride), self.groups, None
        if select(x[:1], self.weight, self.bias, *geometry) != torch._C._ConvBackend.Slow2d:
            return super().forward(x)
        with _native_convolution():
            return super().forward(x)


class Float64Head(torch.nn.Module):
    """A classifier head that computes its logits in float64 from float32 features.

    An occlusion map is the difference of two logits, and where occluding a window hardly moves the
    logit that difference is a few float32 ulps of the logit: the rounding of the head's dot product
    (pooled features times weights, with cancellation) was the largest part of it. In float64 the
    head costs nothing measurable and the benchmark's worst maps moved ~2.5x closer to Captum's
    per-image ones (median 7.6e-6 -> 3.0e-6 after max-abs normalisation, 32 worst of 1,000 crops).
    """

    def __init__(self, head: torch.nn.Module):
        super().__init__()
        self.head = head.double()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features.double())


def prepare_model(model: torch.nn.Module, method: str) -> torch.nn.Module:
    """The copy of `model` that the batched passes of `method` run on (the caller's model is untouched).

    - saliency: the model as it is (contiguous memory, batch norm as such) with `OneImageBackendConv2d`
      convolutions, so its ReLU gates are bitwise those of a per-image call (see there);
    - the others: channels-last memory (convolutions ~1.25x faster on CPU). Grad-CAM also gets batch
      norm folded into the convolutions (`fold_batch_norm`: one kernel instead of two, logits move by
      ~1e-6; its maps moved by ~1e-6). Occlusion keeps its batch norms, but its ReLUs run in place
      (`inplace_relus`; no gradients, no hooks; bitwise the same): folding saved ~8 % of its time but
      moved 2 of 300 benchmark maps just past 1e-5 (a map is a difference of two logits, and where
      occlusion hardly changes the logit that difference is mostly float32 rounding); for the same
      reason its head computes the logits in float64 (`Float64Head`). Integrated
      gradients keeps them too: its 20-50 input gradients per image are as gate-sensitive as
      saliency's, and folding moved them by 1e-4 in the unit test.
    Parameters of the copy do not require gradients: only input (or layer) gradients are needed.
    """
    method = method_name(method)
    prepared = copy.deepcopy(model).eval().requires_grad_(False)
    if method == "saliency":
        for module in prepared.modules():
            if type(module) is torch.nn.Conv2d:
                module.__class__ = OneImageBackendConv2d
        return prepared
    if method == "gradcam":
        fold_batch_norm(prepared)
    elif method == "occlusion":
        inplace_relus(prepared)
        for net in networks(prepared):
            if isinstance(getattr(net, "head", None), torch.nn.Module):
                net.head = Float64Head(net.head)
    return prepared.to(memory_format=torch.channels_last)


@contextlib.contextmanager
def _no_nan_fill():
    """Fresh buffers are not filled with NaN while attributions run.

    Under `torch.use_deterministic_algorithms(True)` (which `seed_everything` turns on) PyTorch also
    fills every new tensor with NaN, a guard against reading uninitialised memory; no op here reads
    memory it did not write, and the fill cost ~30 % of an occlusion pass (profiled: `fill_` under
    `empty_like`/`resize_` in every convolution and batch norm). Determinism itself is unchanged.
    """
    module = getattr(torch.utils, "deterministic", None)
    previous = getattr(module, "fill_uninitialized_memory", None)
    if previous is None:
        yield
        return
    module.fill_uninitialized_memory = False
    try:
        yield
    finally:
        module.fill_uninitialized_memory = previous


def attribute_tensor(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    method: str,
    baseline: torch.Tensor | float = 0.0,  # (1, C, 1, 1) or a scalar, in normalised space
    covariates: torch.Tensor | None = None,
    settings: AttributionSettings | None = None,
    prepared: torch.nn.Module | None = None,
) -> torch.Tensor:
    """Attribution maps (N, C, H, W) of one batch of prepared (normalised) inputs.

    `prepared` is `prepare_model(model, method)` when the caller already made it (one per run)."""
    settings = settings or AttributionSettings()
    method = method_name(method)
    if settings.output not in OUTPUTS:
        raise PhenolensError(f"unknown output {settings.output!r} to attribute; choose one of {', '.join(OUTPUTS)}")
    model.eval()
    if method == "gradcam":
        find_layers(model, settings.layer)  # a clear error before the model is copied
    prepared = prepare_model(model, method) if prepared is None else prepared
    with _no_nan_fill():
        return _attribute_prepared(prepared, inputs, targets, method, baseline, covariates, settings)


def _attribute_prepared(model, inputs, targets, method, baseline, covariates, settings) -> torch.Tensor:
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion, Saliency

    layers = find_layers(model, settings.layer) if method == "gradcam" else []
    model = LogProbability(model).eval() if settings.output == "log_probability" else model
    memory = torch.contiguous_format if method == "saliency" else torch.channels_last
    inputs = inputs.detach().clone(memory_format=memory).requires_grad_(method != "occlusion")
    if isinstance(baseline, torch.Tensor):  # Captum wants the input's shape (or a scalar)
        baseline = baseline.expand_as(inputs).contiguous()
    extra = covariates
    target = targets.long()
    if method == "saliency":
        maps = Saliency(model).attribute(inputs, target=target, abs=True, additional_forward_args=extra)
    elif method == "gradcam":
        # An ensemble's logit is its members' mean, so each member's CAM (linear in the gradient: Captum
        # applies no ReLU by default) comes out scaled by 1 / members: their sum is the members' mean CAM.
        cam = sum(LayerGradCam(model, layer).attribute(inputs, target=target, additional_forward_args=extra) for layer in layers)
        maps = LayerAttribution.interpolate(cam, tuple(inputs.shape[2:]), "bilinear").expand_as(inputs)
    elif method == "occlusion":
        if settings.window > min(inputs.shape[2:]):
            raise PhenolensError(f"occlusion window {settings.window} px is larger than the {tuple(inputs.shape[2:])} images; use a smaller --window")
        with torch.no_grad():
            maps = Occlusion(model).attribute(
                inputs,
                sliding_window_shapes=(1, settings.window, settings.window),
                strides=(1, settings.stride, settings.stride),
                baselines=baseline,
                target=target,
                additional_forward_args=extra,
                perturbations_per_eval=max(1, settings.forward_batch // len(inputs)),
            )
        maps = maps.to(inputs.dtype)  # the float64 head's differences, back to the input's precision
    else:
        maps = IntegratedGradients(model).attribute(
            inputs,
            baselines=baseline,
            target=target,
            additional_forward_args=extra,
            n_steps=settings.n_steps,
            internal_batch_size=max(settings.forward_batch, len(inputs)),
        )
    return maps.detach()


def attribute(
    classifier,
    images: ImageSet | np.ndarray,
    method: str = "integrated_gradients",
    target: str | int | np.ndarray = "predicted",
    settings: AttributionSettings | None = None,
) -> np.ndarray:
    """(N, C, S, S) attribution maps of `images` for `target` (see `resolve_targets`), in the
    geometry of the network input (centre-padded crops)."""
    settings = settings or AttributionSettings()
    method = method_name(method)
    inputs, covariates = classifier.tensor(images), classifier.covariates(images)
    targets = torch.as_tensor(target if isinstance(target, np.ndarray) else resolve_targets(classifier, images, target))
    baseline = baseline_tensor(classifier, settings.baseline)
    model = classifier.model
    prepared = prepare_model(model, method)  # once per run: see prepare_model
    chunks = range(0, len(inputs), settings.batch_size)
    maps = [
        attribute_tensor(
            model,
            inputs[i : i + settings.batch_size],
            targets[i : i + settings.batch_size],
            method,
            baseline,
            None if covariates is None else covariates[i : i + settings.batch_size],
            settings,
            prepared,
        )
        for i in progress(chunks, f"{method} maps", total=len(chunks))
    ]
    return torch.cat(maps).contiguous().numpy()
