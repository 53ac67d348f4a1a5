"""AnomalyProfiler: controls only, reproducible, saved and reloaded; anomaly SHAP against shap's own guarantees."""

import numpy as np
import pytest
import torch

from phenolens.core.errors import PhenolensError
from phenolens.nn.weights import load_model, save_model
from phenolens.profiling.anomaly import ROLE_COLUMN, AnomalyProfiler
from phenolens.profiling.explain import explain_anomalies
from phenolens.profiling.settings import ProfilingSettings
from phenolens.profiling.synthetic import synthetic_screen

SMALL = {"max_epochs": 8, "patience": 5, "hidden": (32, 16, 8), "latent": 4, "batch": "Metadata_Batch", "controls": "Metadata_PertType == 'control'"}


def small(**changes):
    return AnomalyProfiler(ProfilingSettings(**{**SMALL, **changes}))


@pytest.fixture(scope="module")
def screen():
    return synthetic_screen(plates=4, controls_per_plate=10, replicates=2, features=20, seed=0)


@pytest.fixture(scope="module")
def fitted(screen):
    profiler = small(seed=0)
    return profiler, profiler.fit_transform(screen)


def test_representations_have_metadata_roles_and_selected_features(screen, fitted):
    profiler, representations = fitted
    assert set(representations) == {"cellprofiler", "anomaly"}
    for frame in representations.values():
        assert len(frame) == len(screen)
        assert list(frame.columns[-len(profiler.selected_features_) :]) == profiler.selected_features_
    roles = representations["anomaly"][ROLE_COLUMN]
    assert roles[screen["Metadata_PertType"] == "trt"].eq("").all()
    assert roles.value_counts()[["train", "validation", "test"]].tolist() == [16, 4, 20]
    assert 0 < len(profiler.selected_features_) <= 20
    test_controls = representations["anomaly"].loc[roles == "test", profiler.selected_features_]
    treated = representations["anomaly"].loc[roles == "", profiler.selected_features_]
    assert abs(test_controls.to_numpy().mean()) < 0.5  # z-scored against (leave-one-out) test controls
    assert (treated**2).to_numpy().mean() > 2 * (test_controls**2).to_numpy().mean()


def test_treated_wells_never_fit_anything(screen, fitted):
    profiler, representations = fitted
    changed = screen.copy()
    treated = changed["Metadata_PertType"] == "trt"
    changed.loc[treated, profiler.selected_features_] *= 10.0
    other = small(seed=0)
    other.fit(changed)
    assert other.selected_features_ == profiler.selected_features_
    for a, b in zip(other.model_.state_dict().values(), profiler.model_.state_dict().values()):
        assert torch.equal(a, b)


def test_same_seed_same_numbers_other_seed_other_split(screen, fitted):
    profiler, representations = fitted
    again = small(seed=0).fit_transform(screen)
    assert again["anomaly"].equals(representations["anomaly"])
    other = small(seed=1).fit(screen)
    assert not np.array_equal(other.roles_, profiler.roles_)


def test_transform_applies_fitted_statistics_and_rejects_unknown_plates(screen, fitted):
    profiler, representations = fitted
    transformed = profiler.transform(screen)
    treated = (screen["Metadata_PertType"] == "trt").to_numpy()
    features = profiler.selected_features_
    assert np.allclose(transformed["anomaly"].loc[treated, features], representations["anomaly"].loc[treated, features])
    unknown = screen.assign(Metadata_Plate="P999")
    with pytest.raises(PhenolensError, match="P999"):
        profiler.transform(unknown)
    with pytest.raises(PhenolensError, match="not fitted"):
        AnomalyProfiler().transform(screen)


def test_weights_round_trip(tmp_path, fitted):
    profiler, representations = fitted
    save_model(profiler.model_, tmp_path / "model", profiler.model_card())
    model, card = load_model(tmp_path / "model", expected_architecture="profile_autoencoder")
    inputs = torch.from_numpy(profiler.standardized_inputs(representations["cellprofiler"]))
    with torch.no_grad():
        assert torch.allclose(model(inputs), profiler.model_(inputs))
    assert card.channel_names == profiler.selected_features_
    assert set(card.normalization["input_center_by_plate"]) == {"P000", "P001", "P002", "P003"}


def test_search_trials_are_scored_on_validation_controls(screen):
    profiler = small(max_epochs=3, search_trials=2, seed=0).fit(screen)
    assert len(profiler.search_) == 3
    assert profiler.search_["validation_mse"].min() == pytest.approx(min(profiler.history_.column("val_loss")))


def test_max_train_controls_marks_the_rest_unused(screen):
    profiler = small(max_train_controls=6, seed=0).fit(screen)
    assert (profiler.roles_ == "train").sum() == 6 and (profiler.roles_ == "unused").sum() == 10


def test_anomaly_shap_is_oriented_and_locally_accurate(fitted):
    profiler, representations = fitted
    cellprofiler, anomaly = representations["cellprofiler"], representations["anomaly"]
    group = (cellprofiler["Metadata_Treatment"] == "cpd0@2").to_numpy()
    background = (cellprofiler[ROLE_COLUMN] == "test").to_numpy()
    inputs = profiler.standardized_inputs(cellprofiler)
    explanations = explain_anomalies(
        profiler.model_, inputs[group], anomaly.loc[group, profiler.selected_features_].to_numpy(), inputs[background], profiler.selected_features_,
        top_features=2, background_size=8, nsamples=300, seed=0,
    )  # fmt: skip
    strength = np.abs(anomaly.loc[group, profiler.selected_features_].to_numpy()).mean(axis=0)
    assert [e.feature for e in explanations] == [profiler.selected_features_[i] for i in np.argsort(-strength)[:2]]
    for explanation in explanations:
        target = profiler.selected_features_.index(explanation.feature)
        assert explanation.feature not in explanation.input_names
        deactivated = inputs[group].copy()
        deactivated[:, target] = 0.0
        with torch.no_grad():
            reconstruction = profiler.model_(torch.from_numpy(deactivated)).numpy()[:, target]
        direction = np.sign(inputs[group][:, target] - reconstruction)
        # Kernel SHAP's efficiency: values sum to f(x) - E[f(background)], here oriented by the error's sign
        assert np.allclose(explanation.shap_values.sum(axis=1), -direction * (reconstruction - explanation.expected_value), atol=1e-4)
