"""--intensity-normalization: each stain divided by its field's (or crop's) brightness, or each field's intensity distribution
matched to the training fields' (field-quantile), stored with the model and applied by predict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phenolens.core.errors import PhenolensError
from phenolens.data.containers import ImageSet
from phenolens.training import ImageClassifier, fit_classifier
from phenolens.training.preprocess import (
    QUANTILE_LEVELS,
    ChannelNormalization,
    field_statistics,
    image_statistics,
    intensity_normalized,
    intensity_scales,
    training_quantiles,
)


def _fields(n: int = 32, seed: int = 0) -> ImageSet:
    """Two classes (a bright square in the middle or in a corner), eight fields, each with its own gain per stain."""
    rng = np.random.default_rng(seed)
    gains = rng.uniform(0.5, 3.0, size=(8, 2))
    labels, field = np.arange(n) % 2, (np.arange(n) // 4) % 8
    images = rng.uniform(0.1, 0.3, size=(n, 2, 10, 10)).astype(np.float32)
    images[labels == 1, :, 3:7, 3:7] += 1.0
    images[labels == 0, :, :4, :4] += 1.0
    images *= gains[field][:, :, None, None].astype(np.float32)
    meta = pd.DataFrame({"field": [f"F{f}" for f in field], "well": [f"W{f // 2}" for f in field]})
    return ImageSet(images, labels, ["corner", "middle"], ["dna", "actin"], meta, name="fields")


def test_field_and_crop_normalisation_remove_a_gain_per_field_and_per_crop():
    images = _fields()
    fields = images.meta["field"].to_numpy()
    # a known answer: doubling one field's first stain leaves its field-normalised images unchanged
    brighter = images.images.copy()
    brighter[fields == "F3", 0] *= 2.0
    for kind in ("field", "crop"):
        before = intensity_normalized(images, images.images, kind, "field")
        after = intensity_normalized(
            ImageSet(brighter, images.labels, images.class_names, images.channel_names, images.meta), brighter, kind, "field"
        )
        np.testing.assert_allclose(after, before, rtol=1e-5)
    means = intensity_normalized(images, images.images, "crop", None).mean(axis=(2, 3))
    np.testing.assert_allclose(means, 1.0, rtol=1e-5)  # every crop's stain has mean intensity 1
    field_means = intensity_normalized(images, images.images, "field", "field").mean(axis=(2, 3))
    for name in np.unique(fields):
        np.testing.assert_allclose(np.median(field_means[fields == name], axis=0), 1.0, rtol=1e-5)
    assert not np.allclose(field_means, 1.0)  # crops within a field keep their differences
    # a black channel is divided by 1, not 0; none changes nothing
    assert np.array_equal(intensity_scales(np.zeros((2, 2)), "crop"), np.ones((2, 2)))
    assert intensity_normalized(images, images.images, "none", None) is images.images


def test_a_model_trained_with_field_normalisation_stores_it_and_predicts_whole_fields_across_chunks(tmp_path):
    images = _fields()
    settings = {"width": 0.125, "blocks": (1, 1), "stem_stride": 1, "epochs": 2, "batch_size": 8, "validation_fraction": 0.0}
    classifier = fit_classifier(images, "resnet18", intensity_normalization="field", **settings)
    assert classifier.normalization.intensity == "field" and classifier.normalization.intensity_column == "field"
    loaded = ImageClassifier.load(classifier.save(tmp_path / "model"))
    assert loaded.card().normalization["intensity"] == "field" and loaded.normalization.intensity_column == "field"
    whole = loaded.predict_proba(images)
    np.testing.assert_allclose(loaded.predict_proba(images, batch_size=3), whole, rtol=1e-5, atol=1e-6)  # fields split across chunks
    # a gain on one field changes nothing the model sees
    brighter = images.images * np.where(images.meta["field"].to_numpy() == "F2", 4.0, 1.0)[:, None, None, None].astype(np.float32)
    np.testing.assert_allclose(
        loaded.predict_proba(ImageSet(brighter, images.labels, images.class_names, images.channel_names, images.meta)), whole, rtol=1e-4, atol=1e-5
    )
    with pytest.raises(PhenolensError, match="needs the metadata column 'field'"):
        loaded.predict_proba(images.images)
    unfielded = ImageSet(images.images, images.labels, images.class_names, images.channel_names, images.meta.drop(columns="field"), name="plain")
    with pytest.raises(PhenolensError, match="plain: the model normalises each field"):
        loaded.predict_proba(unfielded)
    plain = fit_classifier(images, "resnet18", **settings)
    assert "intensity" not in plain.card().normalization  # models without it keep the card they had
    with pytest.raises(PhenolensError, match="'intensity' 'bogus' is not one of none, field, field-quantile, crop"):
        ChannelNormalization.from_dict({"mean": [0.0], "std": [1.0], "intensity": "bogus"})


def test_field_quantile_matching_undoes_a_planted_gain_and_offset_per_field_and_stain_exactly():
    images = _fields(n=40)
    fields = images.meta["field"].to_numpy()
    reference = training_quantiles(images, images.images, "field", np.arange(len(images)))
    assert reference.shape == (2, len(QUANTILE_LEVELS)) and np.all(np.diff(reference, axis=1) >= 0)
    matched = intensity_normalized(images, images.images, "field-quantile", "field", reference=reference)
    # a known answer: every field's stains given their own gain and background offset are mapped back to the same pixels
    rng = np.random.default_rng(1)
    gain, offset = rng.uniform(0.3, 4.0, size=(8, 2)), rng.uniform(-0.5, 2.0, size=(8, 2))
    index = np.array([int(name[1:]) for name in fields])
    planted = (images.images * gain[index][:, :, None, None] + offset[index][:, :, None, None]).astype(np.float32)
    moved = ImageSet(planted, images.labels, images.class_names, images.channel_names, images.meta)
    np.testing.assert_allclose(intensity_normalized(moved, planted, "field-quantile", "field", reference=reference), matched, rtol=0, atol=2e-5)
    # each field's quantiles land on the reference's (up to the interpolation between pixels of np.percentile)
    table = field_statistics(image_statistics(matched, "field-quantile"), fields)
    np.testing.assert_allclose(np.stack(list(table.values())), np.broadcast_to(reference, (8, *reference.shape)), rtol=0.05, atol=0.02)
    assert not np.allclose(matched, planted) and np.all(np.diff(reference, axis=1) > 0)
    # one map per field, not per crop: the crops of a field keep their differences (their medians are not all the reference's)
    medians = image_statistics(matched, "field-quantile")[:, :, QUANTILE_LEVELS.index(50.0)]
    assert all(medians[fields == name].std(axis=0).min() > 1e-3 for name in np.unique(fields))
    # the reference pools the training images' fields only: a held-out field does not move it
    train = np.flatnonzero(fields != "F7")
    held_out = images.images.copy()
    held_out[fields == "F7"] *= 10.0
    assert np.array_equal(training_quantiles(images, held_out, "field", train), training_quantiles(images, images.images, "field", train))
    # a stain without spread in a field (black or saturated) is shifted, not divided by 0: it lands on the reference's first knot
    flat = images.images.copy()
    flat[fields == "F2", 1] = 7.0
    unspread = ImageSet(flat, images.labels, images.class_names, images.channel_names, images.meta)
    shifted = intensity_normalized(unspread, flat, "field-quantile", "field", reference=reference)
    assert np.all(np.isfinite(shifted)) and np.allclose(shifted[fields == "F2", 1], reference[1, 0])
    np.testing.assert_allclose(shifted[fields != "F2"], matched[fields != "F2"], rtol=0, atol=1e-6)  # other fields' tables are their own


def test_a_model_trained_with_field_quantile_matching_keeps_its_reference_and_ignores_a_fields_gain_and_offset(tmp_path):
    images = _fields()
    settings = {"width": 0.125, "blocks": (1, 1), "stem_stride": 1, "epochs": 1, "batch_size": 8, "validation_fraction": 0.0}
    classifier = fit_classifier(images, "resnet18", intensity_normalization="field-quantile", **settings)
    loaded = ImageClassifier.load(classifier.save(tmp_path / "model"))
    card = loaded.card().normalization
    assert card["intensity"] == "field-quantile" and card["quantile_levels"] == list(QUANTILE_LEVELS)
    assert np.array_equal(loaded.normalization.intensity_reference, classifier.normalization.intensity_reference)
    whole = loaded.predict_proba(images)
    changed = images.images.copy()
    changed[images.meta["field"].to_numpy() == "F2"] = changed[images.meta["field"].to_numpy() == "F2"] * 3.0 + 0.4
    np.testing.assert_allclose(
        loaded.predict_proba(ImageSet(changed, images.labels, images.class_names, images.channel_names, images.meta)), whole, rtol=0, atol=1e-5
    )
    broken = {**card, "mean": [0.0, 0.0], "std": [1.0, 1.0], "intensity_reference": card["intensity_reference"][:1]}
    with pytest.raises(PhenolensError, match="'intensity_reference' must hold 9 quantiles .* for each of the 2 channels, got shape \\(1, 9\\)"):
        ChannelNormalization.from_dict(broken)


@pytest.fixture(scope="module", params=["field", "field-quantile"])
def field_screen(tmp_path_factory, request):
    """A model normalised per field (by brightness or quantiles) and its images, also as .npy files in a manifest with a field
    column (fields of 4 consecutive images)."""
    root = tmp_path_factory.mktemp("field-screen")
    images = _fields()
    images.meta["crop"] = [f"crop{i:02d}" for i in range(len(images))]
    settings = {"width": 0.125, "blocks": (1, 1), "stem_stride": 1, "epochs": 1, "batch_size": 8, "validation_fraction": 0.0}
    model = fit_classifier(images, "resnet18", intensity_normalization=request.param, **settings).save(root / "model")
    for crop, image in zip(images.meta["crop"], images.images):
        np.save(root / f"{crop}.npy", image)
    manifest = images.meta.assign(path=images.meta["crop"] + ".npy", label=np.asarray(images.class_names)[images.labels])
    manifest.to_csv(root / "manifest.csv", index=False)
    return images, model, root / "manifest.csv"


def _streamed(command: list[str], model, manifest, out, options: list[str]):
    """Run a streamed command on the manifest; its output folder."""
    from phenolens.cli.main import run

    assert run([*command, str(model), "--manifest", str(manifest), "--channels", "dna,actin", "--out", str(out), *options]) == 0
    return out


@pytest.mark.parametrize("scheduler", ["serial", "local:2"])
def test_a_streamed_predict_normalises_a_field_cut_by_chunks_exactly_as_in_memory(field_screen, tmp_path, scheduler):
    from phenolens.training import ImagePredictionSettings, predict

    images, model, manifest = field_screen
    expected = predict(ImageClassifier.load(model), images, ImagePredictionSettings(batch_size=3, embeddings=True))
    # chunks of 3 cut every field of 4 images; the same batches of 3 in memory, so every number must be equal
    options = ["--chunk-size", "3", "--batch-size", "3", "--embeddings", "--scheduler", scheduler]
    out = _streamed(["images", "predict"], model, manifest, tmp_path / "out", options)
    table = pd.read_parquet(out / "predictions.parquet")
    assert len(list((out / "predictions.parquet").glob("part-*.parquet"))) == 11 and list(table["crop"]) == list(images.meta["crop"])
    probabilities = ["p_corner", "p_middle"]
    assert np.array_equal(table[probabilities].to_numpy(), expected.table[probabilities].to_numpy())
    assert np.array_equal(pd.read_parquet(out / "embeddings.parquet").filter(like="e_").to_numpy(), expected.embeddings.filter(like="e_").to_numpy())


def test_a_streamed_explain_normalises_a_field_cut_by_chunks_as_one_chunk_and_as_in_memory(field_screen, tmp_path):
    from phenolens.explain import explain_model
    from phenolens.explain.attribution import AttributionSettings

    images, model, manifest = field_screen
    options = ["--images", "all", "--methods", "saliency", "--check-images", "2", "--sanity-images", "1", "--max-images", "20"]
    cut, whole = (
        pd.read_parquet(_streamed(["explain"], model, manifest, tmp_path / name, ["--chunk-size", size, *options]) / "per_image.parquet")
        for name, size in (("cut", "3"), ("whole", "32"))
    )
    probabilities = ["p_corner", "p_middle"]
    crops = cut["source"].map(lambda source: Path(source).stem)
    assert len(cut) == 20 and list(cut["source"]) == list(whole["source"])
    np.testing.assert_allclose(cut[probabilities].to_numpy(), whole[probabilities].to_numpy(), rtol=0, atol=1e-7)
    # in memory a field's brightness is also the median over all its images, those not explained included
    memory = explain_model(model, images, AttributionSettings(subset="all", methods=("saliency",), check_images=2, sanity_images=1, max_images=20))
    proba = pd.DataFrame(memory.explanation.proba, index=memory.images.meta["crop"], columns=probabilities)
    np.testing.assert_allclose(proba.loc[crops].to_numpy(), cut[probabilities].to_numpy(), rtol=0, atol=1e-7)


def test_a_field_missing_from_the_brightness_table_is_one_line(field_screen):
    images, model, _ = field_screen
    classifier = ImageClassifier.load(model)
    table = classifier.for_fields_of(images.subset(np.arange(8))).normalization.field_brightness
    kind = classifier.normalization.intensity
    assert sorted(table) == ["F0", "F1"] and table["F0"].shape == ((2,) if kind == "field" else (2, len(QUANTILE_LEVELS)))
    with pytest.raises(PhenolensError, match="field 'F2': not in the table of field statistics"):
        classifier.with_field_brightness(table).predict_proba(images)
    looked_up = intensity_scales(np.ones((2, 2)), "field", np.array(["a", "b"]), {"a": np.array([2.0, 0.0]), "b": np.array([4.0, 1.0])})
    assert np.array_equal(looked_up, [[2.0, 1.0], [4.0, 1.0]])  # each image gets its field's row; a black channel is divided by 1


def test_an_image_skipped_while_decoding_is_left_out_of_its_fields_brightness_too(field_screen, tmp_path):
    import shutil

    from phenolens.training import ImagePredictionSettings, predict

    images, model, manifest = field_screen
    folder = shutil.copytree(manifest.parent, tmp_path / "screen", ignore=shutil.ignore_patterns("model"))
    whole = (folder / "crop05.npy").read_bytes()
    (folder / "crop05.npy").write_bytes(whole[: len(whole) // 2])  # the header passes the scan, the pixels do not decode
    options = ["--chunk-size", "3", "--batch-size", "3", "--skip-bad"]
    table = pd.read_parquet(_streamed(["images", "predict"], model, folder / "manifest.csv", tmp_path / "out", options) / "predictions.parquet")
    kept = images.subset(np.flatnonzero(images.meta["crop"] != "crop05"))
    assert len(table) == 31 and list(table["crop"]) == list(kept.meta["crop"])
    # in memory without the crop (field F1's median over its 3 other crops), in batches of 3 as the streamed chunks after it
    expected = predict(ImageClassifier.load(model), kept, ImagePredictionSettings(batch_size=3)).table
    probabilities = ["p_corner", "p_middle"]
    np.testing.assert_allclose(table[probabilities].to_numpy(), expected[probabilities].to_numpy(), rtol=0, atol=1e-7)


def test_quantile_matching_in_blocks_of_images_equals_one_block_and_bounds_its_memory(monkeypatch):
    import tracemalloc

    from phenolens.training import preprocess

    rng = np.random.default_rng(0)
    raw = rng.gamma(2.0, 100.0, size=(40, 3, 32, 32)).astype(np.float32)
    knots = np.sort(rng.gamma(2.0, 100.0, size=(40, 3, len(preprocess.QUANTILE_LEVELS))), axis=2)
    reference = np.sort(rng.uniform(0, 5, size=(3, len(preprocess.QUANTILE_LEVELS))), axis=1)
    whole = preprocess.quantile_matched(raw, knots, reference)
    monkeypatch.setattr(preprocess, "QUANTILE_BLOCK_VALUES", 3 * 32 * 32 * 3)  # three images a block, the last one short
    tracemalloc.start()
    try:
        blocks = preprocess.quantile_matched(raw, knots, reference)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(blocks, whole)
    assert blocks.dtype == np.float32 and peak < 3 * raw.nbytes  # the output, and temporaries of a few images only


def test_a_session_15_field_quantile_model_json_still_loads():
    """The field tables (`field_statistics`, formerly `field_brightness`) are never saved: model.json keeps its keys."""
    from phenolens.training.preprocess import QUANTILE_LEVELS, ChannelNormalization

    saved = {  # the "normalization" block a session-15 `images train --intensity-normalization field-quantile` wrote
        "mean": [0.5, 0.25],
        "std": [0.125, 0.25],
        "intensity": "field-quantile",
        "intensity_column": "Metadata_Field",
        "intensity_reference": [list(np.linspace(0, 1, len(QUANTILE_LEVELS))), list(np.linspace(0, 2, len(QUANTILE_LEVELS)))],
        "quantile_levels": list(QUANTILE_LEVELS),
    }
    normalization = ChannelNormalization.from_dict(saved)
    assert normalization.intensity == "field-quantile" and normalization.field_brightness is None
    assert normalization.to_dict() == saved


def test_images_without_a_field_are_one_line_not_normalised_together_as_field_nan(field_screen, tmp_path, capsys):
    """An empty field became the text 'nan', so every image without one was normalised as one field of view with
    unrelated images; now training and predicting refuse them in one line naming the column, how many and one image."""
    from phenolens.cli.main import run

    images, model, manifest = field_screen
    table = pd.read_csv(manifest)
    table.loc[[5, 17, 30], "field"] = None
    table.to_csv(tmp_path / "manifest.csv", index=False)
    for crop in table["crop"]:
        (tmp_path / f"{crop}.npy").symlink_to(manifest.parent / f"{crop}.npy")
    out = tmp_path / "out"
    args = ["images", "predict", str(model), "--manifest", str(tmp_path / "manifest.csv"), "--channels", "dna,actin", "--chunk-size", "4"]
    assert run([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "3 image(s) have no 'field'" in err and "crop05.npy" in err and "fill it in" in err, err
    assert not out.exists()
    unfielded = images.meta.assign(field=images.meta["field"].where(~images.meta.index.isin([5, 17, 30])))
    settings = {"width": 0.125, "blocks": (1, 1), "stem_stride": 1, "epochs": 1, "batch_size": 8, "validation_fraction": 0.0}
    with pytest.raises(PhenolensError, match=r"^fields: 3 image\(s\) have no 'field' naming their field of view \(e\.g\. image 5\)"):
        kind = ImageClassifier.load(model).normalization.intensity
        fit_classifier(ImageSet(images.images, images.labels, images.class_names, images.channel_names, unfielded, name="fields"), "resnet18",
                       intensity_normalization=kind, **settings)  # fmt: skip
