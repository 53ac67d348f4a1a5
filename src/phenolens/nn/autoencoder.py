"""Convolutional autoencoder for multi-channel cell images (latent-interpolation counterfactuals)."""

from __future__ import annotations

import torch
from torch import nn

from phenolens.core.errors import PhenolensError
from phenolens.nn.weights import register_architecture


@register_architecture("conv-autoencoder")
class ConvAutoencoder(nn.Module):
    """Stride-2 convolutions down to a latent vector, transposed convolutions back up.

    Args:
        in_channels: image channels.
        image_size: height = width of the input; divisible by 2 ** len(widths).
        latent_dim: length of the latent vector.
        widths: channels after each down-sampling step (mirrored by the decoder).
    """

    def __init__(self, in_channels: int, image_size: int, latent_dim: int = 64, widths: list[int] = (16, 32, 64)):
        super().__init__()
        if image_size % 2 ** len(widths):
            raise PhenolensError(f"image size {image_size} is not divisible by 2**{len(widths)}; pad the images to a multiple of {2 ** len(widths)}")
        self.in_channels = in_channels
        self.bottom = (widths[-1], image_size // 2 ** len(widths), image_size // 2 ** len(widths))
        down, channels = [], in_channels
        for width in widths:
            down += [nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.BatchNorm2d(width), nn.ELU()]
            channels = width
        self.encoder = nn.Sequential(*down, nn.Flatten(), nn.Linear(channels * self.bottom[1] * self.bottom[2], latent_dim))
        up = []
        for width in [*reversed(widths[:-1]), widths[0]]:
            up += [nn.ConvTranspose2d(channels, width, 4, stride=2, padding=1), nn.BatchNorm2d(width), nn.ELU()]
            channels = width
        self.project = nn.Linear(latent_dim, widths[-1] * self.bottom[1] * self.bottom[2])
        self.decoder = nn.Sequential(*up, nn.Conv2d(channels, in_channels, 3, padding=1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_channels:
            raise PhenolensError(f"the autoencoder expects {self.in_channels} channels, got {x.shape[1]}; give images with the trained channels")
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.project(z).view(-1, *self.bottom))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
