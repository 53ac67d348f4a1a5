"""`phenolens report combine`: one static site that links the pages of several runs of a study."""

from __future__ import annotations

from pathlib import Path

import typer

from phenolens.cli.options import OVERWRITE, settings_options
from phenolens.report.explorer.combine import CombineSettings

app = typer.Typer(help="Run pages: combine several runs of a study into one static site.", no_args_is_help=True)


@app.command()
@settings_options()
def combine(
    runs: list[Path] = typer.Argument(..., help="Finished run folders (each with run.json and report.html), in the order to list them."),
    out: Path = typer.Option(..., "--out", help="Output folder: index.html linking runs/NN-<name>/report.html (copies of each run's page)."),
    overwrite: bool = OVERWRITE,
    settings: CombineSettings = None,
) -> None:
    """Write OUT/index.html linking a copy of each RUN's report.html (its explorer included); opens from a file, offline."""
    from phenolens.core.runs import RunWriter
    from phenolens.report.explorer.combine import combine_runs

    writer = RunWriter(out, command="report combine", settings=settings, inputs=runs, overwrite=overwrite)
    with writer as written:
        index, metrics = combine_runs(runs, written.path, settings)
        written.write_metrics(metrics)
        written.write_report(index)
        index.write(written.path, "index.html")
    print(f"combined {metrics['n_runs']} runs; wrote {writer.target / 'index.html'}")
