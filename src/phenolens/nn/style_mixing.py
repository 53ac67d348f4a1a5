"""MixStyle (Zhou, Yang, Qiao & Xiang, "Domain Generalization with MixStyle", ICLR 2021): a training-time layer that mixes
the feature statistics of the images of a batch, so that a network cannot rely on the "style" of its training domains.

With probability `p` per forward pass, each image's per-channel mean and standard deviation over H, W (computed with
eps 1e-6 and detached, as in the official code) are replaced by a convex mix with those of another image of the batch
(a random permutation; lambda ~ Beta(alpha, alpha) per image): x_norm * sigma_mix + mu_mix. In eval mode it is the
identity. The official layer is `MixStyle` in KaiyangZhou/mixstyle-release, imcls/models/mixstyle.py (commit c337025),
the same in Dassl.pytorch, dassl/modeling/ops/mixstyle.py (commit 0640ad0): mix "random", p 0.5, eps 1e-6, the standard
deviation from torch's unbiased variance; its ResNet-18 domain-generalisation configuration inserts it after the first
three of the four residual stages (mixstyle-release imcls/models/resnet_mixstyle.py, commit fbc081a,
``resnet18_mixstyle_L234_p0d5_a0d1``: after conv2_x, conv3_x, conv4_x, p 0.5, alpha 0.1; Dassl's ``resnet18_ms123``:
after layer1-3). `attach_style_mixing` inserts it the same way, after every stage but the stem and the last, through
forward hooks that training removes afterwards, so that a trained network holds no trace of it.

The random draws go through a torch.Generator (the training step's), so a run is reproducible and resumable; Beta
variates are drawn as a ratio of Gamma variates (Marsaglia & Tsang 2000), which torch cannot draw from a generator.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

EPS = 1e-6  # added to the variance before the square root, as in the official code
ALPHA = 0.1  # the Beta(alpha, alpha) of the mixing weights: the paper's and official ResNet-18 configuration's value


def gamma_variates(shape: float, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` draws of Gamma(shape, 1) from `generator`: Marsaglia & Tsang's method, boosted for shapes below 1.

    Parameters
    ----------
    shape : float
        The Gamma's shape (> 0).
    count : int
        How many draws.
    generator : torch.Generator
        The source of randomness.

    Returns
    -------
    Tensor
        (count,) float64 draws.
    """
    boosted = shape + 1.0 if shape < 1.0 else shape  # Gamma(a) = Gamma(a + 1) * U ** (1 / a) for a < 1
    d = boosted - 1.0 / 3.0
    c = 1.0 / (9.0 * d) ** 0.5
    draws = torch.empty(count, dtype=torch.float64)
    pending = torch.arange(count)
    while len(pending):
        x = torch.randn(len(pending), generator=generator, dtype=torch.float64)
        u = torch.rand(len(pending), generator=generator, dtype=torch.float64)
        v = (1.0 + c * x) ** 3
        accepted = (v > 0) & (torch.log(u) < 0.5 * x**2 + d - d * v + d * torch.log(v.clamp(min=1e-300)))
        draws[pending[accepted]] = d * v[accepted]
        pending = pending[~accepted]
    if shape < 1.0:
        draws = draws * torch.rand(count, generator=generator, dtype=torch.float64) ** (1.0 / shape)
    return draws


def beta_variates(alpha: float, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` draws of Beta(alpha, alpha) from `generator` (the ratio G1 / (G1 + G2) of Gamma(alpha) variates).

    Parameters
    ----------
    alpha : float
        Both shape parameters (> 0).
    count : int
        How many draws.
    generator : torch.Generator
        The source of randomness.

    Returns
    -------
    Tensor
        (count,) float64 draws in [0, 1] (about a tenth of Beta(0.1, 0.1) lies within float32's step of 1).
    """
    first, second = gamma_variates(alpha, count, generator), gamma_variates(alpha, count, generator)
    total = first + second
    # both Gammas can underflow to 0 for a tiny alpha: then either weight is as likely, so take a fair coin
    coin = torch.rand(count, generator=generator, dtype=torch.float64).round()
    return torch.where(total > 0, first / total.clamp(min=1e-300), coin)


def mix_styles(x: torch.Tensor, permutation: torch.Tensor, weights: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Each image's feature maps with its per-channel mean and standard deviation mixed with those of image `permutation[i]`.

    Parameters
    ----------
    x : Tensor
        (B, C, H, W) feature maps.
    permutation : Tensor
        (B,) the image whose statistics each image mixes in.
    weights : Tensor
        (B,) lambda: the share of each image's own statistics.
    eps : float
        Added to the variance (torch's unbiased variance over H, W) before the square root.

    Returns
    -------
    Tensor
        (B, C, H, W): ``(x - mu) / sigma * sigma_mix + mu_mix``, the statistics detached (the gradient reaches `x`
        only through the normalised maps, as in the official code).
    """
    mean = x.mean(dim=(2, 3), keepdim=True).detach()
    deviation = (x.var(dim=(2, 3), keepdim=True) + eps).sqrt().detach()
    share = weights.to(x.dtype).reshape(-1, 1, 1, 1)
    mixed_mean = share * mean + (1.0 - share) * mean[permutation]
    mixed_deviation = share * deviation + (1.0 - share) * deviation[permutation]
    return (x - mean) / deviation * mixed_deviation + mixed_mean


class StyleMixing(nn.Module):
    """MixStyle: with probability `p` per forward pass in training mode, `mix_styles` with a random permutation of the batch
    and Beta(alpha, alpha) weights; the identity otherwise (and always in eval mode).

    Parameters
    ----------
    p : float
        Probability that a forward pass mixes.
    alpha : float
        Shape of the Beta distribution of the mixing weights.
    generator : torch.Generator, optional
        Source of the draws (default: a fresh one seeded 0).
    eps : float
        Added to the variance before the square root.
    """

    def __init__(self, p: float = 0.5, alpha: float = ALPHA, generator: torch.Generator | None = None, eps: float = EPS):
        super().__init__()
        self.p, self.alpha, self.eps = p, alpha, eps
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The feature maps, their styles mixed or not.

        Parameters
        ----------
        x : Tensor
            (B, C, H, W) feature maps; maps of one pixel pass unchanged (their standard deviation is undefined).

        Returns
        -------
        Tensor
            The same shape.
        """
        if not self.training or self.p <= 0 or x.shape[2] * x.shape[3] < 2:  # one pixel per map: no spread to mix
            return x
        if torch.rand(1, generator=self.generator).item() >= self.p:
            return x
        permutation = torch.randperm(len(x), generator=self.generator)
        return mix_styles(x, permutation, beta_variates(self.alpha, len(x), self.generator).to(x.device), self.eps)


def attach_style_mixing(model: nn.Module, layer: StyleMixing) -> list[RemovableHandle]:
    """Apply `layer` to the output of every stage of `model` but its stem and its last, while that stage is in training mode.

    On a ResNet-18 (stem, stage1-stage4) that is after stage1, stage2 and stage3: the official configuration.

    Parameters
    ----------
    model : nn.Module
        A network with an ordered ``stages`` ModuleDict whose first entry is the stem.
    layer : StyleMixing
        The layer (one, shared by every insertion point, as in the official code).

    Returns
    -------
    list of RemovableHandle
        The hooks; ``handle.remove()`` takes each off (the network is then as it was).
    """

    def mixed(stage: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return layer(output) if stage.training else output

    names = list(model.stages.keys())[1:-1]
    return [model.stages[name].register_forward_hook(mixed) for name in names]
