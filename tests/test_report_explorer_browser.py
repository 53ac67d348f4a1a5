"""The explorer in a real browser (Debian Chromium through Playwright), on small real runs made here:
`images train | explain | predict` and `profile run`, with hostile class, channel and treatment names."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from browser import pixel_variance

from phenolens.cli.main import run

IMG = "<img src=x onerror=alert(1)>"
SCRIPT = "</script><script>alert(2)</script>"
CLASSES = (f"in {IMG}", f"out {SCRIPT}")
CHANNELS = (f"GFP {SCRIPT}", f"DNA {IMG}")
TINY = ["--width", "0.125", "--blocks", "1,1", "--stem-stride", "1", "--epochs", "2", "--batch-size", "8"]
SCREEN_VARIANCE = 100.0  # grey-level variance; a blank white page scores 0, a page of text alone about 300


def _crops(root, per_class: int = 12, seed: int = 0):
    """Two classes of 2-channel crops (the reporter spot inside or outside the 'nucleus') listed in a manifest with hostile labels."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    rows = []
    for label, rows_of_spot in zip(CLASSES, (slice(5, 9), slice(0, 3))):
        for i in range(per_class):
            image = rng.uniform(0, 20, size=(2, 16, 16)).astype(np.float32)
            image[1, 5:9, 5:9] += 200
            image[0, rows_of_spot, 5:9] += 200
            path = root / f"{len(rows)}.npy"
            np.save(path, image)
            rows.append({"path": path.name, "label": label, "well": f"w{i % 3}"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


@pytest.fixture(scope="module")
def image_runs(tmp_path_factory):
    """Report pages of a tiny `images train`, `images explain` and `images predict` on the hostile-named crops."""
    root = tmp_path_factory.mktemp("explorer_images")
    manifest = _crops(root / "crops")
    channels = ",".join(CHANNELS)
    model = root / "train"
    assert run(["images", "train", "--manifest", str(manifest), "--channels", channels, "--out", str(model), *TINY]) == 0
    common = ["--manifest", str(manifest), "--channels", channels]
    explain = ["--methods", "saliency,gradcam", "--sanity-images", "2", "--images", "all"]
    assert run(["images", "explain", str(model), *common, *explain, "--out", str(root / "explain")]) == 0
    assert run(["images", "predict", str(model), *common, "--out", str(root / "predict")]) == 0
    return {name: root / name / "report.html" for name in ("train", "explain", "predict")}


@pytest.mark.parametrize("command", ["train", "explain", "predict"])
def test_images_page_is_clean_clickable_safe_and_not_blank(image_runs, watched_page, tmp_path, command):
    watched = watched_page(image_runs[command])
    page = watched.page
    clicked = watched.click_point(".pl-figure[data-key=map]", 0)
    page.wait_for_function("id => document.querySelector('.pl-panel').dataset.itemId === id", arg=clicked)
    assert watched.shown_id() == clicked
    panel = page.locator(".pl-panel")
    assert panel.locator(".pl-proba .main-svg").count() >= 1  # the probabilities were drawn
    text = page.locator("body").inner_text()
    for hostile in (*CLASSES, *CHANNELS):
        assert hostile in text  # shown as text, not markup
    assert page.locator("img[src=x]").count() == 0
    screen = page.screenshot(path=str(tmp_path / f"images_{command}.png"))
    assert pixel_variance(screen) > SCREEN_VARIANCE
    watched.assert_clean()
    assert watched.seconds_to_interactive < 10


def test_explain_panel_toggles_methods_channels_and_opacity(image_runs, watched_page):
    watched = watched_page(image_runs["explain"])
    page = watched.page
    watched.click_point(".pl-figure[data-key=map]", 0)
    stack = page.locator(".pl-panel .pl-stack")
    assert stack.get_attribute("data-method") == "saliency" and stack.get_attribute("data-channel") == CHANNELS[0]
    page.locator(".pl-panel input[type=radio][value=gradcam]").check()
    page.locator(".pl-panel input[name^=pl-channel][value='1']").check()
    assert stack.get_attribute("data-method") == "gradcam" and stack.get_attribute("data-channel") == CHANNELS[1]
    page.locator(".pl-panel input.pl-opacity").fill("0.2")
    assert page.locator(".pl-panel .pl-overlay").evaluate("node => node.style.opacity") == "0.2"
    page.wait_for_function("() => document.querySelectorAll('.pl-panel .pl-curves .scatterlayer .trace').length === 4")
    watched.assert_clean()


def test_without_javascript_the_static_figures_show_and_the_explorer_stays_hidden(image_runs, watched_page):
    watched = watched_page(image_runs["train"], javascript=False, wait_ready=False)
    page = watched.page
    assert page.locator("figure img").first.is_visible()
    assert page.locator(".pl-explorer").count() == 1 and not page.locator(".pl-explorer").is_visible()
    watched.assert_clean()


PROFILE_OPTIONS = ["--controls", "Metadata_PertType == 'control'", "--treatment-column", "Metadata_Treatment", "--moa-column", "Metadata_MoA"]
PROFILE_FAST = ["--max-epochs", "4", "--moa-repeats", "2", "--classifiers", "lr", "--jobs", "1", "--no-curve", "--explain-features", "1"]


@pytest.fixture(scope="module")
def profile_page(tmp_path_factory):
    """Report page of a small `profile run` on a synthetic screen whose first treatment and MoA have hostile names."""
    from phenolens.profiling.synthetic import synthetic_screen

    root = tmp_path_factory.mktemp("explorer_profile")
    table = synthetic_screen(plates=6, controls_per_plate=8, moas=2, compounds_per_moa=5, doses=2, features=16, effect=8.0, seed=1)
    first_treatment = sorted(set(table.loc[table["Metadata_PertType"] != "control", "Metadata_Treatment"]))[0]
    table["Metadata_Treatment"] = table["Metadata_Treatment"].replace({first_treatment: f"{first_treatment} {IMG} {SCRIPT}"})
    first_moa = sorted(set(table["Metadata_MoA"].dropna()) - {"control", ""})[0]
    table["Metadata_MoA"] = table["Metadata_MoA"].replace({first_moa: f"{first_moa} {SCRIPT}"})
    table.to_csv(root / "screen.csv", index=False)
    out = root / "run"
    assert run(["profile", "run", str(root / "screen.csv"), *PROFILE_OPTIONS, *PROFILE_FAST, "--out", str(out)]) == 0
    return out / "report.html", f"{first_treatment} {IMG} {SCRIPT}"


def test_profiling_page_is_clean_clickable_safe_and_not_blank(profile_page, watched_page, tmp_path):
    path, hostile = profile_page
    watched = watched_page(path)
    page = watched.page
    clicked = watched.click_point(".pl-figure[data-key=map]", 0)
    page.wait_for_function("id => document.querySelector('.pl-panel').dataset.itemId === id", arg=clicked)
    assert watched.shown_id() == clicked
    panel = page.locator(".pl-panel")
    assert panel.locator(".pl-table tbody tr").count() >= 2  # the replicate wells
    page.wait_for_function("() => document.querySelector('.pl-panel .pl-correlations .heatmaplayer image, .pl-panel .pl-correlations .hm') !== null")
    assert panel.locator(".pl-features .main-svg").count() >= 1
    text = page.locator("body").inner_text()
    assert hostile in text and SCRIPT in text and page.locator("img[src=x]").count() == 0
    page.locator(".pl-hits tr[data-item-id]", has_text=IMG).first.click()  # a row of the hits table opens its treatment
    assert watched.shown_id() == hostile
    screen = page.screenshot(path=str(tmp_path / "profiling.png"))
    assert pixel_variance(screen) > SCREEN_VARIANCE
    watched.assert_clean()


def test_hits_table_sorts_and_filters(profile_page, watched_page):
    watched = watched_page(profile_page[0])
    page = watched.page
    hits = page.locator(".pl-hits")
    total = int(hits.get_attribute("data-rows"))
    scores_column = hits.locator("th", has_text="score").first
    scores_column.click()
    column = [h.strip() for h in hits.locator("th").all_inner_texts()].index("score")
    values = [float(v) for v in hits.locator(f"tbody tr td:nth-child({column + 1})").all_inner_texts()]
    assert values == sorted(values) and len(values) == total
    scores_column.click()
    values = [float(v) for v in hits.locator(f"tbody tr td:nth-child({column + 1})").all_inner_texts()]
    assert values == sorted(values, reverse=True)
    hits.locator("input.pl-filter").fill("onerror")
    assert hits.get_attribute("data-rows") == "1" and IMG in hits.locator("tbody").inner_text()
    watched.assert_clean()


def test_combined_site_links_each_runs_explorer(image_runs, profile_page, watched_page, tmp_path):
    site = tmp_path / "site"
    runs = [str(image_runs["explain"].parent), str(profile_page[0].parent)]
    assert run(["report", "combine", *runs, "--title", f"Study {IMG}", "--out", str(site)]) == 0
    watched = watched_page(site / "index.html", wait_ready=False)
    page = watched.page
    assert f"Study {IMG}" in page.title() and page.locator("img[src=x]").count() == 0
    page.locator("a", has_text="Open the profile run page").click()
    page.wait_for_selector("body[data-explorer-ready='1']", state="attached")
    assert page.url.endswith("runs/02-run/report.html") and page.locator(".pl-hits").count() == 1
    watched.assert_clean()


def test_a_cells_curves_are_drawn_in_each_methods_house_colour(image_runs, watched_page):
    """plotly.js's default colours gave each of the four curves its own colour (green against red for the second method)."""
    watched = watched_page(image_runs["explain"])
    page = watched.page
    checked = page.evaluate(
        """() => {
            const payload = JSON.parse(document.querySelector("script.pl-payload").textContent);
            const id = Object.keys(payload.items).find((key) => payload.items[key].curves !== undefined);
            document.querySelector(".pl-figure[data-key=map]").emit("plotly_click", { points: [{ customdata: id }] });
            return { id: id, colours: payload.data.method_colours };
        }"""
    )
    page.wait_for_function("id => document.querySelector('.pl-panel').dataset.itemId === id", arg=checked["id"])
    page.locator(".pl-panel .pl-curves .main-svg").first.wait_for()
    traces = page.evaluate("() => document.querySelector('.pl-panel .pl-curves')._fullData.map((t) => [t.name, t.line.color, t.line.dash])")
    assert len(traces) == 4  # saliency and gradcam, deletion and insertion each
    for name, colour, dash in traces:
        method = next(m for m in checked["colours"] if name.startswith(m))
        assert colour.lower() == checked["colours"][method].lower()
        assert dash == ("dot" if name.endswith("insertion") else "solid")
    assert len({colour for _, colour, _ in traces}) == 2
    watched.assert_clean()
