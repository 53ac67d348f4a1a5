"""Metamorphic relations of the pipelines: the same data said differently gives the same answer.

Each test states the data one way and then another way a lab would (rows or files in another order,
CSV instead of parquet, other names for plates or MoAs, float32, another scale) and asserts the
results are the same. Relations the methods do not promise are left out on purpose: percent
replicating's null is a seeded draw over the treatments in name order and their wells in plate and
well name order (`phenolens.profiling.identity`), so renaming treatments, or plates in another sort
order, moves it by its Monte-Carlo noise (reordering rows does not: tests/test_profiling_row_order.py);
training order moves a trained model.
"""

from __future__ import annotations

import functools
import json

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pandas as pd
import pytest

from phenolens.cli.main import run
from phenolens.profiling.evaluate import evaluate_tables
from phenolens.profiling.settings import ProfileEvaluationSettings
from phenolens.profiling.synthetic import synthetic_screen

SCREEN = synthetic_screen(plates=6, controls_per_plate=8, moas=2, compounds_per_moa=5, doses=2, features=16, effect=3.0, seed=1)
FEATURES = [c for c in SCREEN if not c.startswith("Metadata_")]
EVALUATION = ProfileEvaluationSettings(
    controls="Metadata_PertType == 'control'",
    treatment="Metadata_Treatment",
    moa="Metadata_MoA",
    compound="Metadata_Compound",
    batch="Metadata_Batch",
    moa_repeats=1,
    classifiers=("lr",),
    jobs=1,
    map_null_size=100,
)


def _numbers(metrics: dict, prefix: str = "") -> dict:
    """Every number of a metrics dict, keyed by its dotted path (timings left out)."""
    numbers = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            numbers |= _numbers(value, f"{prefix}{key}.")
        elif (isinstance(value, (int, float)) or value is None) and key != "seconds":
            numbers[prefix + key] = value
    return numbers


def _assert_same_numbers(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    different = {key: (got[key], value) for key, value in expected.items() if not (got[key] == value or np.isclose(got[key], value, rtol=1e-6))}
    assert not different, different


def _evaluated(table: pd.DataFrame) -> dict:
    return _numbers(evaluate_tables(table, EVALUATION, "screen")[1])


@functools.cache
def _reference() -> dict:
    return _evaluated(SCREEN)


def _renamed(values: pd.Series, rename) -> pd.Series:
    return values.map(lambda value: rename(value) if value not in ("DMSO", "control") else value)


RESTATEMENTS = {
    "feature columns reversed": lambda t: t[[c for c in t if c not in FEATURES] + FEATURES[::-1]],
    "an irrelevant metadata column": lambda t: t.assign(Metadata_Barcode_Scanned=np.arange(len(t)).astype(str)),
    "float32 features": lambda t: t.astype(dict.fromkeys(FEATURES, np.float32)),
    "plates renamed in reverse order": lambda t: t.assign(Metadata_Plate=t["Metadata_Plate"].map(lambda p: f"Z{99 - int(p[1:])}")),
    "plates renamed in the same order": lambda t: t.assign(Metadata_Plate=t["Metadata_Plate"].map(lambda p: f"plate-{int(p[1:]) + 10}")),
    "integer plate ids": lambda t: t.assign(Metadata_Plate=t["Metadata_Plate"].str[1:].astype(int)),
    "MoAs renamed in reverse order": lambda t: t.assign(Metadata_MoA=_renamed(t["Metadata_MoA"], lambda m: f"mech{9 - int(m[3:])}")),
    "compounds renamed in reverse order": lambda t: t.assign(Metadata_Compound=_renamed(t["Metadata_Compound"], lambda c: f"c{99 - int(c[3:])}")),
    "batches renamed in reverse order": lambda t: t.assign(Metadata_Batch=t["Metadata_Batch"].map({"B0": "Z9", "B1": "A0"})),
    "features in other units": lambda t: t.assign(**{f: t[f] * 1000.0 for f in FEATURES}),
}


@hypothesis.settings(max_examples=8, deadline=None, database=None, derandomize=True)
@hypothesis.given(st.sets(st.sampled_from(sorted(RESTATEMENTS)), min_size=1, max_size=4))
def test_profile_evaluate_gives_the_same_metrics_for_the_same_screen_said_differently(restatements):
    table = SCREEN
    for name in sorted(restatements):
        table = RESTATEMENTS[name](table)
    got, expected = _evaluated(table), _reference()
    if "plates renamed in reverse order" in restatements:  # plate names order percent replicating's null draw
        got, expected = ({key: value for key, value in numbers.items() if "replicat" not in key} for numbers in (got, expected))
    _assert_same_numbers(got, expected)


def test_profile_evaluate_of_csv_gzip_tsv_parquet_and_per_plate_files_gives_the_same_metrics(tmp_path):
    options = ["--controls", "Metadata_PertType == 'control'", "--treatment-column", "Metadata_Treatment", "--moa-column", "Metadata_MoA"]
    options += ["--compound-column", "Metadata_Compound", "--batch-column", "Metadata_Batch", "--moa-repeats", "1", "--classifiers", "lr"]
    options += ["--jobs", "1", "--map-null-size", "100"]
    plates = []
    for plate, wells in SCREEN.groupby("Metadata_Plate"):
        plates.append(tmp_path / f"{plate}.parquet")
        wells.to_parquet(plates[-1], index=False)
    SCREEN.to_parquet(tmp_path / "screen.parquet", index=False)
    SCREEN.to_csv(tmp_path / "screen.csv", index=False)
    SCREEN.to_csv(tmp_path / "screen.csv.gz", index=False)
    SCREEN.to_csv(tmp_path / "screen.tsv", sep="\t", index=False)
    results = []
    named = {"parquet": ["screen.parquet"], "csv": ["screen.csv"], "gzip": ["screen.csv.gz"], "tsv": ["screen.tsv"], "plates": plates}
    for name, inputs in named.items():
        assert run(["profile", "evaluate", *[str(tmp_path / i) for i in inputs], *options, "--out", str(tmp_path / name)]) == 0
        results.append(_numbers(json.loads((tmp_path / name / "metrics.json").read_text())))
    for result in results[1:]:
        _assert_same_numbers(result, results[0])


def test_profile_aggregate_gives_the_same_wells_for_the_same_cells_said_differently(tmp_path):
    """Cells in another row order, as CSV or gzipped CSV, one file per plate in any order, plates as numbers: the same wells."""
    from phenolens.profiling.synthetic_cells import SingleCellDesign, write_cytotable_parquet

    design = SingleCellDesign(plates=3, wells_per_plate=6, cells_per_well=(3, 9), features_per_compartment=2, seed=5)
    write_cytotable_parquet(tmp_path / "cells.parquet", design)
    cells = pd.read_parquet(tmp_path / "cells.parquet")
    cells.sample(frac=1, random_state=1).to_parquet(tmp_path / "shuffled.parquet", index=False)
    cells.to_csv(tmp_path / "cells.csv", index=False)
    cells.to_csv(tmp_path / "cells.csv.gz", index=False)
    numbered = cells.assign(Image_Metadata_Plate=cells["Image_Metadata_Plate"].str[2:].astype(int))
    numbered.to_parquet(tmp_path / "numbered.parquet", index=False)
    per_plate = []
    for number, (_, plate) in enumerate(cells.groupby("Image_Metadata_Plate")):
        per_plate.append(tmp_path / f"plate{number}.parquet")
        plate.to_parquet(per_plate[-1], index=False)
    inputs = {
        "reference": ["cells.parquet"],
        "shuffled": ["shuffled.parquet"],
        "csv": ["cells.csv"],
        "gzip": ["cells.csv.gz"],
        "plates": [p.name for p in per_plate[::-1]],
        "numbered": ["numbered.parquet"],
    }
    wells = {}
    for name, files in inputs.items():
        assert run(["profile", "aggregate", *[str(tmp_path / f) for f in files], "--out", str(tmp_path / name)]) == 0
        table = pd.read_parquet(tmp_path / name / "profiles.parquet")
        if name == "numbered":
            table["Metadata_Plate"] = table["Metadata_Plate"].map(design.plate_name)
        wells[name] = table.sort_values(["Metadata_Plate", "Metadata_Well"], ignore_index=True)
    for name, table in wells.items():
        pd.testing.assert_frame_equal(table, wells["reference"], check_dtype=False, obj=name)


def test_echoes_detect_finds_the_same_echoes_in_the_same_a_scan_said_differently(tmp_path):
    """Text or .npy, float32, another gain and offset (the A-scan is centred and scaled), files in another order."""
    from phenolens.echoes.settings import EchoSimulationSettings
    from phenolens.echoes.simulate import simulate

    scans = simulate(EchoSimulationSettings(n_signals=2, seed=4)).signals
    np.save(tmp_path / "a.npy", scans[0])
    np.save(tmp_path / "b.npy", scans[1])
    said = {"text": "a.txt", "float32": "a32.npy", "gain and offset": "gained.npy"}
    np.savetxt(tmp_path / said["text"], scans[0])
    np.save(tmp_path / said["float32"], scans[0].astype(np.float32))
    np.save(tmp_path / said["gain and offset"], 40.0 * scans[0] - 3.0)

    def detections(name: str, *files: str) -> pd.DataFrame:
        assert run(["echoes", "detect", *[str(tmp_path / f) for f in files], "--methods", "omp,ista,smp", "--out", str(tmp_path / name)]) == 0
        return pd.read_csv(tmp_path / name / "detections.csv").sort_values(["signal", "method", "rank"], ignore_index=True)

    reference = detections("reference", "a.npy").drop(columns="signal")
    for name, file in said.items():
        pd.testing.assert_frame_equal(detections(name.replace(" ", "_"), file).drop(columns="signal"), reference, atol=1e-6, obj=name)
    pd.testing.assert_frame_equal(detections("reversed", "b.npy", "a.npy"), detections("in_order", "a.npy", "b.npy"))


@hypothesis.settings(max_examples=30, deadline=None, database=None, derandomize=True)
@hypothesis.given(seed=st.integers(0, 10_000), criterion=st.sampled_from(["accuracy", "map"]), with_batches=st.booleans())
def test_nested_choice_and_nsc_do_not_depend_on_the_order_of_the_treatments(seed, criterion, with_batches):
    from phenolens.profiling.moa import nearest_neighbor_moa
    from phenolens.profiling.nested import nested_neighbor_accuracy

    rng = np.random.default_rng(seed)
    compounds = [f"c{i}" for i in range(9)]
    rows = [(f"{c}@{dose}", c, f"m{i % 3}", f"B{rng.integers(2)}") for i, c in enumerate(compounds) for dose in range(int(rng.integers(1, 3)))]
    index = [row[0] for row in rows]
    compound, moa, batch = (pd.Series([row[k] for row in rows], index=index) for k in (1, 2, 3))
    batch = batch if with_batches else None
    candidates = {name: pd.DataFrame(rng.normal(size=(len(index), 5)), index=index) for name in ("a", "b", "c")}
    order = rng.permutation(len(index))
    shuffled = {name: frame.iloc[order] for name, frame in candidates.items()}
    nested = nested_neighbor_accuracy(candidates, moa, compound, batch, criterion=criterion)
    again = nested_neighbor_accuracy(shuffled, moa, compound, batch, criterion=criterion)
    assert again.accuracy == pytest.approx(nested.accuracy) and again.evaluated == nested.evaluated
    assert again.chosen.sort_index().equals(nested.chosen.sort_index())
    plain, plain_again = (nearest_neighbor_moa(frames["a"], moa, compound, batch) for frames in (candidates, shuffled))
    assert plain_again.accuracy == pytest.approx(plain.accuracy) and plain_again.evaluated == plain.evaluated
