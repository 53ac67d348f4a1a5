"""Generic readers: image files and folders, CSV manifests, profile tables, 1-D signals.

Every reader refuses what it cannot read faithfully with one `PhenolensError` naming the file:
images whose header promises more values than the pixel limit (checked before decoding, so a small
compressed file cannot claim gigabytes), non-real pixel or sample types, duplicate column names,
tables without rows, manifest paths that leave the manifest's folder.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from pandas._libs.parsers import STR_NA_VALUES  # pandas' default missing-value words (2.x and 3.x)

from phenolens.core.errors import PhenolensError
from phenolens.core.progress import progress
from phenolens.data.containers import UNLABELLED, ImageSet, Signal

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".npy")

MAX_PIXELS = 10**8
"""Default limit on the values (pixels times channels) of one image; 10^8 float32 values are 400 MB."""
MAX_PIXELS_VARIABLE = "PHENOLENS_MAX_PIXELS"

# bool, signed and unsigned integers, floats: what an image or a signal may hold (no complex, strings, objects).
REAL_KINDS = "biuf"

MAX_JSON_BYTES = 64 * 2**20
"""JSON side files (model configs, signal parameters) larger than this are refused unread."""

TAB_SEPARATED_SUFFIXES = (".tsv", ".tsv.gz")
"""Profile tables with these name endings are read as tab-separated text (as `profile aggregate --platemap` reads TSV)."""


def pixel_limit() -> int:
    """The pixel limit per image in force: ``PHENOLENS_MAX_PIXELS`` if set, else `MAX_PIXELS`.

    Returns
    -------
    int
        The largest number of values (height x width x channels) one image may hold.

    Raises
    ------
    PhenolensError
        When the environment variable is not a positive integer.
    """
    value = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if not value:
        return MAX_PIXELS
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit < 1:
        raise PhenolensError(f"{MAX_PIXELS_VARIABLE}={value!r} is not a positive integer; set it to the largest pixels x channels per image")
    return limit


def check_pixel_count(source: str | Path, shape: Sequence[int], limit: int | None = None) -> None:
    """Refuse an image whose shape holds more values than the pixel limit, before it is decoded.

    Parameters
    ----------
    source : str or Path
        The file named in the error.
    shape : sequence of int
        The image's shape as its header states it.
    limit : int, optional
        The limit; `pixel_limit()` when not given.

    Raises
    ------
    PhenolensError
        When the product of `shape` exceeds the limit.
    """
    limit = pixel_limit() if limit is None else limit
    count = int(np.prod(np.asarray(shape, dtype=object)))  # Python ints: a forged header cannot overflow the product
    if count > limit:
        raise PhenolensError(
            f"{source}: the image holds {count:,} values (shape {tuple(shape)}), above the limit of {limit:,} per image; "
            f"crop or tile it, or raise {MAX_PIXELS_VARIABLE} if it is genuine"
        )


def _decode_image(path: Path, suffix: str, limit: int) -> np.ndarray:
    """Read the header, check the pixel limit, then decode (each format's own way of reading only the header)."""
    if suffix in (".tif", ".tiff"):
        import tifffile

        # tifffile logs damaged tags, offsets and strips and then returns what it could: often a
        # partial, zero-filled or re-shaped array. A damaged file is refused rather than read wrong.
        with _TiffWarnings() as damage, tifffile.TiffFile(path) as tif:
            if not tif.pages or not tif.series:
                return np.empty(0)
            check_pixel_count(path, tif.series[0].shape, limit)
            array = tif.asarray(series=0)
        if damage.messages:
            raise ValueError(f"damaged file: {damage.messages[0]}")
        return array
    if suffix == ".png":
        from PIL import Image

        with Image.open(path) as image:
            mode = _png_pixel_mode(image)
            check_pixel_count(path, (image.height, image.width, Image.getmodebands(mode)), limit)
            return np.asarray(image if mode == image.mode else image.convert(mode))
    return _load_npy(path, lambda shape: check_pixel_count(path, shape, limit))


def _png_pixel_mode(image) -> str:
    """The mode whose pixels are the image's intensities: a palette PNG stores indices into its colour table,
    which are read through the table (grey when every entry is grey, else RGB, with alpha when it has transparency)."""
    if image.mode != "P":
        return image.mode
    if "transparency" in image.info:
        return "RGBA"
    palette = np.asarray(image.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
    return "L" if (palette == palette[:, :1]).all() else "RGB"


def _load_npy(path: Path, check_shape=None) -> np.ndarray:
    """Load a .npy file without pickles, its memory bounded by the file's size.

    Memory-mapping reads only the header and refuses a header whose shape needs more bytes than the
    file holds, so a truncated or forged file cannot make numpy allocate what its header claims.
    """
    mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    if check_shape is not None:
        check_shape(mapped.shape)
    return np.array(mapped)


class _TiffWarnings(logging.Handler):
    """Collects what tifffile logs while reading a file (and keeps it off the user's terminal)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self.logger = logging.getLogger("tifffile")

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> _TiffWarnings:
        self.propagate = self.logger.propagate
        self.logger.addHandler(self)
        self.logger.propagate = False
        return self

    def __exit__(self, *exc_info) -> None:
        self.logger.removeHandler(self)
        self.logger.propagate = self.propagate


def read_image(path: str | Path, channels: int | None = None, max_pixels: int | None = None) -> np.ndarray:
    """Read one image file (tif/png/npy) as a (C, H, W) array.

    2-D files become one channel; channel-last arrays (H, W, C with C <= 8) are transposed.

    Parameters
    ----------
    path : str or Path
        A .tif/.tiff (first series), .png or .npy (never unpickled) file.
    channels : int, optional
        The expected channel count, checked when given.
    max_pixels : int, optional
        The most values (pixels x channels) the image may hold, checked on the header before decoding;
        default `pixel_limit()` (``PHENOLENS_MAX_PIXELS`` or `MAX_PIXELS`).

    Returns
    -------
    numpy.ndarray
        The (C, H, W) image in its stored real dtype.

    Raises
    ------
    PhenolensError
        When the file is missing, unreadable, empty, above the pixel limit, not real-valued, not 2-D or
        (C, H, W), or has another channel count than `channels`.
    """
    path = Path(path)
    array = _opened(path, max_pixels, _decode_image)
    if array.size == 0:
        raise PhenolensError(f"{path}: cannot read image (no pixel data: the file is corrupt or empty); replace or remove the file")
    if array.dtype.kind not in REAL_KINDS:
        raise PhenolensError(f"{path}: pixels of type {array.dtype} are not real numbers; store integer or float intensities")
    shape = _checked_shape(path, array.shape, channels)
    return array.reshape(shape) if array.ndim == 2 else (array if array.shape == shape else np.moveaxis(array, -1, 0))


def _opened(path: Path, max_pixels: int | None, reader):
    """`reader(path, suffix, limit)` for a supported image type, any decoder failure made one line naming the file."""
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise PhenolensError(f"{path}: unsupported image type {suffix!r}; use one of {', '.join(IMAGE_SUFFIXES)}")
    limit = pixel_limit() if max_pixels is None else max_pixels
    try:
        return reader(path, suffix, limit)
    except PhenolensError:
        raise
    except FileNotFoundError:
        raise PhenolensError(f"{path}: file not found; check the path") from None
    except Exception as error:  # each decoder raises its own types; all mean "unreadable file"
        raise PhenolensError(f"{path}: cannot read image ({type(error).__name__}: {one_line_message(error)}); replace or remove the file") from None


def _checked_shape(path: Path, shape: Sequence[int], channels: int | None) -> tuple[int, int, int]:
    """The (C, H, W) shape of a stored image shape: 2-D is one channel, channel-last (H, W, C <= 8) is transposed."""
    shape = tuple(int(n) for n in shape)
    if len(shape) == 2:
        shape = (1, *shape)
    elif len(shape) == 3 and shape[-1] <= 8 and shape[0] > 8:
        shape = (shape[2], shape[0], shape[1])
    if len(shape) != 3:
        raise PhenolensError(f"{path}: expected a 2-D or (C, H, W) image, got shape {shape}")
    if channels is not None and shape[0] != channels:
        raise PhenolensError(f"{path}: has {shape[0]} channels but {channels} are expected; check the channel order/stack")
    return shape


def image_header(path: str | Path, channels: int | None = None, max_pixels: int | None = None) -> tuple[int, int, int]:
    """The (C, H, W) shape of an image file, from its header only (a cheap check of a whole screen before any work).

    Checks what can be checked without decoding pixels: the file opens as its type, the pixel limit,
    a real pixel type, the shape and channel count, and (TIFF) that every strip or tile lies inside
    the file, which catches truncated files.

    Parameters
    ----------
    path : str or Path
        A .tif/.tiff, .png or .npy file.
    channels : int, optional
        The expected channel count.
    max_pixels : int, optional
        The pixel limit per image (see `read_image`).

    Returns
    -------
    tuple of int
        (C, H, W) as `read_image` would return it.

    Raises
    ------
    PhenolensError
        One line naming the file and what is wrong, as `read_image` would.
    """
    path = Path(path)
    shape, dtype = _opened(path, max_pixels, _stored_shape)
    if not shape or 0 in shape:
        raise PhenolensError(f"{path}: cannot read image (no pixel data: the file is corrupt or empty); replace or remove the file")
    if dtype.kind not in REAL_KINDS:
        raise PhenolensError(f"{path}: pixels of type {dtype} are not real numbers; store integer or float intensities")
    return _checked_shape(path, shape, channels)


def _stored_shape(path: Path, suffix: str, limit: int) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the header, the pixel limit checked; a TIFF's strips must lie inside the file."""
    if suffix in (".tif", ".tiff"):
        import tifffile

        with _TiffWarnings() as damage, tifffile.TiffFile(path) as tif:
            if not tif.pages or not tif.series:
                return (), np.dtype(np.uint8)
            series = tif.series[0]
            check_pixel_count(path, series.shape, limit)
            size = path.stat().st_size
            for page in series.pages:
                ends = [offset + count for offset, count in zip(page.dataoffsets, page.databytecounts)]
                if ends and max(ends) > size:
                    raise ValueError(f"damaged file: its pixel data ends at byte {max(ends):,} of a {size:,}-byte file (truncated)")
            shape, dtype = series.shape, series.dtype
        if damage.messages:
            raise ValueError(f"damaged file: {damage.messages[0]}")
        return shape, dtype
    if suffix == ".png":
        from PIL import Image

        with Image.open(path) as image:
            bands = Image.getmodebands(_png_pixel_mode(image))
            shape = (image.height, image.width) if bands == 1 else (image.height, image.width, bands)
            check_pixel_count(path, shape, limit)
            return shape, np.dtype(np.uint16 if image.mode.startswith("I;16") else np.uint8)
    mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    check_pixel_count(path, mapped.shape, limit)
    return mapped.shape, mapped.dtype


def one_line_message(error: BaseException, limit: int = 300) -> str:
    """An exception's message squeezed onto one line, for wrapping a library's error in a `PhenolensError`.

    Parameters
    ----------
    error : BaseException
        The exception raised by a decoder or parser.
    limit : int
        The most characters kept.

    Returns
    -------
    str
        The message with every run of whitespace (newlines included) made one space, cut to `limit`.
    """
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_images(paths: Sequence[str | Path], channels: int | None = None, max_pixels: int | None = None) -> list[np.ndarray]:
    """Read many image files; the first file fixes the channel count unless `channels` is given.

    Parameters
    ----------
    paths : sequence of str or Path
        The image files, in order.
    channels : int, optional
        The expected channel count of every image.
    max_pixels : int, optional
        The pixel limit per image (see `read_image`).

    Returns
    -------
    list of numpy.ndarray
        One (C, H, W) array per path.

    Raises
    ------
    PhenolensError
        When any file is unreadable, too large or has another channel count.
    """
    images = []
    for path in progress(paths, "reading images", total=len(paths)):
        image = read_image(path, channels, max_pixels)
        channels = image.shape[0] if channels is None else channels
        images.append(image)
    return images


def _stack_if_uniform(images: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    shapes = {image.shape for image in images}
    return np.stack(images) if len(shapes) == 1 else images


def list_image_folder(folder: str | Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """The image files of a folder with one sub-folder per class, without reading them.

    Parameters
    ----------
    folder : str or Path
        The folder; each non-hidden sub-folder is a class named after it.

    Returns
    -------
    tuple of (list of Path, ndarray, list of str)
        The files (class by class, each sorted by name), their label indices and the class names (sorted).

    Raises
    ------
    PhenolensError
        When `folder` is not a folder, has no images, or has a class sub-folder without images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PhenolensError(f"{folder}: not a folder; give a folder with one sub-folder per class")
    class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    paths, labels, empty = [], [], []
    for index, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [index] * len(files)
        empty += [] if files else [class_dir]
    if not paths:
        raise PhenolensError(f"{folder}: no {'/'.join(IMAGE_SUFFIXES)} images in class sub-folders; check the path")
    if empty:  # a class without images would be a class the model can never learn or be scored on
        raise PhenolensError(f"{empty[0]}: a class sub-folder without {'/'.join(IMAGE_SUFFIXES)} images; add images or remove the folder")
    return paths, np.array(labels, dtype=np.int64), [d.name for d in class_dirs]


def read_image_folder(
    folder: str | Path, channel_names: Sequence[str] | None = None, name: str | None = None, max_pixels: int | None = None
) -> ImageSet:
    """Read a folder with one sub-folder per class holding tif/png/npy images.

    Parameters
    ----------
    folder : str or Path
        The folder; each non-hidden sub-folder is a class named after it.
    channel_names : sequence of str, optional
        The channel (stain) names; their count is checked against every image. Default ch0, ch1, ...
    name : str, optional
        The dataset name for reports; default the folder's name.
    max_pixels : int, optional
        The pixel limit per image (see `read_image`).

    Returns
    -------
    ImageSet
        The images labelled by their sub-folder, classes in sorted name order.

    Raises
    ------
    PhenolensError
        When `folder` is not a folder, has no images, has a class sub-folder without images, or an image
        cannot be read.
    """
    folder = Path(folder)
    paths, labels, class_names = list_image_folder(folder)
    images = read_images(paths, len(channel_names) if channel_names else None, max_pixels)
    channel_names = list(channel_names or [f"ch{i}" for i in range(images[0].shape[0])])
    meta = pd.DataFrame({"source": [str(p) for p in paths]})
    return ImageSet(_stack_if_uniform(images), labels, class_names, channel_names, meta, name=name or folder.name)


def read_csv_as_written(path: Path, columns: Sequence[str], **options) -> pd.DataFrame:
    """`pandas.read_csv` with `columns` kept as the text written in the file (an empty cell as '').

    pandas reads words such as 'None', 'NA' or 'null' as missing, which in a label or a path column are names
    (pandas 3 does so even before a converter sees the cell); the other columns are read as pandas reads them
    (its default missing-value words, per column). The rows are parsed once; the header is read first to name
    the columns.

    Parameters
    ----------
    path : Path
        A CSV file.
    columns : sequence of str
        The columns to keep as written (those the file lacks are ignored).
    **options
        Passed to `pandas.read_csv`; a ``dtype`` mapping (column -> type) applies to the other columns.

    Returns
    -------
    pandas.DataFrame
    """
    if not columns:  # nothing to keep as written: no header to read first
        return pd.read_csv(path, **options)
    header = pd.read_csv(path, **{**options, "nrows": 0}).columns
    literal = [column for column in columns if column in header]
    if not literal:
        return pd.read_csv(path, **options)
    # without the default words the literal columns keep every cell; the others are given pandas' default words back
    missing_words = {column: sorted(STR_NA_VALUES) for column in header if column not in literal}
    dtype = {**(options.pop("dtype", None) or {}), **dict.fromkeys(literal, str)}  # a caller's per-column types kept beside
    return pd.read_csv(path, dtype=dtype, keep_default_na=False, na_values=missing_words, **options)


def _read_csv(path: Path, what: str, as_written: Sequence[str] = (), text: Sequence[str] = (), **options) -> pd.DataFrame:
    """`pandas.read_csv` (`read_csv_as_written` for the `as_written` columns; the `text` columns as text, with pandas'
    missing-value words missing) with every failure and every duplicate column name as one line naming `path`."""
    try:
        header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False, sep=options.get("sep", ",")).iloc[0].tolist()
        text_columns = {column: str for column in text if column in header}
        if text_columns:
            options["dtype"] = text_columns
        table = read_csv_as_written(path, as_written, **options)
    except FileNotFoundError:
        raise PhenolensError(f"{path}: file not found; check the path") from None
    except pd.errors.EmptyDataError:
        raise PhenolensError(f"{path}: the file is empty; {what} needs a header line and one row per entry") from None
    except Exception as error:  # pandas raises parser, decoding, compression and OS errors of many types
        raise PhenolensError(f"{path}: cannot read the {what} ({type(error).__name__}: {one_line_message(error)})") from None
    _refuse_duplicate_columns(path, header)
    return table


def _refuse_duplicate_columns(path: Path, columns: Sequence) -> None:
    seen, duplicates = set(), []
    for column in map(str, columns):
        if column in seen and column not in duplicates:
            duplicates.append(column)
        seen.add(column)
    if duplicates:
        raise PhenolensError(
            f"{path}: duplicate column name{'s' if len(duplicates) > 1 else ''} {', '.join(map(repr, duplicates[:5]))}; "
            "every column needs a unique name (rename or drop the copies)"
        )


def _manifest_path(manifest: Path, row: int, value, allow_outside_paths: bool) -> Path:
    """The image path of one manifest row, refused when it leaves the manifest's folder unless allowed."""
    if not isinstance(value, str) or not value.strip():
        raise PhenolensError(f"{manifest}: row {row + 2} has no image path; fill the path column or drop the row")
    relative = Path(value)
    if not allow_outside_paths and (relative.is_absolute() or os.path.normpath(value).split(os.sep)[0] == os.pardir):
        raise PhenolensError(
            f"{manifest}: row {row + 2} path {value!r} leaves the manifest's folder; move the images beside the manifest "
            "or allow it explicitly (--allow-outside-paths)"
        )
    return manifest.parent / relative


def manifest_entries(
    manifest: str | Path,
    path_column: str = "path",
    label_column: str = "label",
    unlabelled: str | None = None,
    class_names: Sequence[str] | None = None,
    allow_outside_paths: bool = False,
) -> tuple[list[Path], np.ndarray, list[str], pd.DataFrame]:
    """The images a CSV manifest lists, checked but not read (see `read_manifest` for the rules).

    Parameters
    ----------
    manifest : str or Path
        The CSV file; paths are relative to its folder.
    path_column, label_column : str
        The columns holding the image path and the class label.
    unlabelled : str, optional
        The label that marks an unlabelled image (an empty label always does).
    class_names : sequence of str, optional
        The classes in label-index order; default the sorted labels found.
    allow_outside_paths : bool
        Accept paths that leave the manifest's folder.

    Returns
    -------
    tuple of (list of Path, ndarray, list of str, DataFrame)
        The image files, their label indices (`UNLABELLED` for none), the class names and the metadata
        (every other column; ``source`` holds the path).

    Raises
    ------
    PhenolensError
        As `read_manifest`, for everything but the images themselves.
    """
    manifest = Path(manifest)
    # pandas' missing-value words ('None', 'NA', 'null') are class names and file names here
    table = _read_csv(manifest, "manifest", as_written=(label_column, path_column))
    for column in (path_column, label_column):
        if column not in table:
            raise PhenolensError(f"{manifest}: missing column {column!r}; the manifest needs {path_column},{label_column}")
    if table.empty:
        raise PhenolensError(f"{manifest}: the manifest lists no images")
    raw_labels = table[label_column].fillna("").astype(str)
    is_unlabelled = (raw_labels == "") | (raw_labels == (unlabelled or ""))
    if is_unlabelled.all() and not class_names:
        marks = f"empty or {unlabelled!r}" if unlabelled else "empty"
        raise PhenolensError(f"{manifest}: every {label_column!r} is {marks}; give the images class labels")
    names = list(class_names) if class_names else sorted(set(raw_labels[~is_unlabelled]))
    unknown = sorted(set(raw_labels[~is_unlabelled]) - set(names))
    if unknown:
        raise PhenolensError(f"{manifest}: labels {unknown} are not among the classes {names}")
    lookup = {c: i for i, c in enumerate(names)}
    labels = np.array([UNLABELLED if u else lookup[v] for v, u in zip(raw_labels, is_unlabelled)])
    paths = [_manifest_path(manifest, row, value, allow_outside_paths) for row, value in enumerate(table[path_column])]
    meta = table.drop(columns=[label_column]).rename(columns={path_column: "source"})
    meta["source"] = [str(p) for p in paths]
    return paths, labels, names, meta


def read_manifest(
    manifest: str | Path,
    channel_names: Sequence[str] | None = None,
    path_column: str = "path",
    label_column: str = "label",
    unlabelled: str | None = None,
    class_names: Sequence[str] | None = None,
    name: str | None = None,
    allow_outside_paths: bool = False,
    max_pixels: int | None = None,
) -> ImageSet:
    """Read images listed in a CSV manifest (path,label,+metadata columns).

    Parameters
    ----------
    manifest : str or Path
        The CSV file. Paths are relative to its folder.
    channel_names : sequence of str, optional
        The channel (stain) names; their count is checked against every image. Default ch0, ch1, ...
    path_column, label_column : str
        The columns holding the image path and the class label.
    unlabelled : str, optional
        The label that marks an unlabelled image (an empty label always does).
    class_names : sequence of str, optional
        The classes in label-index order; default the sorted labels found.
    name : str, optional
        The dataset name for reports; default the manifest's stem.
    allow_outside_paths : bool
        Accept absolute paths and paths through ``..`` that leave the manifest's folder (refused by default
        so that a manifest cannot make phenolens read files elsewhere on the machine).
    max_pixels : int, optional
        The pixel limit per image (see `read_image`).

    Returns
    -------
    ImageSet
        The images, labels and every other column as per-image metadata (`source` holds the path).

    Raises
    ------
    PhenolensError
        When the manifest is unreadable, lacks a column, has duplicate column names, lists no images,
        labels no image (and no `class_names` are given), names an unknown class, has a row without a path,
        a path leaving its folder, or an unreadable image.
    """
    manifest = Path(manifest)
    paths, labels, names, meta = manifest_entries(manifest, path_column, label_column, unlabelled, class_names, allow_outside_paths)
    images = read_images(paths, len(channel_names) if channel_names else None, max_pixels)
    channel_names = list(channel_names or [f"ch{i}" for i in range(images[0].shape[0])])
    return ImageSet(
        _stack_if_uniform(images),
        labels,
        names,
        channel_names,
        meta,
        unlabelled_name=unlabelled or "Unlabelled",
        name=name or manifest.stem,
    )


def is_manifest(path: str | Path, path_column: str = "path", label_column: str = "label") -> bool:
    """Whether a CSV file is an image manifest (its header has the path and label columns).

    Parameters
    ----------
    path : str or Path
        A .csv file.
    path_column, label_column : str
        The columns a manifest has.

    Returns
    -------
    bool
        True when both columns are in the header.

    Raises
    ------
    PhenolensError
        When the file is missing, empty, unreadable or has duplicate column names.
    """
    header = _read_csv(Path(path), "table", nrows=0).columns
    return path_column in header and label_column in header


def text_separator(path: str | Path) -> str:
    """The column separator of a text profile table: a tab for `TAB_SEPARATED_SUFFIXES` (.tsv, .tsv.gz), else a comma.

    Parameters
    ----------
    path : str or Path
        The table.

    Returns
    -------
    str
        ``"\\t"`` or ``","``.
    """
    return "\t" if Path(path).name.lower().endswith(TAB_SEPARATED_SUFFIXES) else ","


IDENTIFIER_COLUMNS = ("Metadata_Plate", "Metadata_Well")  # the plate and well of the Metadata_ convention


def read_profiles(
    paths: str | Path | Sequence[str | Path],
    required_metadata: Sequence[str] = ("Metadata_Plate",),
    identifiers: Sequence[str] = IDENTIFIER_COLUMNS,
) -> pd.DataFrame:
    """Read and concatenate well-level profile tables (csv, csv.gz, tsv, tsv.gz, parquet).

    Columns starting with `Metadata_` are metadata; every other column must be numeric (a feature).
    NaN/inf values are kept (the profiling code counts and handles them).

    Parameters
    ----------
    paths : str, Path or sequence of them
        One or more tables; .parquet files are read with pyarrow, .tsv/.tsv.gz as tab-separated text, everything else as
        (compressed) CSV.
    required_metadata : sequence of str
        Metadata columns every table must have.
    identifiers : sequence of str
        The identifier columns (plate, well, batch, treatment, ...): read from text files as written ("0001" stays
        "0001", not the number 1; pandas' missing-value words stay missing), from parquet as stored; where the tables
        disagree (text in one, numbers in another) they are text in all (`mixed_identifiers`).

    Returns
    -------
    pandas.DataFrame
        The rows of all tables, in order.

    Raises
    ------
    PhenolensError
        When no path is given, or a table is missing, unreadable, empty, has no rows, has duplicate
        column names, lacks a required column, or has a non-numeric feature column.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise PhenolensError("no profile files given; pass one or more csv/csv.gz/tsv/tsv.gz/parquet files")
    tables = []
    for path in map(Path, paths):
        if path.suffix == ".parquet":
            table = _read_parquet(path)
        else:
            table = _read_csv(path, "profile table", text=identifiers, low_memory=False, sep=text_separator(path))
        if table.empty:
            raise PhenolensError(f"{path}: the table has {len(table.columns)} columns but no rows; give a table with one row per well")
        for column in required_metadata:
            if column not in table and len(table.columns) == 1 and "\t" in str(table.columns[0]):
                raise PhenolensError(f"{path}: tab-separated, but read as comma-separated; name it .tsv or .tsv.gz (or write it with commas)")
            if column not in table:
                raise PhenolensError(f"{path}: missing metadata column {column!r}; add it or name another with the matching option")
        require_numeric_features(table, feature_columns(table), str(path))
        tables.append(table)
    if len(tables) == 1:
        return tables[0]
    mixed = mixed_identifiers(tables, identifiers)
    return pd.concat([identifiers_as_text(table, mixed) for table in tables], ignore_index=True)


def mixed_identifiers(tables: Sequence[pd.DataFrame], identifiers: Sequence[str]) -> list[str]:
    """The identifier columns that are text in one table and numbers in another (to be made text in all).

    A plate written "0001" in a CSV file and a plate stored as the integer 7 in a parquet file meet as text ("7"),
    so that they compare, sort and are written as one type; identifiers that are numbers in every table stay numbers.

    Parameters
    ----------
    tables : sequence of pandas.DataFrame
        Tables to be joined or concatenated.
    identifiers : sequence of str
        The identifier columns (those a table lacks are ignored).

    Returns
    -------
    list of str
        The columns, in `identifiers` order.
    """
    kinds = {column: {pd.api.types.is_numeric_dtype(table[column]) for table in tables if column in table} for column in identifiers}
    return [column for column in identifiers if len(kinds[column]) > 1]


def identifiers_as_text(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """`table` with `columns` (those it has) as text: 7 becomes "7", a missing value stays missing.

    Parameters
    ----------
    table : pandas.DataFrame
        A table (not modified).
    columns : sequence of str
        The columns to make text (`mixed_identifiers`).

    Returns
    -------
    pandas.DataFrame
        `table` itself when it has none of `columns`, else a copy.
    """
    present = [column for column in columns if column in table]
    return table.assign(**{column: table[column].map(str, na_action="ignore") for column in present}) if present else table


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        import pyarrow.parquet as pq

        _refuse_duplicate_columns(path, pq.read_schema(path).names)
        return pd.read_parquet(path)
    except PhenolensError:
        raise
    except FileNotFoundError:
        raise PhenolensError(f"{path}: file not found; check the path") from None
    except Exception as error:  # pyarrow raises ArrowInvalid, OSError, ValueError, ...
        raise PhenolensError(f"{path}: cannot read the profile table ({type(error).__name__}: {one_line_message(error)})") from None


def require_numeric_features(table: pd.DataFrame, features: Sequence[str], source: str) -> None:
    """Refuse a profile table unless `features` is non-empty and every one is numeric.

    Parameters
    ----------
    table : pandas.DataFrame
        The profile table.
    features : sequence of str
        Its feature columns.
    source : str
        The file or table named in the error.

    Raises
    ------
    PhenolensError
        When there is no feature column or one is not numeric.
    """
    if not features:
        raise PhenolensError(f"{source}: no feature columns (every column starts with Metadata_)")
    dtypes = table.dtypes  # one lookup: indexing 800 columns one by one took 0.4 s per plate file
    bad = [c for c in features if not pd.api.types.is_numeric_dtype(dtypes[c]) or pd.api.types.is_complex_dtype(dtypes[c])]
    if bad:
        raise PhenolensError(
            f"{source}: feature column {bad[0]!r} is not numeric"
            f"{f' (and {len(bad) - 1} more)' if len(bad) > 1 else ''}; rename metadata columns with a Metadata_ prefix or fix the values"
        )


def feature_columns(table: pd.DataFrame) -> list[str]:
    """The feature columns of a profile table: every column not starting with `Metadata_`.

    Parameters
    ----------
    table : pandas.DataFrame
        A profile table.

    Returns
    -------
    list of str
        The feature column names in table order.
    """
    return [c for c in table.columns if not str(c).startswith("Metadata_")]


def metadata_columns(table: pd.DataFrame) -> list[str]:
    """The `Metadata_` columns of a profile table.

    Parameters
    ----------
    table : pandas.DataFrame
        A profile table.

    Returns
    -------
    list of str
        The metadata column names in table order.
    """
    return [c for c in table.columns if str(c).startswith("Metadata_")]


def read_signal(path: str | Path, params_path: str | Path | None = None) -> Signal:
    """Read a 1-D signal from .npy (no pickles) or a text file with one sample per line.

    Parameters
    ----------
    path : str or Path
        A .npy array or a text file; an (N, 1) or (1, N) array counts as one signal.
    params_path : str or Path, optional
        A JSON object of acquisition parameters (sampling rate, ...) stored with the signal.

    Returns
    -------
    Signal
        The samples as float64 and the parameters (the container refuses no samples and non-finite ones).

    Raises
    ------
    PhenolensError
        When a file is missing or unreadable, the samples are not real numbers, not one column, empty or
        not finite, or the parameters are not a JSON object.
    """
    path = Path(path)
    try:
        if path.suffix == ".npy":
            values = _load_npy(path)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # an empty file is reported below, once
                values = np.loadtxt(path, ndmin=1)
    except FileNotFoundError:
        raise PhenolensError(f"{path}: file not found") from None
    except Exception as error:  # loadtxt/np.load raise ValueError, EOFError, ...
        raise PhenolensError(f"{path}: cannot read the signal ({type(error).__name__}: {one_line_message(error)})") from None
    if values.dtype.kind not in REAL_KINDS:
        raise PhenolensError(f"{path}: samples of type {values.dtype} are not real numbers; store one real sample per line")
    if sum(size > 1 for size in values.shape) > 1:
        raise PhenolensError(f"{path}: holds a {'x'.join(map(str, values.shape))} array, not one signal; store one sample per line (one column)")
    return Signal(name=path.stem, values=values, params=read_json_object(params_path, "signal parameters") if params_path else {}, source=str(path))


def read_npz_arrays(path: str | Path, names: Sequence[str], what: str, remedy: str) -> list[np.ndarray]:
    """The named arrays of an ``.npz`` file, never unpickled.

    Parameters
    ----------
    path : str or Path
        The ``.npz`` file.
    names : sequence of str
        The arrays to read, in this order.
    what : str
        What the file holds, for the error (e.g. "split").
    remedy : str
        What the user should do when it is unreadable.

    Returns
    -------
    list of numpy.ndarray
        The arrays.

    Raises
    ------
    PhenolensError
        When the file is unreadable, not a zip, truncated, holds objects or lacks an array.
    """
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as stored:
            return [np.asarray(stored[name]) for name in names]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise PhenolensError(f"{path}: unreadable or incomplete {what} ({type(error).__name__}); {remedy}") from None


def read_json_object(path: str | Path, what: str, max_bytes: int = MAX_JSON_BYTES) -> dict:
    """Read a JSON object strictly: bounded size, no NaN/Infinity, an object at the top.

    Parameters
    ----------
    path : str or Path
        The JSON file.
    what : str
        What the file holds, for the error (e.g. "model config").
    max_bytes : int
        Files larger than this are refused before they are read.

    Returns
    -------
    dict
        The parsed object.

    Raises
    ------
    PhenolensError
        When the file is missing, too large, not UTF-8 JSON, holds a non-finite constant, nests too deeply
        or is not a JSON object.
    """
    path = Path(path)
    try:
        if path.stat().st_size > max_bytes:
            raise PhenolensError(f"{path}: {path.stat().st_size:,} bytes is too large for a {what} (limit {max_bytes:,}); restore the file")
        value = json.loads(path.read_text(), parse_constant=_refuse_constant)
    except FileNotFoundError:
        raise PhenolensError(f"{path}: file not found") from None
    except (OSError, ValueError, RecursionError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise PhenolensError(f"{path}: unreadable {what} ({type(error).__name__}: {one_line_message(error)}); restore or rewrite the file") from None
    if not isinstance(value, dict):
        raise PhenolensError(f"{path}: the {what} must be a JSON object, got {type(value).__name__}")
    return value


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a finite number")
