"""Report section of `phenolens images visualise`: class-model images per class and channel, and first-layer filters."""

from __future__ import annotations

import numpy as np

from phenolens.report.figures import figure
from phenolens.report.html import Section


def class_model_section(
    images: np.ndarray, class_names: list[str], channel_names: list[str], filters: np.ndarray, held: tuple[str, ...], intensity: str = "none"
) -> Section:
    """The class models (one row per class, one column per channel) and the first convolution's filters.

    Parameters
    ----------
    images : numpy.ndarray
        (K, C, H, W) class models, in the units the network's standardisation reads.
    class_names, channel_names : list of str
        Row and column labels.
    filters : numpy.ndarray
        (F, C, k, k) weights of the first convolution.
    held : tuple of str
        Channels held at the mean crop (said in the caption).
    intensity : str
        The model's ``--intensity-normalization``: with any but ``none`` the pictures are intensity-normalised, not raw.

    Returns
    -------
    Section
        Two figures with captions.
    """
    section = Section("Class models")
    units = "raw intensity" if intensity == "none" else f"intensity ({intensity}-normalised)"
    section.text(
        "Each image is the light the network scores highest for its class (Simonyan et al. 2014), optimised from black with jitter "
        "and blur, each optimised channel holding at most a typical training crop's light (its L2 norm); metrics.json gives the "
        "probability the network assigns each class model to its class. Every channel shares one intensity scale across classes, "
        "so brightness compares classes." + (f" Held at the mean crop of the given images: {', '.join(held)}." if held else "")
    )
    rows, columns = len(class_names), len(channel_names)
    fig, axes = figure(1.9 * columns, 1.8 * rows + 0.9, nrows=rows, ncols=columns, squeeze=False, layout="constrained")
    for channel, name in enumerate(channel_names):
        top = float(images[:, channel].max()) or 1.0
        for row, class_name in enumerate(class_names):
            axis = axes[row, channel]
            shown = axis.imshow(images[row, channel], cmap="magma", vmin=0.0, vmax=top)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(name)
            if channel == 0:
                axis.set_ylabel(class_name)
        fig.colorbar(shown, ax=axes[:, channel].tolist(), location="bottom", shrink=0.9, label=f"{name}, {units}")
    section.figure(fig, "Class models: rows are classes, columns are channels (magma, black = no light).", "class_models.png")
    count = min(len(filters), 32)
    fig, axes = figure(1.2 * 8, 1.2 * ((count * filters.shape[1] + 7) // 8) + 0.4, nrows=(count * filters.shape[1] + 7) // 8, ncols=8, squeeze=False)
    limit = float(np.abs(filters[:count]).max()) or 1.0
    for axis in axes.ravel():
        axis.axis("off")
    for index, (unit, channel) in enumerate((u, c) for u in range(count) for c in range(filters.shape[1])):
        axis = axes.ravel()[index]
        axis.imshow(filters[unit, channel], cmap="PuOr", vmin=-limit, vmax=limit)
        axis.set_title(f"{unit}: {channel_names[channel]}", fontsize=7)
    section.figure(fig, f"First convolution: the first {count} filters per input channel (orange negative, purple positive weights).", "filters.png")
    return section
