"""tvn's optional steps (plate MAD scaling, Yeo-Johnson, control PCs removed, batch-ICC weights), batch-ICC feature
removal and the MODZ / median consensus profiles: known answers."""

import numpy as np
import pandas as pd
import pytest

from phenolens.core.errors import PhenolensError
from phenolens.profiling.moa import treatment_profiles
from phenolens.profiling.settings import ProfilingSettings
from phenolens.profiling.sphering import TypicalVariationNormalizer, batch_icc, batch_icc_weights


def study(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Three batches of two plates, 20 controls and 10 treated wells per plate, 3 features.

    Feature 0 is batch-only: every well of a batch (controls and treated alike) is shifted by the batch's offset.
    Feature 1 carries the biology: treated wells sit at +3 (half of them) or -3. Feature 2 is noise.
    """
    rng = np.random.default_rng(seed)
    values, batches, plates, controls = [], [], [], []
    for b, offset in enumerate((-4.0, 0.0, 4.0)):
        for p in range(2):
            for i in range(30):
                control = i < 20
                row = rng.normal(0, 1, 3)
                row[0] += offset
                if not control:
                    row[1] += 3.0 if i % 2 else -3.0
                values.append(row), batches.append(f"w{b}"), plates.append(f"w{b}p{p}"), controls.append(control)
    return np.array(values), np.array(batches), np.array(plates), np.array(controls)


def test_batch_icc_known_answers():
    # two batches of two rows: batch means 0 and 2, within variance 1 -> MSB = 2 * 2 = 4, MSW = 1, n0 = 2
    values = np.array([[-1.0, 5.0], [1.0, 5.0], [1.0, 5.0], [3.0, 5.0]])
    icc = batch_icc(values, ["a", "a", "b", "b"])
    assert icc[0] == pytest.approx((4 - 2) / (4 + 2))  # MSW = (1 + 1 + 1 + 1) / 2 = 2: (4 - 2) / (4 + (2 - 1) * 2)
    assert icc[1] == 0.0  # no variance
    np.testing.assert_array_equal(batch_icc(values, ["a"] * 4), [0.0, 0.0])


def test_a_planted_batch_only_feature_is_dropped_and_the_biology_kept():
    from phenolens.profiling.anomaly import AnomalyProfiler
    from phenolens.profiling.synthetic import synthetic_screen

    screen = synthetic_screen(plates=6, controls_per_plate=20, replicates=2, features=12, batches=3, seed=0)
    batch_code = screen["Metadata_Batch"].astype("category").cat.codes.to_numpy()
    rng = np.random.default_rng(0)
    screen["Cells_BatchOnly"] = 4.0 * batch_code + rng.normal(0, 1, len(screen))  # every well of a batch shifted, nothing else
    settings = ProfilingSettings(controls="Metadata_PertType == 'control'", batch="Metadata_Batch", max_epochs=2, hidden=(16, 8), latent=4)
    controls = (screen["Metadata_PertType"] == "control").to_numpy()
    features = [c for c in screen.columns if c.startswith("Cells_")]
    icc = pd.Series(batch_icc(screen.loc[controls, features].to_numpy(), screen.loc[controls, "Metadata_Batch"]), index=features)
    assert icc["Cells_BatchOnly"] > 0.8 and icc.drop("Cells_BatchOnly").max() < 0.3  # the synthetic features' plate effects stay low
    kept = AnomalyProfiler(settings.replace(corr_threshold=1.0)).fit(screen)
    assert kept.batch_dominated_features_ == [] and "Cells_BatchOnly" in kept.selected_features_
    dropped = AnomalyProfiler(settings.replace(corr_threshold=1.0, batch_icc_max=0.5)).fit(screen)
    assert dropped.batch_dominated_features_ == ["Cells_BatchOnly"]
    assert dropped.selected_features_ == [f for f in kept.selected_features_ if f != "Cells_BatchOnly"]  # the biology features all kept
    with pytest.raises(PhenolensError, match="batch ICC above"):
        AnomalyProfiler(settings.replace(batch_icc_max=1e-9)).fit(screen.assign(**{f: screen[f] + 9 * batch_code for f in features}))


def test_batch_icc_weights_soften_a_planted_batch_only_feature_after_tvn():
    from phenolens.profiling.anomaly import AnomalyProfiler
    from phenolens.profiling.synthetic import synthetic_screen

    screen = synthetic_screen(plates=6, controls_per_plate=20, replicates=2, features=12, batches=3, seed=0)
    batch_code = screen["Metadata_Batch"].astype("category").cat.codes.to_numpy()
    screen["Cells_BatchOnly"] = 4.0 * batch_code + np.random.default_rng(0).normal(0, 1, len(screen))
    settings = ProfilingSettings(
        controls="Metadata_PertType == 'control'", batch="Metadata_Batch", max_epochs=2, hidden=(16, 8), latent=4, corr_threshold=1.0
    )
    tvn = settings.replace(sphering="tvn", sphering_controls="all", sphering_epsilon=1.0)
    plain = AnomalyProfiler(tvn)
    unweighted = plain.fit_transform(screen)["cellprofiler_sphered"]
    weighted_profiler = AnomalyProfiler(tvn.replace(sphering_batch_icc_weight=2.0))
    weighted = weighted_profiler.fit_transform(screen)["cellprofiler_sphered"]
    features = weighted_profiler.selected_features_
    icc = weighted_profiler.feature_batch_icc_[features]
    weights = (1 - icc.clip(0, 1)) ** 2
    assert weights["Cells_BatchOnly"] < 0.05 and weights.drop("Cells_BatchOnly").min() > 0.5  # ICC > 0.8 against < 0.3
    np.testing.assert_allclose(weighted[features].to_numpy(), unweighted[features].to_numpy() * weights.to_numpy(), atol=1e-9)
    np.testing.assert_allclose(batch_icc_weights(np.array([-0.2, 0.0, 0.75, 1.3]), 0.5), [1.0, 1.0, 0.5, 0.0])
    values, batches, _, controls = study()
    with pytest.raises(PhenolensError, match="3 finite numbers >= 0"):
        TypicalVariationNormalizer("ZCA", 0.0, 0.5, feature_weights=np.array([1.0, -1.0, 1.0])).fit(values[controls], batches[controls])


def test_plate_scaling_undoes_a_plate_gain():
    values, batches, plates, controls = study()
    stretched = values.copy()
    rows = plates == "w1p0"
    stretched[rows] = 7.0 + 5.0 * (values[rows] - 7.0)  # a gain of 5 about an arbitrary point

    def normalised(x: np.ndarray, scaling: bool) -> np.ndarray:
        tvn = TypicalVariationNormalizer("ZCA", 0.0, 0.5, plate_scaling=scaling).fit(x[controls], batches[controls], plates[controls])
        return tvn.transform(x, batches, plates)

    np.testing.assert_allclose(normalised(stretched, True), normalised(values, True), atol=1e-9)
    assert not np.allclose(normalised(stretched, False), normalised(values, False), atol=1e-3)  # centring alone keeps the gain


def test_yeo_johnson_is_the_power_transform_fitted_on_the_controls():
    from sklearn.preprocessing import PowerTransformer

    values, batches, _, controls = study()
    skewed = np.exp(values / 3)  # log-normal features
    power = PowerTransformer(method="yeo-johnson", standardize=False).fit(skewed[controls])
    want = TypicalVariationNormalizer("ZCA", 0.0, 0.5).fit(power.transform(skewed[controls]), batches[controls])
    got = TypicalVariationNormalizer("ZCA", 0.0, 0.5, yeo_johnson=True).fit(skewed[controls], batches[controls])
    np.testing.assert_allclose(got.transform(skewed, batches), want.transform(power.transform(skewed), batches), atol=1e-9)


def test_control_principal_directions_are_projected_out():
    rng = np.random.default_rng(1)
    direction = np.array([1.0, 1.0, 0.0, 0.0]) / np.sqrt(2)
    values = rng.normal(0, 0.1, (200, 4)) + rng.normal(0, 5, (200, 1)) * direction  # controls vary mostly along `direction`
    batches = np.repeat(["w1", "w2"], 100)
    # a large epsilon shrinks the small directions, so the planted one stays the largest after sphering
    tvn = TypicalVariationNormalizer("ZCA", 10.0, 1.0, nuisance_components=1).fit(values, batches)
    assert abs(tvn.nuisance_[0] @ direction) > 0.99
    result = tvn.transform(values, batches)
    np.testing.assert_allclose(result @ tvn.nuisance_.T, 0, atol=1e-9)
    plain = TypicalVariationNormalizer("ZCA", 10.0, 1.0).fit(values, batches).transform(values, batches)
    np.testing.assert_allclose(result, plain - np.outer(plain @ tvn.nuisance_[0], tvn.nuisance_[0]), atol=1e-9)
    with pytest.raises(PhenolensError, match="5 nuisance components asked for"):
        TypicalVariationNormalizer("ZCA", 10.0, 1.0, nuisance_components=5).fit(values, batches)


def test_tvn_steps_are_refused_without_tvn():
    with pytest.raises(PhenolensError, match="sphering_nuisance_components.*applies to --sphering tvn only"):
        ProfilingSettings(sphering="global", sphering_nuisance_components=2)
    with pytest.raises(PhenolensError, match="sphering_batch_icc_weight.*applies to --sphering tvn only"):
        ProfilingSettings(sphering="none", sphering_batch_icc_weight=1.0)
    with pytest.raises(PhenolensError, match="batch_icc_max.*needs a batch column"):
        ProfilingSettings(batch=None, batch_icc_max=0.5).check_batch_column()
    settings = ProfilingSettings(sphering="tvn", batch="b", sphering_yeo_johnson=True, sphering_plate_scaling=True)
    assert settings.unsphered().sphering == "none" and not settings.unsphered().sphering_yeo_johnson


@pytest.mark.filterwarnings("ignore::FutureWarning")  # inside pycytominer
def test_modz_equals_pycytominer_and_median_is_the_median():
    from pycytominer import consensus

    rng = np.random.default_rng(0)
    values = rng.normal(size=(10, 6))
    values[3] = -values[4] + rng.normal(0, 0.1, 6)  # an anti-correlated replicate: its weight is clipped to 0.01
    treatments = np.array(list("aaabbbbccd"))
    frame = pd.DataFrame(values, columns=[f"Cells_f{i}" for i in range(6)]).assign(Metadata_treatment=treatments)
    features = list(frame.columns[:6])
    want = consensus(frame, replicate_columns=["Metadata_treatment"], operation="modz", features=features).set_index("Metadata_treatment")
    got = treatment_profiles(values, treatments, "modz")
    np.testing.assert_allclose(got.to_numpy(), want.loc[got.index, features].to_numpy(), atol=1e-12)
    assert not np.allclose(got.loc["b"], values[3:7].mean(axis=0))  # weighted, not the mean
    np.testing.assert_allclose(got.loc["d"], values[9])  # one replicate: itself
    np.testing.assert_allclose(treatment_profiles(values, treatments, "median").loc["b"], np.median(values[3:7], axis=0))
    np.testing.assert_allclose(treatment_profiles(values, treatments).loc["a"], values[:3].mean(axis=0))
    with pytest.raises(PhenolensError, match="consensus 'trimmed' is unknown"):
        treatment_profiles(values, treatments, "trimmed")
