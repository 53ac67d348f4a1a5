"""The counterfactual explorer view on a real (tiny) i-ResNet run on BBBC013, in a real browser."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from phenolens.data.loaders import load
from phenolens.explain.counterfactual.evaluate import explain_counterfactuals
from phenolens.explain.counterfactual.settings import CounterfactualExplanationSettings, CounterfactualTrainingSettings
from phenolens.explain.counterfactual.training import train_counterfactual_model
from phenolens.report import Report
from phenolens.report.explorer.counterfactual import counterfactual_frames, counterfactual_view
from phenolens.report.html import Section

HOSTILE = "<img src=x onerror=alert(1)></script><script>alert(2)</script>"
CELLS = ".pl-figure[data-key=cells]"


@pytest.fixture(scope="module")
def explained():
    """ECINN counterfactuals towards NuclearGFP from a one-epoch i-ResNet on real BBBC013 crops, one sweep."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        training = CounterfactualTrainingSettings(
            classes=("CytoplasmicGFP", "NuclearGFP"), size=32, blocks=(1,), hidden=(4,), epochs=1, autoencoder=False
        )
        model, split = train_counterfactual_model(load("bbbc013"), training)
        test = split["data"].subset(split["test_index"])
        settings = CounterfactualExplanationSettings(target="NuclearGFP", baseline=False, autoencoder=False, sweeps=1, sweep_steps=5)
        return explain_counterfactuals(model, test, settings)
    finally:
        torch.set_num_threads(threads)


def test_frames_follow_the_sweep_or_the_two_alphas(explained):
    swept = explained.sweeps[0]["index"]
    alphas, probabilities, images = counterfactual_frames(explained, swept)
    assert alphas == [float(a) for a in explained.sweeps[0]["alphas"]] and len(images) == len(alphas) == len(probabilities)
    other = next(i for i in np.flatnonzero(explained.ecinn.valid) if i != swept)
    alphas, probabilities, images = counterfactual_frames(explained, other)
    assert alphas[0] == 0.0 and alphas == sorted(alphas) and len(alphas) == 3
    assert probabilities[0] == pytest.approx(explained.ecinn.probabilities[other, explained.target])
    np.testing.assert_array_equal(images[0], explained.originals[other])


def test_view_holds_every_cell_with_a_counterfactual_and_a_tile_per_step_and_channel(explained):
    view = counterfactual_view(explained)
    valid = np.flatnonzero(explained.ecinn.valid)
    assert sorted(view.items) == sorted(f"cell-{i}" for i in valid)
    steps = sum(len(item["frames"]) for item in view.items.values())
    channels = len(explained.channel_names)
    assert set(view.sheets) == {f"cf{c}" for c in range(channels)} | {f"cfd{c}" for c in range(channels)}
    assert all(len(sheet.tiles) == steps for sheet in view.sheets.values())
    # The difference of the original from itself is zero: the middle grey of the diverging scale.
    first = view.items[f"cell-{valid[0]}"]["frames"][0]
    assert first["alpha"] == 0.0 and abs(int(np.median(view.sheets["cfd0"].tiles[first["tile"]])) - 128) <= 1


@pytest.mark.slow
def test_the_alpha_slider_steps_through_a_cells_path_in_the_browser(explained, watched_page, tmp_path):
    from browser import pixel_variance

    report = Report("counterfactual")
    report.add(Section("Counterfactuals").view(counterfactual_view(explained)))
    path = tmp_path / "report.html"
    path.write_text(report.render())
    watched = watched_page(path)
    clicked = watched.click_point(CELLS, 0)
    watched.page.wait_for_selector(".pl-panel .pl-cf-chart .main-svg")
    assert watched.shown_id() == clicked
    frames = len(explained.sweeps[0]["alphas"]) if clicked == f"cell-{explained.sweeps[0]['index']}" else 3
    watched.page.wait_for_selector(".pl-panel-body[data-step]", state="attached")
    panel = watched.page.locator(".pl-panel-body")
    assert panel.get_attribute("data-step") == str(frames - 1)  # opens at alpha_1
    watched.page.locator(".pl-panel input.pl-alpha").fill("0")
    assert panel.get_attribute("data-step") == "0" and "alpha = 0.000" in watched.page.locator(".pl-cf-step").inner_text()
    assert pixel_variance(watched.page.screenshot(path=str(tmp_path / "counterfactual.png"))) > 100
    watched.assert_clean()


@pytest.mark.slow
def test_hostile_class_and_channel_names_render_as_text(explained, watched_page, tmp_path):
    hostile = dataclasses.replace(explained, class_names=[HOSTILE + "a", HOSTILE + "b"], channel_names=[HOSTILE] * len(explained.channel_names))
    report = Report(HOSTILE)
    report.add(Section(HOSTILE).view(counterfactual_view(hostile)))
    path = tmp_path / "report.html"
    path.write_text(report.render())
    watched = watched_page(path)
    clicked = watched.click_point(CELLS, 0)
    assert watched.shown_id() == clicked
    assert HOSTILE in watched.page.locator(".pl-panel").inner_text()
    watched.assert_clean()
