"""The image pipeline's one shape: CLI options equal the settings (drift test), the estimator clones,
attribution methods are a registry, and bad numbers are refused before any work."""

from __future__ import annotations

import dataclasses
import typing

import numpy as np
import pytest
import torch
import typer
from sklearn.base import clone

from phenolens.cli.images import app as images_app
from phenolens.core.errors import PhenolensError
from phenolens.core.estimators import NotFittedError
from phenolens.core.settings import Settings, _base_type, option_name
from phenolens.data.containers import ImageSet
from phenolens.explain.attribution import (
    ATTRIBUTION_METHODS,
    AttributionMethod,
    AttributionSettings,
    attribute,
    attribution_methods,
    register_method,
)
from phenolens.explain.class_model import ClassModelSettings
from phenolens.training import ImageClassifierEstimator, ImagePredictionSettings, ImageTrainingSettings, fit_classifier, predict

COMMANDS = {"train": ImageTrainingSettings, "explain": AttributionSettings, "predict": ImagePredictionSettings, "visualise": ClassModelSettings}


def settings_drift(command, settings_type: type[Settings]) -> list[str]:
    """Every way the options of a click `command` differ from `settings_type`: a field without an option, or another default."""
    params = {opt: param for param in command.params for opt in param.opts}
    hints = typing.get_type_hints(settings_type)
    found = []
    for field in dataclasses.fields(settings_type):
        name = option_name(field)
        if name not in params:
            found.append(f"{field.name}: no option {name}")
            continue
        value = params[name].default
        if typing.get_origin(_base_type(hints[field.name])[0]) is tuple and value == "":
            value = field.default  # an empty list option means the field's default (see settings_options)
        try:
            built = getattr(settings_type(**{field.name: value}), field.name)
        except PhenolensError as error:
            found.append(f"{field.name}: the option's default {value!r} is refused ({error})")
            continue
        if built != field.default:
            found.append(f"{field.name}: option default {built!r} != settings default {field.default!r}")
    return found


def click_command(app: typer.Typer, name: str):
    return typer.main.get_command(app).commands[name]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_cli_options_are_the_settings_fields_with_their_defaults(name):
    assert settings_drift(click_command(images_app, name), COMMANDS[name]) == []


def test_the_drift_check_fails_on_a_hand_written_option():
    drifted = typer.Typer()

    @drifted.command()
    def train(width: float = typer.Option(0.5, "--width"), epochs: int = typer.Option(30, "--epochs")) -> None:
        """A command that copies two options by hand, one with the API's old width."""

    @drifted.command()
    def other() -> None:
        """A second command, so that typer keeps a group."""

    problems = settings_drift(click_command(drifted, "train"), ImageTrainingSettings)
    assert "width: option default 0.5 != settings default 0.25" in problems
    assert "arch: no option --arch" in problems and not any(p.startswith("epochs") for p in problems)


def test_the_aliases_are_the_group_commands():
    from phenolens.cli.main import app

    top = typer.main.get_command(app)
    for name in ("train", "explain"):
        alias, command = top.commands[name], top.commands["images"].commands[name]
        assert [(p.opts, p.default) for p in alias.params] == [(p.opts, p.default) for p in command.params]
        assert settings_drift(alias, COMMANDS[name]) == []


@pytest.mark.parametrize(
    ("settings_type", "changes", "message"),
    [
        (ImageTrainingSettings, {"epochs": 0}, "epochs (--epochs) = 0: must be >= 1"),
        (ImageTrainingSettings, {"width": 0}, "width (--width) = 0.0: must be > 0"),
        (ImageTrainingSettings, {"batch_size": 0}, "batch_size (--batch-size) = 0: must be >= 1"),
        (ImageTrainingSettings, {"lr": -1}, "lr (--lr) = -1.0: must be > 0"),
        (ImageTrainingSettings, {"size": -5}, "size (--size) = -5: must be >= 1"),
        (ImageTrainingSettings, {"cutmix_probability": 1.5}, "(--cutmix) = 1.5: must be <= 1"),
        (ImageTrainingSettings, {"dimming": 1.0}, "must lie in [0, 1)"),
        (ImageTrainingSettings, {"channel_gain": 1.0}, "channel_gain (--channel-gain) = 1.0: must lie in [0, 1)"),
        (ImageTrainingSettings, {"test_fraction": 1.0}, "must lie in (0, 1)"),
        (ImageTrainingSettings, {"cv": 1}, "at least 2 folds"),
        (ImageTrainingSettings, {"loss": "hinge"}, "choose one of softmax, arcface, composite"),
        (ImageTrainingSettings, {"schedule": "step"}, "choose one of plateau, cosine"),
        (ImageTrainingSettings, {"adversary_weight": 0}, "adversary_weight (--adversary-weight) = 0.0: must be > 0"),
        (ImageTrainingSettings, {"adversary_lambda": -1}, "adversary_lambda (--adversary-lambda) = -1.0: must be >= 0"),
        (ImageTrainingSettings, {"adversary_loss": "mmd"}, "(--adversary-loss) = 'mmd': choose one of reversal, confusion"),
        (ImageTrainingSettings, {"adversary_steps": 0}, "adversary_steps (--adversary-steps) = 0: must be >= 1"),
        (ImageTrainingSettings, {"adversary_lr": 0}, "adversary_lr (--adversary-lr) = 0.0: must be > 0"),
        (ImageTrainingSettings, {"adversary_depth": -1}, "adversary_depth (--adversary-depth) = -1: must be >= 0"),
        (ImageTrainingSettings, {"adversary_reset": -1}, "adversary_reset (--adversary-reset) = -1: must be >= 0"),
        (ImageTrainingSettings, {"adversary_unlabelled": "all"}, "(--adversary-unlabelled) = 'all': choose one of none, evaluation"),
        (ImageTrainingSettings, {"adversary_unlabelled": "evaluation", "adversary_refit": True}, "does not combine with --adversary-refit"),
        (
            ImageTrainingSettings,
            {"intensity_normalization": "plate"},
            "(--intensity-normalization) = 'plate': choose one of none, field, field-quantile, crop",
        ),
        (AttributionSettings, {"window": 0}, "window (--window) = 0: must be >= 1"),
        (AttributionSettings, {"n_steps": 0}, "n_steps (--n-steps) = 0: must be >= 1"),
        (AttributionSettings, {"batch_size": 0}, "batch_size (--batch-size) = 0: must be >= 1"),
        (AttributionSettings, {"baseline": "nan"}, "baseline (--baseline) = 'nan': use zero, mean or a finite number"),
        (AttributionSettings, {"baseline": float("inf")}, "use zero, mean or a finite number"),
        (AttributionSettings, {"methods": "saliency,lime"}, "(--methods) = 'lime': choose one of saliency"),
        (AttributionSettings, {"reporter_channel": "GFP"}, "needs --nucleus-channel"),
        (ImagePredictionSettings, {"batch_size": 0}, "batch_size (--batch-size) = 0: must be >= 1"),
    ],
)
def test_bad_settings_are_one_line_errors(settings_type, changes, message):
    with pytest.raises(PhenolensError) as caught:
        settings_type(**changes)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_attribution_settings_take_aliases_numbers_and_text():
    settings = AttributionSettings(methods="IG,gradcam,ig", baseline=0.5, target=2)
    assert settings.methods == ("integrated_gradients", "gradcam") and settings.baseline == "0.5" and settings.target == "2"
    assert AttributionSettings.from_dict(settings.to_dict()) == settings


def _tiny_images(n: int = 24, size: int = 12, seed: int = 0) -> ImageSet:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.normal(0, 1, (n, 2, size, size)).astype(np.float32)
    images[labels == 1, 0, 3:8, 3:8] += 4.0
    return ImageSet(images, labels, ["off", "on"], ["GFP", "DNA"], name="tiny")


TINY = ImageTrainingSettings(width=0.125, blocks=(1, 1), stem_stride=1, epochs=2, batch_size=8, validation_fraction=0.0, pseudo_labels=False)


def test_the_estimator_stores_params_fits_returns_self_and_clones():
    images = _tiny_images()
    labels_before = images.labels.copy()
    estimator = ImageClassifierEstimator(TINY, description="clone test")
    assert estimator.get_params() == {"settings": TINY, "description": "clone test"}
    assert ImageClassifierEstimator().get_params()["settings"] is None  # __init__ stores, it does not fill in defaults
    with pytest.raises(NotFittedError, match="ImageClassifierEstimator is not fitted yet"):
        estimator.predict_proba(images)
    assert estimator.fit(images) is estimator
    assert {"classifier_", "history_", "classes_", "channel_names_"} <= set(vars(estimator)) and estimator.classes_ == ["off", "on"]
    assert np.array_equal(images.labels, labels_before)  # the caller's images are not touched
    twin = clone(estimator)
    assert twin is not estimator and twin.get_params() == estimator.get_params() and not hasattr(twin, "classifier_")
    with pytest.raises(NotFittedError):
        twin.predict(images)
    # the same settings give the same model: the clone refits to the same probabilities
    assert np.allclose(twin.fit(images).predict_proba(images), estimator.predict_proba(images), atol=1e-6)
    # fit_classifier's keywords build the same settings object, not a second set of defaults
    shortcut = fit_classifier(images, settings=TINY.replace(width=0.25), width=0.125, description="clone test")
    assert np.allclose(shortcut.predict_proba(images), estimator.predict_proba(images), atol=1e-6)


def test_predict_equals_predict_proba_in_batches_with_embeddings_and_groups():
    images = _tiny_images(30)
    images.meta["well"] = [f"w{i % 4}" for i in range(30)]
    classifier = fit_classifier(images, settings=TINY)
    predictions = predict(classifier, images, ImagePredictionSettings(batch_size=7, embeddings=True, group_by="well"))
    proba = classifier.predict_proba(images)
    table = predictions.table
    assert np.array_equal(table[["p_off", "p_on"]].to_numpy(), proba)  # batches of 7 give the same numbers as one call
    assert list(table["predicted"]) == [classifier.class_names[k] for k in proba.argmax(1)]
    assert list(table["label"]) == list(images.label_names()) and list(table["well"]) == list(images.meta["well"])
    assert np.allclose(predictions.embeddings.filter(like="e_").to_numpy(), classifier.embed(images), atol=1e-6)
    groups = predictions.groups.set_index("well")
    w1 = table[table["well"] == "w1"]
    assert groups.loc["w1", "n_images"] == len(w1) and groups.loc["w1", "fraction_on"] == pytest.approx((w1["predicted"] == "on").mean())
    assert np.allclose(groups.filter(like="fraction_").sum(axis=1), 1.0)
    assert predictions.metrics["labelled"]["n_images"] == 30 and sum(predictions.metrics["predicted_counts"].values()) == 30


def test_images_are_matched_to_the_model_by_name():
    images = _tiny_images()
    classifier = fit_classifier(images, settings=TINY)
    swapped = ImageSet(images.images[:, ::-1].copy(), images.labels, ["off", "on"], ["DNA", "GFP"], name="swapped")
    assert np.array_equal(classifier.predict_proba(swapped), classifier.predict_proba(images))  # reordered by channel name
    unnamed = ImageSet(images.images, images.labels, ["off", "on"], ["ch0", "ch1"], name="unnamed")
    assert np.array_equal(classifier.predict_proba(unnamed), classifier.predict_proba(images))  # no names given: the model's order
    with pytest.raises(PhenolensError, match="channels are A, B but the model reads GFP, DNA"):
        classifier.predict(ImageSet(images.images, images.labels, ["off", "on"], ["A", "B"], name="other"))
    only_on = images.subset(images.labels == 1)
    renamed = ImageSet(only_on.images, np.zeros(len(only_on), int), ["on"], ["GFP", "DNA"], name="one class")
    assert np.array_equal(classifier.conform(renamed).labels, np.ones(len(only_on), int))  # 'on' is the model's class 1, not 0
    stranger = ImageSet(only_on.images, np.zeros(len(only_on), int), ["AAA"], ["GFP", "DNA"], name="stranger")
    with pytest.raises(PhenolensError, match="class 'AAA' is not a class of the model, which knows off, on"):
        predict(classifier, stranger)


def test_a_new_attribution_method_is_one_class_and_one_registration():
    assert attribution_methods() == ("saliency", "gradcam", "occlusion", "integrated_gradients")
    assert set(AttributionSettings.__dataclass_fields__["methods"].metadata["choices"]) >= set(attribution_methods())

    class InputTimesGradient(AttributionMethod):
        name = "input_x_gradient"

        def attribute(self, model, inputs, target, baseline, covariates, settings) -> torch.Tensor:
            from captum.attr import InputXGradient

            return InputXGradient(self.forward(model, settings)).attribute(inputs, target=target, additional_forward_args=covariates)

    images = _tiny_images(6)
    classifier = fit_classifier(images, settings=TINY)
    register_method(InputTimesGradient)
    try:
        maps = attribute(classifier, images, "input_x_gradient", "predicted", AttributionSettings(batch_size=4))
        saliency = attribute(classifier, images, "saliency", "predicted", AttributionSettings(batch_size=4))
        inputs = classifier.array(images)
        assert maps.shape == inputs.shape and np.allclose(np.abs(maps), np.abs(inputs) * saliency, atol=1e-4)
        with pytest.raises(TypeError, match="taken"):
            register_method(InputTimesGradient)
    finally:
        ATTRIBUTION_METHODS.pop("input_x_gradient")
        from phenolens.explain import attribution

        attribution._ALIASES.pop("input_x_gradient")


def test_the_written_out_choices_are_the_registered_ones():
    from phenolens.nn.backbones import Ensemble, ImageClassifierNet
    from phenolens.nn.heads import LOSSES
    from phenolens.nn.weights import ARCHITECTURES
    from phenolens.training import settings

    single = sorted(n for n, c in ARCHITECTURES.items() if isinstance(c, type) and issubclass(c, ImageClassifierNet) and c is not Ensemble)
    assert tuple(single) == settings.IMAGE_ARCHITECTURES
    assert LOSSES == settings.LOSSES


def test_the_command_line_and_the_settings_load_without_torch():
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = "import sys, phenolens.cli.main, phenolens.explain.attribution; print([m for m in ('torch', 'sklearn', 'captum') if m in sys.modules])"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert result.stdout.strip() == "[]"
