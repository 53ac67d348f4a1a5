"""The report of `profile aggregate`: how many cells each well got, plate by plate."""

from __future__ import annotations

import numpy as np

from phenolens.profiling.aggregate import AggregationSummary
from phenolens.report.figures import figure
from phenolens.report.html import Report, Section

# Counts and their medians, which are whole or halves: '10', '10.5', '1,234,567' (as metrics.json holds them, never rounded).
COUNT_FORMAT = ",.12g"

# Beyond this many plates the distribution is drawn as one range per plate, not one box per plate.
BOXES_UP_TO = 48


def cells_per_well_figure(cells_per_well: dict[str, np.ndarray]):
    """Cells per well, per plate: boxes (few plates) or median with min-max range (many plates).

    Parameters
    ----------
    cells_per_well : dict of str to numpy.ndarray
        Every well's cell count, per plate.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    plates = list(cells_per_well)
    fig, ax = figure(width=min(max(4.5, 2.0 + 0.3 * len(plates)), 14.0), height=4.0)
    positions = np.arange(len(plates))
    if len(plates) <= BOXES_UP_TO:
        ax.boxplot([cells_per_well[p] for p in plates], positions=positions, widths=0.6, showfliers=True)
        ax.set_xticks(positions, plates, rotation=90 if len(plates) > 6 else 0, fontsize=8 if len(plates) > 12 else 10)
    else:
        medians = np.array([np.median(cells_per_well[p]) for p in plates])
        low = medians - np.array([cells_per_well[p].min() for p in plates])
        high = np.array([cells_per_well[p].max() for p in plates]) - medians
        ax.errorbar(positions, medians, yerr=[low, high], fmt="o", markersize=2, elinewidth=0.5)
        ax.set_xlabel(f"plate (1 to {len(plates)}, in input order)")
    ax.set_ylabel("cells per well")
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    return fig


def aggregation_report(title: str, summary: AggregationSummary) -> Report:
    """The report of an aggregation run: a summary line, the cells-per-well figure, the per-plate table.

    Parameters
    ----------
    title : str
        The page title.
    summary : AggregationSummary
        What `phenolens.profiling.aggregate.aggregate_cells_into` returned.

    Returns
    -------
    Report
        The report (metrics embedded).
    """
    metrics = summary.metrics
    report = Report(title, metrics=metrics)
    spread = metrics["cells_per_well"]
    section = report.add(Section("Single cells to wells"))
    section.text(
        f"{metrics['cells']:,} cells in {metrics['wells']:,} wells of {metrics['plates']} plate(s) from {metrics['files']} file(s), "
        f"{metrics['features']:,} features, {metrics['operation']} per well; cells per well {spread['min']:,} to {spread['max']:,} "
        f"(median {spread['median']:{COUNT_FORMAT}}). {metrics['seconds']:.1f} s on {metrics['scheduler']}"
        + (f"; {metrics['plates_resumed']} plate(s) taken from the interrupted run." if metrics["plates_resumed"] else ".")
    )
    section.figure(cells_per_well_figure(summary.cells_per_well), "Cells per well, per plate.", "cells_per_well.png")
    section.table(summary.plates, "Per plate: wells, cells and cells per well.", float_format="{:" + COUNT_FORMAT + "}")
    return report
