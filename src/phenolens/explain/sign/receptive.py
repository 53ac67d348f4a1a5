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
    """(P, H', W') boolean masks of the `source` positions whose values change `target` at each of the (P, 2) `positions`.

    The support of d(sum over channels of target[position]) / d(source), united over `probes`
    random inputs shaped like `example` (so ReLUs and max-pools that are off for one input are on
    for another). One forward pass, one backward pass per position. `source` may be INPUT.
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
    """The read matrix measured by gradient probing, one backward pass per later position (for untraceable nets)."""
    masks = probe_support(model, earlier, later, example, grid(shapes[later]), probes, seed)
    return boolean(sp.csr_matrix(masks.reshape(len(masks), -1).astype(np.float32)))


@dataclass
class ReceptiveFields:
    """Map sizes and read matrices for a chain of modelled layers, ordered input to output.

    `reads[(a, b)]` is the (positions of b, positions of a) boolean matrix of which positions of
    layer a each position of layer b is computed from, for consecutive modelled layers and from
    INPUT to every layer.
    """

    layers: list[str]
    shapes: dict[str, tuple[int, int]]
    reads: dict[tuple[str, str], sp.csr_matrix]

    @classmethod
    def of(cls, model: nn.Module, layers: list[str], example: torch.Tensor, method: str = "trace") -> ReceptiveFields:
        """Compute the fields of `layers` (ordered input to output) for inputs shaped like `example` (1, C, H, W)."""
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
        """The modelled layer (or INPUT) just below `layer`."""
        chain = [INPUT, *self.layers]
        return chain[chain.index(layer) - 1]

    def field(self, layer: str, position: tuple[int, int], earlier: str | None = None) -> np.ndarray:
        """Boolean map over `earlier` (default: the layer below) of the positions `position` of `layer` reads."""
        earlier = earlier or self.below(layer)
        row = self.reads[(earlier, layer)][position[0] * self.shapes[layer][1] + position[1]]
        mask = np.zeros(self.shapes[earlier], dtype=bool)
        mask.flat[row.indices] = True
        return mask

    def offsets(self, layer: str) -> tuple[tuple[int, int], np.ndarray]:
        """(stride, O) for `layer` over the layer below: O read by the central position, relative to stride * p."""
        below = self.below(layer)
        stride = tuple(max(1, round(a / b)) for a, b in zip(self.shapes[below], self.shapes[layer]))
        centre = (self.shapes[layer][0] // 2, self.shapes[layer][1] // 2)
        return stride, np.argwhere(self.field(layer, centre)) - np.asarray(centre) * np.asarray(stride)

    def input_boxes(self, layer: str) -> np.ndarray:
        """(H, W, 4) inclusive input-pixel boxes (top, left, bottom, right) of every position of `layer`."""
        matrix = self.reads[(INPUT, layer)]
        width = self.shapes[INPUT][1]
        rows, cols = matrix.indices // width, matrix.indices % width
        starts = matrix.indptr[:-1]
        low = [np.minimum.reduceat(rows, starts), np.minimum.reduceat(cols, starts)]
        high = [np.maximum.reduceat(rows, starts), np.maximum.reduceat(cols, starts)]
        return np.stack(low + high, -1).reshape(*self.shapes[layer], 4)

    def input_centres(self, layer: str) -> np.ndarray:
        """(H, W, 2) input-pixel centre (row, col) of every position's field in `layer`."""
        box = self.input_boxes(layer)
        return (box[..., :2] + box[..., 2:]) / 2.0
