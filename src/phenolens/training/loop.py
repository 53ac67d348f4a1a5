"""The one training loop of phenolens.

Each model family supplies a `step(model, batch, epoch) -> loss` function (softmax or ArcFace,
CutMix, pseudo-labels, reconstruction, heat-map regression...); the loop owns batching, seeding,
optimisation, validation, callbacks (early stopping, learning-rate schedules) and the history.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from phenolens.core.errors import PhenolensError
from phenolens.core.logging import get_logger
from phenolens.core.progress import progress
from phenolens.core.seeding import torch_generator
from phenolens.training.checkpoint import Checkpoint, next_checkpoint, random_states, restore_random_states

log = get_logger(__name__)

Step = Callable[[torch.nn.Module, Sequence[torch.Tensor], int], torch.Tensor]


@dataclass
class History:
    """Per-epoch records (train_loss, val_loss, lr, and anything callbacks add) and the best epoch.

    Attributes
    ----------
    epochs : list of dict
        One record per epoch run.
    best_epoch : int or None
        The epoch whose weights were kept by early stopping.
    stopped_early : bool
        Whether a callback stopped training before the last epoch.
    """

    epochs: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False

    def column(self, key: str) -> list[float]:
        """The value of `key` in every epoch's record (NaN where missing).

        Parameters
        ----------
        key : str
            A record field such as ``val_loss``.

        Returns
        -------
        list of float
            One value per epoch.
        """
        return [record.get(key, math.nan) for record in self.epochs]


class Callback:
    """Hook called around training; return True from `on_epoch_end` to stop training."""

    def on_train_begin(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Called once before the first epoch.

        Parameters
        ----------
        model : Module
            The model being trained.
        optimizer : Optimizer
            Its optimizer (schedules change its learning rate).
        """

    def on_epoch_end(self, epoch: int, record: dict, model: torch.nn.Module) -> bool:
        """Called after every epoch.

        Parameters
        ----------
        epoch : int
            The epoch just finished (from 0).
        record : dict
            Its losses and learning rate (callbacks may add fields).
        model : Module
            The model being trained.

        Returns
        -------
        bool
            True to stop training.
        """
        return False

    def on_train_end(self, model: torch.nn.Module, history: History) -> None:
        """Called once after the last epoch.

        Parameters
        ----------
        model : Module
            The trained model.
        history : History
            The run's records (callbacks may annotate it).
        """

    def state_dict(self) -> dict:
        """What a checkpoint must keep for training to continue as if never stopped (default: nothing).

        Returns
        -------
        dict
            Tensors, numbers, strings and containers of them.
        """
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Take back what `state_dict` returned (called after `on_train_begin` when a run resumes).

        Parameters
        ----------
        state : dict
            A `state_dict` result, read back from a checkpoint.
        """


class EarlyStopping(Callback):
    """Stop after `patience` epochs without improving `monitor` by `min_delta`; restore the best weights.

    Epochs before `first` are never chosen (nor counted towards `patience`): a loss that another term
    only starts to shape later (a ramped adversary) would otherwise keep the weights from before it acted.
    """

    def __init__(self, patience: int = 20, monitor: str = "val_loss", min_delta: float = 0.0, restore_best: bool = True, first: int = 0):
        self.patience, self.monitor, self.min_delta, self.restore_best, self.first = patience, monitor, min_delta, restore_best, first
        self.best = math.inf
        self.best_epoch: int | None = None
        self.best_state: dict | None = None

    def on_epoch_end(self, epoch: int, record: dict, model: torch.nn.Module) -> bool:
        """Keep the best weights; stop after `patience` epochs without improvement (see `Callback.on_epoch_end`)."""
        value = record.get(self.monitor, math.nan)
        if epoch >= self.first and value < self.best - self.min_delta:
            self.best, self.best_epoch = value, epoch
            if self.restore_best:
                self.best_state = copy.deepcopy(model.state_dict())
        return self.best_epoch is not None and epoch - self.best_epoch >= self.patience

    def on_train_end(self, model: torch.nn.Module, history: History) -> None:
        """Record the best epoch and restore its weights (see `Callback.on_train_end`)."""
        history.best_epoch = self.best_epoch
        if self.restore_best and self.best_state is not None:
            model.load_state_dict(self.best_state)

    def state_dict(self) -> dict:
        """The best value, its epoch and weights (see `Callback.state_dict`)."""
        return {"best": self.best, "best_epoch": self.best_epoch, "best_state": self.best_state}

    def load_state_dict(self, state: dict) -> None:
        """Take back the best value, its epoch and weights (see `Callback.load_state_dict`)."""
        self.best, self.best_epoch, self.best_state = state["best"], state["best_epoch"], state["best_state"]


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by `factor` after `patience` epochs without improving `monitor`."""

    def __init__(self, factor: float = 0.5, patience: int = 12, monitor: str = "val_loss"):
        self.factor, self.patience, self.monitor = factor, patience, monitor
        self.scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None

    def on_train_begin(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Attach PyTorch's plateau scheduler to the optimizer (see `Callback.on_train_begin`)."""
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=self.factor, patience=self.patience)

    def on_epoch_end(self, epoch: int, record: dict, model: torch.nn.Module) -> bool:
        """Step the scheduler on the monitored value; never stops (see `Callback.on_epoch_end`)."""
        value = record.get(self.monitor)
        if value is not None and math.isfinite(value):
            self.scheduler.step(value)
        return False

    def state_dict(self) -> dict:
        """The plateau scheduler's counters and best value (see `Callback.state_dict`)."""
        return {"scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Take back the scheduler's counters and best value (see `Callback.load_state_dict`)."""
        self.scheduler.load_state_dict(state["scheduler"])


def make_loader(data: Dataset | Sequence[torch.Tensor], batch_size: int, shuffle: bool, seed: int = 0, drop_last: bool = False) -> DataLoader:
    """A DataLoader over a Dataset or a tuple of equally long tensors, shuffled reproducibly by `seed`.

    Parameters
    ----------
    data : Dataset or sequence of tensors
        The examples.
    batch_size : int
        Examples per batch.
    shuffle : bool
        Shuffle every epoch.
    seed : int
        Seed of the shuffling.
    drop_last : bool
        Leave out a last, incomplete batch.

    Returns
    -------
    DataLoader
        The loader.

    Raises
    ------
    PhenolensError
        When there are no examples.
    """
    dataset = data if isinstance(data, Dataset) else TensorDataset(*data)
    if len(dataset) == 0:
        raise PhenolensError("no training examples: the split left an empty set; use more data or a smaller validation fraction")
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=torch_generator(seed) if shuffle else None, drop_last=drop_last)


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
    generators: Sequence[torch.Generator] = (),
    drop_last: bool = False,
) -> History:
    """Train `model` in place and return its History.

    Parameters
    ----------
    model : Module
        The model (trained in place, left in eval mode).
    train : Dataset or sequence of tensors
        Training examples.
    step : callable
        ``step(model, batch, epoch)`` returns the mean loss of a batch (the model is in train mode).
    val : Dataset or sequence of tensors, optional
        Validation examples; the size-weighted mean of `val_step` over them is recorded as ``val_loss``.
    val_step : callable, optional
        Evaluated without gradients in eval mode (default: `step`).
    epochs : int
        Maximum epochs.
    batch_size : int
        Training examples per batch (validation uses 4x).
    optimizer : Optimizer, optional
        Default: Adam with `lr` and `weight_decay`.
    lr, weight_decay : float
        Adam's learning rate and weight decay.
    callbacks : sequence of Callback
        Early stopping, schedules, logging.
    seed : int
        Seed of the batch order.
    description : str
        Label of the progress bar and of errors.
    generators : sequence of torch.Generator
        The generators `step` draws from (augmentation, mixing); checkpoints keep their states.
    drop_last : bool
        Leave out the last, incomplete training batch of each epoch (the shuffle changes which images it would hold).

    Returns
    -------
    History
        Per-epoch records.

    Raises
    ------
    PhenolensError
        When the loss becomes non-finite, there are no training examples, or a resumed run's checkpoint is damaged.

    Notes
    -----
    Inside `phenolens.training.checkpoint.checkpointing` the whole training state is saved after every
    epoch and restored before the first, so a killed run resumes to the same weights (see that module).
    """
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    train_loader = make_loader(train, batch_size, shuffle=True, seed=seed, drop_last=drop_last)
    val_loader = make_loader(val, batch_size * 4, shuffle=False) if val is not None else None
    val_step = val_step or step
    history = History()
    for callback in callbacks:
        callback.on_train_begin(model, optimizer)
    state = _LoopState(model, optimizer, callbacks, history, [train_loader.generator, *generators], next_checkpoint(description))
    start = state.restore()
    if state.finished:
        model.eval()
        return history
    for epoch in progress(range(start, epochs), description, total=epochs - start):
        if history.stopped_early:  # a resumed run whose last saved epoch stopped training
            break
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
        history.stopped_early = stop
        state.save(next_epoch=epoch + 1)
        if stop:
            break
    for callback in callbacks:
        callback.on_train_end(model, history)
    model.eval()
    state.save(finished=True)
    return history


class _LoopState:
    """What `fit` saves after each epoch and restores before the first, when its call has a checkpoint."""

    def __init__(self, model, optimizer, callbacks, history: History, generators: list[torch.Generator], checkpoint: Checkpoint | None):
        self.model, self.optimizer, self.callbacks, self.history = model, optimizer, callbacks, history
        self.generators, self.checkpoint = generators, checkpoint
        self.finished = False

    def save(self, next_epoch: int = 0, finished: bool = False) -> None:
        """Checkpoint the training after an epoch, or its end result (weights, history and random states only)."""
        if self.checkpoint is None:
            return
        state = {
            "finished": finished,
            "next_epoch": next_epoch,
            "model": self.model.state_dict(),
            "history": dataclasses.asdict(self.history),
            "generators": [generator.get_state() for generator in self.generators],
            "random": random_states(),
        }
        if not finished:
            state.update(optimizer=self.optimizer.state_dict(), callbacks=[callback.state_dict() for callback in self.callbacks])
        self.checkpoint.save(state)

    def restore(self) -> int:
        """Take back what a killed run saved for this call; return the epoch to start from (0 without a checkpoint)."""
        saved = self.checkpoint.load() if self.checkpoint is not None else None
        if saved is None:
            return 0
        self.model.load_state_dict(saved["model"])
        for generator, generator_state in zip(self.generators, saved["generators"], strict=True):
            generator.set_state(generator_state)
        restore_random_states(saved["random"])
        self.history.epochs[:] = saved["history"]["epochs"]
        self.history.best_epoch, self.history.stopped_early = saved["history"]["best_epoch"], saved["history"]["stopped_early"]
        self.finished = saved["finished"]
        if not self.finished:
            self.optimizer.load_state_dict(saved["optimizer"])
            for callback, callback_state in zip(self.callbacks, saved["callbacks"], strict=True):
                callback.load_state_dict(callback_state)
        log.info("%s: resumed at epoch %d from %s", self.checkpoint.description, saved["next_epoch"], self.checkpoint.path)
        return saved["next_epoch"]


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, loader: DataLoader, step: Step, epoch: int = 0) -> float:
    """Size-weighted mean of `step` over a loader, in eval mode without gradients.

    Parameters
    ----------
    model : Module
        The model.
    loader : DataLoader
        The examples.
    step : callable
        ``step(model, batch, epoch)`` returns a batch's mean loss.
    epoch : int
        Passed to `step`.

    Returns
    -------
    float
        The mean loss.
    """
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
        """Remember the initial learning rates (see `Callback.on_train_begin`)."""
        self.optimizer = optimizer
        self.initial = [group["lr"] for group in optimizer.param_groups]

    def on_epoch_end(self, epoch: int, record: dict, model: torch.nn.Module) -> bool:
        """Set the next epoch's learning rate; never stops (see `Callback.on_epoch_end`)."""
        factor = 0.5 * (1.0 + math.cos(math.pi * min(epoch + 1, self.epochs) / self.epochs))
        for group, initial in zip(self.optimizer.param_groups, self.initial):
            group["lr"] = initial * factor
        return False

    def state_dict(self) -> dict:
        """The initial learning rates (see `Callback.state_dict`)."""
        return {"initial": list(self.initial)}

    def load_state_dict(self, state: dict) -> None:
        """Take back the initial learning rates (see `Callback.load_state_dict`)."""
        self.initial = list(state["initial"])
