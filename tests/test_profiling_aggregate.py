"""`phenolens profile aggregate`: CellProfiler single cells (SQLite, CytoTable parquet, CSV) to wells, against pandas."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from phenolens.core.errors import PhenolensError
from phenolens.profiling.aggregate import aggregate_cells
from phenolens.profiling.settings import ProfileAggregationSettings
from phenolens.profiling.synthetic_cells import (
    SingleCellDesign,
    joined_cells,
    plate_tables,
    true_well_values,
    write_cytominer_sqlite,
    write_cytotable_parquet,
)

DESIGN = SingleCellDesign(plates=3, wells_per_plate=4, sites_per_well=2, cells_per_well=(3, 11), features_per_compartment=2, seed=3)
STRATA = ["Metadata_Plate", "Metadata_Well"]


def handmade_sqlite(path, table_number=True, plate_column="Image_Metadata_Plate"):
    """Two plates x two wells, cells with hand-picked values, in the cytominer-database schema (sqlite3 only)."""
    link = "TableNumber, " if table_number else ""
    images = [  # (table, image, plate, well, site)
        ("t1", 1, "P1", "A01", 1),
        ("t1", 2, "P1", "A01", 2),
        ("t1", 3, "P1", "A02", 1),
        ("t2", 1, "P2", "A01", 1),
        ("t2", 2, "P2", "A02", 1),
    ]
    # (table, image, object, Cells_Area, Cytoplasm_Area, Nuclei_Area); without TableNumber the image numbers must differ.
    cells = [
        ("t1", 1, 1, 10.0, 1.0, 100.0),
        ("t1", 1, 2, 30.0, 3.0, 300.0),
        ("t1", 2, 1, 20.0, 2.0, 200.0),
        ("t1", 2, 2, 70.0, 7.0, 700.0),
        ("t1", 3, 1, 5.0, 0.5, 50.0),
        ("t2", 1, 1, 1.0, 0.1, 10.0),
        ("t2", 1, 2, 2.0, 0.2, 20.0),
        ("t2", 1, 3, 9.0, 0.9, 90.0),
        ("t2", 2, 1, 4.0, 0.4, 40.0),
        ("t2", 2, 2, 8.0, 0.8, 80.0),
    ]
    if not table_number:
        offset = {"t1": 0, "t2": 10}
        images = [(t, i + offset[t], *rest) for t, i, *rest in images]
        cells = [(t, i + offset[t], *rest) for t, i, *rest in cells]
    with sqlite3.connect(path) as connection:
        well_column = plate_column.replace("Plate", "Well")
        connection.execute(f"CREATE TABLE Image ({link}ImageNumber INTEGER, {plate_column} TEXT, {well_column} TEXT, Image_Metadata_Site INTEGER)")
        connection.executemany(
            f"INSERT INTO Image VALUES ({'?, ' * (4 + table_number)})".replace(", )", ")"), [r[not table_number :] for r in images]
        )
        for index, compartment in enumerate(("Cells", "Cytoplasm", "Nuclei")):
            parents = ", Cytoplasm_Parent_Cells INTEGER, Cytoplasm_Parent_Nuclei INTEGER" if compartment == "Cytoplasm" else ""
            connection.execute(
                f"CREATE TABLE {compartment} ({link}ImageNumber INTEGER, ObjectNumber INTEGER{parents}, {compartment}_AreaShape_Area REAL)"
            )
            rows = [(*r[not table_number : 3], *((r[2], r[2]) if parents else ()), r[3 + index]) for r in cells]
            connection.executemany(f"INSERT INTO {compartment} VALUES ({', '.join('?' * len(rows[0]))})", rows)
    connection.close()
    return path


@pytest.mark.parametrize("table_number", [True, False])
def test_handmade_sqlite_gives_the_hand_computed_medians_means_and_counts(tmp_path, table_number):
    path = handmade_sqlite(tmp_path / "cells.sqlite", table_number=table_number)
    wells = aggregate_cells(path)
    assert wells[STRATA].values.tolist() == [["P1", "A01"], ["P1", "A02"], ["P2", "A01"], ["P2", "A02"]]
    assert wells["Metadata_Count_Cells"].tolist() == [4, 1, 3, 2]
    assert wells["Metadata_Site_Count"].tolist() == [2, 1, 1, 1]
    assert wells["Cells_AreaShape_Area"].tolist() == [25.0, 5.0, 2.0, 6.0]  # medians: (20+30)/2, 5, 2, (4+8)/2
    assert wells["Nuclei_AreaShape_Area"].tolist() == [250.0, 50.0, 20.0, 60.0]
    assert wells["Cytoplasm_AreaShape_Area"].dtype == np.float32
    means = aggregate_cells(path, ProfileAggregationSettings(operation="mean"))
    assert means["Cells_AreaShape_Area"].tolist() == pytest.approx([32.5, 5.0, 4.0, 6.0])
    assert not [c for c in wells.columns if "Parent" in c or "Number" in c]
    # The same cells as one joined table (CytoTable's layout), joined here with pandas.
    with sqlite3.connect(path) as connection:
        tables = {name: pd.read_sql_query(f"SELECT * FROM {name}", connection) for name in ("Image", "Cells", "Cytoplasm", "Nuclei")}
    connection.close()
    keys = [c for c in ("TableNumber", "ImageNumber") if c in tables["Image"]]
    joined = (
        tables["Image"]
        .merge(tables["Cells"], on=keys)
        .merge(tables["Cytoplasm"], on=[*keys, "ObjectNumber"])
        .merge(tables["Nuclei"], on=[*keys, "ObjectNumber"])
    )
    joined.to_parquet(tmp_path / "joined.parquet")
    joined_means = aggregate_cells(tmp_path / "joined.parquet", ProfileAggregationSettings(operation="mean"))
    assert joined_means["Cells_AreaShape_Area"].tolist() == pytest.approx([32.5, 5.0, 4.0, 6.0])
    joined_medians = aggregate_cells(tmp_path / "joined.parquet")
    assert joined_medians["Nuclei_AreaShape_Area"].tolist() == [250.0, 50.0, 20.0, 60.0]
    assert joined_medians.columns[-3:].tolist() == ["Cells_AreaShape_Area", "Cytoplasm_AreaShape_Area", "Nuclei_AreaShape_Area"]


def _joined_truth(design: SingleCellDesign) -> pd.DataFrame:
    """Every cell of the design with its plate and well, joined independently of phenolens's reader."""
    truth = true_well_values(design)
    frames = []
    for plate in range(design.plates):
        tables = plate_tables(design, truth, plate)
        image = tables["Image"].rename(columns={"Metadata_Plate": "Plate", "Metadata_Well": "Well"})[["TableNumber", "ImageNumber", "Plate", "Well"]]
        cells = image.merge(tables["Cells"], on=["TableNumber", "ImageNumber"])
        for compartment in ("Cytoplasm", "Nuclei"):
            cells = cells.merge(
                tables[compartment].drop(columns=[c for c in tables[compartment] if "Parent" in c]), on=["TableNumber", "ImageNumber", "ObjectNumber"]
            )
        frames.append(cells)
    return pd.concat(frames, ignore_index=True)


def _pandas_wells(cells: pd.DataFrame, operation: str) -> pd.DataFrame:
    features = [c for c in cells.columns if c.startswith(("Cells_", "Cytoplasm_", "Nuclei_"))]
    grouped = cells.groupby(["Plate", "Well"], sort=True)
    wells = getattr(grouped[features], operation)().reset_index()
    wells["count"] = grouped.size().to_numpy()
    return wells


@pytest.mark.parametrize("operation", ["median", "mean"])
@pytest.mark.parametrize("layout", ["sqlite", "parquet", "csv"])
def test_every_layout_equals_a_pandas_groupby_and_the_known_answer(tmp_path, operation, layout):
    truth = true_well_values(DESIGN)
    if layout == "sqlite":
        path = tmp_path / "cells.sqlite"
        write_cytominer_sqlite(path, DESIGN)
    elif layout == "parquet":
        path = tmp_path / "cells.parquet"
        write_cytotable_parquet(path, DESIGN)
    else:
        path = tmp_path / "cells.csv.gz"
        pd.concat([joined_cells(plate_tables(DESIGN, truth, p)) for p in range(DESIGN.plates)]).to_csv(path, index=False)
    wells = aggregate_cells(path, ProfileAggregationSettings(operation=operation))
    expected = _pandas_wells(_joined_truth(DESIGN), operation)
    features = DESIGN.feature_names
    assert wells[STRATA].values.tolist() == expected[["Plate", "Well"]].values.tolist()
    np.testing.assert_array_equal(wells[features].to_numpy(), expected[features].to_numpy().astype(np.float32))
    np.testing.assert_allclose(wells[features].to_numpy(), truth[features].to_numpy(), rtol=1e-6)  # median = mean = the true value
    assert wells["Metadata_Count_Cells"].tolist() == expected["count"].tolist() == truth["Metadata_Count_Cells"].tolist()
    assert wells["Metadata_Row"].tolist() == truth["Metadata_Row"].tolist()  # well-level metadata kept, per-image metadata not
    assert not {"Metadata_ImageNumber", "Metadata_ObjectNumber", "Metadata_Site", "Image_Metadata_Site"} & set(wells.columns)
    assert all(wells[f].dtype == np.float32 for f in features)


def test_sqlite_equals_pycytominer_single_cells(tmp_path):
    """The reference: pycytominer's own SingleCells on the same file (per-compartment aggregation, same counts)."""
    import warnings

    from pycytominer.cyto_utils.cells import SingleCells

    path = tmp_path / "cells.sqlite"
    write_cytominer_sqlite(path, DESIGN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = SingleCells(f"sqlite:///{path}", image_table_name="Image").aggregate_profiles()
    wells = aggregate_cells(path)
    features = DESIGN.feature_names
    np.testing.assert_array_equal(wells[features].to_numpy(), reference[features].to_numpy().astype(np.float32))
    assert wells["Metadata_Count_Cells"].tolist() == reference["Metadata_Object_Count"].tolist()
    assert wells["Metadata_Site_Count"].tolist() == reference["Metadata_Site_Count"].tolist()


def test_image_metadata_prefix_and_platemap(tmp_path):
    design = SingleCellDesign(plates=2, wells_per_plate=3, image_metadata_prefix="Image_Metadata_", seed=5)
    path = tmp_path / "cells.sqlite"
    truth = write_cytominer_sqlite(path, design)
    platemap = tmp_path / "platemap.tsv"
    pd.DataFrame({"well_position": ["A01", "A02", "A03"], "pert_type": ["control", "trt", "trt"], "broad_sample": ["DMSO", "x", "y"]}).to_csv(
        platemap, sep="\t", index=False
    )
    wells = aggregate_cells(path, platemap=platemap)
    assert wells[STRATA].values.tolist() == truth[STRATA].values.tolist()
    assert wells["Metadata_pert_type"].tolist() == ["control", "trt", "trt"] * 2
    assert wells["Metadata_broad_sample"].tolist() == ["DMSO", "x", "y"] * 2
    metadata = [c for c in wells.columns if c.startswith("Metadata_")]
    assert wells.columns[: len(metadata)].tolist() == metadata  # metadata first, then features
    (tmp_path / "twice.csv").write_text("Metadata_Well,x\nA01,1\nA01,2\n")
    with pytest.raises(PhenolensError, match="lists A01 twice"):
        aggregate_cells(path, platemap=tmp_path / "twice.csv")
    (tmp_path / "short.csv").write_text("well_position,x\nA1,1\nA2,2\n")
    with pytest.raises(PhenolensError, match=r"none of the wells of plate SQ00000 \(e.g. A01\) is in the plate map \(e.g. A1\)"):
        aggregate_cells(path, platemap=tmp_path / "short.csv")
    (tmp_path / "one_plate.csv").write_text("Metadata_Plate,Metadata_Well,x\nSQ00001,A01,1\n")
    partial = aggregate_cells(path, platemap=tmp_path / "one_plate.csv")
    assert partial["Metadata_x"].isna().tolist() == [True] * 3 + [False, True, True] and partial["Metadata_x"][3] == "1"


def _bad_inputs(tmp_path):
    def altered(name, *statements):
        """The handmade file with `statements` applied."""
        path = handmade_sqlite(tmp_path / f"{name}.sqlite")
        with sqlite3.connect(path) as connection:
            for statement in statements:
                connection.execute(statement)
        connection.close()
        return path

    good = altered("good")
    text = tmp_path / "text.sqlite"
    text.write_text("ImageNumber,Cells_Area\n1,2\n")
    no_cells = altered("no_cells", "DROP TABLE Cells")
    no_features = altered("no_features", *(f"ALTER TABLE {t} DROP COLUMN {t}_AreaShape_Area" for t in ("Cells", "Cytoplasm", "Nuclei")))
    empty = altered("empty", "DELETE FROM Nuclei")
    no_well = altered("no_well", "ALTER TABLE Image DROP COLUMN Image_Metadata_Well")
    truncated = tmp_path / "truncated.sqlite"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1" + os.urandom(200))
    empty_parquet = tmp_path / "empty.parquet"
    pd.DataFrame({"Metadata_Plate": pd.Series(dtype=str), "Metadata_Well": pd.Series(dtype=str), "Cells_A": pd.Series(dtype=float)}).to_parquet(
        empty_parquet
    )
    no_plate = tmp_path / "no_plate.csv"
    pd.DataFrame({"Metadata_Well": ["A01"], "Cells_A": [1.0]}).to_csv(no_plate, index=False)
    return [
        (text, [], "text.sqlite: not an SQLite file"),
        (no_cells, [], "no table 'cells' (it has Cytoplasm, Image, Nuclei)"),
        (no_features, [], "no feature columns (a Cells_ / Cytoplasm_ / Nuclei_ prefix)"),
        (empty, [], "table Nuclei is empty"),
        (no_well, [], "table Image: no well column (Metadata_Well or Image_Metadata_Well)"),
        (good, ["--plate-column", "Metadata_Barcode"], "no plate column 'Metadata_Barcode'"),
        (good, ["--image-table", "Per_Image"], "no table 'Per_Image' (it has Cells, Cytoplasm, Image, Nuclei)"),
        (good, ["--feature-columns", "Cells_AreaShape_Area,Cells_Typo"], "no feature column 'Cells_Typo' (--feature-columns)"),
        (truncated, [], "truncated.sqlite: "),
        (corrupt, [], "corrupt.parquet: cannot read the parquet table"),
        (empty_parquet, [], "empty.parquet: the table has no rows"),
        (no_plate, [], "no_plate.csv: no plate column (Metadata_Plate or Image_Metadata_Plate)"),
    ]


def test_bad_inputs_are_one_line_naming_the_file_and_write_nothing(tmp_path, cli):
    for path, options, message in _bad_inputs(tmp_path):
        out = tmp_path / f"out-{path.stem}"
        status, _, error = cli("profile", "aggregate", path, *options, "--out", out)
        assert status == 2, (path, error)
        assert message in error and error.strip().count("\n") == 0, error
        assert not out.exists() and not list(tmp_path.glob(f".out-{path.stem}*"))


def test_settings_refuse_bad_names():
    with pytest.raises(PhenolensError, match=r"--compartments.*not a table name"):
        ProfileAggregationSettings(compartments=("cells; drop table x",))
    with pytest.raises(PhenolensError, match="--operation"):
        ProfileAggregationSettings(operation="sum")
    with pytest.raises(PhenolensError, match="names a compartment twice"):
        ProfileAggregationSettings(compartments=("cells", "Cells"))


def test_cli_writes_a_run_that_profile_run_accepts(tmp_path, cli):
    design = SingleCellDesign(plates=3, wells_per_plate=24, cells_per_well=(3, 7), features_per_compartment=3, seed=7)
    path = tmp_path / "cells.sqlite"
    write_cytominer_sqlite(path, design)
    wells = [f"{row}{col:02d}" for row in "AB" for col in range(1, 13)]
    treatments = ["DMSO"] * 8 + [f"cpd{i}" for i in range(16)]
    platemap = tmp_path / "platemap.csv"
    pd.DataFrame({"Metadata_Well": wells, "Metadata_Treatment": treatments}).to_csv(platemap, index=False)
    out = tmp_path / "wells"
    status, stdout, _ = cli("profile", "aggregate", path, "--platemap", platemap, "--out", out)
    assert status == 0 and "72 wells" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    truth = true_well_values(design)
    assert metrics["cells"] == truth["Metadata_Count_Cells"].sum() and metrics["wells"] == 72 and metrics["plates"] == 3
    assert metrics["cells_per_well"]["min"] == truth["Metadata_Count_Cells"].min()
    assert [row["wells"] for row in metrics["per_plate"]] == [24, 24, 24]
    assert (out / "report.html").is_file() and not (out / "plates.parts").exists()
    profiles = pd.read_parquet(out / "profiles.parquet")
    assert len(profiles) == 72 and profiles["Metadata_Treatment"].tolist() == treatments * 3
    options = ["--controls", "Metadata_Treatment == 'DMSO'", "--treatment-column", "Metadata_Treatment"]
    fast = ["--max-epochs", "2", "--moa-repeats", "1", "--no-curve", "--explain-features", "0", "--jobs", "1", "--null-repeats", "2"]
    status, _, error = cli("profile", "run", out / "profiles.parquet", *options, *fast, "--out", tmp_path / "profiled")
    assert status == 0, error
    assert (tmp_path / "profiled" / "metrics.json").is_file()


@pytest.mark.slow
def test_local_cluster_equals_serial(tmp_path):
    path = tmp_path / "cells.parquet"
    write_cytotable_parquet(path, DESIGN)
    serial = aggregate_cells(path)
    pd.testing.assert_frame_equal(aggregate_cells(path, scheduler="local:2"), serial)


def _killed_aggregation(tmp_path, path, out, plates_done: int) -> None:
    """Run `profile aggregate` in a child process that is SIGKILLed once `plates_done` plates are written."""
    script = textwrap.dedent(
        f"""
        import os, signal
        from phenolens.core.parts import PartStore
        from phenolens.cli.main import run
        original = PartStore.write_table
        def write_then_die(self, index, frame):
            written = original(self, index, frame)
            if len(self.completed()) == {plates_done}:
                os.kill(os.getpid(), signal.SIGKILL)
            return written
        PartStore.write_table = write_then_die
        run(["profile", "aggregate", {os.fspath(path)!r}, "--out", {os.fspath(out)!r}])
        """
    )
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()


def test_a_killed_aggregation_resumes_from_its_last_plate(tmp_path, cli, monkeypatch):
    path = tmp_path / "cells.sqlite"
    write_cytominer_sqlite(path, DESIGN)
    out = tmp_path / "wells"
    _killed_aggregation(tmp_path, path, out, plates_done=2)
    assert not out.exists()
    status, _, error = cli("profile", "aggregate", path, "--out", out)
    assert status == 2 and "pass --resume to continue it" in error
    from phenolens.profiling import aggregate

    aggregated = []
    original = aggregate.aggregate_plate
    monkeypatch.setattr(aggregate, "aggregate_plate", lambda shard: aggregated.append(shard.plate) or original(shard))
    status, _, error = cli("profile", "aggregate", path, "--out", out, "--resume")
    assert status == 0, error
    assert aggregated == ["SQ00002"]  # only the plate the killed run had not finished
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["plates_resumed"] == 2 and metrics["plates"] == 3
    fresh = aggregate_cells(path)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "profiles.parquet"), fresh)
    assert not list(tmp_path.glob(".wells.partial-*"))


@pytest.mark.parametrize("layout", ["csv", "sqlite"])
def test_a_compartment_named_in_camel_case_keeps_its_features(tmp_path, layout):
    """Prefixes were matched as compartment.title() + '_': 'MitoObjects' looked for 'Mitoobjects_' and its features were silently
    left out (pycytominer matches without regard to case)."""
    if layout == "csv":
        path = tmp_path / "cells.csv"
        cells = {"Metadata_Plate": ["P1"] * 4, "Metadata_Well": ["A01", "A01", "A02", "A02"], "Cells_AreaShape_Area": [1.0, 3.0, 5.0, 7.0]}
        pd.DataFrame({**cells, "MitoObjects_Intensity_Mean": [10.0, 30.0, 50.0, 70.0]}).to_csv(path, index=False)
    else:
        path = tmp_path / "cells.sqlite"
        with sqlite3.connect(path) as connection:
            connection.execute("CREATE TABLE Image (ImageNumber INTEGER, Metadata_Plate TEXT, Metadata_Well TEXT)")
            connection.executemany("INSERT INTO Image VALUES (?, ?, ?)", [(1, "P1", "A01"), (2, "P1", "A02")])
            tables = (("Cells", "Cells_AreaShape_Area", (1, 3, 5, 7)), ("MitoObjects", "MitoObjects_Intensity_Mean", (10, 30, 50, 70)))
            for table, column, values in tables:
                connection.execute(f"CREATE TABLE {table} (ImageNumber INTEGER, ObjectNumber INTEGER, {column} REAL)")
                connection.executemany(f"INSERT INTO {table} VALUES (?, ?, ?)", [(1 + i // 2, 1 + i % 2, float(v)) for i, v in enumerate(values)])
        connection.close()
    wells = aggregate_cells(path, ProfileAggregationSettings(compartments=("cells", "MitoObjects"), operation="mean"))
    assert wells["MitoObjects_Intensity_Mean"].tolist() == [20.0, 60.0] and wells["Cells_AreaShape_Area"].tolist() == [2.0, 6.0]


def test_a_platemap_without_the_first_plates_wells_streams_like_the_in_memory_table(tmp_path, cli):
    """The first plate's plate-map columns are all empty (a warning, not an error): the run's parquet must still take
    the later plates' text, as `aggregate_cells` does."""
    design = SingleCellDesign(plates=2, wells_per_plate=3, image_metadata_prefix="Image_Metadata_", seed=5)
    path = tmp_path / "cells.sqlite"
    write_cytominer_sqlite(path, design)
    (tmp_path / "one_plate.csv").write_text("Metadata_Plate,Metadata_Well,x\nSQ00001,A01,1\n")
    status, _, error = cli("profile", "aggregate", path, "--platemap", tmp_path / "one_plate.csv", "--out", tmp_path / "wells")
    assert status == 0, error
    written = pd.read_parquet(tmp_path / "wells" / "profiles.parquet")
    aggregate_cells(path, platemap=tmp_path / "one_plate.csv").to_parquet(tmp_path / "in_memory.parquet")
    # compared as stored: pandas 3 reads a parquet text column as str where the in-memory table holds objects
    pd.testing.assert_frame_equal(written, pd.read_parquet(tmp_path / "in_memory.parquet"))
    assert written["Metadata_x"].isna().tolist() == [True] * 3 + [False, True, True]


def test_the_report_states_the_median_cells_per_well_metrics_json_holds():
    """Cells per well are whole numbers but their median over an even number of wells need not be: the report once
    printed it (and the per-plate table's medians) with no decimals, so 'median 10' stood beside metrics.json's 10.5."""
    import re

    from phenolens.profiling.aggregate import AggregationSummary
    from phenolens.report.aggregation import aggregation_report

    counts = {"P1": np.array([10, 11]), "P2": np.array([9, 10, 12, 40])}
    plates = pd.DataFrame(
        [
            {"plate": plate, "source": "cells.parquet", "wells": len(wells), "cells": int(wells.sum())}
            | {f"cells_per_well_{key}": float(reduce(wells)) for key, reduce in (("min", np.min), ("median", np.median), ("max", np.max))}
            for plate, wells in counts.items()
        ]
    )
    every = np.concatenate(list(counts.values()))
    spread = {"min": int(every.min()), "median": float(np.median(every)), "max": int(every.max())}
    metrics = {"cells": int(every.sum()), "wells": len(every), "plates": 2, "files": 1, "features": 3, "operation": "median"}
    metrics |= {"cells_per_well": spread, "seconds": 1.0, "scheduler": "serial", "plates_resumed": 0}
    page = aggregation_report("aggregate", AggregationSummary(plates, counts, metrics)).render()
    assert spread["median"] == 10.5 and "(median 10.5)" in page
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", page)
    assert "10.5" in cells and "11" in cells  # P1's and P2's medians as metrics.json's per_plate holds them
