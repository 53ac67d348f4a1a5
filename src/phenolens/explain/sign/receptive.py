"""Receptive fields between layers of a convolutional network, residual networks included.

Position p of a layer reads a set R(p) of positions of an earlier layer (or input pixels). For a
translation-invariant net R(p) = {stride * p + o : o in O} clipped to the map, but at the borders
the clipping happens at every intermediate map too, so SIGN keeps the exact relation: a sparse
boolean matrix `reads[(earlier, later)]` of shape (positions of later, positions of earlier).

`trace_reads` derives it exactly by tracing the network with torch.fx and multiplying the window
matrices of every convolution and pooling along every path between the two layers (residual
branches are unions of their paths). `probe_support` measures one row empirically, as the support
of the gradient of one position with respect to the earlier layer over random inputs; it is the
fallback for networks fx cannot trace and the ground truth the tests check the tracer against.

Normalisation layers are treated as per-position maps (their statistics are constants at inference).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import fx, nn

from phenolens.core.errors import PhenolensError
from phenolens.core.seeding import torch_generator
from phenolens.explain.sign.layers import ActivationTap, check_layer_names

INPUT = "input"  # name of the network input as a source layer

GLOBAL = "global"  # marks a node whose every value depends on every earlier position


def _pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def window(kernel, stride=None, padding=0, dilation=1) -> tuple[tuple[int, int], np.ndarray]:
    """(stride, offsets) of a sliding window: output p reads stride*p - padding + dilation*j."""
    kernel, dilation = _pair(kernel), _pair(dilation)
    stride = _pair(stride if stride not in (None, []) else kernel)
    if padding == "same":
        padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    padding = (0, 0) if padding == "valid" else _pair(padding)
    rows = -padding[0] + dilation[0] * np.arange(kernel[0])
    cols = -padding[1] + dilation[1] * np.arange(kernel[1])
    return stride, np.stack(np.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2)


def grid(shape: tuple[int, int]) -> np.ndarray:
    """(H*W, 2) row-major (row, col) coordinates of a map."""
    return np.stack(np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij"), -1).reshape(-1, 2)


def window_matrix(out_shape: tuple[int, int], in_shape: tuple[int, int], stride: tuple[int, int], offsets: np.ndarray) -> sp.csr_matrix:
    """(H_out*W_out, H_in*W_in) boolean matrix: output p reads input stride*p + o when inside the map."""
    read = grid(out_shape)[:, None, :] * np.asarray(stride) + offsets[None]
    inside = (read >= 0).all(-1) & (read[..., 0] < in_shape[0]) & (read[..., 1] < in_shape[1])
    rows = np.broadcast_to(np.arange(len(read))[:, None], inside.shape)[inside]
    cols = read[..., 0][inside] * in_shape[1] + read[..., 1][inside]
    shape = (out_shape[0] * out_shape[1], in_shape[0] * in_shape[1])
    return _boolean(sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape))


def _boolean(matrix: sp.spmatrix) -> sp.csr_matrix:
    matrix = sp.csr_matrix(matrix)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


_WINDOW_MODULES = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
# Positional parameters (name, index in the call, default) of the functional sliding windows.
_STRIDE_PADDING_DILATION = {
    F.conv2d: (("stride", 3, 1), ("padding", 4, 0), ("dilation", 5, 1)),
    torch.conv2d: (("stride", 3, 1), ("padding", 4, 0), ("dilation", 5, 1)),
    F.max_pool2d: (("stride", 2, None), ("padding", 3, 0), ("dilation", 4, 1)),
    F.avg_pool2d: (("stride", 2, None), ("padding", 3, 0), ("dilation", None, 1)),
}


def _module_window(module: nn.Module):
    return window(module.kernel_size, module.stride, module.padding, getattr(module, "dilation", 1))


def _function_window(node: fx.Node):
    def argument(name, index, default):
        if name in node.kwargs:
            return node.kwargs[name]
        return node.args[index] if index is not None and index < len(node.args) else default

    if node.target in (F.conv2d, torch.conv2d):
        kernel = tuple(node.args[1].meta["tensor_meta"].shape[2:])  # from the weight tensor
    else:
        kernel = argument("kernel_size", 1, None)
    return window(kernel, *(argument(*spec) for spec in _STRIDE_PADDING_DILATION[node.target]))


class _LayerTracer(fx.Tracer):
    """An fx tracer that remembers the graph node produced by each wanted module."""

    def __init__(self, wanted: set[str]):
        super().__init__()
        self.wanted = wanted
        self.nodes: dict[str, fx.Node] = {}

    def call_module(self, m, forward, args, kwargs):
        out = super().call_module(m, forward, args, kwargs)
        path = self.path_of_module(m)
        if path in self.wanted and isinstance(out, fx.Proxy):
            self.nodes[path] = out.node
        return out


def _spatial(node: fx.Node) -> tuple[int, int] | None:
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)
    return (int(shape[2]), int(shape[3])) if shape is not None and len(shape) == 4 else None


def chain_pairs(layers: list[str]) -> list[tuple[str, str]]:
    """(earlier, later) pairs SIGN needs: consecutive modelled layers, and the input to every layer."""
    chain = [INPUT, *layers]
    return list(zip(chain[:-1], chain[1:])) + [(INPUT, layer) for layer in layers[1:]]


def trace_reads(model: nn.Module, layers: list[str], example: torch.Tensor) -> dict[tuple[str, str], sp.csr_matrix]:
    """Exact read matrices for `chain_pairs(layers)`, by tracing `model` on inputs shaped like `example`.

    Raises PhenolensError when the network cannot be traced or uses an operation whose geometry
    is unknown (use method 'probe' then).
    """
    from torch.fx.passes.shape_prop import ShapeProp

    tracer = _LayerTracer(set(layers))
    try:
        graph = tracer.trace(model)
        ShapeProp(fx.GraphModule(model, graph)).propagate(example)
    except Exception as error:  # fx raises many types for untraceable Python control flow
        problem = f"{type(model).__name__} cannot be traced by torch.fx ({type(error).__name__}: {error})"
        raise PhenolensError(f"{problem}; use receptive-field method 'probe'") from None
    named = {INPUT: next(n for n in graph.nodes if n.op == "placeholder"), **tracer.nodes}
    modules = dict(model.named_modules())
    return {(a, b): _propagate(graph, modules, named[a], named[b], f"{a} -> {b}") for a, b in chain_pairs(layers)}


def _propagate(graph: fx.Graph, modules: dict, source: fx.Node, target: fx.Node, what: str):
    size = _spatial(source)
    reads: dict[fx.Node, object] = {source: sp.identity(size[0] * size[1], dtype=np.float32, format="csr")}
    for node in graph.nodes:
        if node is source:
            continue
        inputs = [reads[n] for n in node.all_input_nodes if n in reads]
        if inputs:
            reads[node] = _step(node, modules, inputs, what)
        if node is target:
            break
    if target not in reads:
        raise PhenolensError(f"{what}: the later layer does not depend on the earlier one; order the layers input to output")
    if isinstance(reads[target], str):
        raise PhenolensError(f"{what}: every position of the later layer reads all of the earlier one (global pooling between); model earlier layers")
    return reads[target]


def _step(node: fx.Node, modules: dict, inputs: list, what: str):
    if any(isinstance(r, str) for r in inputs):
        return GLOBAL
    merged = _boolean(sum(inputs[1:], inputs[0]))
    module = modules.get(node.target) if node.op == "call_module" else None
    out = _spatial(node)
    if out is None:
        return GLOBAL  # flattened, pooled globally, or fully connected
    below = next(_spatial(n) for n in node.all_input_nodes if _spatial(n) is not None)
    if isinstance(module, _WINDOW_MODULES):
        return _boolean(window_matrix(out, below, *_module_window(module)) @ merged)
    if node.op == "call_function" and node.target in _STRIDE_PADDING_DILATION:
        return _boolean(window_matrix(out, below, *_function_window(node)) @ merged)
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and out == (1, 1):
        return GLOBAL
    if {_spatial(n) for n in node.all_input_nodes if _spatial(n) is not None} == {out}:
        return merged  # per-position operation: activation, normalisation, residual sum, channel concat
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    raise PhenolensError(f"{what}: operation {name!r} changes the map size in a way SIGN does not know; use receptive-field method 'probe'")


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
    return _boolean(sp.csr_matrix(masks.reshape(len(masks), -1).astype(np.float32)))


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
