"""Explorer view of a counterfactual run: every cell's probability before and after, and per cell an alpha slider.

A click on a cell opens its counterfactual path, channel by channel: the image at each step from the
original to alpha_1 (the whole alpha sweep for the cells that have one) beside the difference from the
original on a diverging colour scale.
"""

from __future__ import annotations

import numpy as np

from phenolens.explain.counterfactual.evaluate import ExplanationRun
from phenolens.report.explorer.sprites import SpriteSheet, colormap_table, sample_rule, square_tiles, tile_size, to_uint8
from phenolens.report.explorer.view import ExplorerFigure, View, plotly_text
from phenolens.report.figures import class_colors

MAX_CELLS = 400
"""Most cells with a slider on one page; more are sampled per predicted class (the page says so)."""

DIVERGING = "PuOr_r"  # purple = less, orange = more; readable under the common colour-vision deficiencies


def counterfactual_frames(run: ExplanationRun, index: int) -> tuple[list[float], list[float], list[np.ndarray]]:
    """The steps of one cell's counterfactual path: alphas, p(target) and raw images, in alpha order.

    Cells with an alpha sweep get every frame of it; the others get the original, alpha_0 and alpha_1.

    Parameters
    ----------
    run : ExplanationRun
        An explain run.
    index : int
        A cell with a counterfactual.

    Returns
    -------
    (list of float, list of float, list of numpy.ndarray)
        alphas (the original is alpha 0), probabilities of the target, and (C, H, W) images.
    """
    target = run.target
    sweep = next((s for s in run.sweeps if s["index"] == index), None)
    if sweep is not None:
        return [float(a) for a in sweep["alphas"]], [float(p) for p in sweep["probabilities"][:, target]], list(sweep["images"])
    ecinn = run.ecinn
    steps = [(0.0, float(ecinn.probabilities[index, target]), run.originals[index])]
    steps += [(float(ecinn.alphas[k][index]), float(ecinn.probabilities_at[k][index, target]), run.ecinn_raw[k][index]) for k in ("alpha0", "alpha1")]
    steps.sort(key=lambda step: step[0])
    return [s[0] for s in steps], [s[1] for s in steps], [s[2] for s in steps]


def counterfactual_view(run: ExplanationRun, max_cells: int = MAX_CELLS, seed: int = 0) -> View:
    """Cells by p(target) before and after alpha_1; a click opens that cell's alpha slider per channel.

    Parameters
    ----------
    run : ExplanationRun
        An explain run.
    max_cells : int
        Most cells on the page; more are sampled per predicted class in proportion (seeded).
    seed : int
        Seed of that sample.

    Returns
    -------
    View
        Renderer ``counterfactual``; item ids ``cell-{index}``; items hold ``frames`` (alpha, p, tile per step).
    """
    import plotly.graph_objects as go

    ecinn, target = run.ecinn, run.target
    valid = np.flatnonzero(ecinn.valid)
    chosen, rule = sample_rule(ecinn.predicted[valid], max_cells, seed)
    cells = valid[chosen]
    paths = {int(i): counterfactual_frames(run, int(i)) for i in cells}
    channels = len(run.channel_names)
    frame_count = sum(len(alphas) for alphas, _, _ in paths.values())
    side = min(tile_size(frame_count, 2 * channels, largest=96), max(run.originals.shape[-2:]))
    images, changes, items = [], [], {}
    for i, (alphas, probabilities, frames) in paths.items():
        stack = square_tiles(np.stack(frames), side)
        original = square_tiles(run.originals[i][None], side)[0]
        low = np.percentile(stack, 1.0, axis=(0, 2, 3))[None, :, None, None]
        high = np.percentile(stack, 99.5, axis=(0, 2, 3))[None, :, None, None]
        change = stack - original[None]
        reach = np.maximum(np.abs(change).max(axis=(0, 2, 3)), 1e-12)[None, :, None, None]
        first = len(images)
        images.append(to_uint8(stack, low, high))
        changes.append(to_uint8(change, -reach, reach))
        items[f"cell-{i}"] = {
            "label": f"{run.sources[i]}: {run.class_names[ecinn.predicted[i]]} -> {run.class_names[target]}",
            "tile": first,  # the original, shown on hover
            "frames": [{"alpha": round(a, 4), "p": round(p, 4), "tile": first + k} for k, (a, p) in enumerate(zip(alphas, probabilities))],
            "alpha1": round(float(ecinn.alphas["alpha1"][i]), 4),
            "reach": np.round(reach.ravel(), 4).tolist(),
        }
    tiles = np.concatenate(images) if images else np.zeros((0, channels, side, side), np.uint8)
    differences = np.concatenate(changes) if changes else tiles
    sheets = {f"cf{c}": SpriteSheet(tiles[:, c]) for c in range(channels)}
    sheets.update({f"cfd{c}": SpriteSheet(differences[:, c]) for c in range(channels)})
    figure = go.Figure()
    colours = class_colors(len(run.class_names))
    for k, name in enumerate(run.class_names):
        members = cells[ecinn.predicted[cells] == k]
        if not len(members):
            continue
        figure.add_trace(
            go.Scatter(
                x=ecinn.probabilities[members, target],
                y=ecinn.probabilities_at["alpha1"][members, target],
                customdata=[f"cell-{i}" for i in members],
                mode="markers",
                name=f"predicted {plotly_text(name)}",
                marker={"color": colours[k], "size": 9, "line": {"width": 0.5, "color": "#333"}},
                hovertemplate="p before %{x:.2f}, after %{y:.2f}<extra></extra>",
            )
        )
    # The diagonal (no change) over the data's own span, so that the axes zoom onto the cells.
    shown = np.concatenate([ecinn.probabilities[cells, target], ecinn.probabilities_at["alpha1"][cells, target]]) if len(cells) else np.zeros(1)
    span = [float(shown.min()), float(shown.max())]
    figure.add_trace(go.Scatter(x=span, y=span, mode="lines", line={"dash": "dash", "color": "#555"}, hoverinfo="skip", showlegend=False))
    target_name = plotly_text(run.class_names[target])
    figure.update_layout(
        title={"text": f"Each cell's probability of {target_name}: original against alpha_1 (click a cell)"},
        xaxis={"title": {"text": f"p({target_name}), original"}},
        yaxis={"title": {"text": f"p({target_name}) at alpha_1"}},
    )
    notes = [
        f"{len(cells):,} cells with a counterfactual towards {run.class_names[target]}; the slider steps along x_hat = f^-1(z + alpha Delta) "
        "(every sweep frame for the cells with a sweep; otherwise the original, alpha_0 and alpha_1). Each channel keeps one contrast along the "
        "path; the difference map is the step minus the original (purple less, orange more, scaled to the cell's largest change)."
    ]
    if rule:
        notes.append(rule)
    data = {"channels": list(run.channel_names), "target": run.class_names[target], "diverging": colormap_table(DIVERGING)}
    return View("Counterfactual paths", "counterfactual", [ExplorerFigure("cells", figure, 520)], items, data, sheets, notes, hover_sheet="cf0")
