"""Domain-adversarial image training: the loss reverses and ramps, the probe's known answers, a tiny run, bad columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from phenolens.core.errors import PhenolensError
from phenolens.data.containers import ImageSet
from phenolens.nn.adversary import DomainAdversary
from phenolens.nn.gradient_reversal import ganin_lambda
from phenolens.report.classifier import adversary_part
from phenolens.report.html import Section
from phenolens.training import cutmix, fit_classifier, train_and_evaluate
from phenolens.training.adversary import AdversaryLoss, domain_probe


def _plated_set(n: int = 48, seed: int = 0) -> ImageSet:
    """Two classes (a spot inside or outside the 'nucleus') on four plates; each plate adds its own brightness to the reporter."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    plates = (np.arange(n) // 2) % 4
    images = []
    for label, plate in zip(labels, plates):
        image = rng.uniform(0, 0.2, size=(2, 12, 12)).astype(np.float32) + np.array([0.1 * plate, 0.0], dtype=np.float32)[:, None, None]
        image[1, 4:8, 4:8] = 1.0
        if label:
            image[0, 4:8, 4:8] += 1.0
        else:
            image[0, :2, :] += 1.0
        images.append(image)
    meta = pd.DataFrame({"plate": [f"P{p}" for p in plates], "field": [f"F{i // 4}" for i in range(n)], "site": "s1"})
    return ImageSet(np.stack(images), labels, ["outside", "inside"], ["reporter", "dna"], meta, name="plated")


def test_the_adversary_loss_reverses_the_gradient_by_the_ramped_lambda():
    torch.manual_seed(0)
    adversary = DomainAdversary(6, 3, n_classes=2)
    loss = AdversaryLoss(adversary, weight=2.0, final_lambda=0.5, total_steps=4)
    features = torch.randn(8, 6, requires_grad=True)
    labels, domains = torch.arange(8) % 2, torch.arange(8) % 3
    mixed = cutmix(torch.zeros(8, 1, 4, 4), labels, torch.Generator().manual_seed(0), probability=0.0)
    assert torch.equal(mixed.partner_labels, labels[mixed.partner]) and torch.all(mixed.weight == 1)
    loss(features, mixed, domains).backward()
    assert adversary.reversal.lambda_ == 0.0 and torch.all(features.grad == 0)  # p = 0: the schedule starts at 0
    for step in range(1, 3):
        features.grad = None
        value = loss(features, mixed, domains)
        value.backward()
        expected_lambda = 0.5 * (2 / (1 + np.exp(-10 * step / 4)) - 1)
        assert adversary.reversal.lambda_ == pytest.approx(expected_lambda) == pytest.approx(ganin_lambda(step / 4, scale=0.5))
        # the same loss without the reversal: the features' gradient is its negative, times lambda
        plain = features.detach().clone().requires_grad_(True)
        one_hot = torch.eye(2)[labels]
        expected = 2.0 * torch.nn.functional.cross_entropy(adversary.body(torch.cat([plain, one_hot], 1)), domains)
        assert value.item() == pytest.approx(expected.item(), rel=1e-6)
        expected.backward()
        assert torch.allclose(features.grad, -expected_lambda * plain.grad, atol=1e-7)


def test_domain_probe_known_answers():
    rng = np.random.default_rng(0)
    domains = np.repeat(np.arange(4), 30)
    groups = np.arange(120) % 10  # every group holds every domain
    readable = np.eye(4)[domains] + 0.01 * rng.normal(size=(120, 4))
    assert domain_probe(readable, domains, groups)["balanced_accuracy"] == 1.0
    noise = domain_probe(rng.normal(size=(120, 5)), domains, groups)
    assert noise["chance"] == 0.25 and abs(noise["balanced_accuracy"] - 0.25) < 0.15
    # classes: 0 holds domains 0 and 1, 1 holds 2 and 3; features say the class only
    classes = domains // 2
    class_only = domain_probe(np.eye(2)[classes] + 0.01 * rng.normal(size=(120, 2)), domains, groups, classes)
    assert class_only["class_only_balanced_accuracy"] == pytest.approx(0.5) and class_only["balanced_accuracy"] == pytest.approx(0.5, abs=0.1)
    assert class_only["within_class_chance"] == 0.5 and abs(class_only["within_class_balanced_accuracy"] - 0.5) < 0.15
    assert class_only["within_class_images"] == 120 and class_only["within_class_classes"] == [0, 1]
    assert domain_probe(readable, domains, groups, classes)["within_class_balanced_accuracy"] == 1.0
    with pytest.raises(PhenolensError, match="all the images are in one group"):
        domain_probe(readable, domains, np.zeros(120))


def test_a_tiny_adversarial_run_reports_the_domain_with_and_without_the_adversary():
    images = _plated_set()
    settings = {"width": 0.125, "blocks": (1, 1), "stem_stride": 1, "epochs": 3, "batch_size": 16, "validation_fraction": 0.0}
    run = train_and_evaluate(images, adversary_column="plate", group_by="field", **settings)
    adversary = run.metrics["adversary"]
    assert adversary["column"] == "plate" and adversary["domains"] == ["P0", "P1", "P2", "P3"] and adversary["by_class"]
    for key in ("with_adversary", "without_adversary"):
        probe = adversary[key]
        assert probe["chance"] == 0.25 and probe["within_class_chance"] == 0.25 and probe["n_images"] == 48
        assert 0.0 <= probe["balanced_accuracy"] <= 1.0 and 0.0 <= probe["within_class_balanced_accuracy"] <= 1.0
        assert probe["ungrouped"]["chance"] == 0.25 and "ungrouped" not in probe["ungrouped"]
    assert 0.0 <= adversary["macro_f1_without_adversary"] <= 1.0
    section = Section("training")
    adversary_part(section, run.metrics)
    ((caption, table),) = section.tables
    assert list(table.index) == ["with the adversary", "without the adversary"] and "'plate'" in caption
    assert table.shape == (2, 5) and "told the class" in section.paragraphs[0]
    # the adversary changes training; its weights are not part of the saved classifier
    plain = fit_classifier(images, "resnet18", **settings)
    adversarial = fit_classifier(images, "resnet18", adversary_column="plate", **settings)
    assert adversarial.model.state_dict().keys() == plain.model.state_dict().keys()
    assert not np.allclose(adversarial.predict_proba(images.labelled()), plain.predict_proba(images.labelled()))
    alone = train_and_evaluate(images, adversary_column="plate", adversary_baseline=False, **settings)
    assert "without_adversary" not in alone.metrics["adversary"] and "macro_f1_without_adversary" not in alone.metrics["adversary"]


def test_bad_adversary_columns_are_one_line():
    images = _plated_set(16)
    with pytest.raises(PhenolensError) as caught:
        fit_classifier(images, "resnet18", adversary_column="batch", epochs=1)
    assert "--adversary-column 'batch' is not a metadata column; choose one of plate, field, site" in str(caught.value)
    with pytest.raises(PhenolensError) as caught:
        fit_classifier(images, "resnet18", adversary_column="site", epochs=1)
    assert "--adversary-column 'site' has one value ('s1')" in str(caught.value) and "\n" not in str(caught.value)
