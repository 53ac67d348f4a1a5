"""Figures and the self-contained HTML report that every command writes."""

from phenolens.report.figures import OKABE_ITO, class_colors, figure, figure_to_png, montage_figure
from phenolens.report.html import Report, Section

__all__ = ["OKABE_ITO", "Report", "Section", "class_colors", "figure", "figure_to_png", "montage_figure"]
