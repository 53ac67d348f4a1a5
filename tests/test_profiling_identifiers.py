"""Identifiers survive as written: plate barcodes, wells, batches and compound ids are text, not numbers.

A lab joins phenolens' outputs back to its LIMS by barcode: a plate written "0001" must come back "0001",
and "0001" and "001" are two plates (read as numbers they would be one plate pooling both plates' controls).
Numeric metadata (a dose) stays a number.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from phenolens.cli.main import run
from phenolens.profiling.synthetic import synthetic_screen

BARCODES = {"P000": "0001", "P001": "001", "P002": "01", "P003": "1", "P004": "0002", "P005": "002"}
BATCHES = {"B0": "01", "B1": "1"}
OPTIONS = ["--controls", "Metadata_PertType == 'control'", "--treatment-column", "Metadata_Treatment", "--moa-column", "Metadata_MoA"]
OPTIONS += ["--compound-column", "Metadata_Compound", "--batch-column", "Metadata_Batch"]
FAST = ["--max-epochs", "2", "--moa-repeats", "1", "--classifiers", "lr", "--jobs", "1", "--no-curve", "--explain-features", "1"]


@pytest.fixture(scope="module")
def screen() -> pd.DataFrame:
    """A screen whose plate barcodes, batches and compound ids all look like numbers, with a numeric dose."""
    table = synthetic_screen(plates=6, controls_per_plate=8, moas=2, compounds_per_moa=5, doses=2, features=16, effect=8.0, seed=1)
    compounds = table["Metadata_Compound"].str.replace("cpd", "00", regex=False).replace({"DMSO": "0000"})
    treatments = compounds + "@" + table["Metadata_Treatment"].str.partition("@")[2].replace("", "0")
    doses = pd.to_numeric(table["Metadata_Treatment"].str.partition("@")[2].replace("", "0"))
    return table.assign(
        Metadata_Plate=table["Metadata_Plate"].map(BARCODES),
        Metadata_Batch=table["Metadata_Batch"].map(BATCHES),
        Metadata_Compound=compounds,
        Metadata_Treatment=treatments,
        Metadata_Dose=doses * 0.5,
    )


@pytest.fixture(scope="module")
def runs(screen, tmp_path_factory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("identifiers")
    screen.to_csv(folder / "screen.csv", index=False)
    screen.to_parquet(folder / "screen.parquet", index=False)
    outputs = {}
    for name in ("screen.csv", "screen.parquet"):
        out = folder / f"run-{name}"
        assert run(["profile", "run", str(folder / name), *OPTIONS, *FAST, "--out", str(out)]) == 0
        outputs[name] = out
    return outputs


def test_profile_run_keeps_barcodes_batches_and_compounds_as_written(screen, runs):
    profiles = pd.read_parquet(runs["screen.csv"] / "profiles.parquet")
    assert sorted(profiles["Metadata_Plate"].unique()) == sorted(BARCODES.values())  # six plates, not three
    assert sorted(profiles["Metadata_Batch"].unique()) == ["01", "1"]
    assert set(profiles["Metadata_Compound"]) <= set(screen["Metadata_Compound"]) and "0000" in set(profiles["Metadata_Compound"])
    assert pd.api.types.is_numeric_dtype(profiles["Metadata_Dose"]) and set(profiles["Metadata_Dose"]) == {0.0, 0.5, 1.0}
    wells = ["Metadata_Plate", "Metadata_Well", "Metadata_Treatment"]
    pd.testing.assert_frame_equal(profiles[wells].sort_values(wells, ignore_index=True), screen[wells].sort_values(wells, ignore_index=True))


def test_profile_run_of_the_csv_and_of_the_parquet_with_text_ids_agree(runs):
    csv, parquet = (pd.read_parquet(runs[name] / "profiles.parquet") for name in ("screen.csv", "screen.parquet"))
    pd.testing.assert_frame_equal(csv, parquet)
    metrics = [json.loads((runs[name] / "metrics.json").read_text()) for name in ("screen.csv", "screen.parquet")]
    for representation in ("cellprofiler", "anomaly"):
        for key in ("percent_replicating", "map", "nsc_accuracy", "nscb_accuracy"):
            assert np.isclose(metrics[0][representation][key], metrics[1][representation][key]), (representation, key)


def test_profile_run_of_a_csv_and_a_parquet_with_integer_plates_compares_plates_as_text(screen, tmp_path):
    """One plate file as CSV (barcodes as written) and one as parquet with integer plate ids: one study."""
    first = screen[screen["Metadata_Plate"].isin(["0001", "001", "01"])]
    second = screen[~screen["Metadata_Plate"].isin(first["Metadata_Plate"])]
    first.to_csv(tmp_path / "first.csv", index=False)
    second.assign(Metadata_Plate=second["Metadata_Plate"].map({"1": 7, "0002": 8, "002": 9})).to_parquet(tmp_path / "second.parquet", index=False)
    out = tmp_path / "run"
    assert run(["profile", "run", str(tmp_path / "first.csv"), str(tmp_path / "second.parquet"), *OPTIONS, *FAST, "--out", str(out)]) == 0
    plates = pd.read_parquet(out / "profiles.parquet")["Metadata_Plate"]
    assert sorted(plates.unique()) == ["0001", "001", "01", "7", "8", "9"]


def test_profile_aggregate_keeps_barcodes_and_wells_as_written_and_joins_the_plate_map_on_them(tmp_path):
    from phenolens.profiling.synthetic_cells import SingleCellDesign, write_cytotable_parquet

    design = SingleCellDesign(plates=2, wells_per_plate=4, cells_per_well=(3, 5), features_per_compartment=2, seed=5)
    write_cytotable_parquet(tmp_path / "cells.parquet", design)
    cells = pd.read_parquet(tmp_path / "cells.parquet")
    names = sorted(cells["Image_Metadata_Plate"].unique())
    barcodes = dict(zip(names, ["0001", "001"]))
    wells = sorted(cells["Image_Metadata_Well"].unique())
    written_wells = {well: f"{index + 1:03d}" for index, well in enumerate(wells)}  # wells numbered 001, 002, ...
    cells = cells.assign(
        Image_Metadata_Plate=cells["Image_Metadata_Plate"].map(barcodes), Image_Metadata_Well=cells["Image_Metadata_Well"].map(written_wells)
    )
    cells.to_csv(tmp_path / "cells.csv", index=False)
    cells.to_parquet(tmp_path / "cells.parquet", index=False)  # the same cells, ids stored as text
    platemap = pd.DataFrame(
        [(plate, well, f"{plate}-{well}") for plate in barcodes.values() for well in written_wells.values()],
        columns=["Metadata_Plate", "Metadata_Well", "Metadata_Sample"],
    )
    platemap.to_csv(tmp_path / "platemap.csv", index=False)
    profiles = {}
    for name in ("cells.csv", "cells.parquet"):
        out = tmp_path / f"wells-{name}"
        assert run(["profile", "aggregate", str(tmp_path / name), "--platemap", str(tmp_path / "platemap.csv"), "--out", str(out)]) == 0
        profiles[name] = pd.read_parquet(out / "profiles.parquet")
    table = profiles["cells.csv"]
    pd.testing.assert_frame_equal(table, profiles["cells.parquet"])
    assert sorted(table["Metadata_Plate"].unique()) == ["0001", "001"]
    assert set(table["Metadata_Well"]) == set(written_wells.values())
    assert (table["Metadata_Sample"] == table["Metadata_Plate"] + "-" + table["Metadata_Well"]).all()


def test_read_profiles_keeps_identifiers_as_written_missing_as_missing_and_numbers_as_numbers(tmp_path):
    """The in-memory reader of `profile evaluate`/`explain`: a CSV's barcodes as written, a parquet's integer plates
    made text where they meet them, an empty treatment still missing, a dose still a number."""
    from phenolens.data import read_profiles

    (tmp_path / "a.csv").write_text("Metadata_Plate,Metadata_Well,Metadata_Treatment,Metadata_Dose,f\n0001,001,0042,0.5,1.0\n001,002,,1,2.0\n")
    pd.DataFrame({"Metadata_Plate": [7], "Metadata_Well": ["003"], "Metadata_Treatment": ["0042"], "Metadata_Dose": [2.0], "f": [3.0]}).to_parquet(
        tmp_path / "b.parquet", index=False
    )
    identifiers = ["Metadata_Plate", "Metadata_Well", "Metadata_Treatment"]
    alone = read_profiles(tmp_path / "a.csv", identifiers=identifiers)
    assert alone["Metadata_Plate"].tolist() == ["0001", "001"] and alone["Metadata_Well"].tolist() == ["001", "002"]
    assert alone["Metadata_Treatment"].iloc[0] == "0042" and pd.isna(alone["Metadata_Treatment"].iloc[1])
    both = read_profiles([tmp_path / "a.csv", tmp_path / "b.parquet"], identifiers=identifiers)
    assert both["Metadata_Plate"].tolist() == ["0001", "001", "7"] and both["Metadata_Dose"].tolist() == [0.5, 1.0, 2.0]
    assert pd.api.types.is_numeric_dtype(both["Metadata_Dose"]) and pd.api.types.is_numeric_dtype(both["f"])
    numbers = read_profiles([tmp_path / "b.parquet", tmp_path / "b.parquet"], identifiers=identifiers)
    assert numbers["Metadata_Plate"].tolist() == [7, 7]  # integer plate ids stay integers where every file has them
