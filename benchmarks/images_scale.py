"""Scoring a screen: images/s and peak memory of `images predict` and Grad-CAM `images explain` on many crops,
and the speed of explaining full-size images against commit 09e19b2 (before streaming), in one run.

    python benchmarks/images_scale.py [--small] [--check] [--work DIR] [--crops N] [--full-images K]

1. Crops: MitoCheck's 3,277 64 x 64 crops repeated with the project's own augmentation
   (`phenolens.training.augment.flips_and_rotations`, seed 0) into Zarr screens of N and N / 10 crops
   (default 100,000 and 10,000; --small 3,000 and 1,000, in chunks of 256). Each screen goes through
   ``images predict`` and ``images explain --methods gradcam --images all`` (default checks) in a
   subprocess; images/s and the subprocess's peak RSS (``ru_maxrss``) are printed.
   Target: peak RSS at N <= 1.2 x peak RSS at N / 10, for both commands (--small compares N / 3 and only prints it).
2. Full-size images (run first): K two-channel 260 x 348 wells (default 8; --small 2), each tiled from 12 BBBC013
   crops of one class, explained with ``--methods gradcam,ig`` and the default checks by this tree and by
   commit 09e19b2 (``git archive`` into a temporary folder, same Python, same images and model), one after
   the other in this run. Target: >= 4x the images/s of 09e19b2 (--small uses 10 IG steps in both and
   only checks that the new code is not slower).

The networks are seeded, untrained ResNet-18s (width 0.25, stride-2 stem, as `phenolens train` makes
by default): speed and memory do not depend on the weights. Subprocesses run with the process's
OMP_NUM_THREADS (printed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from targets import Targets, add_check_option  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "09e19b2"  # main before streaming (the comparison of the issue)
CLI = """
import json, os, resource, runpy, sys, time
sys.argv = ["phenolens", *sys.argv[2:]]
started = time.perf_counter()
try:
    runpy.run_module("phenolens", run_name="__main__")
    code = 0
except SystemExit as stop:
    code = stop.code or 0
with open(os.environ["BENCH_RESULT"], "w") as out:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    json.dump({"code": code, "seconds": time.perf_counter() - started, "cpu_seconds": cpu, "max_rss_mb": usage.ru_maxrss / 1024}, out)
"""


def cli(source: Path, args: list[str], work: Path) -> dict:
    """Run the phenolens CLI of `source` (a src folder) in a subprocess; its exit code, seconds and peak RSS."""
    result = work / f"result-{time.monotonic_ns()}.json"
    env = {**os.environ, "PYTHONPATH": str(source), "BENCH_RESULT": str(result), "PHENOLENS_LOG": "WARNING"}
    done = subprocess.run([sys.executable, "-c", CLI, "--", *map(str, args)], env=env, capture_output=True, text=True)
    if done.returncode != 0 or not result.is_file() or json.loads(result.read_text())["code"] != 0:
        raise SystemExit(f"phenolens {' '.join(map(str, args))} failed:\n{done.stderr[-3000:]}")
    return json.loads(result.read_text())


def save_model(folder: Path, channels: int, classes: list[str], size: int, mean: float, std: float) -> Path:
    """A seeded, untrained default classifier saved as `phenolens train` saves one."""
    import torch

    from phenolens.nn.backbones import build_backbone
    from phenolens.training import ChannelNormalization, ImageClassifier

    torch.manual_seed(0)
    hyperparameters = {"in_channels": channels, "n_classes": len(classes), "width": 0.25, "stem_stride": 2, "loss": "composite"}
    model = build_backbone("resnet18", **hyperparameters).eval()
    names = ["DNA"] if channels == 1 else ["GFP", "DNA"]
    norm = ChannelNormalization(np.full(channels, mean, np.float32), np.full(channels, std, np.float32))
    ImageClassifier(model, classes, names, size, norm, settings={"hyperparameters": hyperparameters}).save(folder)
    return folder


def crop_screen(store: Path, count: int, crops, seed: int = 0) -> Path:
    """A Zarr screen of `count` MitoCheck crops, each an augmented copy (flips, turns, small rotations) of one crop."""
    import pandas as pd
    import torch
    import zarr

    from phenolens.training.augment import flips_and_rotations

    base = torch.from_numpy(np.stack(crops.images).astype(np.float32))
    generator = torch.Generator().manual_seed(seed)
    group = zarr.open_group(str(store), mode="w")
    array = group.create_array("images", shape=(count, 1, 64, 64), chunks=(1024, 1, 64, 64), dtype="uint8")
    for start in range(0, count, 4096):
        index = np.arange(start, min(start + 4096, count)) % len(base)
        array[start : start + len(index)] = flips_and_rotations(base[index], generator).clamp(0, 255).round().to(torch.uint8).numpy()
    group.attrs["channel_names"] = ["DNA"]
    labels = np.asarray(crops.class_names)[crops.labels[np.arange(count) % len(base)]]
    pd.DataFrame({"label": labels, "well": [f"W{i // 200:05d}" for i in range(count)]}).to_parquet(store / "metadata.parquet")
    return store


def full_size_wells(folder: Path, count: int, seed: int = 0) -> Path:
    """`count` two-channel 260 x 348 wells, half NuclearGFP, half CytoplasmicGFP, each tiled from 12 BBBC013 crops."""
    import tifffile

    from phenolens.data import load

    cells = load("bbbc013")
    rng = np.random.default_rng(seed)
    for label in ("NuclearGFP", "CytoplasmicGFP"):
        crops = [cells.images[i] for i in np.flatnonzero(cells.labels == cells.class_names.index(label))]
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(count // 2):
            canvas = np.zeros((2, 260, 348), np.uint8)
            for _ in range(12):
                crop = crops[rng.integers(len(crops))]
                h, w = crop.shape[1:]
                y, x = rng.integers(0, 260 - h), rng.integers(0, 348 - w)
                canvas[:, y : y + h, x : x + w] = np.maximum(canvas[:, y : y + h, x : x + w], crop)
            tifffile.imwrite(folder / label / f"W{i:03d}.tif", canvas)
    return folder


def before_source(work: Path) -> Path | None:
    """The src folder of commit 09e19b2 (git archive), or None outside a git checkout that has it."""
    target = work / f"src-{BEFORE}"
    if (target / "phenolens").is_dir():
        return target
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", BEFORE, "src"], capture_output=True)
    if archive.returncode != 0:
        return None
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive.stdout, check=True)
    (work / "src").rename(target)
    return target


def crop_screens(targets: Targets, here: Path, work: Path, crops_n: int, small: bool) -> None:
    """Part 1: predict and Grad-CAM on Zarr screens of crops_n / 10 and crops_n crops; images/s and the peak-RSS ratio."""
    from phenolens.data import load

    mitocheck = load("mitocheck")
    model = save_model(work / "crop-model", 1, list(mitocheck.class_names), 64, 30.0, 40.0)
    # Below ~10,000 crops the process is still growing towards its plateau (measured, predict: peak RSS 585 MB at
    # 300 crops, 617 at 1,000, 736-756 at 3,000, 821 at 10,000, 883 at 100,000), and a few thousand 64 x 64 crops
    # weigh too little (12 MB as float32) for any test of growth: --small prints the ratio and checks nothing.
    smaller = crops_n // 3 if small else crops_n // 10
    results = {}
    for count in (smaller, crops_n):
        store = crop_screen(work / f"crops-{count}.zarr", count, mitocheck)
        # --small: chunks of 256, so that both screens span several chunks (the default, 1,024, would hold all of the small one)
        screen = ["--zarr", store, "--overwrite", *(["--chunk-size", "256"] if small else [])]
        predict = cli(here, ["images", "predict", model, *screen, "--group-by", "well", "--out", work / f"predict-{count}"], work)
        gradcam = ["--methods", "gradcam", "--images", "all"]
        explain = cli(here, ["images", "explain", model, *screen, *gradcam, "--out", work / f"explain-{count}"], work)
        results[count] = {"predict": predict, "explain": explain}
        for name, run in results[count].items():
            rate = count / run["seconds"]
            print(f"  {name:<8} {count:>7,} crops: {rate:8.1f} images/s, peak RSS {run['max_rss_mb']:.0f} MB ({run['seconds']:.0f} s)")
    for name in ("predict", "explain"):
        ratio = results[crops_n][name]["max_rss_mb"] / results[smaller][name]["max_rss_mb"]
        print(f"  {name}: peak RSS at {crops_n:,} / at {smaller:,} crops = {ratio:.3f}")
        if not small:
            targets.expect(f"{name} peak RSS ratio {crops_n:,} vs {smaller:,}", ratio, "<=", 1.2)


def full_size_comparison(targets: Targets, here: Path, work: Path, wells_n: int, small: bool) -> None:
    """Part 2: full-size wells explained by this tree and by 09e19b2, one after the other; the speed ratio."""
    wells = full_size_wells(work / "wells", wells_n)
    full_model = save_model(work / "well-model", 2, ["CytoplasmicGFP", "NuclearGFP"], 348, 20.0, 30.0)
    steps = ["--n-steps", "10"] if small else []
    explain = ["explain", full_model, "--folder", wells, "--channels", "GFP,DNA", "--methods", "gradcam,ig", *steps]
    before = before_source(work)
    new = cli(here, [*explain, "--out", work / "wells-new", "--overwrite"], work)
    rate = wells_n / new["seconds"]
    print(f"  this tree: {wells_n} wells of 2 x 260 x 348 px in {new['seconds']:.0f} s ({new['cpu_seconds']:.0f} s CPU): {rate:.3f} images/s")
    if before is None:
        print(f"  commit {BEFORE} is not in this checkout: no comparison")
    else:
        old = cli(before, [*explain, "--out", work / "wells-before", "--overwrite"], work)
        ratio = old["seconds"] / new["seconds"]
        cpu_ratio = old["cpu_seconds"] / new["cpu_seconds"]
        print(
            f"  {BEFORE}:  {wells_n} wells in {old['seconds']:.0f} s ({old['cpu_seconds']:.0f} s CPU): {wells_n / old['seconds']:.3f} images/s; "
            f"speed ratio {ratio:.2f}x (CPU time ratio {cpu_ratio:.2f}x: a shared machine slows both runs unevenly)"
        )
        targets.expect("full-size explain speed ratio vs 09e19b2", ratio, ">=", 1.0 if small else 4.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="3,000 crops and 2 full-size wells (CI).")
    parser.add_argument("--crops", type=int, default=None, help="Crops of the large screen (default 100,000; --small 3,000; 0 skips part 1).")
    parser.add_argument(
        "--full-images", type=int, default=None, help="Full-size wells explained by both versions (default 8; --small 2; 0 skips part 2)."
    )
    parser.add_argument("--work", type=Path, default=None, help="Working folder (default: a temporary one).")
    add_check_option(parser)
    args = parser.parse_args()
    crops_n = args.crops if args.crops is not None else (3_000 if args.small else 100_000)
    wells_n = args.full_images if args.full_images is not None else (2 if args.small else 8)
    work = args.work or Path(tempfile.mkdtemp(prefix="images-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    here = ROOT / "src"
    sys.path.insert(0, str(here))
    targets = Targets("images_scale")
    print(f"images_scale: {crops_n:,} crops, {wells_n} full-size wells, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, work {work}")

    if wells_n:
        full_size_comparison(targets, here, work, wells_n, args.small)
    if crops_n:
        crop_screens(targets, here, work, crops_n, args.small)
    sys.exit(targets.finish(args.check))


if __name__ == "__main__":
    main()
