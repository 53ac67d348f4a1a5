"""The profiling explorer view: the treatment map (t-SNE of each treatment's consensus anomaly profile) coloured by
MoA or hit status; clicking a treatment shows its replicate wells and their correlations, its most anomalous
features and (for the explained treatment) the SHAP bars; the hits table sorts and filters
(renderer ``templates/explorer_profiling.js.j2``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from phenolens.profiling.moa import treatment_profiles
from phenolens.report.explorer.images import embedding_points, group_colours, map_figure
from phenolens.report.explorer.sprites import sample_rule
from phenolens.report.explorer.view import ExplorerFigure, View
from phenolens.report.figures import OKABE_ITO
from phenolens.report.headings import heading

MAX_TREATMENTS = 5000
"""Most treatments on the map; larger screens are sampled per MoA (seeded) and the page says so."""

MAX_WELLS = 24
"""Most replicate wells listed and correlated per treatment (the first ones in table order)."""

TOP_FEATURES = 10
"""Features listed as a treatment's most anomalous."""


def well_names(wells: pd.DataFrame, plate: str) -> np.ndarray:
    """A readable name per well: plate and well (``Metadata_Well``) when known, else the row label.

    Parameters
    ----------
    wells : pandas.DataFrame
        Well rows.
    plate : str
        The plate column.

    Returns
    -------
    numpy.ndarray
        (wells,) names.
    """
    plates = wells[plate].astype(str).to_numpy() if plate in wells else np.full(len(wells), "")
    places = wells["Metadata_Well"].astype(str).to_numpy() if "Metadata_Well" in wells else wells.index.astype(str).to_numpy()
    return np.asarray([f"{p} {w}".strip() for p, w in zip(plates, places)], dtype=object)


def shap_bars(explanations: Sequence, top: int = 8) -> list[dict]:
    """Mean |SHAP| of the inputs of each explained feature, largest first.

    Parameters
    ----------
    explanations : sequence of FeatureExplanation
        Anomaly SHAP of one treatment.
    top : int
        Inputs kept per explained feature.

    Returns
    -------
    list of dict
        ``{"feature", "inputs", "values"}`` per explained feature.
    """
    bars = []
    for explanation in explanations:
        strength = np.abs(explanation.shap_values).mean(axis=0)
        order = np.argsort(strength)[::-1][:top]
        bars.append({"feature": explanation.feature, "inputs": [explanation.input_names[i] for i in order], "values": np.round(strength[order], 4)})
    return bars


def profiling_view(
    anomaly: pd.DataFrame,
    features: Sequence[str],
    treated: np.ndarray,
    treatment: str,
    plate: str,
    hits: pd.DataFrame,
    moa: str | None = None,
    replicates: pd.DataFrame | None = None,
    explanations: Sequence = (),
    explained_group: str | None = None,
    title: str = "Treatments",
    max_treatments: int = MAX_TREATMENTS,
    seed: int = 0,
    consensus: str = "mean",
    replicate_values: np.ndarray | None = None,
    replicate_normalization: str = "none",
) -> View:
    """The profiling explorer view of a run's anomaly representation.

    Parameters
    ----------
    anomaly : pandas.DataFrame
        Well-level anomaly profiles (Metadata_* columns and features).
    features : sequence of str
        Its feature columns.
    treated : numpy.ndarray
        (wells,) bool: the treated (non-control) wells.
    treatment, plate : str
        The treatment and plate columns.
    hits : pandas.DataFrame
        Hit calls indexed by treatment: score, n_wells, p_value, q_value, hit.
    moa : str, optional
        The MoA column (colours the map).
    replicates : pandas.DataFrame, optional
        Per treatment: n_replicates, replicate_correlation, reproducible.
    explanations : sequence of FeatureExplanation
        Anomaly SHAP of `explained_group`.
    explained_group : str, optional
        The treatment the SHAP values explain.
    title : str
        Heading of the view.
    max_treatments : int
        Most treatments shown; more are sampled per MoA in proportion (seeded) and the page says so.
    seed : int
        Seed of the sample and of t-SNE.
    consensus : str
        How the map's treatment profiles combine their replicate wells: mean, median or modz (`treatment_profiles`).
    replicate_values : numpy.ndarray, optional
        (wells, features) the values of `anomaly`'s rows in the space "replicate correlation" is measured in
        (`phenolens.profiling.evaluate.replicate_space`); the correlation heatmap is drawn in it, so its median
        off-diagonal is that fact (for up to `MAX_WELLS` wells). Default: `anomaly`'s own values.
    replicate_normalization : str
        How `replicate_values` were normalised (``whole_plate`` or ``none``), named in the heatmap's title.

    Returns
    -------
    View
        Renderer ``profiling``; items hold ``moa``, ``facts``, ``wells``, ``correlations``, ``top_features``, ``shap``.
    """
    treated = np.asarray(treated, bool)
    wells = anomaly.loc[treated]
    values = wells[list(features)].to_numpy(np.float64)
    correlated = values if replicate_values is None else np.asarray(replicate_values, np.float64)[treated]
    names = wells[treatment].astype(str).to_numpy()
    order = np.unique(names)
    moas = wells.groupby(wells[treatment].astype(str))[moa].first().reindex(order).astype(str).to_numpy() if moa else np.full(len(order), "")
    kept, rule = sample_rule(moas, max_treatments, seed)
    order, moas = order[kept], moas[kept]
    codes = {name: index for index, name in enumerate(order)}
    member = np.asarray([codes.get(name, -1) for name in names])
    shown_wells = member >= 0
    profiles = treatment_profiles(values[shown_wells], member[shown_wells], consensus).to_numpy()  # row i: treatment order[i]
    hit_table = hits.set_axis(hits.index.astype(str)).reindex(order)
    replicate_table = replicates.set_axis(replicates.index.astype(str)).reindex(order) if replicates is not None else None
    labels = well_names(wells, plate)
    items = {}
    for index, name in enumerate(order):
        rows = np.flatnonzero(member == index)
        shown = rows[:MAX_WELLS]
        block = correlated[shown]
        centred = block - block.mean(axis=1, keepdims=True)
        norms = np.linalg.norm(centred, axis=1)
        correlation = (centred @ centred.T) / np.maximum(np.outer(norms, norms), 1e-12)
        mean_abs = np.abs(values[rows]).mean(axis=0)
        top = np.argsort(mean_abs)[::-1][:TOP_FEATURES]
        facts = {"wells": int(len(rows))}
        if moa:
            facts["MoA"] = moas[index]
        hit = hit_table.loc[name]
        if not pd.isna(hit.get("score")):
            facts.update({"anomaly score": float(hit["score"]), "q-value": float(hit["q_value"]), "hit": bool(hit["hit"])})
        if replicate_table is not None and not pd.isna(replicate_table.loc[name].get("replicate_correlation")):
            facts["replicate correlation"] = float(replicate_table.loc[name, "replicate_correlation"])
            facts["reproducible"] = bool(replicate_table.loc[name, "reproducible"])
        items[name] = {
            "label": f"{name} ({moas[index]})" if moa else name,
            "facts": facts,
            "wells": [{"well": labels[r], "anomaly score": float(np.mean(values[r] ** 2))} for r in shown],
            "correlations": np.round(np.nan_to_num(correlation), 3),
            # ranked and drawn by mean |z| (a feature whose sign varies between the wells is anomalous in each), signed mean on hover
            "top_features": {
                "names": [features[i] for i in top],
                "values": np.round(mean_abs[top], 3),
                "signed": np.round(values[rows][:, top].mean(axis=0), 3),
            },
            "shap": shap_bars(explanations) if explained_group is not None and name == str(explained_group) else [],
        }
    hit_codes = np.where(hit_table["hit"].fillna(False).to_numpy(bool), 0, 1)
    colourings = {}
    if moa:
        moa_names = list(np.unique(moas))
        colourings["MoA"] = (np.searchsorted(moa_names, moas), moa_names, group_colours(len(moa_names)))
    colourings["hit status"] = (hit_codes, ["hit", "not a hit"], [OKABE_ITO[5], "#999999"])
    points = embedding_points(profiles, seed) if len(order) >= 2 else np.zeros((len(order), 2))
    figure = map_figure(points, list(order), colourings)
    table = hit_table.reset_index(names="treatment").rename(columns=heading)  # hits.csv keeps the machine names
    if moa:
        table.insert(1, "MoA", moas)
    rows = [{"__id": row["treatment"], **row} for row in table.to_dict("records")]
    notes = [
        f"{len(order):,} treatments on the t-SNE of each treatment's {consensus} anomaly profile (treated wells, --consensus); "
        "the hits table below the map sorts (click a header) and filters; click a row or a point for details."
    ]
    if rule:
        notes.append(rule.replace("items", "treatments").replace("each group", "each MoA"))
    space = "whole-plate normalised" if replicate_normalization == "whole_plate" else "not normalised"
    data = {
        "hits": rows,
        "hit_columns": list(table.columns),
        "explained": None if explained_group is None else str(explained_group),
        # the space "replicate correlation" is measured in (--replicate-normalization): the heatmap's median is that fact
        "correlation_title": f"Pearson r of replicate anomaly profiles, {space} (as replicate correlation)",
    }
    return View(title, "profiling", [ExplorerFigure("map", figure, 520)], items, data, notes=notes)
