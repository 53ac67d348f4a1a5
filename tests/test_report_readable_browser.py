"""A `profile run` page as a reader sees it, in a real browser (Debian Chromium through Playwright), offline and
without errors: the batch effect before and after correction (issue #24: the map of control wells coloured by
batch first, then the same-batch neighbour tables, batches counted in order, Week2 before Week10), and an explorer
whose map names its axes and whose panel shows long CellProfiler feature and plate names whole."""

from __future__ import annotations

import pytest

from phenolens.cli.main import run

BATCHES = [f"Week{i}" for i in range(1, 11)]
OPTIONS = ["--controls", "Metadata_PertType == 'control'", "--treatment-column", "Metadata_Treatment", "--moa-column", "Metadata_MoA"]
OPTIONS += ["--batch-column", "Metadata_Batch", "--max-epochs", "3", "--moa-repeats", "1", "--classifiers", "lr", "--jobs", "1"]
OPTIONS += ["--no-curve", "--explain-features", "0", "--sphering", "global", "--sphering-epsilon", "1", "--adversary", "batch"]


@pytest.fixture(scope="module")
def batch_page(tmp_path_factory):
    """Report page of a small `profile run` with ten batches named Week1..Week10, sphering and the adversary."""
    from phenolens.profiling.synthetic import synthetic_screen

    root = tmp_path_factory.mktemp("batch_page")
    shape = {"plates": 20, "batches": 10, "replicates": 2, "controls_per_plate": 6, "moas": 2, "compounds_per_moa": 5, "doses": 1}
    table = synthetic_screen(**shape, features=12, effect=8.0, seed=2)
    table["Metadata_Batch"] = table["Metadata_Batch"].map({f"B{i}": name for i, name in enumerate(BATCHES)})
    table["Metadata_Plate"] = "BR00117" + table["Metadata_Plate"].astype(str).str.zfill(3) + "_Week_plate"  # names as long as a real screen's
    table = table.rename(columns=lambda c: c.replace("Cells_Synthetic_Feature_", "Nuclei_Intensity_IntegratedIntensityEdge_CorrTubulin_"))
    table.to_csv(root / "screen.csv", index=False)
    out = root / "run"
    assert run(["profile", "run", str(root / "screen.csv"), *OPTIONS, "--out", str(out)]) == 0
    return out / "report.html"


def test_batch_section_shows_the_map_first_then_the_tables_in_batch_order(batch_page, watched_page, tmp_path):
    watched = watched_page(batch_page)
    page = watched.page
    section = page.locator("section", has=page.locator("h3", has_text="Batch effects: before and after correction")).last
    section.scroll_into_view_if_needed()
    image = section.locator("figure img").first
    assert "control wells coloured and shaped by batch" in image.get_attribute("alt")
    assert image.evaluate("img => img.complete && img.naturalWidth > 0")
    assert image.evaluate("img => img.getBoundingClientRect().width <= img.closest('section').getBoundingClientRect().width + 2")  # + its border
    # the map is what a reader sees first; the numbers follow in a subsection
    assert section.evaluate("s => s.querySelector('figure').compareDocumentPosition(s.querySelector('table')) & Node.DOCUMENT_POSITION_FOLLOWING")
    overall, per_batch = section.locator("table").all()[:2]
    headers = [h.strip() for h in overall.locator("th").all_inner_texts()]
    assert headers == ["representation", "plates", "control wells", "same-batch neighbour", "chance"]
    shown = [r.strip() for r in overall.locator("tbody tr td:first-child").all_inner_texts()]
    assert {"cellprofiler", "anomaly", "anomaly_adversarial", "cellprofiler_sphered"} <= set(shown)
    assert [r.strip() for r in per_batch.locator("tbody tr td:first-child").all_inner_texts()] == BATCHES
    chance = [c.strip() for c in per_batch.locator("tbody tr td:nth-child(4)").all_inner_texts()]
    assert all(len(value.split(".")[1]) == 3 for value in chance)  # one number format down a column
    # eight representations make the per-batch table wider than the page: it scrolls inside the section, the page does not
    assert per_batch.evaluate(
        "t => { const box = t.parentElement; return box.classList.contains('pl-wide') && "
        "box.getBoundingClientRect().right <= box.closest('section').getBoundingClientRect().right + 1; }"
    )
    section.screenshot(path=str(tmp_path / "batch_section.png"))
    watched.assert_clean()


def test_explorer_map_names_its_axes_and_the_panel_shows_long_names_whole(batch_page, watched_page):
    watched = watched_page(batch_page)
    page = watched.page
    figure = ".pl-figure[data-key=map]"
    assert page.locator(f"{figure} .g-xtitle").text_content() == "t-SNE 1 (a.u.)"
    assert page.locator(f"{figure} .g-ytitle").text_content() == "t-SNE 2 (a.u.)"
    clicked = watched.click_point(figure, 0)
    page.wait_for_function("id => document.querySelector('.pl-panel').dataset.itemId === id", arg=clicked)
    page.wait_for_selector(".pl-panel .pl-features .ytick text")
    page.wait_for_selector(".pl-panel .pl-correlations .ytick text")
    for plot in (".pl-features", ".pl-correlations"):
        clipped = page.evaluate(
            """selector => {
                const box = document.querySelector(selector).getBoundingClientRect();
                return Array.from(document.querySelectorAll(selector + ' .ytick text'))
                    .filter((t) => t.getBoundingClientRect().left < box.left - 0.5).map((t) => t.textContent);
            }""",
            f".pl-panel {plot}",
        )
        assert not clipped, f"{plot}: tick labels cut at the panel's left edge: {clipped}"
    assert page.locator(".pl-panel .pl-features .g-xtitle").text_content() == "mean |anomaly z| over the wells"
    watched.assert_clean()
