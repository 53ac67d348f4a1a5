"""ECINN geometry, the gradient baseline, autoencoder interpolation and the nuclear-contrast known answer."""

import numpy as np
import pytest
import torch
from sklearn.base import clone

from phenolens.core.errors import PhenolensError
from phenolens.core.estimators import NotFittedError
from phenolens.explain.counterfactual.ecinn import ECINN, alpha_one, alpha_zero
from phenolens.explain.counterfactual.gradient import wachter_counterfactuals
from phenolens.explain.counterfactual.interpolation import LatentInterpolation
from phenolens.explain.counterfactual.known_answer import NucleusRegions
from phenolens.nn.autoencoder import ConvAutoencoder
from phenolens.nn.iresnet import InvertibleResNet

pytestmark = pytest.mark.usefixtures("one_thread")


def two_class_images(count: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 1 has a bright centre in channel 0, class 0 a bright rim: separable by construction."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 2
    images = torch.randn(count, 2, 16, 16, generator=generator) * 0.3
    centre = torch.zeros(16, 16)
    centre[5:11, 5:11] = 1.0
    images[:, 0] += torch.where(labels[:, None, None] == 1, centre, 1.0 - centre) * 2.0
    return images, labels


@pytest.fixture(scope="module")
def fitted() -> tuple[ECINN, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = InvertibleResNet(2, 2, 16, blocks=[1, 1], hidden=[8, 8], pad_channels=0, inverse_tolerance=1e-7)
    images, labels = two_class_images()
    model.train()
    model(images)  # initialise ActNorm
    model.converge_spectral_norms(50)
    model.eval()
    ecinn = ECINN(model).fit(images, labels)
    with torch.no_grad():  # a confidence a trained head would have: |logit difference| about 3 on average
        logits = ecinn.model_.classify(ecinn.latents(images)[0])
        ecinn.model_.head.log_scale += torch.log(3.0 / (logits[:, 1] - logits[:, 0]).abs().mean())
    return ecinn, images, labels


def test_alpha_zero_puts_the_latent_on_the_hyperplane(fitted):
    ecinn, images, _ = fitted
    z, logits = ecinn.latents(images)
    predicted = logits.argmax(1)
    target = 1
    rows = predicted != target
    geometry = ecinn.directions(z[rows], predicted[rows], target)
    moved = z[rows] + geometry["alpha0"][:, None] * geometry["delta"]
    distance = (moved * geometry["w"]).sum(1) + geometry["b"]
    scale = geometry["w"].norm(dim=1) * moved.norm(dim=1)
    assert torch.all(distance.abs() / scale < 1e-5)
    before = (z[rows] * geometry["w"]).sum(1) + geometry["b"]
    assert torch.all(before < 0)  # started on the predicted class's side
    assert torch.allclose(geometry["alpha1"], 0.8 + 0.5 * geometry["alpha0"])
    # The class-mean head's boundary is that hyperplane: the two logits tie at alpha_0.
    logits_on_plane = ecinn.model_.classify(moved)
    assert torch.allclose(logits_on_plane[:, 0], logits_on_plane[:, 1], rtol=1e-4, atol=1e-4)


def test_the_package_exports_its_api():
    import phenolens.explain.counterfactual as counterfactual

    assert counterfactual.ECINN is ECINN and counterfactual.LatentInterpolation is LatentInterpolation
    assert all(callable(getattr(counterfactual, name)) for name in counterfactual.__all__)
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        counterfactual.Nothing  # noqa: B018


def test_alpha_formulas_on_a_known_case():
    z = torch.tensor([[0.0, 0.0]])
    delta = torch.tensor([[2.0, 0.0]])
    w, b = torch.tensor([[1.0, 0.0]]), torch.tensor([-1.0])  # hyperplane x = 1
    assert alpha_zero(z, delta, w, b).item() == pytest.approx(0.5)
    assert alpha_one(torch.tensor([0.5])).item() == pytest.approx(1.05)


def test_counterfactual_reencodes_onto_the_moved_latent(fitted):
    """Without padding f is a bijection, so f(x_hat) = z + alpha Delta: the counterfactual at alpha_0
    sits on the hyperplane also after decoding and encoding again."""
    ecinn, images, _ = fitted
    result = ecinn.explain(images, target=1)
    rows = torch.from_numpy(result.valid)
    assert rows.any() and not rows.all()
    assert np.isnan(result.alphas["alpha0"][~result.valid]).all()
    z_hat, _ = ecinn.latents(torch.from_numpy(result.images["alpha0"][result.valid]))
    geometry = ecinn.directions(ecinn.latents(images[rows])[0], torch.from_numpy(result.predicted[result.valid]), 1)
    distance = (z_hat * geometry["w"]).sum(1) + geometry["b"]
    assert torch.all(distance.abs() / (geometry["w"].norm(dim=1) * z_hat.norm(dim=1)) < 1e-4)
    assert result.inverse_residual < 1e-5
    assert result.probabilities_at["alpha1"].shape == (len(images), 2)


def test_sweep_starts_at_the_image(fitted):
    ecinn, images, _ = fitted
    decoded, probabilities = ecinn.sweep(images[0], 1, np.array([0.0, 0.5, 1.0]))
    assert decoded.shape == (3, 2, 16, 16) and probabilities.shape == (3, 2)
    assert np.allclose(decoded[0], images[0].numpy(), atol=1e-4)


def test_ecinn_rejects_bad_use(fitted):
    ecinn, images, labels = fitted
    with pytest.raises(PhenolensError, match="outside"):
        ecinn.explain(images, target=5)
    spare = ecinn.model_
    with pytest.raises(NotFittedError, match="not fitted"):
        ECINN(spare).explain(images, target=1)
    with pytest.raises(PhenolensError, match="no training image is predicted"):
        ECINN(spare).fit(images[[0, 0]], torch.tensor([0, 1]))  # equal means: every tie goes to class 0
    with pytest.raises(PhenolensError, match="no training image is labelled"):
        ECINN(spare).fit(images[:2], torch.tensor([0, 0]))


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in module.state_dict().items()}


def test_ecinn_is_a_scikit_learn_estimator_that_leaves_the_callers_model_alone(fitted):
    _, images, labels = fitted
    torch.manual_seed(1)
    model = InvertibleResNet(2, 2, 16, blocks=[1, 1], hidden=[8, 8], pad_channels=0)
    model(images[:4])  # initialise ActNorm in training mode, as a freshly trained network is
    before = _state(model)
    ecinn = ECINN(model, batch_size=5)
    assert ecinn.get_params() == {"model": model, "batch_size": 5} and not hasattr(ecinn, "model_")
    assert ecinn.fit(images, labels) is ecinn
    # the caller's network: same parameters and buffers (the head's means too), still in training mode
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert model.training and not ecinn.model_.training and ecinn.model_ is not model
    assert torch.equal(ecinn.model_.head.means, ecinn.means_true_) and not torch.equal(model.head.means, ecinn.means_true_)
    twin = clone(ecinn)
    assert twin.batch_size == 5 and twin.model is not model and not hasattr(twin, "means_true_")
    with pytest.raises(NotFittedError):
        twin.latents(images)
    assert torch.allclose(twin.fit(images, labels).means_true_, ecinn.means_true_)


def test_interpolation_is_a_scikit_learn_estimator_that_leaves_the_callers_networks_alone(fitted):
    ecinn, images, labels = fitted
    torch.manual_seed(0)
    autoencoder = ConvAutoencoder(2, 16, latent_dim=8, widths=[4, 8])  # training mode, as after training
    before = _state(autoencoder)
    interpolation = LatentInterpolation(autoencoder, ecinn.model_, steps=0)
    with pytest.raises(PhenolensError, match="at least one step"):
        interpolation.fit(images, labels)  # parameters are checked by fit, not the constructor
    interpolation.set_params(steps=3)
    assert interpolation.fit(images, labels) is interpolation and interpolation.means_.shape == (2, 8)
    assert autoencoder.training and all(torch.equal(before[name], value) for name, value in autoencoder.state_dict().items())
    twin = clone(interpolation)
    assert twin.steps == 3 and not hasattr(twin, "means_")
    with pytest.raises(NotFittedError):
        twin.explain(images, 1)


def test_gradient_baseline_flips_and_counts_evaluations(fitted):
    ecinn, images, _ = fitted
    predicted = ecinn.latents(images)[1].argmax(1)
    result = wachter_counterfactuals(ecinn.model_, images, target=1, lr=0.05, max_steps=200)
    already = (predicted == 1).numpy()
    assert (result.steps[already] == 0).all() and result.flipped[already].all()
    assert result.flipped.mean() == 1.0
    assert (result.evaluations == 2 * result.steps + 1).all()
    assert (result.probabilities.argmax(1) == 1).all()
    capped = wachter_counterfactuals(ecinn.model_, images[~already], target=1, lr=1e-6, max_steps=2)
    assert not capped.flipped.any() and not capped.reached.any() and (capped.steps == 2).all()
    confident = wachter_counterfactuals(ecinn.model_, images[~already], target=1, lr=0.05, max_steps=300, confidence=0.9)
    assert confident.reached.all() and (confident.probabilities[:, 1] >= 0.9).all()
    assert (confident.steps >= result.steps[~already]).all() and confident.steps.sum() > result.steps[~already].sum()


def test_interpolation_reaches_the_class_mean(fitted):
    ecinn, images, labels = fitted
    torch.manual_seed(0)
    autoencoder = ConvAutoencoder(2, 16, latent_dim=8, widths=[4, 8]).eval()
    interpolation = LatentInterpolation(autoencoder, ecinn.model_, steps=4).fit(images, labels)
    decoded, probabilities = interpolation.path(images[:3], target=1)
    assert decoded.shape == (3, 5, 2, 16, 16) and probabilities.shape == (3, 5, 2)
    with torch.no_grad():
        assert torch.allclose(decoded[:, -1], autoencoder.decode(interpolation.means_[1:2]).expand(3, -1, -1, -1), atol=1e-5)
        assert torch.allclose(decoded[:, 0], autoencoder(images[:3]), atol=1e-5)
    result = interpolation.explain(images, target=1)
    assert result.first_flip.shape == (len(images),) and result.first_flip.max() <= 4


def synthetic_cells(nuclear: bool) -> np.ndarray:
    """(1, 2, 20, 20): channel 1 (DNA) a bright disk; channel 0 the signal inside or around it; zero background."""
    rows, cols = np.mgrid[:20, :20]
    radius = np.hypot(rows - 10, cols - 10)
    cell, nucleus = radius < 8, radius < 4
    dna = np.where(nucleus, 200.0, np.where(cell, 20.0, 0.0))
    signal = np.where(nucleus, 150.0 if nuclear else 30.0, np.where(cell, 30.0 if nuclear else 150.0, 0.0))
    return np.stack([signal, dna])[None]


def test_nuclear_contrast_knows_the_answer():
    cytoplasmic, nuclear = synthetic_cells(False), synthetic_cells(True)
    regions = NucleusRegions.of(cytoplasmic, ["GFP", "DNA"], "DNA")
    before, after = regions.contrast(cytoplasmic), regions.contrast(nuclear)
    assert before[0] == pytest.approx(-120.0) and after[0] == pytest.approx(120.0)
    # towards nuclear every added grey level lies in the nucleus, towards cytoplasmic none does
    assert regions.added_in_nucleus(cytoplasmic, nuclear)[0] == pytest.approx(1.0)
    assert regions.added_in_nucleus(nuclear, cytoplasmic)[0] == pytest.approx(0.0)
    assert np.isnan(regions.added_in_nucleus(nuclear, nuclear)[0])
    with pytest.raises(PhenolensError, match="--nucleus-channel 'Hoechst'"):
        NucleusRegions.of(cytoplasmic, ["GFP", "DNA"], "Hoechst")


def test_known_answer_rates_count_correctly_classified_images_only():
    from phenolens.explain.counterfactual.ecinn import Counterfactuals
    from phenolens.explain.counterfactual.evaluate import ExplanationRun, _known_answer

    cytoplasmic, nuclear = synthetic_cells(False), synthetic_cells(True)
    # three cytoplasmic cells predicted cytoplasmic (0) whose counterfactuals turn nuclear, one nuclear
    # cell misread as cytoplasmic whose counterfactual loses contrast, one image already at the target
    originals = np.concatenate([cytoplasmic] * 3 + [nuclear, nuclear])
    counterfactuals = np.concatenate([nuclear] * 3 + [cytoplasmic, nuclear])
    predicted = np.array([0, 0, 0, 0, 1])
    ecinn = Counterfactuals(
        target=1, predicted=predicted, probabilities=np.eye(2)[predicted], valid=predicted != 1, alphas={}, images={},
        probabilities_at={}, inverse_residual=0.0, inverse_iterations=1,
    )  # fmt: skip
    run = ExplanationRun(
        target=1, class_names=["CytoplasmicGFP", "NuclearGFP"], channel_names=["GFP", "DNA"], sources=[], labels=np.array([0, 0, 0, 1, 1]),
        originals=originals, ecinn=ecinn, ecinn_raw={"alpha1": counterfactuals},
    )  # fmt: skip
    _known_answer(run, "DNA", None)
    assert run.metrics["nuclear_gfp_basis"] == "correctly classified images"
    assert run.metrics["nuclear_gfp_increase_rate"] == 1.0 and run.metrics["nuclear_gfp_images"] == 3
    assert run.metrics["nuclear_gfp_increase_rate_all_predicted"] == 0.75 and run.metrics["nuclear_gfp_images_all_predicted"] == 4
    run.labels = np.full(5, -1)  # unlabelled images: every image predicted as another class counts
    _known_answer(run, "DNA", None)
    assert run.metrics["nuclear_gfp_basis"] == "every image predicted as another class" and run.metrics["nuclear_gfp_images"] == 4


def test_change_similarity_tells_one_pattern_from_image_specific_changes():
    from phenolens.explain.counterfactual.evaluate import change_similarity

    rng = np.random.default_rng(0)
    originals = rng.normal(size=(20, 2, 8, 8))
    pattern = rng.normal(size=(1, 2, 8, 8))
    assert change_similarity(originals + 3.0 * pattern, originals) == pytest.approx(1.0)
    # the same pattern at image-specific strengths is still one pattern
    assert change_similarity(originals + rng.uniform(0.5, 2.0, size=(20, 1, 1, 1)) * pattern, originals) == pytest.approx(1.0)
    # a change that follows each image (here: its own structure) is not
    assert abs(change_similarity(2.0 * originals, originals)) < 0.2
    assert np.isnan(change_similarity(originals[:1] + pattern, originals[:1]))


def test_the_originals_are_the_crops_themselves_so_the_black_padding_stays_outside_the_cell(fitted):
    from phenolens.data.containers import ImageSet
    from phenolens.explain.counterfactual.evaluate import explain_counterfactuals
    from phenolens.explain.counterfactual.model import CounterfactualModel
    from phenolens.explain.counterfactual.settings import CounterfactualTrainingSettings
    from phenolens.training.preprocess import ChannelNormalization, padded_array

    ecinn, _, _ = fitted
    # (0 - 1) / 20.5 * 20.5 + 1 is 6e-8 in float32: undoing the standardisation leaves the padding grey
    normalization = ChannelNormalization(np.ones(2, np.float32), np.full(2, 20.5, np.float32))
    model = CounterfactualModel(ecinn.model_, ecinn, ["rim", "centre"], ["GFP", "DNA"], normalization, 100.0,
                                CounterfactualTrainingSettings(size=16, blocks=(1, 1), hidden=(8, 8), pad_channels=0))  # fmt: skip
    crops = np.random.default_rng(0).uniform(5, 50, size=(6, 2, 12, 12)).astype(np.float32)
    images = ImageSet(crops, np.full(6, -1), ["rim", "centre"], ["GFP", "DNA"])
    run = explain_counterfactuals(model, images, target="rim", nucleus_channel="DNA", baseline=False, autoencoder=False, sweeps=0)
    assert np.array_equal(run.originals, padded_array(images, 16, ["GFP", "DNA"]))


def test_classification_metrics_given_by_the_caller_are_reused_and_change_nothing(fitted, monkeypatch):
    """The benchmark explains every target of one test set: it classifies once and hands the metrics to each run."""
    from phenolens.data.containers import ImageSet
    from phenolens.explain.counterfactual import evaluate
    from phenolens.explain.counterfactual.model import CounterfactualModel
    from phenolens.explain.counterfactual.settings import CounterfactualTrainingSettings
    from phenolens.training.preprocess import ChannelNormalization

    ecinn, _, _ = fitted
    normalization = ChannelNormalization(np.ones(2, np.float32), np.full(2, 20.5, np.float32))
    model = CounterfactualModel(ecinn.model_, ecinn, ["rim", "centre"], ["GFP", "DNA"], normalization, 100.0,
                                CounterfactualTrainingSettings(size=16, blocks=(1, 1), hidden=(8, 8), pad_channels=0))  # fmt: skip
    crops = np.random.default_rng(1).uniform(5, 50, size=(6, 2, 12, 12)).astype(np.float32)
    images = ImageSet(crops, np.array([0, 1, 0, 1, 0, 1]), ["rim", "centre"], ["GFP", "DNA"])
    options = {"target": "rim", "baseline": False, "autoencoder": False, "sweeps": 0}
    alone = evaluate.explain_counterfactuals(model, images, **options)
    classified = evaluate.classification_metrics(model, model.tensor(images), model.labels_for(images))
    calls = []
    monkeypatch.setattr(evaluate, "classification_metrics", lambda *args: calls.append(args))
    reused = evaluate.explain_counterfactuals(model, images, classified=classified, **options)
    assert calls == []
    for key in ("test_accuracy", "n_labelled", "reconstruction_mae"):
        assert reused.metrics[key] == alone.metrics[key] == classified[key], key
    # a run with its own inverse tolerance classifies with another model: the caller's figures are not reused
    stale = dict(classified, test_accuracy=-1.0)
    monkeypatch.undo()
    retuned = evaluate.explain_counterfactuals(model, images, classified=stale, inverse_tolerance=1e-3, **options)
    assert retuned.metrics["test_accuracy"] != -1.0
    assert 0.0 <= retuned.metrics["test_accuracy"] <= 1.0
