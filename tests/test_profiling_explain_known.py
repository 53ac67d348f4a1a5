"""Anomaly SHAP on a linear 'autoencoder' whose exact SHAP values are known: phi_i = w_i (x_i - mean of the background).

With four features, Kernel SHAP enumerates every coalition of the three other inputs, so shap (the oracle)
is exact here. The two cases are the two signs of the report: an input that alone drives the error gets the
largest positive value; a phenotype shared with a correlated input gives a negative one (the real property
behind all-negative bars on BBBC021's most anomalous treatment).
"""

import numpy as np
import pytest
import torch

from phenolens.profiling.explain import explain_anomalies
from phenolens.report.profiling import explanation_caption

NAMES = ["target", "driver", "bystander", "noise"]


def linear_model() -> torch.nn.Module:
    """Reconstructs the target as 2 x driver + 0.5 x bystander; every other output is 0."""
    model = torch.nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        model.weight.zero_()
        model.weight[0, 1], model.weight[0, 2] = 2.0, 0.5
    return model


@pytest.fixture(scope="module")
def background():
    return np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)


def explain(group, background):
    anomaly = np.tile([5.0, 1.0, 0.5, 0.2], (len(group), 1))  # the target is the worst-reconstructed feature
    (explanation,) = explain_anomalies(linear_model(), group, anomaly, background, NAMES, top_features=1, background_size=20, nsamples=100, seed=0)
    return explanation


def exact_oriented(group, background):
    weights = np.array([2.0, 0.5, 0.0])  # driver, bystander, noise
    phi = weights * (group[:, 1:] - background[:, 1:].mean(axis=0))
    reconstruction = group[:, 1:] @ weights
    expected = float((background[:, 1:] @ weights).mean())  # E[f] over the background, computed here, not taken from shap
    direction = np.sign(group[:, 0] - reconstruction)[:, None]
    return -direction * phi, reconstruction, expected


def test_an_input_that_alone_drives_the_error_gets_the_largest_positive_value(background):
    # the driver is shifted, the target is not: the model reconstructs 2 x 3 = 6 where 0 is observed
    group = np.array([[0.0, 3.0, 0.1, 0.3], [0.1, 2.5, -0.2, -0.4]], dtype=np.float32)
    explanation = explain(group, background)
    exact, reconstruction, expected = exact_oriented(group, background)
    assert explanation.feature == "target" and explanation.input_names == ["driver", "bystander", "noise"]
    assert np.allclose(explanation.shap_values, exact, atol=1e-4)
    assert (explanation.shap_values[:, 0] > 4.0).all() and list(explanation.ranking()) == [0, 1, 2]
    assert np.allclose(explanation.reconstruction, reconstruction, atol=1e-5) and explanation.expected_value == pytest.approx(expected, abs=1e-5)
    # additivity: the values sum to the change of |error| against the reconstruction from a control's inputs
    change = np.abs(group[:, 0] - reconstruction) - np.abs(group[:, 0] - expected)
    assert np.allclose(explanation.shap_values.sum(axis=1), change, atol=1e-4)
    assert np.allclose(explanation.error_change(), change, atol=1e-4)
    assert "pushed the reconstruction" in explanation_caption(explanation) and "away from the observed value" in explanation_caption(explanation)


def test_a_phenotype_shared_with_a_correlated_input_gives_negative_values(background):
    # target and driver both shifted (as tubulin features under a microtubule drug): the driver pulls the
    # reconstruction from ~0 toward the observed 10, to 6; the error left (4) is the target's own value
    group = np.array([[10.0, 3.0, 0.0, 0.0], [12.0, 3.5, 0.2, 0.1]], dtype=np.float32)
    explanation = explain(group, background)
    exact, reconstruction, expected = exact_oriented(group, background)
    assert np.allclose(explanation.shap_values, exact, atol=1e-4)
    assert explanation.shap_values[:, 0].max() < -4.0
    change = np.abs(group[:, 0] - reconstruction) - np.abs(group[:, 0] - expected)
    assert (change < 0).all() and np.allclose(explanation.shap_values.sum(axis=1), change, atol=1e-4)
    caption = explanation_caption(explanation)
    assert "toward the observed value" in caption and "the feature's own value" in caption
    assert f"observed {group[:, 0].mean():.2f}" in caption and f"{reconstruction.mean():.2f}" in caption
