"""Save and load any phenolens torch model as `model.safetensors` + `model.json`.

The JSON config names the architecture (a key of `ARCHITECTURES`) and its constructor
hyper-parameters, plus what a user needs to apply the model correctly: class names, channel names
and normalisation statistics. Loading rebuilds the module from the config and loads the tensors;
nothing is ever unpickled.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from phenolens.core.errors import PhenolensError
from phenolens.core.outputs import atomic_write_bytes, atomic_write_text

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model.json"

ARCHITECTURES: dict[str, Callable[..., Any]] = {}


def register_architecture(name: str):
    """Class decorator: make a torch module loadable by name from a weights folder."""

    def register(cls):
        ARCHITECTURES[name] = cls
        cls.architecture_name = name
        return cls

    return register


@dataclass
class ModelCard:
    """What travels with the weights: how to rebuild the model and how to feed it."""

    architecture: str
    hyperparameters: dict = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    channel_names: list[str] = field(default_factory=list)
    normalization: dict = field(default_factory=dict)  # e.g. {"mean": [...], "std": [...]}
    extra: dict = field(default_factory=dict)  # training settings, metrics, dataset name

    @property
    def n_channels(self) -> int:
        return len(self.channel_names)


def save_model(model, folder: str | Path, card: ModelCard) -> Path:
    """Write `folder/model.safetensors` and `folder/model.json` atomically; return the folder."""
    from safetensors.torch import save

    folder = Path(folder)
    if card.architecture not in ARCHITECTURES:
        raise PhenolensError(f"architecture {card.architecture!r} is not registered; use @register_architecture")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write_bytes(folder / WEIGHTS_FILE, save(state))
    atomic_write_text(folder / CONFIG_FILE, json.dumps(asdict(card), indent=2) + "\n")
    return folder


def read_card(folder: str | Path) -> ModelCard:
    """Read only the JSON config of a weights folder."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise PhenolensError(f"{path}: no model config; give a folder written by a phenolens train command")
    try:
        return ModelCard(**json.loads(path.read_text()))
    except (ValueError, TypeError) as error:
        raise PhenolensError(f"{path}: unreadable model config ({error}); retrain or restore the file") from None


def load_model(folder: str | Path, expected_architecture: str | None = None):
    """Rebuild the model saved in `folder`; return `(model, card)` with the model in eval mode.

    Errors name the file: missing or corrupt config/weights, an unknown architecture, a config
    from another architecture than `expected_architecture`, tensors that do not fit.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    card = read_card(folder)
    if expected_architecture and card.architecture != expected_architecture:
        raise PhenolensError(
            f"{folder / CONFIG_FILE}: holds a {card.architecture!r} model but this command needs "
            f"{expected_architecture!r}; pass a checkpoint trained for it"
        )
    if card.architecture not in ARCHITECTURES:
        _import_architectures()
    if card.architecture not in ARCHITECTURES:
        raise PhenolensError(f"{folder / CONFIG_FILE}: unknown architecture {card.architecture!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise PhenolensError(f"{weights}: weights file missing; the folder is incomplete")
    try:
        state = load_file(weights)
    except (SafetensorError, OSError, ValueError) as error:
        raise PhenolensError(f"{weights}: corrupt or truncated weights file ({error}); retrain or restore it") from None
    model = ARCHITECTURES[card.architecture](**card.hyperparameters)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise PhenolensError(f"{weights}: tensors do not fit a {card.architecture!r} model ({first})") from None
    model.eval()
    return model, card


def _import_architectures() -> None:
    """Import the modules that register architectures (they register on import)."""
    import importlib
    import pkgutil

    import phenolens.nn as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name != "weights":
            importlib.import_module(f"phenolens.nn.{module.name}")
