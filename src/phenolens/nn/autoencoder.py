"""Convolutional autoencoder for multi-channel cell images (latent-interpolation counterfactuals)."""

from __future__ import annotations

import torch
from torch import nn

from phenolens.core.errors import PhenolensError
from phenolens.nn.hyperparameters import check_whole_number, check_whole_numbers
from phenolens.nn.weights import register_architecture


@register_architecture("conv-autoencoder")
class ConvAutoencoder(nn.Module):
    """Stride-2 convolutions down to a latent vector, transposed convolutions back up.

    Parameters
    ----------
    in_channels : int
        Image channels, 1 to 64.
    image_size : int
        Height = width of the input, at most 1024; divisible by 2 ** len(widths).
    latent_dim : int
        Length of the latent vector, 1 to 65536.
    widths : sequence of int
        Channels after each down-sampling step (mirrored by the decoder), each 1 to 1024.

    Raises
    ------
    PhenolensError
        When a hyperparameter has the wrong type or lies outside these bounds (a damaged or
        foreign ``model.json`` is refused before anything is allocated).
    """

    def __init__(self, in_channels: int, image_size: int, latent_dim: int = 64, widths: list[int] = (16, 32, 64)):
        super().__init__()
        check_whole_numbers("autoencoder", "widths", widths, 1, 1024)
        for name, value, low, high in (
            ("in_channels", in_channels, 1, 64),
            ("image_size", image_size, 1, 1024),
            ("latent_dim", latent_dim, 1, 65536),
        ):
            check_whole_number("autoencoder", name, value, low, high)
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
        """Latent vectors of images.

        Parameters
        ----------
        x : torch.Tensor
            (N, in_channels, image_size, image_size) images.

        Returns
        -------
        torch.Tensor
            (N, latent_dim) latents.

        Raises
        ------
        PhenolensError
            On a wrong channel count.
        """
        if x.shape[1] != self.in_channels:
            raise PhenolensError(f"the autoencoder expects {self.in_channels} channels, got {x.shape[1]}; give images with the trained channels")
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images from latent vectors.

        Parameters
        ----------
        z : torch.Tensor
            (N, latent_dim) latents.

        Returns
        -------
        torch.Tensor
            (N, in_channels, image_size, image_size) images.
        """
        return self.decoder(self.project(z).view(-1, *self.bottom))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction decode(encode(x)).

        Parameters
        ----------
        x : torch.Tensor
            (N, in_channels, image_size, image_size) images.

        Returns
        -------
        torch.Tensor
            The reconstructions, shaped like `x`.
        """
        return self.decode(self.encode(x))
