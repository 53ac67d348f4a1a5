"""`phenolens demo`: every available pipeline on the built-in real datasets, one report."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from phenolens.cli.options import OVERWRITE
from phenolens.core.logging import get_logger

log = get_logger(__name__)

IMAGE_AND_PROFILE_DATASETS = ["bbbc021-profiles", "lincs-plate", "bbbc013", "mitocheck", "bbbc021-cells", "echo-pulses"]


def dataset_summaries(out: Path) -> tuple[list, dict]:
    """One summary section per mirrored dataset (plus fashion-mnist when present).

    Parameters
    ----------
    out : Path
        The demo's output folder.

    Returns
    -------
    sections : list
        Report sections.
    metrics : dict
        Dataset name -> its summary.
    """
    from phenolens.core.errors import PhenolensError
    from phenolens.data.loaders import load
    from phenolens.report.datasets import summarize
    from phenolens.report.html import Section

    parent = Section("Datasets")
    metrics = {}
    for name in [*IMAGE_AND_PROFILE_DATASETS, "fashion-mnist"]:
        try:
            data = load(name)
        except PhenolensError as error:
            if name == "fashion-mnist":
                parent.text(f"fashion-mnist skipped: {error}")
                continue
            raise
        summary, section = summarize(data, name)
        parent.add(section)
        metrics[name] = summary
    return [parent], metrics


# Each step is 'module:function'; the function takes the output folder and returns (report sections,
# metrics). Pipelines add themselves here, one line each, in the order they appear in the report.
DEMO_STEPS = [
    ("datasets", "phenolens.cli.demo:dataset_summaries"),
    ("profiling", "phenolens.cli.profile:demo_step"),
    ("images", "phenolens.cli.images_demo:images_demo"),
    ("sign", "phenolens.cli.sign:demo_step"),
    ("counterfactual", "phenolens.cli.counterfactual:counterfactual_demo"),
    ("echoes", "phenolens.cli.echoes:demo_step"),
]


def _resolve(target: str):
    """Import a step's function only when it runs, so the CLI starts fast."""
    import importlib

    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Output folder for report.html and every pipeline's results."),
    only: str = typer.Option("", help=f"Comma-separated steps to run, of {', '.join(name for name, _ in DEMO_STEPS)} (default: all)."),
    overwrite: bool = OVERWRITE,
) -> None:
    """Run every pipeline on the built-in real datasets and write OUT/report.html."""
    from phenolens.core.errors import PhenolensError
    from phenolens.core.runs import RunWriter
    from phenolens.data.loaders import recorded_loads
    from phenolens.report.html import Report

    wanted = {s for s in only.split(",") if s}
    unknown = wanted - {name for name, _ in DEMO_STEPS}
    if unknown:
        raise PhenolensError(f"unknown demo step(s) {', '.join(sorted(unknown))}; choose from {', '.join(n for n, _ in DEMO_STEPS)}")
    report = Report("phenolens demo: real data, every pipeline")
    with RunWriter(out, "demo", overwrite=overwrite) as run, recorded_loads() as datasets:
        staging = run.path
        for name, step in DEMO_STEPS:
            if wanted and name not in wanted:
                continue
            started = time.perf_counter()
            print(f"demo: {name} ...", flush=True)
            sections, metrics = _resolve(step)(staging)
            for section in sections:
                report.add(section)
            report.metrics[name] = {**metrics, "seconds": round(time.perf_counter() - started, 1)}
        run.datasets = sorted(datasets)  # what the steps read, known once they have run
        run.write_metrics(report.metrics)
        run.write_report(report)
    print(f"wrote {out / 'report.html'}")
