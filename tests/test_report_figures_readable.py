"""Report figures a reader can read: titles that do not run into each other, categories told apart, counted in order.

The checks measure the drawn figure (text bounding boxes, the legend's entries and markers), so they fail when a
figure draws two column titles on top of each other, lists Week10 before Week2, or gives two batches one look.
"""

from __future__ import annotations

import numpy as np
import pytest

from phenolens.explain.images import Explanation
from phenolens.report.attribution import overlay_figure
from phenolens.report.batch_effects import batch_map_figure
from phenolens.report.figures import class_styles, natural_order


def test_natural_order_counts_like_a_reader():
    assert natural_order(["Week10", "Week2", "Week1", "week3", "Week2"]) == ["Week1", "Week2", "week3", "Week10"]
    assert natural_order(["plate 10", "plate 9", "B", "A"]) == ["A", "B", "plate 9", "plate 10"]
    assert natural_order([3, 20, 100]) == ["3", "20", "100"]


def test_class_styles_tell_apart_more_categories_than_colours():
    styles = class_styles(20)
    assert len(set(styles)) == 20  # no two categories look the same
    assert styles[0][1] == "o" and styles[8] == (styles[0][0], "s")  # the ninth: first colour, new marker


MIN_TITLE_GAP_PX = 10  # about two characters at 7 pt: "Integrated gradients" titles side by side left 5 px and read as one


def _rendered_boxes(fig, texts):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return [text.get_window_extent(renderer) for text in texts]


def test_overlay_column_titles_do_not_overlap():
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(2, 2, 24, 24)).astype(np.float32)
    methods = ["saliency", "gradcam", "integrated_gradients"]  # the demo's columns
    explanation = Explanation(
        class_names=["NuclearGFP", "CytoplasmicGFP"],
        channel_names=["FKHR-GFP", "DNA"],
        raw=images,
        labels=np.array([0, 1]),
        proba=np.array([[0.9, 0.1], [0.2, 0.8]]),
        targets=np.array([0, 1]),
        maps={method: rng.normal(size=images.shape).astype(np.float32) for method in methods},
        channel_occlusion=np.zeros((2, 2)),
        cam_concordance=np.zeros((2, 2)),
    )
    fig = overlay_figure(explanation, [("NuclearGFP", 0), ("CytoplasmicGFP", 1)], methods, "Most and least confident")
    titles = [axis.title for axis in fig.axes[:7]]  # the first row: 2 channels, 2 saliency maps, Grad-CAM, 2 IG maps
    assert [t.get_text().split("\n")[0] for t in titles] == ["FKHR-GFP", "DNA", "Saliency", "Saliency", "Grad-CAM", "Integrated", "Integrated"]
    boxes = _rendered_boxes(fig, titles)
    for left, right in zip(boxes, boxes[1:]):
        assert right.x0 - left.x1 >= MIN_TITLE_GAP_PX, f"column titles run together: {left} and {right}"


@pytest.mark.parametrize("n_batches", [3, 10])
def test_batch_map_labels_its_axes_and_lists_batches_in_order_each_with_its_own_look(n_batches):
    rng = np.random.default_rng(1)
    wells = 40 * n_batches
    batches = np.array([f"Week{1 + i // 40}" for i in range(wells)])[rng.permutation(wells)]
    is_control = np.zeros(wells, dtype=bool)
    for level in np.unique(batches):
        is_control[np.flatnonzero(batches == level)[:10]] = True
    maps = {name: rng.normal(size=(wells, 2)) for name in ("cellprofiler", "cellprofiler_sphered")}
    fig = batch_map_figure(maps, batches, is_control, {"cellprofiler": "cellprofiler\nsame-batch neighbour 0.40 (chance 0.10)"})
    axes = [axis for axis in fig.axes if axis.get_visible() and axis.collections]
    assert len(axes) == 2
    assert all(axis.get_xlabel() == "t-SNE 1 (a.u.)" and axis.get_ylabel() == "t-SNE 2 (a.u.)" for axis in axes)
    assert axes[0].get_title().startswith("cellprofiler\nsame-batch neighbour") and axes[1].get_title() == "cellprofiler_sphered"
    (legend,) = fig.legends
    labels = [text.get_text() for text in legend.get_texts()]
    assert labels == ["treated wells (any batch)", *[f"Week{i}" for i in range(1, n_batches + 1)]]
    looks = set()
    for collection in axes[0].collections[1:]:  # one per batch, after the grey treated wells
        assert len(collection.get_offsets()) == 10  # control wells only: 10 of the batch's 40 wells
        looks.add((tuple(np.round(collection.get_facecolor()[0], 3)), collection.get_paths()[0].vertices.tobytes()))
    assert len(looks) == n_batches
    treated = axes[0].collections[0]
    assert len(treated.get_offsets()) == wells - is_control.sum()


def test_explorer_map_tells_apart_more_groups_than_colours():
    from phenolens.report.explorer.images import group_colours, map_figure

    names = [f"MoA {i}" for i in range(12)]  # BBBC021 has 12 MoAs
    codes = np.repeat(np.arange(12), 3)
    points = np.random.default_rng(0).normal(size=(len(codes), 2))
    figure = map_figure(points, [str(i) for i in range(len(codes))], {"MoA": (codes, names, group_colours(12))})
    looks = {(trace.marker.color, trace.marker.symbol) for trace in figure.data}
    assert len(figure.data) == 12 and len(looks) == 12
    assert figure.layout.xaxis.title.text == "t-SNE 1 (a.u.)" and figure.layout.yaxis.title.text == "t-SNE 2 (a.u.)"


def _rendered(section) -> str:
    from phenolens.report.html import Report

    report = Report("check")
    report.add(section)
    return report.render()


def test_echoes_tables_speak_the_engineers_language():
    from phenolens.echoes.thickness import LayerScan, LayerScanConfig
    from phenolens.report.echoes import sweep_section, thickness_section

    thickness = np.tile([0.1, 0.2, 0.3, 0.4], (2, 1))
    scan = LayerScan(np.zeros((8, 10)), thickness * 10, thickness, LayerScanConfig(rows=2, columns=4), np.zeros((8, 2)))
    errors = {"uscnn": {"mae_thinnest_mm": 0.01, "mae_rest_mm": 0.02, "resolved_fraction": 1.0}}
    page = _rendered(thickness_section(scan, {"uscnn": thickness}, errors))
    assert "<th>MAE, thinnest layer (mm)</th>" in page and "mae_thinnest_mm" not in page
    sweeps = {"snr": {"uscnn": {"10.0": {"auc": 0.5, "f1": 0.6}, "20.0": {"auc": 0.7, "f1": 0.8}}}}
    page = _rendered(sweep_section(sweeps, {}, {}))
    assert "<th>signal-to-noise ratio (dB)</th>" in page and "AUC against snr" not in page


def test_a_section_named_like_the_page_is_not_headed_twice():
    from phenolens.report.html import Report, Section

    report = Report("phenolens profile run: bbbc021")
    report.add(Section("phenolens profile run: bbbc021").text("Representations ...").add(Section("Batch effects")))
    page = report.render()
    assert page.count(">phenolens profile run: bbbc021</h") == 1 and "<h3>Batch effects</h3>" in page
    other = Report("phenolens images explain: bbbc013")
    other.add(Section("Explanations"))
    assert "<h2>Explanations</h2>" in other.render()


def test_report_tables_show_headings_while_the_frame_keeps_machine_names():
    import pandas as pd

    from phenolens.report.headings import per_class_heading
    from phenolens.report.html import Section

    hits = pd.DataFrame({"score": [2.5], "n_wells": [3], "p_value": [0.01], "q_value": [0.02]}, index=pd.Index(["cpd@1"], name="treatment"))
    quality = pd.DataFrame({"name": ["conv1"], "bow_error": [0.3], "bow_error_max_channel": [0.4], "purity_max_channel": [0.5]})
    groups = pd.DataFrame({"well": ["A01"], "n_images": [12], "fraction_NoGFP": [0.25], "z_NoGFP": [1.0], "z_score": [2.0]})
    groups = groups.rename(columns=lambda name: per_class_heading(name, ["NoGFP", "NuclearGFP"]))
    page = _rendered(Section("tables").table(hits).table(quality).table(groups))
    for shown in ("<th>wells</th>", "<th>p-value</th>", "<th>q-value (Benjamini-Hochberg)</th>", "<th>bag-of-words error (fraction)</th>"):
        assert shown in page, shown
    for shown in ("<th>images</th>", "<th>share predicted NoGFP</th>", "<th>z-score of NoGFP</th>", "<th>z_score</th>", "<th>treatment</th>"):
        assert shown in page, shown  # a column that is not a class keeps its name
    for machine in ("n_wells", "p_value", "q_value", "bow_error", "n_images", "fraction_NoGFP"):
        assert f"<th>{machine}</th>" not in page, machine
    assert list(hits.columns) == ["score", "n_wells", "p_value", "q_value"]  # the caller's frame (and the files) keep the API names


@pytest.mark.parametrize("rows", [2, 4])
def test_thickness_map_ticks_sit_on_pixel_centres_and_the_axes_say_what_they_count(rows, monkeypatch):
    from phenolens.echoes.thickness import LayerScan, LayerScanConfig
    from phenolens.report import echoes

    drawn = []
    monkeypatch.setattr(echoes.Section, "figure", lambda self, fig, caption, name: drawn.append((fig, caption)) or self)
    thickness = np.tile(np.linspace(0.1, 0.4, 6), (rows, 1))
    scan = LayerScan(np.zeros((rows * 6, 10)), thickness * 10, thickness, LayerScanConfig(rows=rows, columns=6), np.zeros((rows * 6, 2)))
    errors = {"uscnn": {"mae_thinnest_mm": 0.01, "mae_rest_mm": 0.02, "resolved_fraction": 1.0}}
    echoes.thickness_section(scan, {"uscnn": thickness}, errors)
    (fig, caption), *_ = drawn
    maps = [axis for axis in fig.axes if axis.images]
    assert len(maps) == 3  # true map, the estimate, its error
    for axis in maps:
        fig.canvas.draw()
        for ticks, (low, high), size in ((axis.get_xticks(), axis.get_xlim(), 6), (axis.get_yticks(), sorted(axis.get_ylim()), rows)):
            shown = ticks[(ticks >= low) & (ticks <= high)]
            assert len(shown) >= 2 and np.allclose(shown, np.round(shown)), shown  # pixel i spans i - 0.5 .. i + 0.5
            assert shown.min() >= 0 and shown.max() <= size - 1
    labels = {axis.get_xlabel() for axis in maps} | {axis.get_ylabel() for axis in maps}
    assert labels - {""} == {"scan column (A-scan index)", "scan row (A-scan index)"} and "not millimetres" in caption
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_echoes_training_caption_states_the_schedule_that_ran():
    """The caption named a fixed 'halves after 12 epochs' whatever --lr-factor / --lr-patience the training used."""
    from phenolens.report.echoes import training_section
    from phenolens.training.loop import History

    history = History([{"train_loss": 1.0, "val_loss": 1.2, "lr": 0.01}, {"train_loss": 0.5, "val_loss": 0.7, "lr": 0.003}], best_epoch=1)
    caption = training_section(history, 3.0, 80, 20, lr_factor=0.3, lr_patience=4).figures[0].caption
    assert "multiplied by 0.3 after 4 epochs" in caption
    assert "12" not in caption and "halves" not in caption


def test_a_method_with_no_attribution_in_the_cell_is_named_as_looking_outside_it():
    """A cell-mass fraction of exactly 0 (all positive attribution outside the cell) was read as 'unknown' and not reported."""
    from types import SimpleNamespace

    import pandas as pd

    from phenolens.report.attribution import explanation_section

    classes, channels = ["a", "b"], ["DNA", "GFP"]
    table = pd.DataFrame([[1.0, 2.0], [2.0, 1.0]], index=classes, columns=channels)
    explanation = SimpleNamespace(
        maps={"gradcam": None, "saliency": None},
        settings={"target": "predicted", "baseline": "zero"},
        class_names=classes,
        proba=np.array([[0.9, 0.1]]),
        targets=np.array([0]),
        correct=np.array([False]),
        summary_labels=lambda: np.array([0]),
        faithfulness={},
    )
    metrics = {
        "n_images": 1,
        "n_correct": 0,
        "faithfulness": {},
        "sanity_ssim": {},
        "nucleus_mass_fraction": {"gradcam": {}, "saliency": {}},
        "cell_mass_fraction": {"gradcam": 0.0, "saliency": 0.9},
    }
    tables = {"occlusion_logit_drop": table, "cam_concordance": table, "saliency_share": table}
    section = explanation_section(explanation, "Explanations", metrics=metrics, tables=tables)
    assert any(text.startswith("Grad-CAM: most of the positive attribution lies outside the cell") for text in section.paragraphs)


@pytest.mark.parametrize("n_correct", [0, 1])
def test_the_channel_tables_captions_say_which_images_they_average(n_correct):
    """With no correctly classified image the per-class tables average every image (`Explanation.channel_tables`), yet
    the captions said "correctly classified"."""
    from types import SimpleNamespace

    from phenolens.report.attribution import explanation_section

    classes, channels = ["a", "b"], ["DNA", "GFP"]
    occlusion = np.array([[1.0, 3.0], [5.0, 7.0]])
    labels, predicted = np.array([0, 0]), np.array([1 - n_correct, 1])
    explanation = SimpleNamespace(
        maps={"saliency": np.ones((2, 2, 3, 3))}, settings={"target": "predicted", "baseline": "zero"}, class_names=classes,
        channel_names=channels, labels=labels, predicted=predicted, proba=np.array([[0.4, 0.6], [0.3, 0.7]]), targets=predicted,
        channel_occlusion=occlusion, cam_concordance=occlusion, faithfulness={}, raw=np.zeros((2, 2, 3, 3)), nucleus_masks=None,
    )  # fmt: skip
    explanation.correct = Explanation.correct.fget(explanation)
    explanation.summary_labels = lambda: Explanation.summary_labels(explanation)
    tables = Explanation.channel_tables(explanation)
    # the first image alone when it is correct, both images when none is
    assert tables["occlusion_logit_drop"].loc["a"].tolist() == ([1.0, 3.0] if n_correct else [3.0, 5.0])
    metrics = {"n_images": 2, "n_correct": n_correct, "faithfulness": {}, "sanity_ssim": {}}
    section = explanation_section(explanation, "Explanations", metrics=metrics, tables=tables)
    captions = [caption for caption, _ in section.tables if not caption.startswith("Faithfulness")] + [section.figures[0].caption]
    basis = "correctly classified images" if n_correct else "all 2 images (none correctly classified"
    assert len(captions) == 4 and "occlusion" in section.figures[0].filename
    assert all(f"mean over {basis}" in caption.lower() for caption in captions), captions
    said = "used for the per-class summaries" if n_correct else "the per-class summaries use all 2 images"
    assert said in section.paragraphs[0]


def test_sign_quality_figures_claim_no_trend_and_the_distance_maps_have_a_scale(monkeypatch):
    """The titles asserted 'Errors fall with depth' / 'Purity rises with depth' whatever the numbers (here they rise and
    fall), and the word-distance maps had no colour bar: the caption's 'colour bar' was the class strip."""
    from types import SimpleNamespace

    import matplotlib.pyplot as plt
    import pandas as pd

    from phenolens.report import sign

    drawn = []
    monkeypatch.setattr(sign.Section, "figure", lambda self, fig, caption, filename=None: drawn.append((fig, caption)) or self)
    quality = pd.DataFrame(
        {"name": ["a", "b"], "bow_error": [0.1, 0.4], "bow_error_max_channel": [0.2, 0.3], "purity": [0.9, 0.5], "purity_max_channel": [0.6, 0.6]}
    )
    words = {layer: np.array([[0, 1, 2, 0], [1, 2, 2, 1]]) for layer in ("a", "b")}
    layer_dictionary = SimpleNamespace(n_words=3, centres=lambda: np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]]))
    result = SimpleNamespace(
        quality=quality,
        validation_index=np.array([0, 1]),
        dictionary=SimpleNamespace(loss="generative", layers_=["a", "b"], dictionaries_={"a": layer_dictionary, "b": layer_dictionary}),
        classifier=SimpleNamespace(class_names=["Interphase", "Prometaphase"]),
        images=SimpleNamespace(labels=np.array([0, 1])),
        builder=SimpleNamespace(maps_=SimpleNamespace(words=words)),
    )
    sign.quality_section(result)
    (curves, _), (distances, caption) = drawn
    titles = [axis.get_title() for axis in curves.axes]
    assert titles == ["Bag-of-words error per layer", "Cluster purity per layer"]
    maps = [axis for axis in distances.axes if axis.images]
    scales = [axis for axis in distances.axes if axis.get_ylabel() == "distance between word means"]
    assert len(maps) == 2 and len(scales) == 2
    assert maps[0].images[0].get_array().max() == pytest.approx(10.0)  # |(6, 8) - (0, 0)|
    legend = distances.legends[0]
    assert [text.get_text() for text in legend.get_texts()] == ["Interphase", "Prometaphase"]
    assert "colour bar: distance" in caption and "strip" in caption
    for fig, _ in drawn:
        plt.close(fig)


def test_the_predict_report_does_not_call_its_confusion_matrix_held_out(monkeypatch):
    """`images predict` counts every labelled image it is given (training images included); its matrix was titled 'held-out images'."""
    from types import SimpleNamespace

    import matplotlib.pyplot as plt

    from phenolens.report import classifier

    drawn = []
    monkeypatch.setattr(classifier.Section, "figure", lambda self, fig, caption, filename=None: drawn.append(fig) or self)
    labelled = {"n_images": 4, "accuracy": 0.5, "macro_f1": 0.5, "confusion_matrix": [[1, 1], [1, 1]]}
    metrics = {"n_images": 4, "predicted_counts": {"a": 2, "b": 2}, "labelled": labelled}
    classifier.prediction_section(SimpleNamespace(metrics=metrics, groups=None), ["a", "b"])
    (fig,) = drawn
    assert fig.axes[0].get_title() == "Confusion matrix (labelled images predicted)"
    plt.close(fig)
    held_out = classifier.confusion_figure([[2, 0], [0, 2]], ["a", "b"])
    assert held_out.axes[0].get_title() == "Confusion matrix (held-out images)"
    plt.close(held_out)


def test_the_counterfactual_probability_title_reports_how_many_reached_the_target():
    """The title said 'Counterfactuals move the prediction to X' even when none did."""
    from types import SimpleNamespace

    import matplotlib.pyplot as plt

    from phenolens.report.counterfactual import probability_figure

    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    ecinn = SimpleNamespace(
        valid=np.ones(4, dtype=bool),
        probabilities=probabilities,
        probabilities_at={"alpha0": probabilities, "alpha1": np.array([[0.6, 0.4], [0.3, 0.7], [0.9, 0.1], [0.8, 0.2]])},
    )
    fig = probability_figure(SimpleNamespace(ecinn=ecinn, gradient=None, target=1, class_names=["NoGFP", "NuclearGFP"]))
    assert fig.axes[0].get_title() == "alpha_1 reaches p(NuclearGFP) > 0.5 for 25% of the images"
    plt.close(fig)


def test_the_filter_caption_names_the_colours_the_weights_are_drawn_in(monkeypatch):
    """The caption said "purple negative, orange positive weights", but matplotlib's PuOr draws low values orange
    and high values purple: every filter read with its sign flipped."""
    import re

    import matplotlib.pyplot as plt

    from phenolens.report import class_model

    drawn = []
    monkeypatch.setattr(class_model.Section, "figure", lambda self, fig, caption, filename=None: drawn.append((fig, caption)) or self)
    filters = np.zeros((2, 1, 3, 3))
    filters[0, 0, 1, 1], filters[1, 0, 1, 1] = 1.0, -1.0
    class_model.class_model_section(np.ones((2, 1, 8, 8)), ["a", "b"], ["DNA"], filters, ())
    fig, caption = drawn[-1]
    colours = {sign: colour for colour, sign in re.findall(r"(\w+) (negative|positive)", caption)}
    assert set(colours) == {"negative", "positive"}
    image = fig.axes[0].images[0]  # filter 0: its centre weight is the largest positive one
    red, _, blue, _ = image.cmap(image.norm(1.0))
    drawn_positive = "purple" if blue > red else "orange"
    red, _, blue, _ = image.cmap(image.norm(-1.0))
    drawn_negative = "purple" if blue > red else "orange"
    assert (colours["positive"], colours["negative"]) == (drawn_positive, drawn_negative)
    for fig, _ in drawn:
        plt.close(fig)


@pytest.mark.parametrize("pert_types", [("control", "trt"), ("negcon", "trt")])
def test_the_profile_summary_title_says_how_its_features_were_ranked(monkeypatch, pert_types):
    """With a perturbation-type column but no wells typed "control" (JUMP's "negcon"), the features are ranked by their
    coefficient of variation, yet the title said they "differ most between treated and control wells"."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from phenolens.report import datasets

    drawn = []
    monkeypatch.setattr(datasets.Section, "figure", lambda self, fig, caption, filename=None: drawn.append((fig, caption)) or self)
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.normal(size=(24, 8)) + 5.0, columns=[f"Cells_f{i}" for i in range(8)])
    table["Metadata_pert_type"] = [pert_types[0]] * 6 + [pert_types[1]] * 18
    datasets._summarize_profiles(table, "plate", seed=0)
    title = drawn[0][0]._suptitle.get_text()
    has_controls = pert_types[0] == "control"
    assert ("treated and control wells" in title) == has_controls
    for fig, _ in drawn:
        plt.close(fig)


def test_the_real_a_scan_caption_names_the_colours_it_draws(monkeypatch):
    """The caption said "signal (grey)" while the signal was drawn black (Okabe-Ito's last colour), the colour an
    unknown method's bars also take."""
    import matplotlib.colors as mcolors
    import matplotlib.pyplot as plt

    from phenolens.data.containers import Signal
    from phenolens.echoes.real import RealDetection
    from phenolens.report import echoes

    drawn = []
    monkeypatch.setattr(echoes.Section, "figure", lambda self, fig, caption, filename=None: drawn.append((fig, caption)) or self)
    monkeypatch.setattr(echoes.Section, "view", lambda self, view: self)
    signal = Signal(name="scan", values=np.sin(np.arange(400) / 3.0) * np.exp(-(((np.arange(400) - 200) / 30.0) ** 2)))
    found = RealDetection("scan", "omp", np.array([200.0]), np.array([1.0]), np.array([200.0]), 100.0)
    echoes.real_section([signal], [found])
    fig, caption = drawn[0]
    signal_line, envelope_line = fig.axes[0].get_lines()[:2]
    named = {"grey": lambda rgb: np.ptp(rgb) < 0.05 and 0.2 < rgb[0] < 0.8, "black": lambda rgb: max(rgb) < 0.05}
    said = next(name for name in named if f"signal ({name})" in caption)
    assert named[said](np.array(mcolors.to_rgb(signal_line.get_color())))
    assert "envelope (blue)" in caption and mcolors.to_rgb(envelope_line.get_color())[2] > 0.8
    for fig, _ in drawn:
        plt.close(fig)


def test_every_anomaly_score_lands_in_a_bar_of_its_histogram():
    """The log-spaced bins started at 1e-3, so wells scoring below it (here three of five treated wells, one at 0) were
    left out, and density=True rescaled the rest as if they were all the wells; 10 ** log10(40) < 40 lost the top well."""
    from phenolens.report.profiling import scores_figure

    scores = {"held-out control wells": np.array([0.5, 1.0, 2.0, 4.0]), "treated wells": np.array([0.0, 1e-5, 5e-4, 3.0, 40.0])}
    axis = scores_figure(scores).axes[0]
    assert axis.get_ylabel() == "fraction of wells"
    for bars in axis.containers:
        assert sum(bar.get_height() for bar in bars) == pytest.approx(1.0)  # every well counted once
        assert bars[0].get_x() == pytest.approx(1e-3)
    legend = [text.get_text() for text in axis.get_legend().get_texts()]
    assert legend == ["held-out control wells (4 wells)", "treated wells (5 wells; 3 below 0.001 in the first bar)"]
