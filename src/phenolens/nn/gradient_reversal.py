"""Gradient reversal (Ganin & Lempitsky 2015): identity forward, gradient times -lambda backward.

Placed between a feature extractor and a domain classifier (an "adversary" predicting the plate,
batch or well), it lets one optimiser step train the adversary to predict the domain while pushing
the features to hide it. `ganin_lambda` is the paper's schedule, which ramps lambda from 0 to 1 so
the adversary's noisy early gradients do not disturb the features before they mean anything.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class _ReverseGradient(torch.autograd.Function):
    """Identity on the forward pass; multiplies the incoming gradient by ``-lambda_`` on the backward pass."""

    @staticmethod
    def forward(ctx, inputs: torch.Tensor, lambda_: float) -> torch.Tensor:
        ctx.lambda_ = lambda_
        return inputs.view_as(inputs)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.lambda_ * grad_output, None


def reverse_gradient(inputs: torch.Tensor, lambda_: float = 1.0) -> torch.Tensor:
    """`inputs` unchanged, with the gradient flowing back through it multiplied by ``-lambda_``.

    Parameters
    ----------
    inputs : torch.Tensor
        Any tensor (typically a latent code or an embedding).
    lambda_ : float
        Reversal strength (0 blocks the gradient, 1 flips it).

    Returns
    -------
    torch.Tensor
        A tensor equal to `inputs`.
    """
    return _ReverseGradient.apply(inputs, float(lambda_))


class GradientReversal(nn.Module):
    """The gradient reversal layer as a module; set `lambda_` between steps (e.g. from `ganin_lambda`).

    Parameters
    ----------
    lambda_ : float
        Initial reversal strength.

    Examples
    --------
    >>> layer = GradientReversal()
    >>> layer.lambda_ = ganin_lambda(0.5)
    """

    def __init__(self, lambda_: float = 1.0):
        super().__init__()
        self.lambda_ = float(lambda_)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return reverse_gradient(inputs, self.lambda_)

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_:g}"


def ganin_lambda(progress: float, gamma: float = 10.0, scale: float = 1.0) -> float:
    """Ganin & Lempitsky's schedule ``scale * (2 / (1 + exp(-gamma * p)) - 1)``: 0 at the start, ~scale at the end.

    Parameters
    ----------
    progress : float
        Training progress p in [0, 1] (step / total steps); clipped to that range.
    gamma : float
        Steepness (10 in the paper).
    scale : float
        The final lambda (1 in the paper).

    Returns
    -------
    float
        lambda_p.
    """
    p = min(max(float(progress), 0.0), 1.0)
    return scale * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)
