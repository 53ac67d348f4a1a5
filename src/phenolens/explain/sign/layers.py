"""Address layers of any torch network by module name and read their activations with forward hooks.

The network is never modified: hooks copy the outputs of the named modules during a forward pass
under `torch.no_grad`, so nothing SIGN learns can send gradients into the network.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from phenolens.core.errors import PhenolensError

OUTPUT = "output"  # the name SIGN gives the network's own output (class probabilities)


def layer_names(model: nn.Module) -> list[str]:
    """Every sub-module's qualified name.

    Parameters
    ----------
    model : nn.Module
        The network.

    Returns
    -------
    list of str
        In registration order.
    """
    return [name for name, _ in model.named_modules() if name]


def default_layers(model: nn.Module) -> list[str]:
    """The outputs of every stage of a phenolens backbone, as module names.

    Parameters
    ----------
    model : nn.Module
        A network with ``stage_names()``.

    Returns
    -------
    list of str
        Qualified module names.

    Raises
    ------
    PhenolensError
        When the network has no ``stage_names()``.
    """
    if hasattr(model, "stage_names"):
        return check_layer_names(model, list(model.stage_names()))
    raise PhenolensError(
        f"{type(model).__name__} has no stage_names(); pass the layers to model explicitly (e.g. --layers NAME,NAME), valid names: {_listing(model)}"
    )


def _listing(model: nn.Module) -> str:
    return ", ".join(layer_names(model))


def check_layer_names(model: nn.Module, names: Sequence[str]) -> list[str]:
    """Resolve layer names to qualified module names.

    Parameters
    ----------
    model : nn.Module
        The network.
    names : sequence of str
        Qualified names, or the unique last part of one ("stage2" for "stages.stage2").

    Returns
    -------
    list of str
        Qualified names, in the order given.

    Raises
    ------
    PhenolensError
        For no names, an unknown or ambiguous name (listing the valid names), or a name given twice.
    """
    if not names:
        raise PhenolensError("no layers given; pass at least one layer name")
    valid = layer_names(model)
    resolved = []
    for name in names:
        matches = [name] if name in valid else [v for v in valid if v.endswith("." + name)]
        if len(matches) != 1:
            problem = "does not exist" if not matches else f"is ambiguous ({', '.join(matches)})"
            raise PhenolensError(f"layer {name!r} {problem} in {type(model).__name__}; valid names: {_listing(model)}")
        resolved.append(matches[0])
    if len(set(resolved)) != len(resolved):
        raise PhenolensError(f"layers {list(names)} name a layer twice; give each layer once")
    return resolved


class ActivationTap:
    """Context manager: forward hooks that keep the latest output of each named module.

    The hooks are removed on exit, so the network comes out as it went in.

    Parameters
    ----------
    model : nn.Module
        The network.
    names : sequence of str
        Modules to tap (see `check_layer_names`).

    Attributes
    ----------
    outputs : dict of str to Tensor
        The latest output of each tapped module (detached).
    order : list of str
        The order in which the modules fired during the last forward pass: the input-to-output
        order SIGN needs.
    """

    def __init__(self, model: nn.Module, names: Sequence[str]):
        self.model = model
        self.names = check_layer_names(model, names)
        self.outputs: dict[str, torch.Tensor] = {}
        self.order: list[str] = []
        self._handles: list = []

    def __enter__(self) -> ActivationTap:
        modules = dict(self.model.named_modules())
        for name in self.names:
            self._handles.append(modules[name].register_forward_hook(self._keeper(name)))
        return self

    def _keeper(self, name: str):
        def keep(module, inputs, output):
            if name not in self.outputs:
                self.order.append(name)
            self.outputs[name] = output.detach() if isinstance(output, torch.Tensor) else output

        return keep

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """Forward a batch without gradients, filling `outputs` and `order`.

        Parameters
        ----------
        x : Tensor
            Network input.

        Returns
        -------
        Tensor
            The network's output.
        """
        self.outputs.clear()
        self.order.clear()
        with torch.no_grad():
            return self.model(x)


def check_convolutional(name: str, output, candidates: Sequence[str] = ()) -> torch.Tensor:
    """Check that a layer's output is one (N, C, H, W) map, i.e. a convolutional layer.

    Parameters
    ----------
    name : str
        The layer.
    output : Any
        Its output.
    candidates : sequence of str
        Layers with maps, named in the error.

    Returns
    -------
    Tensor
        `output`.

    Raises
    ------
    PhenolensError
        When `output` is not a four-dimensional tensor.
    """
    if not isinstance(output, torch.Tensor) or output.ndim != 4:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        hint = f"; layers with maps: {', '.join(candidates)}" if candidates else ""
        raise PhenolensError(f"layer {name!r} is not convolutional: its output is {shape}, not an (N, C, H, W) map; pass a layer with maps{hint}")
    return output


def convolutional_layers(model: nn.Module, example: torch.Tensor) -> list[str]:
    """The modules whose output is an (N, C, H, W) map.

    Parameters
    ----------
    model : nn.Module
        The network.
    example : Tensor
        One input batch.

    Returns
    -------
    list of str
        Input to output.
    """
    with ActivationTap(model, layer_names(model)) as tap:
        tap.run(example)
    return [name for name in tap.order if isinstance(tap.outputs[name], torch.Tensor) and tap.outputs[name].ndim == 4]


def ordered_layers(model: nn.Module, names: Sequence[str], example: torch.Tensor) -> list[str]:
    """Sort layers input to output by one forward pass.

    Parameters
    ----------
    model : nn.Module
        The network.
    names : sequence of str
        Qualified layer names.
    example : Tensor
        One input batch.

    Returns
    -------
    list of str
        `names`, input to output.

    Raises
    ------
    PhenolensError
        When a layer is never called or is not convolutional.
    """
    with ActivationTap(model, names) as tap:
        tap.run(example)
    never = [name for name in names if name not in tap.outputs]
    if never:
        raise PhenolensError(f"layer {never[0]!r} is never called in the forward pass; pass layers the network uses")
    for name in tap.order:
        output = tap.outputs[name]
        if not isinstance(output, torch.Tensor) or output.ndim != 4:
            check_convolutional(name, output, convolutional_layers(model, example))
    return list(tap.order)


def iter_batches(x: torch.Tensor | np.ndarray, batch_size: int) -> Iterator[torch.Tensor]:
    """Consecutive float32 batches.

    Parameters
    ----------
    x : Tensor or ndarray
        (N, ...) array.
    batch_size : int
        Rows per batch.

    Yields
    ------
    Tensor
        float32 batches, in order.
    """
    for start in range(0, len(x), batch_size):
        yield torch.as_tensor(np.asarray(x[start : start + batch_size]) if isinstance(x, np.ndarray) else x[start : start + batch_size]).float()


def columns(maps: torch.Tensor) -> torch.Tensor:
    """Activation maps as columns.

    Parameters
    ----------
    maps : Tensor
        (N, D, H, W) activations.

    Returns
    -------
    Tensor
        (N*H*W, D) columns, image-major then row-major.
    """
    return maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])
