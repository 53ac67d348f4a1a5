"""US-CNN (Shpigler, Mor & Bar-Hillel, Ultrasonics 119:106598, 2022): a lean fully convolutional echo detector.

Input a 1-D signal, output a same-length activation (a heat map of echo times of flight and
amplitudes). One wide convolution (kernel ~6 sigma_0, 30 filters) acts as a learned inverse
operator, three dilated convolutions (kernel 5, dilation 2) refine it, dropout 0.2, and a 1x1
convolution maps to one channel.

The 1-D convolutions are run as height-1 2-D convolutions in channels-last layout: the same
arithmetic, but oneDNN's fastest CPU kernels (about 1.5x faster than Conv1d in float32, and able to
use AMX tiles under bfloat16 autocast).
"""

from __future__ import annotations

import torch
from torch import nn

from phenolens.nn.weights import register_architecture


def wide_kernel_size(sigma0: float) -> int:
    """Odd kernel spanning 6 sigma_0 (padding 3 sigma_0 on each side keeps the length).

    Parameters
    ----------
    sigma0 : float
        Pulse envelope width in samples.

    Returns
    -------
    int
        The first layer's kernel size.
    """
    return 2 * int(round(3.0 * sigma0)) + 1


def _conv(in_channels: int, out_channels: int, kernel: int, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, (1, kernel), padding=(0, dilation * (kernel // 2)), dilation=(1, dilation))


@register_architecture("us-cnn")
class USCNN(nn.Module):
    """Fully convolutional 1-D detector: (N, T) or (N, 1, T) signals -> (N, T) activations.

    Parameters
    ----------
    kernel_size : int
        Odd width of the first (wide) convolution, about 6 sigma_0.
    filters : int
        Channels of every hidden layer.
    depth : int
        Dilated convolutions after the wide one.
    small_kernel : int
        Odd width of the dilated convolutions.
    dilation : int
        Their dilation.
    dropout : float
        Dropout before the 1x1 output convolution.

    Raises
    ------
    ValueError
        For an even kernel size (the output would not keep the input length).
    """

    def __init__(self, kernel_size: int = 55, filters: int = 30, depth: int = 3, small_kernel: int = 5, dilation: int = 2, dropout: float = 0.2):
        super().__init__()
        if kernel_size % 2 == 0 or small_kernel % 2 == 0:
            raise ValueError("kernel sizes must be odd so the output keeps the input length")
        self.kernel_size = kernel_size
        # samples on each side of an output that reach it through the receptive field
        self.context = kernel_size // 2 + depth * dilation * (small_kernel // 2)
        layers: list[nn.Module] = [_conv(1, filters, kernel_size), nn.ReLU()]
        for _ in range(depth):
            layers += [_conv(filters, filters, small_kernel, dilation), nn.ReLU()]
        layers += [nn.Dropout(dropout), nn.Conv2d(filters, 1, 1)]
        self.body = nn.Sequential(*layers)
        for module in self.body:
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_normal_(module.weight)
                nn.init.zeros_(module.bias)
        self.to(memory_format=torch.channels_last)

    def forward(self, signals: torch.Tensor) -> torch.Tensor:
        """The activation of a batch of signals.

        Parameters
        ----------
        signals : torch.Tensor
            (N, T) or (N, 1, T).

        Returns
        -------
        torch.Tensor
            (N, T) float32.
        """
        if signals.dim() == 3:
            signals = signals[:, 0]
        images = signals[:, None, None, :].contiguous(memory_format=torch.channels_last)
        return self.body(images)[:, 0, 0].float()
