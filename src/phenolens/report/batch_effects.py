"""Report section on batch effects: wells mapped in 2-D and coloured by batch, before and after correction, and a per-batch table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from phenolens.data.query import select_rows
from phenolens.profiling.batch_effects import batch_effects
from phenolens.profiling.evaluate import features_of, is_concatenation
from phenolens.profiling.replicates import row_standardize
from phenolens.report.explorer.images import embedding_points
from phenolens.report.figures import class_styles, figure, natural_order
from phenolens.report.html import Section

TREATED_GREY = "0.82"
"""Treated wells are drawn in light grey behind the controls: they cluster by compound, which would hide the batch."""


def batch_map_figure(maps: dict[str, np.ndarray], batches: np.ndarray, is_control: np.ndarray, titles: dict[str, str] | None = None):
    """One t-SNE panel per representation: control wells coloured and shaped by batch over the treated wells in grey.

    Control wells are biologically alike, so controls of one batch gathering in their own island are the
    batch effect; treated wells gather by compound (and a compound is often screened in one batch), so they
    are drawn in grey. Batches are listed in natural order (Week2 before Week10) in one legend beside the panels.

    Parameters
    ----------
    maps : dict of str to numpy.ndarray
        Representation -> (wells, 2) coordinates.
    batches : numpy.ndarray
        Batch of every well.
    is_control : numpy.ndarray
        Control mask.
    titles : dict of str to str, optional
        Panel title per representation (default: its name).

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    names = list(maps)
    titles = titles or {}
    batches = np.asarray(batches).astype(str)
    is_control = np.asarray(is_control, dtype=bool)
    ncols = min(3, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = figure(width=4.2 * ncols, height=4.0 * nrows, nrows=nrows, ncols=ncols, squeeze=False)
    levels = natural_order(batches[is_control])
    styles = dict(zip(levels, class_styles(len(levels))))
    for axis, name in zip(axes.flat, names):
        points = maps[name]
        axis.scatter(*points[~is_control].T, s=6, color=TREATED_GREY, marker="o", linewidths=0, label="treated wells (any batch)")
        for level in levels:
            colour, marker = styles[level]
            axis.scatter(*points[is_control & (batches == level)].T, s=16, color=colour, marker=marker, linewidths=0, alpha=0.9, label=level)
        axis.set_title(titles.get(name, name), fontsize=10)
        axis.set(xlabel="t-SNE 1 (a.u.)", ylabel="t-SNE 2 (a.u.)", xticks=[], yticks=[])
    for axis in list(axes.flat)[len(names) :]:
        axis.axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        title="control wells by batch",
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        fontsize=8,
        markerscale=1.4,
        ncol=1 + len(labels) // 24,
    )
    fig.tight_layout()
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
        Text and the map, with the neighbour tables (overall and per batch) in a subsection under it.
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
    table = batch_effects(representations, settings)
    overall = table[table["batch"] == "all"].drop(columns=["batch"]).set_index("representation")
    titles = {
        name: f"{name}\nsame-batch neighbour {overall.loc[name, 'same_batch_neighbour']:.2f} (chance {overall.loc[name, 'chance']:.2f})"
        for name in shown
    }
    maps = {
        name: embedding_points(row_standardize(frame[features_of(frame, settings)].to_numpy(np.float64)), settings.seed, "cosine")
        for name, frame in shown.items()
    }
    section.figure(
        batch_map_figure(maps, batches, is_control, titles),
        "t-SNE of every well (correlation distance): control wells coloured and shaped by batch, treated wells in grey. "
        "Controls of one batch gathering in their own island are a batch effect; a correction should mix them. "
        "Panel titles: the share of controls whose nearest control on another plate is in their own batch, and its chance level.",
        f"{prefix}_batch_maps.png",
    )
    per_batch = table[table["batch"] != "all"]
    wide = per_batch.pivot(index="batch", columns="representation", values="same_batch_neighbour")
    counts = per_batch.drop_duplicates("batch").set_index("batch")[["plates", "control_wells", "chance"]]
    by_batch = counts.join(wide[list(shown) + [c for c in wide.columns if c not in shown]]).reindex(natural_order(per_batch["batch"]))
    numbers = Section("Same-batch nearest neighbours of control wells")
    numbers.table(
        overall,
        "Share of control wells whose nearest control on another plate (Pearson) is in their own batch, against chance: "
        "closer to chance means less batch in the representation.",
        float_format="{:.3f}",
    )
    caption = "Per batch: plates, control wells, chance and the same-batch neighbour share of every representation."
    numbers.table(by_batch, caption, float_format="{:.3f}")
    section.add(numbers)
    return section
