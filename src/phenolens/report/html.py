"""A self-contained HTML report: sections of text, tables and embedded figures, plus the metrics as JSON."""

from __future__ import annotations

import base64
import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from phenolens.core.outputs import atomic_write_bytes, atomic_write_text, to_jsonable
from phenolens.report.headings import heading


@dataclass
class Figure:
    """One rendered figure of a report.

    Attributes
    ----------
    caption : str
        Text shown under it.
    png : bytes
        The image.
    filename : str or None
        When set, the PNG is also written as ``figures/<filename>`` beside the report.
    """

    caption: str
    png: bytes
    filename: str | None = None  # also written beside the report when set

    @property
    def data_uri(self) -> str:
        """The PNG as a ``data:`` URI, embedded in the HTML so the report is one file."""
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass
class Section:
    """One titled part of a report.

    The adding methods return the section, so calls chain:
    ``Section("Accuracy").text("...").table(frame)``.

    Attributes
    ----------
    title : str
        The heading.
    paragraphs : list of str
        Plain-text paragraphs (escaped in the HTML).
    figures : list of Figure
        Embedded figures.
    tables : list of (str, pandas.DataFrame)
        Captioned tables, values already formatted.
    subsections : list of Section
        Nested sections.
    views : list of phenolens.report.explorer.View
        Interactive explorer views, drawn above the static figures (which stay as the fallback without JavaScript).
    links : list of (str, str)
        (relative address, text) links shown under the paragraphs (a study page links its runs' pages).
    """

    title: str
    paragraphs: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    subsections: list[Section] = field(default_factory=list)
    views: list = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)

    def text(self, paragraph: str) -> Section:
        """Add a paragraph of plain text (escaped in the HTML).

        Parameters
        ----------
        paragraph : str
            The text.

        Returns
        -------
        Section
            This section.
        """
        self.paragraphs.append(paragraph)
        return self

    def figure(self, fig_or_png, caption: str, filename: str | None = None) -> Section:
        """Add a matplotlib figure (rendered and closed) or PNG bytes, optionally saved as `filename`.

        Parameters
        ----------
        fig_or_png : matplotlib.figure.Figure or bytes
            The figure, or a rendered PNG.
        caption : str
            Text shown under it.
        filename : str, optional
            Also write it as ``figures/<filename>`` beside the report.

        Returns
        -------
        Section
            This section.
        """
        from phenolens.report.figures import figure_to_png

        png = fig_or_png if isinstance(fig_or_png, bytes) else figure_to_png(fig_or_png)
        self.figures.append(Figure(caption, png, filename))
        return self

    def table(self, frame: pd.DataFrame, caption: str = "", float_format: str = "{:.3g}") -> Section:
        """Add a table (values formatted; index kept when it is named; machine column names shown as `headings.HEADINGS`).

        Parameters
        ----------
        frame : pandas.DataFrame
            The table (not changed).
        caption : str
            Text shown above it.
        float_format : str
            Format of float columns; NaN is shown empty.

        Returns
        -------
        Section
            This section.
        """
        shown = frame.copy()
        for column in shown.columns:
            if pd.api.types.is_float_dtype(shown[column]):
                shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else float_format.format(v))
        # machine names stay in the files; the page shows people's headings
        shown = shown.rename(columns=heading)
        shown.index = shown.index.set_names([heading(name) for name in shown.index.names])
        self.tables.append((caption, shown))
        return self

    def add(self, section: Section) -> Section:
        """Nest `section` under this one and return this one."""
        self.subsections.append(section)
        return self

    def view(self, view) -> Section:
        """Add an interactive explorer view (see `phenolens.report.explorer`).

        Parameters
        ----------
        view : phenolens.report.explorer.View
            The view; its renderer's script is embedded once per page.

        Returns
        -------
        Section
            This section.
        """
        self.views.append(view)
        return self

    def link(self, href: str, text: str) -> Section:
        """Add a link (escaped like all text) to another page, e.g. a run's report beside this one.

        Parameters
        ----------
        href : str
            A relative address.
        text : str
            The link text.

        Returns
        -------
        Section
            This section.
        """
        self.links.append((href, text))
        return self

    def all_views(self):
        """Every explorer view of this section and its subsections, depth first."""
        yield from self.views
        for sub in self.subsections:
            yield from sub.all_views()

    def all_figures(self):
        """Every figure of this section and its subsections, depth first."""
        yield from self.figures
        for sub in self.subsections:
            yield from sub.all_figures()


@dataclass
class Report:
    """A report: a title, sections, and a metrics dictionary embedded as JSON.

    Attributes
    ----------
    title : str
        The page title.
    sections : list of Section
        The body, in order.
    metrics : dict
        Shown at the end as JSON (usually the run's ``metrics.json``).
    """

    title: str
    sections: list[Section] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    def add(self, section: Section) -> Section:
        """Append `section` and return it (to fill it after adding)."""
        self.sections.append(section)
        return section

    def render(self) -> str:
        """The report as one HTML string (autoescaped; figures embedded as data URIs).

        When a section holds explorer views, plotly.js, the explorer glue and each renderer used are
        inlined once at the end of the page (no network request at any time).

        Returns
        -------
        str
            A self-contained HTML page.
        """
        from jinja2 import Environment, PackageLoader, select_autoescape

        environment = Environment(loader=PackageLoader("phenolens.report", "templates"), autoescape=select_autoescape(["html", "j2"]))
        template = environment.get_template("report.html.j2")
        from phenolens import __version__

        views = [view for section in self.sections for view in section.all_views()]
        view_ids = {id(view): f"pl-view-{number}" for number, view in enumerate(views, 1)}
        renderers = list(dict.fromkeys(view.renderer for view in views))
        plotly_js = ""
        if views:
            from plotly.offline import get_plotlyjs

            plotly_js = get_plotlyjs()
        return template.render(
            view_id=lambda view: view_ids[id(view)],
            renderers=renderers,
            plotly_js=plotly_js,
            title=self.title,
            sections=self.sections,
            metrics_json=json.dumps(to_jsonable(self.metrics), indent=2),
            created=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            version=__version__,
        )

    def write(self, folder: str | Path, name: str = "report.html") -> Path:
        """Write the report (and any named figure files) into `folder`.

        Parameters
        ----------
        folder : str or Path
            The run folder (commands pass `RunWriter.path`).
        name : str
            File name of the report.

        Returns
        -------
        Path
            The report file.
        """
        folder = Path(folder)
        for section in self.sections:
            for fig in section.all_figures():
                if fig.filename:
                    atomic_write_bytes(folder / "figures" / fig.filename, fig.png)
        return atomic_write_text(folder / name, self.render())
