"""Tiny torch networks for the SIGN tests (a residual CNN and a plain CNN, random weights)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    """A residual block: two 3x3 convolutions plus a shortcut (1x1 strided convolution when shapes change).

    Parameters
    ----------
    cin, cout : int
        Input and output channels.
    stride : int
        Stride of the first convolution and the shortcut.
    dilation : int
        Dilation of the second convolution.
    """

    def __init__(self, cin: int, cout: int, stride: int, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        """Residual block output (ReLU of the sum).

        Parameters
        ----------
        x : Tensor
            (N, cin, H, W).

        Returns
        -------
        Tensor
            (N, cout, H / stride, W / stride).
        """
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class TinyResNet(nn.Module):
    """A three-block residual CNN with random weights (a stem, then layer1..layer3 with strides 1, 2, 2).

    Parameters
    ----------
    channels : int
        Input channels.
    classes : int
        Outputs.
    width : int
        Channels of the first block (doubled from layer2).
    """

    def __init__(self, channels: int = 1, classes: int = 3, width: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, padding=1))
        self.layer1 = Block(width, width, 1)
        self.layer2 = Block(width, 2 * width, 2)
        self.layer3 = Block(2 * width, 2 * width, 2, dilation=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, classes)

    def stage_names(self) -> list[str]:
        """The layers SIGN models by default.

        Returns
        -------
        list of str
        """
        return ["layer1", "layer2", "layer3"]

    def forward(self, x):
        """Class scores.

        Parameters
        ----------
        x : Tensor
            (N, channels, H, W).

        Returns
        -------
        Tensor
            (N, classes).
        """
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class HandMade(nn.Module):
    """A hand-set two-layer CNN: layer1 splits pixels into positive and negative parts (3x3 centre tap),
    layer2 sums each part over a 3x3 window with stride 2; the output compares the two sums.

    Its words and fields are known by hand, so tests can check SIGN's numbers exactly. It takes no parameters.
    """

    def __init__(self):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(2, 2, 3, stride=2, padding=1, bias=False), nn.ReLU())
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.layer1[0].weight.zero_()
            self.layer1[0].weight[0, 0, 1, 1], self.layer1[0].weight[1, 0, 1, 1] = 1.0, -1.0
            self.layer2[0].weight.zero_()
            self.layer2[0].weight[0, 0], self.layer2[0].weight[1, 1] = 1.0, 1.0
            self.fc.weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))

    def forward(self, x):
        """Class scores.

        Parameters
        ----------
        x : Tensor
            (N, 1, H, W).

        Returns
        -------
        Tensor
            (N, 2).
        """
        return self.fc(self.layer2(self.layer1(x)).mean((2, 3)))
