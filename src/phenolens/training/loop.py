"""The one training loop of phenolens.

Each model family supplies a `step(model, batch, epoch) -> loss` function (softmax or ArcFace,
CutMix, pseudo-labels, reconstruction, heat-map regression...); the loop owns batching, seeding,
optimisation, validation, callbacks (early stopping, learning-rate schedules) and the history.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from phenolens.core.errors import PhenolensError
from phenolens.core.progress import progress
from phenolens.core.seeding import torch_generator

Step = Callable[[torch.nn.Module, Sequence[torch.Tensor], int], torch.Tensor]


@dataclass
class History:
    """Per-epoch records (train_loss, val_loss, lr, and anything callbacks add) and the best epoch."""

    epochs: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False

    def column(self, key: str) -> list[float]:
        return [record.get(key, math.nan) for record in self.epochs]


class Callback:
    """Hook called after every epoch; return True from `on_epoch_end` to stop training."""

    def on_train_begin(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Called once before the first epoch."""

    def on_epoch_end(self, epoch: int, record: dict, model: torch.nn.Module) -> bool:
        return False

    def on_train_end(self, model: torch.nn.Module, history: History) -> None:
        """Called once after the last epoch."""


class EarlyStopping(Callback):
    """Stop after `patience` epochs without improving `monitor` by `min_delta`; restore the best weights."""

    def __init__(self, patience: int = 20, monitor: str = "val_loss", min_delta: float = 0.0, restore_best: bool = True):
        self.patience, self.monitor, self.min_delta, self.restore_best = patience, monitor, min_delta, restore_best
        self.best = math.inf
        self.best_epoch: int | None = None
        self.best_state: dict | None = None

    def on_epoch_end(self, epoch: int, record: dict, model: torch.nn.Module) -> bool:
        value = record.get(self.monitor, math.nan)
        if value < self.best - self.min_delta:
            self.best, self.best_epoch = value, epoch
            if self.restore_best:
                self.best_state = copy.deepcopy(model.state_dict())
        return self.best_epoch is not None and epoch - self.best_epoch >= self.patience

    def on_train_end(self, model: torch.nn.Module, history: History) -> None:
        history.best_epoch = self.best_epoch
        if self.restore_best and self.best_state is not None:
            model.load_state_dict(self.best_state)


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by `factor` after `patience` epochs without improving `monitor`."""

    def __init__(self, factor: float = 0.5, patience: int = 12, monitor: str = "val_loss"):
        self.factor, self.patience, self.monitor = factor, patience, monitor
        self.scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None

    def on_train_begin(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=self.factor, patience=self.patience)

    def on_epoch_end(self, epoch: int, record: dict, model: torch.nn.Module) -> bool:
        value = record.get(self.monitor)
        if value is not None and math.isfinite(value):
            self.scheduler.step(value)
        return False


def make_loader(data: Dataset | Sequence[torch.Tensor], batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """A DataLoader over a Dataset or a tuple of equally long tensors, shuffled reproducibly by `seed`."""
    dataset = data if isinstance(data, Dataset) else TensorDataset(*data)
    if len(dataset) == 0:
        raise PhenolensError("no training examples: the split left an empty set; use more data or a smaller validation fraction")
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=torch_generator(seed) if shuffle else None)


def fit(
    model: torch.nn.Module,
    train: Dataset | Sequence[torch.Tensor],
    step: Step,
    *,
    val: Dataset | Sequence[torch.Tensor] | None = None,
    val_step: Step | None = None,
    epochs: int = 10,
    batch_size: int = 32,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    callbacks: Sequence[Callback] = (),
    seed: int = 0,
    description: str = "training",
) -> History:
    """Train `model` in place and return its History.

    `step(model, batch, epoch)` returns the mean loss of a batch (the model is in train mode);
    `val_step` (default: `step`) is evaluated without gradients in eval mode, and its
    size-weighted mean over `val` is recorded as `val_loss`. Adam is used unless `optimizer` is given.
    """
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    train_loader = make_loader(train, batch_size, shuffle=True, seed=seed)
    val_loader = make_loader(val, batch_size * 4, shuffle=False) if val is not None else None
    val_step = val_step or step
    history = History()
    for callback in callbacks:
        callback.on_train_begin(model, optimizer)
    for epoch in progress(range(epochs), description, total=epochs):
        model.train()
        total, count = 0.0, 0
        for batch in train_loader:
            optimizer.zero_grad(set_to_none=True)
            loss = step(model, batch, epoch)
            if not torch.isfinite(loss):
                raise PhenolensError(
                    f"{description}: the loss became {loss.item()} at epoch {epoch}; lower the learning rate or check the inputs for extreme values"
                )
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch[0])
            count += len(batch[0])
        record = {"epoch": epoch, "train_loss": total / count, "lr": optimizer.param_groups[0]["lr"]}
        if val_loader is not None:
            record["val_loss"] = evaluate_loss(model, val_loader, val_step, epoch)
        history.epochs.append(record)
        stop = False
        for callback in callbacks:
            stop = callback.on_epoch_end(epoch, record, model) or stop
        if stop:
            history.stopped_early = True
            break
    for callback in callbacks:
        callback.on_train_end(model, history)
    model.eval()
    return history


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, loader: DataLoader, step: Step, epoch: int = 0) -> float:
    """Size-weighted mean of `step` over a loader, in eval mode without gradients."""
    model.eval()
    total, count = 0.0, 0
    for batch in loader:
        total += step(model, batch, epoch).item() * len(batch[0])
        count += len(batch[0])
    return total / max(count, 1)


class CosineAnnealing(Callback):
    """Set the learning rate after each epoch to lr_0 * (1 + cos(pi * (epoch + 1) / epochs)) / 2 (down to 0 at the end)."""

    def __init__(self, epochs: int):
        self.epochs = max(epochs, 1)
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
