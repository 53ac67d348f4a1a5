"""`DomainAdversary`: the domain classifier of domain-adversarial training (Ganin & Lempitsky 2015).

It predicts a domain (well, plate, batch) from an embedding. Called directly it reads the embedding
through a gradient reversal layer, so one loss both trains it to predict the domain and pushes the
embedding to hide it; `classify` reads the embedding as it is, for training the adversary on its own
or for a domain-confusion loss (Tzeng et al. 2015). Told each image's class, it asks only for the
domain information the class does not explain, so that a domain confounded with the classes (every
control crop from one well) is not removed together with the class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from phenolens.nn.gradient_reversal import GradientReversal


class DomainAdversary(nn.Module):
    """[standardised embedding, class one-hot] -> (Linear -> ReLU) x depth -> Linear to domain logits.

    Parameters
    ----------
    in_features : int
        Length of the embedding.
    n_domains : int
        Number of domain values (at least 2).
    n_classes : int
        Length of the class one-hot given beside the embedding (0: not told the class).
    hidden : int
        Units of each hidden layer.
    depth : int
        Hidden layers (0: a linear adversary, multinomial logistic regression).

    Attributes
    ----------
    reversal : GradientReversal
        Used by `forward`; set ``reversal.lambda_`` between steps (e.g. by `ganin_lambda`).
    """

    def __init__(self, in_features: int, n_domains: int, n_classes: int = 0, hidden: int = 64, depth: int = 1):
        super().__init__()
        self.n_classes = n_classes
        self.reversal = GradientReversal(0.0)
        # standardised as a linear probe would read it: a direction of small variance can carry the domain as plainly as a large one
        self.standardise = nn.BatchNorm1d(in_features, affine=False)
        layers: list[nn.Module] = []
        width = in_features + n_classes
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.body = nn.Sequential(*layers, nn.Linear(width, n_domains))

    def classify(self, features: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        """Domain logits, (N, n_domains), with the ordinary gradient to `features`.

        Parameters
        ----------
        features : torch.Tensor
            (N, in_features) embeddings.
        classes : torch.Tensor, optional
            (N, n_classes) class weights per image (one-hot, or mixed by CutMix); needed when `n_classes` > 0.

        Returns
        -------
        torch.Tensor
            Unnormalised domain scores (in training mode a single image is standardised with the running statistics).
        """
        if self.training and len(features) < 2:  # one image (a last batch of one) has no batch statistics: read it as eval mode does
            features = F.batch_norm(features, self.standardise.running_mean, self.standardise.running_var, training=False, eps=self.standardise.eps)
        else:
            features = self.standardise(features)
        if self.n_classes:
            features = torch.cat([features, classes], dim=1)
        return self.body(features)

    def forward(self, features: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        """Domain logits, (N, n_domains), with the gradient to `features` reversed (times ``-reversal.lambda_``).

        Parameters
        ----------
        features, classes
            As for `classify`.

        Returns
        -------
        torch.Tensor
            Unnormalised domain scores.
        """
        return self.classify(self.reversal(features), classes)

    def reset_parameters(self) -> None:
        """Draw fresh weights for every layer (from the global generator), as a new adversary would have."""
        self.standardise.reset_running_stats()
        for layer in self.body:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
