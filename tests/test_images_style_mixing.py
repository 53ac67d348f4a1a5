"""`--style-mixing` (MixStyle, Zhou et al. 2021) and `--probe-column` (the adversary's probe for any training): issue 24, round 3."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from scipy import stats
from test_images_erasure import TINY, _crop_folder, _welled_set

from phenolens.cli.main import run
from phenolens.core.errors import PhenolensError
from phenolens.core.runs import load_run
from phenolens.nn.backbones import build_backbone
from phenolens.nn.style_mixing import ALPHA, EPS, StyleMixing, attach_style_mixing, beta_variates, gamma_variates, mix_styles
from phenolens.report.classifier import probe_part
from phenolens.report.html import Section
from phenolens.training import ImageTrainingSettings, train_and_evaluate
from phenolens.training.classifier import ImageClassifier
from phenolens.training.fitting import ImageClassifierEstimator


def _maps(seed: int = 0) -> torch.Tensor:
    """(4, 3, 6, 5) feature maps whose images have clearly different channel means and spreads."""
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.5, 3.0, size=(4, 3, 1, 1))
    shift = rng.uniform(-2.0, 2.0, size=(4, 3, 1, 1))
    return torch.from_numpy(rng.normal(size=(4, 3, 6, 5)) * scale + shift).float()


def test_mixed_maps_carry_the_mixed_statistics():
    x = _maps()
    permutation, weights = torch.tensor([2, 0, 3, 1]), torch.tensor([0.9, 0.2, 0.5, 0.0])
    out = mix_styles(x, permutation, weights)
    mean, variance = x.mean(dim=(2, 3)), x.var(dim=(2, 3))
    deviation = (variance + EPS).sqrt()
    share = weights[:, None]
    expected_mean = share * mean + (1 - share) * mean[permutation]
    expected_deviation = share * deviation + (1 - share) * deviation[permutation]
    torch.testing.assert_close(out.mean(dim=(2, 3)), expected_mean, rtol=0, atol=1e-5)
    # the normalised maps have unbiased variance var / (var + eps): the official layer's eps, kept
    torch.testing.assert_close(out.std(dim=(2, 3)), expected_deviation * (variance / (variance + EPS)).sqrt(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[3].std(dim=(1, 2)), x[1].std(dim=(1, 2)), rtol=1e-5, atol=1e-6)  # lambda 0: image 1's style
    # the pattern within each map is the image's own (only its statistics change)
    standardised = (out - out.mean(dim=(2, 3), keepdim=True)) / out.std(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(standardised, (x - x.mean(dim=(2, 3), keepdim=True)) / x.std(dim=(2, 3), keepdim=True), rtol=0, atol=1e-4)


def test_gradients_reach_the_maps_but_not_through_the_statistics():
    x = _maps().requires_grad_(True)
    permutation, weights = torch.tensor([1, 2, 3, 0]), torch.tensor([0.3, 0.6, 0.1, 0.8])
    mix_styles(x, permutation, weights).sum().backward()
    deviation = (x.detach().var(dim=(2, 3), keepdim=True) + EPS).sqrt()
    share = weights.reshape(-1, 1, 1, 1)
    # with the statistics detached, d out / d x = sigma_mix / sigma elementwise; through them, the sum's gradient would be 0
    expected = (share * deviation + (1 - share) * deviation[permutation]) / deviation
    torch.testing.assert_close(x.grad, expected.expand_as(x), rtol=1e-5, atol=1e-6)


def test_off_and_in_eval_mode_the_layer_is_the_identity():
    x = _maps()
    assert StyleMixing(p=0.0)(x) is x
    assert StyleMixing(p=1.0).eval()(x) is x
    pixels = x[:, :, :1, :1]
    assert StyleMixing(p=1.0)(pixels) is pixels  # one pixel per map: no spread to mix (the unbiased variance is undefined)
    mixed = StyleMixing(p=1.0, generator=torch.Generator().manual_seed(3))(x)
    assert mixed.shape == x.shape and not torch.allclose(mixed, x, atol=1e-3)
    again = StyleMixing(p=1.0, generator=torch.Generator().manual_seed(3))(x)
    torch.testing.assert_close(again, mixed, rtol=0, atol=0)  # every draw comes from the generator
    # p = 0.5: about half of the passes mix
    layer = StyleMixing(p=0.5, generator=torch.Generator().manual_seed(0))
    share = np.mean([not torch.equal(layer(x), x) for _ in range(400)])
    assert 0.43 < share < 0.57


def test_beta_and_gamma_variates_follow_their_distributions():
    generator = torch.Generator().manual_seed(0)
    for shape in (0.1, 2.5):
        draws = gamma_variates(shape, 4000, generator).numpy()
        assert stats.kstest(draws, stats.gamma(shape).cdf).pvalue > 0.001
    draws = beta_variates(ALPHA, 4000, generator).numpy()
    assert draws.dtype == np.float64 and draws.min() >= 0.0 and draws.max() <= 1.0
    assert stats.kstest(draws, stats.beta(ALPHA, ALPHA).cdf).pvalue > 0.001
    # Beta(0.1, 0.1) is U-shaped: most weights are near 0 or 1, mean 1/2, variance 1 / (4 (2 alpha + 1))
    assert abs(draws.mean() - 0.5) < 0.03 and abs(draws.var() - 1 / (4 * (2 * ALPHA + 1))) < 0.01
    assert stats.kstest(beta_variates(2.0, 2000, generator).numpy(), stats.beta(2.0, 2.0).cdf).pvalue > 0.001


def test_the_layer_goes_after_every_stage_but_the_stem_and_the_last_and_comes_off():
    calls = []

    class Spy(StyleMixing):
        def forward(self, x):
            calls.append(tuple(x.shape))
            return super().forward(x)

    model = build_backbone("resnet18", in_channels=2, n_classes=2, width=0.125, stem_stride=1, n_covariates=0, loss="softmax")
    x = torch.randn(4, 2, 16, 16)
    handles = attach_style_mixing(model, Spy(p=1.0))
    assert len(handles) == 3  # stage1, stage2, stage3 of stem + 4 stages
    trained = model.train()(x)
    assert calls == [(4, 8, 16, 16), (4, 16, 8, 8), (4, 32, 4, 4)]  # stage1-3's maps, not the stem's nor stage4's
    before = copy.deepcopy(model)  # batch norm's running statistics as the training pass left them
    for handle in handles:
        handle.remove()
    assert not any(module._forward_hooks for module in model.modules())
    calls.clear()
    torch.testing.assert_close(before.eval()(x), model.eval()(x), rtol=0, atol=0)  # not applied in eval mode
    assert not calls
    torch.manual_seed(0)
    assert not torch.allclose(model.train()(x), trained, atol=1e-4)  # in training mode it did change the forward pass
    short = build_backbone("resnet18", in_channels=2, n_classes=2, width=0.125, stem_stride=1, n_covariates=0, loss="softmax", blocks=[1, 1])
    assert len(attach_style_mixing(short, Spy(p=1.0))) == 1  # stem, stage1, stage2: after stage1 only


def test_style_mixing_changes_training_but_not_the_saved_model_or_its_inference(tmp_path):
    images = _welled_set()
    plain = ImageClassifierEstimator(ImageTrainingSettings(**TINY)).fit(images).classifier_
    mixed = ImageClassifierEstimator(ImageTrainingSettings(style_mixing=0.5, **TINY)).fit(images).classifier_
    again = ImageClassifierEstimator(ImageTrainingSettings(style_mixing=0.5, **TINY)).fit(images).classifier_
    assert mixed.settings["style_mixing"] == 0.5 and mixed.settings["hyperparameters"] == plain.settings["hyperparameters"]
    assert mixed.model.state_dict().keys() == plain.model.state_dict().keys()
    assert not any(module._forward_hooks for module in mixed.model.modules())  # taken off after training
    changed = [name for name, tensor in mixed.model.state_dict().items() if not torch.equal(tensor, plain.model.state_dict()[name])]
    assert changed  # it acted on training
    for name, tensor in mixed.model.state_dict().items():  # reproducible from the seed
        assert torch.equal(tensor, again.model.state_dict()[name]), name
    expected = mixed.predict_proba(images)
    mixed.save(tmp_path / "m")
    loaded = ImageClassifier.load(tmp_path / "m")
    assert not any(module._forward_hooks for module in loaded.model.modules())
    np.testing.assert_array_equal(loaded.predict_proba(images), expected)
    np.testing.assert_array_equal(loaded.embed(images), mixed.embed(images))


def test_the_probe_of_any_run_is_the_adversary_and_erasure_probe():
    images = _welled_set()
    probed = train_and_evaluate(images, probe_column="well", group_by="field", **TINY)
    probe = probed.metrics["probe"]
    assert probe["column"] == "well" and probe["domains"] == ["W0", "W1", "W2", "W3"] and probe["probe_groups"] == "field"
    embedding = probe["embedding"]
    assert embedding["within_class_chance"] == 0.5 and embedding["ungrouped"]["within_class_chance"] == 0.5
    assert embedding["trained_images"]["n_images"] + embedding["unseen_images"]["n_images"] == 48
    assert "adversary" not in probed.metrics and "erasure" not in probed.metrics
    # the same training with --erase-column: its network before erasure is this run's network, probed by the same code
    erased = train_and_evaluate(images, erase_column="well", probe_column="well", group_by="field", **TINY)
    assert erased.metrics["erasure"]["without_erasure"] == embedding
    assert erased.metrics["erasure"]["macro_f1_without_erasure"] == probed.metrics["macro_f1"]
    assert erased.metrics["probe"]["embedding"] == erased.metrics["erasure"]["with_erasure"]  # it probes the run's (erased) network
    section = Section("training")
    probe_part(section, probed.metrics)
    ((caption, table),) = section.tables
    assert list(table.index) == ["this network"] and "'well'" in caption and table.shape == (1, 7)
    assert table.loc["this network", "the same, images not trained on"] == f"{embedding['unseen_images']['within_class_balanced_accuracy']:.3f}"


def test_bad_style_mixing_and_probe_settings_are_one_line(tmp_path, capsys):
    with pytest.raises(PhenolensError, match=r"style_mixing \(--style-mixing\)"):
        ImageTrainingSettings(style_mixing=1.5)
    images = _welled_set(16)
    with pytest.raises(PhenolensError, match=r"--probe-column 'plate' is not a metadata column; choose one of well, field, site") as caught:
        train_and_evaluate(images, probe_column="plate", **{**TINY, "epochs": 1})
    assert "\n" not in str(caught.value)
    with pytest.raises(PhenolensError, match=r"--probe-column 'site' has one value \('s1'\)"):
        train_and_evaluate(images, probe_column="site", **{**TINY, "epochs": 1})


def test_the_command_records_both_settings_and_reloads_them(tmp_path, capsys):
    folder = _crop_folder(tmp_path / "crops", 6)
    out = tmp_path / "model"
    options = ["--width", "0.125", "--blocks", "1,1", "--epochs", "1", "--validation-fraction", "0", "--style-mixing", "0.5"]
    assert run(["images", "train", "--folder", str(folder), "--out", str(out), *options]) == 0
    (settings,) = [item for item in load_run(out).settings if isinstance(item, ImageTrainingSettings)]
    assert settings.style_mixing == 0.5 and settings.probe_column is None
    assert json.loads((out / "metrics.json").read_text()).get("probe") is None
    assert run(["images", "train", "--folder", str(folder), "--out", str(tmp_path / "bad"), *options, "--probe-column", "well"]) == 2
    err = capsys.readouterr().err
    assert "--probe-column 'well' is not a metadata column" in err and err.count("\n") == 1 and not (tmp_path / "bad").exists()
