"""Decode a piximi project file (JSON with base64 PNG channels) into a folder of crops."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from phenolens.core.errors import PhenolensError


def decode_piximi_project(path: str | Path) -> tuple[list[np.ndarray], pd.DataFrame]:
    """Read a piximi project.

    Parameters
    ----------
    path : str or Path
        A piximi project file (JSON with base64 PNG channels).

    Returns
    -------
    images : list of numpy.ndarray
        One uint8 (C, H, W) array per image.
    table : pandas.DataFrame
        One row per image: name, label, well, piximi partition, height and width.

    Raises
    ------
    PhenolensError
        When the file is not a readable piximi project.
    """
    from PIL import Image

    path = Path(path)
    try:
        project = json.loads(path.read_text())["project"]
        categories = {c["id"]: c["name"] for c in project["categories"]}
        serialized = project["serializedImages"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PhenolensError(f"{path}: not a readable piximi project ({error}); export it again from piximi") from None
    images, rows = [], []
    for entry in serialized:
        channels = []
        for uri in entry["imageData"][0] if isinstance(entry["imageData"][0], list) else entry["imageData"]:
            png = base64.b64decode(uri.split(",", 1)[1])
            channels.append(np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.uint8))
        image = np.stack(channels)
        stem = Path(entry["imageFilename"]).stem
        images.append(image)
        rows.append(
            {
                "name": stem,
                "label": categories.get(entry["imageCategoryId"], "Unknown"),
                "well": stem.split("_", 1)[0],
                "piximi_partition": entry.get("imagePartition", ""),
                "height": image.shape[1],
                "width": image.shape[2],
            }
        )
    return images, pd.DataFrame(rows)


def convert_piximi_project(path: str | Path, out_dir: str | Path) -> Path:
    """Write `crops/<label>/<name>.tif` (uint8, (C, H, W)) and `labels.csv` under `out_dir`.

    Parameters
    ----------
    path : str or Path
        A piximi project file.
    out_dir : str or Path
        The folder to write into.

    Returns
    -------
    Path
        `out_dir`.
    """
    import tifffile

    from phenolens.core.outputs import atomic_write_bytes, atomic_write_text

    images, table = decode_piximi_project(path)
    out_dir = Path(out_dir)
    paths = []
    for image, row in zip(images, table.itertuples()):
        relative = f"crops/{row.label}/{row.name}.tif"
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, image)
        atomic_write_bytes(out_dir / relative, buffer.getvalue())
        paths.append(relative)
    table = table.assign(path=paths)[["path", "label", "well", "piximi_partition", "height", "width"]]
    atomic_write_text(out_dir / "labels.csv", table.to_csv(index=False))
    return out_dir
