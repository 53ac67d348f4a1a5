"""US-CNN (Shpigler, Mor & Bar-Hillel, Ultrasonics 119:106598, 2022): a lean fully convolutional echo detector.

Input a 1-D signal, output a same-length activation (a heat map of echo times of flight and
amplitudes). One wide convolution (kernel ~6 sigma_0, 30 filters) acts as a learned inverse
operator, three dilated convolutions (kernel 5, dilation 2) refine it, dropout 0.2, and a 1x1
convolution maps to one channel.
"""

from __future__ import annotations

import torch
from torch import nn

from phenolens.nn.weights import register_architecture


def wide_kernel_size(sigma0: float) -> int:
    """Odd kernel spanning 6 sigma_0 (padding 3 sigma_0 on each side keeps the length)."""
    return 2 * int(round(3.0 * sigma0)) + 1


@register_architecture("us-cnn")
class USCNN(nn.Module):
    """Fully convolutional 1-D detector: (N, T) or (N, 1, T) signals -> (N, T) activations."""

    def __init__(self, kernel_size: int = 55, filters: int = 30, depth: int = 3, small_kernel: int = 5, dilation: int = 2, dropout: float = 0.2):
        super().__init__()
        if kernel_size % 2 == 0 or small_kernel % 2 == 0:
            raise ValueError("kernel sizes must be odd so the output keeps the input length")
        self.kernel_size = kernel_size
        layers: list[nn.Module] = [nn.Conv1d(1, filters, kernel_size, padding=kernel_size // 2), nn.ReLU()]
        for _ in range(depth):
            layers += [nn.Conv1d(filters, filters, small_kernel, padding=dilation * (small_kernel // 2), dilation=dilation), nn.ReLU()]
        layers += [nn.Dropout(dropout), nn.Conv1d(filters, 1, 1)]
        self.body = nn.Sequential(*layers)
        for module in self.body:
            if isinstance(module, nn.Conv1d):
                nn.init.xavier_normal_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, signals: torch.Tensor) -> torch.Tensor:
        if signals.dim() == 2:
            signals = signals[:, None]
        return self.body(signals)[:, 0]
