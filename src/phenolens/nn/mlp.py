"""A fully connected ReLU network (the kind SIGN models with an HMM over its hidden layers)."""

from __future__ import annotations

import torch
from torch import nn

from phenolens.core.errors import PhenolensError
from phenolens.nn.weights import register_architecture


@register_architecture("mlp")
class MLP(nn.Module):
    """flatten -> [Linear -> ReLU] per entry of `hidden` -> Linear to `n_classes` logits.

    `hidden_activations(x)` returns the post-ReLU output of every hidden layer, input to output.

    Parameters
    ----------
    in_features : int
        Length of the flattened input.
    hidden : list of int
        Units of each hidden layer, input to output.
    n_classes : int
        Number of classes (at least 2).

    Raises
    ------
    PhenolensError
        For an empty or non-positive layer list, or fewer than 2 classes.
    """

    def __init__(self, in_features: int, hidden: list[int], n_classes: int):
        super().__init__()
        if in_features < 1 or not hidden or min(hidden) < 1 or n_classes < 2:
            raise PhenolensError(
                f"an MLP needs >= 1 input, >= 1 hidden layer of >= 1 unit and >= 2 classes; got {in_features}, {hidden}, {n_classes}"
            )
        sizes = [in_features, *hidden]
        self.hidden = nn.ModuleList(nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in zip(sizes[:-1], sizes[1:]))
        self.output = nn.Linear(hidden[-1], n_classes)

    def hidden_activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The post-ReLU output of every hidden layer.

        Parameters
        ----------
        x : torch.Tensor
            (N, ...) inputs, flattened to (N, in_features).

        Returns
        -------
        list of torch.Tensor
            One (N, units) tensor per hidden layer, input to output.
        """
        out, activations = x.flatten(1), []
        for layer in self.hidden:
            out = layer(out)
            activations.append(out)
        return activations

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, (N, n_classes)."""
        return self.output(self.hidden_activations(x)[-1])
