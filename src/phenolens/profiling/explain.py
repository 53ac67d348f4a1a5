"""Why is a group of wells anomalous? Autoencoder-anomaly SHAP (Antwarg et al. 2021, Expert Syst Appl 186:115736).

For a group (a treatment, an MoA), take the features the autoencoder reconstructs worst; for each
one, Kernel SHAP (the `shap` library) attributes that feature's reconstruction to the other input
features, with the feature's own input deactivated (held at the control mean, 0 after
standardisation) and held-out test controls as the background. SHAP values are then oriented by
the sign of each well's error: positive means the input pushed the reconstruction away from the
observed value (it made the well look more anomalous), negative means it pulled it closer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from phenolens.core.errors import PhenolensError
from phenolens.core.seeding import numpy_rng
from phenolens.profiling.anomaly import single_torch_thread


@dataclass
class FeatureExplanation:
    """Oriented SHAP values for one explained (badly reconstructed) feature over a group of wells."""

    feature: str
    mean_abs_anomaly: float
    input_names: list[str]
    shap_values: np.ndarray  # (wells, inputs) oriented: > 0 increased the reconstruction error
    input_values: np.ndarray  # (wells, inputs) standardised input values
    expected_value: float  # mean reconstruction over the background

    def ranking(self) -> np.ndarray:
        """Input indices by decreasing mean |SHAP| over the group."""
        return np.argsort(-np.abs(self.shap_values).mean(axis=0), kind="stable")


def _reconstruct_one(model: torch.nn.Module, target: int, n_inputs: int):
    """f(inputs without `target`) -> reconstruction of `target`, with its own input set to 0."""

    @torch.no_grad()
    def predict(others: np.ndarray) -> np.ndarray:
        full = np.insert(np.asarray(others, dtype=np.float32), target, 0.0, axis=1)
        return model(torch.from_numpy(full)).numpy()[:, target].astype(np.float64)

    return predict


def explain_anomalies(
    model: torch.nn.Module,
    group_inputs: np.ndarray,
    group_anomaly: np.ndarray,
    background_inputs: np.ndarray,
    feature_names: list[str],
    top_features: int = 3,
    background_size: int = 20,
    nsamples: int | str = "auto",
    seed: int = 0,
) -> list[FeatureExplanation]:
    """Explain the `top_features` features with the largest mean |anomaly| over a group of wells.

    `group_inputs` / `background_inputs` are standardised autoencoder inputs (wells x features),
    `group_anomaly` the group's anomaly representation (same columns). A seeded random subset of
    `background_size` background wells is used. Kernel SHAP samples coalitions with numpy's global
    random state, which is therefore seeded here for reproducible values.
    """
    import shap

    if len(group_inputs) == 0:
        raise PhenolensError("the group to explain has no wells; check the group query")
    if len(background_inputs) < 2:
        raise PhenolensError("anomaly SHAP needs two or more held-out control wells as background")
    model.eval()
    background = background_inputs[numpy_rng(seed).permutation(len(background_inputs))[:background_size]]
    strength = np.abs(group_anomaly).mean(axis=0)
    explained = np.argsort(-strength, kind="stable")[:top_features]
    results = []
    for target in explained:
        others = np.delete(np.arange(group_inputs.shape[1]), target)
        predict = _reconstruct_one(model, int(target), group_inputs.shape[1])
        with single_torch_thread():
            explainer = shap.KernelExplainer(predict, background[:, others])
            np.random.seed(seed)
            values = np.asarray(explainer.shap_values(group_inputs[:, others], nsamples=nsamples, silent=True))
            reconstruction = predict(group_inputs[:, others])
        direction = np.sign(group_inputs[:, target] - reconstruction)[:, None]
        results.append(
            FeatureExplanation(
                feature=feature_names[target],
                mean_abs_anomaly=float(strength[target]),
                input_names=[feature_names[i] for i in others],
                shap_values=-direction * values,
                input_values=group_inputs[:, others].astype(np.float64),
                expected_value=float(np.asarray(explainer.expected_value).ravel()[0]),
            )
        )
    return results
