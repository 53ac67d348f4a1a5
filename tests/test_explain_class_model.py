"""Class-model visualisation: closed-form answer on a linear model, where the light goes, settings checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from phenolens.core.errors import PhenolensError
from phenolens.explain.class_model import ClassModelSettings, central_disc_share, class_models, first_layer_filters

SIZE = 16


def disc_and_ring(size: int = SIZE, radius: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size]
    distance = np.hypot(yy - (size - 1) / 2, xx - (size - 1) / 2)
    return (distance <= radius).astype(np.float32), ((distance > radius + 1) & (distance <= radius + 4)).astype(np.float32)


class LinearScores(nn.Module):
    """Class 0 scores channel-0 light in a central disc, class 1 the same channel in a ring around it."""

    def __init__(self, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        disc, ring = disc_and_ring()
        weights = np.zeros((2, 2, SIZE, SIZE), dtype=np.float32)
        weights[0, 0], weights[1, 0] = disc, ring
        weights[:, 1] = -0.5  # channel 1 only costs: its class model must stay black
        self.weights = nn.Parameter(torch.from_numpy(weights))
        self.conv = nn.Conv2d(2, 1, 3)  # for first_layer_filters; unused by forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nchw,kchw->nk", x, self.weights)


def test_linear_model_reaches_the_closed_form_maximiser():
    # max_u w.u - lambda |u|^2 over u >= 0 is u = max(w, 0) / (2 lambda), in units of std.
    mean, std = np.array([10.0, 5.0]), np.array([2.0, 4.0])
    model = LinearScores(mean, std)
    settings = ClassModelSettings(steps=600, lr=0.05, l2_decay=0.5, jitter=0, blur_every=0)
    images = class_models(model, [0, 1], channels=2, size=SIZE, mean=mean, std=std, settings=settings)
    disc, ring = disc_and_ring()
    expected = np.stack([disc, ring])[:, None] * std[0]  # 1 std where the class's weight is 1
    assert images.shape == (2, 2, SIZE, SIZE) and images.min() >= 0
    np.testing.assert_allclose(images[:, 0], expected[:, 0], atol=0.05 * std[0])
    assert images[:, 1].max() < 1e-3  # the penalised channel stays black


def test_regularised_models_put_the_light_where_the_class_looks():
    mean, std = np.zeros(2), np.ones(2)
    model = LinearScores(mean, std)
    images = class_models(model, [0, 1], channels=2, size=SIZE, mean=mean, std=std, settings=ClassModelSettings(steps=200))
    shares = central_disc_share(images[:, 0], radius=4.0)
    # Jitter and blur spread the light by a pixel or two, so some of the disc class's light lands just outside it.
    assert shares[0] > 0.55 and shares[1] < 0.15 and shares[0] >= 4 * shares[1]


def test_model_left_as_found_and_same_seed_same_images():
    mean, std = np.zeros(2), np.ones(2)
    model = LinearScores(mean, std).train()
    before = [p.detach().clone() for p in model.parameters()]
    settings = ClassModelSettings(steps=20, seed=3)
    first = class_models(model, [0], 2, SIZE, mean, std, settings)
    second = class_models(model, [0], 2, SIZE, mean, std, settings)
    np.testing.assert_array_equal(first, second)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert first_layer_filters(model).shape == (1, 2, 3, 3)


def test_central_disc_share_known_values():
    image = np.zeros((9, 9))
    image[4, 4] = 3.0
    image[0, 0] = 1.0
    assert central_disc_share(image, 1.0) == pytest.approx(0.75)
    assert central_disc_share(np.zeros((2, 5, 5)), 2.0).tolist() == [0.0, 0.0]


@pytest.mark.parametrize(("field", "value"), [("steps", 0), ("lr", 0), ("l2_decay", -1), ("jitter", -1), ("blur_sigma", float("nan"))])
def test_bad_settings_are_one_line(field, value):
    with pytest.raises(PhenolensError, match=f"ClassModelSettings.{field}"):
        ClassModelSettings(**{field: value})


def test_the_light_budget_is_a_typical_crops_norm():
    # Pixels of mean m and standard deviation s have a root-mean-square of sqrt(m^2 + s^2): a SIZE x SIZE crop's L2 norm is SIZE times that.
    mean, std = np.array([3.0, 0.0]), np.array([4.0, 1.0])
    model = LinearScores(mean, std)
    typical = SIZE * np.hypot(mean[0], std[0])  # 80 in raw units
    for budget in (0.25, 0.5):
        images = class_models(model, [0, 1], 2, SIZE, mean, std, ClassModelSettings(steps=100, budget=budget))
        norms = np.linalg.norm(images[:, 0].reshape(2, -1), axis=1)
        np.testing.assert_allclose(norms, budget * typical, rtol=1e-4)  # the ascent runs into the budget and stops there
    unbounded = class_models(model, [0], 2, SIZE, mean, std, ClassModelSettings(steps=100, budget=0))
    assert np.linalg.norm(unbounded[0, 0]) > typical


@pytest.mark.parametrize("intensity", ["field", "crop"])
def test_visualise_scores_the_class_models_as_the_network_saw_them_for_a_model_that_divides_by_brightness(intensity, tmp_path):
    import json

    import pandas as pd

    from phenolens.cli.main import run
    from phenolens.data.containers import ImageSet
    from phenolens.training import ImageClassifier, fit_classifier

    rng = np.random.default_rng(0)
    images = rng.uniform(0.5, 2.0, size=(16, 2, 10, 10)).astype(np.float32)
    labels = np.arange(16) % 2
    images[labels == 1, 0, 3:7, 3:7] += 3.0
    meta = pd.DataFrame({"field": [f"F{i // 4}" for i in range(16)]})
    settings = {"width": 0.125, "blocks": (1,), "stem_stride": 1, "epochs": 1, "batch_size": 8, "validation_fraction": 0.0}
    model = fit_classifier(ImageSet(images, labels, ["a", "b"], ["dna", "gfp"], meta), "resnet18", intensity_normalization=intensity, **settings)
    folder = model.save(tmp_path / "model")
    assert run(["images", "visualise", str(folder), "--steps", "3", "--out", str(tmp_path / "v")]) == 0
    pictures = np.load(tmp_path / "v" / "class_models.npz")["images"]
    classifier = ImageClassifier.load(folder)
    with torch.no_grad():  # the optimised input: the pictures standardised, with no brightness division on top
        logits = classifier.model(torch.from_numpy(classifier.normalization(pictures)))
    expected = torch.softmax(logits, 1).numpy()[[0, 1], [0, 1]]
    own = json.loads((tmp_path / "v" / "metrics.json").read_text())["own_class_probability"]
    np.testing.assert_allclose([own["a"], own["b"]], expected, rtol=1e-5)


def test_a_blur_wider_than_a_small_model_is_cut_to_the_image_not_a_crash():
    # ceil(3 x 3) = 9 px each side does not fit reflect padding of an 8 px image; the kernel is cut to 7 px.
    model = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    images = class_models(model, [0, 1], 2, 8, np.zeros(2), np.ones(2), ClassModelSettings(steps=4, blur_every=1, blur_sigma=3.0))
    assert images.shape == (2, 2, 8, 8) and np.isfinite(images).all() and images.min() >= 0
