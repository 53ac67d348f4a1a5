"""Figures and the report section of an `Explanation`: overlays, galleries, channel importance,
faithfulness curves, nucleus-mass and sanity tables, and plain-language warnings."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import numpy as np
import pandas as pd

from phenolens.explain.attribution import is_spatial_only, method_title
from phenolens.explain.faithfulness import spread_curves
from phenolens.report.explorer.images import images_view
from phenolens.report.figures import OKABE_ITO, bare, channel_limits, display_range, figure
from phenolens.report.html import Section

COLUMN_TITLE_CHARACTERS = 12
"""Characters per line of a column title of the overlay figure (a 1.1-inch column at 7 pt holds about 15)."""


def overlay_figure(explanation, rows: Sequence[tuple[str, int]], methods: Sequence[str], title: str):
    """One row per (label, image index): each channel in grey, then each method's map of each
    channel (one map for Grad-CAM) in red (positive) / blue (negative), nucleus outline in yellow.

    Parameters
    ----------
    explanation : Explanation
        The maps and images.
    rows : sequence of (str, int)
        Row label and image index.
    methods : sequence of str
        The methods to draw.
    title : str
        Figure title.

    Returns
    -------
    Figure
        A matplotlib figure.
    """
    raw, names = explanation.raw, explanation.channel_names
    limits = channel_limits([raw[i] for _, i in rows], len(names))
    columns = [("image", c, None) for c in range(len(names))]
    for method in methods:
        channels = [0] if is_spatial_only(method) else range(len(names))
        columns += [("map", c, method) for c in channels]
    fig, axes = figure(1.1 * len(columns) + 1.6, 1.15 * len(rows) + 0.8, nrows=len(rows), ncols=len(columns), squeeze=False)
    for r, (label, index) in enumerate(rows):
        for k, (kind, channel, method) in enumerate(columns):
            axis = axes[r, k]
            bare(axis)
            if kind == "image":
                axis.imshow(display_range(raw[index, channel], limits[channel]), cmap="gray", vmin=0, vmax=1)
                heading = names[channel]
            else:
                values = explanation.maps[method][index, channel]
                bound = float(np.abs(values).max()) or 1.0
                axis.imshow(values, cmap="RdBu_r", vmin=-bound, vmax=bound)
                # wrapped, so that long method names ("Integrated gradients") do not run into the next column's title
                heading = textwrap.fill(method_title(method), COLUMN_TITLE_CHARACTERS) + ("" if is_spatial_only(method) else f"\n{names[channel]}")
            if explanation.nucleus_masks is not None:
                axis.contour(explanation.nucleus_masks[index], levels=[0.5], colors=[OKABE_ITO[3]], linewidths=0.6)
            if r == 0:
                axis.set_title(heading, fontsize=7)
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()  # no band of white between the title and the first row
    return fig


def gallery_rows(explanation, per_class: int = 2) -> list[tuple[str, int]]:
    """Most and least confident correctly classified images of each class.

    Parameters
    ----------
    explanation : Explanation
        The explanation.
    per_class : int
        Images per class (half most, half least confident).

    Returns
    -------
    list of (str, int)
        Row label and image index.
    """
    rows = []
    confidence = explanation.proba[np.arange(len(explanation.proba)), explanation.targets]
    labels = explanation.summary_labels()
    for k, name in enumerate(explanation.class_names):
        chosen = np.flatnonzero(explanation.correct & (labels == k))
        if len(chosen) == 0:
            continue
        ranked = chosen[np.argsort(-confidence[chosen])]
        picks = list(ranked[:per_class]) + [i for i in ranked[::-1][:per_class] if i not in ranked[:per_class]]
        rows += [(f"{name}\np={confidence[i]:.2f}", int(i)) for i in picks]
    return rows


def channel_importance_figure(table: pd.DataFrame, ylabel: str, title: str):
    """Grouped bars: one group per class, one bar per channel.

    Parameters
    ----------
    table : DataFrame
        Class x channel values.
    ylabel, title : str
        Axis label and title.

    Returns
    -------
    Figure
        A matplotlib figure.
    """
    fig, axis = figure(max(5.0, 1.2 * len(table) + 2), 3.6)
    width = 0.8 / max(len(table.columns), 1)
    positions = np.arange(len(table))
    for c, channel in enumerate(table.columns):
        axis.bar(positions + c * width - 0.4 + width / 2, table[channel].to_numpy(), width, label=channel, color=OKABE_ITO[c % len(OKABE_ITO)])
    axis.axhline(0, color="0.3", linewidth=0.8)
    axis.set_xticks(positions, table.index, rotation=30 if len(table) > 4 else 0)
    axis.set(ylabel=ylabel, title=title)
    axis.legend(fontsize=8)
    return fig


def faithfulness_figure(faithfulness: dict):
    """Mean deletion and insertion curves of every method.

    Parameters
    ----------
    faithfulness : dict
        Method -> `deletion_insertion` result.

    Returns
    -------
    Figure
        A matplotlib figure.
    """
    fig, (deletion, insertion) = figure(10.0, 3.8, ncols=2)
    for method, result in faithfulness.items():
        for axis, kind in ((deletion, "deletion"), (insertion, "insertion")):
            label = f"{method_title(method)} (AUC {np.mean(result[f'{kind}_auc']):.2f})"
            axis.plot(result["fractions"], result[f"{kind}_curves"].mean(axis=0), label=label)
    deletion.set(xlabel="fraction of pixels removed (most attributed first)", ylabel="target probability", title="Deletion: lower is better")
    insertion.set(xlabel="fraction of pixels inserted (most attributed first)", ylabel="target probability", title="Insertion: higher is better")
    deletion.legend(fontsize=7)
    insertion.legend(fontsize=7)
    return fig


def absence_warnings(occlusion: pd.DataFrame, share: float = 0.1) -> list[str]:
    """Sentences for classes where replacing a channel by its mean barely lowers, or even raises, the logit.

    Parameters
    ----------
    occlusion : DataFrame
        Class x channel logit drops.
    share : float
        A drop below this share of the class's largest drop counts as "barely".

    Returns
    -------
    list of str
        One warning per such class and channel.
    """
    notes = []
    for cls, row in occlusion.iterrows():
        top = row.max()
        for channel, value in row.items():
            if top <= 0 or value >= share * top:
                continue
            effect = f"raises the {cls} logit by {-value:.2f}" if value < 0 else f"lowers the {cls} logit by only {value:.2f}"
            notes.append(
                f"{cls}: replacing {channel} by its training mean {effect} (largest drop: {top:.2f}). If {cls} is recognised by the absence "
                f"of {channel} signal, neither occlusion to the mean nor gradient attribution can credit {channel}: the mean adds signal."
            )
    return notes


def checked_curves(explanation) -> dict | None:
    """Deletion/insertion curves per image for the explorer: NaN rows for images outside the faithfulness sample.

    Parameters
    ----------
    explanation : Explanation
        An explanation whose ``checked`` mask names the images its ``faithfulness`` curves belong to, in order.

    Returns
    -------
    dict or None
        Method -> ``{"fractions", "deletion_curves", "insertion_curves"}`` with one row per image; None when the
        explanation does not say which images were checked (a streamed screen's gallery).
    """
    if explanation.checked is None or not explanation.faithfulness:
        return None
    rows = np.full(len(explanation.checked), np.nan)
    rows[explanation.checked] = np.arange(int(explanation.checked.sum()))
    return spread_curves(explanation.faithfulness, rows)


def explanation_section(
    explanation,
    title: str = "Explanations",
    features: np.ndarray | None = None,
    ids: list[str] | None = None,
    metrics: dict | None = None,
    tables: dict | None = None,
    curves: dict | None = None,
) -> Section:
    """The report section of an `Explanation`.

    Parameters
    ----------
    explanation : Explanation
        The explanation (for a streamed screen: the gallery's images and the checks' sample).
    title : str
        Section title.
    features : ndarray, optional
        (N, D) penultimate features of the explained images: adds the explorer's cell map (each cell's channels,
        maps, probabilities and, for the checked images, deletion/insertion curves).
    ids : list of str, optional
        Ids of the explained images in the explorer (default ``#0``, ``#1``, ...).
    metrics : dict, optional
        The metrics to show (default: ``explanation.metrics()``; a streamed screen passes those of all its images).
    tables : dict, optional
        The class x channel tables (default: ``explanation.channel_tables()``).
    curves : dict, optional
        Per method, each image's deletion/insertion curves for the explorer (NaN rows: none); default from the
        explanation's own checked images (`checked_curves`).

    Returns
    -------
    Section
        Text, gallery, channel importance, faithfulness and sanity figures and tables.
    """
    metrics = explanation.metrics() if metrics is None else metrics
    methods = list(explanation.maps)
    section = Section(title)
    n_images, n_correct = metrics["n_images"], metrics["n_correct"]
    # with no correctly classified image the class x channel tables average every image (`Explanation.channel_tables`)
    averaged = "correctly classified images"
    if not n_correct:
        averaged = f"all {n_images} images (none correctly classified; an unlabelled one under its prediction)"
    section.text(
        f"{n_images} images explained ({n_correct} correctly classified, "
        + ("used for the per-class summaries); " if n_correct else f"so the per-class summaries use all {n_images} images); ")
        + f"target: {explanation.settings['target']}; baseline for occlusion, IG and deletion/insertion: {explanation.settings['baseline']}"
        + (f"; {explanation.settings['explained_by']}." if "explained_by" in explanation.settings else ".")
    )
    if "checks_sample" in metrics:
        section.text(f"Faithfulness and the randomisation check: {metrics['checks_sample']}.")
    if features is not None and len(features) >= 2:
        shown, explained = len(explanation.raw), metrics["n_images"]
        view_title = "Explained cells"
        if shown < explained:  # a streamed screen keeps only the gallery's images in memory
            view_title += f": the gallery's {shown} of the {explained} (most and least confident correct images per class; maps.zarr holds every map)"
        section.view(
            images_view(
                explanation.raw, explanation.channel_names, explanation.class_names, explanation.labels, explanation.proba, features=features,
                ids=ids, maps=explanation.maps, curves=checked_curves(explanation) if curves is None else curves, title=view_title,
            )
        )  # fmt: skip
    tables = explanation.channel_tables() if tables is None else tables
    occlusion = tables["occlusion_logit_drop"]
    section.figure(
        channel_importance_figure(occlusion, "drop in target logit", "Channel occlusion: each channel replaced by its training mean"),
        f"Mean over {averaged} of each class.",
        "channel_occlusion.png",
    )
    section.table(occlusion.rename_axis("class"), f"Channel occlusion (logit drop), class x channel; mean over {averaged}")
    concordance = tables["cam_concordance"].rename_axis("class")
    section.table(concordance, f"CAM concordance ||CAM - channel||, max-normalised (lower: CAM closer to the stain); mean over {averaged}")
    for note in absence_warnings(occlusion):
        section.text(note)
    for method in methods:
        if not is_spatial_only(method):
            caption = f"{method_title(method)}: share of absolute attribution per channel; mean over {averaged}"
            section.table(tables[f"{method}_share"].rename_axis("class"), caption)
    rows = gallery_rows(explanation)
    if rows:
        section.figure(
            overlay_figure(explanation, rows, methods, "Most and least confident correct images per class"),
            "Red: evidence for the target class; blue: against. Yellow outline: nucleus mask (when a DNA channel is given).",
            "gallery.png",
        )
    if explanation.faithfulness:
        section.figure(faithfulness_figure(explanation.faithfulness), "Which explanation to trust on these images.", "faithfulness.png")
    quality = pd.DataFrame(
        {
            "method": [method_title(m) for m in methods],
            "deletion AUC (lower better)": [metrics["faithfulness"].get(m, {}).get("deletion_auc", np.nan) for m in methods],
            "insertion AUC (higher better)": [metrics["faithfulness"].get(m, {}).get("insertion_auc", np.nan) for m in methods],
            "SSIM vs randomised model (lower better)": [metrics["sanity_ssim"].get(m, np.nan) for m in methods],
        }
    )
    if "nucleus_mass_fraction" in metrics:
        for cls in explanation.class_names:
            quality[f"in nucleus: {cls}"] = [metrics["nucleus_mass_fraction"][m].get(cls, np.nan) for m in methods]
        quality["in cell (all classes)"] = [metrics["cell_mass_fraction"][m] for m in methods]
        # None: no image had a cell mask; 0.0 is a real answer (all positive attribution outside the cell)
        outside = [method_title(m) for m in methods if metrics["cell_mass_fraction"][m] is not None and metrics["cell_mass_fraction"][m] < 0.5]
        if outside:
            section.text(f"{', '.join(outside)}: most of the positive attribution lies outside the cell; they do not locate the evidence.")
    reporter = metrics.get("nucleus_reporter_channel")  # resolved (the streamed explanation keeps only the option, often unset)
    caption = "Faithfulness and sanity"
    if reporter:
        caption += f", and positive mass of the reporter channel ({reporter}) inside the nucleus"
    section.table(quality, caption)
    ssims = {m: metrics["sanity_ssim"].get(m) for m in methods}  # None: no image of the check could be decoded (--skip-bad)
    failed = [method_title(m) for m in methods if ssims[m] is not None and ssims[m] > 0.8]
    if failed:
        section.text(f"{', '.join(failed)}: maps of a randomly re-initialised model look alike (SSIM > 0.8): they show the image, not the model.")
    return section
