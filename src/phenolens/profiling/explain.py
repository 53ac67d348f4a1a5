"""Why is a group of wells anomalous? Autoencoder-anomaly SHAP (Antwarg et al. 2021, Expert Syst Appl 186:115736).

For a group (a treatment, an MoA), take the features the autoencoder reconstructs worst; for each
one, Kernel SHAP (the `shap` library) attributes that feature's reconstruction to the other input
features, with the feature's own input deactivated (held at the control mean, 0 after
standardisation) and held-out test controls as the background. SHAP values are then oriented by
the sign of each well's error: positive means the input pushed the reconstruction away from the
observed value (it made the well look more anomalous), negative means it pulled it closer.

By Kernel SHAP's additivity a well's oriented values sum to -sign(x - f(x)) * (f(x) - E[f]): how much
the other inputs moved the reconstruction away from the observed value, relative to the reconstruction
from a control's inputs. For a treatment whose phenotype shifts many correlated features together, the
correlates pull the reconstruction toward the extreme observed value (every value < 0, Antwarg's
"offsetting" features): the error is then the feature's own value, beyond what its correlates predict,
and the feature's own input is not a player. `FeatureExplanation.observed`, `reconstruction` and
`expected_value` carry the three numbers the report states beside the values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from phenolens.core.errors import PhenolensError
from phenolens.core.seeding import numpy_rng
from phenolens.data.query import select_rows
from phenolens.profiling.anomaly import single_torch_thread
from phenolens.profiling.normalize import TEST
from phenolens.profiling.settings import ProfileExplanationSettings


@dataclass
class FeatureExplanation:
    """Oriented SHAP values for one explained (badly reconstructed) feature over a group of wells.

    Attributes
    ----------
    feature : str
        The explained feature.
    mean_abs_anomaly : float
        Its mean |anomaly z| over the group.
    input_names : list of str
        The other input features.
    shap_values : numpy.ndarray
        (wells, inputs), oriented: > 0 increased the reconstruction error.
    input_values : numpy.ndarray
        (wells, inputs) standardised input values.
    expected_value : float
        Mean reconstruction over the background.
    observed : numpy.ndarray
        (wells,) standardised observed value of the explained feature.
    reconstruction : numpy.ndarray
        (wells,) its reconstruction from the other inputs (its own input deactivated): the explained f(x).
    """

    feature: str
    mean_abs_anomaly: float
    input_names: list[str]
    shap_values: np.ndarray  # (wells, inputs) oriented: > 0 increased the reconstruction error
    input_values: np.ndarray  # (wells, inputs) standardised input values
    expected_value: float  # mean reconstruction over the background
    observed: np.ndarray  # (wells,) standardised observed value of the explained feature
    reconstruction: np.ndarray  # (wells,) f(x), the explained reconstruction

    def error_change(self) -> np.ndarray:
        """Per well, the sum of the oriented SHAP values: > 0 when the other inputs moved the reconstruction
        away from the observed value (relative to a control's inputs), < 0 when they pulled it toward it.

        Returns
        -------
        numpy.ndarray
            (wells,) -sign(observed - f(x)) * (f(x) - E[f]), what the values add up to.
        """
        return -np.sign(self.observed - self.reconstruction) * (self.reconstruction - self.expected_value)

    def ranking(self) -> np.ndarray:
        """Input indices by decreasing mean |SHAP| over the group.

        Returns
        -------
        numpy.ndarray
            Indices into `input_names`.
        """
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

    Parameters
    ----------
    model : torch.nn.Module
        The trained profile autoencoder.
    group_inputs, group_anomaly, background_inputs : numpy.ndarray
        See above.
    feature_names : list of str
        Names of the autoencoder's inputs.
    top_features : int
        How many features to explain.
    background_size : int
        Background wells used.
    nsamples : int or "auto"
        Kernel SHAP coalition samples per well.
    seed : int
        Seed of the background draw and of Kernel SHAP.

    Returns
    -------
    list of FeatureExplanation
        One per explained feature, strongest first.

    Raises
    ------
    PhenolensError
        When the group is empty or fewer than two background wells are given.
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
        observed = group_inputs[:, target].astype(np.float64)
        direction = np.sign(observed - reconstruction)[:, None]
        results.append(
            FeatureExplanation(
                feature=feature_names[target],
                mean_abs_anomaly=float(strength[target]),
                input_names=[feature_names[i] for i in others],
                shap_values=-direction * values,
                input_values=group_inputs[:, others].astype(np.float64),
                expected_value=float(np.asarray(explainer.expected_value).ravel()[0]),
                observed=observed,
                reconstruction=reconstruction,
            )
        )
    return results


def explanations_table(explanations: list[FeatureExplanation], group: str) -> pd.DataFrame:
    """Long table of anomaly SHAP: one row per (explained feature, well, input).

    Parameters
    ----------
    explanations : list of FeatureExplanation
        From `explain_anomalies`.
    group : str
        The explained group (a treatment or a row query), repeated on every row.

    Returns
    -------
    pandas.DataFrame
        Columns group, explained_feature, well, input_feature, shap_value (oriented) and input_value.
    """
    parts = []
    for explanation in explanations:
        wells, inputs = explanation.shap_values.shape
        parts.append(
            pd.DataFrame(
                {
                    "group": group,
                    "explained_feature": explanation.feature,
                    "well": np.repeat(np.arange(wells), inputs),
                    "input_feature": np.tile(explanation.input_names, wells),
                    "shap_value": explanation.shap_values.ravel(),
                    "input_value": explanation.input_values.ravel(),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


@dataclass
class GroupExplanation:
    """Anomaly SHAP of a group of wells of a finished run (`explain_group`).

    Attributes
    ----------
    explanations : list of FeatureExplanation
        One per explained feature.
    wells : int
        Wells in the group.
    background : int
        Held-out control wells used as the SHAP background.
    summary : dict
        metrics.json of `profile explain`.
    """

    explanations: list[FeatureExplanation]
    wells: int
    background: int
    summary: dict


def explain_group(run_path: Path, settings: ProfileExplanationSettings) -> GroupExplanation:
    """Autoencoder-anomaly SHAP for the wells of a finished `profile run` that `settings.group` selects.

    Parameters
    ----------
    run_path : Path
        The run folder (read with `load_run`: run.json, model/, profiles.parquet).
    settings : ProfileExplanationSettings
        The group query, how many features, Kernel SHAP's budget and seed.

    Returns
    -------
    GroupExplanation
        The explanations and the summary metrics.

    Raises
    ------
    PhenolensError
        When the folder is not a finished `profile run`, its files are damaged, or the group matches no well.
    """
    from phenolens.core.runs import load_run
    from phenolens.nn.weights import load_model
    from phenolens.profiling.anomaly import ROLE_COLUMN
    from phenolens.profiling.settings import ProfilingSettings

    if not settings.group:
        raise PhenolensError("give --group, the row query selecting the wells to explain, e.g. \"Metadata_MoA == 'Eg5 inhibitors'\"")
    if not (Path(run_path) / "run.json").is_file():
        raise PhenolensError(
            f"{run_path}: not a finished `phenolens profile run` folder (no run.json); give the --out folder of `phenolens profile run`"
        )
    run = load_run(run_path)
    if run.command != "profile run":
        raise PhenolensError(f"{run_path}: written by `phenolens {run.command}`, not `phenolens profile run`; give a profile run's --out folder")
    columns = run.setting(ProfilingSettings)
    model, card = load_model(run.path / "model", expected_architecture="profile_autoencoder")
    table = run.table("profiles.parquet")
    names = card.channel_names
    wanted = [f"cellprofiler__{n}" for n in names] + [f"anomaly__{n}" for n in names] + [ROLE_COLUMN]
    missing = [c for c in wanted if c not in table.columns]
    if missing:
        raise PhenolensError(f"{run.path / 'profiles.parquet'}: column {missing[0]!r} of the model is missing; re-run `phenolens profile run`")
    inputs = table[[f"cellprofiler__{n}" for n in names]].to_numpy(dtype=np.float32)
    anomaly = table[[f"anomaly__{n}" for n in names]].to_numpy(dtype=np.float64)
    if not (np.isfinite(inputs).all() and np.isfinite(anomaly).all()):
        raise PhenolensError(f"{run.path / 'profiles.parquet'}: non-finite values; the file is damaged, re-run `phenolens profile run`")
    members = select_rows(table, settings.group, str(run.path / "profiles.parquet"), "--group")
    if not members.any():
        raise PhenolensError(f"{run.path / 'profiles.parquet'}: the group query {settings.group!r} matches no well")
    background = (table[ROLE_COLUMN] == TEST).to_numpy()
    explanations = explain_anomalies(
        model,
        inputs[members],
        anomaly[members],
        inputs[background],
        names,
        settings.features,
        settings.background_size,
        settings.nsamples,
        settings.seed,
    )
    summary = {
        "group": settings.group,
        "wells": int(members.sum()),
        "columns": columns.column_fields(),
        "explained": [
            {"feature": e.feature, "mean_abs_anomaly": e.mean_abs_anomaly, "top_inputs": [e.input_names[i] for i in e.ranking()[:5]]}
            for e in explanations
        ],
    }
    return GroupExplanation(explanations, int(members.sum()), min(settings.background_size, int(background.sum())), summary)
