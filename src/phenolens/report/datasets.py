"""Dataset summaries: counts, montages and distributions, as a report section plus a JSON summary."""

from __future__ import annotations

import numpy as np
import pandas as pd

from phenolens.core.seeding import numpy_rng
from phenolens.data.containers import ImageSet, SignalSet
from phenolens.data.loaders import describe
from phenolens.data.readers import feature_columns
from phenolens.data.registry import registry
from phenolens.report.figures import class_colors, figure, montage_figure
from phenolens.report.html import Section

PROFILE_GROUPS = ("Metadata_Plate", "Metadata_Batch", "Metadata_PertType", "Metadata_pert_type", "Metadata_MoA", "Metadata_moa")
TREATMENT_COLUMNS = ("Metadata_Treatment", "Metadata_broad_sample", "Metadata_Compound")


def summarize(data, name: str, seed: int = 0, per_class: int = 6) -> tuple[dict, Section]:
    """Summarise a loaded dataset: a JSON-ready dict and a report section with figures.

    For a registered dataset `name`, the registry facts (source, licence, citation) are added.

    Parameters
    ----------
    data : ImageSet, pandas.DataFrame or SignalSet
        What `phenolens.data.load` or a reader returned.
    name : str
        The dataset's name (a registry name adds its facts).
    seed : int
        Seed of the example images or wells drawn for the figures.
    per_class : int
        Example images per class in the montage.

    Returns
    -------
    summary : dict
        Counts (per class, plate, treatment or signal), sizes and types, as JSON-ready values;
        ``registry`` holds the registry facts of a registered dataset.
    section : Section
        The report section with tables and figures.

    Raises
    ------
    TypeError
        For any other type of `data`.
    """
    if isinstance(data, ImageSet):
        summary, section = _summarize_images(data, name, seed, per_class)
    elif isinstance(data, pd.DataFrame):
        summary, section = _summarize_profiles(data, name, seed)
    elif isinstance(data, SignalSet):
        summary, section = _summarize_signals(data, name)
    else:
        raise TypeError(f"cannot summarise {type(data).__name__}")
    if name in registry():
        facts = describe(name)
        summary["registry"] = facts
        section.text(f"Source: {facts['source']}. Licence: {facts['licence']}. Cite: {facts['citation']}")
    return summary, section


def _summarize_images(images: ImageSet, name: str, seed: int, per_class: int) -> tuple[dict, Section]:
    counts = images.class_counts()
    shapes = images.shapes()
    summary = {
        "kind": "images",
        "n_images": len(images),
        "channels": images.channel_names,
        "class_counts": counts,
        "height": {"min": int(shapes[:, 0].min()), "max": int(shapes[:, 0].max())},
        "width": {"min": int(shapes[:, 1].min()), "max": int(shapes[:, 1].max())},
        "dtype": str(images.images[0].dtype),
    }
    section = Section(f"{name}: {len(images):,} images, {images.n_channels} channel(s)")
    section.text(
        f"Channels: {', '.join(images.channel_names)}. Image size {summary['height']['min']}-{summary['height']['max']} x "
        f"{summary['width']['min']}-{summary['width']['max']} px, {summary['dtype']}."
    )
    fig, axis = figure(width=max(5.0, 0.45 * len(counts) + 2), height=3.6)
    axis.bar(range(len(counts)), list(counts.values()), color=class_colors(len(counts)))
    axis.set_xticks(range(len(counts)), list(counts.keys()), rotation=45 if len(counts) > 4 else 0, ha="right" if len(counts) > 4 else "center")
    axis.set_ylabel("images (count)")
    axis.set_title("Images per class")
    section.figure(fig, f"Images per class in {name}.", filename=f"{name}_class_counts.png")
    rng = numpy_rng(seed)
    names = images.label_names()
    rows = []
    for label in counts:
        members = np.flatnonzero(names == label)
        chosen = rng.choice(members, size=min(per_class, len(members)), replace=False)
        rows.append((f"{label} (n={len(members)})", [images.images[i] for i in chosen]))
    montage = montage_figure(rows, images.channel_names, title=f"{name}: random images per class, one panel per channel")
    caption = (
        "Random images per class; each channel in its own grey panel, with one contrast range per channel "
        "(1st-99.5th percentile over the shown images), so brightness compares across images."
    )
    section.figure(montage, caption, filename=f"{name}_montage.png")
    return summary, section


def _summarize_profiles(table: pd.DataFrame, name: str, seed: int) -> tuple[dict, Section]:
    features = feature_columns(table)
    summary: dict = {"kind": "profiles", "n_wells": len(table), "n_features": len(features)}
    for column in PROFILE_GROUPS:
        if column in table:
            summary[f"counts_by_{column.removeprefix('Metadata_')}"] = {str(k): int(v) for k, v in table[column].value_counts().sort_index().items()}
    treatment = next((c for c in TREATMENT_COLUMNS if c in table), None)
    if treatment:
        summary["n_treatments"] = int(table[treatment].nunique())
    pert = next((c for c in ("Metadata_PertType", "Metadata_pert_type") if c in table), None)
    section = Section(f"{name}: {len(table):,} wells x {len(features):,} features")
    section.text(", ".join(f"{k.removeprefix('counts_by_')}: {len(v)} groups" for k, v in summary.items() if k.startswith("counts_by_")))
    values = table[features].to_numpy(dtype=np.float64)
    finite = np.isfinite(values)
    summary["non_finite_values"] = int((~finite).sum())
    groups = table[pert].astype(str) if pert else pd.Series(["all"] * len(table))
    is_control = (groups == "control").to_numpy() if pert else None
    by_controls = is_control is not None and is_control.any() and (~is_control).any()  # else `_rank_features` ranks by spread
    order = _rank_features(values, is_control)
    picks = [features[i] for i in order[:6] if finite[:, i].any()]  # a feature without finite values has nothing to draw
    fig, axes = figure(width=10, height=5.2, nrows=2, ncols=3)
    palette = class_colors(max(2, groups.nunique()))
    for axis, feature in zip(axes.ravel(), picks):
        shown_range = tuple(np.nanpercentile(table[feature].replace([np.inf, -np.inf], np.nan), [0.5, 99.5]))
        for color, group in zip(palette, sorted(groups.unique())):
            data = table.loc[groups == group, feature].replace([np.inf, -np.inf], np.nan).dropna()
            axis.hist(data, bins=30, range=shown_range, alpha=0.6, color=color, label=group, density=True)
        axis.set_title(feature if len(feature) <= 38 else feature[:35] + "...", fontsize=8)
        axis.set_xlabel("feature value (file units)", fontsize=8)
        axis.set_ylabel("density", fontsize=8)
    axes.ravel()[0].legend(fontsize=8)
    fig.suptitle(f"{name}: the six features that differ most between {'treated and control wells' if by_controls else 'wells'}")
    fig.tight_layout()
    section.figure(
        fig,
        "Distributions of the six features with the largest robust difference between treated and control wells "
        "(|median difference| / control MAD; coefficient of variation when there are no controls), 0.5-99.5th percentile range.",
        filename=f"{name}_features.png",
    )
    # A profile "montage": wells (rows, grouped) x features (columns), z-scored per feature.
    rng = numpy_rng(seed)
    group_column = next((c for c in ("Metadata_MoA", "Metadata_moa", "Metadata_Plate") if c in table), None)
    if group_column:
        labels = table[group_column].fillna("none").astype(str)
        kept = [g for g in labels.value_counts().index[:12]]
        rows = np.concatenate([rng.choice(np.flatnonzero(labels == g), size=min(8, int((labels == g).sum())), replace=False) for g in kept])
    else:
        kept, rows = [], rng.choice(len(table), size=min(96, len(table)), replace=False)
    block = values[rows][:, order[: min(200, len(order))]]
    block = np.where(np.isfinite(block), block, 0.0)  # missing and infinite values are drawn as 0 (not as +-1.8e308)
    block = (block - block.mean(0)) / (block.std(0) + 1e-9)
    fig, axis = figure(width=10, height=5)
    image = axis.imshow(np.clip(block, -3, 3), aspect="auto", cmap="RdBu_r", vmin=-3, vmax=3, interpolation="nearest")
    axis.set_xlabel("feature (the 200 that differ most, ranked)")
    axis.set_ylabel(f"well, grouped by {group_column or 'random'}")
    if group_column:
        sizes = [min(8, int((labels == g).sum())) for g in kept]
        axis.set_yticks(np.cumsum(sizes) - np.array(sizes) / 2 - 0.5, kept, fontsize=7)
    fig.colorbar(image, ax=axis, label="z-score within shown wells")
    axis.set_title(f"{name}: profile montage")
    section.figure(fig, "Profile montage: sampled wells x features, z-scored per feature (blue low, red high).", filename=f"{name}_montage.png")
    return summary, section


def _rank_features(values: np.ndarray, is_control: np.ndarray | None) -> np.ndarray:
    """Feature indices, most informative first: robust treated-vs-control effect size when controls
    exist (unit-free, unlike raw spread), else the robust coefficient of variation."""
    values = np.where(np.isfinite(values), values, np.nan)
    score = np.full(values.shape[1], -1.0)  # a feature without finite values in a group has no score: it ranks last
    if is_control is not None and is_control.any() and (~is_control).any():
        control, treated = values[is_control], values[~is_control]
        usable = ~np.isnan(control).all(0) & ~np.isnan(treated).all(0)
        control, treated = control[:, usable], treated[:, usable]
        centre = np.nanmedian(control, 0)
        scale = np.nanmedian(np.abs(control - centre), 0) + 1e-12
        score[usable] = np.abs(np.nanmedian(treated, 0) - centre) / scale
    else:
        usable = ~np.isnan(values).all(0)
        kept = values[:, usable]
        score[usable] = np.nanstd(kept, 0) / (np.abs(np.nanmean(kept, 0)) + 1e-12)
    return np.argsort(-score)


def _summarize_signals(signals: SignalSet, name: str) -> tuple[dict, Section]:
    summary = {
        "kind": "signals",
        "n_signals": len(signals),
        "signals": {s.name: {"samples": int(s.values.size), "params": s.params} for s in signals.signals},
    }
    section = Section(f"{name}: {len(signals)} A-scans")
    fig, axes = figure(width=9, height=1.7 * len(signals), nrows=len(signals), ncols=1, squeeze=False)
    for axis, signal in zip(axes[:, 0], signals.signals):
        axis.plot(signal.values, lw=0.8, color="#0072B2")
        axis.set_title(signal.name, fontsize=9)
        axis.set_ylabel("amplitude (a.u.)", fontsize=8)
    axes[-1, 0].set_xlabel("sample index")
    fig.tight_layout()
    section.figure(fig, "Every A-scan of the dataset (montage of signals).", filename=f"{name}_montage.png")
    return summary, section


__all__ = ["summarize"]
