"""Where the image commands read images from: a registered dataset, a folder with one sub-folder per
class, or a CSV manifest."""

from __future__ import annotations

from pathlib import Path

import typer

from phenolens.core.errors import PhenolensError

DATASET = typer.Option(None, "--dataset", help="A registered image dataset (bbbc013, mitocheck, bbbc021-cells, fashion-mnist).")
FOLDER = typer.Option(None, "--folder", help="A folder with one sub-folder of tif/png/npy images per class.")
MANIFEST = typer.Option(None, "--manifest", help="A CSV with path,label and metadata columns (paths relative to it).")
CHANNELS = typer.Option("", "--channels", help="Comma-separated channel (stain) names for --folder/--manifest images, in the files' order.")
UNLABELLED = typer.Option("", "--unlabelled", help="The manifest label that marks unlabelled images (e.g. Unknown).")
ALLOW_OUTSIDE = typer.Option(
    False, "--allow-outside-paths", help="Read manifest paths that leave the manifest's folder (absolute, or through ..); refused by default."
)


def read_images(
    dataset: str | None, folder: Path | None, manifest: Path | None, channels: str = "", unlabelled: str = "", allow_outside_paths: bool = False
):
    """The ImageSet named by exactly one of the three sources.

    Parameters
    ----------
    dataset : str or None
        A registered image dataset.
    folder : Path or None
        A folder with one sub-folder of images per class.
    manifest : Path or None
        A CSV manifest.
    channels : str
        Comma-separated channel names of folder/manifest images.
    unlabelled : str
        The manifest label of unlabelled images.
    allow_outside_paths : bool
        Read manifest paths that leave the manifest's folder.

    Returns
    -------
    ImageSet
        The images.

    Raises
    ------
    PhenolensError
        When not exactly one source is given, or the source cannot be read.
    """
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
    return read_manifest(manifest, names, unlabelled=unlabelled or None, allow_outside_paths=allow_outside_paths)


def input_paths(folder: Path | None, manifest: Path | None) -> list[Path]:
    """The files and folders an image command reads (for the run record, and never inside --out).

    For a manifest, the CSV itself (an --out that holds it, such as its own folder, is refused).

    Parameters
    ----------
    folder : Path or None
        The --folder option.
    manifest : Path or None
        The --manifest option.

    Returns
    -------
    list of Path
        The inputs.
    """
    if folder:
        return [folder]
    if manifest:
        return [manifest]
    return []
