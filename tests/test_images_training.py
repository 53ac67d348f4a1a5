"""Backbones, heads, augmentations, splits and fit_classifier on tiny real data."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from phenolens.core.errors import PhenolensError
from phenolens.data.containers import ImageSet
from phenolens.nn.backbones import VGG, DenseNet, ResNet18, build_backbone
from phenolens.nn.heads import ArcFace, ClassifierHead
from phenolens.nn.weights import ModelCard, save_model
from phenolens.training import (
    ChannelNormalization,
    ImageClassifier,
    channel_gains,
    cutmix,
    dim,
    fit_classifier,
    fitting,
    flips_and_rotations,
    gaussian_blur,
    pseudo_label_weight,
    random_blur,
    stratified_folds,
    stratified_split,
)


@pytest.mark.parametrize(
    "cls,kwargs", [(ResNet18, {"width": 0.125}), (VGG, {"width": 0.125}), (DenseNet, {"width": 0.25, "blocks": [2, 2], "growth_rate": 16})]
)
def test_backbones_any_channel_count_stages_and_covariates(cls, kwargs):
    model = cls(in_channels=5, n_classes=3, n_covariates=2, **kwargs).eval()
    x, cov = torch.randn(4, 5, 40, 40), torch.eye(2)[[0, 1, 0, 1]]
    logits = model(x, cov)
    assert logits.shape == (4, 3)
    features = model.embed(x, cov)
    assert features.shape == (4, model.feature_dim + 2)
    assert torch.equal(features[:, -2:], cov)  # covariates concatenated after pooling, before the head
    assert model.stage_names()[0] == "stem" and len(model.stage_names()) >= 3
    outputs = []
    hooks = [model.stages[name].register_forward_hook(lambda m, i, o: outputs.append(o)) for name in model.stage_names()]
    model(x, cov)
    for hook in hooks:
        hook.remove()
    assert [o.shape[0] for o in outputs] == [4] * len(model.stage_names()) and outputs[-1].shape[1] == model.feature_dim
    with pytest.raises(PhenolensError, match="5, H, W"):
        model(torch.randn(2, 3, 40, 40), cov[:2])
    with pytest.raises(PhenolensError, match="2 covariates"):
        model(x)


def test_vgg_default_is_two_convolutions_at_each_of_three_resolutions():
    model = VGG(in_channels=2, n_classes=3, width=0.25).eval()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 16, 32, 32, 64, 64] and all(c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) == 2
    assert model.feature_maps(torch.randn(1, 2, 64, 64)).shape == (1, 64, 16, 16)
    strided = VGG(in_channels=2, n_classes=3, width=0.25, stem_stride=2, blocks=[1, 1, 1, 1]).eval()
    assert strided.feature_maps(torch.randn(1, 2, 64, 64)).shape == (1, 128, 4, 4)
    for blocks in ([1, 1, 1, 1, 1], [0, 2], []):  # a fifth stage has no channel count; a stage needs a block
        with pytest.raises(PhenolensError, match="give 1 to 4 stages"):
            VGG(in_channels=2, n_classes=3, blocks=blocks)


def test_width_multiplier_scales_parameters():
    small = sum(p.numel() for p in build_backbone("resnet18", in_channels=2, n_classes=3, width=0.25).parameters())
    large = sum(p.numel() for p in build_backbone("resnet18", in_channels=2, n_classes=3, width=0.5).parameters())
    assert 3.5 < large / small < 4.1  # conv weights grow with width squared


def test_arcface_margin_lowers_only_the_true_class_logit():
    head = ArcFace(8, 4)
    features, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    plain, margin = head(features), head.margin_logits(features, labels)
    own = torch.nn.functional.one_hot(labels, 4).bool()
    assert torch.all(margin[own] < plain[own]) and torch.allclose(margin[~own], plain[~own])
    cos_theta = plain[own] / 30.0
    expected = torch.cos(torch.acos(cos_theta.clamp(-1, 1)) + 0.5)
    inside = torch.acos(cos_theta) + 0.5 < math.pi
    assert torch.allclose(margin[own][inside] / 30.0, expected[inside], atol=1e-5)


def test_composite_loss_is_the_weighted_sum():
    torch.manual_seed(0)
    composite = ClassifierHead(8, 3, "composite")
    features, labels = torch.randn(5, 8), torch.tensor([0, 1, 2, 0, 1])
    ce = torch.nn.functional.cross_entropy
    expected = 0.8 * ce(composite.linear(features), labels) + 0.2 * ce(composite.arcface.margin_logits(features, labels), labels)
    assert torch.allclose(composite.loss(features, labels), expected)
    assert torch.equal(composite(features), composite.linear(features))  # predictions from the linear head


def test_turns_and_flips_are_exact_permutations_and_cutmix_weights_match_area():
    generator = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 16.0).reshape(1, 2, 4, 4).repeat(64, 1, 1, 1)
    out = flips_and_rotations(x, generator, max_degrees=0.0)
    assert torch.allclose(out.sort(dim=-1).values.sum(), x.sum(), atol=1e-3)
    for image in out:  # every output is one of the 8 symmetries of the square
        candidates = [torch.rot90(v, k, (-2, -1)) for v in (x[0], x[0].flip(-1)) for k in range(4)]
        assert min((image - c).abs().max().item() for c in candidates) < 1e-4
    labels = torch.arange(64) % 3
    batch = cutmix(torch.zeros(64, 1, 10, 10) + torch.arange(64.0)[:, None, None, None], labels, generator, probability=1.0)
    kept = (batch.images == torch.arange(64.0)[:, None, None, None]).flatten(1).float().mean(1)
    other_partner = batch.partner_labels != labels
    assert other_partner.sum() > 30 and torch.allclose(kept[other_partner], batch.weight[other_partner])
    assert 0.5 < batch.weight.mean() < 0.85  # lambda ~ U(0, 1), raised a little by boxes clipped at the border


def test_rotations_bring_in_the_padding_value_at_the_corners():
    black = torch.tensor([-1.5, 2.0])[None, :, None, None]  # a raw 0 of two channels, normalised
    padding_only = black.expand(8, 2, 16, 16).clone()
    filled = flips_and_rotations(padding_only, torch.Generator().manual_seed(0), max_degrees=10.0, fill=black)
    assert torch.allclose(filled, padding_only, atol=1e-5)
    grey = flips_and_rotations(padding_only, torch.Generator().manual_seed(0), max_degrees=10.0)  # the default fill, 0
    assert (grey - padding_only).abs().amax() > 1.0


def test_dimming_scales_raw_intensities_by_one_gain_per_image():
    raw = np.random.default_rng(0).uniform(20, 100, size=(256, 2, 6, 6)).astype(np.float32)
    raw[:, 1] += 500.0  # channels with different means: black is another value in each normalised channel
    norm = ChannelNormalization.fit(raw)
    black = torch.from_numpy(norm.constant(0.0))
    assert np.allclose(norm.constant(0.0)[0, :, 0, 0], -norm.mean / norm.std)
    x = torch.from_numpy(norm(raw))
    dimmed = dim(x, torch.Generator().manual_seed(0), 0.75, black).numpy()
    gain = (dimmed * norm.std[None, :, None, None] + norm.mean[None, :, None, None]) / raw
    per_image = gain.reshape(len(raw), -1)
    assert np.allclose(per_image, per_image[:, :1], atol=1e-4)  # one gain for every pixel and channel of an image
    assert per_image.min() > 0.25 - 1e-4 and per_image.max() < 1.0 + 1e-4 and per_image[:, 0].std() > 0.15  # spread over U(0.25, 1)
    assert torch.allclose(dim(x, torch.Generator().manual_seed(0), 0.0, black), x, atol=1e-6)


def test_channel_gains_scale_each_stain_of_each_image_by_its_own_gain():
    raw = np.random.default_rng(0).uniform(20, 100, size=(256, 2, 6, 6)).astype(np.float32)
    raw[:, 1] += 500.0
    norm = ChannelNormalization.fit(raw)
    black = torch.from_numpy(norm.constant(0.0))
    x = torch.from_numpy(norm(raw))
    changed = channel_gains(x, torch.Generator().manual_seed(0), 0.4, black).numpy()
    gain = (changed * norm.std[None, :, None, None] + norm.mean[None, :, None, None]) / raw
    per_channel = gain.reshape(len(raw), 2, -1)
    assert np.allclose(per_channel, per_channel[:, :, :1], atol=1e-4)  # one gain for every pixel of a channel of an image
    gains = per_channel[:, :, 0]
    assert gains.min() > 0.6 - 1e-4 and gains.max() < 1.4 + 1e-4 and gains.std(0).min() > 0.2  # spread over U(0.6, 1.4)
    assert abs(np.corrcoef(gains[:, 0], gains[:, 1])[0, 1]) < 0.2  # the stains' gains are drawn apart
    assert torch.allclose(channel_gains(x, torch.Generator().manual_seed(0), 0.0, black), x, atol=1e-6)


def _cosine_image(size: int = 32) -> tuple[np.ndarray, list[tuple[float, float, float]]]:
    """cos(a r) cos(b c) + 0.5 cos(d c) with frequencies pi k / (size - 1): each term is its own mirror image about the
    first and last pixel, so a blur with reflected borders only scales it, by the kernel's response at its frequencies."""
    n = np.arange(size)
    a, b, d = (np.pi * k / (size - 1) for k in (3, 5, 12))
    image = np.cos(a * n)[:, None] * np.cos(b * n)[None, :] + 0.5 * np.cos(d * n)[None, :] * np.ones((size, 1))
    return image, [(a, b, 1.0), (0.0, d, 0.5)]


def _blurred_cosine_image(sigma: float, size: int = 32) -> np.ndarray:
    """The known answer: each term of `_cosine_image` times exp(-sigma^2 w^2 / 2) per axis, a Gaussian's response at w."""
    n = np.arange(size)
    response = lambda w: np.exp(-0.5 * (sigma * w) ** 2)  # noqa: E731
    return sum(weight * response(a) * response(b) * np.cos(a * n)[:, None] * np.cos(b * n)[None, :] for a, b, weight in _cosine_image(size)[1])


def test_gaussian_blur_scales_each_frequency_by_the_gaussian_response_and_lowers_the_sharpness():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from images_field_look import crop_statistics  # the sharpness the field-look benchmark reads

    image, _ = _cosine_image()
    x = torch.from_numpy(np.stack([image, 2.0 * image + 1.0])[None].repeat(3, 0))  # (3, 2, 32, 32): a second stain, scaled and offset
    sigmas = torch.tensor([0.0, 1.0, 2.0], dtype=x.dtype)
    blurred = gaussian_blur(x, sigmas).numpy()
    assert np.array_equal(blurred[0], x[0].numpy())  # sigma 0: the identity
    sharpness = crop_statistics(blurred)["sharpness"]
    for i, sigma in enumerate((1.0, 2.0), start=1):
        expected = _blurred_cosine_image(sigma)
        # the kernel is cut at 3 sigma, so it is the Gaussian's response to within its lost tails (0.3 % of the mass)
        assert np.abs(blurred[i, 0] - expected).max() < 5e-3 and np.abs(blurred[i, 1] - (2.0 * expected + 1.0)).max() < 1e-2
        assert np.allclose(sharpness[i], crop_statistics(np.stack([expected, 2.0 * expected + 1.0])[None])["sharpness"][0], rtol=1e-2)
    before = crop_statistics(x.numpy())["sharpness"][0, 0]
    assert sharpness[0, 0] == pytest.approx(before) and before - 0.05 > sharpness[1, 0] > sharpness[2, 0] + 0.03
    assert np.allclose(sharpness[:, 0], sharpness[:, 1], rtol=1e-5)  # per unit of contrast: the same in both stains
    constant = torch.full((2, 3, 9, 7), 4.5, dtype=torch.float64)
    assert torch.allclose(gaussian_blur(constant, torch.tensor([1.5, 6.0], dtype=torch.float64)), constant, atol=1e-12)  # kernel cut to the image


def test_random_blur_draws_one_sigma_per_image_from_zero_to_the_largest():
    image, _ = _cosine_image()
    x = torch.from_numpy(image[None, None].repeat(64, 0))
    blurred = random_blur(x, torch.Generator().manual_seed(0), 2.0)
    sigmas = 2.0 * torch.rand(64, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    assert torch.equal(blurred, gaussian_blur(x, sigmas))  # one draw per image from the generator, every channel alike
    assert 0.0 <= float(sigmas.min()) < 0.2 and 1.8 < float(sigmas.max()) <= 2.0
    assert torch.equal(random_blur(x, torch.Generator().manual_seed(0), 0.0), x)


def test_blur_augmentation_is_off_by_default_and_changes_training_when_on(monkeypatch):
    images = _two_class_set(24)
    options = dict(width=0.125, blocks=[1, 1], epochs=1, batch_size=8, validation_fraction=0.0, pseudo_labels=False, seed=2)
    blurred = fit_classifier(images, "resnet18", blur_augmentation=1.5, **options)

    def never(*args, **kwargs):
        raise AssertionError("random_blur called with the blur augmentation off")

    monkeypatch.setattr(fitting, "random_blur", never)  # off: no blur and no draw from the generator, so runs are as before
    default = fit_classifier(images, "resnet18", **options)
    labelled = images.labelled()
    assert not np.allclose(default.predict_proba(labelled), blurred.predict_proba(labelled), atol=1e-4)
    with pytest.raises(PhenolensError, match=r"blur_augmentation \(--blur-augmentation\) = -1.0"):
        fit_classifier(images, "resnet18", blur_augmentation=-1.0, epochs=1)


def test_pseudo_label_schedule():
    assert [pseudo_label_weight(t, 2, 6, 0.8) for t in (0, 1, 2, 4, 6, 9)] == [0.0, 0.0, 0.0, 0.4, 0.8, 0.8]


def test_splits_are_stratified_seeded_and_grouped():
    labels = np.repeat([0, 1, 2], 20)
    groups = np.repeat(np.arange(12), 5)
    train, test = stratified_split(labels, 0.25, seed=3)
    assert np.array_equal(np.bincount(labels[test]), [5, 5, 5]) and len(np.intersect1d(train, test)) == 0
    assert np.array_equal(test, stratified_split(labels, 0.25, seed=3)[1])
    folds = stratified_folds(labels, 4, seed=0, groups=groups)
    assert np.array_equal(np.sort(np.concatenate([t for _, t in folds])), np.arange(60))
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
    with pytest.raises(PhenolensError, match="fewer than"):
        stratified_folds(np.array([0, 0, 1]), 2)


def test_grouped_splits_and_folds_change_with_the_seed_keep_groups_whole_and_every_class_on_every_side():
    # fields of different sizes, as in bbbc021-cells: StratifiedGroupKFold gave every seed the same test fields
    sizes = [[86, 99, 92, 123], [34, 59, 48, 36, 56, 44, 44, 34, 45]]
    labels = np.concatenate([np.full(n, c) for c, class_sizes in enumerate(sizes) for n in class_sizes])
    groups = np.concatenate([np.full(n, f"{c}-{g}") for c, class_sizes in enumerate(sizes) for g, n in enumerate(class_sizes)])
    held_out = set()
    for seed in range(5):
        train, test = stratified_split(labels, 0.2, seed, groups)
        assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(labels)))
        assert not set(groups[train]) & set(groups[test])
        assert set(labels[train]) == set(labels[test]) == {0, 1}
        assert 0.1 < len(test) / len(labels) < 0.3
        held_out.add(frozenset(groups[test]))
        for train, test in stratified_folds(labels, 4, seed, groups):
            assert not set(groups[train]) & set(groups[test]) and set(labels[test]) == {0, 1}
    assert len(held_out) >= 4  # the seed decides which fields are held out
    assert np.array_equal(stratified_split(labels, 0.2, 3, groups)[1], stratified_split(labels, 0.2, 3, groups)[1])
    assert len({tuple(stratified_folds(labels, 4, seed, groups)[0][1]) for seed in range(5)}) >= 4


def test_folds_spread_the_groups_of_classes_with_fewer_groups_than_folds():
    labels = np.repeat([0, 1, 2], 4)  # each class in one group (a class confounded with its well)
    groups = np.repeat(["a", "b", "c"], 4)
    for seed in range(3):
        assert sorted(len(test) for _, test in stratified_folds(labels, 3, seed, groups)) == [4, 4, 4]  # no empty fold


def test_normalization_uses_training_statistics():
    images = np.random.default_rng(0).normal(5.0, 2.0, size=(20, 3, 8, 8)).astype(np.float32)
    images[:, 2] = 7.0
    norm = ChannelNormalization.fit(images)
    out = norm(images)
    assert np.allclose(out[:, :2].mean(axis=(0, 2, 3)), 0, atol=1e-5) and np.allclose(out[:, :2].std(axis=(0, 2, 3)), 1, atol=1e-4)
    assert np.allclose(out[:, 2], 0) and norm.std[2] == 1.0  # a constant channel is centred, not divided by 0
    assert np.allclose(ChannelNormalization.from_dict(norm.to_dict()).mean, norm.mean)


def _two_class_set(n: int = 48, seed: int = 0) -> ImageSet:
    """Variable-size crops whose class is where a bright spot sits relative to a second channel."""
    rng = np.random.default_rng(seed)
    images = []
    labels = np.arange(n) % 2
    for label in labels:
        size = int(rng.integers(12, 17))
        image = rng.uniform(0, 0.2, size=(2, size, size)).astype(np.float32)
        centre = size // 2
        image[1, centre - 2 : centre + 2, centre - 2 : centre + 2] = 1.0  # "nucleus"
        if label:
            image[0, centre - 2 : centre + 2, centre - 2 : centre + 2] = 1.0
        else:
            image[0, :2, :] = 1.0
        images.append(image)
    labels = labels.copy()
    labels[-8:] = -1  # an unlabelled pool for pseudo-labels
    return ImageSet(images, labels, ["outside", "inside"], ["reporter", "dna"], name="synthetic")


def test_fit_classifier_learns_and_round_trips(tmp_path):
    images = _two_class_set()
    clf = fit_classifier(
        images, "resnet18", width=0.125, stem_stride=1, epochs=12, batch_size=16, lr=3e-3, validation_fraction=0.0, pseudo_start=4, pseudo_full=8
    )
    assert clf.size == 16 and clf.settings["pseudo_labels"] and clf.settings["n_unlabelled"] == 8
    labelled = images.labelled()
    proba = clf.predict_proba(labelled)
    assert proba.shape == (40, 2) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert (proba.argmax(1) == labelled.labels).mean() >= 0.9
    clf.save(tmp_path / "model")
    again = ImageClassifier.load(tmp_path / "model")
    assert again.class_names == ["outside", "inside"] and again.channel_names == ["reporter", "dna"] and again.size == 16
    assert np.allclose(again.predict_proba(labelled), proba, atol=1e-6)
    assert len(again.history.epochs) == 12
    same_seed = fit_classifier(images, "resnet18", width=0.125, blocks=[1, 1], epochs=2, batch_size=16, validation_fraction=0.0, seed=1)
    repeat = fit_classifier(images, "resnet18", width=0.125, blocks=[1, 1], epochs=2, batch_size=16, validation_fraction=0.0, seed=1)
    assert np.allclose(same_seed.predict_proba(labelled), repeat.predict_proba(labelled), atol=1e-6)


def test_classifier_bad_inputs(tmp_path):
    images = _two_class_set(16)
    clf = fit_classifier(images, "densenet", width=0.25, blocks=[1, 1], epochs=1, batch_size=8, validation_fraction=0.0, seed=0)
    with pytest.raises(PhenolensError, match="3 channels .* trained on 2"):
        clf.predict(ImageSet([np.zeros((3, 10, 10), np.float32)], [0], ["a", "b"], ["x", "y", "z"], name="three"))
    broken = [image.copy() for image in images.images]
    broken[3][0, 1, 1] = np.nan
    with pytest.raises(PhenolensError, match="NaN or infinite"):
        clf.predict(ImageSet(broken, images.labels, images.class_names, images.channel_names))
    with pytest.raises(PhenolensError, match="unknown target class 'Mitosis'"):
        clf.class_index("Mitosis")
    with pytest.raises(PhenolensError, match="no metadata column 'well'"):
        fit_classifier(images, "resnet18", group_by="well", epochs=1)
    with pytest.raises(PhenolensError, match=r"dimming \(--dimming\) = 1.0: must lie in \[0, 1\)"):
        fit_classifier(images, "resnet18", dimming=1.0, epochs=1)
    with pytest.raises(PhenolensError, match=r"arch \(--arch\) = 'efficientnet': choose one of densenet, resnet18, vgg"):
        fit_classifier(images, "efficientnet", epochs=1)
    # weights of another registered architecture in a classifier folder
    clf.save(tmp_path / "dense")
    other = build_backbone("resnet18", in_channels=2, n_classes=2, width=0.125)
    save_model(
        other,
        tmp_path / "mixed",
        ModelCard(
            "densenet",
            {"in_channels": 2, "n_classes": 2, "width": 0.25, "blocks": [1, 1]},
            ["a", "b"],
            ["r", "d"],
            {"mean": [0, 0], "std": [1, 1], "size": 16},
        ),
    )
    with pytest.raises(PhenolensError, match="do not fit a 'densenet' model"):
        ImageClassifier.load(tmp_path / "mixed")
    (tmp_path / "dense" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(PhenolensError, match="corrupt or truncated"):
        ImageClassifier.load(tmp_path / "dense")


def test_cosine_schedule_anneals_the_learning_rate():
    clf = fit_classifier(_two_class_set(16), "resnet18", width=0.125, blocks=[1, 1], epochs=4, lr=1e-3, validation_fraction=0.0, schedule="cosine")
    expected = [1e-3 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    assert np.allclose(clf.history.column("lr"), expected)
    with pytest.raises(PhenolensError, match="schedule"):
        fit_classifier(_two_class_set(16), "resnet18", epochs=1, schedule="step")


def test_a_last_batch_of_one_small_crop_does_not_stop_training():
    # 17 crops of 16 px in batches of 8: the last batch holds one image whose deepest maps are 1 x 1 at the defaults
    rng = np.random.default_rng(0)
    images = ImageSet(rng.uniform(0, 1, (17, 2, 16, 16)).astype(np.float32), np.arange(17) % 2, ["a", "b"], ["c0", "c1"])
    classifier = fit_classifier(images, "resnet18", width=0.125, epochs=2, batch_size=8, validation_fraction=0.0)
    assert len(classifier.history.epochs) == 2 and np.isfinite(classifier.history.column("train_loss")).all()
