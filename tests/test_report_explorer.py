"""The explorer's foundation: script-safe JSON, Plotly labels, sprite sheets, the tile-size and sampling rules, page assembly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from phenolens.report import Report, Section
from phenolens.report.explorer import ExplorerFigure, SpriteSheet, View, plotly_text, sample_rule, script_json, tile_size

HOSTILE = "<img src=x onerror=alert(1)></script><script>alert(2)</script>&\u2028"


def test_script_json_cannot_close_the_script_element_and_round_trips():
    text = script_json({"name": HOSTILE, "values": np.arange(3), "missing": float("nan")})
    assert not set("<>&\u2028") & set(text)
    assert json.loads(text) == {"name": HOSTILE, "values": [0, 1, 2], "missing": None}


def test_plotly_text_escapes_markup():
    assert plotly_text("<b>a & b</b>") == "&lt;b&gt;a &amp; b&lt;/b&gt;"


def test_sprite_sheet_places_tile_i_at_row_i_div_columns():
    tiles = np.arange(5, dtype=np.uint8)[:, None, None] * np.ones((5, 4, 4), np.uint8)
    sheet = SpriteSheet(tiles)
    image = sheet.image()
    assert sheet.columns == 3 and image.shape == (8, 12)
    for index in range(5):
        row, column = divmod(index, 3)
        assert (image[row * 4 : row * 4 + 4, column * 4 : column * 4 + 4] == index).all()
    assert (image[4:, 8:] == 0).all()  # the unused sixth tile is black
    payload = sheet.payload()
    assert payload["uri"].startswith("data:image/webp;base64,") and (payload["tile"], payload["columns"], payload["count"]) == (4, 3, 5)


def test_tile_size_fits_the_budget_within_bounds():
    assert tile_size(10, 3) == 64
    assert tile_size(100_000, 20) == 24
    side = tile_size(5000, 10, budget=5000 * 10 * 40**2)
    assert side == 40 and side % 4 == 0


def test_sample_rule_keeps_groups_in_proportion_and_says_so():
    groups = np.repeat(["a", "b"], [900, 100])
    kept, rule = sample_rule(groups, 100, seed=3)
    assert len(kept) == 100 and (np.diff(kept) > 0).all()
    assert (groups[kept] == "b").sum() == 10
    assert "100 of 1,000" in rule and "seed 3" in rule
    again, _ = sample_rule(groups, 100, seed=3)
    np.testing.assert_array_equal(kept, again)
    everything, none = sample_rule(groups, 1000)
    assert len(everything) == 1000 and none is None


def test_page_inlines_plotly_once_and_hides_the_explorer_until_scripts_run():
    import plotly.graph_objects as go

    figure = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], customdata=["a", "b"]))
    view = View("Points", "images", [ExplorerFigure("map", figure)], items={"a": {"label": HOSTILE}}, notes=[HOSTILE])
    report = Report("t")
    report.add(Section("s").view(view).view(View("Again", "images")))
    page = report.render()
    assert page.count("* plotly.js v") == 1
    assert page.count('PhenolensExplorer.register("images"') == 1  # one renderer script for two views
    assert page.count('class="pl-explorer"') == 2 and page.count("hidden>") >= 2
    assert "<img src=x" not in page and "&lt;img src=x" in page  # the note is escaped text
    assert page.count("</script>") == page.count("<script")  # nothing in the payload closed a script element
    plain = Report("t")
    plain.add(Section("s"))
    assert "Plotly" not in plain.render()


def test_images_view_samples_by_class_says_so_and_shares_a_spatial_map_across_channels():
    from phenolens.report.explorer.images import images_view

    rng = np.random.default_rng(0)
    images = rng.random((40, 2, 12, 10)).astype(np.float32)
    labels = np.repeat([0, 1], [30, 10])
    proba = rng.dirichlet(np.ones(2), 40)
    cam = np.repeat(rng.random((40, 1, 12, 10)), 2, axis=1)  # spatial only: the same map on every channel
    maps = {"saliency": rng.random((40, 2, 12, 10)), "gradcam": cam}
    view = images_view(images, ["DNA", "GFP"], ["a", "b"], labels, proba, rng.normal(size=(40, 2)), maps=maps, max_cells=8)
    assert len(view.items) == 8 and sum(item["true"] == "b" for item in view.items.values()) == 2
    assert any("Showing 8 of 40" in note for note in view.notes)
    assert view.data["map_sheets"]["gradcam"] == {"DNA": "map1", "GFP": "map1"}
    assert view.data["map_sheets"]["saliency"] == {"DNA": "map0_0", "GFP": "map0_1"}
    assert {name: len(sheet.tiles) for name, sheet in view.sheets.items()} == dict.fromkeys(["crop", "ch0", "ch1", "map0_0", "map0_1", "map1"], 8)
    assert sorted(item["tile"] for item in view.items.values()) == list(range(8))
    figure = view.figures[0].payload()["figure"]
    first = [trace for trace in figure["data"] if trace.get("visible", True) is True]  # the true-class colouring shows first
    assert sorted(i for trace in first for i in trace["customdata"]) == sorted(view.items)
    assert [button["label"] for button in figure["layout"]["updatemenus"][0]["buttons"]] == ["true class", "predicted class", "correct?"]


def test_images_view_gives_each_methods_deletion_and_insertion_curves_one_house_colour():
    """The panel's curves took plotly.js's default colours, one per trace: a method's deletion and insertion curves differed
    in colour, and two methods drew green against red. Each method now has one Okabe-Ito colour (dash tells the curves apart),
    in the order the static faithfulness figure gives them."""
    from phenolens.report.explorer.images import images_view
    from phenolens.report.figures import OKABE_ITO

    rng = np.random.default_rng(0)
    images = rng.random((6, 2, 12, 10)).astype(np.float32)
    fractions = np.linspace(0, 1, 5)
    methods = ("saliency", "gradcam")
    curves = {m: {"fractions": fractions, "deletion_curves": rng.random((6, 5)), "insertion_curves": rng.random((6, 5))} for m in methods}
    view = images_view(images, ["DNA", "GFP"], ["a", "b"], np.arange(6) % 2, rng.dirichlet(np.ones(2), 6), rng.normal(size=(6, 2)), curves=curves)
    assert view.data["method_colours"] == {"saliency": OKABE_ITO[0], "gradcam": OKABE_ITO[1]}
    import phenolens.report

    renderer = (Path(phenolens.report.__file__).parent / "templates" / "explorer_images.js.j2").read_text()
    assert renderer.count("color: data.method_colours[method]") == 2  # both curves of a method drawn in its colour


def test_the_most_anomalous_features_are_ranked_and_drawn_by_the_same_quantity():
    """Ranked by mean |z| but drawn as the signed mean z: f0 (wells +3, -3, +3) topped the list with a bar of 1, shorter
    than f1's 2 below it."""
    import pandas as pd

    from phenolens.report.explorer.profiling import profiling_view

    wells = pd.DataFrame({"f0": [3.0, -3.0, 3.0], "f1": [2.0, 2.0, 2.0], "f2": [0.5, -0.1, 0.2]})
    wells["Metadata_Treatment"], wells["Metadata_Plate"], wells["Metadata_Well"] = "a", "P1", ["A01", "A02", "A03"]
    hits = pd.DataFrame({"score": 1.0, "n_wells": 3, "p_value": 0.5, "q_value": 0.5, "hit": False}, index=["a"])
    view = profiling_view(wells, ["f0", "f1", "f2"], np.ones(3, bool), "Metadata_Treatment", "Metadata_Plate", hits)
    top = view.items["a"]["top_features"]
    assert top["names"] == ["f0", "f1", "f2"]
    np.testing.assert_allclose(top["values"], [3.0, 2.0, 0.8 / 3], atol=1e-3)  # mean |z|, the ranked quantity
    np.testing.assert_allclose(top["signed"], [1.0, 2.0, 0.2], atol=1e-3)  # the direction, shown on hover
    report = Report("t")
    report.add(Section("s").view(view))
    page = report.render()
    assert "mean |anomaly z| over the wells" in page and "mean anomaly z over the wells" not in page


def test_the_replicate_heatmap_is_drawn_in_the_space_of_the_replicate_correlation_fact():
    """The panel showed a heatmap of raw anomaly-profile correlations next to "replicate correlation", which is measured
    after whole-plate normalisation (cpd0@1: fact 0.366, heatmap median 0.954). The heatmap is now drawn in that space:
    its median off-diagonal is the fact."""
    from phenolens.profiling.pipeline import run_profiling
    from phenolens.profiling.settings import ProfilingSettings
    from phenolens.profiling.synthetic import synthetic_screen
    from phenolens.report.profiling import run_section

    table = synthetic_screen(plates=6, controls_per_plate=8, moas=2, compounds_per_moa=2, doses=1, features=12, effect=4.0, seed=2)
    settings = ProfilingSettings(
        controls="Metadata_PertType == 'control'", treatment="Metadata_Treatment", max_epochs=3, moa_repeats=1, classifiers=("lr",),
        jobs=1, curve=False, explain_features=0,
    )  # fmt: skip
    result = run_profiling(table, settings, "screen")
    (view,) = run_section(result, "t").views
    treatments = result.evaluation.replicates["anomaly"].treatments
    assert "whole-plate normalised" in view.data["correlation_title"]
    checked = 0
    for name, item in view.items.items():
        correlations = np.asarray(item["correlations"])
        assert len(correlations) == treatments.loc[name, "n_replicates"] <= 24
        off_diagonal = correlations[~np.eye(len(correlations), dtype=bool)]
        assert np.median(off_diagonal) == pytest.approx(item["facts"]["replicate correlation"], abs=1.5e-3), name
        assert item["facts"]["replicate correlation"] == pytest.approx(treatments.loc[name, "replicate_correlation"])
        checked += 1
    assert checked == len(treatments) >= 4
