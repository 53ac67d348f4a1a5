"""A fixed affine layer that erases a concept from a network's embedding (LEACE, Belrose et al. 2023).

`AffineEraser` holds an eraser fitted by `concept_erasure.LeaceFitter` as two buffers, so that it is saved
with the network's other tensors (safetensors) and applied by every forward pass: x -> x - (x - bias) M^T,
where M = proj_left @ proj_right is the rank-k edit of the identity LEACE stores as two thin matrices (here
as one square matrix, so that its shape follows from the feature length alone and a saved network can be
rebuilt from its hyperparameters before its tensors are read).
"""

from __future__ import annotations

import torch
from torch import nn


class AffineEraser(nn.Module):
    """x -> x - (x - bias) @ edit.T: a fitted concept eraser as a fixed (untrained) layer.

    Parameters
    ----------
    features : int
        Length of the feature vectors it erases from.

    Attributes
    ----------
    bias : Tensor
        (features,) the mean the edit is centred on (LEACE's affine bias).
    edit : Tensor
        (features, features) the matrix subtracted from the identity (LEACE's proj_left @ proj_right); zeros erase nothing.
    """

    def __init__(self, features: int):
        super().__init__()
        self.register_buffer("bias", torch.zeros(features))
        self.register_buffer("edit", torch.zeros(features, features))

    @classmethod
    def from_leace(cls, eraser) -> AffineEraser:
        """The layer that applies a fitted `concept_erasure.LeaceEraser` (in float32, the network's precision).

        Parameters
        ----------
        eraser : concept_erasure.LeaceEraser
            A fitted eraser (its proj_left, proj_right and bias).

        Returns
        -------
        AffineEraser
            The same affine map.
        """
        layer = cls(eraser.proj_left.shape[0])
        bias = eraser.bias if eraser.bias is not None else torch.zeros(eraser.proj_left.shape[0])
        layer.bias.copy_(bias.detach().float())
        layer.edit.copy_((eraser.proj_left @ eraser.proj_right).detach().float())
        return layer

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """The features with the concept erased.

        Parameters
        ----------
        features : Tensor
            (N, features).

        Returns
        -------
        Tensor
            (N, features), in the dtype of `features`.
        """
        return features - ((features - self.bias.to(features.dtype)) @ self.edit.to(features.dtype).T)
