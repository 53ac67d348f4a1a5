"""Explorer views of the echoes pipeline: the simulated layer scan (a B-scan) and real A-scans.

Both open the same detail panel when a point is clicked: the A-scan at that position, zoomable, with
its envelope, each method's detections (stems, height = normalised amplitude) and, in simulation, the
true echoes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from phenolens.echoes.detection import Detections
from phenolens.echoes.pulse import envelope
from phenolens.echoes.real import RealDetection, prepare_real_signal
from phenolens.echoes.thickness import LayerScan
from phenolens.report.explorer.view import ExplorerFigure, View, plotly_text
from phenolens.report.figures import OKABE_ITO

DISPLAY_SAMPLES = 4000
"""Most points drawn per A-scan in the panel; longer scans are reduced to the minimum and maximum of each
bucket of samples, which keeps every peak (the page says so)."""

METHOD_COLOURS = {"uscnn": OKABE_ITO[5], "omp": OKABE_ITO[4], "ista": OKABE_ITO[0], "smp": OKABE_ITO[2], "omp-complex": OKABE_ITO[1]}


SCAN_ROW_LABEL = "scan row (A-scan index)"
SCAN_COLUMN_LABEL = "scan column (A-scan index)"
"""Thickness-map axes: the simulated scan has no pitch (mm per A-scan), so they count A-scans."""


def method_colour(method: str) -> str:
    """The colour of a method (Okabe-Ito, colour-blind safe) in every echoes figure.

    Parameters
    ----------
    method : str
        A method name, possibly with a variant in brackets (``omp[wide]``).

    Returns
    -------
    str
        A hex colour.
    """
    return METHOD_COLOURS.get(method.split("[")[0], OKABE_ITO[7])


def display_trace(values: np.ndarray, fs_mhz: float, limit: int = DISPLAY_SAMPLES) -> dict:
    """An A-scan and its envelope ready to draw: at most `limit` points, every peak kept.

    Parameters
    ----------
    values : numpy.ndarray
        (T,) samples.
    fs_mhz : float
        Sampling rate (MHz); times are in microseconds.
    limit : int
        Most points returned.

    Returns
    -------
    dict
        ``t0`` and ``dt`` (us; point ``i`` lies at ``t0 + i dt``), ``y`` and ``envelope`` (lists rounded to
        4 decimals) and ``reduced`` (True when min/max pairs of buckets replace the samples).
    """
    values = np.asarray(values, dtype=np.float64)
    shape = envelope(values)
    dt = 1.0 / fs_mhz
    reduced = len(values) > limit
    if reduced:
        bucket = int(np.ceil(2 * len(values) / limit))
        usable = len(values) // bucket * bucket
        blocks = values[:usable].reshape(-1, bucket)
        pairs = np.stack([blocks.min(axis=1), blocks.max(axis=1)], axis=1).ravel()
        values, shape, dt = pairs, np.repeat(shape[:usable].reshape(-1, bucket).max(axis=1), 2), dt * bucket / 2
    return {"t0": 0.0, "dt": dt, "y": np.round(values, 4).tolist(), "envelope": np.round(shape, 4).tolist(), "reduced": bool(reduced)}


def _echoes(positions: np.ndarray, amplitudes: np.ndarray, fs_mhz: float) -> dict:
    keep = np.isfinite(positions)
    return {"t": np.round(positions[keep] / fs_mhz, 4).tolist(), "a": np.round(amplitudes[keep], 4).tolist()}


def scan_view(scan: LayerScan, detections: Mapping[str, Detections], estimates: Mapping[str, np.ndarray]) -> View:
    """The layer scan as a clickable thickness map (true, or any method's estimate); a click opens that A-scan.

    Parameters
    ----------
    scan : LayerScan
        The simulated scan (signals, true thickness and echo times).
    detections : mapping of str to Detections
        Each method's detections on the scan's signals (one row per position, row-major).
    estimates : mapping of str to numpy.ndarray
        Each method's thickness map (mm).

    Returns
    -------
    View
        Renderer ``echoes``; item ids ``x{column}-y{row}``.
    """
    import plotly.graph_objects as go

    rows, columns = scan.tofd.shape
    fs = scan.config.pulse.fs_mhz
    ids = np.array([[f"x{c}-y{r}" for c in range(columns)] for r in range(rows)])
    methods = list(detections)
    items = {}
    for index, item_id in enumerate(ids.ravel()):
        r, c = divmod(index, columns)
        items[item_id] = {
            "label": f"scan position x = {c}, y = {r}: true thickness {scan.thickness_mm[r, c]:.3f} mm",
            **display_trace(scan.signals[index], fs),
            "truth": np.round(scan.tofs[index] / fs, 4).tolist(),
            "detections": {m: _echoes(*[a[index] for a in (detections[m].positions, detections[m].amplitudes)], fs) for m in methods},
            "thickness": {"true": round(float(scan.thickness_mm[r, c]), 4), **{m: round(float(estimates[m][r, c]), 4) for m in methods}},
        }
    top = float(scan.thickness_mm.max() * 1.3)
    maps = {"true thickness": scan.thickness_mm, **{f"{m} estimate": estimates[m] for m in methods}}
    figure = go.Figure(
        go.Heatmap(
            z=scan.thickness_mm,
            customdata=ids,
            zmin=0,
            zmax=top,
            colorscale="Viridis",
            colorbar={"title": {"text": "thickness (mm)"}},
            hovertemplate="x %{x}, y %{y}<br>%{z:.3f} mm<extra></extra>",
        )
    )
    buttons = [{"label": plotly_text(name), "method": "restyle", "args": [{"z": [np.round(values, 4).tolist()]}]} for name, values in maps.items()]
    figure.update_layout(
        title={"text": "Layer scan: click a position to see its A-scan"},
        xaxis={"title": {"text": SCAN_COLUMN_LABEL}, "tick0": 0, "dtick": max(1, columns // 10)},
        yaxis={"title": {"text": SCAN_ROW_LABEL}, "autorange": "reversed", "tick0": 0, "dtick": max(1, rows // 10)},
        updatemenus=[{"buttons": buttons, "x": 1.0, "y": 1.16, "xanchor": "right", "direction": "down"}],
        margin={"t": 70},
    )
    data = {"methods": methods, "colours": {m: method_colour(m) for m in methods}, "truth_label": "true echoes"}
    notes = ["The menu switches the map between the true thickness and each method's estimate (mm, same colour scale)."]
    return View("Layer scan (B-scan)", "echoes", [ExplorerFigure("scan", figure, 460)], items, data, notes=notes)


def real_scans_view(signals: Sequence, detections: Sequence[RealDetection]) -> View:
    """Every real A-scan's detections on one map (time against scan, one colour per method); a click opens the A-scan.

    Parameters
    ----------
    signals : sequence of Signal
        The A-scans (``name``, ``values``).
    detections : sequence of RealDetection
        Each method's detections on each scan.

    Returns
    -------
    View
        Renderer ``echoes``; item ids ``scan-{index}``.
    """
    import plotly.graph_objects as go

    methods = list(dict.fromkeys(d.method for d in detections))
    items, names, reduced = {}, [], False
    for index, signal in enumerate(signals):
        found = {d.method: d for d in detections if d.signal == signal.name}
        if not found:
            continue
        fs = next(iter(found.values())).fs_mhz
        trace = display_trace(prepare_real_signal(signal.values), fs)
        reduced |= trace["reduced"]
        item_id = f"scan-{index}"
        names.append((item_id, str(signal.name)))
        items[item_id] = {
            "label": f"{signal.name}: {len(signal.values):,} samples at {fs:g} MHz",
            **trace,
            "detections": {m: _echoes(d.positions, d.amplitudes, fs) for m, d in found.items()},
            "layer": {m: np.round(d.layer_positions / fs, 4).tolist() for m, d in found.items()},
        }
    figure = go.Figure()
    for method in methods:
        times, scans, sizes, ids = [], [], [], []
        for item_id, name in names:
            echoes = items[item_id]["detections"].get(method, {"t": [], "a": []})
            times += echoes["t"]
            scans += [plotly_text(name)] * len(echoes["t"])
            sizes += [6 + 14 * a for a in echoes["a"]]
            ids += [item_id] * len(echoes["t"])
        figure.add_trace(
            go.Scatter(
                x=times,
                y=scans,
                customdata=ids,
                mode="markers",
                name=plotly_text(method),
                marker={"color": method_colour(method), "size": sizes, "line": {"width": 0.5, "color": "#333"}},
                hovertemplate="%{y}<br>%{x:.3f} us<extra>" + plotly_text(method) + "</extra>",
            )
        )
    figure.update_layout(
        title={"text": "Detected echoes per A-scan (marker size = amplitude); click one to see the scan"},
        xaxis={"title": {"text": "time (us)"}},
        yaxis={"title": {"text": "A-scan"}, "type": "category"},
        margin={"l": 160},
    )
    notes = ["Long A-scans are drawn as the minimum and maximum of each bucket of samples (every peak kept)."] if reduced else []
    data = {"methods": methods, "colours": {m: method_colour(m) for m in methods}, "truth_label": ""}
    return View("Real A-scans", "echoes", [ExplorerFigure("real", figure, 120 + 48 * max(1, len(names)))], items, data, notes=notes)
