"""The images explorer view: the embedding map of cells coloured by class, prediction or correctness;
hovering shows the crop; clicking shows every channel with each method's map over it, the class
probabilities and the cell's deletion/insertion curves (renderer ``templates/explorer_images.js.j2``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from phenolens.report.explorer.sprites import SpriteSheet, colormap_table, sample_rule, square_tiles, tile_size, to_uint8
from phenolens.report.explorer.view import ExplorerFigure, View, plotly_text
from phenolens.report.figures import OKABE_ITO, class_styles

MAX_CELLS = 5000
"""Most cells an images page shows; larger runs are sampled (`sample_rule`) and the page says so."""

CHANNEL_COLOURS = {"blue": (0, 114, 178), "green": (0, 158, 115), "vermillion": (213, 94, 0), "pink": (204, 121, 167), "yellow": (240, 228, 66)}
"""Colour of each channel in the composite crop, in channel order (Okabe-Ito, colour-blind safe), cycled past five."""


def composite_tiles(tiles: np.ndarray) -> np.ndarray:
    """Colour composite of (N, C, S, S) uint8 channel tiles, each channel in its `CHANNEL_COLOURS` colour.

    Parameters
    ----------
    tiles : numpy.ndarray
        (N, C, S, S) uint8 channels.

    Returns
    -------
    numpy.ndarray
        (N, S, S, 3) uint8 RGB (grey when there is one channel).
    """
    if tiles.shape[1] == 1:
        return np.repeat(tiles[:, 0, :, :, None], 3, axis=-1)
    palette = list(CHANNEL_COLOURS.values())
    colours = np.asarray([palette[c % len(palette)] for c in range(tiles.shape[1])], np.float32) / 255
    rgb = np.einsum("ncyx,ck->nyxk", tiles.astype(np.float32), colours)
    return np.clip(rgb * (1.5 / max(1.0, colours.sum(axis=0).max())), 0, 255).astype(np.uint8)


PLOTLY_SYMBOLS = {"o": "circle", "s": "square", "^": "triangle-up", "D": "diamond", "v": "triangle-down", "P": "cross"}
"""Plotly's names of the static figures' markers (`phenolens.report.figures.MARKERS`)."""


def group_colours(count: int) -> list[str]:
    """`count` hex colours for groups on a map: the Okabe-Ito colours, cycled (`map_figure` changes the marker each cycle).

    Parameters
    ----------
    count : int
        Number of groups.

    Returns
    -------
    list of str
        Hex colours (Plotly reads hex, not matplotlib's RGBA tuples).
    """
    return [colour for colour, _ in class_styles(count)]


MAP_AXIS = {"showticklabels": False, "ticks": "", "showgrid": False, "zeroline": False, "showline": True}
"""A t-SNE axis: named, without numbers (its coordinates have no meaning of their own)."""


def map_figure(points: np.ndarray, ids: Sequence[str], colourings: Mapping[str, tuple[np.ndarray, Sequence[str], Sequence[str]]]):
    """A Plotly scatter of `points` whose colouring is chosen with buttons (one trace per group per colouring); no title
    (the view's note says what the map is).

    Parameters
    ----------
    points : numpy.ndarray
        (N, 2) coordinates.
    ids : sequence of str
        Item id of each point (``customdata``: clicking a point opens it).
    colourings : mapping
        Button label -> (group code of each point (N,), group names, group colours); the first is shown first.

    Returns
    -------
    plotly.graph_objects.Figure
        The figure.
    """
    import plotly.graph_objects as go

    figure = go.Figure()
    ids = np.asarray(ids, dtype=object)
    spans, first = [], 0
    for number, (codes, names, colours) in enumerate(colourings.values()):
        symbols = [PLOTLY_SYMBOLS[marker] for _, marker in class_styles(len(names))]  # past 8 groups colours repeat, shapes do not
        for code, (name, colour, symbol) in enumerate(zip(names, colours, symbols)):
            chosen = np.flatnonzero(codes == code)
            if not len(chosen):
                continue
            figure.add_trace(
                go.Scatter(
                    x=points[chosen, 0], y=points[chosen, 1], mode="markers", name=plotly_text(name), customdata=ids[chosen],
                    marker={"size": 6, "color": colour, "symbol": symbol, "line": {"width": 0}}, hoverinfo="none", visible=number == 0,
                )
            )  # fmt: skip
        spans.append((first, len(figure.data)))
        first = len(figure.data)
    buttons = [
        {"label": plotly_text(label), "method": "restyle", "args": [{"visible": [start <= t < stop for t in range(len(figure.data))]}]}
        for label, (start, stop) in zip(colourings, spans)
    ]
    figure.update_layout(
        template="simple_white",
        margin={"l": 30, "r": 10, "t": 50, "b": 10},
        xaxis={"title": {"text": "t-SNE 1 (a.u.)"}, **MAP_AXIS},
        yaxis={"title": {"text": "t-SNE 2 (a.u.)"}, "scaleanchor": "x", **MAP_AXIS},
        legend={"itemsizing": "constant", "orientation": "h", "y": -0.1, "yanchor": "top"},
        updatemenus=[
            {"type": "buttons", "direction": "right", "buttons": buttons, "x": 0, "y": 1, "xanchor": "left", "yanchor": "bottom", "showactive": True}
        ],
        dragmode="pan",
    )
    return figure


def embedding_points(features: np.ndarray, seed: int = 0, metric: str = "euclidean") -> np.ndarray:
    """t-SNE of (N, D) features to 2-D (perplexity fitted to small sets), the map of the images view and figure.

    Parameters
    ----------
    features : numpy.ndarray
        (N, D) features (N >= 2).
    seed : int
        Seed of t-SNE.
    metric : str
        scikit-learn's distance between rows (e.g. ``cosine`` for row-standardised profiles).

    Returns
    -------
    numpy.ndarray
        (N, 2) coordinates; all zeros when every row is the same (a collapsed network).
    """
    from sklearn.manifold import TSNE

    values = np.asarray(features, np.float32)
    if (values == values[:1]).all():
        return np.zeros((len(values), 2))  # scikit-learn's t-SNE crashes the process (SIGSEGV) on identical rows
    perplexity = float(min(30, max(2, (len(values) - 1) // 3), len(values) - 1))  # t-SNE needs perplexity < N
    return TSNE(n_components=2, perplexity=perplexity, metric=metric, init="pca", random_state=seed).fit_transform(values)


def cell_ids(meta, count: int) -> list[str]:
    """Unique, readable ids of cells: their position and, when the metadata has one, the source file's name.

    Parameters
    ----------
    meta : pandas.DataFrame
        Per-cell metadata (a ``source`` column is used when present).
    count : int
        Number of cells.

    Returns
    -------
    list of str
        ``"#<i> <file name>"`` or ``"#<i>"``.
    """
    if meta is not None and "source" in meta and len(meta) == count:
        return [f"#{i} {str(source).replace(chr(92), '/').rsplit('/', 1)[-1]}" for i, source in enumerate(meta["source"])]
    return [f"#{i}" for i in range(count)]


def images_view(
    images,
    channel_names: Sequence[str],
    class_names: Sequence[str],
    labels: np.ndarray,
    proba: np.ndarray | None,
    points: np.ndarray | None = None,
    features: np.ndarray | None = None,
    ids: Sequence[str] | None = None,
    maps: Mapping[str, np.ndarray] | None = None,
    curves: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    title: str = "Cells",
    map_name: str = "t-SNE of the penultimate features",
    max_cells: int = MAX_CELLS,
    seed: int = 0,
) -> View:
    """The images explorer view of a set of cells.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        (C, H, W) crops (sizes may differ) or one (N, C, H, W) array.
    channel_names, class_names : sequence of str
        Names of the channels and classes.
    labels : numpy.ndarray
        (N,) true class, -1 where unknown.
    proba : numpy.ndarray or None
        (N, K) class probabilities (None: no prediction colouring).
    points : numpy.ndarray, optional
        (N, 2) map coordinates (e.g. `embedding_points`).
    features : numpy.ndarray, optional
        (N, D) features whose t-SNE is the map, computed on the shown cells only (when `points` is not given).
    ids : sequence of str, optional
        Unique id of each cell (default ``#0``, ``#1``, ...).
    maps : mapping, optional
        Method -> (N, C, H, W) attribution maps in the crops' geometry.
    curves : mapping, optional
        Method -> ``{"fractions", "deletion_curves", "insertion_curves"}`` (per cell, as `deletion_insertion` returns).
    title, map_name : str
        Heading of the view and what the map is.
    max_cells : int
        Most cells shown; more are sampled per class in proportion (seeded) and the page says so.
    seed : int
        Seed of that sample.

    Returns
    -------
    View
        Renderer ``images``; items hold ``tile``, ``label``, ``true``, ``predicted``, ``proba`` and ``curves``.
    """
    count = len(labels)
    labels = np.asarray(labels)
    ids = [f"#{i}" for i in range(count)] if ids is None else [str(i) for i in ids]
    predicted = proba.argmax(axis=1) if proba is not None else None
    kept, rule = sample_rule(np.where(labels >= 0, labels, predicted if predicted is not None else -1), max_cells, seed)
    maps = dict(maps or {})
    shared = {method: m.shape[1] == 1 or bool(np.allclose(m[kept][:, :1], m[kept])) for method, m in maps.items()}
    layers = 3 + len(channel_names) + sum(1 if shared[m] else len(channel_names) for m in maps)
    side = tile_size(len(kept), layers)
    raw = square_tiles(images[kept] if isinstance(images, np.ndarray) else [images[i] for i in kept], side)
    low = np.percentile(raw, 1.0, axis=(0, 2, 3))[None, :, None, None]
    high = np.percentile(raw, 99.5, axis=(0, 2, 3))[None, :, None, None]
    channel_tiles = to_uint8(raw, low, high)
    sheets = {"crop": SpriteSheet(composite_tiles(channel_tiles))}
    sheets.update({f"ch{c}": SpriteSheet(channel_tiles[:, c]) for c in range(len(channel_names))})
    map_sheets = {}
    for number, (method, values) in enumerate(maps.items()):
        magnitude = square_tiles(np.abs(values[kept]) if isinstance(values, np.ndarray) else [np.abs(values[i]) for i in kept], side)
        scaled = to_uint8(magnitude, 0.0, magnitude.max(axis=(1, 2, 3), keepdims=True))
        map_sheets[method] = {}
        for c, channel in enumerate(channel_names):
            name = f"map{number}" if shared[method] else f"map{number}_{c}"
            if name not in sheets:
                sheets[name] = SpriteSheet(scaled[:, 0 if shared[method] else c])
            map_sheets[method][channel] = name
    class_list = list(class_names)
    unknown = "(unlabelled)"
    names = np.asarray([*class_list, unknown], dtype=object)
    shown_ids = [ids[i] for i in kept]
    items = {}
    for slot, i in enumerate(kept):
        item = {"tile": slot, "true": names[labels[i]] if labels[i] >= 0 else unknown}
        if proba is not None:
            item["predicted"] = class_list[predicted[i]]
            item["proba"] = np.round(proba[i], 4)
        item["label"] = f"{ids[i]}: {item['true']}" + (f" -> {item['predicted']} ({proba[i, predicted[i]]:.2f})" if proba is not None else "")
        checked = {m: c for m, c in (curves or {}).items() if np.isfinite(c["deletion_curves"][i]).all()}  # cells outside the check have none
        if checked:
            item["curves"] = {m: {kind: np.round(c[f"{kind}_curves"][i], 4) for kind in ("deletion", "insertion")} for m, c in checked.items()}
        items[ids[i]] = item
    colours = group_colours(len(class_list))
    true_codes = np.where(labels[kept] >= 0, labels[kept], len(class_list))
    colourings = {"true class": (true_codes, [*class_list, unknown], [*colours, "#999999"])}
    if proba is not None:
        colourings["predicted class"] = (predicted[kept], class_list, colours)
        correct = np.where(labels[kept] < 0, 2, (predicted[kept] != labels[kept]).astype(int))
        colourings["correct?"] = (correct, ["correct", "wrong", "unlabelled"], [OKABE_ITO[2], OKABE_ITO[5], "#999999"])
    palette = list(CHANNEL_COLOURS)
    composite = ", ".join(f"{name} {palette[c % len(palette)]}" for c, name in enumerate(channel_names))
    notes = [f"{len(kept):,} cells on the {map_name}; crops shown at {side} px (composite colours: {composite})."]
    if rule:
        notes.append(rule)
    if maps:
        notes.append("Maps show |attribution| scaled to each cell's largest value over its channels.")
    shown_points = points[kept] if points is not None else embedding_points(features[kept], seed)
    figure = map_figure(shown_points, shown_ids, colourings)
    data = {
        "classes": class_list,
        "channels": list(channel_names),
        "methods": list(maps),
        "map_sheets": map_sheets,
        "colormap": colormap_table("inferno"),
        "fractions": np.round(next(iter(curves.values()))["fractions"], 4) if curves else [],
        # one colour per method for both its curves (dash tells them apart), in the static faithfulness figure's order
        "method_colours": {method: OKABE_ITO[number % len(OKABE_ITO)] for number, method in enumerate(curves or {})},
    }
    return View(title, "images", [ExplorerFigure("map", figure, 560)], items, data, sheets, notes, hover_sheet="crop")
