"""Figure helpers: one style for every phenolens figure (readable at report size, colour-blind safe)."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# Okabe & Ito (2008) palette: distinguishable under the common colour-vision deficiencies.
OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"]

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 110,
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": matplotlib.cycler(color=OKABE_ITO),
    "image.cmap": "viridis",
    "legend.frameon": False,
}


def class_colors(n: int) -> list:
    """n distinguishable colours: Okabe-Ito up to 8, then the colour-blind-friendly 'cividis' ramp.

    Parameters
    ----------
    n : int
        Number of colours.

    Returns
    -------
    list
        Hex strings (n <= 8) or RGBA tuples.
    """
    if n <= len(OKABE_ITO):
        return OKABE_ITO[:n]
    return [plt.get_cmap("cividis")(x) for x in np.linspace(0.0, 0.95, n)]


MARKERS = ("o", "s", "^", "D", "v", "P")
"""Marker shapes that extend the eight Okabe-Ito colours: the ninth group is the first colour as a square, and so on."""


def class_styles(n: int) -> list[tuple[str, str]]:
    """n distinguishable (colour, marker) pairs for scatter plots of categories (batches, plates, classes).

    A ramp of colours cannot keep ten or more categories apart, and colour alone fails readers with a
    colour-vision deficiency, so past the eight Okabe-Ito colours the marker shape changes too.

    Parameters
    ----------
    n : int
        Number of categories.

    Returns
    -------
    list of (str, str)
        Hex colour and matplotlib marker per category; no two pairs are equal for n <= 48.
    """
    return [(OKABE_ITO[i % len(OKABE_ITO)], MARKERS[(i // len(OKABE_ITO)) % len(MARKERS)]) for i in range(n)]


def natural_order(names) -> list[str]:
    """Distinct names as text, sorted as a reader counts: ``Week2`` before ``Week10``, ``plate 9`` before ``plate 10``.

    Parameters
    ----------
    names : iterable
        Names (converted to str).

    Returns
    -------
    list of str
        The distinct names in natural order.
    """

    def key(name: str) -> list:
        return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower()) for part in re.split(r"(\d+)", name) if part]

    return sorted({str(name) for name in names}, key=key)


def figure(width: float = 6.4, height: float = 4.0, nrows: int = 1, ncols: int = 1, **kwargs):
    """A new (figure, axes) pair in the phenolens style.

    Parameters
    ----------
    width, height : float
        Size in inches.
    nrows, ncols : int
        Grid of axes.
    **kwargs
        Passed to `matplotlib.pyplot.subplots`.

    Returns
    -------
    tuple
        The figure and its axes (one Axes, or an array of them).
    """
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), **kwargs)
    return fig, axes


def figure_to_png(fig) -> bytes:
    """Render a figure to PNG bytes and close it.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure (closed afterwards).

    Returns
    -------
    bytes
        The PNG.
    """
    buffer = io.BytesIO()
    with plt.rc_context(STYLE):
        fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def display_range(image: np.ndarray, limits: tuple[float, float] | None = None) -> np.ndarray:
    """Scale a 2-D array to [0, 1] between `limits` (default: its own 1st and 99.5th percentiles).

    Parameters
    ----------
    image : numpy.ndarray
        A 2-D array.
    limits : tuple of float, optional
        (low, high) values mapped to 0 and 1.

    Returns
    -------
    numpy.ndarray
        float32 values clipped to [0, 1].
    """
    image = np.asarray(image, dtype=np.float32)
    low, high = limits if limits is not None else (np.percentile(image, [1.0, 99.5]) if image.size else (0.0, 1.0))
    return np.clip((image - low) / (high - low if high > low else 1.0), 0.0, 1.0)


def channel_limits(images, channels: int) -> list[tuple[float, float]]:
    """Per-channel display limits (1st and 99.5th percentiles) shared by a set of (C, H, W) images,
    so brightness is comparable across images (a dim channel stays dim).

    Parameters
    ----------
    images : iterable of numpy.ndarray
        (C, H, W) images (sizes may differ).
    channels : int
        Number of channels C.

    Returns
    -------
    list of (float, float)
        (low, high) per channel.
    """
    limits = []
    for c in range(channels):
        values = np.concatenate([np.asarray(image[c], dtype=np.float32).ravel() for image in images])
        low, high = np.percentile(values, [1.0, 99.5])
        limits.append((float(low), float(high)))
    return limits


def bare(axis) -> None:
    """Make `axis` an image panel: no ticks, no frame.

    Parameters
    ----------
    axis : Axes
        A matplotlib axis.
    """
    axis.set_xticks([])
    axis.set_yticks([])
    for spine in axis.spines.values():
        spine.set_visible(False)


def montage_figure(
    rows: Sequence[tuple[str, Sequence[np.ndarray]]],
    channel_names: Sequence[str],
    title: str | None = None,
    tile_inches: float = 0.9,
):
    """A grid of image tiles drawn as one canvas: one row per (row label, list of (C, H, W) images),
    one column per image and channel, each channel a grey panel (names on top), images centred in
    equal cells without resizing. Contrast is shared per channel across the whole grid.

    Parameters
    ----------
    rows : sequence of (str, sequence of numpy.ndarray)
        Row label and its (C, H, W) images.
    channel_names : sequence of str
        One name per channel.
    title : str, optional
        Figure title.
    tile_inches : float
        Size of one tile.

    Returns
    -------
    matplotlib.figure.Figure
        The montage (render it with `figure_to_png`).
    """
    all_images = [image for _, images in rows for image in images]
    limits = channel_limits(all_images, len(channel_names))
    cell = max(max(image.shape[1:]) for image in all_images)
    gap = max(2, cell // 12)
    n_images = max(len(images) for _, images in rows)
    n_channels = len(channel_names)
    columns = n_images * n_channels
    canvas = np.ones(((cell + gap) * len(rows) - gap, (cell + gap) * columns - gap), dtype=np.float32)
    for r, (_, images) in enumerate(rows):
        for i, image in enumerate(images):
            h, w = image.shape[1:]
            top = r * (cell + gap) + (cell - h) // 2
            for c in range(n_channels):
                left = (i * n_channels + c) * (cell + gap) + (cell - w) // 2
                canvas[top : top + h, left : left + w] = display_range(image[c], limits[c])
    fig, axis = figure(width=max(3.0, tile_inches * columns + 1.8), height=max(1.5, tile_inches * len(rows) + 0.7))
    axis.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    centres = np.arange(columns) * (cell + gap) + cell / 2
    if n_channels > 1:
        axis.set_xticks(centres, [channel_names[k % n_channels] for k in range(columns)], fontsize=7, rotation=90)
        axis.xaxis.tick_top()
    else:
        axis.set_xticks([])
        title = f"{title} ({channel_names[0]})" if title else None
    axis.set_yticks(np.arange(len(rows)) * (cell + gap) + cell / 2, [label for label, _ in rows], fontsize=9)
    axis.tick_params(length=0)
    for spine in axis.spines.values():
        spine.set_visible(False)
    if title:
        axis.set_title(title, pad=8 + 40 * (n_channels > 1))
    return fig
