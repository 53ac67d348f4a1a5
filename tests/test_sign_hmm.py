"""Rectified-Gaussian HMM: EM recovers known parameters; Viterbi and forward-backward match brute force."""

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import norm

from phenolens.core.errors import PhenolensError
from phenolens.explain.sign.hmm import RectifiedGaussianHMM, censored_moments, rectified_log_density

pytestmark = pytest.mark.usefixtures("one_thread")

MEANS = np.array([[1.5, -0.3, 0.8, 2.0], [-0.4, 1.2, 2.0, 0.3], [0.5, 2.5, 0.2, 1.0]])
SIGMAS = np.array([[0.5, 0.8, 0.4, 0.6], [0.7, 0.5, 0.6, 0.4], [0.4, 0.6, 0.9, 0.5]])
WEIGHTS = np.array([0.3, 0.3, 0.4])


def sample_rectified_mixture(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    state = rng.choice(len(WEIGHTS), n, p=WEIGHTS)
    return np.maximum(0.0, MEANS[state] + SIGMAS[state] * rng.standard_normal((n, MEANS.shape[1])))


def test_density_and_censored_moments_match_scipy():
    x = sample_rectified_mixture(50, seed=1)
    density = rectified_log_density(torch.tensor(x), torch.tensor(MEANS), torch.tensor(SIGMAS**2)).numpy()
    expected = np.where(x[:, None] > 0, norm.logpdf(x[:, None], MEANS[None], SIGMAS[None]), norm.logcdf(0.0, MEANS[None], SIGMAS[None])).sum(-1)
    np.testing.assert_allclose(density, expected, atol=1e-10)
    first, second = censored_moments(torch.tensor(MEANS), torch.tensor(SIGMAS**2))
    for k, d in [(0, 1), (1, 0), (2, 2)]:
        truncated = norm(MEANS[k, d], SIGMAS[k, d])
        grid = np.linspace(-12, 0, 200_001)
        weights = truncated.pdf(grid) / truncated.cdf(0.0)
        np.testing.assert_allclose(first[k, d].item(), np.trapezoid(grid * weights, grid), atol=1e-5)
        np.testing.assert_allclose(second[k, d].item(), np.trapezoid(grid**2 * weights, grid), atol=1e-5)


def test_online_em_recovers_a_known_rectified_mixture():
    x = sample_rectified_mixture(8000, seed=0)
    assert 0.1 < (x == 0).mean() < 0.3  # censoring matters in this data
    model = RectifiedGaussianHMM(states=3, epochs=10, batch_size=250, seed=0).fit([x])
    means, sigmas = model.means_[0].numpy(), np.sqrt(model.variances_[0].numpy())
    rows, cols = linear_sum_assignment(((means[:, None] - MEANS[None]) ** 2).sum(-1))
    assert np.abs(means[rows] - MEANS[cols]).max() < 0.1
    assert np.abs(sigmas[rows] - SIGMAS[cols]).max() < 0.08
    np.testing.assert_allclose(model.initial_.numpy()[rows], WEIGHTS[cols], atol=0.03)
    # ignoring the censoring (plain means of the rectified values) is clearly biased for negative means
    naive = np.array([x[model.viterbi([x])[0][:, 0] == k].mean(0) for k in rows])
    assert np.abs(naive - MEANS[cols]).max() > 0.3


def toy_hmm(seed: int = 3) -> tuple[RectifiedGaussianHMM, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    sizes, dims = [2, 3, 2], [3, 2, 4]
    model = RectifiedGaussianHMM(states=sizes)
    model.initial_ = torch.tensor(rng.dirichlet(np.ones(2)))
    model.transitions_ = [torch.tensor(rng.dirichlet(np.ones(b), size=a)) for a, b in zip(sizes[:-1], sizes[1:])]
    model.means_ = [torch.tensor(rng.normal(0.5, 1.0, (k, d))) for k, d in zip(sizes, dims)]
    model.variances_ = [torch.tensor(rng.uniform(0.3, 1.5, (k, d))) for k, d in zip(sizes, dims)]
    layers = [np.maximum(0.0, rng.normal(0.5, 1.0, (40, d))) for d in dims]
    return model, layers


def brute_force_joint(model: RectifiedGaussianHMM, layers: list[np.ndarray]) -> tuple[list, np.ndarray]:
    """Every path and its (N, paths) joint log-probability, by explicit enumeration."""
    paths = list(itertools.product(*[range(len(m)) for m in model.means_]))
    joint = np.zeros((len(layers[0]), len(paths)))
    for p, path in enumerate(paths):
        log_prob = np.log(model.initial_.numpy()[path[0]]) + np.zeros(len(layers[0]))
        for layer, state in enumerate(path):
            if layer:
                log_prob += np.log(model.transitions_[layer - 1].numpy()[path[layer - 1], state])
            mean, sd = model.means_[layer].numpy()[state], np.sqrt(model.variances_[layer].numpy()[state])
            log_prob += np.where(layers[layer] > 0, norm.logpdf(layers[layer], mean, sd), norm.logcdf(0.0, mean, sd)).sum(1)
        joint[:, p] = log_prob
    return paths, joint


def test_viterbi_and_forward_backward_match_brute_force_on_a_three_layer_toy():
    model, layers = toy_hmm()
    paths, joint = brute_force_joint(model, layers)
    best, best_score = model.viterbi(layers)
    np.testing.assert_array_equal(best, np.array(paths)[joint.argmax(1)])
    np.testing.assert_allclose(best_score, joint.max(1), rtol=1e-10)
    np.testing.assert_allclose(model.score_samples(layers), np.logaddexp.reduce(joint, axis=1), rtol=1e-10)
    posterior = np.exp(joint - np.logaddexp.reduce(joint, axis=1)[:, None])
    gamma, xi = model.posteriors(layers)
    for layer in range(3):
        expected = np.stack([posterior[:, [p[layer] == k for p in paths]].sum(1) for k in range(len(model.means_[layer]))], 1)
        np.testing.assert_allclose(gamma[layer], expected, atol=1e-10)
    pair = np.stack([[posterior[:, [p[1] == i and p[2] == j for p in paths]].sum(1) for j in range(2)] for i in range(3)]).transpose(2, 0, 1)
    np.testing.assert_allclose(xi[1], pair, atol=1e-10)


def test_bad_input_is_refused():
    with pytest.raises(PhenolensError, match="negative activations"):
        RectifiedGaussianHMM(states=2).fit([np.array([[-1.0, 2.0], [1.0, 0.0]])])
    with pytest.raises(PhenolensError, match="only 2 examples"):
        RectifiedGaussianHMM(states=3).fit([np.ones((2, 3))])
