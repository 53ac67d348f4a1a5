"""Attribution maps against Captum's own per-image calls, channel importance, masks, faithfulness, sanity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from phenolens.core.errors import PhenolensError
from phenolens.data.containers import ImageSet
from phenolens.data.nuclei import nucleus_masks, otsu_thresholds
from phenolens.explain import (
    AttributionSettings,
    attribute,
    cam_concordance,
    channel_occlusion,
    deletion_insertion,
    explain_images,
    map_ssim,
    nucleus_mass_fraction,
    randomized_copy,
)
from phenolens.explain.attribution import baseline_tensor
from phenolens.nn.backbones import build_backbone
from phenolens.training import ChannelNormalization, ImageClassifier


def _classifier(seed: int = 0, channels: int = 2, size: int = 20) -> ImageClassifier:
    torch.manual_seed(seed)
    model = build_backbone("resnet18", in_channels=channels, n_classes=3, width=0.125, blocks=[1, 1, 1]).eval()
    for module in model.modules():  # non-trivial BatchNorm statistics, as in a trained model
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    norm = ChannelNormalization(np.full(channels, 10.0, np.float32), np.full(channels, 5.0, np.float32))
    return ImageClassifier(model, ["a", "b", "c"], [f"ch{i}" for i in range(channels)], size, norm)


def _images(n: int = 6, channels: int = 2, size: int = 20, seed: int = 0) -> ImageSet:
    rng = np.random.default_rng(seed)
    return ImageSet(
        rng.uniform(0, 30, size=(n, channels, size, size)).astype(np.float32), np.arange(n) % 3, ["a", "b", "c"], [f"ch{i}" for i in range(channels)]
    )


def _unit(maps: torch.Tensor) -> torch.Tensor:
    return maps / maps.flatten(1).abs().max(1).values.clamp_min(1e-12)[:, None, None, None]


def test_batched_maps_equal_captum_per_image_defaults():
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion, Saliency

    classifier, images = _classifier(), _images()
    inputs = classifier.tensor(images)
    targets = classifier.predict(images)
    # ig_tolerance=0: exactly n_steps Gauss-Legendre steps, Captum's own integrated gradients
    settings = AttributionSettings(window=5, stride=5, baseline="mean", n_steps=20, ig_tolerance=0, batch_size=4, forward_batch=16)
    layer = classifier.model.stages["stage3"]
    reference = {
        "saliency": lambda x, t: Saliency(classifier.model).attribute(x, target=t),
        "gradcam": lambda x, t: LayerAttribution.interpolate(LayerGradCam(classifier.model, layer).attribute(x, target=t), (20, 20), "bilinear"),
        "occlusion": lambda x, t: Occlusion(classifier.model).attribute(x, sliding_window_shapes=(1, 5, 5), strides=(1, 5, 5), target=t),
        "integrated_gradients": lambda x, t: IntegratedGradients(classifier.model).attribute(x, target=t, n_steps=20),
    }
    for method, per_image in reference.items():
        ours = torch.from_numpy(attribute(classifier, images, method, targets, settings))
        assert ours.shape == inputs.shape
        theirs = torch.cat([per_image(inputs[i : i + 1].clone().requires_grad_(), int(targets[i])).detach() for i in range(len(inputs))])
        assert (_unit(ours) - _unit(theirs.expand_as(ours))).abs().max() <= 1e-5, method


def _captum_trapezoid(classifier, inputs, targets, baseline, intervals: int) -> np.ndarray:
    """Captum's riemann_trapezoid integrated gradients over `intervals` + 1 points, per image. Captum weighs those points
    1 / (intervals + 1) (halved at the ends), so its weights sum to intervals / (intervals + 1): rescaled to the trapezoid rule."""
    from captum.attr import IntegratedGradients

    maps = IntegratedGradients(classifier.model).attribute(
        inputs, baselines=baseline, target=torch.as_tensor(targets), n_steps=intervals + 1, method="riemann_trapezoid"
    )
    return maps.detach().numpy() * (intervals + 1) / intervals


def test_adaptive_integrated_gradients_are_captums_trapezoid_at_each_images_own_step_count():
    classifier, images = _classifier(), _images(6)
    inputs, targets = classifier.tensor(images), classifier.predict(images)
    baseline = baseline_tensor(classifier, "mean").expand_as(inputs).contiguous()
    grids = {n: _captum_trapezoid(classifier, inputs, targets, baseline, n) for n in (8, 16, 32)}

    def ours(tolerance: float, n_steps: int = 40) -> np.ndarray:
        settings = AttributionSettings(baseline="mean", n_steps=n_steps, ig_tolerance=tolerance, batch_size=4, forward_batch=16)
        return attribute(classifier, images, "ig", targets, settings)

    def change(fine, coarse):
        return np.linalg.norm((fine - coarse).reshape(len(fine), -1), axis=1) / np.linalg.norm(fine.reshape(len(fine), -1), axis=1)

    scale = np.abs(grids[32]).max()
    assert np.abs(ours(1e9) - grids[16]).max() <= 1e-5 * scale  # settled at once: 16 steps
    assert np.abs(ours(1e-9) - grids[32]).max() <= 1e-5 * scale  # never settles: 32, the last doubling within n_steps 40
    assert np.abs(ours(1e-9, n_steps=16) - grids[16]).max() <= 1e-5 * scale  # n_steps caps the doubling
    first = change(grids[16], grids[8])
    tolerance = float(np.median(first))  # half of the images go on to 32 steps
    expected = np.where((first > tolerance)[:, None, None, None], grids[32], grids[16])
    assert 0 < (first > tolerance).sum() < len(first)
    assert np.abs(ours(tolerance) - expected).max() <= 1e-5 * scale


def test_adaptive_integrated_gradients_agree_with_captums_50_steps_and_are_complete():
    from captum.attr import IntegratedGradients

    classifier, images = _classifier(seed=1), _images(6, seed=1)
    inputs, targets = classifier.tensor(images), classifier.predict(images)
    baseline = baseline_tensor(classifier, "zero").expand_as(inputs).contiguous()
    maps = attribute(classifier, images, "ig", targets, AttributionSettings(baseline="zero"))  # the defaults: tolerance 0.2, at most 50 steps
    reference = IntegratedGradients(classifier.model).attribute(inputs, baselines=baseline, target=torch.as_tensor(targets), n_steps=50)
    reference = reference.detach().numpy()
    correlation = [np.corrcoef(maps[i].ravel(), reference[i].ravel())[0, 1] for i in range(len(maps))]
    assert min(correlation) >= 0.99, correlation
    with torch.no_grad():
        gap = (classifier.model(inputs) - classifier.model(baseline)).gather(1, torch.tensor(targets)[:, None])[:, 0].numpy()
    completeness = np.abs(maps.sum(axis=(1, 2, 3)) - gap)
    assert (completeness <= 0.05 * np.abs(maps).sum(axis=(1, 2, 3))).all(), completeness  # within 5 % of the attributed mass


def test_integrated_gradients_complete_from_the_zero_baseline():
    classifier, images = _classifier(), _images(3)
    targets = np.array([0, 1, 2])
    maps = attribute(classifier, images, "ig", targets, AttributionSettings(baseline="zero", n_steps=64))
    inputs = classifier.tensor(images)
    baseline = baseline_tensor(classifier, "zero").expand_as(inputs)
    with torch.no_grad():
        gap = (classifier.model(inputs) - classifier.model(baseline)).gather(1, torch.tensor(targets)[:, None])[:, 0].numpy()
    assert np.allclose(maps.sum(axis=(1, 2, 3)), gap, atol=0.05 * np.abs(gap).max() + 1e-3)
    assert np.allclose(baseline_tensor(classifier, "zero").flatten().numpy(), -2.0)  # (0 - 10) / 5
    log_maps = attribute(classifier, images, "ig", targets, AttributionSettings(baseline="zero", n_steps=64, output="log_probability"))
    with torch.no_grad():
        log_p = torch.log_softmax(classifier.model(inputs), 1) - torch.log_softmax(classifier.model(baseline), 1)
    log_gap = log_p.gather(1, torch.tensor(targets)[:, None])[:, 0].numpy()
    assert np.allclose(log_maps.sum(axis=(1, 2, 3)), log_gap, atol=0.05 * np.abs(log_gap).max() + 1e-3)


def test_targets_layers_and_methods_are_checked():
    classifier, images = _classifier(), _images(2)
    with pytest.raises(PhenolensError, match="unknown target class 'Mitosis'"):
        attribute(classifier, images, "saliency", "Mitosis")
    with pytest.raises(PhenolensError, match="no layer 'stage9'"):
        attribute(classifier, images, "gradcam", "predicted", AttributionSettings(layer="stage9"))
    with pytest.raises(PhenolensError, match="unknown attribution method"):
        attribute(classifier, images, "lime")
    with pytest.raises(PhenolensError, match="3 channels"):
        attribute(classifier, _images(2, channels=3), "saliency")
    early = attribute(classifier, images, "gradcam", "a", AttributionSettings(layer="stage1"))
    assert early.shape == (2, 2, 20, 20) and np.allclose(early[:, 0], early[:, 1])


def test_channel_occlusion_matches_a_direct_computation():
    classifier, images = _classifier(), _images(4)
    targets = np.array([0, 1, 2, 0])
    drops = channel_occlusion(classifier, images, targets, batch_size=3)
    inputs = classifier.tensor(images)
    with torch.no_grad():
        base = classifier.model(inputs)[np.arange(4), targets]
        for c in range(2):
            changed = inputs.clone()
            changed[:, c] = 0.0  # the training mean after normalisation
            assert np.allclose(drops[:, c], (base - classifier.model(changed)[np.arange(4), targets]).numpy(), atol=1e-5)


def test_cam_concordance_known_answer():
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 1, size=(3, 3, 8, 8))
    cam = images[:, 1] * 5.0  # the CAM is channel 1, rescaled
    values = cam_concordance(cam, images)
    assert np.allclose(values[:, 1], 0.0) and np.allclose(values.max(axis=1), 1.0)


def test_otsu_masks_and_mass_fraction():
    from skimage.filters import threshold_otsu

    rng = np.random.default_rng(0)
    stack = rng.integers(0, 256, size=(5, 24, 24)).astype(np.float64)
    stack[:, :4] = 0  # masked background is ignored
    expected = np.array([threshold_otsu(image[image > 0]) for image in stack])
    assert np.abs(otsu_thresholds(stack) - expected).max() <= (stack.max() - 1) / 256 + 1e-9
    images = np.zeros((1, 2, 10, 10))
    images[0, 1, 3:6, 3:6] = 200.0  # nucleus in the DNA channel
    images[0, 1, 0:2, :] = 20.0  # dim cytoplasm
    masks = nucleus_masks(images, dna_channel=1)
    assert masks.sum() == 9 and masks[0, 4, 4]
    maps = np.zeros((1, 2, 10, 10))
    maps[0, 0, 4, 4], maps[0, 0, 0, 0], maps[0, 0, 9, 9] = 3.0, 1.0, -5.0  # negative mass does not count
    assert np.allclose(nucleus_mass_fraction(maps, masks, channel=0), [0.75])
    assert np.isnan(nucleus_mass_fraction(np.zeros_like(maps), masks, 0)[0])


def test_deletion_insertion_endpoints_and_sanity_check():
    classifier, images = _classifier(), _images(4)
    inputs = classifier.tensor(images)
    targets = np.array([0, 1, 2, 0])
    maps = np.random.default_rng(0).normal(size=inputs.shape)
    baseline = baseline_tensor(classifier, "zero")
    result = deletion_insertion(classifier, inputs, maps, targets, baseline, steps=4, batch_size=3)
    with torch.no_grad():
        original = torch.softmax(classifier.model(inputs), 1)[np.arange(4), targets].mean().item()
        empty = torch.softmax(classifier.model(baseline.expand_as(inputs)), 1)[np.arange(4), targets].mean().item()
    deletion, insertion = result["deletion_curves"].mean(axis=0), result["insertion_curves"].mean(axis=0)
    assert result["deletion_curves"].shape == (4, 5)
    assert np.isclose(deletion[0], original, atol=1e-5) and np.isclose(deletion[-1], empty, atol=1e-5)
    assert np.isclose(insertion[0], empty, atol=1e-5) and np.isclose(insertion[-1], original, atol=1e-5)
    assert result["deletion_auc"].shape == (4,)
    assert np.allclose(map_ssim(maps, maps), 1.0)
    random_model = randomized_copy(classifier.model, seed=3)
    trained_weight = classifier.model.stages["stem"][0].weight
    assert not torch.allclose(random_model.stages["stem"][0].weight, trained_weight)


def test_explain_images_collects_everything():
    classifier, images = _classifier(size=16), _images(6, size=16)
    images.images[:, 1, 6:10, 6:10] += 100.0  # a bright "nucleus" in channel 1
    settings = AttributionSettings(methods=("saliency", "gradcam", "ig"), n_steps=8, nucleus_channel="ch1", sanity_images=4, faithfulness_steps=4)
    explanation = explain_images(classifier, images, settings)
    metrics = explanation.metrics()
    assert set(explanation.maps) == {"saliency", "gradcam", "integrated_gradients"}
    assert set(metrics["faithfulness"]) == set(explanation.maps) and set(metrics["sanity_ssim"]) == set(explanation.maps)
    assert metrics["nucleus_reporter_channel"] == "ch0" and explanation.nucleus_masks.sum(axis=(1, 2)).min() == 16
    for table in metrics["channel_importance"].values():
        assert set(table) == {"ch0", "ch1"}
    with pytest.raises(PhenolensError, match="--nucleus-channel 'DNA' is not a channel"):
        explain_images(classifier, images, methods="saliency", nucleus_channel="DNA")


def test_report_flags_evidence_of_absence():
    import pandas as pd

    from phenolens.report.attribution import absence_warnings

    table = pd.DataFrame({"GFP": [-1.4, 3.1], "DNA": [2.6, 1.4]}, index=["NoGFP", "CytoplasmicGFP"])
    notes = absence_warnings(table)
    assert len(notes) == 1 and notes[0].startswith("NoGFP: replacing GFP") and "raises the NoGFP logit by 1.40" in notes[0]


def test_randomisation_sample_is_the_start_of_the_faithfulness_sample_and_its_ssims_land_on_their_images():
    from phenolens.explain.images import check_sample
    from phenolens.explain.screen import MAP_INDEX, _check_rows

    # more randomisation images than faithfulness images: the help promises "the first of the --check-images sample"
    settings = AttributionSettings(methods=("saliency",), check_images=2, sanity_images=4, faithfulness_steps=2, seed=1)
    checked, sanity = check_sample(6, settings)
    assert checked.sum() == 2 and not (sanity & ~checked).any()
    classifier, images = _classifier(size=16), _images(6, size=16)
    explanation = explain_images(classifier, images, settings)
    rows = _check_rows(explanation, np.arange(6))  # what a screen's checks.parquet holds per checked image
    ssim_of_image = dict(zip(np.flatnonzero(explanation.sanity_checked), explanation.sanity_ssim["saliency"]))
    expected = [ssim_of_image.get(i, np.nan) for i in rows[MAP_INDEX]]
    assert np.allclose(rows["sanity_ssim_saliency"], expected, equal_nan=True)
    assert np.isclose(np.nanmean(rows["sanity_ssim_saliency"]), explanation.metrics()["sanity_ssim"]["saliency"])


def test_a_raw_intensity_baseline_is_refused_for_a_model_that_divides_each_image_by_its_brightness():
    classifier = _classifier()
    assert np.allclose(baseline_tensor(classifier, "15").flatten().numpy(), 1.0)  # (15 - 10) / 5
    crop = ImageClassifier(classifier.model, classifier.class_names, classifier.channel_names, 20, ChannelNormalization(
        np.ones(2, np.float32), np.full(2, 0.5, np.float32), "crop"))  # fmt: skip
    assert np.allclose(baseline_tensor(crop, "zero").flatten().numpy(), -2.0) and np.allclose(baseline_tensor(crop, "mean").numpy(), 0.0)
    assert np.allclose(baseline_tensor(crop, "0").flatten().numpy(), -2.0)  # black is black in every image
    with pytest.raises(PhenolensError, match=r"baseline '15': the model normalises each image's intensities \(--intensity-normalization crop\)"):
        attribute(crop, _images(2), "ig", np.array([0, 1]), AttributionSettings(baseline="15"))


def test_map_ssim_is_scikit_images_mean_ssim_of_each_image():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    first, second = rng.normal(size=(3, 2, 24, 24)), rng.normal(size=(3, 2, 24, 24))
    first[:, :, :5], second[:, :, :5] = 0.0, 0.0  # padding without attribution: identical there

    def summary(maps):
        magnitude = np.abs(maps).sum(axis=0)
        return magnitude / magnitude.max()

    expected = [structural_similarity(summary(a), summary(b), data_range=1.0, win_size=7) for a, b in zip(first, second)]
    np.testing.assert_allclose(map_ssim(first, second), expected, rtol=1e-6)


def test_true_targets_are_the_models_classes_whatever_the_images_class_order():
    from phenolens.explain.attribution import resolve_targets

    classifier, images = _classifier(), _images(6)  # labels 0, 1, 2, ... in the model's order a, b, c
    reordered = ImageSet(images.images, np.array([1, 2, 0, 1, 2, 0]), ["c", "a", "b"], images.channel_names)  # the same classes, sorted otherwise
    assert resolve_targets(classifier, reordered, "true").tolist() == [0, 1, 2, 0, 1, 2]
    assert np.array_equal(attribute(classifier, reordered, "saliency", "true"), attribute(classifier, images, "saliency", "true"))


def test_a_class_named_with_digits_is_found_by_its_name_before_an_index():
    from phenolens.explain.attribution import resolve_targets

    classifier = _classifier()
    classifier.class_names = ["1", "2", "3"]  # class folders named 1, 2, 3
    images = _images(2)
    assert resolve_targets(classifier, images, "2").tolist() == [1, 1]  # the class '2', not index 2
    assert resolve_targets(classifier, images, 0).tolist() == [0, 0]  # an int stays an index
    with pytest.raises(PhenolensError, match="out of range"):
        resolve_targets(classifier, images, "7")


def test_a_numpy_number_names_a_baseline_or_a_class_index_as_a_python_number_does():
    assert AttributionSettings(baseline=np.float64(12.5)) == AttributionSettings(baseline=12.5) == AttributionSettings(baseline="12.5")
    assert AttributionSettings(baseline=np.float32(3)).baseline == "3.0" and AttributionSettings(baseline=np.int64(3)).baseline == "3"
    assert AttributionSettings(target=np.int64(1)).target == AttributionSettings(target=1).target == "1"


def test_the_cell_is_the_crops_non_zero_pixels_whatever_rounding_the_normalisation_has():
    from phenolens.explain.masks import nucleus_mass_fraction
    from phenolens.training.preprocess import padded_array

    # (0 - 1) / 20.5 * 20.5 + 1 is 6e-8 in float32: undoing the standardisation does not give back the black padding exactly
    classifier = ImageClassifier(_classifier().model, ["a", "b", "c"], ["ch0", "ch1"], 20, ChannelNormalization(
        np.ones(2, np.float32), np.full(2, 20.5, np.float32)))  # fmt: skip
    small = _images(6, size=12)
    small.images[:, 1, 4:8, 4:8] += 100.0
    explanation = explain_images(classifier, small, methods=("saliency",), nucleus_channel="ch1", check_images=2, sanity_images=1)
    padded = padded_array(small, 20, ["ch0", "ch1"])
    assert np.array_equal(explanation.raw, padded)  # the crops as the network read them, before standardisation
    cell = padded.sum(axis=1) > 0
    np.testing.assert_allclose(explanation.cell_fraction["saliency"], nucleus_mass_fraction(explanation.maps["saliency"], cell, 0))
    assert (explanation.cell_fraction["saliency"] < 1).all()  # saliency reaches into the padding


def test_the_cell_is_the_crops_non_zero_pixels_when_field_quantile_lifts_the_padding():
    import pandas as pd

    from phenolens.training import fit_classifier
    from phenolens.training.preprocess import padded_array

    rng = np.random.default_rng(0)
    crops, labels, fields = [], [], []
    for i in range(32):
        field = (i // 4) % 8
        side = 16 if field < 4 else 8  # fields 4-7 hold small crops, padded to 16 px: their 1st percentile is black
        crop = rng.uniform(0.1, 0.3, size=(2, side, side)).astype(np.float32)
        crop[:, side // 4 : 3 * side // 4, side // 4 : 3 * side // 4] += 1.0 + i % 2
        crops.append(crop)
        labels.append(i % 2)
        fields.append(f"F{field}")
    images = ImageSet(crops, np.array(labels), ["a", "b"], ["dna", "actin"], pd.DataFrame({"field": fields}))
    classifier = fit_classifier(
        images, "resnet18", intensity_normalization="field-quantile", width=0.125, blocks=(1, 1), stem_stride=1, epochs=1, batch_size=8,
        validation_fraction=0.0, size=16,
    )  # fmt: skip
    small = images.subset(np.flatnonzero(np.isin(fields, ["F4", "F5"])))
    explanation = explain_images(classifier, small, methods=("saliency",), nucleus_channel="dna", check_images=2, sanity_images=1)
    padding = padded_array(small, 16, ["dna", "actin"]).sum(axis=1) == 0
    assert (explanation.raw.transpose(1, 0, 2, 3)[:, padding] > 0).all()  # the map lifts the padding above 0 ...
    assert explanation.metrics()["cell_mass_fraction"]["saliency"] < 1  # ... and the cell is still the crop, not the frame
    assert not (explanation.nucleus_masks & padding).any()


def test_the_checks_sample_is_nested_sized_and_seeded_for_any_counts():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from phenolens.explain.images import check_sample

    @settings(max_examples=200, deadline=None)
    @given(st.integers(0, 60), st.integers(0, 70), st.integers(1, 70), st.integers(0, 5))
    def nested(count, check_images, sanity_images, seed):
        options = AttributionSettings(check_images=check_images, sanity_images=sanity_images, seed=seed)
        checked, sanity = check_sample(count, options)
        assert checked.sum() == (min(check_images, count) if check_images else count)
        assert sanity.sum() == min(sanity_images, checked.sum()) and not (sanity & ~checked).any()
        again = check_sample(count, options)
        assert np.array_equal(again[0], checked) and np.array_equal(again[1], sanity)

    nested()


def test_held_out_images_are_found_however_their_folder_is_spelled(tmp_path, monkeypatch):
    import pandas as pd

    from phenolens.explain.selection import held_out_sources, select_positions
    from phenolens.training.evaluation import save_with_held_out

    monkeypatch.chdir(tmp_path)
    images = _images(6)
    images.meta = pd.DataFrame({"source": [f"crops/{i}.tif" for i in range(6)]})  # as `--folder crops` names them
    save_with_held_out(_classifier(), images, np.array([1, 4]), tmp_path / "model")
    held_out = held_out_sources(tmp_path / "model")
    for spelled in (
        [f"crops/{i}.tif" for i in range(6)],
        [f"./crops/{i}.tif" for i in range(6)],
        [str(tmp_path / "crops" / f"{i}.tif") for i in range(6)],
    ):
        meta = pd.DataFrame({"source": spelled})
        assert select_positions(meta, images.labels, held_out, "auto", tmp_path / "model").tolist() == [1, 4], spelled
    monkeypatch.chdir(tmp_path / "model")  # another working folder: the absolute paths still name the same files
    meta = pd.DataFrame({"source": [str(tmp_path / "crops" / f"{i}.tif") for i in range(6)]})
    assert select_positions(meta, images.labels, held_out, "heldout", tmp_path / "model").tolist() == [1, 4]
