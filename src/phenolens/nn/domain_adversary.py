"""A domain adversary: gradient reversal, then a small classifier of the domain (batch, plate, well).

Trained with the ordinary cross-entropy on the domain labels, it learns to predict the domain while
the reversed gradient pushes whatever feeds it (a latent code, an embedding) to hide the domain
(Ganin & Lempitsky 2015).
"""

from __future__ import annotations

import torch
from torch import nn

from phenolens.nn.gradient_reversal import GradientReversal


class DomainAdversary(nn.Module):
    """(batch, features) -> (batch, n_domains) domain logits behind a gradient reversal layer.

    Parameters
    ----------
    in_features : int
        Width of the code or embedding it reads.
    n_domains : int
        Number of domains (classes).
    hidden : int
        Width of its one hidden layer.
    lambda_ : float
        Initial reversal strength (`reversal.lambda_`, set it per step from `ganin_lambda`).
    """

    def __init__(self, in_features: int, n_domains: int, hidden: int = 64, lambda_: float = 0.0):
        super().__init__()
        self.reversal = GradientReversal(lambda_)
        self.classifier = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, n_domains))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.reversal(features))
