"""Gradient-based counterfactual baseline (Wachter, Mittelstadt & Russell 2017).

Optimise the input itself: minimise lambda * CE(model(x'), q) + proximity * mean((x' - x)^2) with
Adam, one image at a time in effect (the loss is a sum of per-image terms, so a batch shares
nothing). As in Wachter et al., lambda starts at 1 and doubles every `patience` steps for an image
that has not yet met the stopping rule, so the proximity term cannot hold it short of the target.
Each image stops at the first step at which the model predicts q (the cheapest stopping rule, so
the cost reported is a lower bound) or, with `confidence`, once p(q) reaches that value (to compare
with another method's counterfactual at the same classifier confidence).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from phenolens.core.errors import PhenolensError


@dataclass
class GradientCounterfactuals:
    """Per image: the counterfactual (model input units), its probabilities, whether it is classified
    as the target, whether it met the stopping rule (target and confidence), the optimisation steps
    taken and the network evaluations (forward + backward passes).

    Attributes
    ----------
    images : numpy.ndarray
        (N, C, H, W) counterfactuals in model input units.
    probabilities : numpy.ndarray
        (N, K) classifier probabilities of the counterfactuals.
    flipped, reached : numpy.ndarray
        (N,) classified as the target; met the stopping rule.
    steps, evaluations : numpy.ndarray
        (N,) optimisation steps and network evaluations per image.
    """

    images: np.ndarray
    probabilities: np.ndarray
    flipped: np.ndarray
    reached: np.ndarray
    steps: np.ndarray
    evaluations: np.ndarray

    def flip_rate(self, valid: np.ndarray | None = None) -> float:
        """Share of counterfactuals classified as the target.

        Parameters
        ----------
        valid : numpy.ndarray, optional
            (N,) boolean mask of the images to count (default: all).

        Returns
        -------
        float
            The rate (NaN when no image is counted).
        """
        flipped = self.flipped if valid is None else self.flipped[valid]
        return float(flipped.mean()) if flipped.size else float("nan")


def wachter_counterfactuals(
    model: torch.nn.Module,
    images: torch.Tensor,
    target: int,
    *,
    proximity: float = 1.0,
    lr: float = 0.01,
    max_steps: int = 500,
    confidence: float | np.ndarray | None = None,
    patience: int = 50,
    batch_size: int = 32,
) -> GradientCounterfactuals:
    """Search x' near each image (N, C, H, W) that `model` classifies as `target`.

    Images already predicted as `target` stop at step 0. Adam's moments are kept per image, so
    dropping finished images from the batch does not change the others' trajectories.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier (a model in training mode is searched on an eval-mode copy; the caller's is
        not changed).
    images : torch.Tensor
        (N, C, H, W) images in model input units.
    target : int
        Target class index.
    proximity : float
        Weight of the mean squared change.
    lr : float
        Adam step size.
    max_steps : int
        Maximum optimisation steps per image.
    confidence : float or numpy.ndarray, optional
        p(target) each image must reach (default: the first flip stops it).
    patience : int
        Steps between doublings of the class-loss weight lambda.
    batch_size : int
        Images optimised together.

    Returns
    -------
    GradientCounterfactuals
        Counterfactuals, probabilities, stopping and cost per image.

    Raises
    ------
    PhenolensError
        When `max_steps` < 1 or `lr` <= 0.
    """
    if max_steps < 1 or lr <= 0:
        raise PhenolensError(f"the gradient baseline needs max_steps >= 1 and lr > 0 (got {max_steps}, {lr})")
    if model.training:
        model = copy.deepcopy(model).eval()
    required = torch.zeros(len(images)) if confidence is None else torch.from_numpy(np.broadcast_to(confidence, (len(images),)).astype(np.float32))
    parts = []
    for start in range(0, len(images), batch_size):
        chunk = slice(start, start + batch_size)
        parts.append(_search(model, images[chunk], target, required[chunk], proximity, lr, max_steps, patience))
    return GradientCounterfactuals(*(np.concatenate(column) for column in zip(*parts)))


@torch.enable_grad()
def _search(model, original: torch.Tensor, target: int, required: torch.Tensor, proximity: float, lr: float, max_steps: int, patience: int):
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    current = original.clone()
    first, second = torch.zeros_like(original), torch.zeros_like(original)
    count = len(original)
    steps = torch.full((count,), max_steps, dtype=torch.long)
    flipped = torch.zeros(count, dtype=torch.bool)
    met = torch.zeros(count, dtype=torch.bool)
    probabilities: torch.Tensor | None = None
    active = torch.arange(count)
    for step in range(max_steps + 1):
        x = current[active].requires_grad_(True)
        logits = model(x)
        if probabilities is None:
            probabilities = torch.zeros(count, logits.shape[1])
        reached = (logits.argmax(1) == target) & (torch.softmax(logits.detach(), 1)[:, target] >= required[active])
        done = reached.clone()
        if step == max_steps:
            done = torch.ones_like(done)
        if done.any():
            finished = active[done]
            flipped[finished] = logits.argmax(1)[done] == target
            met[finished] = reached[done]
            steps[finished] = step
            probabilities[finished] = torch.softmax(logits.detach()[done], 1)
        if done.all():
            break
        keep = ~done
        per_image = torch.nn.functional.cross_entropy(logits[keep], torch.full((int(keep.sum()),), target), reduction="none")
        distance = ((x[keep] - original[active[keep]]) ** 2).flatten(1).mean(1)
        weight = 2.0 ** (step // patience)  # the same for every active image: they all started together
        (gradient,) = torch.autograd.grad((weight * per_image + proximity * distance).sum(), x)
        gradient = gradient.detach()
        active = active[keep]
        gradient = gradient[keep]
        first[active] = beta1 * first[active] + (1 - beta1) * gradient
        second[active] = beta2 * second[active] + (1 - beta2) * gradient**2
        corrected = first[active] / (1 - beta1 ** (step + 1))
        scale = (second[active] / (1 - beta2 ** (step + 1))).sqrt() + eps
        current[active] = current[active] - lr * corrected / scale
    evaluations = 2 * steps + 1  # a forward and a backward pass per step, plus the final check
    return current.numpy(), probabilities.numpy(), flipped.numpy(), met.numpy(), steps.numpy(), evaluations.numpy()
