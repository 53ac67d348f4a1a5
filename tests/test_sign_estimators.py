"""SIGN's estimators have the scikit-learn shape: clone works, fit returns self, one not-fitted check,
and nothing the caller passes in is changed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sign_networks import TinyResNet
from sklearn.base import clone

from phenolens.core.estimators import NotFittedError
from phenolens.explain.sign import InferenceGraphBuilder, RectifiedGaussianHMM, SignDictionary
from phenolens.explain.sign.settings import SignFitSettings

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(36, 1, 16, 16)).astype(np.float32)
    y = np.arange(36) % 3
    x[y == 1, :, 4:8, 4:8] += 3.0
    x[y == 2, :, 8:12, 8:12] -= 3.0
    return x, y


def network_state(network: torch.nn.Module) -> dict:
    """What a caller could notice about a network: weights, buffers, modes, gradient flags and hooks."""
    return {
        "tensors": {name: value.detach().clone() for name, value in network.state_dict().items()},
        "training": [module.training for module in network.modules()],
        "requires_grad": [p.requires_grad for p in network.parameters()],
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in network.modules()),
    }


def assert_same_state(before: dict, after: dict) -> None:
    assert before["training"] == after["training"] and before["requires_grad"] == after["requires_grad"]
    assert before["hooks"] == after["hooks"] == 0
    assert before["tensors"].keys() == after["tensors"].keys()
    for name, value in before["tensors"].items():
        assert torch.equal(value, after["tensors"][name]), name


def test_the_callers_network_comes_out_unchanged(images):
    x, y = images
    torch.manual_seed(0)
    network = TinyResNet().train()  # training mode on purpose: SIGN must not switch it
    before = network_state(network)
    dictionary = SignDictionary(network, words=[5, 4, 4], epochs=1, batch_size=12, seed=0)
    assert dictionary.fit(x, y) is dictionary
    builder = InferenceGraphBuilder(dictionary, nodes_per_layer=2)
    assert builder.fit(x, y) is builder
    builder.class_graph(int(builder.maps_.predictions[0]))
    graph = builder.image_graph(x[0])
    assert graph.word_maps.words["layer1"].shape == (1, 8, 8)
    assert dictionary.model is network and dictionary.network_ is not network
    assert_same_state(before, network_state(network))
    # the BatchNorm statistics were not updated by SIGN's forward passes either (training mode would update them)
    assert not dictionary.network_.training


def test_sign_dictionary_clones_and_refits_to_the_same_words(images):
    x, y = images
    torch.manual_seed(0)
    dictionary = SignDictionary(TinyResNet().eval(), words=[4, 3, 3], loss="generative", updates=40, seed=3).fit(x, y)
    copy = clone(dictionary)
    assert not hasattr(copy, "dictionaries_") and copy.get_params()["words"] == [4, 3, 3] and copy.get_params()["seed"] == 3
    with pytest.raises(NotFittedError, match="SignDictionary is not fitted yet"):
        copy.encode(x)
    refitted = copy.fit(x, y)
    for layer in dictionary.layers_:
        np.testing.assert_array_equal(refitted.encode(x).words[layer], dictionary.encode(x).words[layer])


def test_settings_build_the_same_dictionary_as_keywords():
    network = TinyResNet()
    settings = SignFitSettings(layers=("layer1", "layer2"), words=(6, 5), loss="generative", epochs=2, seed=4)
    params = SignDictionary.from_settings(network, settings).get_params()
    assert params["layers"] == ["layer1", "layer2"] and params["words"] == [6, 5] and params["loss"] == "generative"
    assert params["epochs"] == 2 and params["seed"] == 4 and params["model"] is network
    assert SignDictionary.from_settings(network, SignFitSettings()).get_params()["words"] == 64


def test_graph_builder_clones_with_its_fitted_dictionary(images):
    x, y = images
    torch.manual_seed(0)
    dictionary = SignDictionary(TinyResNet().eval(), words=4, loss="generative", updates=40, seed=0).fit(x, y)
    builder = InferenceGraphBuilder(dictionary, nodes_per_layer=2, class_names=["a", "b", "c"])
    with pytest.raises(NotFittedError, match="InferenceGraphBuilder is not fitted yet"):
        builder.class_graph(0)
    builder.fit(x, y)
    copy = clone(builder)
    assert copy.dictionary is dictionary and not hasattr(copy, "statistics_")
    assert copy.get_params(deep=False) == builder.get_params(deep=False)
    copy.fit(x, y)
    for layer in builder.layers:
        np.testing.assert_array_equal(copy.statistics_.counts[layer], builder.statistics_.counts[layer])
    with pytest.raises(NotFittedError, match="SignDictionary is not fitted yet"):
        InferenceGraphBuilder(clone(dictionary)).fit(x, y)


def test_hmm_clones_refits_identically_and_leaves_the_activations_alone():
    rng = np.random.default_rng(0)
    layers = [np.maximum(0.0, rng.normal(0.5, 1.0, (120, d))) for d in (4, 3)]
    kept = [a.copy() for a in layers]
    model = RectifiedGaussianHMM(states=[3, 2], epochs=2, batch_size=40, seed=1)
    with pytest.raises(NotFittedError, match="RectifiedGaussianHMM is not fitted yet"):
        model.predict(layers)
    assert model.fit(layers) is model
    for before, after in zip(kept, layers):
        np.testing.assert_array_equal(before, after)
    copy = clone(model)
    assert copy.get_params() == model.get_params() and not hasattr(copy, "transitions_")
    copy.fit(layers)
    np.testing.assert_array_equal(copy.predict(layers), model.predict(layers))
    np.testing.assert_array_equal(model.predict(layers), model.viterbi(layers)[0])
    with pytest.raises(Exception, match="the HMM models 2 layers"):
        model.predict(layers[:1])
