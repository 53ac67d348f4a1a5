"""`View`: one interactive block of a report (Plotly figures, items keyed by id, thumbnails), and safe JSON for pages."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from typing import Any

from phenolens.core.outputs import to_jsonable
from phenolens.report.explorer.sprites import SpriteSheet

# JSON inside <script> must not close the element or start a comment; JavaScript also ends lines at U+2028/9.
_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_json(value: Any) -> str:
    """`value` as JSON that is safe inside an HTML ``<script>`` element.

    Parameters
    ----------
    value : object
        JSON-able data (numpy values are converted).

    Returns
    -------
    str
        Compact JSON with ``<``, ``>``, ``&``, U+2028 and U+2029 written as ``\\uXXXX`` escapes, so no
        string in it can close the script element (``</script>``) whatever it contains.
    """
    text = json.dumps(to_jsonable(value), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return "".join(_SCRIPT_ESCAPES.get(character, character) for character in text)


def plotly_text(text: Any) -> str:
    """`text` for a Plotly label (legend, hover, title): Plotly reads labels as a little HTML, so markup is escaped.

    Parameters
    ----------
    text : object
        A name (class, treatment, channel).

    Returns
    -------
    str
        The text with ``&``, ``<`` and ``>`` as entities, which Plotly shows literally.
    """
    return html.escape(str(text), quote=False)


@dataclass
class ExplorerFigure:
    """A Plotly figure of a view.

    Attributes
    ----------
    key : str
        Its name within the view (unique there).
    figure : plotly.graph_objects.Figure or dict
        The figure; points whose ``customdata`` holds an item id open that item when clicked.
    height : int
        Height of its box in pixels.
    """

    key: str
    figure: Any
    height: int = 520

    def payload(self) -> dict:
        """The figure as JSON-able ``{"key", "height", "figure": {"data", "layout"}}`` (typed arrays kept compact).

        Returns
        -------
        dict
            What the page's glue passes to ``Plotly.newPlot``.
        """
        figure = self.figure
        if not isinstance(figure, dict):
            import plotly.io

            figure = json.loads(plotly.io.to_json(figure, validate=False))
        return {"key": self.key, "height": self.height, "figure": figure}


@dataclass
class View:
    """One interactive view: figures, items keyed by id, view-wide data, thumbnails, and a detail-panel renderer.

    Attributes
    ----------
    title : str
        Heading of the explorer block.
    renderer : str
        Name of the JavaScript renderer (``templates/explorer_<renderer>.js.j2``).
    figures : list of ExplorerFigure
        Plotly figures, drawn in order.
    items : dict
        Item id -> JSON-able dict (what the renderer shows in the panel).
    data : dict
        View-wide JSON-able data.
    sheets : dict of str to SpriteSheet
        Thumbnail sheets; items refer to tiles by index.
    notes : list of str
        Plain-text notes shown above the view (how the items were sampled, what the colours mean).
    hover_sheet : str or None
        Sheet whose tile is shown beside the pointer when a point is hovered.
    """

    title: str
    renderer: str
    figures: list[ExplorerFigure] = field(default_factory=list)
    items: dict[str, dict] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    sheets: dict[str, SpriteSheet] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    hover_sheet: str | None = None

    def payload_json(self) -> str:
        """The view as script-safe JSON (what the page embeds in ``<script type="application/json">``).

        Returns
        -------
        str
            `script_json` of ``{"renderer", "figures", "items", "data", "sheets", "hover_sheet"}``.
        """
        return script_json(
            {
                "renderer": self.renderer,
                "figures": [figure.payload() for figure in self.figures],
                "items": self.items,
                "data": self.data,
                "sheets": {name: sheet.payload() for name, sheet in self.sheets.items()},
                "hover_sheet": self.hover_sheet,
            }
        )
