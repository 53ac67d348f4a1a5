"""Own implementations against the well-kept library that is their oracle, on random inputs (and ties).

Where phenolens computes something itself that a library also computes (for speed, streaming or a batch of
images at once), the library stays the test: copairs' full mAP pipeline, scipy.ndimage's Gaussian filter and
scikit-learn's average precision.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st


def _screen(seed: int, identical_profiles: bool = False):
    """Three plates of 12 wells: 3 DMSO controls and 9 treated wells of 4 treatments; random profiles.

    With `identical_profiles`, features are rounded to integers (seed 0: two wells become constant) and the first
    treated well of every plate copies a control of its plate (exact ties between a replicate and a control: an inactive well).
    """
    rng = np.random.default_rng(seed)
    meta = pd.DataFrame(
        [{"plate": f"P{p}", "treatment": "DMSO" if w < 3 else f"T{rng.integers(0, 4)}", "control": w < 3} for p in range(3) for w in range(12)]
    )
    values = rng.normal(size=(len(meta), 6))
    if identical_profiles:
        values = np.round(values)
        for plate in meta["plate"].unique():
            on_plate = (meta["plate"] == plate).to_numpy()
            values[np.flatnonzero(on_plate & ~meta["control"])[0]] = values[np.flatnonzero(on_plate & meta["control"])[0]]
    return meta, values


def _copairs_average_precisions(meta: pd.DataFrame, values: np.ndarray) -> pd.Series:
    """copairs' own pipeline for mAP against controls: a reference index on the controls, negatives on the query's plate;
    constant profiles (no correlation with anything) left out first, as `replicate_map` does before calling copairs."""
    from copairs.map import average_precision
    from copairs.matching import assign_reference_index

    varying = np.ptp(values, axis=1) > 0
    meta, values = meta[varying].reset_index(drop=True), values[varying]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        indexed = assign_reference_index(meta, "control", reference_col="reference")
        scores = average_precision(
            indexed, values, ["treatment", "reference"], [], ["plate"], ["treatment", "reference"], distance="correlation", progress_bar=False
        )
    scores = scores[~scores["control"] & (scores["n_pos_pairs"] > 0)]
    return scores.groupby("treatment")["average_precision"].mean()


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("identical_profiles", [False, True])
def test_map_against_controls_equals_copairs_own_pipeline(seed, identical_profiles):
    """`replicate_map_against_controls` builds copairs' rank lists itself (to stream whole studies); copairs'
    `average_precision` with a reference index is the oracle, also where a replicate ties with a control."""
    from phenolens.profiling.replicates import control_similarities, replicate_map_against_controls, row_standardize

    meta, values = _screen(seed, identical_profiles)
    is_control = meta["control"].to_numpy()
    unit = row_standardize(values)
    queries, similarities = control_similarities(unit, meta["plate"].to_numpy(), is_control)
    ours = replicate_map_against_controls(unit[~is_control], meta["treatment"].to_numpy()[~is_control], queries, similarities, null_size=50)
    expected = _copairs_average_precisions(meta, values)
    assert len(expected) >= 3
    pd.testing.assert_series_equal(ours.treatments["mean_average_precision"], expected.reindex(ours.treatments.index), check_names=False, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    sigmas=st.lists(st.floats(0.0, 2.5), min_size=1, max_size=3),
    height=st.integers(9, 20),
    width=st.integers(9, 20),
    seed=st.integers(0, 2**16),
)
def test_augmentation_blur_is_scipys_gaussian_filter(sigmas, height, width, seed):
    """Each image's own sigma, its kernel cut at the batch's radius, mirrored borders: scipy.ndimage with truncate = radius / sigma."""
    from scipy import ndimage

    from phenolens.training.augment import gaussian_blur

    images = np.random.default_rng(seed).normal(size=(len(sigmas), 2, height, width))
    blurred = gaussian_blur(torch.from_numpy(images), torch.tensor(sigmas, dtype=torch.float64)).numpy()
    radius = min(int(np.ceil(3.0 * max(sigmas))), height - 1, width - 1)
    for image, want, sigma in zip(images, blurred, sigmas):
        if sigma * radius == 0:
            expected = image
        else:
            expected = np.stack([ndimage.gaussian_filter(c, sigma, mode="mirror", truncate=radius / sigma) for c in image])
        np.testing.assert_allclose(want, expected, atol=1e-12)


@pytest.mark.parametrize(("sigma", "height", "width"), [(0.3, 16, 13), (0.5, 16, 13), (1.7, 16, 13), (3.0, 8, 8), (5.0, 6, 9)])
def test_class_model_blur_is_scipys_gaussian_filter(sigma, height, width):
    """Torch's "reflect" padding is scipy's "mirror"; a kernel wider than the image is cut to it (less a pixel), not a crash."""
    from scipy import ndimage

    from phenolens.explain.class_model import _gaussian_blur

    images = np.random.default_rng(1).normal(size=(2, 3, height, width))
    radius = min(int(np.ceil(3 * sigma)), height - 1, width - 1)
    expected = np.stack([[ndimage.gaussian_filter(c, sigma, mode="mirror", truncate=radius / sigma) for c in image] for image in images])
    np.testing.assert_allclose(_gaussian_blur(torch.from_numpy(images), sigma).numpy(), expected, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), queries=st.integers(1, 6), references=st.integers(2, 9))
def test_nested_mean_average_precision_is_scikit_learns(seed, queries, references):
    """The nested choice's mAP of positives in a similarity ranking (excluded pairs at -inf) against
    `sklearn.metrics.average_precision_score`, query by query (continuous similarities: no ties)."""
    from sklearn.metrics import average_precision_score

    from phenolens.profiling.nested import _mean_average_precision

    rng = np.random.default_rng(seed)
    similarity = rng.normal(size=(2, queries, references))
    positives = rng.random((queries, references)) < 0.4
    positives[:, 0] = True
    excluded = rng.random((queries, references)) < 0.2
    excluded[:, 0] = False
    similarity[:, excluded] = -np.inf
    positives &= ~excluded
    scored = positives.any(axis=1)
    expected = [
        np.mean([average_precision_score(positives[q], np.where(excluded[q], -1e300, similarity[k, q])) for q in np.flatnonzero(scored)])
        for k in range(2)
    ]
    np.testing.assert_allclose(_mean_average_precision(similarity, positives, scored), expected, atol=1e-12)


def test_tvn_plate_scaling_is_pycytominers_mad_robustize_against_controls():
    """`--sphering-plate-scaling`'s first step is documented as pycytominer's ``mad_robustize`` against each plate's controls."""
    from pycytominer import normalize

    from phenolens.profiling.sphering import TypicalVariationNormalizer

    rng = np.random.default_rng(0)
    features = [f"Cells_f{i}" for i in range(4)]
    table = pd.DataFrame(rng.normal(size=(40, 4)) * [1, 2, 3, 4] + [0, 1, 2, 3], columns=features)
    table["Metadata_Plate"] = np.repeat(["A", "B"], 20)
    table["Metadata_control"] = np.tile(["yes"] * 8 + ["no"] * 12, 2)
    controls = (table["Metadata_control"] == "yes").to_numpy()
    values, plates = table[features].to_numpy(), table["Metadata_Plate"].to_numpy()
    tvn = TypicalVariationNormalizer("ZCA", 0.0, 0.5, plate_scaling=True).fit(values[controls], plates[controls], plates[controls])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meta = ["Metadata_Plate", "Metadata_control"]
        by_plate = table.groupby("Metadata_Plate")
        plate_tables = [normalize(plate, features, meta, samples="Metadata_control == 'yes'", method="mad_robustize") for _, plate in by_plate]
        expected = pd.concat(plate_tables)
    np.testing.assert_allclose(tvn._centre_plates(values, plates.astype(object)), expected[features].to_numpy(), atol=1e-12)


@pytest.mark.parametrize("seed", range(12))
def test_feature_selection_equals_pycytominer_on_random_tables(seed):
    """Random mixes of continuous, rounded (discrete), correlated, rare and near-constant features."""
    from pycytominer import feature_select

    from phenolens.profiling.select import select_features

    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(8, 40)), int(rng.integers(3, 14))
    base = rng.normal(size=(n, d))
    makers = (
        lambda j: base[:, j],
        lambda j: np.round(base[:, j]),
        lambda j: base[:, 0] * rng.normal() + 0.05 * rng.normal(size=n),
        lambda j: (rng.random(n) < 0.08).astype(float),
        lambda j: 3.0 + (rng.random(n) < 0.5) * 1e-4,
    )
    table = pd.DataFrame({f"Cells_F{j:02d}": makers[int(rng.integers(0, len(makers)))](j) for j in range(d)})
    features = list(table.columns)
    table.insert(0, "Metadata_Plate", "p")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = feature_select(table, features=features, operation=["frequency_threshold", "variance_threshold", "correlation_threshold"])
    assert select_features(table, features) == [f for f in features if f in expected.columns]


@pytest.mark.parametrize("similarity, metric", [("pearson", "correlation"), ("cosine", "cosine")])
@pytest.mark.parametrize("seed", range(3))
def test_nsc_and_nscb_neighbours_are_scikit_learns_nearest_allowed_neighbours(similarity, metric, seed):
    """1-NN MoA matching against scikit-learn's pairwise distances, same-compound (and same-batch) pairs masked out."""
    from sklearn.metrics import pairwise_distances

    from phenolens.profiling.moa import nearest_neighbor_moa

    rng = np.random.default_rng(seed)
    index = pd.Index([f"t{i}" for i in range(30)])
    profiles = pd.DataFrame(rng.normal(size=(30, 7)) + 0.3, index=index)
    moa = pd.Series(rng.choice(["m1", "m2", "m3"], 30), index=index)
    compound = pd.Series(rng.choice([f"c{i}" for i in range(12)], 30), index=index)
    batch = pd.Series(rng.choice(["w1", "w2", "w3"], 30), index=index)
    for batches in (None, batch):
        result = nearest_neighbor_moa(profiles, moa, compound, batches, similarity=similarity)
        distance = pairwise_distances(profiles.to_numpy(), metric=metric)
        excluded = compound.to_numpy()[:, None] == compound.to_numpy()[None, :]
        if batches is not None:
            excluded |= batches.to_numpy()[:, None] == batches.to_numpy()[None, :]
        distance[excluded] = np.inf
        assert result.predictions["neighbor"].tolist() == index[distance.argmin(axis=1)].tolist()


def test_a_constant_treatment_profile_is_nobodys_nearest_neighbour():
    """np.argmax takes NaN for the largest value, so a treatment with a constant profile (NaN correlation) was the nearest
    neighbour of every query; scikit-learn's nearest neighbours over the other treatments are the oracle."""
    from sklearn.metrics import pairwise_distances

    from phenolens.profiling.moa import nearest_neighbor_moa

    rng = np.random.default_rng(0)
    index = pd.Index([f"t{i}" for i in range(20)])
    profiles = pd.DataFrame(rng.normal(size=(20, 7)), index=index)
    profiles.iloc[3] = 2.0
    moa = pd.Series(rng.choice(["m1", "m2"], 20), index=index)
    compound = pd.Series([f"c{i}" for i in range(20)], index=index)
    result = nearest_neighbor_moa(profiles, moa, compound).predictions
    others = index != "t3"
    distance = pairwise_distances(profiles[others].to_numpy(), metric="correlation")
    np.fill_diagonal(distance, np.inf)
    assert result.loc[others, "neighbor"].tolist() == index[others][distance.argmin(axis=1)].tolist()
    assert pd.isna(result.loc["t3", "neighbor"]) and not result.loc["t3", "correct"]
    from phenolens.profiling.nested import nested_neighbor_accuracy

    nested = nested_neighbor_accuracy({"only": profiles}, moa, compound)  # one candidate: the nested loop is plain 1-NN
    assert nested.predictions["correct"].tolist() == result["correct"].tolist()
