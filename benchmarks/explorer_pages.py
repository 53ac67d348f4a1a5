"""Size and time-to-interactive of an images explorer page of 5,000 cells in headless Chromium.

Builds the page `phenolens images explain` would write for 5,000 cells: real BBBC013 crops (794 crops,
2 channels, drawn with replacement and randomly flipped/rotated so tiles differ), seeded random
saliency and Grad-CAM-like maps, probabilities and deletion/insertion curves; the map coordinates are
a PCA of the crops sampled every 8 px (the t-SNE a run computes costs time while writing, not in the browser). Then opens
the page in Debian's Chromium (Playwright, `executable_path`) three times and reports the page size,
the time from navigation to the explorer being ready (median of three loads; the page's own clock),
and the time from a click on a point to the detail panel showing it.

    python benchmarks/explorer_pages.py [--cells 5000] [--small] [--check] [--keep DIR]

Targets (issue 22): page <= 25 MB and time to interactive <= 3 s at 5,000 cells; --small builds
500 cells and checks the same targets. --check exits with status 1 on a miss.
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


def measure(path: Path, loads: int = 3) -> tuple[list[float], float]:
    """Seconds from navigation to the explorer being ready, per load, and from a click to the panel showing the clicked cell."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--disable-gpu", "--no-sandbox"])
        ready, click = [], float("nan")
        for _ in range(loads):
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "data:")) else route.abort())
            page.goto(path.resolve().as_uri())
            page.wait_for_selector("body[data-explorer-ready='1']", state="attached", timeout=120_000)
            ready.append(page.evaluate("window.phenolensReadyAt") / 1000)
            marker = page.locator(".pl-figure .scatterlayer .trace .points path.point").nth(100)
            marker.scroll_into_view_if_needed()
            box = marker.bounding_box()
            started = page.evaluate("performance.now()")
            page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.wait_for_function("() => document.querySelector('.pl-panel .pl-stack canvas') !== null", timeout=30_000)
            click = (page.evaluate("performance.now()") - started) / 1000
            page.close()
        browser.close()
    return ready, click


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
    ready, click = measure(path)
    loads = ", ".join(f"{r:.2f}" for r in ready)
    print(f"{count} cells: page {size:.1f} MB written in {seconds:.1f} s; ready after {loads} s; click -> panel {click:.2f} s")
    targets = Targets("explorer_pages")
    targets.expect(f"page size of {count} cells (MB)", size, "<=", 25)
    targets.expect(f"time to interactive of {count} cells (s, median of 3)", statistics.median(ready), "<=", 3)
    if args.keep is None:
        shutil.rmtree(folder)
    return targets.finish(args.check)


if __name__ == "__main__":
    sys.exit(main())
