"""Figures and the self-contained HTML report that every command writes.

Names load on first use, so that the command line reads the settings of `report combine` without matplotlib.
"""

from phenolens.core.lazy import lazy_exports

_EXPORTS = {
    "OKABE_ITO": "figures",
    "class_colors": "figures",
    "figure": "figures",
    "figure_to_png": "figures",
    "montage_figure": "figures",
    "Report": "html",
    "Section": "html",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
