"""Dictionaries: the torch GMM against scikit-learn, SignDictionary fitting, persistence and bad input."""

import numpy as np
import pytest
import torch
from sign_networks import TinyResNet

from phenolens.core.errors import PhenolensError
from phenolens.explain.sign import GaussianDictionary, SignDictionary, fit_columns, histograms
from phenolens.explain.sign.layers import OUTPUT

pytestmark = pytest.mark.usefixtures("one_thread")


def mixture_columns(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = np.array([[0.0, 3.0, 1.0, 0.0], [4.0, 0.0, 2.0, 1.0], [1.0, 1.0, 6.0, 3.0]])
    sds = np.array([[0.5, 1.0, 0.3, 0.2], [1.0, 0.4, 0.6, 0.5], [0.3, 0.3, 1.0, 0.8]])
    state = rng.choice(3, n, p=[0.5, 0.3, 0.2])
    return (means[state] + sds[state] * rng.standard_normal((n, 4))).astype(np.float32)


def test_gradient_fit_matches_scikit_learn_held_out_likelihood():
    from sklearn.mixture import GaussianMixture

    train, test = mixture_columns(8_000, 0), mixture_columns(4_000, 1)
    dictionary = GaussianDictionary.initialise(torch.from_numpy(train), 3, seed=0)
    fit_columns(dictionary, torch.from_numpy(train), updates=600, batch_size=512, seed=0)
    with torch.no_grad():
        ours = dictionary.log_likelihood(torch.from_numpy(test).double()).mean().item()
    reference = GaussianMixture(3, covariance_type="diag", random_state=0).fit(train.astype(np.float64)).score(test.astype(np.float64))
    assert ours > reference - 0.02
    # the density is a proper mixture: its own log-likelihood equals the posterior-weighted decomposition
    with torch.no_grad():
        joint = dictionary.log_joint(torch.from_numpy(test[:10]).double())
        np.testing.assert_allclose(dictionary.posteriors(torch.from_numpy(test[:10]).double()).sum(1).numpy(), 1.0, rtol=1e-6)
        np.testing.assert_allclose(torch.logsumexp(joint, 1).numpy(), dictionary.log_likelihood(torch.from_numpy(test[:10]).double()).numpy())


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 1, 16, 16)).astype(np.float32)
    y = np.arange(48) % 3
    x[y == 1, :, 4:8, 4:8] += 3.0  # class 1: a bright square, class 2: a dark one
    x[y == 2, :, 8:12, 8:12] -= 3.0
    return x, y


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return TinyResNet().eval()


@pytest.mark.parametrize("loss", ["discriminative", "generative"])
def test_sign_dictionary_fits_encodes_and_round_trips(network, images, loss, tmp_path):
    x, y = images
    dictionary = SignDictionary(network, words=[6, 5, 4], loss=loss, epochs=2, updates=150, batch_size=16, seed=0).fit(x, y)
    assert dictionary.layers_ == ["layer1", "layer2", "layer3"]
    maps = dictionary.encode(x)
    assert maps.words["layer1"].shape == (48, 8, 8) and maps.words["layer3"].shape == (48, 2, 2)
    assert maps.words["layer2"].max() < 5 and maps.words[OUTPUT].shape == (48, 1, 1)
    np.testing.assert_array_equal(maps.words[OUTPUT].ravel(), maps.probabilities.argmax(1))
    hist = dictionary.transform(x)["layer1"]
    np.testing.assert_allclose(hist.sum(1), 1.0)
    np.testing.assert_allclose(hist, histograms(maps.words["layer1"], 6))
    dictionary.save(tmp_path)
    again = SignDictionary.load(tmp_path, network, torch.zeros(1, 1, 16, 16))
    for layer in dictionary.layers_:
        np.testing.assert_array_equal(again.encode(x).words[layer], maps.words[layer])
    assert set(again.heads_) == set(dictionary.heads_)


def test_bad_input_is_refused_with_a_useful_message(network, images):
    x, y = images
    with pytest.raises(PhenolensError, match="'layer9' does not exist.*valid names: stem, stem.0"):
        SignDictionary(network, layers=["layer9"], words=4).fit(x, y)
    with pytest.raises(PhenolensError, match="K = 500 words but only 192 activation columns"):
        SignDictionary(network, layers=["layer3"], words=500, loss="generative").fit(x, y)
    with pytest.raises(PhenolensError, match="layer 'fc' is not convolutional.*layers with maps: stem"):
        SignDictionary(network, layers=["fc"], words=4).fit(x, y)
    with pytest.raises(PhenolensError, match="needs labels"):
        SignDictionary(network, layers=["layer3"], words=4).fit(x)
    with pytest.raises(PhenolensError, match="2 word counts for 3 layers"):
        SignDictionary(network, words=[4, 4]).fit(x, y)
