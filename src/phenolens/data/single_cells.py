"""CellProfiler single-cell output, read one plate at a time: SQLite (cytominer-database), parquet (CytoTable), CSV.

Layouts:

- **SQLite** as cytominer-database writes it: a per-image table (``Image``) holding ``TableNumber``
  (absent in CellProfiler's own ExportToDatabase files), ``ImageNumber`` and image metadata
  (``Metadata_Plate`` / ``Image_Metadata_Plate``, ``..._Well``, ``..._Site``), and one table per
  compartment (``Cells``, ``Cytoplasm``, ``Nuclei``) with ``TableNumber``, ``ImageNumber``,
  ``ObjectNumber``, the links ``Cytoplasm_Parent_*`` and the ``<Compartment>_*`` features.
- **parquet** as CytoTable writes it (a file or a folder of parts): one joined row per cell,
  ``Metadata_*`` / ``Image_Metadata_*`` columns and the features of every compartment.
- **CSV** (``.csv``, ``.csv.gz``): the same joined layout as text.

`inspect_single_cells` checks a source cheaply (schema, table list, plate list; no cell is read)
and says in one line what is wrong; the ``read_plate_*`` functions read one plate's rows, so memory
is bounded by the largest plate, not by the file. Queries are plain filtered SELECTs; the joins and
the aggregation happen in `phenolens.profiling.aggregate` through pycytominer.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from phenolens.core.errors import PhenolensError
from phenolens.data.readers import one_line_message

SQLITE_MAGIC = b"SQLite format 3\x00"
PLATE_COLUMNS = ("Metadata_Plate", "Image_Metadata_Plate")
WELL_COLUMNS = ("Metadata_Well", "Image_Metadata_Well")
SITE_COLUMNS = ("Metadata_Site", "Image_Metadata_Site")
# Columns that link objects to images and to each other (pycytominer's default linking columns):
# identifiers, never features.
LINK_COLUMNS = ("TableNumber", "ImageNumber", "ObjectNumber", "Cytoplasm_Parent_Cells", "Cytoplasm_Parent_Nuclei")
# Metadata that names an image or an object, not a well: never carried to the well table.
_PER_OBJECT = re.compile(r"ImageNumber|ObjectNumber|TableNumber|_Parent_|Object_Number|Site|FileName|PathName|URL", re.IGNORECASE)
_NUMERIC_SQL = re.compile(r"INT|REAL|FLOA|DOUB|NUM|DEC", re.IGNORECASE)
SINGLE_CELL_KINDS = ("sqlite", "parquet", "csv")
CSV_CHUNK_ROWS = 100_000  # rows of a CSV parsed at a time while one plate's cells are picked out


@dataclass(frozen=True)
class SingleCellSource:
    """One checked single-cell file: where it is, its layout, and which columns mean what.

    Attributes
    ----------
    path : Path
        The file (or parquet folder).
    kind : str
        ``"sqlite"``, ``"parquet"`` or ``"csv"``.
    plate_column, well_column : str
        The plate and well columns as the source names them (in the Image table for SQLite).
    site_column : str or None
        The image-site column of an SQLite Image table (counts images per well), if any.
    compartments : tuple of (str, tuple of str)
        Per compartment, its SQLite table name (or its feature prefix for joined tables) and its
        feature columns, in order.
    metadata : tuple of str
        Candidate well-level metadata columns (kept when constant within every well).
    merge_columns : tuple of str
        Columns linking SQLite objects to images (``TableNumber``, ``ImageNumber``); empty for joined tables.
    image_table : str or None
        The SQLite Image table's name.
    plates : tuple
        The plates, in sorted order.
    """

    path: Path
    kind: str
    plate_column: str
    well_column: str
    site_column: str | None
    compartments: tuple[tuple[str, tuple[str, ...]], ...]
    metadata: tuple[str, ...]
    merge_columns: tuple[str, ...]
    image_table: str | None
    plates: tuple

    @property
    def features(self) -> list[str]:
        """Every feature column, compartment by compartment."""
        return [column for _, columns in self.compartments for column in columns]

    def restricted_to(self, features: Sequence[str]) -> SingleCellSource:
        """This source with only `features` kept (e.g. those every input file has), order unchanged."""
        keep = set(features)
        return dataclasses.replace(self, compartments=tuple((name, tuple(c for c in columns if c in keep)) for name, columns in self.compartments))


def single_cell_kind(path: str | os.PathLike) -> str:
    """The layout of a single-cell file by its name: ``sqlite``, ``parquet`` or ``csv``.

    Parameters
    ----------
    path : path
        A ``.sqlite``/``.db``, ``.parquet`` (file or folder) or ``.csv``/``.csv.gz`` file.

    Returns
    -------
    str
        One of `SINGLE_CELL_KINDS`.

    Raises
    ------
    PhenolensError
        For a missing path or another suffix.
    """
    path = Path(path)
    if not path.exists():
        raise PhenolensError(f"{path}: no such file; give CellProfiler single-cell output (.sqlite, .parquet, .csv)")
    name = path.name.lower()
    if name.endswith((".sqlite", ".sqlite3", ".db")):
        return "sqlite"
    if name.endswith(".parquet") or (path.is_dir() and any(path.glob("*.parquet"))):
        return "parquet"
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    raise PhenolensError(f"{path}: unknown single-cell format; give a .sqlite (cytominer-database), .parquet (CytoTable) or .csv file")


def _pick(columns: Sequence[str], wanted: str | None, candidates: Sequence[str], role: str, where: str, option: str) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise PhenolensError(f"{where}: no {role} column {wanted!r}; it has {_some(columns)}; name another with {option}")
        return wanted
    for candidate in candidates:
        if candidate in columns:
            return candidate
    raise PhenolensError(f"{where}: no {role} column ({' or '.join(candidates)}); it has {_some(columns)}; name it with {option}")


def _some(columns: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(map(str, list(columns)[:limit]))
    return shown + (f" and {len(columns) - limit} more" if len(columns) > limit else "") if columns else "no columns"


def _metadata_candidates(columns: Sequence[str], taken: Sequence[str]) -> tuple[str, ...]:
    return tuple(
        c for c in columns if c not in taken and (c.startswith("Metadata_") or c.startswith("Image_Metadata_")) and not _PER_OBJECT.search(c)
    )


def inspect_single_cells(
    path: str | os.PathLike,
    compartments: Sequence[str] = ("cells", "cytoplasm", "nuclei"),
    image_table: str = "Image",
    plate_column: str | None = None,
    well_column: str | None = None,
    features: Sequence[str] = (),
) -> SingleCellSource:
    """Check a single-cell file without reading its cells; describe its layout and list its plates.

    Parameters
    ----------
    path : path
        SQLite, parquet (file or folder of parts) or CSV single-cell output.
    compartments : sequence of str
        Compartments to aggregate: SQLite table names, or feature prefixes of a joined table
        (matched without regard to case, as pycytominer does).
    image_table : str
        The SQLite per-image table.
    plate_column, well_column : str, optional
        The plate and well columns; default: ``Metadata_*``, else ``Image_Metadata_*``.
    features : sequence of str
        Only these feature columns (default: every numeric column with a compartment prefix).

    Returns
    -------
    SingleCellSource
        The checked layout and its plates.

    Raises
    ------
    PhenolensError
        One line naming the file (and table and column) for: not an SQLite file or a damaged one,
        an unreadable parquet or CSV, a missing table (listing the tables it has), a missing plate
        or well column, no feature columns, a non-numeric feature, no rows.
    """
    path = Path(path)
    kind = single_cell_kind(path)
    if kind == "sqlite":
        return _inspect_sqlite(path, compartments, image_table, plate_column, well_column, features)
    columns, types = _joined_schema(path, kind)
    plate = _pick(columns, plate_column, PLATE_COLUMNS, "plate", str(path), "--plate-column")
    well = _pick(columns, well_column, WELL_COLUMNS, "well", str(path), "--well-column")
    found = []
    for compartment in compartments:
        prefix = compartment.lower() + "_"  # without regard to case, as pycytominer ("MitoObjects".title() is "Mitoobjects")
        chosen = [c for c in columns if c.lower().startswith(prefix) and c not in LINK_COLUMNS and (not features or c in features)]
        _require_numeric(chosen, types, f"{path}")
        found.append((compartment.title(), tuple(chosen)))
    _require_features(found, str(path), features)
    plates = _joined_plates(path, kind, plate)
    return SingleCellSource(path, kind, plate, well, None, tuple(found), _metadata_candidates(columns, (plate, well)), (), None, plates)


def _require_numeric(columns: Sequence[str], types: dict[str, bool], where: str) -> None:
    bad = [c for c in columns if not types[c]]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise PhenolensError(f"{where}: feature column {bad[0]!r} is not numeric{more}; fix the values or leave it out")


def _require_features(found: Sequence[tuple[str, Sequence[str]]], where: str, features: Sequence[str]) -> None:
    if not any(columns for _, columns in found):
        wanted = "the --feature-columns given" if features else f"a {' / '.join(name + '_' for name, _ in found)} prefix"
        raise PhenolensError(f"{where}: no feature columns ({wanted}); check --compartments and the file")
    unknown = sorted(set(features) - {column for _, columns in found for column in columns})
    if unknown:
        raise PhenolensError(f"{where}: no feature column {unknown[0]!r} (--feature-columns) in the compartments {', '.join(n for n, _ in found)}")


# -- SQLite (cytominer-database) --------------------------------------------------------------


def connect_read_only(path: Path) -> sqlite3.Connection:
    """Open an SQLite file read-only (a user's input is never written to).

    Parameters
    ----------
    path : Path
        The file.

    Returns
    -------
    sqlite3.Connection
        A read-only connection.

    Raises
    ------
    PhenolensError
        When the file does not start with the SQLite header or cannot be opened.
    """
    with open(path, "rb") as stream:
        head = stream.read(len(SQLITE_MAGIC))
    if head != SQLITE_MAGIC:
        raise PhenolensError(f"{path}: not an SQLite file; give the .sqlite file cytominer-database wrote (or a .parquet / .csv table)")
    try:
        return sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise PhenolensError(f"{path}: cannot open the SQLite file ({one_line_message(error)})") from None


def _plain(value):
    """A numpy scalar as the Python value sqlite3 can bind."""
    return value.item() if hasattr(value, "item") else value


def _sql_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _query(connection: sqlite3.Connection, path: Path, sql: str, parameters: Sequence = ()) -> list[tuple]:
    try:
        return connection.execute(sql, parameters).fetchall()
    except sqlite3.Error as error:
        raise PhenolensError(f"{path}: the SQLite file is damaged or unreadable ({one_line_message(error)})") from None


def _table_columns(connection: sqlite3.Connection, path: Path, table: str) -> dict[str, str]:
    """Column name -> declared type of an SQLite table."""
    return {row[1]: (row[2] or "") for row in _query(connection, path, f"PRAGMA table_info({_sql_name(table)})")}


def _inspect_sqlite(path, compartments, image_table, plate_column, well_column, features) -> SingleCellSource:
    connection = connect_read_only(path)
    try:
        tables = {row[0].lower(): row[0] for row in _query(connection, path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = [name for name in (image_table, *compartments) if name.lower() not in tables]
        if missing:
            has = ", ".join(sorted(tables.values())) or "no tables"
            raise PhenolensError(f"{path}: no table {missing[0]!r} (it has {has}); name the tables with --image-table and --compartments")
        image = tables[image_table.lower()]
        image_columns = _table_columns(connection, path, image)
        where = f"{path}: table {image}"
        plate = _pick(list(image_columns), plate_column, PLATE_COLUMNS, "plate", where, "--plate-column")
        well = _pick(list(image_columns), well_column, WELL_COLUMNS, "well", where, "--well-column")
        site = next((c for c in SITE_COLUMNS if c in image_columns), None)
        merge = tuple(c for c in ("TableNumber", "ImageNumber") if c in image_columns)
        if "ImageNumber" not in merge:
            raise PhenolensError(f"{where}: no ImageNumber column; it has {_some(list(image_columns))}; is this CellProfiler output?")
        found = []
        for compartment in compartments:
            table = tables[compartment.lower()]
            columns = _table_columns(connection, path, table)
            absent = [c for c in (*merge, "ObjectNumber") if c not in columns]
            if absent:
                raise PhenolensError(
                    f"{path}: table {table} has no {absent[0]} column linking its objects to images; is this cytominer-database output?"
                )
            prefix = compartment.lower() + "_"  # without regard to case, as pycytominer: MitoObjects_* of --compartments MitoObjects
            chosen = [c for c in columns if c.lower().startswith(prefix) and c not in LINK_COLUMNS and (not features or c in features)]
            _require_numeric(chosen, {c: bool(_NUMERIC_SQL.search(columns[c])) for c in chosen}, f"{path}: table {table}")
            found.append((table, tuple(chosen)))
            if not _query(connection, path, f"SELECT 1 FROM {_sql_name(table)} LIMIT 1"):
                raise PhenolensError(f"{path}: table {table} is empty (no objects); give the file with the single-cell measurements")
        _require_features(found, str(path), features)
        plates = [row[0] for row in _query(connection, path, f"SELECT DISTINCT {_sql_name(plate)} FROM {_sql_name(image)}")]
    finally:
        connection.close()
    if not plates:
        raise PhenolensError(f"{path}: table {image} is empty (no images); give the file with the single-cell measurements")
    if any(p is None for p in plates):
        raise PhenolensError(f"{path}: table {image} has images without a plate ({plate} is empty); fill it in")
    metadata = _metadata_candidates(list(image_columns), (plate, well))
    return SingleCellSource(path, "sqlite", plate, well, site, tuple(found), metadata, merge, image, tuple(sorted(plates, key=str)))


def read_plate_images(source: SingleCellSource, plate) -> pd.DataFrame:
    """The Image-table rows of one plate: link columns, plate, well, site and metadata columns.

    Parameters
    ----------
    source : SingleCellSource
        An SQLite source.
    plate : object
        One of ``source.plates``.

    Returns
    -------
    pandas.DataFrame
        One row per image of the plate.
    """
    columns = list(
        dict.fromkeys([*source.merge_columns, source.plate_column, source.well_column, *filter(None, [source.site_column]), *source.metadata])
    )
    sql = f"SELECT {', '.join(map(_sql_name, columns))} FROM {_sql_name(source.image_table)} WHERE {_sql_name(source.plate_column)} = ?"
    connection = connect_read_only(source.path)
    try:
        rows = _query(connection, source.path, sql, [_plain(plate)])
    finally:
        connection.close()
    return pd.DataFrame.from_records(rows, columns=columns)


def read_plate_objects(source: SingleCellSource, images: pd.DataFrame, table: str, features: Sequence[str]) -> pd.DataFrame:
    """The objects of one compartment table that belong to `images` (one plate's images).

    Rows are selected by table number and image-number range, so a query reads one plate's
    objects; the exact match to the images is the caller's join.

    Parameters
    ----------
    source : SingleCellSource
        An SQLite source.
    images : pandas.DataFrame
        `read_plate_images` of one plate.
    table : str
        The compartment table.
    features : sequence of str
        Its feature columns to read.

    Returns
    -------
    pandas.DataFrame
        Link columns, ``ObjectNumber`` and the features, one row per object.
    """
    columns = [*source.merge_columns, "ObjectNumber", *features]
    conditions, parameters = [], []
    groups = (
        images.groupby(list(source.merge_columns[:-1]), sort=True)["ImageNumber"] if len(source.merge_columns) > 1 else [((), images["ImageNumber"])]
    )
    for key, numbers in groups:
        clause = "ImageNumber BETWEEN ? AND ?"
        if len(source.merge_columns) > 1:
            clause = f"TableNumber = ? AND {clause}"
            parameters.append(_plain(key[0] if isinstance(key, tuple) else key))
        parameters += [int(numbers.min()), int(numbers.max())]
        conditions.append(f"({clause})")
    sql = f"SELECT {', '.join(map(_sql_name, columns))} FROM {_sql_name(table)} WHERE {' OR '.join(conditions)}"
    connection = connect_read_only(source.path)
    try:
        try:
            return pd.read_sql_query(sql, connection, params=parameters)
        except (sqlite3.Error, pd.errors.DatabaseError) as error:
            raise PhenolensError(f"{source.path}: table {table} is damaged or unreadable ({one_line_message(error)})") from None
    finally:
        connection.close()


# -- joined tables (CytoTable parquet, CSV) ---------------------------------------------------


def _joined_schema(path: Path, kind: str) -> tuple[list[str], dict[str, bool]]:
    """(column names, whether each is numeric) of a joined single-cell table, read from its schema/header."""
    import pyarrow as pa

    try:
        if kind == "parquet":
            schema = _parquet_dataset(path).schema
        else:
            # The first rows decide which columns are numbers; a later text value is reported when its plate is read.
            schema = pa.Schema.from_pandas(pd.read_csv(path, nrows=1000, low_memory=False), preserve_index=False)
    except PhenolensError:
        raise
    except Exception as error:  # noqa: BLE001 - pyarrow and pandas raise many types for a damaged file
        raise PhenolensError(f"{path}: cannot read the {kind} table ({type(error).__name__}: {one_line_message(error)})") from None
    names = list(schema.names)
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise PhenolensError(f"{path}: column {duplicate!r} appears twice; give each column one name")
    return names, {
        field.name: pa.types.is_integer(field.type) or pa.types.is_floating(field.type) or pa.types.is_null(field.type) for field in schema
    }


def _parquet_dataset(path: Path):
    import pyarrow.dataset as ds

    return ds.dataset(path, format="parquet")


def _joined_plates(path: Path, kind: str, plate: str) -> tuple:
    frame = _read_joined(path, kind, [plate], None)
    if frame.empty:
        raise PhenolensError(f"{path}: the table has no rows; give the single-cell table with one row per cell")
    if frame[plate].isna().any():
        raise PhenolensError(f"{path}: rows without a plate ({plate} is empty); fill it in")
    return tuple(sorted(frame[plate].unique().tolist(), key=str))


def _read_joined(
    path: Path, kind: str, columns: list[str], plate_filter: tuple[str, object] | None, numeric_columns: Sequence[bool] = ()
) -> pd.DataFrame:
    """Columns of a joined table, optionally only one plate's rows; parquet filters while reading, CSV in chunks.

    `numeric_columns` says which `columns` are features (read as floats from CSV; the rest as text).
    """
    numeric_columns = list(numeric_columns) or [False] * len(columns)
    try:
        if kind == "parquet":
            import pyarrow.dataset as ds

            expression = None if plate_filter is None else ds.field(plate_filter[0]) == plate_filter[1]
            return _parquet_dataset(path).to_table(columns=columns, filter=expression).to_pandas()
        # Text metadata (plate, well, ...) stays text on every chunk; features are numbers or the read fails.
        types = {c: (float if numeric else str) for c, numeric in zip(columns, numeric_columns)}
        chunks = [pd.DataFrame({c: pd.Series(dtype=t) for c, t in types.items()})]
        for chunk in pd.read_csv(path, usecols=columns, chunksize=CSV_CHUNK_ROWS, dtype=types):
            chunks.append(chunk if plate_filter is None else chunk[chunk[plate_filter[0]] == plate_filter[1]])
        return pd.concat(chunks, ignore_index=True)[columns]
    except Exception as error:  # noqa: BLE001 - pyarrow and pandas raise many types for a damaged file
        raise PhenolensError(f"{path}: cannot read the {kind} table ({type(error).__name__}: {one_line_message(error)})") from None


def read_plate_cells(source: SingleCellSource, plate) -> pd.DataFrame:
    """The cells of one plate of a joined (parquet or CSV) table: plate, well, metadata and feature columns.

    Parameters
    ----------
    source : SingleCellSource
        A parquet or CSV source.
    plate : object
        One of ``source.plates``.

    Returns
    -------
    pandas.DataFrame
        One row per cell of the plate.
    """
    metadata = list(dict.fromkeys([source.plate_column, source.well_column, *source.metadata]))
    numeric = [False] * len(metadata) + [True] * len(source.features)
    return _read_joined(source.path, source.kind, metadata + source.features, (source.plate_column, plate), numeric)
