"""Generic readers: image files and folders, CSV manifests, profile tables, 1-D signals."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from phenolens.core.errors import PhenolensError
from phenolens.core.progress import progress
from phenolens.data.containers import UNLABELLED, ImageSet, Signal

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".npy")


def read_image(path: str | Path, channels: int | None = None) -> np.ndarray:
    """Read one image file (tif/png/npy) as a (C, H, W) array.

    2-D files become one channel; channel-last arrays (H, W, C with C <= 8) are transposed.
    `channels`, when given, is checked.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            array = tifffile.imread(path)
        elif suffix == ".png":
            from PIL import Image

            with Image.open(path) as image:
                array = np.asarray(image)
        elif suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            raise PhenolensError(f"{path}: unsupported image type {suffix!r}; use one of {', '.join(IMAGE_SUFFIXES)}")
    except PhenolensError:
        raise
    except Exception as error:  # each decoder raises its own types; all mean "unreadable file"
        raise PhenolensError(f"{path}: cannot read image ({type(error).__name__}: {error}); replace or remove the file") from None
    if array.size == 0:
        raise PhenolensError(f"{path}: cannot read image (no pixel data: the file is corrupt or empty); replace or remove the file")
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 3 and array.shape[-1] <= 8 and array.shape[0] > 8:
        array = np.moveaxis(array, -1, 0)
    if array.ndim != 3:
        raise PhenolensError(f"{path}: expected a 2-D or (C, H, W) image, got shape {array.shape}")
    if channels is not None and array.shape[0] != channels:
        raise PhenolensError(f"{path}: has {array.shape[0]} channels but {channels} are expected; check the channel order/stack")
    return array


def read_images(paths: Sequence[str | Path], channels: int | None = None) -> list[np.ndarray]:
    """Read many image files; the first file fixes the channel count unless `channels` is given."""
    images = []
    for path in progress(paths, "reading images", total=len(paths)):
        image = read_image(path, channels)
        channels = image.shape[0] if channels is None else channels
        images.append(image)
    return images


def _stack_if_uniform(images: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    shapes = {image.shape for image in images}
    return np.stack(images) if len(shapes) == 1 else images


def read_image_folder(folder: str | Path, channel_names: Sequence[str] | None = None, name: str | None = None) -> ImageSet:
    """Read a folder with one sub-folder per class holding tif/png/npy images."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PhenolensError(f"{folder}: not a folder; give a folder with one sub-folder per class")
    class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    paths, labels = [], []
    for index, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [index] * len(files)
    if not paths:
        raise PhenolensError(f"{folder}: no {'/'.join(IMAGE_SUFFIXES)} images in class sub-folders; check the path")
    empty = [d.name for index, d in enumerate(class_dirs) if index not in labels]
    if empty:
        raise PhenolensError(f"{folder / empty[0]}: an empty class sub-folder (no {'/'.join(IMAGE_SUFFIXES)} images); fill it or remove it")
    images = read_images(paths, len(channel_names) if channel_names else None)
    channel_names = list(channel_names or [f"ch{i}" for i in range(images[0].shape[0])])
    meta = pd.DataFrame({"source": [str(p) for p in paths]})
    return ImageSet(_stack_if_uniform(images), np.array(labels), [d.name for d in class_dirs], channel_names, meta, name=name or folder.name)


def read_manifest(
    manifest: str | Path,
    channel_names: Sequence[str] | None = None,
    path_column: str = "path",
    label_column: str = "label",
    unlabelled: str | None = None,
    class_names: Sequence[str] | None = None,
    name: str | None = None,
) -> ImageSet:
    """Read images listed in a CSV manifest (path,label,+metadata columns).

    Paths are relative to the manifest's folder. Rows whose label equals `unlabelled` (or is empty)
    are unlabelled. Every other column becomes per-image metadata.
    """
    manifest = Path(manifest)
    try:
        table = pd.read_csv(manifest, dtype={label_column: str})
    except (OSError, ValueError) as error:
        raise PhenolensError(f"{manifest}: cannot read the manifest ({error})") from None
    for column in (path_column, label_column):
        if column not in table:
            raise PhenolensError(f"{manifest}: missing column {column!r}; the manifest needs {path_column},{label_column}")
    if table.empty:
        raise PhenolensError(f"{manifest}: the manifest lists no images")
    raw_labels = table[label_column].fillna("").astype(str)
    is_unlabelled = (raw_labels == "") | (raw_labels == (unlabelled or ""))
    names = list(class_names) if class_names else sorted(set(raw_labels[~is_unlabelled]))
    unknown = sorted(set(raw_labels[~is_unlabelled]) - set(names))
    if unknown:
        raise PhenolensError(f"{manifest}: labels {unknown} are not among the classes {names}")
    lookup = {c: i for i, c in enumerate(names)}
    labels = np.array([UNLABELLED if u else lookup[v] for v, u in zip(raw_labels, is_unlabelled)])
    paths = [manifest.parent / p for p in table[path_column]]
    images = read_images(paths, len(channel_names) if channel_names else None)
    channel_names = list(channel_names or [f"ch{i}" for i in range(images[0].shape[0])])
    meta = table.drop(columns=[label_column]).rename(columns={path_column: "source"})
    meta["source"] = [str(p) for p in paths]
    return ImageSet(
        _stack_if_uniform(images),
        labels,
        names,
        channel_names,
        meta,
        unlabelled_name=unlabelled or "Unlabelled",
        name=name or manifest.stem,
    )


def read_profiles(paths: str | Path | Sequence[str | Path], required_metadata: Sequence[str] = ("Metadata_Plate",)) -> pd.DataFrame:
    """Read and concatenate well-level profile tables (csv, csv.gz, parquet).

    Columns starting with `Metadata_` are metadata; every other column must be numeric (a feature).
    NaN/inf values are kept (the profiling code counts and handles them).
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise PhenolensError("no profile files given; pass one or more csv/csv.gz/parquet files")
    tables = []
    for path in map(Path, paths):
        try:
            if path.suffix == ".parquet":
                table = pd.read_parquet(path)
            else:
                table = pd.read_csv(path, low_memory=False)
        except FileNotFoundError:
            raise PhenolensError(f"{path}: file not found") from None
        except Exception as error:  # pandas/pyarrow raise many parser types
            raise PhenolensError(f"{path}: cannot read the profile table ({type(error).__name__}: {error})") from None
        for column in required_metadata:
            if column not in table:
                raise PhenolensError(f"{path}: missing metadata column {column!r}; add it or name another with the matching option")
        require_numeric_features(table, feature_columns(table), str(path))
        tables.append(table)
    return pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]


def require_numeric_features(table: pd.DataFrame, features: Sequence[str], source: str) -> None:
    """PhenolensError naming `source` unless `features` is non-empty and every one is numeric."""
    if not features:
        raise PhenolensError(f"{source}: no feature columns (every column starts with Metadata_)")
    bad = [c for c in features if not pd.api.types.is_numeric_dtype(table[c])]
    if bad:
        raise PhenolensError(
            f"{source}: feature column {bad[0]!r} is not numeric"
            f"{f' (and {len(bad) - 1} more)' if len(bad) > 1 else ''}; rename metadata columns with a Metadata_ prefix or fix the values"
        )


def feature_columns(table: pd.DataFrame) -> list[str]:
    """The feature columns of a profile table: every column not starting with `Metadata_`."""
    return [c for c in table.columns if not str(c).startswith("Metadata_")]


def metadata_columns(table: pd.DataFrame) -> list[str]:
    """The `Metadata_` columns of a profile table."""
    return [c for c in table.columns if str(c).startswith("Metadata_")]


def read_signal(path: str | Path, params_path: str | Path | None = None) -> Signal:
    """Read a 1-D signal from .npy (no pickles) or a text file with one sample per line."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            values = np.load(path, allow_pickle=False)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # an empty file is reported below, once
                values = np.loadtxt(path, ndmin=1)
    except FileNotFoundError:
        raise PhenolensError(f"{path}: file not found") from None
    except Exception as error:  # loadtxt/np.load raise ValueError, EOFError, ...
        raise PhenolensError(f"{path}: cannot read the signal ({type(error).__name__}: {error})") from None
    params = json.loads(Path(params_path).read_text()) if params_path else {}
    return Signal(name=path.stem, values=values, params=params, source=str(path))
