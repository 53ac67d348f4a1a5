"""Issue 20: `phenolens profile run` on a JUMP-sized synthetic study, and pycytominer side by side.

The study comes from the project's generator (`phenolens.profiling.synthetic.synthetic_study`):
P plates x 384 wells x F features (default 1,500 x 384 x 800 = 576,000 wells), one parquet file
per plate, 16 negative controls per plate, every treatment on 4 plates, plate offsets, half the
treatments active. Steps:

1. scaling: `profile run` (a subprocess, as a user runs it) on the first 130, 390, ... plates
   (50,000 wells and up) and on all P: wall time, CPU time, peak RSS of the process tree, per well;
2. reference: on a 100,000-well subset (260 plates), pycytominer's normalize (standardize on the
   negative controls, plate by plate) + feature_select (frequency, variance, correlation) on the
   concatenated frame, against phenolens's streamed equivalent (`standardize` per plate file,
   `select_features` on the normalised controls): the selected features must be identical and
   the normalised values within 1e-5, and phenolens >= 3x faster.

pycytominer's StandardScaler divides by the population SD (ddof 0), phenolens by the sample SD
(ddof 1, as it pools over plates); the comparison rescales phenolens's values by sqrt(n/(n-1)).

Usage::

    python benchmarks/profiling_scale.py --small --check          # seconds: 8 plates x 60 features
    nice -n 5 python benchmarks/profiling_scale.py --plates 390 --scaling 130,260 --check
    nice -n 5 python benchmarks/profiling_scale.py --check         # the issue's full size (~0.6 M wells)
    python benchmarks/profiling_scale.py --small --moas 8 --profile-options "--moa-column Metadata_moa --consensus modz"
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

sys.path.insert(0, str(Path(__file__).parent))
from targets import Targets, add_check_option  # noqa: E402

from phenolens.profiling.normalize import standardize  # noqa: E402
from phenolens.profiling.select import select_features  # noqa: E402
from phenolens.profiling.synthetic import synthetic_study  # noqa: E402

WELLS, CONTROLS, REPLICATES = 384, 16, 4
CONTROL_QUERY = "Metadata_pert_type == 'negcon'"
PROFILE_OPTIONS = ["--controls", CONTROL_QUERY, "--treatment-column", "Metadata_broad_sample", "--map-negatives", "plate_controls"]
GIB = 2**30


def measured(command: list[str]) -> dict:
    """Run a command; its wall time, CPU time (user + system of the children) and peak RSS of its process tree (polled).

    Its output goes to temporary files, not pipes: a pipe nobody reads while it runs fills up (one
    progress line per plate) and stops the command.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        watched, peak = psutil.Process(process.pid), 0
        while process.poll() is None:
            try:
                tree = [watched, *watched.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.2)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    peak = max(peak, after.ru_maxrss * 1024)  # the kernel's peak of the largest process: polling can miss a short peak
    return {
        "rc": process.returncode,
        "wall_s": time.perf_counter() - started,
        "cpu_s": cpu,
        "peak_rss_gib": peak / GIB,
        "stderr": stderr[-2000:],
        "stdout": stdout,
    }


def subset(files: list[Path], plates: int, folder: Path) -> Path:
    """A folder holding the first `plates` files (links), as a study of that size."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in files[:plates]:
        (folder / path.name).symlink_to(path)
    return folder


def profile_run(folder: Path, out: Path, extra: list[str]) -> dict:
    """`phenolens profile run FOLDER` as a subprocess; its measurements and headline metrics."""
    command = [sys.executable, "-m", "phenolens", "profile", "run", str(folder), *PROFILE_OPTIONS, *extra, "--out", str(out), "--overwrite"]
    result = measured(command)
    if result["rc"] != 0:
        print(result["stderr"], file=sys.stderr)
        raise SystemExit(f"profile run failed (exit {result['rc']}) on {folder}")
    metrics = json.loads((out / "metrics.json").read_text())
    result["wells"] = metrics["data"]["wells"]
    result["metrics"] = {
        rep: {k: round(metrics[rep][k], 4) for k in ("percent_replicating", "map")} for rep in ("cellprofiler", "anomaly", "concatenation")
    }
    result["selected_features"] = metrics["autoencoder"]["selected_features"]
    return result


def reference_comparison(files: list[Path]) -> dict:
    """pycytominer normalize + feature_select on the concatenated frame vs phenolens's streamed equivalent."""
    from pycytominer import feature_select, normalize

    started = time.perf_counter()
    frame = pd.concat([pd.read_parquet(path) for path in files], ignore_index=True)
    features = [c for c in frame.columns if not c.startswith("Metadata_")]
    metadata = [c for c in frame.columns if c.startswith("Metadata_")]
    frame[features] = frame[features].astype(np.float64)
    normalized = pd.concat(
        [
            normalize(plate, features=features, meta_features=metadata, samples=CONTROL_QUERY, method="standardize")
            for _, plate in frame.groupby("Metadata_Plate", sort=False)
        ],
        ignore_index=True,
    )
    controls = normalized[normalized["Metadata_pert_type"] == "negcon"]
    operations = ["frequency_threshold", "variance_threshold", "correlation_threshold"]
    kept = feature_select(controls, features=features, operation=operations)
    reference_selected = [f for f in features if f in kept.columns]
    reference_seconds = time.perf_counter() - started
    del frame, kept

    started = time.perf_counter()
    parts, control_parts = [], []
    for path in files:
        plate = pd.read_parquet(path)
        is_control = (plate["Metadata_pert_type"] == "negcon").to_numpy()
        values, _ = standardize(
            plate[features].to_numpy(dtype=np.float64), is_control, plate["Metadata_Plate"], plate["Metadata_Plate"], leave_one_out=False
        )
        parts.append(values)
        control_parts.append(values[is_control])
    ours_selected = select_features(pd.DataFrame(np.vstack(control_parts), columns=features), features)
    ours_seconds = time.perf_counter() - started

    ddof = np.sqrt(CONTROLS / (CONTROLS - 1))
    difference = np.abs(np.vstack(parts) * ddof - normalized[features].to_numpy())
    return {
        "wells": len(normalized),
        "reference_s": reference_seconds,
        "ours_s": ours_seconds,
        "speed_ratio": reference_seconds / ours_seconds,
        "selected_identical": ours_selected == reference_selected,
        "selected": len(ours_selected),
        "max_abs_difference": float(difference.max()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="8 plates x 60 features, scaling 4 and 8 plates: seconds (make bench-small)")
    parser.add_argument("--plates", type=int, default=1500, help="Plates of the end-to-end run (x 384 wells).")
    parser.add_argument("--features", type=int, default=800)
    parser.add_argument("--scaling", default="130,390", help="Smaller studies (plate counts) run first for the scaling table.")
    parser.add_argument("--reference-plates", type=int, default=260, help="Plates of the pycytominer comparison (260 = 99,840 wells); 0 skips it.")
    parser.add_argument("--profile-options", default="", help="Extra `profile run` options, e.g. '--no-curve --scheduler local:2'.")
    parser.add_argument("--workdir", type=Path, default=None, help="Where the study is generated (default: a temporary folder, removed).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--moas", type=int, default=0, help="MoAs of the study (0: no MoA column); with MoAs add '--moa-column Metadata_moa' to --profile-options."
    )
    add_check_option(parser)
    args = parser.parse_args()
    if args.small:
        args.plates, args.features, args.scaling, args.reference_plates = 8, 60, "4", 8
    sizes = sorted({int(s) for s in args.scaling.split(",") if s.strip()} | {args.plates})
    extra = args.profile_options.split()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="profiling-scale-"))
    targets = Targets("profiling_scale")
    try:
        started = time.perf_counter()
        files = synthetic_study(
            workdir / "study",
            plates=max(sizes + [args.reference_plates]),
            wells=WELLS,
            features=args.features,
            controls=CONTROLS,
            replicates=REPLICATES,
            moas=args.moas,
            seed=args.seed,
        )
        print(
            f"generated {len(files)} plates x {WELLS} wells x {args.features} features in {time.perf_counter() - started:.0f} s ({workdir / 'study'})"
        )
        rows = []
        for plates in sizes:
            result = profile_run(subset(files, plates, workdir / f"plates-{plates}"), workdir / f"run-{plates}", extra)
            rows.append(
                {
                    "plates": plates,
                    "wells": result["wells"],
                    "wall_s": round(result["wall_s"], 1),
                    "cpu_s": round(result["cpu_s"], 1),
                    "peak_rss_gib": round(result["peak_rss_gib"], 2),
                    "wall_ms_per_well": round(1000 * result["wall_s"] / result["wells"], 3),
                    "cpu_ms_per_well": round(1000 * result["cpu_s"] / result["wells"], 3),
                    "rss_kib_per_well": round(result["peak_rss_gib"] * GIB / 1024 / result["wells"], 2),
                    "selected_features": result["selected_features"],
                    **{f"{rep}_{k}": v for rep, values in result["metrics"].items() for k, v in values.items()},
                }
            )
            print(json.dumps(rows[-1]))
        table = pd.DataFrame(rows)
        shown = ["plates", "wells", "wall_s", "cpu_s", "peak_rss_gib", "wall_ms_per_well", "cpu_ms_per_well", "rss_kib_per_well"]
        print(table[shown].to_string(index=False))
        largest = rows[-1]
        if len(rows) > 1:  # bounded memory: the peak grows more slowly than the wells
            targets.expect("peak RSS per well, largest / smallest study", largest["rss_kib_per_well"] / rows[0]["rss_kib_per_well"], "<=", 1.0)
        for rep in ("cellprofiler", "anomaly", "concatenation"):
            targets.expect(f"{rep} percent replicating (half the treatments active)", largest[f"{rep}_percent_replicating"], ">=", 0.2)
        if args.plates >= 1500:
            targets.expect("wall time of 576,000 wells (s)", largest["wall_s"], "<=", 1800)
            targets.expect("peak RSS of 576,000 wells (GiB)", largest["peak_rss_gib"], "<=", 8 * 1e9 / GIB)
        if args.reference_plates:
            comparison = reference_comparison(files[: args.reference_plates])
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in comparison.items()}))
            targets.expect("selected features identical to pycytominer", float(comparison["selected_identical"]), ">=", 1.0)
            targets.expect("normalised values: max |phenolens - pycytominer|", comparison["max_abs_difference"], "<=", 1e-5)
            if not args.small:
                targets.expect("speed ratio pycytominer / phenolens (normalize + feature_select)", comparison["speed_ratio"], ">=", 3.0)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return targets.finish(args.check)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
