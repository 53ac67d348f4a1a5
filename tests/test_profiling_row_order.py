"""The same wells in another row order give the same seeded draws (percent replicating's null, the control split, the hits' null)."""

from __future__ import annotations

import functools

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pandas as pd

from phenolens.profiling.anomaly import AnomalyProfiler
from phenolens.profiling.evaluate import evaluate_tables
from phenolens.profiling.hits import call_hits
from phenolens.profiling.identity import frame_ranks
from phenolens.profiling.normalize import split_controls
from phenolens.profiling.replicates import percent_replicating
from phenolens.profiling.settings import ProfileEvaluationSettings, ProfilingSettings
from phenolens.profiling.synthetic import synthetic_screen

SCREEN = synthetic_screen(plates=3, batches=1, controls_per_plate=6, moas=2, compounds_per_moa=6, doses=2, features=12, effect=0.6, seed=3)
FEATURES = [c for c in SCREEN if not c.startswith("Metadata_")]
EVALUATION = ProfileEvaluationSettings(
    controls="Metadata_PertType == 'control'", treatment="Metadata_Treatment", classifiers=("lr",), moa_repeats=1, jobs=1, map_null_size=100
)


def _replicating(table: pd.DataFrame) -> tuple:
    evaluation, metrics = evaluate_tables(table, EVALUATION, "screen")
    p_values = evaluation.hits["features"]["p_value"].sort_index().to_numpy()
    return metrics["features"]["percent_replicating"], metrics["features"]["replicate_threshold"], *p_values


@functools.cache
def _reference() -> tuple:
    return _replicating(SCREEN)


@hypothesis.settings(max_examples=6, deadline=None, database=None, derandomize=True)
@hypothesis.given(st.permutations(range(len(SCREEN))))
def test_profile_evaluate_percent_replicating_and_hits_do_not_depend_on_the_row_order(order):
    np.testing.assert_allclose(_replicating(SCREEN.iloc[list(order)].reset_index(drop=True)), _reference(), rtol=1e-9)  # sums in another order


@hypothesis.settings(max_examples=20, deadline=None, database=None, derandomize=True)
@hypothesis.given(st.integers(0, 2**32 - 1), st.booleans())
def test_percent_replicating_null_is_the_same_for_permuted_wells_with_their_ranks(seed, duplicated_wells):
    """Wells that share plate and well (a well measured twice) are told apart by content, not by position."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(
        {
            "Metadata_Plate": rng.choice(["P1", "P2"], 40),
            "Metadata_Well": rng.choice(
                ["A01", "A02", "B01"] if duplicated_wells else [f"W{i:02d}" for i in range(40)], 40, replace=duplicated_wells
            ),
        }
    )
    values, treatments = rng.normal(size=(40, 6)), np.repeat([f"t{i}" for i in range(10)], 4)
    order = rng.permutation(40)
    expected = percent_replicating(values, treatments, 5, 90.0, 0, frame_ranks(table, "Metadata_Plate", values))
    moved = table.iloc[order]
    got = percent_replicating(values[order], treatments[order], 5, 90.0, 0, frame_ranks(moved, "Metadata_Plate", values[order]))
    np.testing.assert_array_equal(got.null, expected.null)
    pd.testing.assert_frame_equal(got.treatments, expected.treatments)


def test_a_table_sorted_by_plate_and_well_draws_as_in_table_order():
    """BBBC021 and the synthetic screens are sorted by plate and well: their documented figures do not move."""
    values = SCREEN[FEATURES].to_numpy()
    ranks = frame_ranks(SCREEN, "Metadata_Plate", values)
    np.testing.assert_array_equal(ranks, np.arange(len(SCREEN)))
    treatments = SCREEN["Metadata_Treatment"].to_numpy()
    np.testing.assert_array_equal(percent_replicating(values, treatments, ranks=ranks).null, percent_replicating(values, treatments).null)


@hypothesis.settings(max_examples=20, deadline=None, database=None, derandomize=True)
@hypothesis.given(st.integers(0, 2**32 - 1), st.booleans())
def test_the_control_split_follows_the_wells_not_their_rows(seed, duplicated_wells):
    rng = np.random.default_rng(seed)
    wells = rng.choice(["A01", "A02"], 60) if duplicated_wells else np.array([f"W{i:02d}" for i in range(60)])
    table = pd.DataFrame({"Metadata_Plate": np.repeat(["P1", "P2", "P3"], 20), "Metadata_Well": wells})
    values, is_control = rng.normal(size=(60, 4)), rng.random(60) < 0.6
    expected = split_controls(table["Metadata_Plate"], is_control, seed=0, ranks=frame_ranks(table, "Metadata_Plate", values))
    order = rng.permutation(60)
    moved = split_controls(
        table["Metadata_Plate"].iloc[order], is_control[order], seed=0, ranks=frame_ranks(table.iloc[order], "Metadata_Plate", values[order])
    )
    np.testing.assert_array_equal(moved, expected[order])


def test_the_anomaly_profiler_draws_the_same_control_wells_in_any_row_order():
    """The control split, the training controls kept by --max-train-controls, the autoencoders' training order and the
    sphering's null folds follow the wells."""
    settings = ProfilingSettings(
        max_epochs=1,
        hidden=(16, 8),
        latent=4,
        controls="Metadata_PertType == 'control'",
        treatment="Metadata_Treatment",
        max_train_controls=5,
        sphering="global",
        sphering_controls="all",
        adversary="plate",
    )
    roles, sphered = {}, {}
    for name, table in {"table": SCREEN, "shuffled": SCREEN.sample(frac=1, random_state=4)}.items():
        profiler = AnomalyProfiler(settings)
        frames = profiler.fit_transform(table)
        wells = pd.MultiIndex.from_frame(table[["Metadata_Plate", "Metadata_Well"]])
        roles[name] = pd.Series(profiler.roles_, index=wells).sort_index()
        sphered[name] = pd.concat(
            [frames[f"{r}_sphered"][profiler.selected_features_] for r in ("cellprofiler", "anomaly", "anomaly_adversarial")], axis=1
        )
        sphered[name] = sphered[name].set_index(wells).sort_index()
    pd.testing.assert_series_equal(roles["shuffled"], roles["table"])
    assert (roles["table"] == "train").sum() == 5
    pd.testing.assert_frame_equal(sphered["shuffled"], sphered["table"], rtol=1e-9)


def test_the_hits_null_draws_the_same_control_groups_for_permuted_controls_with_their_ranks():
    rng = np.random.default_rng(5)
    controls = pd.DataFrame({"Metadata_Plate": np.repeat(["P1", "P2"], 15), "Metadata_Well": [f"W{i:02d}" for i in range(30)]})
    control_scores, scores = rng.normal(size=30), rng.normal(0.5, 1, size=24)
    treatments = np.repeat([f"t{i}" for i in range(8)], 3)
    expected = call_hits(
        scores, treatments, control_scores, permutations=500, control_ranks=frame_ranks(controls, "Metadata_Plate", control_scores[:, None])
    )
    order = rng.permutation(30)
    ranks = frame_ranks(controls.iloc[order], "Metadata_Plate", control_scores[order, None])
    pd.testing.assert_frame_equal(call_hits(scores, treatments, control_scores[order], permutations=500, control_ranks=ranks), expected)
