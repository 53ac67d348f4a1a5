"""Single cells to wells: `phenolens profile aggregate` vs pycytominer's SingleCells, side by side, on one SQLite file.

A synthetic screen in the cytominer-database schema (phenolens.profiling.synthetic_cells: tables
Image, Cells, Cytoplasm, Nuclei; every well's median and mean are known) is written at two sizes,
the full one and a tenth of it (the same plates, ten times fewer of them), and aggregated by
  1. phenolens (`aggregate_cells_into`, serial, into a run folder: plate by plate, per-plate parts,
     then one profiles.parquet), and
  2. pycytominer: ``SingleCells(...).aggregate_profiles(n_aggregation_memory_strata=<wells per plate>)``,
     one query per plate's worth of wells and compartment, also bounded by the plate. (All wells in
     one query fails at the full size: 1,920 ORed well conditions exceed SQLite's expression depth;
     the default, one well per query, scans each table once per well: hours at the full size.)
Each aggregation runs in a fresh child process, which reports its wall time and its peak resident
memory (ru_maxrss), so the RSS of one does not hide in the other's.

    python benchmarks/profiling_aggregate.py             # 10^6 cells (20 plates x 96 wells), and 10^5
    python benchmarks/profiling_aggregate.py --small     # 2 x 10^4 cells (10 plates x 24 wells), and 2 x 10^3
    python benchmarks/profiling_aggregate.py --small --check   # exit 1 when a target is missed

Targets: phenolens's wells equal pycytominer's (every feature, after the float32 cast, and every
cell count) and the known well values (within float32 rounding); phenolens's peak RSS at the full
size is at most 1.5x its peak RSS at a tenth of it (memory bounded by the plate, not the file);
phenolens is at least as fast as pycytominer (cells per CPU second; at --small sizes, where a
plate has 2,000 cells and the fixed cost per plate dominates, at least 0.5x).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from phenolens.profiling.synthetic_cells import SingleCellDesign, write_cytominer_sqlite

sys.path.insert(0, str(Path(__file__).parent))
from running import cpu_seconds  # noqa: E402
from targets import Targets, add_check_option  # noqa: E402

# Same plates at both sizes; the tenth has a tenth of the plates.
FULL = {"plates": 20, "wells_per_plate": 96, "sites_per_well": 4, "cells_per_well": (501, 541), "features_per_compartment": 20}
# At --small sizes (2,000 cells a plate) phenolens's fixed cost per plate (a query per compartment,
# a part file) outweighs the cells; the speed target holds at the full size.
SMALL_SPEED = 0.5
SMALL = {"plates": 10, "wells_per_plate": 24, "sites_per_well": 2, "cells_per_well": (71, 97), "features_per_compartment": 10}


def _usage(started: float, cpu_started: float) -> dict:
    """Wall and CPU seconds since the start, and the peak RSS of this process so far."""
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": cpu_seconds() - cpu_started,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux reports kB
    }


def run_phenolens(database: Path, table: Path) -> dict:
    """Aggregate with phenolens into a run folder (as `profile aggregate` does); write the wells to `table`."""
    import pycytominer  # noqa: F401 - imported before the clock starts, as in run_pycytominer

    from phenolens.core.executor import Executor
    from phenolens.core.runs import RunWriter
    from phenolens.profiling.aggregate import PROFILES, aggregate_cells_into, plan_aggregation
    from phenolens.profiling.settings import ProfileAggregationSettings

    settings = ProfileAggregationSettings()
    started, cpu_started = time.perf_counter(), cpu_seconds()
    out = table.with_suffix(".run")
    with Executor.from_option("serial") as executor, RunWriter(out, command="profile aggregate", settings=settings, inputs=[database]) as run:
        aggregate_cells_into(run, plan_aggregation([database], settings), executor)
    usage = _usage(started, cpu_started)
    (out / PROFILES).rename(table)
    return usage


def run_pycytominer(database: Path, table: Path) -> dict:
    """Aggregate with pycytominer's SingleCells, a plate's worth of wells per query; write the wells to `table`."""
    import warnings

    from pycytominer.cyto_utils.cells import SingleCells

    started, cpu_started = time.perf_counter(), cpu_seconds()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cells = SingleCells(f"sqlite:///{database}", image_table_name="Image")
        per_plate = cells.image_df.groupby("Metadata_Plate")["Metadata_Well"].nunique().max()
        wells = cells.aggregate_profiles(n_aggregation_memory_strata=int(per_plate))
    usage = _usage(started, cpu_started)
    wells.to_parquet(table)
    return usage


def in_child(which: str, database: Path, table: Path) -> dict:
    """Run one aggregation in a fresh process; return its seconds and peak RSS."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", which, str(database), str(table)], capture_output=True, text=True, check=False, env=None
    )
    if done.returncode != 0:
        raise SystemExit(f"{which} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _report(name: str, cells: int, usage: dict) -> None:
    print(
        f"  {name}: {usage['seconds']:7.1f} s wall, {usage['cpu_seconds']:7.1f} s CPU, {cells / usage['cpu_seconds']:9,.0f} cells per CPU second, "
        f"peak RSS {usage['peak_rss_mb']:7,.0f} MB",
        flush=True,
    )


def compare(size: dict, folder: Path, label: str, reference: bool) -> dict:
    """Write one screen, aggregate it (phenolens, and pycytominer when `reference`), check the answers."""
    design = SingleCellDesign(**size, seed=0)
    database = folder / f"{label}.sqlite"
    started = time.perf_counter()
    truth = write_cytominer_sqlite(database, design)
    cells = int(truth["Metadata_Count_Cells"].sum())
    print(
        f"{label}: {cells:,} cells in {len(truth):,} wells of {design.plates} plates, {len(design.feature_names)} features "
        f"({database.stat().st_size / 2**20:,.0f} MB SQLite, written in {time.perf_counter() - started:.1f} s)",
        flush=True,
    )
    ours = in_child("phenolens", database, folder / f"{label}-phenolens.parquet")
    wells = pd.read_parquet(folder / f"{label}-phenolens.parquet")
    features = design.feature_names
    result = {"cells": cells, "phenolens": ours, "truth_error": float(np.max(np.abs(wells[features].to_numpy() / truth[features].to_numpy() - 1)))}
    result["counts_equal_truth"] = wells["Metadata_Count_Cells"].tolist() == truth["Metadata_Count_Cells"].tolist()
    _report("phenolens  ", cells, ours)
    if reference:
        theirs = in_child("pycytominer", database, folder / f"{label}-pycytominer.parquet")
        expected = pd.read_parquet(folder / f"{label}-pycytominer.parquet")
        result["pycytominer"] = theirs
        result["max_difference"] = float(np.max(np.abs(wells[features].to_numpy() - expected[features].to_numpy().astype(np.float32))))
        result["counts_equal_reference"] = wells["Metadata_Count_Cells"].tolist() == expected["Metadata_Object_Count"].tolist()
        _report("pycytominer", cells, theirs)
    database.unlink()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="2 x 10^4 cells instead of 10^6 (seconds, for CI)")
    parser.add_argument("--child", nargs=3, metavar=("WHICH", "DATABASE", "TABLE"), help=argparse.SUPPRESS)
    add_check_option(parser)
    args = parser.parse_args()
    if args.child:
        which, database, table = args.child
        print(json.dumps((run_phenolens if which == "phenolens" else run_pycytominer)(Path(database), Path(table))))
        return 0
    size = SMALL if args.small else FULL
    tenth = {**size, "plates": size["plates"] // 10}
    with tempfile.TemporaryDirectory(prefix="phenolens-aggregate-") as folder:
        full = compare(size, Path(folder), "full", reference=True)
        small = compare(tenth, Path(folder), "tenth", reference=False)
    targets = Targets("profiling_aggregate")
    targets.expect("max |phenolens - pycytominer| over every well feature (float32)", full["max_difference"], "<=", 0.0)
    targets.expect(
        "cell counts equal pycytominer's and the known ones (1 = yes)", full["counts_equal_reference"] and full["counts_equal_truth"], "==", 1
    )
    targets.expect("max relative error against the known well values", full["truth_error"], "<=", 1e-6)
    rss_ratio = full["phenolens"]["peak_rss_mb"] / small["phenolens"]["peak_rss_mb"]
    targets.expect(f"phenolens peak RSS at {full['cells']:,} / at {small['cells']:,} cells", rss_ratio, "<=", 1.5)
    # CPU seconds, not wall: the machine is shared, and both run on one core.
    speed = full["pycytominer"]["cpu_seconds"] / full["phenolens"]["cpu_seconds"]
    targets.expect("phenolens cells per CPU second / pycytominer's", speed, ">=", 1.0 if not args.small else SMALL_SPEED)
    return targets.finish(args.check)


if __name__ == "__main__":
    sys.exit(main())
