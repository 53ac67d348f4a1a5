"""The echoes explorer views: a real `echoes detect` run's A-scans and a simulated layer scan, in a real browser."""

from __future__ import annotations

import numpy as np
import pytest

from phenolens.cli.main import run
from phenolens.data.containers import Signal
from phenolens.echoes.detector import EchoDetector
from phenolens.echoes.real import detect_real
from phenolens.echoes.thickness import LayerScanConfig, estimate_thickness, simulate_layer_scan
from phenolens.report import Report, Section
from phenolens.report.explorer.echoes import display_trace, real_scans_view, scan_view

HOSTILE = "<img src=x onerror=alert(1)></script><script>alert(2)</script>"


def test_display_trace_keeps_every_peak_of_a_long_scan():
    values = np.zeros(100_000)
    values[[1234, 77_777]] = [5.0, -3.0]
    trace = display_trace(values, fs_mhz=100.0, limit=4000)
    assert trace["reduced"] and len(trace["y"]) <= 4000
    assert max(trace["y"]) == 5.0 and min(trace["y"]) == -3.0
    peak = int(np.argmax(trace["y"]))
    assert abs(trace["t0"] + peak * trace["dt"] - 12.34) < 2 * trace["dt"]  # drawn where it happened (us)
    short = display_trace(np.arange(10.0), fs_mhz=50.0)
    assert not short["reduced"] and short["y"] == list(np.arange(10.0)) and short["dt"] == 0.02


@pytest.fixture(scope="module")
def scan_page(tmp_path_factory):
    """A small simulated layer scan through OMP, as a report page with the scan view."""
    scan = simulate_layer_scan(LayerScanConfig(rows=2, columns=4, tofd_steps=(1.5, 4.0)))
    detector = EchoDetector("omp").fit().refitted(min_echoes=2)
    detections = {"omp": detector.predict(scan.signals)}
    estimates = {"omp": estimate_thickness(detections["omp"], scan)}
    view = scan_view(scan, detections, estimates)
    path = tmp_path_factory.mktemp("scan") / "report.html"
    report = Report("scan")
    report.add(Section("Layer thickness").view(view))
    path.write_text(report.render())
    return path, view, scan, detections


def test_scan_items_carry_the_truth_and_each_methods_detections(scan_page):
    _, view, scan, detections = scan_page
    assert list(view.items) == [f"x{c}-y{r}" for r in range(2) for c in range(4)]
    item = view.items["x3-y1"]  # row 1, column 3 = signal 7
    np.testing.assert_allclose(item["truth"], scan.tofs[7] / scan.config.pulse.fs_mhz, atol=1e-4)
    expected = detections["omp"].positions[7]
    np.testing.assert_allclose(item["detections"]["omp"]["t"], expected[np.isfinite(expected)] / scan.config.pulse.fs_mhz, atol=1e-4)
    assert item["thickness"]["true"] == pytest.approx(scan.thickness_mm[1, 3], abs=1e-4)


def _click_heatmap_cell(page, column: int, row: int) -> None:
    box = page.evaluate(
        """([column, row]) => {
            const gd = document.querySelector('.pl-figure[data-key=scan]');
            const layout = gd._fullLayout, size = layout._size, rect = gd.getBoundingClientRect();
            return [rect.left + size.l + layout.xaxis.c2p(column), rect.top + size.t + layout.yaxis.c2p(row)];
        }""",
        [column, row],
    )
    page.mouse.click(*box)


@pytest.mark.slow
def test_clicking_a_scan_position_opens_its_a_scan(scan_page, watched_page, tmp_path):
    path, *_ = scan_page
    watched = watched_page(path)
    _click_heatmap_cell(watched.page, 2, 1)
    watched.page.wait_for_selector(".pl-panel .pl-ascan .main-svg")
    assert watched.shown_id() == "x2-y1"
    assert watched.page.locator(".pl-panel td", has_text="omp").count() >= 1
    watched.page.screenshot(path=str(tmp_path / "echoes-scan.png"))
    watched.assert_clean()


@pytest.fixture(scope="module")
def detect_run(tmp_path_factory):
    """A real `phenolens echoes detect` run on the echo-pulses A-scans with OMP and ISTA."""
    out = tmp_path_factory.mktemp("detect") / "run"
    assert run(["echoes", "detect", "--methods", "omp,ista", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_a_detect_run_page_opens_the_clicked_scan_offline(detect_run, watched_page, tmp_path):
    from browser import pixel_variance

    watched = watched_page(detect_run / "report.html")
    clicked = watched.click_point(".pl-figure[data-key=real]", 0)
    watched.page.wait_for_selector(".pl-panel .pl-ascan .main-svg")
    assert watched.shown_id() == clicked and clicked.startswith("scan-")
    png = watched.page.screenshot(path=str(tmp_path / "echoes-real.png"))
    assert pixel_variance(png) > 100
    watched.assert_clean()
    static = watched_page(detect_run / "report.html", javascript=False, wait_ready=False)
    assert static.page.locator("figure img").first.is_visible()
    assert not static.page.locator(".pl-explorer").first.is_visible()


@pytest.mark.slow
def test_hostile_signal_names_render_as_text(watched_page, tmp_path):
    signal = Signal(name=HOSTILE, values=np.sin(np.arange(600) / 2.0) * np.exp(-(((np.arange(600) - 300) / 30.0) ** 2)))
    detections = detect_real({"omp": EchoDetector("omp").fit()}, [signal], 100.0)
    report = Report(HOSTILE)
    report.add(Section(HOSTILE).view(real_scans_view([signal], detections)))
    path = tmp_path / "report.html"
    path.write_text(report.render())
    watched = watched_page(path)
    clicked = watched.click_point(".pl-figure[data-key=real]", 0)
    watched.page.wait_for_selector(".pl-panel .pl-ascan .main-svg")
    assert watched.shown_id() == clicked
    assert HOSTILE in watched.page.locator(".pl-panel").inner_text()
    watched.assert_clean()  # no dialog fired
