"""Thumbnails for the explorer: sprite sheets (many tiles in one compressed image), their size rule, and sampling.

One WebP image per sheet keeps a page of thousands of cells small (a 5,000-cell images page stays well
under 25 MB) and makes a single ``data:`` URI per sheet instead of thousands.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np

PIXEL_BUDGET = 48_000_000
"""Tile pixels a page may hold over all its sheets; `tile_size` shrinks tiles to fit it."""

WEBP_QUALITY = 82
"""Lossy WebP quality of the sheets (thumbnails for looking, not for measuring)."""


@dataclass
class SpriteSheet:
    """Equal square tiles packed row by row into one image.

    Attributes
    ----------
    tiles : numpy.ndarray
        (N, S, S) grey or (N, S, S, 3) RGB uint8 tiles; tile ``i`` sits at row ``i // columns``,
        column ``i % columns``.
    """

    tiles: np.ndarray

    @property
    def tile(self) -> int:
        """Side of a tile in pixels."""
        return int(self.tiles.shape[1])

    @property
    def columns(self) -> int:
        """Tiles per row of the sheet (a near-square sheet)."""
        return max(1, int(np.ceil(np.sqrt(len(self.tiles)))))

    def image(self) -> np.ndarray:
        """The packed sheet as one uint8 array.

        Returns
        -------
        numpy.ndarray
            (rows * S, columns * S[, 3]) pixels, unused tiles black.
        """
        count, side = len(self.tiles), self.tile
        rows = max(1, -(-count // self.columns))
        padded = np.zeros((rows * self.columns, *self.tiles.shape[1:]), np.uint8)
        padded[:count] = self.tiles
        grid = padded.reshape(rows, self.columns, side, side, *self.tiles.shape[3:])
        return grid.swapaxes(1, 2).reshape(rows * side, self.columns * side, *self.tiles.shape[3:])

    def payload(self) -> dict:
        """The sheet for the page: ``{"uri": data:image/webp;base64,..., "tile", "columns", "count"}``.

        Returns
        -------
        dict
            JSON-able description.
        """
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(self.image()).save(buffer, format="WEBP", quality=WEBP_QUALITY, method=4)
        uri = "data:image/webp;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
        return {"uri": uri, "tile": self.tile, "columns": self.columns, "count": int(len(self.tiles))}


def tile_size(count: int, sheets: int, smallest: int = 24, largest: int = 64, budget: int = PIXEL_BUDGET) -> int:
    """Side of the tiles so that `sheets` sheets of `count` tiles fit `budget` pixels.

    Parameters
    ----------
    count : int
        Tiles per sheet.
    sheets : int
        Sheets on the page (an RGB sheet counts as three).
    smallest, largest : int
        Bounds of the side in pixels.
    budget : int
        Pixels over all sheets.

    Returns
    -------
    int
        The side, a multiple of 4 within the bounds.
    """
    side = int(np.sqrt(budget / max(1, count * sheets)))
    return int(np.clip(side - side % 4, smallest, largest))


def square_tiles(images, side: int) -> np.ndarray:
    """Resize each (C, H, W) float image to (C, side, side) after padding it to a centred square.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        (C, H, W) arrays (sizes may differ) or one (N, C, H, W) array.
    side : int
        Tile side in pixels.

    Returns
    -------
    numpy.ndarray
        (N, C, side, side) float32.
    """
    import torch

    def resized(batch: np.ndarray) -> np.ndarray:
        mode = "area" if batch.shape[-1] >= side else "bilinear"
        return torch.nn.functional.interpolate(torch.from_numpy(np.ascontiguousarray(batch, np.float32)), size=(side, side), mode=mode).numpy()

    if isinstance(images, np.ndarray) and images.ndim == 4:  # one geometry: pad once, resize in chunks
        count, channels, height, width = images.shape
        extent = max(height, width)
        top, left = (extent - height) // 2, (extent - width) // 2
        out = np.empty((count, channels, side, side), np.float32)
        for start in range(0, count, 256):
            square = np.zeros((min(256, count - start), channels, extent, extent), np.float32)
            square[:, :, top : top + height, left : left + width] = images[start : start + 256]
            out[start : start + 256] = resized(square)
        return out
    out = np.empty((len(images), images[0].shape[0], side, side), np.float32)
    for index, image in enumerate(images):
        channels, height, width = image.shape
        extent = max(height, width)
        square = np.zeros((1, channels, extent, extent), np.float32)
        top, left = (extent - height) // 2, (extent - width) // 2
        square[0, :, top : top + height, left : left + width] = image
        out[index] = resized(square)[0]
    return out


def to_uint8(values: np.ndarray, low: np.ndarray | float, high: np.ndarray | float) -> np.ndarray:
    """Scale `values` linearly so that `low` -> 0 and `high` -> 255, clipped.

    Parameters
    ----------
    values : numpy.ndarray
        Any shape.
    low, high : array-like
        Broadcastable bounds.

    Returns
    -------
    numpy.ndarray
        uint8 array of `values`' shape.
    """
    span = np.maximum(np.asarray(high, np.float32) - low, 1e-12)
    return (np.clip((values - low) / span, 0, 1) * 255 + 0.5).astype(np.uint8)


def colormap_table(name: str = "inferno") -> list[list[int]]:
    """A matplotlib colour map as 256 RGB triples (what ``ctx.colorize`` maps grey values through).

    Parameters
    ----------
    name : str
        A matplotlib colour-map name.

    Returns
    -------
    list of list of int
        256 x [r, g, b] in 0..255.
    """
    from matplotlib import colormaps

    return (np.asarray(colormaps[name](np.linspace(0, 1, 256)))[:, :3] * 255).round().astype(int).tolist()


def sample_rule(groups: np.ndarray, limit: int, seed: int = 0) -> tuple[np.ndarray, str | None]:
    """At most `limit` indices: a seeded random sample of each group in proportion to its size.

    Parameters
    ----------
    groups : numpy.ndarray
        (N,) group of each item (e.g. class); every group keeps at least one item.
    limit : int
        Most items kept.
    seed : int
        Seed of the sample.

    Returns
    -------
    (numpy.ndarray, str or None)
        Sorted kept indices, and the rule in words for the page (None when everything is kept).
    """
    count = len(groups)
    if count <= limit:
        return np.arange(count), None
    rng = np.random.default_rng(seed)
    kept = []
    values, codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    for code in range(len(values)):
        members = np.flatnonzero(codes == code)
        share = max(1, int(round(limit * len(members) / count)))
        kept.append(rng.choice(members, size=min(share, len(members)), replace=False))
    chosen = np.sort(np.concatenate(kept))
    if len(chosen) > limit:  # rounding up small groups can overshoot by a few
        chosen = np.sort(rng.choice(chosen, size=limit, replace=False))
    rule = f"Showing {len(chosen):,} of {count:,} items: a random sample (seed {seed}) of each group in proportion to its size."
    return chosen, rule
