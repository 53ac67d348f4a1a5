"""Where `phenolens train` and `phenolens explain` read images from: a registered dataset, a folder
with one sub-folder per class, or a CSV manifest."""

from __future__ import annotations

from pathlib import Path

import typer

from phenolens.core.errors import PhenolensError

DATASET = typer.Option(None, "--dataset", help="A registered image dataset (bbbc013, mitocheck, bbbc021-cells, fashion-mnist).")
FOLDER = typer.Option(None, "--folder", help="A folder with one sub-folder of tif/png/npy images per class.")
MANIFEST = typer.Option(None, "--manifest", help="A CSV with path,label and metadata columns (paths relative to it).")
CHANNELS = typer.Option("", "--channels", help="Comma-separated channel (stain) names for --folder/--manifest images.")
UNLABELLED = typer.Option("", "--unlabelled", help="The manifest label that marks unlabelled images (e.g. Unknown).")


def read_images(dataset: str | None, folder: Path | None, manifest: Path | None, channels: str = "", unlabelled: str = ""):
    """The ImageSet named by exactly one of the three sources."""
    from phenolens.data import load, read_image_folder, read_manifest
    from phenolens.data.containers import ImageSet

    given = [source for source in (dataset, folder, manifest) if source]
    if len(given) != 1:
        raise PhenolensError("give exactly one image source: --dataset NAME, --folder DIR or --manifest CSV")
    names = [c.strip() for c in channels.split(",") if c.strip()] or None
    if dataset:
        images = load(dataset)
        if not isinstance(images, ImageSet):
            raise PhenolensError(f"dataset {dataset!r} holds no images; choose bbbc013, mitocheck, bbbc021-cells or fashion-mnist")
        return images
    if folder:
        return read_image_folder(folder, names)
    return read_manifest(manifest, names, unlabelled=unlabelled or None)
