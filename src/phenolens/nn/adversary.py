"""`DomainAdversary`: the domain classifier of domain-adversarial training (Ganin & Lempitsky 2015).

It predicts a domain (well, plate, batch) from an embedding behind a gradient reversal layer: one
optimiser step trains it to predict the domain and pushes the embedding to hide it. Told each
image's class, it asks only for the domain information the class does not explain, so that a domain
confounded with the classes (every control crop from one well) is not removed together with the class.
"""

from __future__ import annotations

import torch
from torch import nn

from phenolens.nn.gradient_reversal import GradientReversal


class DomainAdversary(nn.Module):
    """gradient reversal -> [embedding, class one-hot] -> Linear -> ReLU -> Linear to domain logits.

    Parameters
    ----------
    in_features : int
        Length of the embedding.
    n_domains : int
        Number of domain values (at least 2).
    n_classes : int
        Length of the class one-hot given beside the embedding (0: not told the class).
    hidden : int
        Units of the hidden layer.

    Attributes
    ----------
    reversal : GradientReversal
        Set ``reversal.lambda_`` between steps (e.g. by `ganin_lambda`).
    """

    def __init__(self, in_features: int, n_domains: int, n_classes: int = 0, hidden: int = 64):
        super().__init__()
        self.n_classes = n_classes
        self.reversal = GradientReversal(0.0)
        self.body = nn.Sequential(nn.Linear(in_features + n_classes, hidden), nn.ReLU(), nn.Linear(hidden, n_domains))

    def forward(self, features: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        """Domain logits, (N, n_domains).

        Parameters
        ----------
        features : torch.Tensor
            (N, in_features) embeddings; their gradient comes back reversed.
        classes : torch.Tensor, optional
            (N, n_classes) class weights per image (one-hot, or mixed by CutMix); needed when `n_classes` > 0.

        Returns
        -------
        torch.Tensor
            Unnormalised domain scores.
        """
        hidden = self.reversal(features)
        if self.n_classes:
            hidden = torch.cat([hidden, classes], dim=1)
        return self.body(hidden)
