"""Averaging integrated-gradients maps over independently trained BBBC013 models (the nucleus known answer).

    python benchmarks/images_map_averaging.py --seeds 0,1,2,3,4,5   # the images_targets bbbc013 recipe, one run per seed
    ... --small                                                     # a minutes-scale smoke run (numbers not comparable)

For each seed: `phenolens train` with the recipe of `images_targets.py bbbc013` and `--seed S`, then
`phenolens explain --images out-of-fold --methods ig --target true`, so that every labelled crop is
explained, for its true class, by the fold model of that seed that never trained on it. Then, per
crop, the mean of the seeds' maps and of their probabilities. The figure is the one of the issue: the
share of the positive GFP attribution inside the nucleus (Otsu mask of DNA), averaged over the
NuclearGFP (and CytoplasmicGFP) crops that the mean probabilities classify correctly. It is printed
for each seed alone, for every subset of k seeds (mean, lowest, how many reach 0.80) and for all of
them. Seed folders already under --out are reused.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
from images_targets import CONFIGS

NUCLEAR_TARGET = 0.80


def main() -> None:
    from phenolens.cli.main import run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4,5")
    parser.add_argument("--out", default="runs/map-averaging")
    parser.add_argument("--small", action="store_true")
    args = parser.parse_args()
    config = CONFIGS["bbbc013"]
    small = config["small"] if args.small else []
    extra = ["--max-images", "24", "--n-steps", "8"] if args.small else []
    runs = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        model, explained = Path(args.out) / f"seed-{seed}" / "model", Path(args.out) / f"seed-{seed}" / "explain"
        if not (model / "metrics.json").exists() and run(["train", *config["train"], *small, "--seed", str(seed), "--out", str(model)]) != 0:
            raise SystemExit(f"training seed {seed} failed")
        if not (explained / "attributions.npz").exists():
            command = ["explain", str(model), "--dataset", "bbbc013", "--images", "out-of-fold", "--methods", "ig", "--target", "true"]
            if run([*command, "--nucleus-channel", "DNA", "--reporter-channel", "FKHR-GFP", *extra, "--out", str(explained)]) != 0:
                raise SystemExit(f"explaining seed {seed} failed")
        runs[seed] = read_run(model, explained)
    if any(not np.array_equal(r["sources"], next(iter(runs.values()))["sources"]) for r in runs.values()):
        raise SystemExit("the seeds explained different crops; remove their explain folders and run again")
    print(f"\nBBBC013 IG GFP share in the nucleus, maps averaged over seeds{' (--small: not comparable)' if args.small else ''}")
    for seed in runs:
        print(f"  seed {seed}: " + shares_text(averaged_shares([runs[seed]])))
    for size in range(2, len(runs) + 1):
        nuclear = [averaged_shares([runs[s] for s in subset])["NuclearGFP"] for subset in itertools.combinations(runs, size)]
        reached = sum(value >= NUCLEAR_TARGET for value in nuclear)
        print(f"  {size} seeds: NuclearGFP mean {np.mean(nuclear):.3f}, lowest {min(nuclear):.3f}, >= {NUCLEAR_TARGET}: {reached} of {len(nuclear)}")
    print("  all seeds: " + shares_text(averaged_shares(list(runs.values()))))


def read_run(model: Path, explained: Path) -> dict:
    """One seed's out-of-fold maps of the GFP channel, probabilities, labels and nucleus masks, in crop order."""
    from phenolens.nn.weights import read_card

    card = read_card(model)  # the names only: the weights are not needed
    table = pd.read_csv(explained / "per_image.csv")
    reporter = card.channel_names.index("FKHR-GFP")
    with np.load(explained / "attributions.npz") as arrays:
        order = np.argsort(table["source"].to_numpy())  # the crops in one order for every seed
        return {
            "sources": table["source"].to_numpy()[order],
            "labels": table["label"].to_numpy()[order],
            "maps": arrays["maps_integrated_gradients"][order][:, reporter],
            "proba": arrays["proba"][order],
            "masks": arrays["nucleus_masks"][order],
            "class_names": np.asarray(card.class_names),  # the order of the probability columns
        }


def averaged_shares(members: list[dict]) -> dict[str, float]:
    """The mean GFP share inside the nucleus per class, from the members' mean maps, on the crops their mean probabilities get right."""
    from phenolens.explain.masks import nucleus_mass_fraction

    first = members[0]  # every member holds the same crops in the same order (checked in main)
    maps = np.mean([m["maps"] for m in members], axis=0)[:, None]
    predicted = np.mean([m["proba"] for m in members], axis=0).argmax(1)
    fractions = nucleus_mass_fraction(maps, first["masks"], 0)
    correct = first["labels"] == first["class_names"][predicted]
    return {cls: float(np.nanmean(fractions[correct & (first["labels"] == cls)])) for cls in ("NuclearGFP", "CytoplasmicGFP")}


def shares_text(shares: dict[str, float]) -> str:
    return f"NuclearGFP {shares['NuclearGFP']:.3f} (>= {NUCLEAR_TARGET}), CytoplasmicGFP {shares['CytoplasmicGFP']:.3f} (<= 0.30)"


if __name__ == "__main__":
    main()
