"""ECINN counterfactuals on an invertible classifier (Hvilshoj, Iosifidis & Assent 2021).

For an image x predicted as p and a target class q, with z = f(x):
    Delta   = m_q - m_p              m_k: mean latent of the training images *predicted* as k
    w       = mu_q - mu_p            mu_k: mean latent of the training images *labelled* k
    b       = -((mu_p + mu_q) / 2)^T w
    alpha_0 = -(w^T z + b) / (w^T Delta)      z + alpha_0 Delta lies on the hyperplane w^T z + b = 0
    alpha_1 = 4/5 + alpha_0 / 2                the paper's choice for a confident counterfactual
    x_hat   = f^-1(z + alpha Delta)
(the ECINN code computes alpha_1 as `0.8 + 0.5 * a0`). One forward pass, one inverse, and one forward
pass to check the prediction: three network evaluations per counterfactual. The inverse is itself
iterative: each block runs 3-4 branch evaluations (Anderson-accelerated fixed point, tolerance 1e-3),
so in compute one counterfactual costs about as much as 5-6 forward passes; `metrics.json` reports the
iterations beside the evaluation count so that this is visible.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.base import BaseEstimator

from phenolens.core.errors import PhenolensError
from phenolens.core.estimators import check_is_fitted
from phenolens.nn.iresnet import InvertibleResNet

ALPHA1_OFFSET, ALPHA1_SLOPE = 0.8, 0.5


def alpha_zero(z: torch.Tensor, delta: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The step along `delta` that puts each row of `z` on the hyperplane w^T z + b = 0.

    Parameters
    ----------
    z, delta, w : torch.Tensor
        (N, D) latents, directions and hyperplane normals.
    b : torch.Tensor
        (N,) hyperplane offsets.

    Returns
    -------
    torch.Tensor
        (N,) alpha_0.
    """
    return -((z * w).sum(1) + b) / (delta * w).sum(1)


def alpha_one(alpha0: torch.Tensor) -> torch.Tensor:
    """ECINN's confident step: 4/5 + alpha_0 / 2.

    Parameters
    ----------
    alpha0 : torch.Tensor
        alpha_0 per image.

    Returns
    -------
    torch.Tensor
        alpha_1 per image.
    """
    return ALPHA1_OFFSET + ALPHA1_SLOPE * alpha0


@dataclass
class Counterfactuals:
    """ECINN results for N images towards one target class (numpy; images in model input units).

    `alphas`, `images` and `probabilities_at` are keyed by "alpha0" / "alpha1". `valid` is False for
    images already predicted as the target (they get no counterfactual; their alphas are NaN).
    Probabilities are (N, K) softmax outputs of the classifier.

    Attributes
    ----------
    target : int
        Target class index.
    predicted, valid : numpy.ndarray
        (N,) predicted class of each image; whether it gets a counterfactual.
    probabilities : numpy.ndarray
        (N, K) probabilities of the originals.
    alphas, images, probabilities_at : dict of str to numpy.ndarray
        By "alpha0" / "alpha1": the steps (N,), counterfactuals (N, C, H, W) and their probabilities (N, K).
    inverse_residual : float
        Largest relative residual of any inverse.
    inverse_iterations : int
        Fixed-point iterations of the slowest block.
    """

    target: int
    predicted: np.ndarray
    probabilities: np.ndarray
    valid: np.ndarray
    alphas: dict[str, np.ndarray]
    images: dict[str, np.ndarray]
    probabilities_at: dict[str, np.ndarray]
    inverse_residual: float
    inverse_iterations: int

    def flipped(self, which: str = "alpha1") -> np.ndarray:
        """Per image: is the counterfactual classified as the target?

        Parameters
        ----------
        which : {"alpha0", "alpha1"}
            The counterfactual.

        Returns
        -------
        numpy.ndarray
            (N,) booleans.
        """
        return self.probabilities_at[which].argmax(1) == self.target

    def flip_rate(self, which: str = "alpha1") -> float:
        """Share of valid images whose counterfactual is classified as the target.

        Parameters
        ----------
        which : {"alpha0", "alpha1"}
            The counterfactual.

        Returns
        -------
        float
            The rate (NaN when no image is valid).
        """
        return float(self.flipped(which)[self.valid].mean()) if self.valid.any() else float("nan")


class ECINN(BaseEstimator):
    """Class latent means of a trained i-ResNet and closed-form counterfactuals from them.

    Usage: ``ECINN(model).fit(train_images, train_labels).explain(images, target)``. `fit` works on
    a deep copy of `model` (it sets the copy's head to the class means), so the caller's network is
    never changed.

    Parameters
    ----------
    model : InvertibleResNet
        A trained i-ResNet classifier.
    batch_size : int
        Images per forward or inverse pass.

    Attributes
    ----------
    model_ : InvertibleResNet
        The fitted copy of `model` (eval mode, head set to `means_true_`); use it to classify.
    means_true_ : torch.Tensor
        (K, D) mean flattened latent of the training images labelled as each class.
    means_predicted_ : torch.Tensor
        (K, D) mean flattened latent of the training images predicted as each class.
    """

    def __init__(self, model: InvertibleResNet, batch_size: int = 32):
        self.model = model
        self.batch_size = batch_size

    @classmethod
    def from_means(cls, model: InvertibleResNet, means_true: torch.Tensor, means_predicted: torch.Tensor, batch_size: int = 32) -> ECINN:
        """A fitted ECINN from saved class means, on `model` as it is (its head already holds `means_true`).

        Parameters
        ----------
        model : InvertibleResNet
            The classifier the means were computed with (used as the fitted model, not copied).
        means_true, means_predicted : torch.Tensor
            (K, D) class means by true label and by prediction.
        batch_size : int
            Images per pass.

        Returns
        -------
        ECINN
            A fitted estimator.

        Raises
        ------
        PhenolensError
            When the means do not have one row per class of `model` and one column per latent value.
        """
        expected = tuple(model.head.means.shape)
        for kind, means in (("true", means_true), ("predicted", means_predicted)):
            if tuple(means.shape) != expected:
                raise PhenolensError(f"ECINN {kind}-class means are shaped {tuple(means.shape)} but the i-ResNet needs {expected}; retrain the model")
        ecinn = cls(model, batch_size)
        ecinn.model_ = model.eval()
        ecinn.means_true_, ecinn.means_predicted_ = means_true, means_predicted
        return ecinn

    @torch.no_grad()
    def latents(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flattened latents and logits of the fitted classifier, in batches.

        Parameters
        ----------
        images : torch.Tensor
            (N, C, H, W) images in model input units.

        Returns
        -------
        tuple of torch.Tensor
            Latents (N, D) and logits (N, K).

        Raises
        ------
        NotFittedError
            Before `fit`.
        """
        check_is_fitted(self, "model_")
        return _latents(self.model_, images, self.batch_size)

    def fit(self, images: torch.Tensor, labels: torch.Tensor) -> ECINN:
        """Mean latents per true and per predicted class over the training images.

        The copied classifier's head is set to the true-class means, so its decision boundary
        between two classes is the hyperplane w^T z + b = 0 used below; predictions (and so the
        predicted-class means) are those of the head with these means.

        Parameters
        ----------
        images : torch.Tensor
            (N, C, H, W) training images in model input units.
        labels : torch.Tensor
            (N,) class indices.

        Returns
        -------
        ECINN
            self, fitted.

        Raises
        ------
        PhenolensError
            When no training image is labelled, or predicted, as one of the classes.
        """
        if self.batch_size < 1:
            raise PhenolensError(f"ECINN batch_size {self.batch_size} must be >= 1")
        model = copy.deepcopy(self.model).eval()
        labels = torch.as_tensor(labels)
        z, _ = _latents(model, images, self.batch_size)
        n_classes = model.head.n_classes
        means_true = self._class_means(z, labels, n_classes, "labelled")
        with torch.no_grad():
            model.head.set_means(means_true)
            predicted = torch.cat([model.classify(z[i : i + self.batch_size]) for i in range(0, len(z), self.batch_size)]).argmax(1)
        self.model_, self.means_true_ = model, means_true
        self.means_predicted_ = self._class_means(z, predicted, n_classes, "predicted")
        return self

    @staticmethod
    def _class_means(z: torch.Tensor, groups: torch.Tensor, n_classes: int, kind: str) -> torch.Tensor:
        one_hot = torch.nn.functional.one_hot(groups, n_classes).to(z.dtype)
        counts = one_hot.sum(0)
        if (counts == 0).any():
            missing = int(torch.nonzero(counts == 0)[0])
            raise PhenolensError(f"no training image is {kind} as class {missing}; ECINN needs every class, so train longer or balance the classes")
        return (one_hot.T @ z) / counts[:, None]

    def directions(self, z: torch.Tensor, predicted: torch.Tensor, target: int) -> dict[str, torch.Tensor]:
        """The ECINN geometry of each latent towards `target`.

        Parameters
        ----------
        z : torch.Tensor
            (N, D) flattened latents.
        predicted : torch.Tensor
            (N,) predicted class index of each latent.
        target : int
            Target class index.

        Returns
        -------
        dict of str to torch.Tensor
            ``delta`` and ``w`` (N, D), ``b``, ``alpha0`` and ``alpha1`` (N,).

        Raises
        ------
        NotFittedError
            Before `fit`.
        """
        check_is_fitted(self, ("means_true_", "means_predicted_"))
        delta = self.means_predicted_[target] - self.means_predicted_[predicted]
        w = self.means_true_[target] - self.means_true_[predicted]
        b = -(((self.means_true_[predicted] + self.means_true_[target]) / 2) * w).sum(1)
        alpha0 = alpha_zero(z, delta, w, b)
        return {"delta": delta, "w": w, "b": b, "alpha0": alpha0, "alpha1": alpha_one(alpha0)}

    @torch.no_grad()
    def explain(self, images: torch.Tensor, target: int, which: tuple[str, ...] = ("alpha0", "alpha1")) -> Counterfactuals:
        """Counterfactuals of every image towards class index `target`, at each alpha in `which`.

        Cost per counterfactual: the forward pass of the image, one inverse, and one forward pass of
        the counterfactual to report its probabilities. The inverse starts from the image's own
        forward activations (`InvertibleResNet.decode(near=...)`).

        Parameters
        ----------
        images : torch.Tensor
            (N, C, H, W) images in model input units.
        target : int
            Target class index.
        which : tuple of str
            The steps to decode: ``"alpha0"`` and/or ``"alpha1"``.

        Returns
        -------
        Counterfactuals
            Predictions, probabilities, alphas, counterfactual images and their probabilities.

        Raises
        ------
        PhenolensError
            When `target` is not a class index or there are no images.
        NotFittedError
            Before `fit`.
        """
        check_is_fitted(self, ("model_", "means_true_", "means_predicted_"))
        n_classes = len(self.means_true_)
        if not 0 <= target < n_classes:
            raise PhenolensError(f"target class index {target} is outside the model's {n_classes} classes")
        if len(images) == 0:
            raise PhenolensError("no images to explain; give at least one image")
        batches = [self._explain_batch(images[i : i + self.batch_size], target, which) for i in range(0, len(images), self.batch_size)]

        def joined(part: str) -> dict[str, np.ndarray]:
            return {key: np.concatenate([batch[part][key] for batch in batches]) for key in batches[0][part]}

        return Counterfactuals(
            target=target,
            predicted=np.concatenate([batch["predicted"] for batch in batches]),
            probabilities=np.concatenate([batch["probabilities"] for batch in batches]),
            valid=np.concatenate([batch["valid"] for batch in batches]),
            alphas=joined("alphas"),
            images=joined("images"),
            probabilities_at=joined("probabilities_at"),
            inverse_residual=max(batch["residual"] for batch in batches),
            inverse_iterations=max(batch["iterations"] for batch in batches),
        )

    def _explain_batch(self, images: torch.Tensor, target: int, which: tuple[str, ...]) -> dict:
        model = self.model_
        trace: list = []
        z = model.encode(images, trace)
        logits = model.classify(z)
        z = z.flatten(1)
        predicted = logits.argmax(1)
        valid = predicted != target
        geometry = self.directions(z, predicted, target)
        result = {"predicted": predicted.numpy(), "probabilities": torch.softmax(logits, 1).numpy(), "valid": valid.numpy(),
                  "alphas": {}, "images": {}, "probabilities_at": {}, "residual": 0.0, "iterations": 0}  # fmt: skip
        for key in which:
            alpha = torch.where(valid, geometry[key], torch.nan)
            moved = z + torch.nan_to_num(alpha)[:, None] * geometry["delta"]
            decoded = model.decode(moved.reshape(-1, *model.latent_shape), near=trace)
            report = model.last_inverse
            result["alphas"][key], result["images"][key] = alpha.numpy(), decoded.numpy()
            result["probabilities_at"][key] = torch.softmax(model(decoded), 1).numpy()
            result["residual"] = max(result["residual"], report.max_relative_residual)
            result["iterations"] = max(result["iterations"], report.iterations)
        return result

    @torch.no_grad()
    def sweep(self, image: torch.Tensor, target: int, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Decode z + alpha Delta for one image at every alpha.

        Parameters
        ----------
        image : torch.Tensor
            (C, H, W) image in model input units.
        target : int
            Target class index.
        alphas : numpy.ndarray
            The steps along Delta.

        Returns
        -------
        tuple of numpy.ndarray
            Decoded images (len(alphas), C, H, W) and their probabilities (len(alphas), K).

        Raises
        ------
        NotFittedError
            Before `fit`.
        """
        check_is_fitted(self, ("model_", "means_true_", "means_predicted_"))
        model = self.model_
        trace: list = []
        z = model.encode(image[None], trace)
        delta = self.directions(z.flatten(1), model.classify(z).argmax(1), target)["delta"]
        steps = torch.as_tensor(np.asarray(alphas), dtype=z.dtype)[:, None]
        moved = (z.flatten(1) + steps * delta).reshape(-1, *model.latent_shape)
        decoded = torch.cat([model.decode(moved[i : i + self.batch_size], near=trace) for i in range(0, len(moved), self.batch_size)])
        return decoded.numpy(), torch.softmax(self.latents(decoded)[1], 1).numpy()


@torch.no_grad()
def _latents(model: InvertibleResNet, images: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [model.encode(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    z = torch.cat(parts) if parts else torch.empty(0, *model.latent_shape)
    return z.flatten(1), model.classify(z)
