"""A study's rows on disk, read a few at a time: the evaluation of a streamed study in bounded memory.

Percent replicating and mAP read a representation's unit rows by index (replicate groups, random
null groups, replicate pairs), all over the study. Held in memory, one representation's float32 rows
of 552,000 treated wells are 3.3 GB (the concatenation). Written once to a ``.npy`` file, the rows a
step asks for are read with plain file reads (one per run of consecutive rows), so the process holds
those rows and nothing else; the page cache keeps the file (it is not the process's memory, and the
kernel gives it back under pressure). A memory map would not do: the kernel maps whole page-cache
folios around each random row it faults in, and a few thousand random rows put most of the file in
the process's resident set (measured: 32 MiB of rows from an 867 MiB file, +897 MiB RSS).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np


class RowFile:
    """The rows of a 2-D ``.npy`` file, copied out by integer index on demand (``rows[indices]``).

    Parameters
    ----------
    path : str or os.PathLike
        A C-ordered 2-D array saved as ``.npy`` (`write_rows`).

    Attributes
    ----------
    shape : tuple of int
        (rows, columns).
    dtype : numpy.dtype
        The rows' type.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as file:
            read_header = np.lib.format.read_array_header_1_0 if np.lib.format.read_magic(file) == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran_order, self.dtype = read_header(file)
            self.offset = file.tell()
        if len(shape) != 2 or fortran_order:
            raise ValueError(f"{self.path}: not a C-ordered 2-D array")
        self.shape = shape
        self.row_bytes = shape[1] * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, indices) -> np.ndarray:
        """A copy of the rows at integer `indices` (any shape; the result has that shape plus the columns)."""
        indices = np.asarray(indices, dtype=np.int64)
        wanted, where = np.unique(indices, return_inverse=True)
        if len(wanted) and (wanted[0] < 0 or wanted[-1] >= self.shape[0]):
            raise IndexError(f"{self.path}: row index out of range for {self.shape[0]} rows")
        rows = np.empty((len(wanted), self.shape[1]), dtype=self.dtype)
        buffer = memoryview(rows).cast("B")
        starts = np.flatnonzero(np.diff(wanted, prepend=-2) != 1)  # runs of consecutive rows: one read each
        with open(self.path, "rb", buffering=0) as file:
            for start, end in zip(starts.tolist(), [*starts[1:].tolist(), len(wanted)]):
                file.seek(self.offset + int(wanted[start]) * self.row_bytes)
                _read_fully(file, buffer[start * self.row_bytes : end * self.row_bytes], self.path)
        return rows[where.reshape(indices.shape)]


def _read_fully(file, buffer: memoryview, path: Path) -> None:
    """Fill `buffer` from `file`: one read returns at most about 2 GiB on Linux, and may return less on any file system."""
    filled = 0
    while filled < len(buffer):
        count = file.readinto(buffer[filled:])
        if not count:
            raise OSError(f"{path}: the file is shorter than its header says")
        filled += count


def write_rows(path: str | os.PathLike, pieces: Iterable[np.ndarray], rows: int, columns: int, dtype=np.float32) -> RowFile:
    """Write pieces of rows, one after the other, as one ``.npy`` array without holding more than one piece.

    Parameters
    ----------
    path : str or os.PathLike
        The file (replaced).
    pieces : iterable of numpy.ndarray
        (rows_i, columns) arrays; their rows add up to `rows`.
    rows, columns : int
        The whole array's shape (written first, in the header).
    dtype : numpy.dtype
        The stored type (pieces are cast to it).

    Returns
    -------
    RowFile
        The written rows.

    Raises
    ------
    ValueError
        When the pieces do not add up to `rows` x `columns`.
    """
    written = 0
    with open(path, "wb") as out:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": (rows, columns)}
        np.lib.format.write_array_header_1_0(out, header)
        for piece in pieces:
            if piece.ndim != 2 or piece.shape[1] != columns:
                raise ValueError(f"a piece of shape {piece.shape} does not fit rows of {columns} columns")
            out.write(np.ascontiguousarray(piece, dtype=dtype).tobytes())
            written += len(piece)
    if written != rows:
        raise ValueError(f"the pieces hold {written} rows, not {rows}")
    return RowFile(path)
