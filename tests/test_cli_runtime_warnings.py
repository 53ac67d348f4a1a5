"""The main command-line paths on degenerate but legitimate inputs print results, not numpy RuntimeWarnings (issue 23).

Constant and all-missing feature columns, infinite values, a blank image channel and a flat signal
are what real screens and scans contain; every RuntimeWarning is an error here, so a division by a zero
spread or a mean of an empty slice fails the test instead of spamming the user's terminal.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from phenolens.profiling.synthetic import synthetic_screen

pytestmark = [pytest.mark.filterwarnings("error::RuntimeWarning"), pytest.mark.usefixtures("one_thread")]

COLUMNS = ["--controls", "Metadata_PertType == 'control'", "--treatment-column", "Metadata_Treatment", "--moa-column", "Metadata_MoA"]
FAST = ["--moa-repeats", "2", "--classifiers", "lr", "--jobs", "1", "--null-repeats", "2", "--map-null-size", "100"]
TINY = ["--width", "0.125", "--blocks", "1,1", "--stem-stride", "1", "--batch-size", "8"]


def test_profiles_with_constant_missing_and_infinite_columns(cli, tmp_path):
    table = synthetic_screen(plates=6, controls_per_plate=8, moas=2, compounds_per_moa=5, doses=2, features=16, effect=8.0, seed=1)
    features = [c for c in table.columns if not c.startswith("Metadata_")]
    table[features[0]] = 1.0  # constant everywhere
    table[features[1]] = np.nan  # never measured
    table.loc[table.index[:4], features[2]] = np.inf
    table.loc[table["Metadata_PertType"] == "control", features[3]] = 5.0  # constant over the controls
    table.to_csv(tmp_path / "screen.csv", index=False)
    status, _, stderr = cli(
        "profile",
        "run",
        tmp_path / "screen.csv",
        *COLUMNS,
        *FAST,
        "--max-epochs",
        "2",
        "--no-curve",
        "--explain-features",
        "1",
        "--explain-nsamples",
        "40",
        "--hidden",
        "16",
        "--latent",
        "4",
        "--out",
        tmp_path / "run",
    )
    assert status == 0, stderr
    status, _, stderr = cli("profile", "evaluate", tmp_path / "run" / "profiles.parquet", *COLUMNS, *FAST, "--out", tmp_path / "evaluate")
    assert status == 0, stderr
    status, _, stderr = cli(
        "profile", "explain", tmp_path / "run", "--group", "Metadata_MoA == 'moa0'", "--nsamples", "40", "--out", tmp_path / "explain"
    )
    assert status == 0, stderr
    status, _, stderr = cli("data", "show", tmp_path / "screen.csv", "--out", tmp_path / "show")
    assert status == 0, stderr
    summary = json.loads((tmp_path / "show" / "summary.json").read_text())
    assert summary["non_finite_values"] == len(table) + 4


def test_profiles_that_are_all_constant_are_one_line(cli, tmp_path):
    table = synthetic_screen(plates=6, controls_per_plate=8, moas=2, compounds_per_moa=5, doses=2, features=8, effect=8.0, seed=1)
    features = [c for c in table.columns if not c.startswith("Metadata_")]
    table[features] = 1.0
    table.to_csv(tmp_path / "flat.csv", index=False)
    status, _, stderr = cli("profile", "evaluate", tmp_path / "flat.csv", *COLUMNS, *FAST, "--out", tmp_path / "out")
    assert status == 2 and "non-constant profiles" in stderr and "Warning" not in stderr
    assert not (tmp_path / "out").exists()


def test_images_with_a_blank_channel_and_a_flat_signal(cli, tmp_path):
    rng = np.random.default_rng(0)
    for label in ("inside", "outside"):
        (tmp_path / "crops" / label).mkdir(parents=True)
        for i in range(8):
            image = np.zeros((2, 16, 16), dtype=np.float32)  # the second channel stays blank
            image[0] = rng.uniform(0, 20, size=(16, 16))
            image[0, (slice(5, 10) if label == "inside" else slice(0, 3)), 5:10] += 200
            np.save(tmp_path / "crops" / label / f"{i}.npy", image)
    folder = ["--folder", tmp_path / "crops", "--channels", "GFP,DNA"]
    status, _, stderr = cli("train", *folder, "--cv", "2", "--epochs", "1", *TINY, "--out", tmp_path / "model")
    assert status == 0, stderr
    methods = ["--methods", "saliency,gradcam,occlusion,ig", "--n-steps", "4", "--sanity-images", "4"]
    status, _, stderr = cli("images", "explain", tmp_path / "model", *folder, *methods, "--out", tmp_path / "explain")
    assert status == 0, stderr
    status, _, stderr = cli("images", "predict", tmp_path / "model", *folder, "--out", tmp_path / "predict")
    assert status == 0, stderr
    np.save(tmp_path / "flat.npy", np.zeros(3000))
    status, _, stderr = cli("echoes", "detect", tmp_path / "flat.npy", "--methods", "omp,ista,smp", "--out", tmp_path / "detect")
    assert status == 0, stderr
