"""benchmarks/counterfactual_benchmark.py: the reference ResNet-18 trains under the i-ResNet's conditions."""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import phenolens.explain.counterfactual.training as counterfactual_training
from phenolens.data.containers import ImageSet
from phenolens.explain.counterfactual.settings import CounterfactualTrainingSettings
from phenolens.training import ImageTrainingSettings
from phenolens.training.fitting import prepare_training_data

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import counterfactual_benchmark as bench  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

# Every ImageTrainingSettings field, by what the comparison does with it. A new field fails
# `test_every_reference_field_is_decided` until it is placed here (and, if it changes the training images, set off).
SHARED = ("size", "epochs", "patience", "max_rotation", "validation_fraction", "group_by", "seed")  # the i-ResNet's value
OFF = {
    "cutmix_probability": 0.0,
    "dimming": 0.0,
    "channel_gain": 0.0,
    "blur_augmentation": 0.0,
    "intensity_normalization": "none",
    "style_mixing": 0.0,
}
OWN = ("arch", "width", "stem_stride", "blocks", "loss", "batch_size", "lr", "weight_decay", "schedule")  # the network's own recipe
# unused here: no unlabelled images, covariate, adversary, eraser, probe, folds or ensemble; a held-out test set is the benchmark's
UNUSED = (
    "augment",
    "intensity_column",
    "pseudo_labels",
    "pseudo_start",
    "pseudo_full",
    "pseudo_weight",
    "balanced",
    "covariate",
    "adversary_column",
    "adversary_weight",
    "adversary_lambda",
    "adversary_loss",
    "adversary_steps",
    "adversary_lr",
    "adversary_depth",
    "adversary_reset",
    "adversary_refit",
    "adversary_by_class",
    "adversary_unlabelled",
    "erase_column",
    "probe_column",
    "adversary_baseline",
    "test_fraction",
    "cv",
    "members",
)

IRESNET = CounterfactualTrainingSettings(
    classes=("a", "b"), size=16, blocks=(1,), hidden=(4,), epochs=9, patience=7, max_rotation=5.0, validation_fraction=0.3, group_by="field", seed=3
)


def test_every_reference_field_is_decided():
    decided = [*SHARED, *OFF, *OWN, *UNUSED]
    assert sorted(decided) == sorted(field.name for field in dataclasses.fields(ImageTrainingSettings))


def test_reference_trains_under_the_iresnet_conditions():
    reference = bench.reference_settings(IRESNET)
    assert {name: getattr(reference, name) for name in SHARED} == {name: getattr(IRESNET, name) for name in SHARED}
    assert {name: getattr(reference, name) for name in OFF} == OFF
    assert reference.augment and reference.schedule == "plateau" and not reference.members > 1
    assert (reference.arch, reference.width, reference.stem_stride) == ("resnet18", 0.5, 1)
    assert bench.reference_settings(IRESNET, 4).epochs == 4  # --resnet-epochs overrides only the budget


def test_reference_validates_on_the_iresnet_validation_fields(monkeypatch):
    """The ResNet's early-stopping split of the i-ResNet's training images is the i-ResNet's own."""
    rng = np.random.default_rng(0)
    fields = np.repeat([f"f{i}" for i in range(12)], 5)
    labels = np.repeat(np.arange(12) % 2, 5)
    images = ImageSet(rng.random((60, 2, 16, 16)).astype(np.float32), labels, ["a", "b"], ["x", "y"], meta=pd.DataFrame({"field": fields}))
    calls = []
    split = counterfactual_training.stratified_split

    def recorded(*args, **kwargs):
        calls.append(split(*args, **kwargs))
        return calls[-1]

    monkeypatch.setattr(counterfactual_training, "stratified_split", recorded)
    settings = IRESNET.replace(epochs=1, autoencoder=False)
    _, result = counterfactual_training.train_counterfactual_model(images, settings)
    iresnet_fit, iresnet_validation = calls[1]  # relative to the training images, as the reference sees them
    train = result["data"].subset(result["train_index"])
    prepared = prepare_training_data(train, bench.reference_settings(settings))
    assert len(iresnet_validation) > 0 and prepared.n_validation == len(iresnet_validation)
    assert np.array_equal(np.sort(prepared.train_index), np.sort(iresnet_fit))
