"""Report section on batch effects: wells mapped in 2-D and coloured by batch, before and after correction, and a per-batch table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from phenolens.data.query import select_rows
from phenolens.profiling.batch_effects import batch_effects
from phenolens.profiling.evaluate import features_of, is_concatenation
from phenolens.profiling.replicates import row_standardize
from phenolens.report.explorer.images import embedding_points
from phenolens.report.figures import class_colors, figure
from phenolens.report.html import Section


def batch_map_figure(maps: dict[str, np.ndarray], batches: np.ndarray, is_control: np.ndarray):
    """One t-SNE panel per representation, wells coloured by batch (controls as crosses).

    Parameters
    ----------
    maps : dict of str to numpy.ndarray
        Representation -> (wells, 2) coordinates.
    batches : numpy.ndarray
        Batch of every well.
    is_control : numpy.ndarray
        Control mask.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    names = list(maps)
    ncols = min(3, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = figure(width=4.2 * ncols, height=3.8 * nrows, nrows=nrows, ncols=ncols, squeeze=False)
    levels = sorted(set(batches))
    colors = dict(zip(levels, class_colors(len(levels))))
    for axis, name in zip(axes.flat, names):
        for level in levels:
            for mask, marker in ((~is_control, "o"), (is_control, "x")):
                rows = (batches == level) & mask
                axis.scatter(*maps[name][rows].T, s=9, marker=marker, color=colors[level], label=level if marker == "o" else None, alpha=0.8)
        axis.set_title(name, fontsize=10)
        axis.set_xticks([])
        axis.set_yticks([])
    for axis in list(axes.flat)[len(names) :]:
        axis.axis("off")
    axes[0][0].legend(fontsize=7, ncol=2, loc="best", markerscale=1.5)
    return fig


def batch_effect_section(representations: dict[str, pd.DataFrame], settings, metrics: dict, prefix: str = "run") -> Section:
    """Batch effects before and after sphering or the adversary: t-SNE maps coloured by batch and the per-batch neighbour table.

    Parameters
    ----------
    representations : dict of str to pandas.DataFrame
        Every representation of the run (the concatenations are left out of the maps).
    settings : ProfilingSettings
        Columns (a batch column is needed) and seed.
    metrics : dict
        The run's metrics (``batch_correction``).
    prefix : str
        Figure file name prefix.

    Returns
    -------
    Section
        Text, figure and tables.
    """
    section = Section("Batch effects: before and after correction")
    correction = metrics.get("batch_correction", {})
    section.text(
        f"Sphering: {correction.get('sphering', {}).get('variant', 'none')}; adversary: {correction.get('adversary', {}).get('domain', 'none')}. "
        f"Hyper-parameters: {correction.get('hyperparameters', '')}."
    )
    adversary = correction.get("adversary", {})
    if "anomaly" in adversary:
        plain, hidden = adversary["anomaly"], adversary["anomaly_adversarial"]
        section.text(
            f"The {adversary['column']} of {adversary['wells']} predicted from the autoencoder's latent code (logistic regression, "
            f"balanced accuracy, chance {plain['chance']:.3f}): {plain['balanced_accuracy']:.3f} without the adversary, "
            f"{hidden['balanced_accuracy']:.3f} with it."
        )
    shown = {name: frame for name, frame in representations.items() if not is_concatenation(name)}
    reference = next(iter(shown.values()))
    batches = reference[settings.batch].astype(str).to_numpy()
    is_control = select_rows(reference, settings.controls, "profiles", "--controls")
    maps = {
        name: embedding_points(row_standardize(frame[features_of(frame, settings)].to_numpy(np.float64)), settings.seed, "cosine")
        for name, frame in shown.items()
    }
    section.figure(
        batch_map_figure(maps, batches, is_control),
        "t-SNE of every well (correlation distance), coloured by batch; crosses are control wells. A batch forming its own island is a batch effect.",
        f"{prefix}_batch_maps.png",
    )
    table = batch_effects(representations, settings)
    overall = table[table["batch"] == "all"].drop(columns=["batch"])
    section.table(
        overall.set_index("representation"),
        "Share of control wells whose nearest control on another plate (Pearson) is in their own batch, against chance: "
        "closer to chance means less batch in the representation.",
    )
    wide = table[table["batch"] != "all"].pivot(index="batch", columns="representation", values="same_batch_neighbour")
    counts = table[table["batch"] != "all"].drop_duplicates("batch").set_index("batch")[["plates", "control_wells", "chance"]]
    section.table(
        counts.join(wide[list(shown) + [c for c in wide.columns if c not in shown]]),
        "Per batch: plates, control wells, chance and the same-batch neighbour share of every representation.",
    )
    return section
