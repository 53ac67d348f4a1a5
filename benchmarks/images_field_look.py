"""What of a field's look is left after intensity normalisation: BBBC021 crop statistics read by the well probe, no training.

    python benchmarks/images_field_look.py            # every normalisation x every statistic (about a minute)
    python benchmarks/images_field_look.py --check    # exit status 1 when a target is missed

Each crop of `bbbc021-cells` is reduced to a few numbers per stain (DAPI, Tubulin, Actin): its mean,
standard deviation, 1st / 10th / 50th / 90th / 99th percentiles, and its sharpness (mean absolute
difference of neighbouring pixels over the standard deviation: edge strength per unit of contrast, which
no gain or offset changes). The benchmark `images_adversary.py`'s probe (logistic regression, balanced
accuracy, `domain_probe`) reads the well within the inhibitor class (B03 / B04 / B05, chance 1/3) from
those numbers, with folds mixing fields (the probe may use what is particular to a field) and grouped by
field (only what carries across a well's fields), after each `--intensity-normalization`: none, field
(each stain divided by its field's brightness), field-quantile (each field's intensity distribution mapped
onto the pooled one of all fields) and crop. Every figure is what a probe can read of the field from
pixels alone, without any network. Then the median sharpness of each field's crops, per stain.

Targets: after field-quantile the intensity statistics (mean, std, 10th percentile) read the well at most
0.05 above chance (folds mixing fields); and sharpness, which no intensity map removes, reads the same
(within 0.03) after every normalisation as before it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from phenolens.data.loaders import load
from phenolens.training.adversary import domain_codes, domain_probe
from phenolens.training.preprocess import intensity_normalized, training_quantiles

sys.path.insert(0, str(Path(__file__).parent))
from targets import Targets, add_check_option  # noqa: E402

PERCENTILES = (1, 10, 50, 90, 99)
SETS = {  # statistic sets read together by one probe
    "mean": ("mean",),
    "std": ("std",),
    **{f"p{level}": (f"p{level}",) for level in PERCENTILES},
    "sharpness": ("sharpness",),
    "mean+std+p10": ("mean", "std", "p10"),
    "quantiles+std": (*(f"p{level}" for level in PERCENTILES), "std"),
    "all": ("mean", "std", *(f"p{level}" for level in PERCENTILES), "sharpness"),
}


def crop_statistics(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per crop and stain: mean, std, percentiles and sharpness, each (N, C)."""
    pixels = images.astype(np.float64)
    std = pixels.std(axis=(2, 3))
    edges = (np.abs(np.diff(pixels, axis=3)).mean(axis=(2, 3)) + np.abs(np.diff(pixels, axis=2)).mean(axis=(2, 3))) / 2
    levels = np.percentile(pixels, PERCENTILES, axis=(2, 3))
    return {
        "mean": pixels.mean(axis=(2, 3)),
        "std": std,
        **{f"p{level}": values for level, values in zip(PERCENTILES, levels)},
        "sharpness": edges / np.maximum(std, 1e-12),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_check_option(parser)
    args = parser.parse_args()
    cells = load("bbbc021-cells").labelled()
    wells, _ = domain_codes(cells, "well")
    fields = cells.meta["field"].to_numpy()
    raw = cells.padded(int(cells.shapes().max()))
    reference = training_quantiles(cells, raw, "field", np.arange(len(cells)))  # every field pooled: no training split here
    figures: dict[str, dict[str, tuple[float, float]]] = {}
    chance = None
    print("well within the inhibitor class read from crop statistics: folds mixing fields / grouped by field")
    print("normalisation   " + "  ".join(f"{name:>13}" for name in SETS))
    for kind in ("none", "field", "field-quantile", "crop"):
        statistics = crop_statistics(intensity_normalized(cells, raw, kind, "field", reference=reference))
        figures[kind] = {}
        for name, keys in SETS.items():
            features = np.concatenate([statistics[key] for key in keys], axis=1)
            mixing = domain_probe(features, wells, None, cells.labels)
            grouped = domain_probe(features, wells, fields, cells.labels)
            chance = mixing["within_class_chance"]
            figures[kind][name] = (mixing["within_class_balanced_accuracy"], grouped["within_class_balanced_accuracy"])
        print(f"{kind:<15} " + "  ".join(f"{mixing:.3f} / {grouped:.3f}" for mixing, grouped in figures[kind].values()))
    print(f"chance {chance:.3f} ({int((cells.labels == cells.class_names.index('Protein synthesis')).sum())} inhibitor crops)")
    sharpness = pd.DataFrame(crop_statistics(raw)["sharpness"], columns=cells.channel_names).groupby(fields).median()
    print("median sharpness of each field's crops, per stain (no intensity map changes it):")
    print(sharpness.round(3).to_string())
    targets = Targets("images_field_look")
    matched = figures["field-quantile"]["mean+std+p10"][0]
    targets.expect("intensity statistics after field-quantile, minus chance (folds mixing fields)", matched - chance, "<=", 0.05)
    for kind in ("field", "field-quantile", "crop"):
        change = abs(figures[kind]["sharpness"][0] - figures["none"]["sharpness"][0])
        targets.expect(f"|sharpness after {kind} - before| (folds mixing fields)", change, "<=", 0.03)
    sys.exit(targets.finish(args.check))


if __name__ == "__main__":
    main()
