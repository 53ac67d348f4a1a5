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
from phenolens.report.classifier import adversary_part, training_curves_figure, training_section
from phenolens.report.html import Section
from phenolens.training import ImageTrainingSettings, cutmix, fit_classifier, train_and_evaluate
from phenolens.training.adversary import AdversaryTraining, domain_probe
from phenolens.training.augment import CutMixBatch
from phenolens.training.fitting import ImageClassifierEstimator, prepare_training_data


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


def _unmixed(labels: torch.Tensor) -> CutMixBatch:
    """A batch without CutMix boxes: every image is its own partner's complement with weight 1."""
    mixed = cutmix(torch.zeros(len(labels), 1, 4, 4), labels, torch.Generator().manual_seed(0), probability=0.0)
    assert torch.equal(mixed.partner_labels, labels[mixed.partner]) and torch.all(mixed.weight == 1)
    return mixed


def _training(loss: str, steps: int = 1, n_classes: int = 2) -> AdversaryTraining:
    torch.manual_seed(0)
    class_domains = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])  # class 0 seen in domains 0 and 1, class 1 in 1 and 2
    return AdversaryTraining(DomainAdversary(6, 3, n_classes=n_classes), class_domains, 2.0, 0.5, 4, loss=loss, steps=steps, lr=0.01)


def test_the_reversal_loss_reverses_the_gradient_by_the_ramped_lambda_after_training_the_adversary():
    training = _training("reversal", steps=3)
    features = torch.randn(8, 6, requires_grad=True)
    labels, domains = torch.arange(8) % 2, torch.tensor([0, 1, 1, 2, 0, 1, 1, 2])
    mixed = _unmixed(labels)
    before = [p.detach().clone() for p in training.adversary.parameters()]
    training(features, mixed, domains).backward()
    assert training.adversary.reversal.lambda_ == 0.0 and torch.all(features.grad == 0)  # p = 0: the schedule starts at 0
    assert all(not torch.equal(b, p) for b, p in zip(before, training.adversary.parameters()))  # its own steps trained it
    for step in range(1, 3):
        features.grad = None
        value = training(features, mixed, domains)
        value.backward()
        expected_lambda = 0.5 * (2 / (1 + np.exp(-10 * step / 4)) - 1)
        assert training.adversary.reversal.lambda_ == pytest.approx(expected_lambda) == pytest.approx(ganin_lambda(step / 4, scale=0.5))
        # the same loss without the reversal, read by the adversary as its steps left it: the features' gradient is its negative, times lambda
        plain = features.detach().clone().requires_grad_(True)
        expected = 2.0 * torch.nn.functional.cross_entropy(training.adversary.classify(plain, torch.eye(2)[labels]), domains)
        assert value.item() == pytest.approx(expected.item(), rel=1e-6)
        expected.backward()
        assert torch.allclose(features.grad, -expected_lambda * plain.grad, atol=1e-7)


def test_the_confusion_loss_is_the_cross_entropy_to_the_uniform_distribution_over_the_class_domains():
    training = _training("confusion", steps=2)
    features = torch.randn(8, 6, requires_grad=True)
    labels, domains = torch.arange(8) % 2, torch.tensor([0, 1, 1, 2, 0, 1, 1, 2])
    mixed = _unmixed(labels)
    training.steps_taken = 2  # lambda = 0.5 * ganin_lambda(0.5)
    value = training(features, mixed, domains)
    value.backward()
    plain = features.detach().clone().requires_grad_(True)
    log_p = torch.log_softmax(training.adversary.classify(plain, torch.eye(2)[labels]), 1)
    uniform = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])[labels]  # the domains of each image's class, equally
    expected = 2.0 * ganin_lambda(0.5, scale=0.5) * -(uniform * log_p).sum(1).mean()
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    expected.backward()  # minimised, not reversed: the features' gradient is the confusion loss's own
    assert torch.allclose(features.grad, plain.grad, atol=1e-7)
    # a fresh adversary after reset_every epochs, and its state survives a checkpoint
    training.reset_every = 2
    state = {k: v.clone() for k, v in training.adversary.state_dict().items()}
    assert not training.on_epoch_end(0, {}, None) and all(torch.equal(v, training.adversary.state_dict()[k]) for k, v in state.items())
    saved = training.state_dict()
    restored = _training("confusion")
    restored.load_state_dict(saved)
    assert restored.steps_taken == 3 and all(torch.equal(v, restored.adversary.state_dict()[k]) for k, v in state.items())
    training.on_epoch_end(1, {}, None)
    assert not torch.equal(state["body.0.weight"], training.adversary.state_dict()["body.0.weight"])


def test_a_refit_fits_a_fresh_adversary_to_the_whole_training_set_and_leaves_the_network_as_it_was():
    class Identity(torch.nn.Module):
        def embed(self, x, covariates=None):
            assert not self.training  # the embeddings a probe would read: eval mode
            return x

    torch.manual_seed(0)
    domains = torch.arange(300) % 3
    labels = torch.arange(300) % 2
    features = torch.nn.functional.one_hot(domains, 3).float() + 0.3 * torch.randn(300, 3)  # the domain, plainly
    training = AdversaryTraining(DomainAdversary(3, 3, n_classes=2), torch.ones(2, 3), 1.0, 1.0, 10, refit_on=(features, labels, domains))
    network = Identity().train()
    before = training.adversary.body[0].weight.detach().clone()
    assert not training.on_epoch_end(0, {}, network) and network.training
    assert not torch.equal(before, training.adversary.body[0].weight)
    training.adversary.eval()
    accuracy = (training.adversary.classify(features, torch.eye(2)[labels]).argmax(1) == domains).float().mean()
    assert accuracy > 0.95


@pytest.mark.parametrize("loss", ["confusion", "reversal"])
def test_the_adversary_drives_a_fresh_probe_of_a_planted_nuisance_to_chance_and_keeps_the_class(loss):
    """An encoder sees the class in one feature and a domain (within each class) planted in two others; a fresh linear
    probe reads that domain from its embedding almost perfectly without the adversary, at about chance with it."""
    rng = np.random.default_rng(0)
    n = 400
    classes, domains = rng.integers(0, 2, n), rng.integers(0, 2, n)  # two domains in each class
    inputs = np.column_stack([classes + 0.3 * rng.normal(size=n), domains + 0.2 * rng.normal(size=n), -domains + 0.2 * rng.normal(size=n)])
    inputs = np.column_stack([inputs, rng.normal(size=(n, 3))]).astype(np.float32)
    x, y, d = torch.from_numpy(inputs), torch.from_numpy(classes), torch.from_numpy(domains)

    def train(adversarial: bool) -> tuple[np.ndarray, float]:
        torch.manual_seed(0)
        encoder, head = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8)), torch.nn.Linear(8, 2)
        optimizer = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=0.01)
        class_domains = torch.ones(2, 2)
        training = AdversaryTraining(DomainAdversary(8, 2, n_classes=2), class_domains, 1.0, 1.0, 300, loss=loss, steps=5, lr=0.01)
        for _ in range(300):
            pick = torch.randint(0, n, (64,))
            features = encoder(x[pick])
            step_loss = torch.nn.functional.cross_entropy(head(features), y[pick])
            if adversarial:
                step_loss = step_loss + training(features, _unmixed(y[pick]), d[pick])
            optimizer.zero_grad()
            step_loss.backward()
            optimizer.step()
        with torch.no_grad():
            features = encoder(x)
            return features.numpy(), float((head(features).argmax(1) == y).float().mean())

    plain, plain_accuracy = train(False)
    hidden, hidden_accuracy = train(True)
    without = domain_probe(plain, domains, None, classes)["within_class_balanced_accuracy"]
    with_ = domain_probe(hidden, domains, None, classes)["within_class_balanced_accuracy"]
    assert without > 0.95 and with_ < 0.6, (without, with_)
    assert plain_accuracy > 0.9 and hidden_accuracy > 0.9, (plain_accuracy, hidden_accuracy)


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
        # validation_fraction 0: the network trained on every image outside the held-out fields (12 fields of 4 images)
        assert len(run.test_index) % 4 == 0 and 0 < len(run.test_index) < 24
        assert probe["trained_images"]["n_images"] == 48 - len(run.test_index) and probe["unseen_images"]["n_images"] == len(run.test_index)
    assert 0.0 <= adversary["macro_f1_without_adversary"] <= 1.0
    # the training curve is the class loss plus the adversary's weighted term, and the figure and its caption say so
    epochs = [{"epoch": 0, "train_loss": 2.0, "val_loss": 0.9, "lr": 1e-3}, {"epoch": 1, "train_loss": 1.5, "val_loss": 0.7, "lr": 1e-3}]
    for name, ylabel, legend in [
        (None, "loss (cross-entropy, nats)", ["training loss", "validation loss"]),
        (
            "confusion",
            "loss (nats)",
            ["training objective: class cross-entropy + adversary's confusion term", "validation loss (class cross-entropy)"],
        ),
    ]:
        axis = training_curves_figure(epochs, adversary=name).axes[0]
        assert axis.get_ylabel() == ylabel and [t.get_text() for t in axis.get_legend().get_texts()] == legend
        np.testing.assert_array_equal(axis.get_lines()[0].get_ydata(), [2.0, 1.5])
    figures = {figure.filename: figure.caption for figure in training_section(run, images).figures}
    assert "includes the adversary's weighted confusion term" in figures["training_curves.png"]
    section = Section("training")
    adversary_part(section, run.metrics)
    ((caption, table),) = section.tables
    assert list(table.index) == ["with the adversary", "without the adversary"] and "'plate'" in caption
    assert table.shape == (2, 7) and "told the class" in section.paragraphs[0] and "domain confusion" in section.paragraphs[0]
    from phenolens.report.html import Report

    page = Report("training")
    page.add(section)
    assert "<td>with the adversary</td>" in page.render() and "<td>without the adversary</td>" in page.render()  # rows named on the page
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


def test_the_transductive_adversary_reads_the_held_out_images_domains_but_never_their_labels():
    images = _plated_set()
    plates = images.meta["plate"].to_numpy()
    train, held = np.flatnonzero(plates != "P3"), np.flatnonzero(plates == "P3")  # a plate seen only unlabelled
    settings = ImageTrainingSettings(
        width=0.125, blocks=(1, 1), stem_stride=1, epochs=2, batch_size=8, adversary_column="plate", adversary_unlabelled="evaluation"
    )
    held_out = images.subset(held)
    relabelled = ImageSet(held_out.images, 1 - held_out.labels, held_out.class_names, held_out.channel_names, held_out.meta, name="relabelled")
    runs = [ImageClassifierEstimator(settings).fit(images.subset(train), other) for other in (held_out, relabelled, None)]
    first, second, without = (run.classifier_.predict_proba(images) for run in runs)
    np.testing.assert_array_equal(first, second)  # the held-out labels are never read
    assert not np.allclose(first, without)  # the held-out images are
    record = runs[0].classifier_.settings
    assert record["n_adversary_unlabelled"] == len(held) + record["n_validation"] and record["n_validation"] > 0
    assert runs[2].classifier_.settings["n_adversary_unlabelled"] == record["n_validation"]  # the early-stopping fields alone
    data = prepare_training_data(images.subset(train), settings, held_out)
    assert data.domain_names == ["P0", "P1", "P2", "P3"]
    assert set(data.adversary_images[-1][-len(held) :].tolist()) == {3} and set(data.train[-1].tolist()) <= {0, 1, 2}
    # through train_and_evaluate the run says it was transductive, and the report says so
    run = train_and_evaluate(images, settings, epochs=1, group_by="field", validation_fraction=0.0)
    assert run.metrics["adversary"]["transductive"] and run.metrics["adversary"]["unlabelled"] == "evaluation"
    section = Section("training")
    adversary_part(section, run.metrics)
    assert "Transductive: the adversary (not the classifier) also trained on the held-out" in section.paragraphs[0]


def test_a_last_batch_of_one_image_trains_with_the_adversary():
    # 17 training images in batches of 8 leave one image for the last batch: its embedding has no batch statistics
    rng = np.random.default_rng(0)
    images = ImageSet(
        rng.uniform(0, 1, (17, 2, 10, 10)).astype(np.float32), np.arange(17) % 2, ["a", "b"], ["c0", "c1"],
        pd.DataFrame({"well": [f"W{i % 4}" for i in range(17)]}),
    )  # fmt: skip
    settings = {"width": 0.125, "blocks": (1,), "stem_stride": 1, "epochs": 1, "batch_size": 8, "validation_fraction": 0.0}
    for loss in ("confusion", "reversal"):
        classifier = fit_classifier(images, "resnet18", adversary_column="well", adversary_loss=loss, **settings)
        assert np.isfinite(classifier.history.epochs[0]["train_loss"])
    adversary = DomainAdversary(3, 2).train()
    adversary(torch.randn(8, 3))  # the running statistics move
    one = torch.randn(1, 3)
    expected = adversary.body((one - adversary.standardise.running_mean) / torch.sqrt(adversary.standardise.running_var + adversary.standardise.eps))
    assert torch.allclose(adversary.classify(one), expected, atol=1e-6)  # one image: the running statistics, as in eval mode
