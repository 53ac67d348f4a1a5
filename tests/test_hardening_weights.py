"""Hardening of model loading: a model.json is checked against the architecture and the weights file's
header before anything is allocated; mismatches are named (issue 23)."""

from __future__ import annotations

import json
import time

import pytest
import torch

from phenolens.core.errors import PhenolensError
from phenolens.nn.backbones import ResNet18
from phenolens.nn.weights import ModelCard, load_model, read_card, save_model

HYPERPARAMETERS = {"in_channels": 2, "n_classes": 2, "width": 0.0625, "blocks": [1, 1]}


@pytest.fixture
def folder(tmp_path):
    torch.manual_seed(0)
    card = ModelCard("resnet18", dict(HYPERPARAMETERS), ["a", "b"], ["GFP", "DNA"], {"mean": [0.0, 1.0], "std": [1.0, 2.0], "size": 32})
    return save_model(ResNet18(**HYPERPARAMETERS), tmp_path / "model", card)


def _edit(folder, change):
    path = folder / "model.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))
    return path


def test_untouched_model_loads(folder):
    model, card = load_model(folder)
    assert isinstance(model, ResNet18) and card.normalization["size"] == 32 and not model.training


def test_width_64_is_refused_quickly_before_allocation(folder):
    config = _edit(folder, lambda c: c["hyperparameters"].update(width=64))
    started = time.perf_counter()
    with pytest.raises(PhenolensError, match=rf"{config}: the hyperparameters describe a model far larger than model.safetensors holds"):
        load_model(folder)
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda h: h.update(n_classes=1e9), "hyperparameter n_classes=1000000000.0 is not of type int"),
        (lambda h: h.update(n_classes=10**9), "2 names for n_classes=1000000000"),
        (lambda h: h.update(width=[1, 2]), r"hyperparameter width=\[1, 2\] is not of type float"),
        (lambda h: h.update(width="64"), 'hyperparameter width="64" is not of type float'),
        (lambda h: h.update(blocks=[1, "2"]), "hyperparameter blocks="),
        (lambda h: h.update(depth=3), r"hyperparameters of 'resnet18': unknown 'depth' \(it takes in_channels, n_classes, width"),
        (lambda h: h.pop("in_channels"), "missing 'in_channels'"),
        (lambda h: h.update(loss="magic"), "unknown loss 'magic'"),
        (lambda h: h.update(blocks=[]), r"model.json: blocks \[\]: give 1 to 4 stages"),
        (lambda h: h.update(width=1e308), r"the hyperparameters do not build a 'resnet18' model \(OverflowError: cannot convert float infinity"),
        (lambda h: h.update(blocks=[1, 1, 1, 1, 1]), "blocks .*give 1 to 4 stages"),
    ],
)
def test_bad_hyperparameters_are_one_line(folder, change, message):
    _edit(folder, lambda c: change(c["hyperparameters"]))
    with pytest.raises(PhenolensError, match=message) as error:
        load_model(folder)
    assert str(folder / "model.json") in str(error.value) and "\n" not in str(error.value)


def test_huge_n_classes_with_matching_names_is_refused_before_allocation(folder):
    _edit(folder, lambda c: (c["hyperparameters"].update(n_classes=10**9), c.update(class_names=[])))
    with pytest.raises(PhenolensError, match="far larger than model.safetensors holds"):
        load_model(folder)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.update(architecture="not-a-net"), "unknown architecture 'not-a-net'; known: "),
        (lambda c: c.update(architecture=["resnet18"]), "'architecture' must name an architecture"),
        (lambda c: c.update(surprise=1), "unknown field 'surprise'"),
        (lambda c: c.update(hyperparameters=[1]), "'hyperparameters' must be a JSON object"),
        (lambda c: c.update(class_names=["a", "a"]), "'class_names' repeats a name \\('a'\\)"),
        (lambda c: c.update(channel_names="GFP"), "'channel_names' must be a list of strings"),
        (lambda c: c["normalization"].update(std=[0, 0]), r"normalization 'std' \[0, 0\] holds a value <= 0"),
        (lambda c: c["normalization"].update(std=[1.0]), "normalization 'std' has 1 values for 2 channels"),
        (lambda c: c["normalization"].update(mean="zero"), "normalization 'mean' must be a number"),
        (lambda c: c["normalization"].update(size=100000), r"'size' 100000 makes inputs of 20,000,000,000 values per image, above the pixel"),
        (lambda c: c["normalization"].update(size=-3), "normalization 'size' must be a positive integer"),
    ],
)
def test_bad_configs_are_one_line(folder, change, message):
    _edit(folder, change)
    with pytest.raises(PhenolensError, match=message) as error:
        load_model(folder)
    assert str(folder / "model.json") in str(error.value) and "\n" not in str(error.value)


def test_non_finite_json_constants_are_refused(folder):
    path = folder / "model.json"
    path.write_text(path.read_text().replace('"std": [\n      1.0', '"std": [\n      NaN'))
    with pytest.raises(PhenolensError, match=rf"{path}: unreadable model config .*NaN is not a finite number"):
        read_card(folder)


def test_state_dict_mismatch_names_the_tensors(folder, tmp_path):
    other = ResNet18(**{**HYPERPARAMETERS, "blocks": [1, 2]})
    card = read_card(folder)
    save_model(other, tmp_path / "other", card)  # the weights of a deeper net under this config
    weights = tmp_path / "other" / "model.safetensors"
    unexpected = r"\(unexpected stages.stage2.1.bn1.bias, .* \(and 9 more\)\)"
    with pytest.raises(PhenolensError, match=rf"{weights}: tensors do not fit a 'resnet18' model .*{unexpected}") as error:
        load_model(tmp_path / "other")
    assert "Error(s) in loading state_dict" not in str(error.value)
    wider = ResNet18(**{**HYPERPARAMETERS, "width": 0.125})
    save_model(wider, tmp_path / "wider", card)
    misshaped = r"stages.stem.0.weight has shape \[8, 2, 3, 3\] in the file but \[4, 2, 3, 3\] in the model \(and \d+ more\)"
    with pytest.raises(PhenolensError, match=misshaped):
        load_model(tmp_path / "wider")
