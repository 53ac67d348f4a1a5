"""`--erase-column`: LEACE of the within-class contrasts of a column, inserted before the head (issue 24, round 2)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from concept_erasure import LeaceEraser, LeaceFitter

from phenolens.cli.main import run
from phenolens.core.errors import PhenolensError
from phenolens.data.containers import ImageSet
from phenolens.nn.erasure import AffineEraser
from phenolens.report.classifier import erasure_part, training_section
from phenolens.report.html import Section
from phenolens.training import ImageTrainingSettings, fit_classifier, train_and_evaluate
from phenolens.training.adversary import domain_probe
from phenolens.training.classifier import ImageClassifier
from phenolens.training.erasure import HEAD_REFIT_STEPS, fit_leace, within_class_contrasts
from phenolens.training.fitting import ImageClassifierEstimator
from phenolens.training.prediction import predict
from phenolens.training.settings import ImagePredictionSettings

TINY = {"width": 0.125, "blocks": (1, 1), "stem_stride": 1, "epochs": 2, "batch_size": 16, "validation_fraction": 0.0}


def _welled_set(n: int = 48, seed: int = 0) -> ImageSet:
    """Two classes (a spot inside or outside the 'nucleus'), each in two wells of its own; each well brightens the reporter."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    wells = 2 * labels + (np.arange(n) // 2) % 2  # class 0 in wells W0, W1; class 1 in W2, W3
    images = []
    for label, well in zip(labels, wells):
        image = rng.uniform(0, 0.2, size=(2, 12, 12)).astype(np.float32) + np.array([0.15 * well, 0.0], dtype=np.float32)[:, None, None]
        image[1, 4:8, 4:8] = 1.0
        image[0, 4:8, 4:8] += float(label)
        image[0, :2, :] += float(1 - label)
        images.append(image)
    meta = pd.DataFrame({"well": [f"W{w}" for w in wells], "field": [f"F{i // 4}" for i in range(n)], "site": "s1"})
    return ImageSet(np.stack(images), labels, ["outside", "inside"], ["reporter", "dna"], meta, name="welled")


def _crop_folder(folder, count: int):
    """`folder` with classes a and b of `count` random 2-stain 12 px crops each (.npy), no metadata columns."""
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for i in range(count):
            np.save(folder / label / f"{i}.npy", np.random.default_rng(i).uniform(size=(2, 12, 12)).astype(np.float32))
    return folder


def _planted(n: int = 600, dims: int = 12, seed: int = 0) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Embeddings with a class signal and a within-class well signal (two wells per class), each on its own direction."""
    rng = np.random.default_rng(seed)
    classes = np.arange(n) % 2
    wells = 2 * classes + rng.integers(0, 2, n)
    features = rng.normal(size=(n, dims))
    features[:, 0] += 3.0 * classes  # the class
    features[:, 1] += 2.0 * (wells % 2) * (2 * classes - 1)  # the well within its class, opposite signs per class
    features[:, 2] += 1.5 * (wells % 2)  # and a shift shared by both classes
    return torch.from_numpy(features), wells, classes


def test_within_class_contrasts_sum_to_zero_in_each_class_and_are_uncorrelated_with_the_class():
    wells, classes = np.array([0, 1, 1, 2, 3, 3, 3]), np.array([0, 0, 0, 1, 1, 1, 1])
    contrasts = within_class_contrasts(wells, classes, "well")
    assert contrasts.shape == (7, 4)
    np.testing.assert_allclose(contrasts[0], [1 - 1 / 3, -2 / 3, 0, 0])
    np.testing.assert_allclose(contrasts[3], [0, 0, 1 - 1 / 4, -3 / 4])
    for label in (0, 1):
        np.testing.assert_allclose(contrasts[classes == label].sum(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(contrasts.sum(axis=1), 0.0, atol=1e-12)  # no function of the class is left in the concept
    with pytest.raises(PhenolensError, match=r"--erase-column 'plate' has one value within every class") as caught:
        within_class_contrasts(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1]), "plate")
    assert "\n" not in str(caught.value)


def test_the_inserted_layer_equals_the_library_eraser_on_the_embeddings():
    features, wells, classes = _planted()
    contrasts = within_class_contrasts(wells, classes, "well")
    oracle = LeaceFitter.fit(features, torch.from_numpy(contrasts)).eraser
    assert isinstance(oracle, LeaceEraser)
    layer = AffineEraser.from_leace(fit_leace(features, contrasts))
    torch.testing.assert_close(layer(features.float()), oracle(features).float(), rtol=0, atol=1e-5)
    assert not torch.allclose(layer(features.float()), features.float(), atol=1e-2)  # it did erase something


def test_after_erasure_a_probe_cannot_read_the_planted_well_within_class_while_the_class_survives():
    features, wells, classes = _planted(4000)  # enough that the fitted means are those of the source to about 0.03
    before = domain_probe(features.numpy(), wells, classes=classes)
    layer = AffineEraser.from_leace(fit_leace(features, within_class_contrasts(wells, classes, "well")))
    erased = layer(features.float()).double().numpy()
    after = domain_probe(erased, wells, classes=classes)
    assert before["within_class_balanced_accuracy"] > 0.8 and before["within_class_chance"] == 0.5
    # on the embeddings it was fitted on, the cross-validated probe falls below chance: each fold's held-out means are
    # the opposite of the other folds' (their sum is erased exactly); on a fresh sample of the same source it reads chance
    assert after["within_class_balanced_accuracy"] < 0.5
    fresh, fresh_wells, fresh_classes = _planted(seed=1)
    unseen = domain_probe(layer(fresh.float()).double().numpy(), fresh_wells, classes=fresh_classes)
    assert abs(unseen["within_class_balanced_accuracy"] - 0.5) < 0.06
    assert domain_probe(fresh.numpy(), fresh_wells, classes=fresh_classes)["within_class_balanced_accuracy"] > 0.8
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    assert cross_val_score(LogisticRegression(max_iter=2000), erased, classes, cv=5, scoring="balanced_accuracy").mean() > 0.9
    # the one-hot of the well instead of its contrasts would have erased the class too (wells nest in the classes)
    one_hot = (wells[:, None] == np.arange(4)[None]).astype(np.float64)
    nested = AffineEraser.from_leace(fit_leace(features, one_hot))(features.float()).double().numpy()
    assert cross_val_score(LogisticRegression(max_iter=2000), nested, classes, cv=5, scoring="balanced_accuracy").mean() < 0.6


def test_an_erased_network_embeds_as_the_library_eraser_of_its_embedding_and_predicts_the_same_after_save_and_load(tmp_path):
    images = _welled_set()
    estimator = ImageClassifierEstimator(ImageTrainingSettings(erase_column="well", **TINY)).fit(images)
    classifier, unerased = estimator.classifier_, estimator.unerased_
    assert classifier.settings["hyperparameters"]["erasure"] is True and "erasure" not in unerased.settings.get("hyperparameters", {})
    training = images.labelled().subset(estimator.train_index_)
    raw = torch.from_numpy(unerased.embed(training))
    oracle = LeaceFitter.fit(raw.double(), torch.from_numpy(within_class_contrasts(*_codes(training), "well"))).eraser
    np.testing.assert_allclose(classifier.embed(training), oracle(raw.double()).numpy(), atol=1e-4)
    assert not np.allclose(classifier.model.head.linear.weight.detach(), unerased.model.head.linear.weight.detach())  # the head was refitted
    # the head reads the erased embedding: logits = head(eraser(backbone))
    logits = classifier.model.head(torch.from_numpy(classifier.embed(training))).detach().numpy()
    np.testing.assert_allclose(classifier.logits(training), logits, atol=1e-5)
    classifier.save(tmp_path / "m")
    loaded = ImageClassifier.load(tmp_path / "m")
    assert loaded.model.eraser is not None and loaded.model.state_dict().keys() == classifier.model.state_dict().keys()
    for name, tensor in classifier.model.state_dict().items():
        assert torch.equal(tensor, loaded.model.state_dict()[name]), name
    expected = classifier.predict_proba(images)
    np.testing.assert_array_equal(loaded.predict_proba(images), expected)
    for batch in (5, 256):  # chunked as a streamed screen applies it
        table = predict(loaded, images, ImagePredictionSettings(batch_size=batch, embeddings=True)).table
        np.testing.assert_allclose(table[["p_outside", "p_inside"]].to_numpy(), expected, atol=1e-6)
    # a model saved without an eraser (as before --erase-column existed) has no such hyperparameter and still loads
    unerased.save(tmp_path / "plain")
    card = json.loads((tmp_path / "plain" / "model.json").read_text())
    assert "erasure" not in card["hyperparameters"]
    plain = ImageClassifier.load(tmp_path / "plain")
    assert plain.model.eraser is None and not any(name.startswith("eraser") for name in plain.model.state_dict())
    np.testing.assert_array_equal(plain.predict_proba(images), unerased.predict_proba(images))


def _codes(images: ImageSet) -> tuple[np.ndarray, np.ndarray]:
    wells = np.unique(images.meta["well"].to_numpy(), return_inverse=True)[1]
    return wells, images.labels


def test_a_run_reports_the_probe_after_and_before_erasure_and_both_macro_f1s():
    run_ = train_and_evaluate(_welled_set(), erase_column="well", group_by="field", **TINY)
    erasure = run_.metrics["erasure"]
    assert erasure["column"] == "well" and erasure["domains"] == ["W0", "W1", "W2", "W3"] and erasure["head_refit_steps"] == HEAD_REFIT_STEPS
    for key in ("with_erasure", "without_erasure"):
        probe = erasure[key]
        assert probe["within_class_chance"] == 0.5 and probe["ungrouped"]["within_class_chance"] == 0.5
        assert probe["trained_images"]["n_images"] + probe["unseen_images"]["n_images"] == 48
    assert 0.0 <= erasure["macro_f1_without_erasure"] <= 1.0 and "adversary" not in run_.metrics
    # where the eraser was fitted, the planted well brightness is no longer read within class
    assert erasure["without_erasure"]["trained_images"]["within_class_balanced_accuracy"] > 0.8
    assert erasure["with_erasure"]["trained_images"]["within_class_balanced_accuracy"] <= 0.65
    section = Section("training")
    erasure_part(section, run_.metrics)
    ((caption, table),) = section.tables
    assert list(table.index) == ["after erasure", "before erasure"] and "'well'" in caption and table.shape == (2, 7)
    assert table.loc["before erasure", "held-out macro-F1"] == f"{erasure['macro_f1_without_erasure']:.3f}"
    assert "LEACE" in section.paragraphs[0] and f"{HEAD_REFIT_STEPS} full-batch steps" in section.paragraphs[0]
    figures = {figure.filename: figure.caption for figure in training_section(run_, _welled_set()).figures}
    assert "trained the network before erasure; the head was then refitted" in figures["training_curves.png"]


def test_bad_erasure_settings_and_columns_are_one_line(tmp_path, capsys):
    images = _welled_set(16)
    with pytest.raises(PhenolensError, match=r"--erase-column 'plate' is not a metadata column; choose one of well, field, site"):
        fit_classifier(images, "resnet18", erase_column="plate", epochs=1)
    with pytest.raises(PhenolensError, match=r"--erase-column 'site' has one value \('s1'\)"):
        fit_classifier(images, "resnet18", erase_column="site", epochs=1)
    nested = ImageSet(images.images, images.labels, images.class_names, images.channel_names, images.meta.assign(plate=images.labels.astype(str)))
    with pytest.raises(PhenolensError, match=r"--erase-column 'plate' has one value within every class"):
        fit_classifier(nested, "resnet18", erase_column="plate", epochs=1)
    with pytest.raises(PhenolensError, match=r"erase_column \(--erase-column\).*does not combine with --adversary-column"):
        ImageTrainingSettings(erase_column="well", adversary_column="well")
    with pytest.raises(PhenolensError, match=r"erase_column \(--erase-column\).*--members 1"):
        ImageTrainingSettings(erase_column="well", members=2)
    folder = _crop_folder(tmp_path / "crops", 4)
    out = tmp_path / "model"
    assert (
        run(["images", "train", "--folder", str(folder), "--out", str(out), "--erase-column", "well", "--epochs", "1", "--validation-fraction", "0"])
        == 2
    )
    err = capsys.readouterr().err
    assert "--erase-column 'well' is not a metadata column" in err and err.count("\n") == 1 and not out.exists()


def test_attributions_explain_the_erased_network():
    from phenolens.explain.attribution import attribute

    images = _welled_set(24)
    estimator = ImageClassifierEstimator(ImageTrainingSettings(erase_column="well", **TINY)).fit(images)
    classifier, unerased = estimator.classifier_, estimator.unerased_
    inputs = classifier.tensor(images).requires_grad_(True)
    classifier.model.eval()(inputs)[:, 1].sum().backward()  # the network's own forward: backbone, eraser, refitted head
    maps = attribute(classifier, images, "saliency", target=np.ones(len(images), dtype=np.int64))
    np.testing.assert_allclose(maps, inputs.grad.abs().numpy(), rtol=1e-4, atol=1e-6)
    assert not np.allclose(maps, attribute(unerased, images, "saliency", target=np.ones(len(images), dtype=np.int64)), atol=1e-6)


def test_each_cross_validation_fold_is_erased_and_compared_with_itself_before_erasure(tmp_path):
    run_ = train_and_evaluate(_welled_set(), erase_column="well", group_by="field", cv=2, **TINY)
    assert len(run_.folds) == 2 and all(fold.classifier.model.eraser is not None and fold.unerased.model.eraser is None for fold in run_.folds)
    assert 0.0 <= run_.metrics["erasure"]["macro_f1_without_erasure"] <= 1.0
    run_.save(tmp_path / "m", _welled_set().labelled())
    assert ImageClassifier.load(tmp_path / "m" / "folds" / "fold-2").model.eraser is not None
