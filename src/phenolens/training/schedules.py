"""Learning-rate schedules as callbacks of the shared training loop."""

from __future__ import annotations

import math

import torch

from phenolens.training.loop import Callback


class CosineDecay(Callback):
    """Cosine-anneal the learning rate from its initial value towards zero over `epochs` epochs."""

    def __init__(self, epochs: int):
        self.epochs = max(1, int(epochs))
        self.optimizer: torch.optim.Optimizer | None = None
        self.initial: list[float] = []

    def on_train_begin(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.initial = [group["lr"] for group in optimizer.param_groups]

    def on_epoch_end(self, epoch: int, record: dict, model: torch.nn.Module) -> bool:
        factor = 0.5 * (1.0 + math.cos(math.pi * min(epoch + 1, self.epochs) / self.epochs))
        for group, initial in zip(self.optimizer.param_groups, self.initial):
            group["lr"] = initial * factor
        return False
