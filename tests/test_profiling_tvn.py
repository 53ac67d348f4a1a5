"""Typical variation normalisation (global sphering + per-batch CORAL) and the field's NSCB: known answers."""

import numpy as np
import pandas as pd
import pytest

from phenolens.core.errors import PhenolensError
from phenolens.profiling.moa import nearest_neighbor_moa
from phenolens.profiling.nested import nested_neighbor_accuracy
from phenolens.profiling.settings import ProfilingSettings
from phenolens.profiling.sphering import Spherer, TypicalVariationNormalizer, fit_spherers, sphere, sphered

# Two batches, two plates each. Batch w1 stretches feature 1 by 3, batch w2 stretches feature 0 by 3 (controls and
# treated wells alike: the planted batch effect); every plate adds its own offset. Three MoAs, each with one compound
# per batch: X = (1, 1), Y = (1, 0), Z = (0, 1). Stretched, X of one batch looks like Z or Y of the other.
STRETCH = {"w1": np.diag([1.0, 3.0]), "w2": np.diag([3.0, 1.0])}
PLATES = {"p1": ("w1", [5.0, -2.0]), "p2": ("w1", [-1.0, 4.0]), "p3": ("w2", [2.0, 2.0]), "p4": ("w2", [-3.0, 0.5])}
MOAS = {"X": [1.0, 1.0], "Y": [1.0, 0.0], "Z": [0.0, 1.0]}


def planted_study(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for plate, (batch, offset) in PLATES.items():
        for _ in range(60):  # controls: isotropic before the batch's stretch
            rows.append((plate, batch, "control", None, None, rng.normal(0, 0.3, 2) @ STRETCH[batch] + offset))
        for moa, direction in MOAS.items():
            for _ in range(2):  # two replicate wells per plate of the batch's compound of this MoA
                value = (4 * np.array(direction) + rng.normal(0, 0.05, 2)) @ STRETCH[batch] + offset
                rows.append((plate, batch, "trt", moa, f"{moa}-{batch}", value))
    frame = pd.DataFrame(rows, columns=["plate", "batch", "kind", "moa", "compound", "value"])
    values = np.stack(frame.pop("value").to_numpy())
    frame["f0"], frame["f1"] = values[:, 0], values[:, 1]
    return frame


def nscb(frame: pd.DataFrame, values: np.ndarray) -> float:
    treated = (frame["kind"] == "trt").to_numpy()
    profiles = pd.DataFrame(values[treated]).groupby(frame.loc[treated, "compound"].to_numpy()).mean()
    meta = frame[treated].groupby("compound")[["moa", "batch"]].first()
    return nearest_neighbor_moa(profiles, meta["moa"], pd.Series(profiles.index, index=profiles.index), meta["batch"], similarity="cosine").accuracy


def fitted_tvn(frame: pd.DataFrame, shrinkage: float, plates: bool = True) -> tuple[TypicalVariationNormalizer, np.ndarray]:
    controls = (frame["kind"] == "control").to_numpy()
    values = frame[["f0", "f1"]].to_numpy()
    tvn = TypicalVariationNormalizer("ZCA", 0.0, shrinkage).fit(
        values[controls], frame.loc[controls, "batch"], frame.loc[controls, "plate"] if plates else None
    )
    return tvn, tvn.transform(values, frame["batch"], frame["plate"] if plates else None)


def test_tvn_removes_a_planted_batch_stretch_and_keeps_the_moas():
    frame = planted_study()
    plate_centred = frame[["f0", "f1"]].to_numpy().copy()
    for plate in PLATES:
        rows = (frame["plate"] == plate).to_numpy()
        plate_centred[rows] -= np.median(plate_centred[rows & (frame["kind"] == "control").to_numpy()], axis=0)
    assert nscb(frame, plate_centred) == pytest.approx(2 / 3)  # the stretch sends X-w1 to Z-w2 and X-w2 to Y-w1
    _, corrected = fitted_tvn(frame, shrinkage=1e-6)
    assert nscb(frame, corrected) == 1.0
    # global sphering alone cannot undo opposite stretches
    controls = (frame["kind"] == "control").to_numpy()
    globally = Spherer("ZCA", 0.0).fit(plate_centred[controls]).transform(plate_centred)
    assert nscb(frame, globally) == pytest.approx(2 / 3)


def test_tvn_gives_every_batch_the_global_control_covariance():
    frame = planted_study()
    controls = (frame["kind"] == "control").to_numpy()
    _, corrected = fitted_tvn(frame, shrinkage=1e-9)
    # the global step whitens to unit sample covariance (n - 1), so the population covariance of all controls is (n - 1) / n
    n = controls.sum()
    for batch in STRETCH:
        rows = controls & (frame["batch"] == batch).to_numpy()
        np.testing.assert_allclose(np.cov(corrected[rows], rowvar=False, bias=True), np.eye(2) * (n - 1) / n, atol=1e-6)
        np.testing.assert_allclose(corrected[rows].mean(axis=0), 0, atol=1e-9)


def test_shrinkage_one_is_global_sphering_with_batches_centred():
    frame = planted_study()
    controls = (frame["kind"] == "control").to_numpy()
    values = frame[["f0", "f1"]].to_numpy()
    tvn, corrected = fitted_tvn(frame, shrinkage=1.0, plates=False)
    globally = Spherer("ZCA", 0.0).fit(values[controls]).transform(values)
    for batch in STRETCH:
        rows = (frame["batch"] == batch).to_numpy()
        np.testing.assert_allclose(corrected[rows], globally[rows] - globally[rows & controls].mean(axis=0), atol=1e-9)


def test_plate_offsets_are_removed_exactly():
    frame = planted_study()
    shifted = frame.copy()
    shifted.loc[shifted["plate"] == "p2", ["f0", "f1"]] += [100.0, -50.0]
    np.testing.assert_allclose(fitted_tvn(shifted, 0.5)[1], fitted_tvn(frame, 0.5)[1], atol=1e-8)


def test_tvn_through_the_settings_and_its_errors():
    frame = planted_study()
    settings = ProfilingSettings(controls="kind == 'control'", plate="plate", batch="batch", sphering="tvn", sphering_method="ZCA")
    settings = settings.replace(sphering_epsilon=0.0, sphering_shrinkage=0.5)
    controls, batches, plates = (frame["kind"] == "control").to_numpy(), frame["batch"].to_numpy(), frame["plate"].to_numpy()
    spherers = fit_spherers({"r": frame}, ["f0", "f1"], controls, batches, settings, plates)
    result = sphered({"r": frame}, spherers, ["f0", "f1"], batches, plates)["r_sphered"]
    np.testing.assert_allclose(result[["f0", "f1"]].to_numpy(), fitted_tvn(frame, 0.5)[1], atol=1e-12)
    with pytest.raises(PhenolensError, match="fitted with plate centring"):
        spherers["r"].transform(frame[["f0", "f1"]].to_numpy(), batches)
    with pytest.raises(PhenolensError, match="batch 'w9' had no control wells"):
        spherers["r"].transform(frame[["f0", "f1"]].to_numpy()[:1], ["w9"], ["p1"])
    with pytest.raises(PhenolensError, match="at least 2 control wells of batch 'w2'"):
        TypicalVariationNormalizer("ZCA", 1.0, 0.5).fit(np.random.default_rng(0).normal(size=(5, 2)), ["w1"] * 4 + ["w2"])
    with pytest.raises(PhenolensError, match="sphering_shrinkage"):
        settings.replace(sphering_shrinkage=0.0)
    with pytest.raises(PhenolensError, match="'tvn' needs a batch column"):
        ProfilingSettings(sphering="tvn", batch=None).check_batch_column()


def field_nscb_case():
    # D is the only treatment of MoA W (and B of Y), which therefore cannot be scored under NSCB; D is A's nearest
    # other-batch treatment. The field's NSCB (Caicedo et al. 2018) drops W and Y altogether, so A then matches C (MoA X).
    profiles = pd.DataFrame([[1.0, 0.0, 0.1], [0.0, 1.0, 0.0], [0.6, 0.0, 0.9], [0.95, 0.05, 0.2]], index=["A", "B", "C", "D"])
    moa = pd.Series({"A": "X", "B": "Y", "C": "X", "D": "W"})
    compound = pd.Series({"A": "a", "B": "b", "C": "c", "D": "d"})
    batch = pd.Series({"A": "w1", "B": "w2", "C": "w2", "D": "w2"})
    return profiles, moa, compound, batch


def test_field_nscb_drops_unscorable_moas_from_the_neighbours():
    profiles, moa, compound, batch = field_nscb_case()
    old = nearest_neighbor_moa(profiles, moa, compound, batch, similarity="cosine")
    assert old.predictions.loc["A", "neighbor"] == "D" and old.evaluated == 2 and old.unevaluable_moas == ["W", "Y"]
    field = nearest_neighbor_moa(profiles, moa, compound, batch, similarity="cosine", drop_unevaluable_moas=True)
    assert field.predictions.loc["A", "neighbor"] == "C" and list(field.predictions.index) == ["A", "C"] and field.evaluated == 2
    assert (old.accuracy, field.accuracy) == (0.5, 1.0)  # C's only eligible neighbour is A either way: right
    nested = nested_neighbor_accuracy({"only": profiles}, moa, compound, batch, similarity="cosine", drop_unevaluable_moas=True)
    assert nested.accuracy == field.accuracy and list(nested.predictions.index) == ["A", "C"]


def test_cosine_and_pearson_differ_where_a_row_mean_matters():
    profiles = pd.DataFrame([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0], [1.0, 1.9, 3.2]], index=["q", "pearson_twin", "cosine_twin"])
    moa = pd.Series({"q": "X", "pearson_twin": "X", "cosine_twin": "Y"})
    compound = pd.Series({"q": "a", "pearson_twin": "b", "cosine_twin": "c"})
    assert nearest_neighbor_moa(profiles, moa, compound).predictions.loc["q", "neighbor"] == "pearson_twin"
    assert nearest_neighbor_moa(profiles, moa, compound, similarity="cosine").predictions.loc["q", "neighbor"] == "cosine_twin"
    with pytest.raises(PhenolensError, match="similarity 'euclid' is unknown"):
        nearest_neighbor_moa(profiles, moa, compound, similarity="euclid")


def test_nested_map_criterion_known_answers():
    from phenolens.profiling.nested import _mean_average_precision

    similarity = np.array([[[0.9, 0.5, 0.1, -np.inf]]])
    positives = np.array([[False, True, True, True]])  # hits at ranks 2 and 3; the excluded (-inf) reference is no hit
    assert _mean_average_precision(similarity, positives & np.isfinite(similarity[0]), np.array([True]))[0] == pytest.approx((1 / 2 + 2 / 3) / 2)
    profiles, moa, compound, batch = field_nscb_case()
    for criterion in ("accuracy", "map"):
        one = nested_neighbor_accuracy({"only": profiles}, moa, compound, batch, similarity="cosine", drop_unevaluable_moas=True, criterion=criterion)
        assert one.accuracy == 1.0
    with pytest.raises(PhenolensError, match="criterion 'f1' is unknown"):
        nested_neighbor_accuracy({"only": profiles}, moa, compound, criterion="f1")


def test_the_profiler_applies_tvn_and_transform_repeats_it():
    from phenolens.profiling.anomaly import AnomalyProfiler
    from phenolens.profiling.synthetic import synthetic_screen

    screen = synthetic_screen(plates=6, controls_per_plate=20, replicates=2, features=12, batches=3, seed=0)
    settings = ProfilingSettings(controls="Metadata_PertType == 'control'", batch="Metadata_Batch", max_epochs=2, hidden=(16, 8), latent=4)
    profiler = AnomalyProfiler(settings.replace(sphering="tvn", sphering_controls="all", sphering_shrinkage=0.3))
    representations = profiler.fit_transform(screen)
    assert list(representations) == ["cellprofiler", "anomaly", "cellprofiler_sphered", "anomaly_sphered"]
    features = profiler.selected_features_
    controls = (screen["Metadata_PertType"] == "control").to_numpy()
    batches, plates = screen["Metadata_Batch"].astype(str).to_numpy()[controls], screen["Metadata_Plate"].astype(str).to_numpy()[controls]
    # the fitted sphering centres every batch's controls (fit_transform spheres the held-out ones out of sample, so apply it in-sample)
    sphered_controls = sphere(profiler.spherers_["cellprofiler"], representations["cellprofiler"].loc[controls, features].to_numpy(), batches, plates)
    assert np.abs(pd.DataFrame(sphered_controls).groupby(batches).mean().to_numpy()).max() < 1e-9
    assert set(profiler.spherers_["cellprofiler"].plate_centres_) == set(screen["Metadata_Plate"].astype(str))
    again, treated = profiler.transform(screen), (screen["Metadata_PertType"] == "trt").to_numpy()  # controls: leave-one-out in the fit
    np.testing.assert_allclose(again["cellprofiler_sphered"].loc[treated, features], representations["cellprofiler_sphered"].loc[treated, features])


@pytest.mark.parametrize("sphering", ["global", "tvn"])
def test_held_out_controls_are_not_sphered_in_sample_with_all_controls(sphering):
    """With --sphering-controls all the held-out (test) controls, the null of hits and Z-factors, are among the wells the
    sphering is fitted on; sphered in-sample their scores were too small, and every treatment of a screen without any
    effect was a hit (12 of 12, null mean z^2 0.98 against 2.28 for the treated wells)."""
    from phenolens.profiling.anomaly import ROLE_COLUMN, AnomalyProfiler
    from phenolens.profiling.evaluate import evaluate
    from phenolens.profiling.hits import anomaly_score
    from phenolens.profiling.synthetic import synthetic_screen

    screen = synthetic_screen(plates=6, controls_per_plate=10, replicates=3, features=40, effect=0.0, batches=2, seed=0)
    settings = ProfilingSettings(
        controls="Metadata_PertType == 'control'", treatment="Metadata_Treatment", batch="Metadata_Batch", max_epochs=2, hidden=(16, 8), latent=4
    )
    settings = settings.replace(curve=False, sphering=sphering, sphering_controls="all", sphering_epsilon=1e-3, sphering_shrinkage=0.5)
    frame = AnomalyProfiler(settings).fit_transform(screen)["cellprofiler_sphered"]
    scores = anomaly_score(frame[[c for c in frame.columns if not c.startswith("Metadata_")]].to_numpy())
    null = (frame[ROLE_COLUMN] == "test").to_numpy()
    treated = (screen["Metadata_PertType"] == "trt").to_numpy()
    assert 0.7 < scores[null].mean() / scores[treated].mean() < 1.4
    assert evaluate({"cellprofiler_sphered": frame}, settings).metrics["cellprofiler_sphered"]["hits"] == 0
