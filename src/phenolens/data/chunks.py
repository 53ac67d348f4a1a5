"""A screen's images, a chunk at a time: from a class folder, a CSV manifest or a Zarr array.

`open_image_source` lists the images of one source without reading pixels; `ImageSource.scan`
checks every file's header (type, pixel limit, shape, channel count, truncation) before any work,
so that bad input inside a large folder is one line naming the file before any output exists (or,
with ``skip_bad``, a row of ``skipped.csv``); `ImageSource.chunks` cuts the images into
`ImageChunk` objects that are small (their rows of metadata, not their pixels) and read their
images only when asked (`ImageChunk.read`), in this process or on a Dask worker. Memory therefore
holds one chunk of pixels at a time, whatever the number of images.

A Zarr source is a Zarr v3 group with an ``images`` array (N, C, H, W) and a metadata table beside
it in the group's folder: ``metadata.parquet`` or ``metadata.csv``, one row per image, an optional
``label`` column (class names; empty for unlabelled) and any other columns. The group's attributes
may name the channels (``channel_names``) and the classes (``class_names``).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar, TypeVar

import numpy as np
import pandas as pd

from phenolens.core.errors import PhenolensError
from phenolens.core.logging import get_logger
from phenolens.core.progress import progress
from phenolens.core.settings import Settings, setting
from phenolens.data.containers import UNLABELLED, ImageSet
from phenolens.data.readers import (
    REAL_KINDS,
    image_header,
    list_image_folder,
    manifest_entries,
    one_line_message,
    read_csv_as_written,
    read_image,
)

log = get_logger(__name__)
progress_log = get_logger("phenolens.progress")
if "PHENOLENS_LOG" not in os.environ:  # one line per chunk off a terminal, unless the user chose a level
    progress_log.setLevel("INFO")

T = TypeVar("T")

CHUNK_BYTES = 32 * 2**20  # float32 input bytes per chunk when the size is not given
CHUNK_LIMITS = (16, 1024)
SKIPPED_COLUMNS = ["source", "reason"]
ZARR_ARRAY = "images"
ZARR_TABLES = ("metadata.parquet", "metadata.csv")


@dataclass(frozen=True)
class ImageChunkSettings(Settings):
    """How a screen's images are read: chunk size and what to do with a bad file.

    Raises
    ------
    PhenolensError
        On construction, for a chunk size below 1.
    """

    step: ClassVar[str] = "image chunks"

    chunk_size: int | None = setting(
        None,
        "Images per chunk, the unit that is read, written, distributed and resumed "
        f"(default: as many as fit in {CHUNK_BYTES // 2**20} MiB of float32 input, {CHUNK_LIMITS[0]} to {CHUNK_LIMITS[1]}).",
        minimum=1,
    )
    skip_bad: bool = setting(
        False,
        "Skip unreadable images and images with another channel count, listing each with its reason in skipped.csv "
        "(default: stop with a one-line error naming the file, before any output is written).",
    )


def auto_chunk_size(channels: int, size: int) -> int:
    """Images per chunk when none is given: `CHUNK_BYTES` of float32 input, within `CHUNK_LIMITS`.

    Parameters
    ----------
    channels : int
        Channels per image.
    size : int
        Side of the (square) network input.

    Returns
    -------
    int
        The chunk size.
    """
    per_image = 4 * channels * size * size
    return int(min(CHUNK_LIMITS[1], max(CHUNK_LIMITS[0], CHUNK_BYTES // max(per_image, 1))))


@dataclass
class ImageSource:
    """The images of one source, listed but not read.

    Attributes
    ----------
    kind : str
        ``folder``, ``manifest``, ``zarr`` or ``memory`` (an `ImageSet` already read).
    location : str
        The folder, manifest or Zarr group ("" in memory).
    meta : DataFrame
        One row per image; ``source`` names the file (or ``STORE[i]`` in a Zarr array).
    labels : ndarray
        Label index per image (`UNLABELLED` for none).
    class_names, channel_names : list of str
        Classes and channels.
    name : str
        For reports and messages.
    unlabelled_name : str
        How unlabelled images are named.
    positions : ndarray
        Each image's position in the Zarr array or the in-memory set (unused for files).
    shapes : ndarray or None
        (N, 2) height and width per image once `scan` has run.
    skipped : DataFrame
        Images left out by `scan` (``source``, ``reason``).
    images : ImageSet or None
        The images of a ``memory`` source.
    """

    kind: str
    location: str
    meta: pd.DataFrame
    labels: np.ndarray
    class_names: list[str]
    channel_names: list[str]
    name: str
    unlabelled_name: str = "Unlabelled"
    positions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    shapes: np.ndarray | None = None
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SKIPPED_COLUMNS))
    images: ImageSet | None = None

    def __len__(self) -> int:
        return len(self.meta)

    @classmethod
    def from_images(cls, images: ImageSet) -> ImageSource:
        """A source over images already in memory (a registered dataset).

        Parameters
        ----------
        images : ImageSet
            The images.

        Returns
        -------
        ImageSource
            Scanned already (shapes known, nothing skipped).
        """
        meta = images.meta.copy()
        if "source" not in meta:
            meta["source"] = [f"{images.name}[{i}]" for i in range(len(images))]
        return cls(
            "memory",
            "",
            meta,
            np.asarray(images.labels),
            list(images.class_names),
            list(images.channel_names),
            images.name,
            images.unlabelled_name,
            positions=np.arange(len(images)),
            shapes=np.array([image.shape[1:] for image in images.images]).reshape(len(images), 2),
            images=images,
        )

    def subset(self, index: Sequence[int] | np.ndarray) -> ImageSource:
        """The source restricted to the images at `index` (positions or a boolean mask), in that order.

        Parameters
        ----------
        index : sequence of int or ndarray
            Which images.

        Returns
        -------
        ImageSource
            The smaller source (skipped images are kept as they are).
        """
        index = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index, dtype=int)
        return replace(
            self,
            meta=self.meta.iloc[index].reset_index(drop=True),
            labels=self.labels[index],
            positions=self.positions[index] if len(self.positions) else self.positions,
            shapes=None if self.shapes is None else self.shapes[index],
        )

    def label_names(self) -> np.ndarray:
        """Class name per image (the unlabelled name where unknown).

        Returns
        -------
        ndarray
            (N,) object array.
        """
        names = np.asarray([*self.class_names, self.unlabelled_name], dtype=object)
        return names[np.where(self.labels == UNLABELLED, len(self.class_names), self.labels)]

    def probe(self) -> ImageSet:
        """A tiny stand-in `ImageSet` with the source's channel and class names and one 1 x 1 image per label used.

        A model checks names against it (`ImageClassifier.conform`) before any image is read.

        Returns
        -------
        ImageSet
            One blank image per distinct label.
        """
        labels = np.unique(self.labels) if len(self.labels) else np.array([UNLABELLED])
        blank = np.zeros((len(labels), max(len(self.channel_names), 1), 1, 1), dtype=np.float32)
        return ImageSet(blank, labels, list(self.class_names), list(self.channel_names) or ["ch0"], name=self.name)

    def scan(self, skip_bad: bool = False) -> ImageSource:
        """Check every image's header before any work: readable, within the pixel limit, real pixels, the channel count.

        Parameters
        ----------
        skip_bad : bool
            Leave bad images out (listed in `skipped` with the reason) instead of stopping.

        Returns
        -------
        ImageSource
            The images that passed, with their `shapes`.

        Raises
        ------
        PhenolensError
            Naming the first bad file (without `skip_bad`), or when no image is left.
        """
        if self.shapes is not None:
            return self
        if self.kind == "zarr":
            shape = _zarr_images(self.location).shape
            return replace(self, shapes=np.tile(np.asarray(shape[2:], dtype=np.int64), (len(self), 1)))
        channels = len(self.channel_names) if self.channel_names else None
        shapes, keep, bad = [], [], []
        for position, path in enumerate(progress(self.meta["source"], "checking images", total=len(self))):
            try:
                shape = image_header(path, channels)
            except PhenolensError as error:
                if not skip_bad:
                    raise
                bad.append({"source": str(path), "reason": _reason(error, path)})
                continue
            channels = shape[0] if channels is None else channels  # the first image fixes an unnamed count
            shapes.append(shape[1:])
            keep.append(position)
        if not keep:
            raise PhenolensError(f"{self.location}: none of the {len(self)} images is readable; see the reasons in skipped.csv or fix the files")
        scanned = self.subset(keep)
        scanned.shapes = np.asarray(shapes, dtype=np.int64).reshape(len(keep), 2)
        scanned.channel_names = self.channel_names or [f"ch{i}" for i in range(channels)]
        scanned.skipped = pd.DataFrame(bad, columns=SKIPPED_COLUMNS)
        if bad:
            log.warning("%s: skipped %d unreadable or mismatched images (listed in skipped.csv)", self.location, len(bad))
        return scanned

    @property
    def largest_side(self) -> int:
        """The largest height or width of any image (after `scan`)."""
        if self.shapes is None:
            raise RuntimeError("scan the source first")
        return int(self.shapes.max()) if len(self.shapes) else 0

    def chunks(self, chunk_size: int, skip_bad: bool = False) -> list[ImageChunk]:
        """The images cut into consecutive chunks of at most `chunk_size`.

        Parameters
        ----------
        chunk_size : int
            Images per chunk.
        skip_bad : bool
            Whether a chunk leaves out an image it cannot decode (and reports it) instead of stopping.

        Returns
        -------
        list of ImageChunk
            Small objects (metadata rows, no pixels), in order.
        """
        return [
            ImageChunk(
                index=index,
                start=start,
                kind=self.kind,
                location=self.location,
                meta=self.meta.iloc[start : start + chunk_size].reset_index(drop=True),
                labels=self.labels[start : start + chunk_size],
                positions=self.positions[start : start + chunk_size] if len(self.positions) else self.positions,
                class_names=list(self.class_names),
                channel_names=list(self.channel_names),
                name=self.name,
                unlabelled_name=self.unlabelled_name,
                skip_bad=skip_bad,
                images=None if self.images is None else self.images.subset(self.positions[start : start + chunk_size]),
            )
            for index, start in enumerate(range(0, len(self), chunk_size))
        ]


def _reason(error: PhenolensError, path) -> str:
    """The part of a reader's message after the file's name (skipped.csv has the name in its own column)."""
    text = str(error)
    prefix = f"{path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


@dataclass(frozen=True)
class ImageChunk:
    """Consecutive images of a source: their metadata now, their pixels when `read`.

    Small enough to send to a Dask worker, which reads the pixels itself.

    Attributes
    ----------
    index : int
        The chunk's number (parts and resume use it).
    start : int
        Position of its first image among the source's images.
    kind, location : str
        As `ImageSource`.
    meta : DataFrame
        Its rows of metadata.
    labels, positions : ndarray
        As `ImageSource`, for its images.
    class_names, channel_names : list of str
        As `ImageSource`.
    name, unlabelled_name : str
        As `ImageSource`.
    skip_bad : bool
        Leave out an image that cannot be decoded (reported by `read`) instead of stopping.
    images : ImageSet or None
        The pixels of a ``memory`` chunk.
    """

    index: int
    start: int
    kind: str
    location: str
    meta: pd.DataFrame
    labels: np.ndarray
    positions: np.ndarray
    class_names: list[str]
    channel_names: list[str]
    name: str
    unlabelled_name: str
    skip_bad: bool = False
    images: ImageSet | None = None

    def __len__(self) -> int:
        return len(self.meta)

    def read(self) -> tuple[ImageSet, pd.DataFrame, np.ndarray]:
        """Read the chunk's pixels.

        Returns
        -------
        tuple of (ImageSet, DataFrame, ndarray)
            The images (metadata and labels with them), the images left out (``source``, ``reason``;
            empty unless `skip_bad`) and the positions within the chunk of the images read.

        Raises
        ------
        PhenolensError
            Naming the file that cannot be read (without `skip_bad`).
        """
        if self.kind == "memory":
            return self.images, pd.DataFrame(columns=SKIPPED_COLUMNS), np.arange(len(self))
        if self.kind == "zarr":
            try:
                pixels = _zarr_images(self.location).oindex[np.asarray(self.positions)]
            except PhenolensError:
                raise
            except Exception as error:  # noqa: BLE001 - codec and store errors (zstd, blosc, OSError) all mean damaged chunks
                raise PhenolensError(
                    f"{self.location}/{ZARR_ARRAY}: cannot read images {self.positions[0]}-{self.positions[-1]} "
                    f"({type(error).__name__}: {one_line_message(error)}); rewrite the store"
                ) from None
            kept = np.arange(len(self))
            images, bad = pixels, []
        else:
            images, kept, bad = [], [], []
            for row, path in enumerate(self.meta["source"]):
                try:
                    images.append(read_image(path, len(self.channel_names)))
                    kept.append(row)
                except PhenolensError as error:
                    if not self.skip_bad:
                        raise
                    bad.append({"source": str(path), "reason": _reason(error, path)})
            kept = np.asarray(kept, dtype=int)
            shapes = {image.shape for image in images}
            images = np.stack(images) if len(shapes) == 1 else images
        image_set = ImageSet(
            images,
            self.labels[kept],
            list(self.class_names),
            list(self.channel_names),
            self.meta.iloc[kept].reset_index(drop=True),
            self.unlabelled_name,
            self.name,
        )
        return image_set, pd.DataFrame(bad, columns=SKIPPED_COLUMNS), kept


def _zarr_images(location: str):
    import zarr

    try:
        group = zarr.open_group(location, mode="r")
        array = group[ZARR_ARRAY]
    except (FileNotFoundError, KeyError, ValueError, OSError) as error:
        raise PhenolensError(
            f"{location}: not a Zarr group with an {ZARR_ARRAY!r} array ({type(error).__name__}); write the images as {ZARR_ARRAY} (N, C, H, W)"
        ) from None
    if array.ndim != 4 or array.dtype.kind not in REAL_KINDS:
        raise PhenolensError(f"{location}/{ZARR_ARRAY}: an array of shape {array.shape} and type {array.dtype}; store real (N, C, H, W) pixels")
    return array


def _label_text(labels: pd.Series, table: Path) -> pd.Series:
    """The class names of a metadata table's label column ('' where missing), the same from parquet as from CSV.

    Integer labels are named as integers ('0', '1') also where pandas reads a parquet column of them as its
    nullable Int64 or, when some are missing, as floats (which would name the classes '0.0', '1.0').
    """
    if table.suffix == ".parquet" and pd.api.types.is_float_dtype(labels):
        import pyarrow as pa
        import pyarrow.parquet as pq

        if pa.types.is_integer(pq.read_schema(table).field("label").type):
            labels = labels.astype("Int64")
    return labels.astype(object).where(labels.notna(), "").astype(str)


def _zarr_source(store: Path, channel_names: Sequence[str] | None, unlabelled: str | None) -> ImageSource:
    import zarr

    array = _zarr_images(str(store))
    attributes = dict(zarr.open_group(str(store), mode="r").attrs)
    for key in ("channel_names", "class_names"):
        names = attributes.get(key)
        if names is not None and not (isinstance(names, list) and all(isinstance(name, str) for name in names)):
            raise PhenolensError(f"{store}: the group attribute {key!r} must be a list of names, got {type(names).__name__}; rewrite it")
    tables = [store / name for name in ZARR_TABLES if (store / name).is_file()]
    if not tables:
        raise PhenolensError(f"{store}: no {' or '.join(ZARR_TABLES)} beside the {ZARR_ARRAY!r} array; write one row of metadata per image")
    try:
        meta = pd.read_parquet(tables[0]) if tables[0].suffix == ".parquet" else read_csv_as_written(tables[0], ["label"])
    except Exception as error:  # noqa: BLE001 - any reader failure (ArrowInvalid, ParserError, UnicodeDecodeError) is a damaged table
        raise PhenolensError(f"{tables[0]}: cannot read the metadata table ({type(error).__name__}); rewrite it with one row per image") from None
    if len(meta) != array.shape[0]:
        raise PhenolensError(f"{tables[0]}: {len(meta)} rows for the {array.shape[0]} images of {store}/{ZARR_ARRAY}; give one row per image")
    names = list(channel_names or attributes.get("channel_names") or [f"ch{i}" for i in range(array.shape[1])])
    if len(names) != array.shape[1]:
        raise PhenolensError(f"{store}/{ZARR_ARRAY}: has {array.shape[1]} channels but {len(names)} are named ({', '.join(names)}); check --channels")
    raw = _label_text(meta.pop("label"), tables[0]) if "label" in meta else pd.Series([""] * len(meta))
    unknown = (raw == "") | (raw == (unlabelled or ""))
    classes = list(attributes.get("class_names") or sorted(set(raw[~unknown])))
    strangers = sorted(set(raw[~unknown]) - set(classes))
    if strangers:
        raise PhenolensError(f"{tables[0]}: labels {strangers} are not among the classes {classes}")
    lookup = {name: k for k, name in enumerate(classes)}
    labels = np.array([UNLABELLED if u else lookup[v] for v, u in zip(raw, unknown)], dtype=np.int64)
    if "source" not in meta:
        meta.insert(0, "source", [f"{store}[{i}]" for i in range(len(meta))])
    return ImageSource("zarr", str(store), meta, labels, classes, names, store.name, unlabelled or "Unlabelled", positions=np.arange(len(meta)))


def open_image_source(
    folder: str | Path | None = None,
    manifest: str | Path | None = None,
    zarr: str | Path | None = None,
    channel_names: Sequence[str] | None = None,
    unlabelled: str | None = None,
    allow_outside_paths: bool = False,
) -> ImageSource:
    """List the images of exactly one of a class folder, a CSV manifest or a Zarr group (no pixels read).

    Parameters
    ----------
    folder : path, optional
        One sub-folder of tif/png/npy images per class.
    manifest : path, optional
        A CSV with path, label and metadata columns (paths relative to it).
    zarr : path, optional
        A Zarr v3 group with an ``images`` array and a metadata table (see the module's notes).
    channel_names : sequence of str, optional
        The channels, in the files' order (default: the Zarr group's, else ch0, ch1, ...).
    unlabelled : str, optional
        The label that marks an unlabelled image.
    allow_outside_paths : bool
        Accept manifest paths that leave the manifest's folder.

    Returns
    -------
    ImageSource
        The listed images (call `ImageSource.scan` before reading them).

    Raises
    ------
    PhenolensError
        When not exactly one source is given, or it cannot be listed.
    """
    given = [value for value in (folder, manifest, zarr) if value]
    if len(given) != 1:
        raise PhenolensError("give exactly one image source: --folder DIR, --manifest CSV or --zarr STORE")
    names = list(channel_names) if channel_names else []
    if folder:
        paths, labels, classes = list_image_folder(folder)
        meta = pd.DataFrame({"source": [str(p) for p in paths]})
        return ImageSource("folder", str(folder), meta, labels, classes, names, Path(folder).name)
    if manifest:
        paths, labels, classes, meta = manifest_entries(manifest, unlabelled=unlabelled, allow_outside_paths=allow_outside_paths)
        return ImageSource("manifest", str(manifest), meta, labels, classes, names, Path(manifest).stem, unlabelled or "Unlabelled")
    return _zarr_source(Path(zarr), channel_names, unlabelled)


def chunk_progress(results: Iterable[T], chunks: Sequence[ImageChunk], description: str, done: int = 0) -> Iterator[T]:
    """Pass chunk results through, showing progress: a bar with an ETA on a terminal, one log line per chunk off it.

    Parameters
    ----------
    results : iterable
        One result per chunk still to run, in order (as `Executor.map` yields them).
    chunks : sequence of ImageChunk
        All the run's chunks (for the totals).
    description : str
        What is being done, e.g. ``"predict"``.
    done : int
        Images already done (a resumed run).

    Yields
    ------
    object
        The results, unchanged.
    """
    total = sum(len(chunk) for chunk in chunks)
    sizes = {chunk.index: len(chunk) for chunk in chunks}
    started, finished = time.perf_counter(), done
    bar = None
    if sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
        bar = Progress(*columns, transient=True)
        task = bar.add_task(f"{description} (images)", total=total, completed=done)
        bar.start()
    try:
        for result in results:
            index = result[0] if isinstance(result, tuple) else None
            finished += sizes.get(index, 0)
            if bar is not None:
                bar.update(task, completed=finished)
            else:
                rate = (finished - done) / max(time.perf_counter() - started, 1e-9)
                left = (total - finished) / rate if rate > 0 else math.inf
                eta = f"{left:.0f} s" if math.isfinite(left) else "?"
                progress_log.info(
                    "%s: chunk %d of %d, %d of %d images, %.1f images/s, about %s left",
                    *(description, index + 1, len(chunks), finished, total, rate, eta),
                )
            yield result
    finally:
        if bar is not None:
            bar.stop()
