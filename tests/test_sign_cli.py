"""`phenolens sign ...` end to end on a few real MitoCheck crops, and its bad-input errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SIGN_CLASSES

from phenolens.cli.main import run
from phenolens.core.runs import load_run
from phenolens.explain.sign.settings import MlpTrainingSettings, SignFitSettings

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = SIGN_CLASSES


@pytest.fixture(scope="module")
def workspace(sign_workspace):
    """The shared SIGN workspace (tests/conftest.py): crops, a tiny classifier and a SIGN fit."""
    return sign_workspace


def test_fit_writes_the_metrics_schema_and_a_reusable_run(workspace):
    root, _, _ = workspace
    metrics = json.loads((root / "fit" / "metrics.json").read_text())
    assert [layer["name"] for layer in metrics["layers"]] == ["stages.stage1", "stages.stage2"]  # input to output
    for layer in metrics["layers"]:
        assert {"name", "bow_error", "bow_error_max_channel", "purity"} <= layer.keys()
        assert 0.0 <= layer["bow_error"] <= 1.0 and 0.0 < layer["purity"] <= 1.0
    for name in ["report.html", "run.json", "source.json", "split.npz", "quality.csv", "dictionary/dictionary.safetensors", "model/model.json"]:
        assert (root / "fit" / name).is_file()
    fitted = load_run(root / "fit")
    settings = fitted.setting(SignFitSettings)
    assert fitted.command == "sign fit" and settings.layers == ("stage1", "stage2") and settings.words == (6, 5) and settings.epochs == 1
    inputs = {entry["path"]: entry for entry in fitted.record["inputs"]}
    assert len(inputs[str((root / "model").resolve())]["sha256"]) == 64 and str((root / "crops").resolve()) in inputs


def test_graph_draws_class_and_image_graphs(workspace):
    root, _, _ = workspace
    assert run(["sign", "graph", str(root / "fit"), "--class", "Interphase", "--out", str(root / "graph")]) == 0
    graph = json.loads((root / "graph" / "class_00.json").read_text())
    assert graph["kind"] == "class" and graph["layers"] == ["stages.stage1", "stages.stage2", "output"]
    assert graph["nodes"][0]["id"] == "output:0" and any(node["layer"] == "stages.stage1" for node in graph["nodes"])
    assert all(edge["upper"].split(":")[0] != edge["lower"].split(":")[0] for edge in graph["edges"])
    for suffix in ("png", "svg"):
        assert (root / "graph" / f"class_00.{suffix}").stat().st_size > 1000
    image = root / "crops" / "Prometaphase" / "03.npy"
    assert run(["sign", "graph", str(root / "fit"), "--image", str(image), "--out", str(root / "image")]) == 0
    metrics = json.loads((root / "image" / "metrics.json").read_text())
    assert metrics["kind"] == "image" and metrics["predicted"] in CLASSES
    drawn = load_run(root / "image")
    assert drawn.command == "sign graph" and any(entry["path"] == str(image.resolve()) for entry in drawn.record["inputs"])


def test_mlp_paths_end_to_end(workspace):
    root, folder, _ = workspace
    assert run(["sign", "train-mlp", *folder, "--hidden", "16,12,8", "--epochs", "3", "--random-labels", "--out", str(root / "mlp")]) == 0
    assert (root / "mlp" / "training.npz").is_file() and load_run(root / "mlp").setting(MlpTrainingSettings).hidden == (16, 12, 8)
    again = ["sign", "train-mlp", *folder, "--hidden", "8", "--epochs", "1", "--out", str(root / "mlp-again")]
    assert run(again) == 0 and run(again) == 2 and run([*again, "--overwrite"]) == 0
    assert run(["sign", "hmm", str(root / "mlp"), *folder, "--states", "3", "--epochs", "2", "--training-images", "--out", str(root / "hmm")]) == 0
    metrics = json.loads((root / "hmm" / "metrics.json").read_text())
    assert [layer["states"] for layer in metrics["layers"]] == [3, 3, 3]
    assert len(metrics["example_path"]) == 3
    assert run(["sign", "graph", str(root / "hmm"), "--class", "Interphase", "--out", str(root / "not-a-graph")]) == 2


def test_bad_input_gives_one_line_errors(workspace, capsys):
    root, _, base = workspace
    assert run([*base, "--layers", "stage9", "--out", str(root / "bad")]) == 2
    assert "'stage9' does not exist" in capsys.readouterr().err
    assert run([*base, "--layers", "head", "--out", str(root / "bad")]) == 2
    assert "not convolutional" in capsys.readouterr().err
    assert run([*base, "--layers", "stage2", "--words", "100000", "--out", str(root / "bad")]) == 2
    assert "K = 100000 words" in capsys.readouterr().err
    assert run(["sign", "graph", str(root / "fit"), "--class", "Anaphase"]) == 2
    assert "unknown class 'Anaphase'" in capsys.readouterr().err
    assert run(["sign", "graph", str(root)]) == 2
    assert run([*base, "--words", "1", "--out", str(root / "bad")]) == 2
    assert "SignFitSettings.words (--words) = 1: must be >= 2" in capsys.readouterr().err
    assert run([*base, "--out", str(root / "fit")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert not (root / "bad").exists()


def test_stamp_contrasts_with_the_pixels_under_it_and_reports_its_box():
    from phenolens.data.containers import ImageSet
    from phenolens.explain.sign.watermark import ALPHA, letter_glyph, stamp_images

    images = np.zeros((4, 1, 28, 28), dtype=np.uint8)
    images[2:] = 250  # two bright images: their stamp must be dark ink
    labels = np.array([0, 1, 0, 1])
    glyph = letter_glyph("A", 10)
    stamped, boxes = stamp_images(ImageSet(images, labels, ["a", "b"], ["grey"], name="toy"), [1], glyph, seed=0)
    values = stamped.padded()
    for index in range(4):
        top, left, bottom, right = boxes[index]
        assert bottom - top == right - left == 9
        inside = values[index, 0, top : bottom + 1, left : right + 1]
        if labels[index] == 0:  # not a stamped class: untouched
            np.testing.assert_array_equal(values[index], images[index])
        elif index == 1:  # dark background: white ink at opacity alpha
            assert inside.max() == pytest.approx(ALPHA * 255, abs=1)
        else:  # bright background: black ink
            assert inside.min() == pytest.approx((1 - ALPHA) * 250, abs=1)


def test_watermark_draw_without_two_images_of_every_class_names_the_option():
    from phenolens.core.errors import PhenolensError
    from phenolens.data import load
    from phenolens.explain.sign.settings import WatermarkSettings
    from phenolens.explain.sign.watermark import watermark_experiment

    try:
        load("fashion-mnist")
    except PhenolensError:
        pytest.skip("fashion-mnist files not available here")
    # 10 images of 10 classes: some class is drawn fewer than twice (before any training)
    with pytest.raises(PhenolensError, match=r"^--train-images 10 drew fewer than 2 images of a class \(seed 0\); raise --train-images$"):
        watermark_experiment(WatermarkSettings(train_images=10, test_images=2000), seed=0)


def test_watermark_study_summarises_every_class_over_seeds():
    from phenolens.explain.sign.settings import WatermarkSettings
    from phenolens.explain.sign.watermark import WatermarkStudy

    def result(ratio: float, stamped: bool) -> dict:
        return {"stamped": stamped, "stamp_ratio": ratio, "passes": ratio >= 3.0, "layers": {}}

    per_seed = {0: {"Shirt": result(4.0, True), "Bag": result(1.0, False)}, 1: {"Shirt": result(2.0, True), "Bag": result(1.5, False)}}
    study = WatermarkStudy(WatermarkSettings(seeds=(0, 1), stamped=("Shirt",)), per_seed, fits={})
    summary = study.summary()
    assert summary["Shirt"] == {
        "stamped": True,
        "stamp_ratio": 3.0,
        "stamp_ratio_per_seed": {"0": 4.0, "1": 2.0},
        "passes_per_seed": {"0": True, "1": False},
    }
    assert summary["Bag"]["stamped"] is False and summary["Bag"]["stamp_ratio"] == 1.25
    assert study.check() == {"stamped_pass_every_seed": False, "clean_fail_every_seed": True}
    assert study.metrics()["seeds"]["1"]["Bag"]["stamp_ratio"] == 1.5


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a zip file", "unreadable or incomplete split"),
        ({"fit": np.arange(3)}, "unreadable or incomplete split"),
        ({"fit": np.arange(3), "validation": np.array([0.5, 1.5])}, "'validation' is not a non-empty list"),
        ({"fit": np.array([-1, 2]), "validation": np.arange(2)}, "'fit' indices leave the 10 labelled images"),
        ({"fit": np.arange(3), "validation": np.array([], dtype=int)}, "'validation' is not a non-empty list"),
    ],
)
def test_a_tampered_split_is_one_line(tmp_path, content, message):
    from phenolens.core.errors import PhenolensError
    from phenolens.explain.sign.pipeline import read_split

    path = tmp_path / "split.npz"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.savez(path, **content)
    with pytest.raises(PhenolensError, match=message):
        read_split(path, 10)


def test_a_good_split_reads_back(tmp_path):
    from phenolens.explain.sign.pipeline import read_split

    np.savez(tmp_path / "split.npz", fit=np.array([0, 2, 4]), validation=np.array([1, 3]))
    fit, validation = read_split(tmp_path / "split.npz", 5)
    assert fit.tolist() == [0, 2, 4] and validation.tolist() == [1, 3] and fit.dtype == np.int64
