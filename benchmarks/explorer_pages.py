"""Size and time-to-interactive of an images explorer page of 5,000 cells in headless Chromium.

Builds the page `phenolens images explain` would write for 5,000 cells: real BBBC013 crops (794 crops,
2 channels, drawn with replacement and randomly flipped/rotated so tiles differ), seeded random
saliency and Grad-CAM-like maps, probabilities and deletion/insertion curves; the map coordinates are
a PCA of the crops sampled every 8 px (the t-SNE a run computes costs time while writing, not in the browser). Then opens
the page in Debian's Chromium (Playwright, `executable_path`) five times and reports the page size,
the time from navigation to the explorer being ready (median of five loads; the page's own clock),
and the time from a click on a point to the detail panel showing it. A floor page (the same plotly.js
and glue, a two-point map) is loaded between them: on a shared machine most of the time is evaluating
plotly.js (4.8 MB), which the floor shows with the machine's load at that moment.

    python benchmarks/explorer_pages.py [--cells 5000] [--small] [--check] [--keep DIR]

Targets (issue 22): page <= 25 MB and time to interactive <= 3 s at 5,000 cells. --small builds 500 cells
and checks the size and the explorer's own time after plotly.js is evaluated (<= 1 s), which a busy
machine moves less than the absolute time. --check exits with status 1 on a miss.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from targets import Targets, add_check_option  # noqa: E402

LOADS = 5
"""Loads of each page; the median is the figure (a shared machine is noisy)."""

CHROMIUM = os.environ.get("PHENOLENS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def crops(count: int, seed: int):
    """`count` real BBBC013 crops (with replacement, random flips and quarter turns), labels and class/channel names."""
    from phenolens.data import load

    images = load("bbbc013")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(images), count)
    chosen = []
    for index in picks:
        crop = np.asarray(images.images[index], np.float32)
        crop = np.rot90(crop, k=int(rng.integers(4)), axes=(1, 2))
        chosen.append(np.ascontiguousarray(crop[:, :, ::-1] if rng.random() < 0.5 else crop))
    return chosen, images.labels[picks], images.class_names, images.channel_names


def build_page(count: int, folder: Path, seed: int = 0) -> tuple[Path, float]:
    """Write the explorer page of `count` cells into `folder`; return its path and the seconds it took."""
    from phenolens.report import Report, Section
    from phenolens.report.explorer.images import images_view

    images, labels, class_names, channel_names = crops(count, seed)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    side = max(max(image.shape[1:]) for image in images)
    square = np.zeros((count, len(channel_names), side, side), np.float32)
    for index, image in enumerate(images):
        square[index, :, : image.shape[1], : image.shape[2]] = image
    flat = square[:, :, ::8, ::8].reshape(count, -1)  # a coarse PCA: the map only needs to spread the cells
    flat = flat - flat.mean(axis=0)
    points = flat @ np.linalg.svd(flat, full_matrices=False)[2][:2].T
    proba = rng.dirichlet(np.ones(len(class_names)), count)
    smooth = rng.random((count, 1, side // 4, side // 4)).repeat(4, axis=2).repeat(4, axis=3)
    maps = {"saliency": square * rng.random(square.shape).astype(np.float32), "gradcam": np.repeat(smooth, len(channel_names), axis=1)}
    fractions = np.linspace(0, 1, 17)
    falling, rising = np.sort(rng.random((count, 17)))[:, ::-1], np.sort(rng.random((count, 17)))
    curves = {method: {"fractions": fractions, "deletion_curves": falling, "insertion_curves": rising} for method in maps}
    view = images_view(square, channel_names, class_names, labels, proba, points, maps=maps, curves=curves, title="Explained cells")
    report = Report(f"explorer benchmark: {count} cells")
    report.add(Section("Cells").view(view))
    path = report.write(folder)
    return path, time.perf_counter() - started


def floor_page(folder: Path) -> Path:
    """A page with the same plotly.js and glue but a two-point map: what any explorer page costs on this machine now."""
    import plotly.graph_objects as go

    from phenolens.report import Report, Section
    from phenolens.report.explorer import ExplorerFigure, View

    figure = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], customdata=["a", "b"]))
    view = View("floor", "images", [ExplorerFigure("map", figure)], {"a": {}}, {"channels": [], "methods": [], "classes": []})
    report = Report("explorer benchmark: floor")
    report.add(Section("floor").view(view))
    return report.write(folder, "floor.html")


def measure(paths: list[Path], loads: int) -> tuple[list[list[float]], list[list[float]], float]:
    """Seconds from navigation to the explorer being ready per load of each page (loads interleaved, so both
    pages see the same machine load), the part of them after plotly.js was evaluated (the explorer's own
    work: parsing the payload, drawing the maps), and from a click on a point of the first page to its panel."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--disable-gpu", "--no-sandbox"])
        ready, own, click = [[] for _ in paths], [[] for _ in paths], float("nan")
        for _ in range(loads):
            for number, path in enumerate(paths):
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "data:")) else route.abort())
                page.goto(path.resolve().as_uri())
                page.wait_for_selector("body[data-explorer-ready='1']", state="attached", timeout=120_000)
                ready[number].append(page.evaluate("window.phenolensReadyAt") / 1000)
                own[number].append(page.evaluate("window.phenolensReadyAt - window.phenolensStartAt") / 1000)
                if number == 0:
                    marker = page.locator(".pl-figure .scatterlayer .trace .points path.point").nth(100)
                    marker.scroll_into_view_if_needed()
                    box = marker.bounding_box()
                    started = page.evaluate("performance.now()")
                    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                    page.wait_for_function("() => document.querySelector('.pl-panel .pl-stack canvas') !== null", timeout=30_000)
                    click = (page.evaluate("performance.now()") - started) / 1000
                page.close()
        browser.close()
    return ready, own, click


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=5000)
    parser.add_argument("--small", action="store_true", help="500 cells")
    parser.add_argument("--keep", type=Path, default=None, help="keep the page in this folder")
    add_check_option(parser)
    args = parser.parse_args()
    count = 500 if args.small else args.cells
    folder = args.keep or Path(tempfile.mkdtemp(prefix="explorer_pages_"))
    path, seconds = build_page(count, folder)
    size = path.stat().st_size / 1e6
    (ready, floor), (own, _), click = measure([path, floor_page(folder)], LOADS)
    loads = ", ".join(f"{r:.2f}" for r in ready)
    print(f"{count} cells: page {size:.1f} MB written in {seconds:.1f} s; ready after {loads} s; click -> panel {click:.2f} s")
    print(f"after plotly.js was evaluated (the explorer's own work): {', '.join(f'{r:.2f}' for r in own)} s")
    print(
        f"floor (plotly.js + a two-point map): ready after {', '.join(f'{r:.2f}' for r in floor)} s, median {statistics.median(floor):.2f} s; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    targets = Targets("explorer_pages")
    targets.expect(f"page size of {count} cells (MB)", size, "<=", 25)
    if args.small:  # a quick run on a busy machine: check the explorer's own work after plotly.js is evaluated
        targets.expect(f"explorer's own time to interactive of {count} cells (s, median of {LOADS})", statistics.median(own), "<=", 1)
    else:
        targets.expect(f"time to interactive of {count} cells (s, median of {LOADS})", statistics.median(ready), "<=", 3)
    if args.keep is None:
        shutil.rmtree(folder)
    return targets.finish(args.check)


if __name__ == "__main__":
    sys.exit(main())
