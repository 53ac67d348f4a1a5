"""Save and load any phenolens torch model as `model.safetensors` + `model.json`.

The JSON config names the architecture (a key of `ARCHITECTURES`) and its constructor
hyper-parameters, plus what a user needs to apply the model correctly: class names, channel names
and normalisation statistics. Loading rebuilds the module from the config and loads the tensors;
nothing is ever unpickled.
"""

from __future__ import annotations

import inspect
import json
import math
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from phenolens.core.errors import PhenolensError
from phenolens.core.outputs import atomic_write_bytes, atomic_write_text
from phenolens.data.readers import MAX_PIXELS_VARIABLE, one_line_message, pixel_limit, read_json_object

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
    """Read and check only the JSON config of a weights folder.

    Parameters
    ----------
    folder : str or Path
        A folder written by `save_model`.

    Returns
    -------
    ModelCard
        The config, with every field of the right type, unique class and channel names and valid
        normalisation statistics (finite means, positive standard deviations, a crop size within the
        pixel limit).

    Raises
    ------
    PhenolensError
        When `model.json` is missing, unreadable, too large, has unknown or mistyped fields, or invalid
        normalisation statistics.
    """
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise PhenolensError(f"{path}: no model config; give the model folder written by the phenolens command that trained it")
    raw = read_json_object(path, "model config")
    card_fields = {f.name: f for f in fields(ModelCard)}
    unknown = sorted(set(raw) - set(card_fields))
    if unknown:
        raise PhenolensError(f"{path}: unknown field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown[:5]))}; restore the config")
    if not isinstance(raw.get("architecture"), str):
        raise PhenolensError(f"{path}: 'architecture' must name an architecture, got {raw.get('architecture')!r}")
    for name in ("hyperparameters", "normalization", "extra"):
        if not isinstance(raw.get(name, {}), dict):
            raise PhenolensError(f"{path}: {name!r} must be a JSON object, got {type(raw[name]).__name__}")
    for name in ("class_names", "channel_names"):
        names = raw.get(name, [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise PhenolensError(f"{path}: {name!r} must be a list of strings")
        if len(set(names)) != len(names):
            raise PhenolensError(f"{path}: {name!r} repeats a name ({sorted({n for n in names if names.count(n) > 1})[0]!r}); names must be unique")
    card = ModelCard(**raw)
    _check_normalization(card, path)
    return card


def _check_normalization(card: ModelCard, path: Path) -> None:
    """Refuse statistics that would divide by zero or make inputs of another shape than the model's."""
    statistics = {key: card.normalization[key] for key in ("mean", "std") if key in card.normalization}
    for key, values in statistics.items():
        listed = values if isinstance(values, list) else [values]
        if not listed or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in listed):
            raise PhenolensError(f"{path}: normalization {key!r} must be a number or a non-empty list of numbers")
        if isinstance(values, list) and card.channel_names and len(values) != card.n_channels:
            raise PhenolensError(f"{path}: normalization {key!r} has {len(values)} values for {card.n_channels} channels; restore the config")
    std = statistics.get("std", 1.0)
    if min(std if isinstance(std, list) else [std]) <= 0:
        raise PhenolensError(f"{path}: normalization 'std' {std} holds a value <= 0 (inputs would be divided by it); restore the config")
    if "size" in card.normalization:
        size = card.normalization["size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise PhenolensError(f"{path}: normalization 'size' must be a positive integer (pixels), got {size!r}")
        values, limit = max(card.n_channels, 1) * size * size, pixel_limit()
        if values > limit:
            raise PhenolensError(
                f"{path}: normalization 'size' {size} makes inputs of {values:,} values per image, above the pixel limit of {limit:,} "
                f"({MAX_PIXELS_VARIABLE}); restore the config"
            )
    data_range = card.normalization.get("data_range", 1.0)
    if not isinstance(data_range, (int, float)) or isinstance(data_range, bool) or data_range <= 0:
        raise PhenolensError(f"{path}: normalization 'data_range' must be a positive number, got {data_range!r}")


def load_model(folder: str | Path, expected_architecture: str | None = None):
    """Rebuild the model saved in `folder`; return `(model, card)` with the model in eval mode.

    The config is checked before anything is allocated: hyperparameter names and types against the
    architecture's constructor, class and channel counts against the config's names, and the tensors the
    hyperparameters describe (built on the ``meta`` device, which allocates no memory) against the names
    and shapes in the weights file's header. So a config cannot make phenolens allocate more than the
    weights file holds.

    Parameters
    ----------
    folder : str or Path
        A folder written by `save_model`.
    expected_architecture : str, optional
        Refuse a model of another architecture.

    Returns
    -------
    tuple of (torch.nn.Module, ModelCard)
        The model in eval mode and its config.

    Raises
    ------
    PhenolensError
        When the config or weights are missing, corrupt or inconsistent: an unknown or unexpected
        architecture, unknown, missing or mistyped hyperparameters, class or channel counts that differ
        from the hyperparameters, or tensors missing, unexpected or shaped otherwise than the model's.
    """
    folder = Path(folder)
    config = folder / CONFIG_FILE
    card = read_card(folder)
    if expected_architecture and card.architecture != expected_architecture:
        raise PhenolensError(
            f"{config}: holds a {card.architecture!r} model but this command needs {expected_architecture!r}; pass a checkpoint trained for it"
        )
    if card.architecture not in ARCHITECTURES:
        _import_architectures()
    if card.architecture not in ARCHITECTURES:
        raise PhenolensError(f"{config}: unknown architecture {card.architecture!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    architecture = ARCHITECTURES[card.architecture]
    _check_hyperparameters(architecture, card, config)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise PhenolensError(f"{weights}: weights file missing; the folder is incomplete")
    stored = _stored_shapes(weights)
    _check_tensors(_meta_model(architecture, card, stored, config), stored, card, weights)
    model = architecture(**card.hyperparameters)
    state = read_tensors(weights, "retrain or restore it")
    try:
        model.load_state_dict(state, strict=True)
    except Exception as error:  # the header was checked; what is left is a corrupt body or a dtype torch cannot copy
        raise PhenolensError(
            f"{weights}: cannot load the tensors ({type(error).__name__}: {one_line_message(error)}); retrain or restore it"
        ) from None
    model.eval()
    return model, card


def _check_hyperparameters(architecture: Callable[..., Any], card: ModelCard, config: Path) -> None:
    """Names and JSON types of the hyperparameters against the constructor's signature and annotations."""
    parameters = list(inspect.signature(architecture).parameters.values())
    named = {p.name: p for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    open_ended = any(p.kind is p.VAR_KEYWORD for p in parameters)
    try:
        hints = typing.get_type_hints(architecture.__init__)
    except Exception:  # an annotation that does not evaluate only loses the type check; the build still checks
        hints = {}
    hyperparameters = card.hyperparameters
    unknown = sorted(set(hyperparameters) - set(named)) if not open_ended else []
    missing = sorted(n for n, p in named.items() if p.default is p.empty and n not in hyperparameters)
    if unknown or missing:
        problem = f"unknown {', '.join(map(repr, unknown[:5]))}" if unknown else f"missing {', '.join(map(repr, missing[:5]))}"
        raise PhenolensError(f"{config}: hyperparameters of {card.architecture!r}: {problem} (it takes {', '.join(named)}); restore the config")
    for name, value in hyperparameters.items():
        hint = hints.get(name, _JSON_HYPERPARAMETER)
        if not _fits(value, hint):
            raise PhenolensError(f"{config}: hyperparameter {name}={_short(value)} is not {_describe(hint)}; restore the config")
    for names, key in ((card.class_names, "n_classes"), (card.channel_names, "in_channels")):
        if names and isinstance(hyperparameters.get(key), int) and hyperparameters[key] != len(names):
            raise PhenolensError(f"{config}: {len(names)} names for {key}={hyperparameters[key]}; the config is inconsistent, restore it")


# What an open-ended (**kwargs) hyperparameter may hold: a JSON scalar or a list of scalars.
_JSON_HYPERPARAMETER = int | float | str | bool | None | list[int | float | str | bool]


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value has the type an annotation asks for (bool is not a number; floats must be finite)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        return isinstance(value, list) and all(_fits(v, args[0] if args else Any) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True  # an annotation this check does not know: the constructor decides


def _describe(hint: Any) -> str:
    return "a JSON number, string or list" if hint is _JSON_HYPERPARAMETER else f"of type {getattr(hint, '__name__', None) or hint}"


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_tensors(path: Path, remedy: str) -> dict:
    """Every tensor of a safetensors file (never unpickled), refused unless readable and finite.

    Parameters
    ----------
    path : Path
        The ``.safetensors`` file.
    remedy : str
        What the user should do about a bad file, the end of the error (e.g. "retrain or restore it").

    Returns
    -------
    dict of str to torch.Tensor
        The tensors by name.

    Raises
    ------
    PhenolensError
        Naming `path` when the file is missing, corrupt or truncated, or a floating-point tensor holds NaN or infinite values.
    """
    import torch
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise PhenolensError(f"{path}: tensors file missing; {remedy}")
    try:
        tensors = load_file(path)
    except Exception as error:  # SafetensorError, OSError, ValueError: all mean a corrupt or foreign file
        raise PhenolensError(f"{path}: corrupt or truncated tensors file ({type(error).__name__}: {one_line_message(error)}); {remedy}") from None
    damaged = sorted(name for name, tensor in tensors.items() if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()))
    if damaged:
        raise PhenolensError(f"{path}: tensor {damaged[0]!r} holds NaN or infinite values ({len(damaged)} tensor(s) damaged); {remedy}")
    return tensors


def _stored_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from the safetensors header, without reading the tensors."""
    from safetensors import safe_open

    try:
        with safe_open(weights, framework="pt") as stream:
            return {name: tuple(stream.get_slice(name).get_shape()) for name in stream.keys()}  # noqa: SIM118 (safe_open is not iterable)
    except Exception as error:  # SafetensorError, OSError, ValueError: all mean a corrupt or foreign file
        raise PhenolensError(
            f"{weights}: corrupt or truncated weights file ({type(error).__name__}: {one_line_message(error)}); retrain or restore it"
        ) from None


class _LargerThanTheWeights(Exception):
    """Raised from a registration hook to stop building a model that cannot fit the weights file."""


def _meta_model(architecture: Callable[..., Any], card: ModelCard, stored: dict[str, tuple[int, ...]], config: Path):
    """Build the model on the meta device, stopping as soon as it registers clearly more than `stored` holds."""
    import torch
    from torch.nn.modules import module as torch_module

    # Meta tensors cost no memory, but each module costs Python objects and time: stop a build that
    # registers far more tensors or values than the file holds (a near miss is left to `_check_tensors`,
    # which names the tensors that differ).
    stored_values = sum(math.prod(shape) for shape in stored.values())
    most_tensors, most_values = 2 * len(stored) + 64, 64 * stored_values + 2**20
    registered = {"tensors": 0, "values": 0}

    def count(module, name, tensor):
        if tensor is not None:
            registered["tensors"] += 1
            registered["values"] += tensor.numel()
            if registered["tensors"] > most_tensors or registered["values"] > most_values:
                raise _LargerThanTheWeights
        return None

    hooks = [torch_module.register_module_parameter_registration_hook(count), torch_module.register_module_buffer_registration_hook(count)]
    try:
        with torch.device("meta"):
            return architecture(**card.hyperparameters)
    except _LargerThanTheWeights:
        raise PhenolensError(
            f"{config}: the hyperparameters describe a model far larger than {WEIGHTS_FILE} holds ({registered['tensors']:,} tensors "
            f"of {registered['values']:,} values so far, against {len(stored):,} of {stored_values:,}); restore the config saved with these weights"
        ) from None
    except PhenolensError as error:
        raise PhenolensError(f"{config}: {error}") from None
    except Exception as error:  # a constructor refuses bad values with its own exception types
        raise PhenolensError(
            f"{config}: the hyperparameters do not build a {card.architecture!r} model "
            f"({type(error).__name__}: {one_line_message(error)}); restore the config"
        ) from None
    finally:
        for hook in hooks:
            hook.remove()


def _check_tensors(meta_model, stored: dict[str, tuple[int, ...]], card: ModelCard, weights: Path) -> None:
    """Missing, unexpected and mis-shaped tensors of the weights file, named in one line."""
    expected = {name: tuple(tensor.shape) for name, tensor in meta_model.state_dict().items()}
    missing = [n for n in expected if n not in stored]
    unexpected = [n for n in stored if n not in expected]
    misshaped = [n for n in expected if n in stored and stored[n] != expected[n]]
    problems = []
    if missing:
        problems.append(f"missing {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected {_names(unexpected)}")
    if misshaped:
        first = misshaped[0]
        more = f" (and {len(misshaped) - 1} more)" if len(misshaped) > 1 else ""
        problems.append(f"{first} has shape {list(stored[first])} in the file but {list(expected[first])} in the model{more}")
    if problems:
        raise PhenolensError(
            f"{weights}: tensors do not fit a {card.architecture!r} model as {CONFIG_FILE} describes it ({'; '.join(problems)}); "
            "the weights and config come from different models, restore the pair"
        )


def _names(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" (and {len(names) - 3} more)" if len(names) > 3 else "")


def _import_architectures() -> None:
    """Import the modules that register architectures (they register on import)."""
    import importlib
    import pkgutil

    import phenolens.nn as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name != "weights":
            importlib.import_module(f"phenolens.nn.{module.name}")
