"""Gradient-based counterfactual baseline (Wachter, Mittelstadt & Russell 2017).

Optimise the input itself: minimise CE(model(x'), q) + proximity * mean((x' - x)^2) with Adam,
one image at a time in effect (the loss is a sum of per-image terms, so a batch shares nothing),
and stop each image at the first step at which the model predicts q: the cheapest stopping rule,
so the cost we report for this baseline is a lower bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from phenolens.core.errors import PhenolensError


@dataclass
class GradientCounterfactuals:
    """Per image: the counterfactual (model input units), its probabilities, whether it reached the
    target, the optimisation steps taken and the network evaluations (forward + backward passes)."""

    images: np.ndarray
    probabilities: np.ndarray
    flipped: np.ndarray
    steps: np.ndarray
    evaluations: np.ndarray

    def flip_rate(self, valid: np.ndarray | None = None) -> float:
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
    batch_size: int = 32,
) -> GradientCounterfactuals:
    """Search x' near each image (N, C, H, W) that `model` classifies as `target`.

    Images already predicted as `target` stop at step 0. Adam's moments are kept per image, so
    dropping finished images from the batch does not change the others' trajectories.
    """
    if max_steps < 1 or lr <= 0:
        raise PhenolensError(f"the gradient baseline needs max_steps >= 1 and lr > 0 (got {max_steps}, {lr})")
    model.eval()
    parts = [_search(model, images[i : i + batch_size], target, proximity, lr, max_steps) for i in range(0, len(images), batch_size)]
    return GradientCounterfactuals(*(np.concatenate(column) for column in zip(*parts)))


@torch.enable_grad()
def _search(model, original: torch.Tensor, target: int, proximity: float, lr: float, max_steps: int):
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    current = original.clone()
    first, second = torch.zeros_like(original), torch.zeros_like(original)
    count = len(original)
    steps = torch.full((count,), max_steps, dtype=torch.long)
    flipped = torch.zeros(count, dtype=torch.bool)
    probabilities: torch.Tensor | None = None
    active = torch.arange(count)
    for step in range(max_steps + 1):
        x = current[active].requires_grad_(True)
        logits = model(x)
        if probabilities is None:
            probabilities = torch.zeros(count, logits.shape[1])
        done = logits.argmax(1) == target
        if step == max_steps:
            done = torch.ones_like(done)
        if done.any():
            finished = active[done]
            flipped[finished] = logits.argmax(1)[done] == target
            steps[finished] = step
            probabilities[finished] = torch.softmax(logits.detach()[done], 1)
        if done.all():
            break
        keep = ~done
        per_image = torch.nn.functional.cross_entropy(logits[keep], torch.full((int(keep.sum()),), target), reduction="none")
        distance = ((x[keep] - original[active[keep]]) ** 2).flatten(1).mean(1)
        (gradient,) = torch.autograd.grad((per_image + proximity * distance).sum(), x)
        gradient = gradient.detach()
        active = active[keep]
        gradient = gradient[keep]
        first[active] = beta1 * first[active] + (1 - beta1) * gradient
        second[active] = beta2 * second[active] + (1 - beta2) * gradient**2
        corrected = first[active] / (1 - beta1 ** (step + 1))
        scale = (second[active] / (1 - beta2 ** (step + 1))).sqrt() + eps
        current[active] = current[active] - lr * corrected / scale
    evaluations = 2 * steps + 1  # a forward and a backward pass per step, plus the final check
    return current.numpy(), probabilities.numpy(), flipped.numpy(), steps.numpy(), evaluations.numpy()
