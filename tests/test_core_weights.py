"""Weights I/O: safetensors + JSON round trip and clear errors for bad checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from phenolens.core.errors import PhenolensError
from phenolens.nn.weights import ModelCard, load_model, register_architecture, save_model


@register_architecture("test-tiny-mlp")
class TinyMLP(torch.nn.Module):
    def __init__(self, inputs: int = 4, hidden: int = 8, outputs: int = 3):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Linear(inputs, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, outputs))

    def forward(self, x):
        return self.layers(x)


@register_architecture("test-other")
class Other(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(2))


def _saved(tmp_path):
    torch.manual_seed(0)
    model = TinyMLP(hidden=5)
    card = ModelCard("test-tiny-mlp", {"inputs": 4, "hidden": 5, "outputs": 3}, ["a", "b", "c"], ["x"], {"mean": [0.5], "std": [2.0]})
    return model, save_model(model, tmp_path / "m", card)


def test_round_trip_restores_outputs_and_card(tmp_path):
    model, folder = _saved(tmp_path)
    loaded, card = load_model(folder)
    x = torch.randn(6, 4)
    assert torch.equal(model(x), loaded(x))
    assert card.class_names == ["a", "b", "c"] and card.normalization == {"mean": [0.5], "std": [2.0]}
    assert not loaded.training
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.safetensors"]


def test_truncated_weights_name_the_file(tmp_path):
    _, folder = _saved(tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(PhenolensError, match=f"{weights}: corrupt or truncated weights file"):
        load_model(folder)


def test_weights_of_another_architecture(tmp_path):
    _, folder = _saved(tmp_path)
    with pytest.raises(PhenolensError, match="holds a 'test-tiny-mlp' model but this command needs 'test-other'"):
        load_model(folder, expected_architecture="test-other")
    config = json.loads((folder / "model.json").read_text())
    config["hyperparameters"]["hidden"] = 7
    (folder / "model.json").write_text(json.dumps(config))
    with pytest.raises(PhenolensError, match="tensors do not fit a 'test-tiny-mlp' model"):
        load_model(folder)


def test_unknown_architecture_and_missing_files(tmp_path):
    _, folder = _saved(tmp_path)
    config = json.loads((folder / "model.json").read_text())
    config["architecture"] = "nonexistent-net"
    (folder / "model.json").write_text(json.dumps(config))
    with pytest.raises(PhenolensError, match="unknown architecture 'nonexistent-net'"):
        load_model(folder)
    with pytest.raises(PhenolensError, match="no model config"):
        load_model(tmp_path / "nowhere")
