"""Browser test harness: Debian's Chromium driven by Playwright (pytest-playwright), watching everything a page does.

Playwright's own browser download is not reachable here, so pytest-playwright's session ``browser``
fixture is pointed at the system Chromium through ``executable_path`` (`CHROMIUM`, ``/usr/bin/chromium``
or ``PHENOLENS_CHROMIUM``); when none is found every test that asks for a browser is skipped, saying so.
One browser per test session; each test opens its own context and page.

API (fixtures registered by ``tests/conftest.py``)
--------------------------------------------------
``browser_type_launch_args``
    pytest-playwright's launch arguments plus ``executable_path``; skips without Chromium.
``watched_page(path, javascript=True, wait_ready=True) -> Watched``
    A factory fixture: opens ``path`` (a local HTML file) in a fresh 1400 x 900 context. Every request
    whose URL is not ``file:`` or ``data:`` is recorded and aborted (no network, ever); console errors,
    page errors (uncaught exceptions) and dialogs (``alert`` and friends, dismissed) are recorded.
    With ``wait_ready`` it waits until the explorer glue marks ``<body data-explorer-ready="1">``
    and stores the seconds from the start of navigation to then (the page's own clock,
    ``performance.now()``) in ``Watched.seconds_to_interactive``.
``Watched``
    ``.page``, ``.console_errors``, ``.page_errors``, ``.requests``, ``.dialogs``,
    ``.seconds_to_interactive``; ``.assert_clean()`` fails listing whatever was recorded;
    ``.click_point(figure_selector, index)`` clicks the `index`-th isolated marker of a Plotly figure
    (none other within 4 px, so Plotly cannot hand the click to a neighbour) and returns the item id
    that point carries; ``.shown_id()`` is the id the detail panel shows.
``pixel_variance(png) -> float``
    Variance of a screenshot's grey levels (0 for a blank page).
"""

from __future__ import annotations

import io
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = os.environ.get("PHENOLENS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
VIEWPORT = {"width": 1400, "height": 900}
READY_TIMEOUT_MS = 30_000
LOCAL = ("file:", "data:")


def pixel_variance(png: bytes) -> float:
    """Variance of the grey levels of a PNG screenshot (a blank page scores 0).

    Parameters
    ----------
    png : bytes
        The screenshot.

    Returns
    -------
    float
        Grey-level variance (0..65025).
    """
    from PIL import Image

    return float(np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64).var())


@dataclass
class Watched:
    """A page and what it did: console errors, uncaught errors, requests that are not file:/data:, dialogs."""

    page: object
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    seconds_to_interactive: float | None = None

    def assert_clean(self) -> None:
        """Fail when the page logged a console error, threw, asked for the network or opened a dialog."""
        found = {"console errors": self.console_errors, "page errors": self.page_errors, "requests": self.requests, "dialogs": self.dialogs}
        assert not any(found.values()), {name: values for name, values in found.items() if values}

    def click_point(self, figure: str, index: int = 0) -> str:
        """Click the `index`-th isolated marker (no other within 4 px) of the Plotly figure matched by `figure`.

        Plotly hands a click to the nearest point centre, so a marker under another one would open its neighbour;
        isolated markers make the expected id certain.

        Parameters
        ----------
        figure : str
            Selector of the figure's div (e.g. ``.pl-figure[data-key=map]``).
        index : int
            Which isolated visible marker, in drawing order.

        Returns
        -------
        str
            The item id the clicked point carries (its ``customdata``).
        """
        markers = self.page.locator(f"{figure} .scatterlayer .trace .points path.point")
        markers.first.scroll_into_view_if_needed()
        isolated = markers.first.evaluate(
            """(first, wanted) => {
                const nodes = Array.from(first.closest('.scatterlayer').querySelectorAll('.trace .points path.point'));
                const centres = nodes.map((n) => { const r = n.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; });
                const alone = centres.map((c, i) => centres.every((d, j) => i === j || Math.hypot(c[0] - d[0], c[1] - d[1]) > 4));
                return alone.map((ok, i) => ok ? i : -1).filter((i) => i >= 0)[wanted];
            }""",
            index,
        )
        assert isolated is not None, f"fewer than {index + 1} isolated markers in {figure}"
        marker = markers.nth(isolated)
        marker.scroll_into_view_if_needed()
        box = marker.bounding_box()
        self.page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        self.page.mouse.down()
        self.page.mouse.up()
        data = marker.evaluate("node => node.__data__ && node.__data__.data")
        return str(data[0] if isinstance(data, list) else data)

    def shown_id(self) -> str:
        """The id shown in the detail panel's header."""
        return self.page.locator(".pl-panel .pl-item-id").first.text_content()


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """pytest-playwright's launch arguments, with Debian's Chromium (skip when there is none)."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set PHENOLENS_CHROMIUM)")
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": ["--disable-gpu", "--no-sandbox"]}


@pytest.fixture
def watched_page(browser):
    """Factory: open a local page in a fresh context of the session's browser, recording what it does."""
    contexts = []

    def open_page(path: str | Path, javascript: bool = True, wait_ready: bool = True) -> Watched:
        context = browser.new_context(viewport=VIEWPORT, java_script_enabled=javascript)
        contexts.append(context)
        page = context.new_page()
        watched = Watched(page)

        def route(request_route) -> None:
            if request_route.request.url.startswith(LOCAL):
                request_route.continue_()
            else:
                request_route.abort()

        context.route("**/*", route)  # recorded below, and never sent
        page.on("request", lambda request: None if request.url.startswith(LOCAL) else watched.requests.append(request.url))
        page.on("console", lambda message: watched.console_errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: watched.page_errors.append(str(error)))
        page.on("dialog", lambda dialog: (watched.dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(Path(path).resolve().as_uri())
        if wait_ready:
            page.wait_for_selector("body[data-explorer-ready='1']", state="attached", timeout=READY_TIMEOUT_MS)
            watched.seconds_to_interactive = page.evaluate("window.phenolensReadyAt") / 1000  # from the start of navigation
        return watched

    yield open_page
    for context in contexts:
        context.close()
