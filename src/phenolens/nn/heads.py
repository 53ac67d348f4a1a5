"""Classification heads and their losses: softmax cross-entropy, ArcFace, and the composite of both.

ArcFace (Deng et al. 2019) adds an angular margin `m` to the angle between a feature and its class
centre and scales the cosines by `s`; trained alone it oscillates on small cell-image sets, so the
composite loss `c * ArcFace + (1 - c) * softmax` (c = 0.2) keeps a plain linear head beside it.
Predictions come from the linear head when there is one, else from the scaled cosines.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from phenolens.core.errors import PhenolensError

LOSSES = ("softmax", "arcface", "composite")


class ArcFace(nn.Module):
    """Cosine classifier with an additive angular margin.

    Parameters
    ----------
    in_features : int
        Length of the feature vectors.
    n_classes : int
        Number of classes (one centre each).
    scale : float
        s, the factor on the cosines.
    margin : float
        m, the angle added to each sample's own class during training (radians).
    """

    def __init__(self, in_features: int, n_classes: int, scale: float = 30.0, margin: float = 0.5):
        super().__init__()
        self.scale, self.margin = scale, margin
        self.weight = nn.Parameter(torch.empty(n_classes, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw the class centres afresh (Xavier uniform)."""
        nn.init.xavier_uniform_(self.weight)

    def cosine(self, features: torch.Tensor) -> torch.Tensor:
        """Cosines between the features and the class centres.

        Parameters
        ----------
        features : torch.Tensor
            (N, in_features).

        Returns
        -------
        torch.Tensor
            (N, n_classes).
        """
        return F.linear(F.normalize(features), F.normalize(self.weight))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Scaled cosines without margin: the logits used at prediction time.

        Parameters
        ----------
        features : torch.Tensor
            (N, in_features).

        Returns
        -------
        torch.Tensor
            (N, n_classes) logits.
        """
        return self.scale * self.cosine(features)

    def margin_logits(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Scaled cosines with cos(theta + m) for each sample's own class (the training logits).

        Parameters
        ----------
        features : torch.Tensor
            (N, in_features).
        labels : torch.Tensor
            (N,) class indices.

        Returns
        -------
        torch.Tensor
            (N, n_classes) logits.
        """
        cosine = self.cosine(features).clamp(-1 + 1e-7, 1 - 1e-7)
        target = cosine.gather(1, labels[:, None])
        theta = torch.acos(target)
        # Past theta = pi - m, cos(theta + m) stops decreasing; the usual linear extension keeps it monotone.
        shifted = torch.where(theta + self.margin < math.pi, torch.cos(theta + self.margin), target - self.margin * math.sin(self.margin))
        return self.scale * cosine.scatter(1, labels[:, None], shifted)


class ClassifierHead(nn.Module):
    """The head on pooled features: a linear layer, an ArcFace layer, or both (composite loss).

    Parameters
    ----------
    in_features : int
        Length of the pooled feature vectors.
    n_classes : int
        Number of classes.
    loss : str
        ``softmax``, ``arcface`` or ``composite``.
    composite_weight : float
        c, the ArcFace share of the composite loss.

    Raises
    ------
    PhenolensError
        For an unknown loss.
    """

    def __init__(self, in_features: int, n_classes: int, loss: str = "softmax", composite_weight: float = 0.2):
        super().__init__()
        if loss not in LOSSES:
            raise PhenolensError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
        self.loss_name, self.composite_weight = loss, composite_weight
        self.linear = nn.Linear(in_features, n_classes) if loss in ("softmax", "composite") else None
        self.arcface = ArcFace(in_features, n_classes) if loss in ("arcface", "composite") else None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Prediction logits, (N, n_classes): the linear layer's when there is one, else ArcFace's."""
        return self.linear(features) if self.linear is not None else self.arcface(features)

    def loss(self, features: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample-weighted mean loss of hard `labels` (weights default to 1).

        Mixed targets (CutMix) are written as two calls, lambda * loss(a) + (1 - lambda) * loss(b),
        with per-sample lambdas passed as `weights`.

        Parameters
        ----------
        features : torch.Tensor
            (N, in_features) pooled features.
        labels : torch.Tensor
            (N,) class indices.
        weights : torch.Tensor, optional
            (N,) per-sample weights.

        Returns
        -------
        torch.Tensor
            The scalar loss.
        """
        weights = torch.ones(len(labels), device=features.device) if weights is None else weights
        parts = []
        if self.linear is not None:
            parts.append((1.0 - self.composite_weight if self.arcface is not None else 1.0, self.linear(features)))
        if self.arcface is not None:
            parts.append((self.composite_weight if self.linear is not None else 1.0, self.arcface.margin_logits(features, labels)))
        total = sum(share * F.cross_entropy(logits, labels, reduction="none") for share, logits in parts)
        return (weights * total).sum() / max(len(labels), 1)
