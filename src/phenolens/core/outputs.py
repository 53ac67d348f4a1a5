"""Atomic outputs: results appear complete or not at all.

Everything is written under a temporary sibling name and renamed into place when complete, so a
crash never leaves a half-written folder or file that looks finished.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from phenolens.core.errors import PhenolensError


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


# tempfile creates private (0600/0700) entries; finished outputs get the usual permissions.
FILE_MODE = 0o666 & ~_umask()
DIR_MODE = 0o777 & ~_umask()


@contextlib.contextmanager
def atomic_output_dir(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder that replaces `path` only if the block finishes without error.

    An existing folder at `path` is kept until the new one is complete. With `overwrite=False`
    an existing non-empty `path` is an error. Commands write through `phenolens.core.runs.RunWriter`,
    which adds run.json and the output-safety checks; this is its low-level building block.

    Parameters
    ----------
    path : path
        The final folder.
    overwrite : bool
        Replace an existing non-empty folder.

    Yields
    ------
    Path
        The staging folder to write into.

    Raises
    ------
    PhenolensError
        When `path` is a file, or a non-empty folder and `overwrite` is False.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise PhenolensError(f"output path {target} exists and is a file; choose a folder name")
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise PhenolensError(f"output folder {target} is not empty; remove it or pass --overwrite")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    staging.chmod(DIR_MODE)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():
        retired = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(retired)
        staging.rename(target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(target)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder, then rename.

    Parameters
    ----------
    path : path
        The file to write (parent folders are created).
    data : bytes
        The content.

    Returns
    -------
    Path
        `path`.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return target


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically (see `atomic_write_bytes`).

    Parameters
    ----------
    path : path
        The file to write.
    text : str
        The content.

    Returns
    -------
    Path
        `path`.
    """
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(value: Any) -> Any:
    """Convert numpy/pandas scalars and arrays to plain JSON types; NaN/inf become None.

    Parameters
    ----------
    value : Any
        Nested dicts, lists, tuples, numpy arrays and scalars, paths and plain values.

    Returns
    -------
    Any
        The same structure with dict keys as strings, arrays as lists, paths as strings.
    """
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Write `payload` as indented JSON atomically, converting numpy types.

    Parameters
    ----------
    path : path
        The file to write.
    payload : Any
        Anything `to_jsonable` converts.

    Returns
    -------
    Path
        `path`.
    """
    return atomic_write_text(path, json.dumps(to_jsonable(payload), indent=2, sort_keys=False) + "\n")
