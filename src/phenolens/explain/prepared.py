"""The torch pieces that the attribution methods prepare their model copies with.

Kept apart from `phenolens.explain.attribution` so that the registry of methods (and the settings
the command line is built from) can be imported without torch.
"""

from __future__ import annotations

import contextlib

import torch


class LogProbability(torch.nn.Module):
    """Wraps a classifier so attributions explain log p(target) instead of the target logit.

    Evidence shared by several classes (e.g. "there is GFP" for both GFP classes) raises their
    logits together and cancels in the log-probability, which keeps what sets the target apart.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, covariates: torch.Tensor | None = None) -> torch.Tensor:
        """Log-softmax of the wrapped model's logits.

        Parameters
        ----------
        x : Tensor
            Normalised inputs.
        covariates : Tensor, optional
            One-hot covariates.

        Returns
        -------
        Tensor
            (N, K) log-probabilities.
        """
        return torch.log_softmax(self.model(x, covariates), dim=1)


@contextlib.contextmanager
def native_convolution():
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
        """The convolution of `x`, with the one-image backend where a single image would get it.

        Parameters
        ----------
        x : Tensor
            (N, C, H, W) input.

        Returns
        -------
        Tensor
            The convolved batch.
        """
        select = getattr(torch._C, "_select_conv_backend", None)
        if select is None or isinstance(self.padding, str) or self.padding_mode != "zeros" or not x.is_cpu:
            return super().forward(x)
        geometry = list(self.stride), list(self.padding), list(self.dilation), False, [0] * len(self.stride), self.groups, None
        if select(x[:1], self.weight, self.bias, *geometry) != torch._C._ConvBackend.Slow2d:
            return super().forward(x)
        with native_convolution():
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
        """Logits in float64.

        Parameters
        ----------
        features : Tensor
            (N, D) pooled features.

        Returns
        -------
        Tensor
            (N, K) float64 logits.
        """
        return self.head(features.double())


@contextlib.contextmanager
def no_nan_fill():
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
