"""The profile autoencoder of anomaly-based profiling: learns the feature dependencies of control wells.

Encoder: fully connected layers (default 256-128-64) with ReLU and dropout down to a small
latent code (16); decoder: one linear layer back to the input size, so each reconstructed
feature is a linear read-out of the code. Training minimises reconstruction MSE plus an L2
penalty on the output (`reconstruction_loss`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from phenolens.nn.weights import register_architecture


@register_architecture("profile_autoencoder")
class ProfileAutoencoder(nn.Module):
    """Autoencoder over one well's standardised feature vector (batch, n_features) -> same shape."""

    def __init__(self, n_features: int, hidden: Sequence[int] = (256, 128, 64), latent: int = 16, dropout: float = 0.1):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, latent))
        self.encoder = nn.Sequential(*layers)
        self.decoder = nn.Linear(latent, n_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def reconstruction_loss(model: nn.Module, inputs: torch.Tensor, output_l2: float = 0.0) -> torch.Tensor:
    """Mean squared reconstruction error plus `output_l2` times the mean squared output norm per well.

    Parameters
    ----------
    model : torch.nn.Module
        The autoencoder.
    inputs : torch.Tensor
        (batch, n_features) standardised wells.
    output_l2 : float
        Weight of the output penalty.

    Returns
    -------
    torch.Tensor
        The scalar loss.
    """
    output = model(inputs)
    loss = torch.mean((output - inputs) ** 2)
    if output_l2:
        loss = loss + output_l2 * output.pow(2).sum(dim=1).mean()
    return loss
