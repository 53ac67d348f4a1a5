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


@dataclass
class Figure:
    caption: str
    png: bytes
    filename: str | None = None  # also written beside the report when set

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass
class Section:
    """One titled part of a report."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    subsections: list[Section] = field(default_factory=list)

    def text(self, paragraph: str) -> Section:
        """Add a paragraph of plain text (escaped in the HTML)."""
        self.paragraphs.append(paragraph)
        return self

    def figure(self, fig_or_png, caption: str, filename: str | None = None) -> Section:
        """Add a matplotlib figure (rendered and closed) or PNG bytes, optionally saved as `filename`."""
        from phenolens.report.figures import figure_to_png

        png = fig_or_png if isinstance(fig_or_png, bytes) else figure_to_png(fig_or_png)
        self.figures.append(Figure(caption, png, filename))
        return self

    def table(self, frame: pd.DataFrame, caption: str = "", float_format: str = "{:.3g}") -> Section:
        """Add a table (values formatted; index kept when it is named)."""
        shown = frame.copy()
        for column in shown.columns:
            if pd.api.types.is_float_dtype(shown[column]):
                shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else float_format.format(v))
        self.tables.append((caption, shown))
        return self

    def add(self, section: Section) -> Section:
        self.subsections.append(section)
        return self

    def all_figures(self):
        yield from self.figures
        for sub in self.subsections:
            yield from sub.all_figures()


@dataclass
class Report:
    """A report: a title, sections, and a metrics dictionary embedded as JSON."""

    title: str
    sections: list[Section] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    def add(self, section: Section) -> Section:
        self.sections.append(section)
        return section

    def render(self) -> str:
        """The report as one HTML string (autoescaped; figures embedded as data URIs)."""
        from jinja2 import Environment, PackageLoader, select_autoescape

        environment = Environment(loader=PackageLoader("phenolens.report", "templates"), autoescape=select_autoescape(["html", "j2"]))
        template = environment.get_template("report.html.j2")
        from phenolens import __version__

        return template.render(
            title=self.title,
            sections=self.sections,
            metrics_json=json.dumps(to_jsonable(self.metrics), indent=2),
            created=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            version=__version__,
        )

    def write(self, folder: str | Path, name: str = "report.html") -> Path:
        """Write the report (and any named figure files) into `folder`; return the report path."""
        folder = Path(folder)
        for section in self.sections:
            for fig in section.all_figures():
                if fig.filename:
                    atomic_write_bytes(folder / "figures" / fig.filename, fig.png)
        return atomic_write_text(folder / name, self.render())
