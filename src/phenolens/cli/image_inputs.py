"""Where the image commands read images from: a registered dataset, a folder with one sub-folder per
class, a CSV manifest, or (for the commands that stream a screen) a Zarr array."""

from __future__ import annotations

from pathlib import Path

import typer

from phenolens.core.errors import PhenolensError

DATASET = typer.Option(None, "--dataset", help="A registered image dataset (bbbc013, mitocheck, bbbc021-cells, fashion-mnist).")
FOLDER = typer.Option(None, "--folder", help="A folder with one sub-folder of tif/png/npy images per class.")
MANIFEST = typer.Option(None, "--manifest", help="A CSV with path,label and metadata columns (paths relative to it).")
CHANNELS = typer.Option("", "--channels", help="Comma-separated channel (stain) names for --folder/--manifest images, in the files' order.")
UNLABELLED = typer.Option("", "--unlabelled", help="The manifest label that marks unlabelled images (e.g. Unknown).")
ZARR = typer.Option(
    None, "--zarr", help="A Zarr v3 group with an 'images' array (N, C, H, W) and metadata.parquet or metadata.csv (one row per image) in its folder."
)
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


def open_images(
    dataset: str | None,
    folder: Path | None,
    manifest: Path | None,
    zarr: Path | None,
    channels: str = "",
    unlabelled: str = "",
    allow_outside_paths: bool = False,
    skip_bad: bool = False,
):
    """The images named by exactly one source, listed and header-checked but not read (streamed later in chunks).

    Parameters
    ----------
    dataset, folder, manifest : as `read_images`
        A registered dataset (read into memory: they are small), a class folder or a CSV manifest.
    zarr : Path or None
        A Zarr group (see `phenolens.data.chunks`).
    channels, unlabelled, allow_outside_paths : as `read_images`
        How to read folder and manifest images.
    skip_bad : bool
        Leave out bad images (recorded for skipped.csv) instead of stopping at the first.

    Returns
    -------
    ImageSource
        The scanned source.

    Raises
    ------
    PhenolensError
        When not exactly one source is given, or (without `skip_bad`) any image is bad, naming it.
    """
    from phenolens.data.chunks import ImageSource, open_image_source

    if sum(bool(source) for source in (dataset, folder, manifest, zarr)) != 1:
        raise PhenolensError("give exactly one image source: --dataset NAME, --folder DIR, --manifest CSV or --zarr STORE")
    if dataset:
        return ImageSource.from_images(read_images(dataset, None, None))
    names = [c.strip() for c in channels.split(",") if c.strip()] or None
    source = open_image_source(folder, manifest, zarr, names, unlabelled or None, allow_outside_paths)
    return source.scan(skip_bad)


def input_paths(folder: Path | None, manifest: Path | None, zarr: Path | None = None) -> list[Path]:
    """The files and folders an image command reads (for the run record, and never inside --out).

    For a manifest, the CSV itself (an --out that holds it, such as its own folder, is refused).

    Parameters
    ----------
    folder : Path or None
        The --folder option.
    manifest : Path or None
        The --manifest option.
    zarr : Path or None
        The --zarr option.

    Returns
    -------
    list of Path
        The inputs.
    """
    if folder:
        return [folder]
    if manifest:
        return [manifest]
    if zarr:
        return [zarr]
    return []
