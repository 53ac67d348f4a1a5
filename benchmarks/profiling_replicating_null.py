"""Percent replicating's Monte-Carlo noise: how the score moves with the seed of its null, by null size.

For each `--repeats` value (null groups per treatment, no floor: `null_minimum=0`) and for the default
(5 per treatment, at least `NULL_GROUPS_MINIMUM` in all), on BBBC021 (`phenolens.data.load("bbbc021-profiles")`,
non-finite wells dropped, whole-plate normalised, treated wells, 90th percentile, null walked in canonical well
order), percent replicating over seeds 0..N-1: mean, SD, range, the mean of the bootstrap standard error
(`null_standard_error`, the figure `profile run/evaluate` writes) and the wall time of one call. Then the streamed
path (`percent_replicating_of_unit_rows`, float32 unit rows) on a study of the scale benchmark's shape (384-well
plates, 16 controls, every treatment on 4 plates, 800 features; random rows: the cost does not depend on them).

Usage::

    python benchmarks/profiling_replicating_null.py --check                  # 20 seeds, 5..500 per treatment (about 6 minutes)
    python benchmarks/profiling_replicating_null.py --small --check          # 3 seeds, 5 and 50 per treatment, 8 plates (seconds)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from phenolens import data
from phenolens.profiling.replicates import null_standard_error, percent_replicating, percent_replicating_of_unit_rows, row_standardize
from phenolens.profiling.settings import ProfilingSettings

sys.path.insert(0, str(Path(__file__).parent))
from profiling_row_order import bbbc021_treated  # noqa: E402
from targets import Targets, add_check_option  # noqa: E402

WELLS, CONTROLS, REPLICATES, FEATURES = 384, 16, 4, 800


def seed_spread(values, treatments, ranks, repeats: int, null_minimum: int, seeds: int) -> dict:
    """Percent replicating over seeds 0..seeds-1 at one null size: spread, bootstrap error and time per call."""
    scores, errors, seconds = [], [], []
    for seed in range(seeds):
        start = time.perf_counter()
        result = percent_replicating(values, treatments, repeats, 90.0, seed, ranks, null_minimum)
        seconds.append(time.perf_counter() - start)
        scores.append(result.percent_replicating)
        errors.append(null_standard_error(result, seed=seed))
    return {
        "null_groups": len(result.null),
        "mean": float(np.mean(scores)),
        "sd": float(np.std(scores, ddof=1)),
        "low": min(scores),
        "high": max(scores),
        "bootstrap_se": float(np.mean(errors)),
        "seconds": float(np.median(seconds)),
    }


def streamed_seconds(plates: int, repeats: int, null_minimum: int) -> tuple[int, float, float]:
    """(treated wells, seconds of the streamed percent replicating, seconds of its standard error) on `plates` plates."""
    treated_per_plate = WELLS - CONTROLS
    treatments = np.arange(plates * treated_per_plate) // REPLICATES
    treatments = np.random.default_rng(0).permutation(treatments)  # replicates spread over plates
    unit = row_standardize(np.random.default_rng(1).normal(size=(len(treatments), FEATURES))).astype(np.float32)
    start = time.perf_counter()
    result = percent_replicating_of_unit_rows(unit, treatments, repeats, 90.0, 0, None, null_minimum)
    middle = time.perf_counter()
    null_standard_error(result)
    return len(treatments), middle - start, time.perf_counter() - middle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="Seeds 0..N-1 per null size.")
    parser.add_argument("--repeats", default="5,20,50,100,200,500", help="Null groups per treatment (no floor), comma-separated.")
    parser.add_argument("--plates", type=int, default=52, help="Plates of the streamed study (52 x 368 treated wells = 19,136).")
    parser.add_argument("--small", action="store_true", help="3 seeds, repeats 5 and 50, 8 plates: seconds (make bench-small)")
    add_check_option(parser)
    args = parser.parse_args()
    if args.small:
        args.seeds, args.repeats, args.plates = 3, "5,50", 8
    repeats = [int(r) for r in args.repeats.split(",")]
    defaults = ProfilingSettings()
    targets = Targets("profiling_replicating_null")
    values, treatments, ranks = bbbc021_treated(data.load("bbbc021-profiles"))
    print(f"BBBC021: {len(treatments)} treated wells, {len(set(treatments))} treatments; seeds 0-{args.seeds - 1}")
    print("| null | BBBC021 null groups | mean | seed SD | range | bootstrap SE (mean) | s per call | streamed s | its SE s |")
    print("|---|---|---|---|---|---|---|---|---|")
    nulls = [(f"{r} per treatment", r, 0) for r in repeats]
    nulls.append(
        (f"default: {defaults.null_repeats} per treatment, >= {defaults.null_minimum:,} in all", defaults.null_repeats, defaults.null_minimum)
    )
    for name, repeat, minimum in nulls:
        row = seed_spread(values, treatments, ranks, repeat, minimum, args.seeds)
        wells, streamed, error_seconds = streamed_seconds(args.plates, repeat, minimum)
        print(
            f"| {name} | {row['null_groups']:,} | {row['mean']:.4f} | {row['sd']:.4f} | {row['low']:.3f} to {row['high']:.3f} "
            f"| {row['bootstrap_se']:.4f} | {row['seconds']:.2f} | {streamed:.2f} | {error_seconds:.2f} |",
            flush=True,
        )
    print(f"streamed study: {args.plates} plates, {wells} treated wells, {wells // REPLICATES} treatments, {FEATURES} features")
    if args.seeds >= 10:  # `row` is the default's
        targets.expect("BBBC021 seed SD at the default null", row["sd"], "<=", 0.005)
        # the bootstrap estimate of the seed SD is itself noisy (a quantile's bootstrap): within a factor of 2
        targets.expect("bootstrap SE / seed SD at the default", row["bootstrap_se"] / max(row["sd"], 1e-9), "<=", 2.0)
    targets.expect("BBBC021 bootstrap SE at the default null", row["bootstrap_se"], "<=", 0.01)
    sys.exit(targets.finish(args.check))


if __name__ == "__main__":
    main()
