"""Explorer view of a SIGN inference graph: clickable words (their top patches and receptive fields) and edges.

Words sit in rows by layer (the output at the top); each lower word is joined to its two strongest
connections above, coloured as in the static drawing by log P(lower | upper) / P(lower). A click on a
word shows its most probable validation examples (the receptive-field patch, or the whole image with
the field in red when it covers over a quarter of it) and, in an image graph, where the word occurs
in the analysed image; a click on an edge's midpoint shows its co-occurrence statistics.
"""

from __future__ import annotations

import numpy as np

from phenolens.explain.sign.graph import InferenceGraphBuilder
from phenolens.explain.sign.layers import OUTPUT
from phenolens.explain.sign.selection import InferenceGraph
from phenolens.report.explorer.sprites import SpriteSheet
from phenolens.report.explorer.view import ExplorerFigure, View, plotly_text
from phenolens.report.sign_drawing import ARROW_BINS, arrow_colour, display_limits, dotted_image, example_tile, to_rgb

EXAMPLES = 6
"""Most probable validation examples shown per word (as in the static drawing)."""


def _word_examples(builder: InferenceGraphBuilder, rgb: np.ndarray, layer: str, word: int, count: int) -> list[np.ndarray]:
    """The word's `count` most probable validation examples as RGB tiles (see `example_tile`)."""
    if layer == OUTPUT:
        examples = np.argwhere(builder.maps_.words[OUTPUT][:, 0, 0] == word)[:, 0]
        examples = examples[np.argsort(-builder.maps_.probabilities[examples, word])][:count]
        return [example_tile(rgb[i], None) for i in examples]
    found = builder.examples(layer, word, count)
    boxes = builder.dictionary.fields_.input_boxes(layer)[found[:, 1], found[:, 2]]
    return [example_tile(rgb[i], box) for i, box in zip(found[:, 0], boxes)]


def _as_uint8(tiles: list[np.ndarray]) -> np.ndarray:
    return (np.clip(np.stack(tiles), 0, 1) * 255 + 0.5).astype(np.uint8)


def sign_graph_view(
    graph: InferenceGraph, builder: InferenceGraphBuilder, display: np.ndarray, image: np.ndarray | None = None, examples: int = EXAMPLES
) -> View:
    """The graph's words and strongest edges as a clickable diagram.

    Parameters
    ----------
    graph : InferenceGraph
        A class or image graph of `builder`.
    builder : InferenceGraphBuilder
        Fitted on the validation images `display` holds.
    display : numpy.ndarray
        (N, C, H, W) raw validation images.
    image : numpy.ndarray, optional
        (C, H, W) raw analysed image of an image graph.
    examples : int
        Examples shown per word.

    Returns
    -------
    View
        Renderer ``sign``; item ids ``node:LAYER:WORD`` and ``edge:LOWER>UPPER``.
    """
    import plotly.graph_objects as go

    limits = display_limits(display)
    rgb = to_rgb(display, limits)
    analysed = to_rgb(image[None], limits)[0] if image is not None else None
    layers = list(graph.layers)
    patches, dots, items = [], [], {}
    positions = {}
    for row, layer in enumerate(layers):
        nodes = graph.nodes_of(layer)
        for column, node in enumerate(nodes):
            positions[node.key] = ((column + 1) / (len(nodes) + 1), row)
            tiles = _word_examples(builder, rgb, layer, node.word, examples)
            name = builder.class_name(node.word) if layer == OUTPUT else f"word {node.word}"
            item = {
                "kind": "node",
                "label": f"{layer}: {name}" + (f" (S = {node.score:.3g})" if layer != OUTPUT else ""),
                "layer": layer,
                "word": int(node.word),
                "score": round(float(node.score), 4),
                "examples": list(range(len(patches), len(patches) + len(tiles))),
                "tile": len(patches),
            }
            patches += tiles
            if analysed is not None and layer != OUTPUT:
                holding = np.argwhere(graph.word_maps.words[layer][0] == node.word)
                centres = builder.dictionary.fields_.input_centres(layer)[holding[:, 0], holding[:, 1]]
                item["dots"], item["occurrences"] = len(dots), len(holding)
                dots.append(dotted_image(analysed, centres))
            items[f"node:{node.key}"] = item
    edges = [e for e in graph.strongest_edges(2) if e.upper in positions and e.lower in positions]
    figure = go.Figure()
    for bound_index, (bound, colour) in enumerate(ARROW_BINS):
        low = ARROW_BINS[bound_index - 1][0] if bound_index else -np.inf
        chosen = [e for e in edges if low <= e.log_ratio < bound]
        xs, ys = [], []
        for edge in chosen:
            (x0, y0), (x1, y1) = positions[edge.lower], positions[edge.upper]
            xs += [x0, x1, None]
            ys += [y0, y1, None]
        if chosen:
            label = f"log-ratio < {bound:g}" if not bound_index else (f"log-ratio >= {low:g}" if bound == np.inf else f"log-ratio {low:g}-{bound:g}")
            figure.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": colour, "width": 2.5}, name=label, hoverinfo="skip"))
    for edge in edges:
        upper, lower = items[f"node:{edge.upper}"], items[f"node:{edge.lower}"]
        items[f"edge:{edge.lower}>{edge.upper}"] = {
            "kind": "edge",
            "label": f"{lower['label']} -> {upper['label']}",
            "weight": round(float(edge.weight), 4),
            "log_ratio": round(float(edge.log_ratio), 4),
            "ratio": round(float(np.exp(edge.log_ratio)), 3),
            "lower": f"node:{edge.lower}",
            "upper": f"node:{edge.upper}",
            "tile": lower["tile"],
        }
    middle = [(f"edge:{e.lower}>{e.upper}", e) for e in edges]
    figure.add_trace(
        go.Scatter(
            x=[(positions[e.lower][0] + positions[e.upper][0]) / 2 for _, e in middle],
            y=[(positions[e.lower][1] + positions[e.upper][1]) / 2 for _, e in middle],
            customdata=[key for key, _ in middle],
            mode="markers",
            marker={"symbol": "diamond", "size": 9, "color": [arrow_colour(e.log_ratio) for _, e in middle], "line": {"width": 1, "color": "#fff"}},
            name="edge (click for its statistics)",
            hovertemplate="%{customdata}<extra></extra>",
        )
    )
    node_ids = [key for key in items if key.startswith("node:")]
    figure.add_trace(
        go.Scatter(
            x=[positions[key[5:]][0] for key in node_ids],
            y=[positions[key[5:]][1] for key in node_ids],
            customdata=node_ids,
            mode="markers+text",
            text=[plotly_text(items[key]["label"].split(": ", 1)[1].split(" (S")[0]) for key in node_ids],
            textposition="top center",
            marker={"size": 22, "color": "#0072B2", "line": {"width": 1, "color": "#333"}},
            name="word (click for its examples)",
            hovertemplate="%{text}<extra></extra>",
        )
    )
    figure.update_layout(
        title={"text": plotly_text(f"{graph.kind} graph: {graph.label}")},
        xaxis={"visible": False, "range": [0, 1]},
        yaxis={
            "title": {"text": "layer (input at the bottom)"},
            "tickmode": "array",
            "tickvals": list(range(len(layers))),
            "ticktext": [plotly_text(layer) for layer in layers],
            "range": [-0.5, len(layers) - 0.3],
        },
        legend={"orientation": "h", "y": -0.08},
        margin={"l": 110},
    )
    sheets = {"patch": SpriteSheet(_as_uint8(patches))} if patches else {}
    if dots:
        sheets["dots"] = SpriteSheet(_as_uint8(dots))
    notes = [
        "Each word shows its most probable validation examples: the receptive-field patch, or the whole image with the field in red when "
        "it covers over a quarter of it. Edges join each lower word to its two strongest connections above; e = Q x log-ratio."
    ]
    data = {"bins": [[None if not np.isfinite(b) else b, c] for b, c in ARROW_BINS], "image_graph": analysed is not None}
    title = f"{graph.kind.capitalize()} graph: {graph.label}"
    return View(title, "sign", [ExplorerFigure("graph", figure, 180 + 110 * len(layers))], items, data, sheets, notes, hover_sheet="patch")
