"""Autoencoder counterfactuals: walk an image's latent vector towards another class's mean latent.

z_i = z_x (1 - i/n) + mu_q (i/n), i = 0..n; each step is decoded and classified by the trained
classifier. The "boundary" counterfactual is the first step the classifier assigns to q (the analogue
of ECINN's alpha_0), the "full" one is i = n (the class mean itself, the analogue of alpha_1).
Difference maps are taken against the decoded step 0 (the autoencoder's own reconstruction), so the
blur of the reconstruction is not mistaken for a change towards q.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.base import BaseEstimator

from phenolens.core.errors import PhenolensError
from phenolens.core.estimators import check_is_fitted
from phenolens.nn.autoencoder import ConvAutoencoder


@dataclass
class InterpolationCounterfactuals:
    """Per image (model input units): reconstruction, first flipped step and final step, the step
    index of the first flip (-1 when none), and the classifier's probabilities at every step (N, n+1, K).

    Attributes
    ----------
    target : int
        Target class index.
    predicted : numpy.ndarray
        (N,) predicted class of each original.
    reconstructions, images_boundary, images_full : numpy.ndarray
        (N, C, H, W) decoded step 0, first flipped step (step 0 when none) and final step.
    first_flip : numpy.ndarray
        (N,) index of the first step classified as the target, -1 when none is.
    probabilities : numpy.ndarray
        (N, n+1, K) classifier probabilities at every step.
    valid : numpy.ndarray
        (N,) False for images already predicted as the target.
    """

    target: int
    predicted: np.ndarray
    reconstructions: np.ndarray
    images_boundary: np.ndarray
    images_full: np.ndarray
    first_flip: np.ndarray
    probabilities: np.ndarray
    valid: np.ndarray

    def flip_rate(self, which: str = "full") -> float:
        """Share of valid images classified as the target at the final step or at any step.

        Parameters
        ----------
        which : {"full", "boundary"}
            ``"full"``: at the final step; ``"boundary"``: at any step.

        Returns
        -------
        float
            The rate (NaN when no image is valid).
        """
        flipped = self.probabilities[:, -1].argmax(1) == self.target if which == "full" else self.first_flip >= 0
        return float(flipped[self.valid].mean()) if self.valid.any() else float("nan")


class LatentInterpolation(BaseEstimator):
    """Class mean latents of an autoencoder, and interpolation counterfactuals judged by a classifier.

    Usage: ``LatentInterpolation(autoencoder, classifier, steps=10).fit(train_images, labels).explain(images, q)``.
    `fit` works on deep copies of both networks (it puts them in eval mode), so the caller's
    networks are never changed.

    Parameters
    ----------
    autoencoder : ConvAutoencoder
        A trained autoencoder.
    classifier : torch.nn.Module
        The classifier that judges each step (the i-ResNet).
    steps : int
        Interpolation steps from the image's latent to the target class's mean latent (>= 1).
    batch_size : int
        Images per pass.

    Attributes
    ----------
    autoencoder_, classifier_ : torch.nn.Module
        The fitted copies (eval mode).
    means_ : torch.Tensor
        (K, latent_dim) mean latent per true class.
    """

    def __init__(self, autoencoder: ConvAutoencoder, classifier: torch.nn.Module, steps: int = 10, batch_size: int = 32):
        self.autoencoder = autoencoder
        self.classifier = classifier
        self.steps = steps
        self.batch_size = batch_size

    @classmethod
    def from_means(
        cls, autoencoder: ConvAutoencoder, classifier: torch.nn.Module, means: torch.Tensor, steps: int = 10, batch_size: int = 32
    ) -> LatentInterpolation:
        """A fitted interpolation from saved class means, on the given networks as they are.

        Parameters
        ----------
        autoencoder, classifier : torch.nn.Module
            The networks the means belong to (used as the fitted networks, not copied).
        means : torch.Tensor
            (K, latent_dim) class means.
        steps, batch_size : int
            As for the constructor.

        Returns
        -------
        LatentInterpolation
            A fitted estimator.
        """
        interpolation = cls(autoencoder, classifier, steps, batch_size)
        interpolation._check_parameters()
        interpolation.autoencoder_, interpolation.classifier_ = autoencoder.eval(), classifier.eval()
        interpolation.means_ = means
        return interpolation

    def _check_parameters(self) -> None:
        if self.steps < 1:
            raise PhenolensError(f"interpolation needs at least one step (got {self.steps})")
        if self.batch_size < 1:
            raise PhenolensError(f"interpolation batch_size {self.batch_size} must be >= 1")

    @torch.no_grad()
    def fit(self, images: torch.Tensor, labels: torch.Tensor) -> LatentInterpolation:
        """Mean autoencoder latent per class.

        Parameters
        ----------
        images : torch.Tensor
            (N, C, H, W) training images in model input units.
        labels : torch.Tensor
            (N,) class indices.

        Returns
        -------
        LatentInterpolation
            self, fitted.

        Raises
        ------
        PhenolensError
            When `steps` or `batch_size` is below 1.
        """
        self._check_parameters()
        self.autoencoder_ = copy.deepcopy(self.autoencoder).eval()
        self.classifier_ = copy.deepcopy(self.classifier).eval()
        labels = torch.as_tensor(labels)
        z = self._batched(self.autoencoder_.encode, images)
        one_hot = torch.nn.functional.one_hot(labels, int(labels.max()) + 1).to(z.dtype)
        self.means_ = (one_hot.T @ z) / one_hot.sum(0).clamp_min(1)[:, None]
        return self

    @torch.no_grad()
    def path(self, images: torch.Tensor, target: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode every step of the walk from each image's latent to the target's mean latent.

        Parameters
        ----------
        images : torch.Tensor
            (N, C, H, W) images in model input units.
        target : int
            Target class index.

        Returns
        -------
        tuple of torch.Tensor
            Decoded steps (N, n+1, C, H, W) and the classifier's probabilities (N, n+1, K).

        Raises
        ------
        PhenolensError
            When `target` is not a class index.
        NotFittedError
            Before `fit`.
        """
        check_is_fitted(self, ("means_", "autoencoder_", "classifier_"))
        if not 0 <= target < len(self.means_):
            raise PhenolensError(f"target class index {target} is outside the {len(self.means_)} classes")
        z = self._batched(self.autoencoder_.encode, images)
        fractions = torch.linspace(0, 1, self.steps + 1)[None, :, None]
        walk = z[:, None] * (1 - fractions) + self.means_[target][None, None] * fractions
        decoded = self._batched(self.autoencoder_.decode, walk.flatten(0, 1))
        probabilities = torch.softmax(self._batched(self.classifier_, decoded), 1)
        return decoded.view(len(images), self.steps + 1, *decoded.shape[1:]), probabilities.view(len(images), self.steps + 1, -1)

    @torch.no_grad()
    def explain(self, images: torch.Tensor, target: int) -> InterpolationCounterfactuals:
        """Interpolation counterfactuals of every image towards class index `target`.

        Parameters
        ----------
        images : torch.Tensor
            (N, C, H, W) images in model input units.
        target : int
            Target class index.

        Returns
        -------
        InterpolationCounterfactuals
            Reconstructions, boundary and full counterfactuals, first flips and probabilities.

        Raises
        ------
        PhenolensError
            When `target` is not a class index.
        NotFittedError
            Before `fit`.
        """
        check_is_fitted(self, ("means_", "autoencoder_", "classifier_"))
        predicted = torch.softmax(self._batched(self.classifier_, images), 1).argmax(1)
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
