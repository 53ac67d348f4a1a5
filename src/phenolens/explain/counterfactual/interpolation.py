"""Autoencoder counterfactuals: walk an image's latent vector towards another class's mean latent.

z_i = z_x (1 - i/n) + mu_q (i/n), i = 0..n; each step is decoded and classified by the trained
classifier. The "boundary" counterfactual is the first step the classifier assigns to q (the analogue
of ECINN's alpha_0), the "full" one is i = n (the class mean itself, the analogue of alpha_1).
Difference maps are taken against the decoded step 0 (the autoencoder's own reconstruction), so the
blur of the reconstruction is not mistaken for a change towards q.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from phenolens.core.errors import PhenolensError
from phenolens.nn.autoencoder import ConvAutoencoder


@dataclass
class InterpolationCounterfactuals:
    """Per image (model input units): reconstruction, first flipped step and final step, the step
    index of the first flip (-1 when none), and the classifier's probabilities at every step (N, n+1, K)."""

    target: int
    predicted: np.ndarray
    reconstructions: np.ndarray
    images_boundary: np.ndarray
    images_full: np.ndarray
    first_flip: np.ndarray
    probabilities: np.ndarray
    valid: np.ndarray

    def flip_rate(self, which: str = "full") -> float:
        """Share of valid images classified as the target at the final step ("full") or at any step ("boundary")."""
        flipped = self.probabilities[:, -1].argmax(1) == self.target if which == "full" else self.first_flip >= 0
        return float(flipped[self.valid].mean()) if self.valid.any() else float("nan")


class LatentInterpolation:
    """Class mean latents of an autoencoder, and interpolation counterfactuals judged by `classifier`.

    Usage: `LatentInterpolation(autoencoder, classifier, steps=10).fit(train_images, labels).explain(images, q)`.
    Learned state: `means_` (K, latent_dim), by true label.
    """

    def __init__(self, autoencoder: ConvAutoencoder, classifier: torch.nn.Module, steps: int = 10, batch_size: int = 32):
        if steps < 1:
            raise PhenolensError(f"interpolation needs at least one step (got {steps})")
        self.autoencoder, self.classifier = autoencoder.eval(), classifier.eval()
        self.steps, self.batch_size = steps, batch_size

    @torch.no_grad()
    def fit(self, images: torch.Tensor, labels: torch.Tensor) -> LatentInterpolation:
        labels = torch.as_tensor(labels)
        z = self._batched(self.autoencoder.encode, images)
        one_hot = torch.nn.functional.one_hot(labels, int(labels.max()) + 1).to(z.dtype)
        self.means_ = (one_hot.T @ z) / one_hot.sum(0).clamp_min(1)[:, None]
        return self

    @torch.no_grad()
    def path(self, images: torch.Tensor, target: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded steps (N, n+1, C, H, W) and the classifier's probabilities (N, n+1, K)."""
        if not hasattr(self, "means_"):
            raise PhenolensError("LatentInterpolation is not fitted: call fit(train_images, train_labels) first")
        if not 0 <= target < len(self.means_):
            raise PhenolensError(f"target class index {target} is outside the {len(self.means_)} classes")
        z = self._batched(self.autoencoder.encode, images)
        fractions = torch.linspace(0, 1, self.steps + 1)[None, :, None]
        walk = z[:, None] * (1 - fractions) + self.means_[target][None, None] * fractions
        decoded = self._batched(self.autoencoder.decode, walk.flatten(0, 1))
        probabilities = torch.softmax(self._batched(self.classifier, decoded), 1)
        return decoded.view(len(images), self.steps + 1, *decoded.shape[1:]), probabilities.view(len(images), self.steps + 1, -1)

    @torch.no_grad()
    def explain(self, images: torch.Tensor, target: int) -> InterpolationCounterfactuals:
        predicted = torch.softmax(self._batched(self.classifier, images), 1).argmax(1)
        decoded, probabilities = self.path(images, target)
        flipped = probabilities.argmax(2) == target
        first_flip = torch.where(flipped.any(1), flipped.int().argmax(1), -1)
        rows = torch.arange(len(images))
        boundary = decoded[rows, first_flip.clamp_min(0)]
        return InterpolationCounterfactuals(
            target=target,
            predicted=predicted.numpy(),
            reconstructions=decoded[:, 0].numpy(),
            images_boundary=boundary.numpy(),
            images_full=decoded[:, -1].numpy(),
            first_flip=first_flip.numpy(),
            probabilities=probabilities.numpy(),
            valid=(predicted != target).numpy(),
        )

    def _batched(self, function, inputs: torch.Tensor) -> torch.Tensor:
        return torch.cat([function(inputs[i : i + self.batch_size]) for i in range(0, len(inputs), self.batch_size)])
