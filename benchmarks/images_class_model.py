"""Class-model visualisation known answer on BBBC013: the NuclearGFP class model puts its GFP in the nucleus.

    python benchmarks/images_class_model.py              # seeds 0, 1, 2; target: ratio >= 2 on 3 of 3 seeds
    python benchmarks/images_class_model.py --seeds 1    # one seed
    ... --small                                          # a smoke run of the same pipeline (figures not comparable)
    ... --check                                          # exit status 1 when a target is missed

Per seed it runs `phenolens images train --dataset bbbc013 --arch vgg --size 64 --width 0.25 --epochs 30`
and `phenolens images visualise MODEL --dataset bbbc013 --hold DNA` (as a user would, in child
processes) into --out/seed-S/{model,visualise}. The DNA channel is held at the mean of the labelled
crops, whose nucleus sits at the centre; the GFP channel is optimised. The measure is the share of the
class model's GFP intensity inside the central disc of nucleus size (radius from the mean Otsu nucleus
area of the labelled 64-px crops), NuclearGFP over CytoplasmicGFP. Also printed: the probability the
network gives each class model for its own class (a class model it does not recognise shows nothing).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from running import phenolens  # noqa: E402
from targets import Targets, add_check_option  # noqa: E402

TRAIN = ["--dataset", "bbbc013", "--arch", "vgg", "--size", "64", "--width", "0.25", "--epochs", "30"]
SMALL_TRAIN = ["--epochs", "2", "--width", "0.125"]
VISUALISE = ["--dataset", "bbbc013", "--hold", "DNA"]
SMALL_VISUALISE = ["--steps", "16"]


def nucleus_radius(size: int) -> float:
    """Radius (px) of the disc with the mean nucleus area of the labelled BBBC013 crops, padded to `size`."""
    from phenolens.data.loaders import load
    from phenolens.data.nuclei import nucleus_masks
    from phenolens.training.preprocess import padded_array

    images = load("bbbc013").labelled()
    crops = padded_array(images, size, images.channel_names)
    return float(np.sqrt(nucleus_masks(crops, images.channel_names.index("DNA")).sum(axis=(1, 2)).mean() / np.pi))


def main() -> None:
    from phenolens.explain.class_model import central_disc_share

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/images-class-model")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--small", action="store_true")
    add_check_option(parser)
    args = parser.parse_args()
    seeds = [0] if args.small else [int(s) for s in args.seeds.split(",")]
    radius = nucleus_radius(64)
    print(f"nucleus radius {radius:.2f} px (the disc covers {np.pi * radius**2 / 64**2:.3f} of the crop)")
    ratios = {}
    for seed in seeds:
        model, pictures = Path(args.out) / f"seed-{seed}" / "model", Path(args.out) / f"seed-{seed}" / "visualise"
        phenolens("images", "train", *TRAIN, *(SMALL_TRAIN if args.small else []), "--seed", str(seed), "--out", str(model), "--overwrite")
        phenolens("images", "visualise", str(model), *VISUALISE, *(SMALL_VISUALISE if args.small else []), "--out", str(pictures), "--overwrite")
        saved = np.load(pictures / "class_models.npz")
        classes, channels = saved["classes"].tolist(), saved["channels"].tolist()
        shares = dict(zip(classes, central_disc_share(saved["images"][:, channels.index("FKHR-GFP")], radius).tolist()))
        own = json.loads((pictures / "metrics.json").read_text())["own_class_probability"]
        trained = json.loads((model / "metrics.json").read_text())
        ratios[seed] = shares["NuclearGFP"] / max(shares["CytoplasmicGFP"], 1e-12)
        print(
            f"seed {seed}: GFP share in the nucleus disc NuclearGFP {shares['NuclearGFP']:.3f}, CytoplasmicGFP {shares['CytoplasmicGFP']:.3f}, "
            f"NoGFP {shares['NoGFP']:.3f}; ratio {ratios[seed]:.2f}; own-class probability "
            + ", ".join(f"{name} {p:.3f}" for name, p in own.items())
            + f"; held-out macro-F1 {trained['macro_f1']:.3f}"
        )
    targets = Targets(f"images_class_model{' --small' if args.small else ''}")
    if args.small:  # the pipeline runs end to end and measures a share for every class
        targets.expect("finite ratio (small)", float(np.isfinite(list(ratios.values())).all()), "==", 1.0)
    else:
        met = sum(ratio >= 2.0 for ratio in ratios.values())
        print("ratio per seed: " + ", ".join(f"{seed} {ratio:.2f}" for seed, ratio in ratios.items()))
        targets.expect(f"seeds with ratio >= 2 (of {len(ratios)})", met, ">=", len(ratios))
    sys.exit(targets.finish(args.check))


if __name__ == "__main__":
    main()
