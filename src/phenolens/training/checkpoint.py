"""Checkpoints of training, so that a killed run continues where it stopped and ends with the same weights.

Inside `checkpointing(folder)` (the CLI opens it with `checkpointed(run)` around a training command),
every call of the training loop (`phenolens.training.loop.fit`) saves its whole state after each
epoch: model and optimizer tensors, callback state (early stopping's best weights, the plateau
schedule), the History, the data loader's shuffle generator, the step's own generators, and torch's,
numpy's and Python's global random states. Before its first epoch the call restores what a killed
run saved, so the resumed run draws the same batches and ends with the same weights (bitwise, on
one thread). A call that had finished is not run again: its final weights and random states are
restored.

Calls are numbered in the order they happen (the members of a deep ensemble, cross-validation
folds, the trials of a hyper-parameter search, the layers of a dictionary); a resumed run with the
same settings and inputs makes the same calls in the same order, so call n finds checkpoint n.
Each checkpoint is one safetensors file (written atomically) whose header carries the scalars as
JSON (epoch, History, schedule and early-stopping state, generator positions): tensors and the
scalars that go with them can never come from two different epochs. Nothing is unpickled.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np
import torch

from phenolens.core.errors import PhenolensError
from phenolens.core.outputs import atomic_write_bytes

CHECKPOINTS = "checkpoints"  # the folder of a run's staging folder that holds them; removed when the run succeeds
_STATE_KEY = "phenolens.checkpoint"
_FORMAT = 1


def encode_state(value: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested state (dicts, lists, tuples, tensors, arrays, numbers, strings) into JSON and tensors.

    Tensors and numpy arrays are replaced by references into the returned tensor dict; tuples,
    dicts with non-string keys and non-finite floats are tagged so `decode_state` rebuilds them exactly.

    Parameters
    ----------
    value : Any
        A state such as ``optimizer.state_dict()`` or ``numpy.random.get_state()``.

    Returns
    -------
    tuple
        (a JSON-able tree, the tensors it refers to by name).

    Raises
    ------
    TypeError
        For a value of another type (a programming error).
    """
    tensors: dict[str, torch.Tensor] = {}

    def encode(item: Any) -> Any:
        if isinstance(item, torch.Tensor):
            name = f"t{len(tensors)}"
            tensors[name] = item.detach().cpu().contiguous().clone()  # clone: safetensors refuses shared storage
            return {"__tensor__": name}
        if isinstance(item, np.ndarray):
            name = f"t{len(tensors)}"
            stored = item if item.dtype in (np.float32, np.float64, np.int64, np.int32, np.uint8, np.bool_) else item.astype(np.int64)
            tensors[name] = torch.from_numpy(np.ascontiguousarray(stored).copy())
            return {"__ndarray__": name, "dtype": item.dtype.str}
        if isinstance(item, np.generic):
            item = item.item()
        if item is None or isinstance(item, (bool, int, str)):
            return item
        if isinstance(item, float):
            return item if math.isfinite(item) else {"__float__": repr(item)}
        if isinstance(item, tuple):
            return {"__tuple__": [encode(v) for v in item]}
        if isinstance(item, list):
            return [encode(v) for v in item]
        if isinstance(item, dict):
            if all(isinstance(key, str) and not key.startswith("__") for key in item):
                return {key: encode(v) for key, v in item.items()}
            return {"__items__": [[encode(key), encode(v)] for key, v in item.items()]}
        raise TypeError(f"cannot checkpoint a {type(item).__name__}")

    return encode(value), tensors


def decode_state(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Rebuild a state split by `encode_state`.

    Parameters
    ----------
    tree : Any
        The JSON tree.
    tensors : dict of str to Tensor
        The tensors it refers to.

    Returns
    -------
    Any
        The state, with tuples, integer keys, non-finite floats and numpy arrays (with their dtype) restored.
    """
    if isinstance(tree, list):
        return [decode_state(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "__tensor__" in tree:
        return tensors[tree["__tensor__"]]
    if "__ndarray__" in tree:
        return tensors[tree["__ndarray__"]].numpy().astype(np.dtype(tree["dtype"]))
    if "__float__" in tree:
        return float(tree["__float__"])
    if "__tuple__" in tree:
        return tuple(decode_state(v, tensors) for v in tree["__tuple__"])
    if "__items__" in tree:
        return {decode_state(key, tensors): decode_state(v, tensors) for key, v in tree["__items__"]}
    return {key: decode_state(v, tensors) for key, v in tree.items()}


def random_states() -> dict[str, Any]:
    """torch's, numpy's (legacy global) and Python's global random states.

    Returns
    -------
    dict
        ``torch``, ``numpy`` and ``python`` states, for `restore_random_states`.
    """
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def restore_random_states(states: dict[str, Any]) -> None:
    """Set the global random states saved by `random_states`.

    Parameters
    ----------
    states : dict
        From `random_states` (through a checkpoint).
    """
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    kind, internal, gauss = states["python"]
    random.setstate((kind, tuple(internal), gauss))


class Checkpoint:
    """The checkpoint file of one unit of training (one call of the loop, one dictionary layer).

    Parameters
    ----------
    path : Path
        The safetensors file.
    description : str
        What the unit trains; a resumed run must reach the same unit at the same number.
    on_save : callable, optional
        Called after every save (the run marks its staging folder resumable).
    """

    def __init__(self, path: Path, description: str, on_save: Callable[[], None] | None = None):
        self.path = path
        self.description = description
        self.on_save = on_save

    def save(self, state: dict[str, Any]) -> None:
        """Write `state` atomically (tensors as safetensors, everything else as JSON in its header).

        Parameters
        ----------
        state : dict
            Anything `encode_state` takes; ``finished`` marks a unit that need not run again.
        """
        from safetensors.torch import save

        tree, tensors = encode_state({"format": _FORMAT, "description": self.description, **state})
        atomic_write_bytes(self.path, save(tensors, metadata={_STATE_KEY: json.dumps(tree)}))
        if self.on_save is not None:
            self.on_save()

    def load(self) -> dict[str, Any] | None:
        """The state a killed run saved for this unit, or None when it saved none.

        Returns
        -------
        dict or None
            The state given to `save`.

        Raises
        ------
        PhenolensError
            When the file is unreadable or belongs to another unit (the run's steps changed).
        """
        if not self.path.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(self.path, framework="pt") as stream:
                tree = json.loads(stream.metadata()[_STATE_KEY])
                tensors = {name: stream.get_tensor(name) for name in stream.keys()}  # noqa: SIM118 - safe_open has no __iter__
            state = decode_state(tree, tensors)
        except Exception as error:  # noqa: BLE001 - any failure to read it is a damaged checkpoint
            raise PhenolensError(
                f"{self.path}: unreadable checkpoint ({type(error).__name__}); pass --overwrite instead of --resume to start again"
            ) from None
        if state.get("format") != _FORMAT or state.get("description") != self.description:
            raise PhenolensError(
                f"{self.path}: the checkpoint is of {state.get('description')!r}, not {self.description!r}; "
                "pass --overwrite instead of --resume to start again"
            )
        return state


class Checkpointing:
    """Hands out the checkpoints of a run's units of training, numbered in the order they are asked for.

    Parameters
    ----------
    folder : Path
        Where the checkpoint files go (inside the run's staging folder).
    on_save : callable, optional
        Called after every save.
    """

    def __init__(self, folder: Path, on_save: Callable[[], None] | None = None):
        self.folder = Path(folder)
        self.on_save = on_save
        self.count = 0

    def next(self, description: str) -> Checkpoint:
        """The checkpoint of the next unit of training.

        Parameters
        ----------
        description : str
            What the unit trains.

        Returns
        -------
        Checkpoint
            Its file ``folder/NNNN.safetensors``.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        checkpoint = Checkpoint(self.folder / f"{self.count:04d}.safetensors", description, self.on_save)
        self.count += 1
        return checkpoint


_ACTIVE: ContextVar[Checkpointing | None] = ContextVar("phenolens_checkpointing", default=None)


@contextlib.contextmanager
def checkpointing(folder: str | Path, on_save: Callable[[], None] | None = None) -> Iterator[Checkpointing]:
    """Checkpoint every unit of training run inside the block into `folder`; remove them when it succeeds.

    Parameters
    ----------
    folder : path
        The checkpoint folder (kept, with its files, when the block fails or the process is killed).
    on_save : callable, optional
        Called after every save.

    Yields
    ------
    Checkpointing
        The active checkpointing.
    """
    active = Checkpointing(Path(folder), on_save)
    token = _ACTIVE.set(active)
    try:
        yield active
    finally:
        _ACTIVE.reset(token)
    shutil.rmtree(active.folder, ignore_errors=True)


def next_checkpoint(description: str) -> Checkpoint | None:
    """The checkpoint of the next unit of training, or None outside `checkpointing`.

    Parameters
    ----------
    description : str
        What the unit trains.

    Returns
    -------
    Checkpoint or None
        Where the unit saves and finds its state.
    """
    active = _ACTIVE.get()
    return None if active is None else active.next(description)


@contextlib.contextmanager
def checkpointed(run) -> Iterator[Any]:
    """Enter a `phenolens.core.runs.RunWriter` and checkpoint the training inside it into its staging folder.

    The first checkpoint marks the staging folder resumable, so a killed run's ``--resume``
    (``RunWriter(..., resume=True)``) continues from it.

    Parameters
    ----------
    run : RunWriter
        The command's run writer (not yet entered).

    Yields
    ------
    RunWriter
        The entered writer.
    """
    with run, checkpointing(run.path / CHECKPOINTS, on_save=run.mark_resumable):
        yield run


def resumable(module: torch.nn.Module, description: str, work: Callable[[], Any]) -> None:
    """Run `work` (which fits `module` in place) as one unit of training: skipped with its result restored when a killed run finished it.

    For training that does not go through the loop (the EM fit of one dictionary layer).

    Parameters
    ----------
    module : Module
        What `work` fits; its state is what the checkpoint keeps.
    description : str
        What the unit trains.
    work : callable
        Fits `module`; its return value is not kept.
    """
    checkpoint = next_checkpoint(description)
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        module.load_state_dict(saved["model"])
        restore_random_states(saved["random"])
        return
    work()
    if checkpoint is not None:
        checkpoint.save({"finished": True, "model": module.state_dict(), "random": random_states()})
