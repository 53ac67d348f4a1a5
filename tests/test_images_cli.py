"""`phenolens train` and `phenolens explain` end to end on a tiny folder, and their bad-input errors."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from phenolens.cli.main import run

TINY = ["--width", "0.125", "--blocks", "1,1", "--stem-stride", "1", "--epochs", "2", "--batch-size", "8"]


def _write_folder(root, channels: int = 2, per_class: int = 10, seed: int = 0):
    """Two classes of variable-size 2-channel crops: the reporter spot on or off the 'nucleus'."""
    rng = np.random.default_rng(seed)
    for label in ("inside", "outside"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            size = int(rng.integers(14, 19))
            image = rng.uniform(0, 20, size=(channels, size, size)).astype(np.float32)
            image[-1, 5:9, 5:9] += 200
            rows = slice(5, 9) if label == "inside" else slice(0, 3)
            image[0, rows, 5:9] += 200
            np.save(root / label / f"w{i % 4}_{i}.npy", image)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    folder = _write_folder(root / "crops")
    model = root / "model"
    status = run(["train", "--folder", str(folder), "--channels", "GFP,DNA", "--out", str(model), "--cv", "2", "--cutmix", "0.25", *TINY])
    assert status == 0
    return folder, model


def test_train_writes_weights_metrics_and_report(trained):
    folder, model = trained
    metrics = json.loads((model / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "cv_macro_f1", "per_class_f1", "confusion_matrix", "roc_auc", "pr_auc", "z_prime"):
        assert key in metrics
    assert metrics["cv_folds"] == 2 and len(metrics["fold_macro_f1"]) == 2 and np.sum(metrics["confusion_matrix"]) == 20
    assert 0.0 <= metrics["macro_f1"] <= 1.0 and set(metrics["per_class_f1"]) == {"inside", "outside"}
    card = json.loads((model / "model.json").read_text())
    assert card["channel_names"] == ["GFP", "DNA"] and card["normalization"]["size"] == 18 and len(card["extra"]["held_out_sources"]) == 10
    assert card["extra"]["settings"]["cutmix_probability"] == 0.25  # --cutmix reached the training loop
    from phenolens.core.runs import load_run
    from phenolens.training import ImageTrainingSettings

    recorded = load_run(model)
    assert recorded.command == "images train" and recorded.setting(ImageTrainingSettings) == ImageTrainingSettings(
        cv=2, cutmix_probability=0.25, width=0.125, blocks=(1, 1), stem_stride=1, epochs=2, batch_size=8
    )
    assert (model / "model.safetensors").is_file() and (model / "report.html").is_file()
    # the confusion matrix counts all 20 out-of-fold images, not the first fold's 10: the report must not say otherwise
    assert "the confusion matrix (and the accuracy and macro-F1 above) pool every fold" in (model / "report.html").read_text()
    expected = {"training_curves.png", "confusion.png", "roc_pr.png", "embedding.png", "filters.png", "pointwise.png"}
    assert expected <= {p.name for p in (model / "figures").iterdir()}


def test_every_fold_model_shares_one_crop_size_so_out_of_fold_maps_line_up(tmp_path):
    folder = _write_folder(tmp_path / "crops", seed=3)
    large = np.random.default_rng(4).uniform(0, 20, size=(2, 24, 24)).astype(np.float32)
    np.save(folder / "inside" / "w0_large.npy", large)  # the largest crop trains only one of the two folds' models
    model = tmp_path / "model"
    assert run(["train", "--folder", str(folder), "--channels", "GFP,DNA", "--out", str(model), "--cv", "2", *TINY]) == 0
    sizes = [json.loads((model / "folds" / f"fold-{k}" / "model.json").read_text())["normalization"]["size"] for k in (1, 2)]
    assert sizes == [24, 24]
    args = ["explain", str(model), "--folder", str(folder), "--channels", "GFP,DNA", "--methods", "saliency", "--images", "out-of-fold"]
    assert run([*args, "--out", str(tmp_path / "oof")]) == 0
    assert _maps(tmp_path / "oof")["saliency"].shape == (21, 2, 24, 24)


def test_explain_writes_maps_and_metrics(trained, tmp_path):
    folder, model = trained
    out = tmp_path / "explained"
    args = ["explain", str(model), "--folder", str(folder), "--channels", "GFP,DNA", "--out", str(out)]
    status = run([*args, "--methods", "gradcam,ig,occlusion", "--n-steps", "8", "--window", "6", "--stride", "6", "--nucleus-channel", "DNA"])
    assert status == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == 10  # the held-out images of the saved model
    assert set(metrics["faithfulness"]) == {"gradcam", "integrated_gradients", "occlusion"}
    assert set(metrics["nucleus_mass_fraction"]) == {"gradcam", "integrated_gradients", "occlusion"}
    assert metrics["nucleus_reporter_channel"] == "GFP"
    page = (out / "report.html").read_text()
    assert "and positive mass of the reporter channel (GFP) inside the nucleus" in page
    assert re.search(r"Explained cells: the gallery&#39;s [1-9] of the 10 \(most and least confident correct images per class", page)
    assert page.count("<th>class</th><th>GFP</th><th>DNA</th>") >= 3  # the per-class channel tables name their rows' column
    arrays = _maps(out)
    assert arrays["integrated_gradients"].shape == (10, 2, 18, 18) and arrays["nucleus_masks"].shape == (10, 18, 18)
    assert len(pd.read_parquet(out / "per_image.parquet")) == 10 and (out / "figures" / "gallery.png").is_file()
    assert len(pd.read_parquet(out / "checks.parquet")) == 10 and metrics["check_images"] == 10 and "seeded random sample" in metrics["checks_sample"]


def test_explain_out_of_fold_uses_each_fold_model_on_its_own_held_out_images(trained, tmp_path, capsys):
    folder, model = trained
    held_out = [set(json.loads((model / "folds" / f"fold-{k}" / "model.json").read_text())["extra"]["held_out_sources"]) for k in (1, 2)]
    assert len(held_out[0]) == len(held_out[1]) == 10 and not held_out[0] & held_out[1]  # the folds partition the 20 crops
    args = ["explain", str(model), "--folder", str(folder), "--channels", "GFP,DNA", "--methods", "saliency", "--nucleus-channel", "DNA"]
    assert run([*args, "--images", "out-of-fold", "--out", str(tmp_path / "oof")]) == 0
    assert run([*args, "--out", str(tmp_path / "fold1")]) == 0  # the saved model is fold 1's, on its held-out crops
    metrics = json.loads((tmp_path / "oof" / "metrics.json").read_text())
    assert metrics["n_images"] == 20 and metrics["fold_images"] == {"fold-1": 10, "fold-2": 10}
    assert "out of fold" in metrics["settings"]["explained_by"] and "out of fold" in (tmp_path / "oof" / "report.html").read_text()
    table = pd.read_parquet(tmp_path / "oof" / "per_image.parquet")
    assert set(table["source"][:10]) == held_out[0] and set(table["source"][10:]) == held_out[1]
    pooled, first = _maps(tmp_path / "oof"), _maps(tmp_path / "fold1")
    assert np.allclose(pooled["saliency"][:10], first["saliency"], atol=1e-6)
    assert pooled["nucleus_masks"].shape == (20, 18, 18) and not np.allclose(pooled["saliency"][10:], 0.0)
    plain = tmp_path / "plain"
    shutil.copytree(model, plain, ignore=shutil.ignore_patterns("folds"))
    assert run([*args[:1], str(plain), *args[2:], "--images", "out-of-fold", "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "no cross-validation fold models; train the model with --cv K" in err and err.count("\n") == 1 and not (tmp_path / "none").exists()


def test_explain_model_out_of_fold_checks_the_sample_the_command_checks(trained, tmp_path):
    from phenolens.data.readers import read_image_folder
    from phenolens.explain import AttributionSettings, explain_model

    folder, model = trained
    options = ["--methods", "saliency", "--images", "out-of-fold", "--check-images", "4", "--sanity-images", "2"]
    assert run(["explain", str(model), "--folder", str(folder), "--channels", "GFP,DNA", *options, "--out", str(tmp_path / "oof")]) == 0
    streamed = json.loads((tmp_path / "oof" / "metrics.json").read_text())
    settings = AttributionSettings(methods=("saliency",), subset="out-of-fold", check_images=4, sanity_images=2)
    in_memory = explain_model(model, read_image_folder(folder, ["GFP", "DNA"]), settings)
    assert int(in_memory.explanation.checked.sum()) == streamed["check_images"] == 4  # --check-images over all the images, not per fold
    assert int(in_memory.explanation.sanity_checked.sum()) == streamed["sanity_images"] == 2
    for key in ("faithfulness", "sanity_ssim"):
        assert json.dumps(in_memory.metrics[key]) == json.dumps(streamed[key]) or np.allclose(
            pd.json_normalize(in_memory.metrics[key]).to_numpy(float), pd.json_normalize(streamed[key]).to_numpy(float), rtol=1e-5
        )


def test_ensemble_trains_explains_and_says_what_it_is(trained, tmp_path):
    folder = trained[0]
    model, out = tmp_path / "ensemble", tmp_path / "explained"
    assert run(["train", "--folder", str(folder), "--channels", "GFP,DNA", "--out", str(model), "--members", "2", *TINY]) == 0
    card = json.loads((model / "model.json").read_text())
    assert card["architecture"] == "ensemble" and card["hyperparameters"]["member_architecture"] == "resnet18"
    assert card["hyperparameters"]["n_members"] == 2 and "an ensemble of 2 resnet18 networks" in (model / "report.html").read_text()
    args = ["explain", str(model), "--folder", str(folder), "--channels", "GFP,DNA", "--methods", "gradcam,ig", "--out", str(out)]
    assert run([*args, "--nucleus-channel", "DNA", "--reporter-channel", "GFP"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["nucleus_mass_fraction"]) == {"gradcam", "integrated_gradients"}
    maps = _maps(out)
    assert maps["gradcam"].shape == maps["integrated_gradients"].shape == (4, 2, 18, 18)  # the 20 % held out
    assert np.isfinite(maps["gradcam"]).all() and np.abs(maps["gradcam"]).max() > 0


def test_bad_inputs_give_one_line_errors(trained, tmp_path, capsys):
    folder, model = trained
    explain = ["explain", str(model), "--methods", "saliency", "--out", str(tmp_path / "e")]
    three = _write_folder(tmp_path / "three", channels=3, per_class=3)
    assert run([*explain, "--folder", str(three), "--images", "all"]) == 2
    assert "3 channels" in capsys.readouterr().err
    empty = tmp_path / "empty"
    (empty / "classA").mkdir(parents=True)
    assert run(["train", "--folder", str(empty), "--out", str(tmp_path / "m"), *TINY]) == 2
    assert "no .tif/.tiff/.png/.npy images" in capsys.readouterr().err
    assert run(["train", "--folder", str(folder), "--out", str(tmp_path / "m"), *TINY, "--cutmix", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "cutmix_probability (--cutmix) = 1.5: must be <= 1" in err and err.count("\n") == 1 and not (tmp_path / "m").exists()
    for option, message in (
        (["--blocks", "1,x"], "blocks (--blocks) = 'x': must be a whole number"),
        (["--blocks", "1,1,1,1,1"], "give 1 to 4 stages"),
        (["--members", "0"], "members (--members) = 0: must be >= 1"),
    ):
        assert run(["train", "--folder", str(folder), "--out", str(tmp_path / "m"), *TINY, *option]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and not (tmp_path / "m").exists()
    nan_folder = _write_folder(tmp_path / "nan", per_class=3)
    bad = nan_folder / "inside" / "w0_0.npy"
    image = np.load(bad)
    image[0, 0, 0] = np.nan
    np.save(bad, image)
    assert run([*explain, "--folder", str(nan_folder), "--images", "all"]) == 2
    assert "NaN or infinite pixels" in capsys.readouterr().err
    assert run([*explain, "--folder", str(folder), "--target", "Mitosis"]) == 2
    assert "unknown target class 'Mitosis'" in capsys.readouterr().err
    other = tmp_path / "other"
    shutil.copytree(model, other)
    card = json.loads((other / "model.json").read_text())
    card["architecture"] = "densenet"
    (other / "model.json").write_text(json.dumps(card))
    assert run(["explain", str(other), "--folder", str(folder), "--out", str(tmp_path / "e2")]) == 2
    assert "do not fit a 'densenet' model" in capsys.readouterr().err
    (other / "model.safetensors").write_bytes(b"\x00" * 20)
    assert run(["explain", str(other), "--folder", str(folder), "--out", str(tmp_path / "e3")]) == 2
    err = capsys.readouterr().err
    assert "corrupt or truncated weights file" in err and err.count("\n") == 1
    assert not (tmp_path / "e").exists() and not (tmp_path / "e3").exists()  # nothing half-written


def _maps(out) -> dict[str, np.ndarray]:
    """Every array of an explain run's maps.zarr."""
    import zarr

    group = zarr.open_group(str(out / "maps.zarr"), mode="r")
    return {name: group[name][:] for name in group.array_keys()}


def _one_line_refusal(capsys, out, *texts) -> None:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for text in texts:
        assert text in err, err
    assert not out.exists()


def _manifest(folder, tmp_path):
    """A manifest of the folder's crops with a well column (w0..w3 from the file names)."""
    rows = [
        {"path": str(path.relative_to(folder)), "label": path.parent.name, "well": path.name.split("_")[0]} for path in sorted(folder.glob("*/*.npy"))
    ]
    manifest = folder / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def test_images_predict_writes_probabilities_groups_and_embeddings(trained, tmp_path):
    from phenolens.core.runs import load_run
    from phenolens.data import read_manifest
    from phenolens.training import ImageClassifier

    folder, model = trained
    manifest = _manifest(folder, tmp_path)
    out = tmp_path / "predicted"
    args = ["images", "predict", str(model), "--manifest", str(manifest), "--channels", "GFP,DNA", "--out", str(out)]
    assert run([*args, "--group-by", "well", "--embeddings", "--batch-size", "3"]) == 0
    table = pd.read_parquet(out / "predictions.parquet")
    classifier = ImageClassifier.load(model)
    images = read_manifest(manifest, ["GFP", "DNA"])
    assert np.array_equal(table[["p_inside", "p_outside"]].to_numpy(), classifier.predict_proba(images))
    assert list(table["label"]) == list(images.label_names()) and set(table["predicted"]) <= {"inside", "outside"}
    groups = pd.read_parquet(out / "groups.parquet")
    assert list(groups["well"]) == ["w0", "w1", "w2", "w3"] and groups["n_images"].sum() == 20
    assert np.allclose(groups[["fraction_inside", "fraction_outside"]].sum(axis=1), 1.0)
    assert pd.read_parquet(out / "embeddings.parquet").shape[0] == 20
    finished = load_run(out)
    assert finished.command == "images predict" and finished.metrics["n_images"] == 20 and (out / "report.html").is_file()
    assert finished.settings[0].group_by == "well" and finished.settings[0].batch_size == 3
    assert run(args) == 2  # the folder exists: refused without --overwrite
    assert run([*args, "--overwrite"]) == 0 and not (out / "groups.parquet").exists()


def test_out_equal_to_or_containing_the_input_is_refused_and_the_images_stay(trained, tmp_path, capsys):
    folder, model = trained
    crops = _write_folder(tmp_path / "crops", per_class=3)
    before = sorted(p.relative_to(crops) for p in crops.rglob("*"))
    assert run(["train", "--folder", str(crops), "--channels", "GFP,DNA", "--out", str(crops), *TINY]) == 2
    err = capsys.readouterr().err
    assert "contains the input" in err and err.count("\n") == 1
    assert run(["images", "predict", str(model), "--folder", str(crops), "--out", str(tmp_path)]) == 2
    assert "contains the input" in capsys.readouterr().err
    assert run(["explain", str(model), "--folder", str(crops), "--out", str(model)]) == 2  # nor the model it reads
    assert "contains the input" in capsys.readouterr().err
    assert sorted(p.relative_to(crops) for p in crops.rglob("*")) == before


def test_folders_are_matched_to_the_model_by_name(trained, tmp_path, capsys):
    folder, model = trained
    predicted = tmp_path / "p"
    assert run(["images", "predict", str(model), "--folder", str(folder), "--channels", "GFP,DNA", "--out", str(predicted)]) == 0
    reference = pd.read_parquet(predicted / "predictions.parquet")
    # the same crops with their channels stored the other way round, named so: reordered by name
    swapped = tmp_path / "swapped"
    for path in folder.glob("*/*.npy"):
        (swapped / path.parent.name).mkdir(parents=True, exist_ok=True)
        np.save(swapped / path.parent.name / path.name, np.load(path)[::-1])
    out = tmp_path / "p2"
    assert run(["images", "predict", str(model), "--folder", str(swapped), "--channels", "DNA,GFP", "--out", str(out)]) == 0
    again = pd.read_parquet(out / "predictions.parquet")
    assert np.array_equal(again[["p_inside", "p_outside"]].to_numpy(), reference[["p_inside", "p_outside"]].to_numpy())
    out = tmp_path / "p3"
    assert run(["images", "predict", str(model), "--folder", str(swapped), "--channels", "A,B", "--out", str(out)]) == 2
    _one_line_refusal(capsys, out, "channels are A, B but the model reads GFP, DNA")
    # one class folder, the model's second class: its labels are the model's 'outside', not its first class
    only = tmp_path / "only"
    shutil.copytree(folder / "outside", only / "outside")
    out = tmp_path / "e1"
    explain = ["explain", str(model), "--folder", str(only), "--channels", "GFP,DNA", "--methods", "saliency"]
    assert run([*explain, "--images", "all", "--out", str(out)]) == 0
    assert set(pd.read_parquet(out / "per_image.parquet")["label"]) == {"outside"}
    # a class folder the model does not know
    (only / "outside").rename(only / "AAA")
    out = tmp_path / "e2"
    assert run([*explain, "--out", str(out)]) == 2
    _one_line_refusal(capsys, out, "class 'AAA' is not a class of the model, which knows inside, outside")
    # an empty class sub-folder
    (only / "BBB").mkdir()
    assert run(["images", "predict", str(model), "--folder", str(only), "--out", str(out)]) == 2
    _one_line_refusal(capsys, out, "BBB: a class sub-folder without")


@pytest.mark.parametrize(
    ("command", "option", "message"),
    [
        ("train", ["--epochs", "0"], "epochs (--epochs) = 0: must be >= 1"),
        ("train", ["--width", "0"], "width (--width) = 0.0: must be > 0"),
        ("train", ["--batch-size", "0"], "batch_size (--batch-size) = 0: must be >= 1"),
        ("train", ["--lr", "-1"], "lr (--lr) = -1.0: must be > 0"),
        ("train", ["--size", "-5"], "size (--size) = -5: must be >= 1"),
        ("train", ["--lr", "nan"], "lr (--lr) = 'nan': must be a finite number"),
        ("explain", ["--window", "0"], "window (--window) = 0: must be >= 1"),
        ("explain", ["--n-steps", "0"], "n_steps (--n-steps) = 0: must be >= 1"),
        ("explain", ["--batch-size", "0"], "batch_size (--batch-size) = 0: must be >= 1"),
        ("explain", ["--baseline", "nan"], "baseline (--baseline) = 'nan': use zero, mean or a finite number"),
        ("explain", ["--methods", "saliency,lime"], "choose one of saliency"),
        ("images predict", ["--batch-size", "0"], "batch_size (--batch-size) = 0: must be >= 1"),
    ],
)
def test_bad_numbers_are_one_line_errors_before_any_work(trained, tmp_path, capsys, command, option, message):
    folder, model = trained
    out = tmp_path / "out"
    source = ["--folder", str(folder), "--channels", "GFP,DNA", "--out", str(out)]
    args = [*command.split(), *([] if command == "train" else [str(model)]), *source, *option]
    assert run(args) == 2
    _one_line_refusal(capsys, out, message)


def test_a_killed_runs_staging_folder_is_not_loaded(trained, tmp_path, capsys):
    folder, model = trained
    staging = tmp_path / ".model.partial-999999-abc"
    shutil.copytree(model, staging)
    out = tmp_path / "p"
    assert run(["images", "predict", str(staging), "--folder", str(folder), "--channels", "GFP,DNA", "--out", str(out)]) == 2
    _one_line_refusal(capsys, out, "the staging folder of an interrupted run")


def test_images_visualise_writes_class_models_per_class_and_channel(trained, tmp_path, capsys):
    import numpy as np

    from phenolens.core.runs import load_run
    from phenolens.explain.class_model import ClassModelSettings

    folder, model = trained
    out = tmp_path / "v"
    options = ["--steps", "8", "--classes", "outside", "--hold", "DNA", "--folder", str(folder), "--channels", "GFP,DNA"]
    assert run(["images", "visualise", str(model), *options, "--out", str(out)]) == 0
    saved = np.load(out / "class_models.npz")
    assert saved["images"].shape == (1, 2, 18, 18) and saved["images"].min() >= 0  # one class, two channels, the crop size
    assert saved["classes"].tolist() == ["outside"] and saved["channels"].tolist() == ["GFP", "DNA"]
    assert (out / "figures" / "class_models.png").is_file() and (out / "figures" / "filters.png").is_file()
    assert load_run(out).setting(ClassModelSettings).hold == ("DNA",)
    own = json.loads((out / "metrics.json").read_text())["own_class_probability"]
    assert list(own) == ["outside"] and 0.0 <= own["outside"] <= 1.0
    # the held DNA channel is the mean crop of the given images, not optimised: it is the same for any class
    other = tmp_path / "w"
    assert run(["images", "visualise", str(model), *options[:2], "--classes", "inside", *options[4:], "--out", str(other)]) == 0
    np.testing.assert_allclose(np.load(other / "class_models.npz")["images"][0, 1], saved["images"][0, 1], rtol=1e-5)
    capsys.readouterr()
    assert run(["images", "visualise", str(model), "--hold", "DNA", "--out", str(tmp_path / "x")]) == 2
    assert "--hold needs images" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert run(["images", "visualise", str(model), "--classes", "nope", "--out", str(tmp_path / "y")]) == 2


def test_images_without_a_group_are_one_line_when_training_groups_by_that_column(tmp_path, capsys):
    """--group-by well with a manifest whose well is empty for some images once ended in numpy's TypeError
    ('<' between str and float) with a traceback; now it is one line naming the column and an image."""
    folder = _write_folder(tmp_path / "crops")
    manifest = pd.read_csv(_manifest(folder, tmp_path))
    manifest.loc[[2, 13], "well"] = None
    manifest.to_csv(folder / "manifest.csv", index=False)
    args = ["images", "train", "--manifest", str(folder / "manifest.csv"), "--channels", "GFP,DNA", "--group-by", "well", *TINY]
    assert run([*args, "--out", str(tmp_path / "model")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'well'" in err and "2 image" in err and "Traceback" not in err, err
    assert not (tmp_path / "model").exists()


def test_images_without_a_group_are_one_line_when_predicting_groups_by_that_column(trained, tmp_path, capsys):
    """`images predict --group-by well` left an image with an empty well out of groups.parquet (19 of 20 images counted
    there while metrics.json said 20); now it is refused as `images train --group-by` refuses it, in one line."""
    folder, model = trained
    manifest = pd.read_csv(_manifest(folder, tmp_path))
    manifest.loc[[2, 13], "well"] = None
    manifest.to_csv(folder / "manifest.csv", index=False)
    out = tmp_path / "predicted"
    args = ["images", "predict", str(model), "--manifest", str(folder / "manifest.csv"), "--channels", "GFP,DNA", "--group-by", "well"]
    assert run([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'well'" in err and "2 image(s)" in err and manifest.loc[2, "path"] in err and "Traceback" not in err, err
    assert not out.exists()
