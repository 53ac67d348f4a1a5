"""`phenolens data list | verify | show`."""

from __future__ import annotations

from pathlib import Path

import typer

from phenolens.cli.options import OVERWRITE

app = typer.Typer(help="The registered real datasets: list, verify checksums, summarise.", no_args_is_help=True)


@app.command("list")
def list_datasets() -> None:
    """List registered datasets with their source, licence and local availability."""
    from rich.console import Console
    from rich.table import Table

    from phenolens.data.loaders import describe
    from phenolens.data.registry import local_copy, registry

    table = Table("name", "kind", "files", "size (MB)", "local", "source", "licence")
    for name, dataset in registry().items():
        facts = describe(name)
        local = "yes" if local_copy(dataset, dataset.files[0]) else "no"  # listing never downloads (`data verify` checks hashes)
        table.add_row(name, facts["kind"], str(facts["files"]), f"{facts['bytes'] / 1e6:.1f}", local, facts["source"][:60], facts["licence"][:40])
    Console(width=200).print(table)


@app.command()
def verify(names: list[str] = typer.Argument(None, help="Datasets to check (default: all).")) -> None:
    """Check every local file against its registered sha256; exit 1 on any mismatch or partial dataset."""
    from collections import Counter

    from phenolens.data.registry import verify as verify_files

    results = verify_files(names or None)
    failed = False
    by_dataset: dict[str, Counter] = {}
    for result in results:
        by_dataset.setdefault(result.dataset, Counter())[result.status] += 1
        if result.status == "mismatch":
            print(f"MISMATCH {result.dataset}: {result.location} does not match its sha256")
            failed = True
    for dataset, counts in by_dataset.items():
        total = sum(counts.values())
        if counts["missing"] == total:
            print(f"{dataset}: not available locally ({total} files); skipped")
            continue
        if counts["missing"]:
            missing = [r.path for r in results if r.dataset == dataset and r.status == "missing"]
            print(f"MISSING {dataset}: {counts['missing']} of {total} files, first {missing[0]}")
            failed = True
        print(f"{dataset}: {counts['ok']} ok, {counts['mismatch']} mismatched, {counts['missing']} missing")
    if failed:
        raise typer.Exit(1)


def load_any(source: str, channels: str = ""):
    """A registered dataset by name, or a local path: an image folder (one sub-folder per class), a CSV
    manifest (path,label,...), a profile table (csv/csv.gz/tsv/tsv.gz/parquet) or a signal (.npy/.txt).

    Parameters
    ----------
    source : str
        A registry name or a path.
    channels : str
        Comma-separated channel names for images (empty: from the files).

    Returns
    -------
    ImageSet, pandas.DataFrame or SignalSet
        The loaded data.

    Raises
    ------
    PhenolensError
        When `source` is neither a registered name nor an existing path, or the file is unreadable.
    """
    from phenolens.core.errors import PhenolensError
    from phenolens.data import read_image_folder, read_manifest, read_profiles, read_signal
    from phenolens.data.containers import SignalSet
    from phenolens.data.loaders import load
    from phenolens.data.readers import is_manifest
    from phenolens.data.registry import registry

    if source in registry():
        return load(source)
    path = Path(source)
    if not path.exists():
        raise PhenolensError(f"{source}: neither a registered dataset ({', '.join(registry())}) nor an existing path")
    channel_names = [c for c in channels.split(",") if c] or None
    if path.is_dir():
        return read_image_folder(path, channel_names)
    if path.suffix in (".npy", ".txt"):
        return SignalSet([read_signal(path)], name=path.stem)
    if path.suffix == ".csv" and is_manifest(path):
        return read_manifest(path, channel_names)
    if path.suffix.lower() in (".tif", ".tiff", ".png"):
        raise PhenolensError(f"{source}: a single image; give a folder with one sub-folder of images per class, or a manifest CSV")
    return read_profiles(path)


@app.command()
def show(
    name: str = typer.Argument(..., help="Registered dataset name (see `phenolens data list`) or a path to your own data."),
    out: Path = typer.Option(..., "--out", help="Output folder for summary.json, figures and report.html."),
    channels: str = typer.Option("", help="Comma-separated channel names for image paths (checks the channel count)."),
    seed: int = typer.Option(0, help="Seed for the random montage images."),
    overwrite: bool = OVERWRITE,
) -> None:
    """Summarise a dataset: counts per class/plate/treatment, montages, feature distributions."""
    from phenolens.core.runs import RunWriter
    from phenolens.data.registry import registry
    from phenolens.report.datasets import summarize
    from phenolens.report.html import Report

    registered = name in registry()
    writer = RunWriter(out, "data show", inputs=[] if registered else [name], overwrite=overwrite, seed=seed, datasets=[name] if registered else [])
    data = load_any(name, channels)
    label = name if registered else Path(name).name
    summary, section = summarize(data, label, seed=seed)
    report = Report(f"phenolens dataset summary: {label}", metrics=summary)
    report.add(section)
    with writer as run:
        run.write_json("summary.json", summary)
        run.write_report(report)
    print(f"wrote {out / 'report.html'}")
