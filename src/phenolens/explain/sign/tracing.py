"""Exact receptive fields by tracing a network's graph with torch.fx.

The read matrix between two layers is the product of the window matrices of every convolution
and pooling on every path between them (branches merged by a residual sum or a channel
concatenation are unions). Networks whose `forward` cannot be traced as a whole (Python control
flow on tensor shapes, input checks) are followed module by module instead: the modules the
tensor passes through between the two layers, found by matching tensors in a hooked forward
pass, are traced one at a time, outermost first.

Normalisation layers are treated as per-position maps (their statistics are constants at inference).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import fx, nn

from phenolens.core.errors import PhenolensError
from phenolens.explain.sign.geometry import INPUT, boolean, chain_pairs, window, window_matrix

GLOBAL = "global"  # marks a node whose every value depends on every earlier position


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


def trace_reads(model: nn.Module, layers: list[str], example: torch.Tensor) -> dict[tuple[str, str], sp.csr_matrix]:
    """Exact read matrices for `chain_pairs(layers)`.

    The whole network is traced when fx can; otherwise the modules between each pair of layers
    are traced one by one.

    Parameters
    ----------
    model : nn.Module
        The network (left unchanged).
    layers : list of str
        Modelled layers, input to output.
    example : Tensor
        (1, C, H, W) input that sets the shapes.

    Returns
    -------
    dict of (str, str) to csr_matrix
        (positions of later, positions of earlier) boolean matrices.

    Raises
    ------
    PhenolensError
        When neither works (use method 'probe' then).
    """
    try:
        graph, nodes = _trace(model, example, set(layers))
    except _Untraceable:
        return _chained_reads(model, layers, example)
    modules = dict(model.named_modules())
    named = {INPUT: next(n for n in graph.nodes if n.op == "placeholder"), **nodes}
    return {(a, b): _propagate(graph, modules, named[a], named[b], f"{a} -> {b}") for a, b in chain_pairs(layers)}


class _Untraceable(Exception):
    pass


def _trace(module: nn.Module, example: torch.Tensor, wanted: set[str]) -> tuple[fx.Graph, dict[str, fx.Node]]:
    """The fx graph of `module` with shapes propagated from `example`, and the nodes of the wanted sub-modules."""
    from torch.fx.passes.shape_prop import ShapeProp

    tracer = _LayerTracer(wanted)
    try:
        graph = tracer.trace(module)
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        arguments = [example] + [None] * (len(placeholders) - 1)  # extra inputs (covariates) keep their defaults
        ShapeProp(fx.GraphModule(module, graph)).propagate(*arguments)
    except Exception as error:  # fx raises many types for untraceable Python control flow
        raise _Untraceable(f"{type(module).__name__}: {type(error).__name__}: {error}") from None
    return graph, tracer.nodes


def _chained_reads(model: nn.Module, layers: list[str], example: torch.Tensor) -> dict[tuple[str, str], sp.csr_matrix]:
    """Follow the tensor from layer to layer through the modules it passes, tracing each module alone."""
    calls = _record_calls(model, example)
    produced = {call.name: call.output for call in calls}
    sources = {INPUT: id(example), **produced}
    untraceable: set[str] = set()
    reads = {}
    for a, b in chain_pairs(layers):
        while True:
            path = _module_path(calls, sources[a], produced[b], untraceable)
            if path is None:
                raise PhenolensError(
                    f"{a} -> {b}: {type(model).__name__} cannot be traced by torch.fx and no chain of traceable modules links the two layers; "
                    "use receptive-field method 'probe'"
                )
            try:
                matrices = [_module_reads(call) for call in path]
            except _Untraceable:
                untraceable.update(call.name for call in path if not _traceable(call))
                continue
            product = matrices[0]
            for matrix in matrices[1:]:
                product = boolean(matrix @ product)
            reads[(a, b)] = product
            break
    return reads


class _Call:
    """One module call seen in a hooked forward pass: which tensor went in, which came out."""

    def __init__(self, name: str, module: nn.Module, inputs: tuple, output, order: int):
        self.name, self.module, self.order = name, module, order
        first = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        self.source = id(first) if first is not None else None
        self.output = id(output) if isinstance(output, torch.Tensor) else None
        self.in_shape = tuple(first.shape) if first is not None else None
        self.out_shape = tuple(output.shape) if isinstance(output, torch.Tensor) else None
        self.depth = name.count(".")


def _record_calls(model: nn.Module, example: torch.Tensor) -> list[_Call]:
    calls: list[_Call] = []
    keep: list = []  # hold every tensor so ids stay unique during the pass

    def hook(name):
        def record(module, inputs, output):
            keep.append((inputs, output))
            calls.append(_Call(name, module, inputs, output, len(calls)))

        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in model.named_modules() if name]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return [c for c in calls if c.source is not None and c.output is not None and c.source != c.output]


def _module_path(calls: list[_Call], source: int, target: int, excluded: set[str]) -> list[_Call] | None:
    """Module calls leading tensor `source` to tensor `target`, preferring outer modules (depth-first)."""
    if source == target:
        return []
    options = sorted((c for c in calls if c.source == source and c.name not in excluded), key=lambda c: (c.depth, c.order))
    for call in options:
        rest = _module_path(calls, call.output, target, excluded)
        if rest is not None:
            return [call, *rest]
    return None


def _traceable(call: _Call) -> bool:
    try:
        _module_reads(call)
    except _Untraceable:
        return False
    return True


def _module_reads(call: _Call) -> sp.csr_matrix:
    """Read matrix of one module from its first input to its output."""
    if len(call.in_shape) != 4 or len(call.out_shape) != 4:
        raise _Untraceable(f"{call.name} does not map maps to maps")
    if isinstance(call.module, _WINDOW_MODULES):
        return window_matrix(call.out_shape[2:], call.in_shape[2:], *_module_window(call.module))
    graph, _ = _trace(call.module, torch.zeros(call.in_shape), set())
    source = next(n for n in graph.nodes if n.op == "placeholder")
    target = next(n for n in graph.nodes if n.op == "output").args[0]
    try:
        return _propagate(graph, dict(call.module.named_modules()), source, target, call.name)
    except PhenolensError as error:
        raise _Untraceable(str(error)) from None


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
    merged = boolean(sum(inputs[1:], inputs[0]))
    module = modules.get(node.target) if node.op == "call_module" else None
    out = _spatial(node)
    if out is None:
        return GLOBAL  # flattened, pooled globally, or fully connected
    below = next(_spatial(n) for n in node.all_input_nodes if _spatial(n) is not None)
    if isinstance(module, _WINDOW_MODULES):
        return boolean(window_matrix(out, below, *_module_window(module)) @ merged)
    if node.op == "call_function" and node.target in _STRIDE_PADDING_DILATION:
        return boolean(window_matrix(out, below, *_function_window(node)) @ merged)
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and out == (1, 1):
        return GLOBAL
    if {_spatial(n) for n in node.all_input_nodes if _spatial(n) is not None} == {out}:
        return merged  # per-position operation: activation, normalisation, residual sum, channel concat
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    raise PhenolensError(f"{what}: operation {name!r} changes the map size in a way SIGN does not know; use receptive-field method 'probe'")
