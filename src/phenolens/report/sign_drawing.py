"""Drawing SIGN inference graphs: words as their most probable examples, arrows coloured by association.

Each word is shown by its m most probable validation examples: the receptive-field patch, or the
whole image with a red rectangle when the field covers more than a quarter of it. In an image
graph each word also shows the analysed image with red dots where the word occurs. Each lower
word gets arrows to its two strongest connections above, coloured by the log-ratio
log P(lower | upper) / P(lower): black < 1, light green 1-2, mid green 2-3, dark green >= 3.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from phenolens.core.outputs import atomic_write_bytes, write_json
from phenolens.explain.sign.graph import InferenceGraphBuilder
from phenolens.explain.sign.layers import OUTPUT
from phenolens.explain.sign.selection import InferenceGraph
from phenolens.report.figures import figure, figure_to_png

TILE = 32  # pixels per example tile
WHOLE_IMAGE_FRACTION = 0.25
ARROW_BINS = [(1.0, "black"), (2.0, "#a1d99b"), (3.0, "#41ab5d"), (np.inf, "#005a32")]  # log-ratio upper bounds
RED = np.array([1.0, 0.0, 0.0])


def arrow_colour(log_ratio: float) -> str:
    """Colour of an arrow by its log-ratio.

    Parameters
    ----------
    log_ratio : float
        log P(lower | upper) / P(lower).

    Returns
    -------
    str
        black < 1, light green 1-2, mid green 2-3, dark green >= 3.
    """
    return next(colour for bound, colour in ARROW_BINS if log_ratio < bound)


def to_rgb(images: np.ndarray, limits: list[tuple[float, float]]) -> np.ndarray:
    """Raw images as RGB: grey for 1 channel, green/magenta for 2, the first three as RGB for 3+.

    Parameters
    ----------
    images : ndarray
        (N, C, H, W) raw images.
    limits : list of (float, float)
        Display range per channel.

    Returns
    -------
    ndarray
        (N, H, W, 3) in [0, 1].
    """
    scaled = np.stack([np.clip((images[:, c] - lo) / (hi - lo if hi > lo else 1.0), 0, 1) for c, (lo, hi) in enumerate(limits)], -1)
    if scaled.shape[-1] == 1:
        return np.repeat(scaled, 3, -1)
    if scaled.shape[-1] == 2:
        return np.stack([scaled[..., 1], scaled[..., 0], scaled[..., 1]], -1)
    return scaled[..., :3]


def display_limits(images: np.ndarray) -> list[tuple[float, float]]:
    """Display range per channel shared by all images, so brightness is comparable.

    Parameters
    ----------
    images : ndarray
        (N, C, H, W) raw images.

    Returns
    -------
    list of (float, float)
        Per-channel 1st and 99.5th percentiles.
    """
    return [tuple(np.percentile(images[:, c], [1.0, 99.5])) for c in range(images.shape[1])]


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    rows = np.minimum((np.arange(size) * image.shape[0] / size).astype(int), image.shape[0] - 1)
    cols = np.minimum((np.arange(size) * image.shape[1] / size).astype(int), image.shape[1] - 1)
    return image[rows][:, cols]


def _outline(tile: np.ndarray, box: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    top, left, bottom, right = (np.array(box) * np.array([scale[0], scale[1], scale[0], scale[1]])).astype(int)
    bottom, right = min(bottom, tile.shape[0] - 1), min(right, tile.shape[1] - 1)
    tile[top : bottom + 1, [left, right]] = RED
    tile[[top, bottom], left : right + 1] = RED
    return tile


def example_tile(rgb: np.ndarray, box: np.ndarray | None) -> np.ndarray:
    """One example tile of a word.

    Parameters
    ----------
    rgb : ndarray
        (H, W, 3) image.
    box : ndarray or None
        Receptive field (top, left, bottom, right); None for output-layer words.

    Returns
    -------
    ndarray
        (TILE, TILE, 3): the field's patch, or the whole image with the box in red when the field
        covers more than a quarter of it (the whole image without a box).
    """
    height, width = rgb.shape[:2]
    if box is None:
        return _resize(rgb, TILE)
    top, left, bottom, right = box
    if (bottom - top + 1) * (right - left + 1) > WHOLE_IMAGE_FRACTION * height * width:
        return _outline(_resize(rgb, TILE).copy(), box, (TILE / height, TILE / width))
    return _resize(rgb[top : bottom + 1, left : right + 1], TILE)


def dotted_image(rgb: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """An image scaled to the height of a node panel, with red dots where a word occurs.

    Parameters
    ----------
    rgb : ndarray
        (H, W, 3) image.
    centres : ndarray
        (P, 2) pixel (row, col) of the dots.

    Returns
    -------
    ndarray
        (2 * TILE + 2, 2 * TILE + 2, 3) tile.
    """
    size = 2 * TILE + 2
    tile = _resize(rgb, size).copy()
    points = np.clip((centres * np.array([size / rgb.shape[0], size / rgb.shape[1]])).astype(int), 1, size - 2)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            tile[points[:, 0] + dy, points[:, 1] + dx] = RED
    return tile


def node_panel(
    builder: InferenceGraphBuilder, rgb: np.ndarray, layer: str, word: int, count: int = 6, analysed: np.ndarray | None = None
) -> np.ndarray:
    """One node as an image: its most probable examples in a 2-row grid.

    Parameters
    ----------
    builder : InferenceGraphBuilder
        Fitted on the validation images `rgb` shows.
    rgb : ndarray
        (N, H, W, 3) validation images.
    layer : str
        The node's layer.
    word : int
        The node's word.
    count : int
        Examples shown.
    analysed : ndarray, optional
        A dotted image (`dotted_image`) appended on the right, for image graphs.

    Returns
    -------
    ndarray
        (2 * TILE + 2, width, 3) panel.
    """
    columns = (count + 1) // 2
    panel = np.ones((2 * TILE + 2, columns * (TILE + 2), 3))
    if layer == OUTPUT:
        boxes = None
        examples = np.argwhere(builder.maps_.words[OUTPUT][:, 0, 0] == word)[:, 0]
        examples = examples[np.argsort(-builder.maps_.probabilities[examples, word])][:count]
    else:
        found = builder.examples(layer, word, count)
        examples, boxes = found[:, 0], builder.dictionary.fields_.input_boxes(layer)[found[:, 1], found[:, 2]]
    for i, image in enumerate(examples):
        box = boxes[i] if boxes is not None else None
        row, col = divmod(i, columns)
        panel[row * (TILE + 2) : row * (TILE + 2) + TILE, col * (TILE + 2) : col * (TILE + 2) + TILE] = example_tile(rgb[image], box)
    if analysed is None:
        return panel
    return np.concatenate([panel, np.ones((panel.shape[0], 4, 3)), analysed], 1)


def draw_graph(graph: InferenceGraph, builder: InferenceGraphBuilder, display: np.ndarray, image: np.ndarray | None = None, count: int = 6):
    """Draw an inference graph: one row per layer (output at the top), nodes as example panels.

    Parameters
    ----------
    graph : InferenceGraph
        A graph of `builder`.
    builder : InferenceGraphBuilder
        Fitted on the validation images.
    display : ndarray
        The raw (N, C, H, W) validation images the builder was fitted on.
    image : ndarray, optional
        The raw (C, H, W) analysed image of an image graph (its word maps are `graph.word_maps`).
    count : int
        Examples per node.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.patches import ConnectionPatch

    limits = display_limits(display)
    rgb = to_rgb(display, limits)
    analysed_rgb = to_rgb(image[None], limits)[0] if image is not None else None
    layers = graph.layers[::-1]
    widest = max(len(graph.nodes_of(layer)) for layer in layers)
    fig, grid = figure(width=3.3 * widest + 1.5, height=1.45 * len(layers) + 0.6, nrows=len(layers), ncols=widest, squeeze=False)
    axes = {}
    for row, layer in enumerate(layers):
        nodes = graph.nodes_of(layer)
        for col in range(widest):
            axis = grid[row, col]
            axis.axis("off")
            if col >= len(nodes):
                continue
            node = nodes[col]
            dots = None
            if analysed_rgb is not None and layer != OUTPUT:
                holding = np.argwhere(graph.word_maps.words[layer][0] == node.word)
                dots = dotted_image(analysed_rgb, builder.dictionary.fields_.input_centres(layer)[holding[:, 0], holding[:, 1]])
            axis.imshow(node_panel(builder, rgb, layer, node.word, count, dots), interpolation="nearest")
            name = builder.class_name(node.word) if layer == OUTPUT else f"word {node.word}"
            axis.set_title(f"{name}  S={node.score:.3g}" if layer != OUTPUT else name, fontsize=8)
            axes[node.key] = axis
        grid[row, 0].text(-0.08, 0.5, layer, transform=grid[row, 0].transAxes, ha="right", va="center", fontsize=9, rotation=90)
    for edge in graph.strongest_edges(2):
        if edge.upper in axes and edge.lower in axes:
            arrow = ConnectionPatch(
                xyA=(0.5, 1.0), coordsA=axes[edge.lower].transAxes, xyB=(0.5, 0.0), coordsB=axes[edge.upper].transAxes,
                arrowstyle="-|>", color=arrow_colour(edge.log_ratio), linewidth=1.6, mutation_scale=10,
            )  # fmt: skip
            fig.add_artist(arrow)
    fig.suptitle(f"{graph.kind} graph: {graph.label}", fontsize=11)
    fig.subplots_adjust(hspace=0.55, wspace=0.08)
    return fig


def graph_table(graph: InferenceGraph) -> pd.DataFrame:
    """The nodes of a graph as a table.

    Parameters
    ----------
    graph : InferenceGraph
        The graph.

    Returns
    -------
    DataFrame
        Layer, word, score S and the two strongest connections up, per selected word.
    """
    strongest = graph.strongest_edges(2)
    rows = []
    for node in graph.nodes:
        links = [f"{e.upper} (e={e.weight:.3g}, log-ratio={e.log_ratio:.2f})" for e in strongest if e.lower == node.key]
        rows.append({"layer": node.layer, "word": node.word, "S": node.score, "strongest connections up": "; ".join(links)})
    return pd.DataFrame(rows)


def write_graph(graph: InferenceGraph, builder: InferenceGraphBuilder, display: np.ndarray, folder: Path, stem: str, image: np.ndarray | None = None):
    """Draw a graph and write it as ``stem.png``, ``stem.svg`` and ``stem.json`` (its node/edge list).

    Parameters
    ----------
    graph, builder, display, image
        As for `draw_graph`.
    folder : Path
        An existing folder (a run's staging folder).
    stem : str
        File name without suffix.

    Returns
    -------
    tuple of (bytes, DataFrame)
        The PNG and the `graph_table`.
    """
    fig = draw_graph(graph, builder, display, image)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    atomic_write_bytes(folder / f"{stem}.svg", buffer.getvalue())
    png = figure_to_png(fig)
    atomic_write_bytes(folder / f"{stem}.png", png)
    write_json(folder / f"{stem}.json", graph.to_dict())
    return png, graph_table(graph)
