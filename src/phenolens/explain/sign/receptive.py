"""Receptive fields between modelled layers of a convolutional network, residual networks included.

`ReceptiveFields` holds, for a chain of modelled layers, the exact sparse boolean matrix of which
positions of the layer below (or input pixels) every position reads, derived by tracing
(`tracing.trace_reads`). `probe_support` measures the same thing empirically, as the support of
the gradient of one position with respect to the earlier layer over random inputs: the fallback
for networks that cannot be traced, and the ground truth the tests check the tracer against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from phenolens.core.errors import PhenolensError
from phenolens.core.seeding import torch_generator
from phenolens.explain.sign.geometry import INPUT, boolean, chain_pairs, grid
from phenolens.explain.sign.layers import ActivationTap, check_layer_names
from phenolens.explain.sign.tracing import trace_reads


def probe_support(
    model: nn.Module, source: str, target: str, example: torch.Tensor, positions: np.ndarray, probes: int = 16, seed: int = 0
) -> np.ndarray:
    """Measure receptive fields as gradient supports.

    The support of d(sum over channels of target[position]) / d(source), united over `probes`
    random inputs shaped like `example` (so ReLUs and max-pools that are off for one input are on
    for another). One forward pass, one backward pass per position.

    Parameters
    ----------
    model : nn.Module
        The network (its hooks are removed afterwards).
    source : str
        The earlier layer, or ``INPUT``.
    target : str
        The later layer.
    example : Tensor
        (1, C, H, W) input that sets the shapes.
    positions : ndarray
        (P, 2) positions of `target`.
    probes : int
        Random inputs.
    seed : int
        Seed of the random inputs.

    Returns
    -------
    ndarray
        (P, H', W') boolean masks over `source`.
    """
    check_layer_names(model, [n for n in (source, target) if n != INPUT])
    modules = dict(model.named_modules())
    noise = torch.randn((probes, *example.shape[1:]), generator=torch_generator(seed))
    held: dict[str, torch.Tensor] = {}

    def make_leaf(module, inputs, output):
        held["source"] = output.detach().requires_grad_(True)
        return held["source"].clone()  # a clone so in-place activations downstream leave the leaf intact

    def keep_target(module, inputs, output):
        held["target"] = output

    handles = [modules[target].register_forward_hook(keep_target)]
    if source == INPUT:
        held["source"] = noise.requires_grad_(True)
    else:
        handles.append(modules[source].register_forward_hook(make_leaf))
    masks = []
    try:
        with torch.enable_grad():
            model(held["source"] if source == INPUT else noise)
            out = held["target"]
            for row, col in np.asarray(positions).reshape(-1, 2):
                value = out[:, :, row, col].sum() if out.ndim == 4 else out.sum()
                (gradient,) = torch.autograd.grad(value, held["source"], retain_graph=True)
                masks.append((gradient.abs().sum(dim=(0, 1)) > 0).numpy())
    finally:
        for handle in handles:
            handle.remove()
    return np.stack(masks)


def probe_reads(model: nn.Module, earlier: str, later: str, example: torch.Tensor, shapes: dict, probes: int = 16, seed: int = 0) -> sp.csr_matrix:
    """The read matrix measured by gradient probing, one backward pass per later position (for untraceable nets).

    Parameters
    ----------
    model : nn.Module
        The network.
    earlier, later : str
        The two layers (`earlier` may be ``INPUT``).
    example : Tensor
        (1, C, H, W) input.
    shapes : dict
        Layer -> (H, W) map size.
    probes, seed : int
        See `probe_support`.

    Returns
    -------
    csr_matrix
        (positions of later, positions of earlier) boolean.
    """
    masks = probe_support(model, earlier, later, example, grid(shapes[later]), probes, seed)
    return boolean(sp.csr_matrix(masks.reshape(len(masks), -1).astype(np.float32)))


@dataclass
class ReceptiveFields:
    """Map sizes and read matrices for a chain of modelled layers, ordered input to output.

    Attributes
    ----------
    layers : list of str
        Modelled layers, input to output.
    shapes : dict of str to (int, int)
        Map size of every layer and of ``INPUT``.
    reads : dict of (str, str) to csr_matrix
        ``reads[(a, b)]`` is the (positions of b, positions of a) boolean matrix of which positions
        of layer a each position of layer b is computed from, for consecutive modelled layers and
        from ``INPUT`` to every layer.
    """

    layers: list[str]
    shapes: dict[str, tuple[int, int]]
    reads: dict[tuple[str, str], sp.csr_matrix]

    @classmethod
    def of(cls, model: nn.Module, layers: list[str], example: torch.Tensor, method: str = "trace") -> ReceptiveFields:
        """Compute the receptive fields of a chain of layers.

        Parameters
        ----------
        model : nn.Module
            The network (left unchanged).
        layers : list of str
            Modelled layers, input to output.
        example : Tensor
            (1, C, H, W) input that sets the map sizes.
        method : str
            ``trace`` (exact, from the traced graph) or ``probe`` (gradient probing).

        Returns
        -------
        ReceptiveFields

        Raises
        ------
        PhenolensError
            For an unknown method, or a network that cannot be traced (then use ``probe``).
        """
        with ActivationTap(model, layers) as tap:
            tap.run(example)
        shapes = {INPUT: tuple(example.shape[2:]), **{name: tuple(tap.outputs[name].shape[2:]) for name in layers}}
        if method == "trace":
            reads = trace_reads(model, layers, example)
        elif method == "probe":
            reads = {(a, b): probe_reads(model, a, b, example, shapes) for a, b in chain_pairs(layers)}
        else:
            raise PhenolensError(f"unknown receptive-field method {method!r}; use 'trace' or 'probe'")
        return cls(list(layers), shapes, reads)

    def below(self, layer: str) -> str:
        """The modelled layer (or ``INPUT``) just below a layer.

        Parameters
        ----------
        layer : str
            A modelled layer.

        Returns
        -------
        str
        """
        chain = [INPUT, *self.layers]
        return chain[chain.index(layer) - 1]

    def field(self, layer: str, position: tuple[int, int], earlier: str | None = None) -> np.ndarray:
        """The receptive field of one position.

        Parameters
        ----------
        layer : str
            A modelled layer.
        position : (int, int)
            (row, col) in `layer`.
        earlier : str, optional
            The layer read (default: the layer below).

        Returns
        -------
        ndarray
            Boolean map over `earlier`.
        """
        earlier = earlier or self.below(layer)
        row = self.reads[(earlier, layer)][position[0] * self.shapes[layer][1] + position[1]]
        mask = np.zeros(self.shapes[earlier], dtype=bool)
        mask.flat[row.indices] = True
        return mask

    def offsets(self, layer: str) -> tuple[tuple[int, int], np.ndarray]:
        """The window of a layer over the layer below, measured at its central position.

        Parameters
        ----------
        layer : str
            A modelled layer.

        Returns
        -------
        tuple of ((int, int), ndarray)
            The stride and the (k, 2) offsets read relative to stride * p.
        """
        below = self.below(layer)
        stride = tuple(max(1, round(a / b)) for a, b in zip(self.shapes[below], self.shapes[layer]))
        centre = (self.shapes[layer][0] // 2, self.shapes[layer][1] // 2)
        return stride, np.argwhere(self.field(layer, centre)) - np.asarray(centre) * np.asarray(stride)

    def input_boxes(self, layer: str) -> np.ndarray:
        """The input-pixel box of every position's field.

        Parameters
        ----------
        layer : str
            A modelled layer.

        Returns
        -------
        ndarray
            (H, W, 4) inclusive (top, left, bottom, right).
        """
        matrix = self.reads[(INPUT, layer)]
        width = self.shapes[INPUT][1]
        rows, cols = matrix.indices // width, matrix.indices % width
        starts = matrix.indptr[:-1]
        low = [np.minimum.reduceat(rows, starts), np.minimum.reduceat(cols, starts)]
        high = [np.maximum.reduceat(rows, starts), np.maximum.reduceat(cols, starts)]
        return np.stack(low + high, -1).reshape(*self.shapes[layer], 4)

    def input_centres(self, layer: str) -> np.ndarray:
        """The input-pixel centre of every position's field.

        Parameters
        ----------
        layer : str
            A modelled layer.

        Returns
        -------
        ndarray
            (H, W, 2) (row, col).
        """
        box = self.input_boxes(layer)
        return (box[..., :2] + box[..., 2:]) / 2.0
