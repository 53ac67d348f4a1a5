"""`phenolens report combine`: a small static site for a study, an index page that links several runs' pages.

Each run's ``report.html`` (self-contained, its explorer included) is copied to ``runs/<NN>-<name>/report.html``
beside the index, so the site is one folder that opens from a file, moves as a whole and needs no server.
The index lists every run (command, inputs, when, headline numbers) and links its page.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from phenolens.core.errors import PhenolensError
from phenolens.core.settings import Settings, setting
from phenolens.report.html import Report, Section

RUNS_FOLDER = "runs"
"""Folder of the site that holds each run's page."""


@dataclass(frozen=True)
class CombineSettings(Settings):
    """Settings of `phenolens report combine`."""

    title: str = setting("phenolens study", "Title of the study's index page.")


def run_slug(number: int, path: Path) -> str:
    """The site folder name of the `number`-th run: ``NN-<folder name>`` with anything but letters, digits, ``._-`` as ``_``.

    Parameters
    ----------
    number : int
        1-based position of the run.
    path : Path
        The run folder.

    Returns
    -------
    str
        A name safe in a URL and on every file system.
    """
    return f"{number:02d}-{re.sub(r'[^A-Za-z0-9._-]+', '_', path.resolve().name)[:60]}"


def headline_metrics(metrics: dict, limit: int = 16) -> pd.DataFrame:
    """The run's scalar metrics (numbers, text, flags), top level first, then one level down as ``group.name``.

    Parameters
    ----------
    metrics : dict
        ``metrics.json`` of a run.
    limit : int
        Most rows.

    Returns
    -------
    pandas.DataFrame
        Columns ``metric`` and ``value``.
    """
    scalar = (int, float, str, bool)
    rows = [(key, value) for key, value in metrics.items() if isinstance(value, scalar)]
    rows += [
        (f"{key}.{name}", inner)
        for key, value in metrics.items()
        if isinstance(value, dict)
        for name, inner in value.items()
        if isinstance(inner, scalar)
    ]  # a profiling run's numbers sit per representation
    shown = [(key, f"{value:.4g}" if isinstance(value, float) else str(value)) for key, value in rows[:limit]]
    return pd.DataFrame(shown, columns=["metric", "value"])


def combine_runs(runs: Sequence[str | Path], site: str | Path, settings: CombineSettings) -> tuple[Report, dict]:
    """Copy each run's page into ``site/runs/`` and build the index page that links them.

    Parameters
    ----------
    runs : sequence of path
        Finished run folders (each with run.json and report.html).
    site : path
        The folder being written (`RunWriter.path`).
    settings : CombineSettings
        The index's title.

    Returns
    -------
    (Report, dict)
        The index page and the metrics of the combination (the runs: command, folder, page).

    Raises
    ------
    PhenolensError
        When a folder is not a finished phenolens run, has no report.html, or is given twice.
    """
    from phenolens.core.runs import load_run

    folders = [Path(path) for path in runs]
    if not folders:
        raise PhenolensError("no runs to combine; give one or more run folders")
    seen = {}
    for folder in folders:
        key = folder.resolve()
        if key in seen:
            raise PhenolensError(f"{folder}: given twice (as {seen[key]}); give each run once")
        seen[key] = folder
    index = Report(settings.title)
    overview = index.add(Section("Runs"))
    overview.text(f"{len(folders)} runs; each link opens the run's own page (its explorer included), copied into this site.")
    listed = []
    for number, folder in enumerate(folders, 1):
        record = load_run(folder)
        page = folder / "report.html"
        if not page.is_file():
            raise PhenolensError(f"{folder}: no report.html; combine runs of commands that write a report")
        slug = run_slug(number, folder)
        target = Path(site) / RUNS_FOLDER / slug / "report.html"
        target.parent.mkdir(parents=True)
        shutil.copyfile(page, target)
        href = f"{RUNS_FOLDER}/{slug}/report.html"
        when = record.record.get("finished") or record.record.get("started") or ""
        section = index.add(Section(f"{number}. phenolens {record.command}: {folder.resolve().name}"))
        section.text(f"Folder {folder.resolve()}; written {when}.".replace(" ;", ";"))
        section.link(href, f"Open the {record.command} page")
        table = headline_metrics(record.metrics)
        if len(table):
            section.table(table, "Headline numbers (metrics.json)")
        listed.append({"command": record.command, "folder": str(folder.resolve()), "page": href})
    return index, {"runs": listed, "n_runs": len(listed)}
