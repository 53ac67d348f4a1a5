"""The explorer: interactive views embedded in a run's static ``report.html``, offline and self-contained.

Why Plotly
----------
Plotly (Python 7, installed as a dependency) draws the maps and panel charts; Bokeh is not installed.
Plotly's whole JavaScript bundle is one file that `plotly.offline.get_plotlyjs()` hands us, so it is
inlined once per page with no CDN, font or MathJax request (plotly.js only types set mathematics when a
page loads MathJax, which ours never does); its figures serialise from Python to JSON (numeric arrays as
compact typed-array base64), and its selection menus (``updatemenus``) switch colourings without any
code of ours. We write JavaScript only for the glue: the detail panel, hover thumbnails, sortable tables.

A view
------
`View` (in `phenolens.report.explorer.view`) is what a report section embeds::

    View(
        title="Cells",                          # heading of the explorer block
        renderer="images",                      # the JavaScript renderer of the detail panel
        figures=[ExplorerFigure("map", fig)],   # Plotly figures; points carry an item id in customdata
        items={"cell-0": {...}, ...},           # id -> JSON-able item (text, numbers, lists, sprite index)
        data={"classes": [...], ...},           # view-wide JSON (names, colour tables, tables)
        sheets={"crop": SpriteSheet(...)},      # thumbnails: one compressed image per sheet, item -> tile
        notes=["Showing 5,000 of 12,000 cells: ..."],   # plain text above the view (sampling rules)
        hover_sheet="crop",                     # sheet shown beside the pointer when hovering a point
    )
    Section("...").view(view)                   # the static figures of the section stay as the fallback

Clicking a point whose ``customdata`` is an item id (a string, or a list whose first element is the
id) calls the renderer's ``detail``. Hovering one shows a tooltip with the item's ``label`` (else its id)
and, when the view has a ``hover_sheet`` and the item a ``tile`` (its index in the sheets), that thumbnail.
Give Plotly traces ``hoverinfo="none"`` so Plotly's own hover box (which reads labels as HTML) stays off.
A renderer is the file ``templates/explorer_<name>.js.j2`` (wrapped in ``{% raw %}``) that calls::

    PhenolensExplorer.register("images", {
        detail(panel, item, ctx) { ... },      // fill `panel` (a <div>) for `item`; ctx.id is its id
        init(root, ctx) { ... },               // optional: once per view (e.g. build a sortable table)
    });

``ctx`` offers: ``ctx.data`` (the view's `data`), ``ctx.items``, ``ctx.id`` (selected id),
``ctx.el(tag, {attr: value}, text)`` (a DOM element; text always through textContent, never innerHTML),
``ctx.tile(sheetName, index, pixels)`` (a <canvas> of one thumbnail), ``ctx.drawTile(canvas, sheetName,
index, then)``, ``ctx.colorize(canvas, lut)`` (grey values -> a colour table, alpha = value),
``ctx.plot(div, figure)`` (Plotly.newPlot with the page's config; escape names you put in its labels),
``ctx.select(id)`` (show another item), ``ctx.hasSheet(name)``, ``ctx.root`` (the view's element), and
``ctx.table(rows, columns)`` (a sortable, filterable table element; a row with ``__id`` carries
``data-item-id``, so a click handler can ``ctx.select`` it).

To add a view for a new command: build a `View` in ``report/explorer/<name>.py`` (a function returning it),
write ``templates/explorer_<renderer>.js.j2``, and call ``section.view(view)`` where the section is built;
`Report.render` embeds plotly.js, the glue and each renderer used, once per page. In the browser tests,
``tests/browser.py``'s ``watched_page`` fixture opens the page and ``Watched.click_point`` clicks a point.
The panel header always shows the selected id in ``<span class="pl-item-id">`` and the panel carries
``data-item-id``: that is what the browser tests read.

Safety: every JSON payload goes into ``<script type="application/json">`` through `script_json`, which
escapes ``<``, ``>``, ``&`` and the two JavaScript line separators; text placed inside Plotly figures
(pseudo-HTML there) goes through `plotly_text`. With JavaScript off the explorer block stays ``hidden``
and the section's static figures are what a reader sees.
"""

from phenolens.report.explorer.sprites import SpriteSheet, colormap_table, sample_rule, tile_size
from phenolens.report.explorer.view import ExplorerFigure, View, plotly_text, script_json

__all__ = ["ExplorerFigure", "SpriteSheet", "View", "colormap_table", "plotly_text", "sample_rule", "script_json", "tile_size"]
