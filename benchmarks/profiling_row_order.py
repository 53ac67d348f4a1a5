"""Row-order spread: the same profiles in shuffled row orders at one seed (session 17).

Two measurements, each in table order and over ``--shuffles`` row shuffles (``table.sample(frac=1, random_state=k)``,
k = 1..shuffles), all at seed 0:

- BBBC021 percent replicating (`phenolens.data.load("bbbc021-profiles")`, non-finite wells dropped, whole-plate
  normalised, treated wells, 5 null groups per treatment, 90th percentile), with the canonical well ranks
  (`phenolens.profiling.identity.frame_ranks`) as `profile evaluate` gives them;
- a 6-plate synthetic `profile run` (library `run_profiling`, `synthetic_screen(seed=0)`, 20 epochs, no curve):
  hits and percent replicating of cellprofiler and anomaly, which the control split, the hits' null and the
  autoencoder's training order decide.

Usage::

    python benchmarks/profiling_row_order.py --check               # 19 shuffles (about a minute and a half on 2 shared cores)
    python benchmarks/profiling_row_order.py --shuffles 3 --check  # small mode
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from phenolens import data
from phenolens.profiling.identity import frame_ranks
from phenolens.profiling.normalize import whole_plate_normalize
from phenolens.profiling.pipeline import run_profiling
from phenolens.profiling.replicates import percent_replicating, row_standardize
from phenolens.profiling.settings import ProfilingSettings
from phenolens.profiling.synthetic import synthetic_screen

sys.path.insert(0, str(Path(__file__).parent))
from targets import Targets, add_check_option  # noqa: E402


def bbbc021_treated(table) -> tuple:
    """(whole-plate normalised profiles, treatments, canonical ranks) of BBBC021's treated wells, non-finite wells dropped."""
    features = [c for c in table if not c.startswith("Metadata_")]
    values = table[features].to_numpy(dtype=np.float64)
    finite = np.isfinite(values).all(axis=1)
    table, values = table[finite], whole_plate_normalize(values[finite], table["Metadata_Plate"].to_numpy()[finite])
    treated = (table["Metadata_PertType"] != "control").to_numpy()
    ranks = frame_ranks(table[treated], "Metadata_Plate", row_standardize(values[treated]))
    return values[treated], table["Metadata_Treatment"].to_numpy()[treated], ranks


def bbbc021_percent_replicating(table) -> float:
    """Percent replicating of BBBC021's treated wells, null walked in canonical well order: 5 null groups per treatment,
    90th percentile, seed 0, no floor on the null (the setting this benchmark measured before `--null-minimum` existed)."""
    values, treatments, ranks = bbbc021_treated(table)
    return percent_replicating(values, treatments, 5, 90.0, 0, ranks, null_minimum=0).percent_replicating


def synthetic_run(table) -> tuple:
    """(hits, percent replicating) of cellprofiler and of anomaly in a synthetic `profile run`."""
    settings = ProfilingSettings(
        controls="Metadata_PertType == 'control'",
        treatment="Metadata_Treatment",
        moa="Metadata_MoA",
        compound="Metadata_Compound",
        batch="Metadata_Batch",
        curve=False,
        moa_repeats=1,
        classifiers=("lr",),
        explain_features=0,
        max_epochs=20,
    )
    metrics = run_profiling(table, settings).metrics
    return tuple((metrics[name]["hits"], metrics[name]["percent_replicating"]) for name in ("cellprofiler", "anomaly"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shuffles", type=int, default=19, help="Row shuffles besides table order.")
    add_check_option(parser)
    args = parser.parse_args()
    targets = Targets("profiling_row_order")
    for name, table, measure in (
        ("BBBC021 percent replicating", data.load("bbbc021-profiles"), bbbc021_percent_replicating),
        ("synthetic profile run ((hits, percent replicating) of cellprofiler, anomaly)", synthetic_screen(seed=0), synthetic_run),
    ):
        results = [measure(table)] + [measure(table.sample(frac=1, random_state=k)) for k in range(1, args.shuffles + 1)]
        print(f"{name}: table order {results[0]}; {args.shuffles} shuffles: {sorted(set(results))}")
        targets.expect(f"{name}: distinct results over {args.shuffles} shuffles and table order", len(set(results)), "==", 1)
    sys.exit(targets.finish(args.check))


if __name__ == "__main__":
    main()
