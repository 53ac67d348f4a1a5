"""Deep ensembles: mean logits, attributions that are the members' means, training, saving and refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_images_explain import _classifier, _images
from test_images_training import _two_class_set

from phenolens.core.errors import PhenolensError
from phenolens.explain import AttributionSettings, attribute
from phenolens.explain.sign.pipeline import check_classifier
from phenolens.nn.backbones import Ensemble, networks
from phenolens.training import ImageClassifier, fit_classifier


def _ensemble_of(members: list[ImageClassifier]) -> ImageClassifier:
    first = members[0]
    model = Ensemble("resnet18", len(members), in_channels=2, n_classes=3, width=0.125, blocks=[1, 1, 1])
    model.members = torch.nn.ModuleList(member.model for member in members)
    return ImageClassifier(model.eval(), first.class_names, first.channel_names, first.size, first.normalization)


def test_ensemble_logits_and_linear_attributions_are_the_members_means():
    members = [_classifier(seed) for seed in (0, 1, 2)]
    ensemble, images = _ensemble_of(members), _images()
    assert np.allclose(ensemble.logits(images), np.mean([m.logits(images) for m in members], axis=0), atol=1e-6)
    targets = ensemble.predict(images)
    settings = AttributionSettings(window=5, stride=5, baseline="mean", n_steps=16, batch_size=4)
    # Integrated gradients and occlusion are linear in the model; Grad-CAM averages the members' CAMs.
    for method in ("integrated_gradients", "occlusion", "gradcam"):
        ours = attribute(ensemble, images, method, targets, settings)
        mean = np.mean([attribute(m, images, method, targets, settings) for m in members], axis=0)
        assert ours.shape == (6, 2, 20, 20)
        assert np.abs(ours - mean).max() <= 1e-5 * np.abs(mean).max(), method
    # not trivially so: the members disagree
    single = [attribute(m, images, "integrated_gradients", targets, settings) for m in members]
    assert np.abs(single[0] - single[1]).max() > 0.1 * np.abs(single[0]).max()


def test_fit_ensemble_trains_seeded_members_and_round_trips(tmp_path):
    images = _two_class_set(24)
    options = dict(arch="vgg", width=0.125, blocks=[1, 1], epochs=2, batch_size=8, validation_fraction=0.25, seed=5)
    single = fit_classifier(images, **options)
    ensemble = fit_classifier(images, members=3, **options)
    labelled = images.labelled()
    assert ensemble.architecture == "ensemble" and len(networks(ensemble.model)) == 3
    # member 0 is the single model of the same seed; the others start from other seeds
    first = networks(ensemble.model)[0]
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), single.model.state_dict().values()))
    assert not torch.equal(networks(ensemble.model)[1].stages["stem"][0].weight, first.stages["stem"][0].weight)
    assert ensemble.embed(labelled).shape == (len(labelled), 3 * first.feature_dim)
    ensemble.save(tmp_path / "model")
    again = ImageClassifier.load(tmp_path / "model")
    assert again.settings["hyperparameters"]["member_architecture"] == "vgg" and again.settings["members"] == 3
    assert np.allclose(again.predict_proba(labelled), ensemble.predict_proba(labelled), atol=1e-6)
    with pytest.raises(PhenolensError, match="ensemble of 3 networks; SIGN .* --members 1"):
        check_classifier(again)
    with pytest.raises(PhenolensError, match=r"members \(--members\) = 0: must be >= 1"):
        fit_classifier(images, members=0, **options)
    with pytest.raises(PhenolensError, match="at least 2 members"):
        Ensemble("vgg", 1, in_channels=2, n_classes=2)
