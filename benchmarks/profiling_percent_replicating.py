"""Percent replicating: vectorised phenolens vs the slow reference vs cytominer-eval, side by side.

A synthetic LINCS-sized screen (phenolens.profiling.synthetic; ~34,000 treated wells x 600
features, 8,400 treatments x 4 replicates) is scored by
  1. phenolens.profiling.replicates.percent_replicating (vectorised),
  2. phenolens.profiling.reference.reference_percent_replicating (loops, one np.corrcoef per pair),
     given the very null groups (1) drew, so both must return the same value,
  3. cytominer-eval's replicate_reproducibility (if installed), whose per-treatment median
     replicate correlations must equal ours. cytominer-eval 0.1 builds the full melted well x well
     similarity table (34,000^2 / 2 = 578 M rows), so it runs on a random subset of treatments
     (--cytominer-wells); it also still uses np.float / np.str, removed in numpy 2, which this
     script restores as aliases of float / str before importing it.
Timings are wall-clock seconds measured in one process, one after the other; the ratios are what
to compare (the absolute numbers depend on the machine's load).

    python benchmarks/profiling_percent_replicating.py            # full size
    python benchmarks/profiling_percent_replicating.py --small    # seconds, for CI
    python benchmarks/profiling_percent_replicating.py --small --check   # exit 1 when a target is missed

Targets: the vectorised value equals the reference's (same null groups); it is at least 5x faster
than the reference; the twelve-plate shape of issue 20 (48 replicates per treatment, 60
treatments) draws its null groups; with cytominer-eval installed, the per-treatment medians agree.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from phenolens.profiling.reference import null_groups, reference_percent_replicating
from phenolens.profiling.replicates import percent_replicating
from phenolens.profiling.synthetic import synthetic_screen

sys.path.insert(0, str(Path(__file__).parent))
from targets import Targets, add_check_option  # noqa: E402

FULL = {"plates": 100, "batches": 25, "controls_per_plate": 4, "moas": 35, "compounds_per_moa": 40, "doses": 6, "replicates": 4, "features": 600}
SMALL = {"plates": 12, "batches": 3, "controls_per_plate": 4, "moas": 5, "compounds_per_moa": 8, "doses": 3, "replicates": 4, "features": 100}


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def cytominer_eval_medians(values: np.ndarray, treatments: np.ndarray):
    """Median replicate correlation per treatment from cytominer-eval, or None if it is not installed."""
    try:
        np.float, np.str = float, str  # cytominer-eval 0.1 predates numpy 2
        from cytominer_eval.operations import replicate_reproducibility
        from cytominer_eval.transform import metric_melt
    except ImportError:
        return None
    import pandas as pd

    features = [f"f{i}" for i in range(values.shape[1])]
    table = pd.concat([pd.DataFrame({"Metadata_Treatment": treatments}), pd.DataFrame(values, columns=features)], axis=1)
    melted = metric_melt(table, features, ["Metadata_Treatment"], eval_metric="replicate_reproducibility", similarity_metric="pearson")
    _, medians = replicate_reproducibility(melted, ["Metadata_Treatment"], 0.9, return_median_correlations=True)
    return medians.set_index("Metadata_Treatment")["similarity_metric"].sort_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="A small screen (seconds).")
    parser.add_argument("--cytominer-wells", type=int, default=2400, help="Treated wells given to cytominer-eval (all of them with --small).")
    parser.add_argument("--seed", type=int, default=0)
    add_check_option(parser)
    args = parser.parse_args()
    targets = Targets("profiling_percent_replicating")
    screen = synthetic_screen(**(SMALL if args.small else FULL), seed=args.seed)
    treated = screen[screen["Metadata_PertType"] == "trt"].reset_index(drop=True)
    features = [c for c in treated if not c.startswith("Metadata_")]
    values, treatments = treated[features].to_numpy(), treated["Metadata_Treatment"].to_numpy()
    print(f"screen: {len(treated):,} treated wells x {len(features)} features, {len(set(treatments)):,} treatments")

    # 5 groups per treatment and no floor on the null (`null_minimum=0`): the loop reference is slow, and this compares the code, not the null's size
    fast, fast_seconds = timed(percent_replicating, values, treatments, null_repeats=5, seed=args.seed, null_minimum=0)
    (slow_score, slow_medians, slow_threshold), slow_seconds = timed(
        reference_percent_replicating, values, treatments, null_groups(treatments, 5, args.seed, null_minimum=0)
    )
    same = np.isclose(fast.percent_replicating, slow_score) and np.allclose(fast.treatments["replicate_correlation"], list(slow_medians.values()))
    print(f"phenolens (vectorised): {fast.percent_replicating:.4f} replicating, threshold {fast.threshold:.4f}, {fast_seconds:.2f} s")
    print(f"reference (loops):      {slow_score:.4f} replicating, threshold {slow_threshold:.4f}, {slow_seconds:.2f} s")
    print(f"same value: {same}; speed-up vs reference: {slow_seconds / fast_seconds:.0f}x")
    targets.expect("vectorised == reference (1 = same value)", float(same), "==", 1)
    targets.expect("speed-up vs the loop reference", slow_seconds / max(fast_seconds, 1e-9), ">=", 5)
    twelve = percent_replicating(
        np.random.default_rng(args.seed).normal(size=(60 * 48, 50)), np.repeat(np.arange(60), 48), seed=args.seed, null_minimum=0
    )
    targets.expect("twelve-plate shape (48 replicates, 60 treatments): null groups drawn", float(len(twelve.null) == 5 * 60), "==", 1)

    rng = np.random.default_rng(args.seed)
    if args.small or args.cytominer_wells >= len(treated):
        subset = np.arange(len(treated))
    else:
        names = np.unique(treatments)
        chosen = rng.choice(names, size=max(2, args.cytominer_wells * len(names) // len(treated)), replace=False)
        subset = np.flatnonzero(np.isin(treatments, chosen))
    medians, cytominer_seconds = timed(cytominer_eval_medians, values[subset], treatments[subset])
    if medians is None:
        print("cytominer-eval: not installed (pip install cytominer-eval); skipped")
        sys.exit(targets.finish(args.check))
    ours, ours_seconds = timed(percent_replicating, values[subset], treatments[subset], null_repeats=5, seed=args.seed)
    agree = np.allclose(medians.to_numpy(), ours.treatments["replicate_correlation"].to_numpy())
    print(
        f"cytominer-eval on {len(subset):,} wells: {cytominer_seconds:.2f} s; phenolens on the same wells: {ours_seconds:.3f} s "
        f"({cytominer_seconds / ours_seconds:.0f}x faster); per-treatment median replicate correlations equal: {agree}"
    )
    targets.expect("medians equal cytominer-eval's (1 = equal)", float(agree), "==", 1)
    sys.exit(targets.finish(args.check))


if __name__ == "__main__":
    main()
