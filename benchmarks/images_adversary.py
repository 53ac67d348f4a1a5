"""Domain-adversarial training on BBBC021 cells: is the well still readable from the embedding, and what does the class lose?

    python benchmarks/images_adversary.py                 # seeds 0, 1, 2: --adversary-column well against the same training without it
    python benchmarks/images_adversary.py --seeds 0       # one seed
    python benchmarks/images_adversary.py --by-class off  # Ganin & Lempitsky's adversary, not told the class
    python benchmarks/images_adversary.py --weight 5      # --adversary-weight (default 1)
    ... --small                                           # a one-epoch smoke run of the same pipeline (figures not comparable)
    ... --check                                           # exit status 1 when a target is missed

Each seed runs `phenolens images train --dataset bbbc021-cells --group-by field --adversary-column well`
(as a user would, in a child process) into --out/seed-S; the run trains the same network on the same
field-grouped split without the adversary too, and its metrics.json holds both macro-F1s and a linear
probe of the well on each model's embedding (logistic regression, folds grouped by field, balanced
accuracy; chance 1 / number of wells), and the same probe with folds that mix the fields.

All DMSO crops come from well B02 and all inhibitor crops from B03-B05, so the class alone tells B02
from the rest: a probe given only the class reaches 0.5 balanced accuracy (chance 0.25) and no
embedding that keeps the class can go below it. The well information an adversary can remove without
removing the class is the well within a class (B03 / B04 / B05 among the inhibitor crops, chance 1/3).
Targets: that within-class figure <= chance + 0.10 with the adversary, and macro-F1 (mean over seeds)
at most 0.03 below the training without the adversary. The marginal figure is printed beside the
class-only bound.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from targets import Targets, add_check_option  # noqa: E402

TRAIN = ["--dataset", "bbbc021-cells", "--group-by", "field", "--epochs", "20", "--adversary-column", "well"]
SMALL = ["--epochs", "1", "--width", "0.125", "--blocks", "1,1"]


def train(seed: int, out: Path, small: bool, by_class: bool, weight: float) -> dict:
    """Run `phenolens images train` with the adversary (and its baseline) for one seed; return its metrics.json."""
    options = [*TRAIN, *(SMALL if small else []), "--adversary-weight", str(weight), "--seed", str(seed), "--out", str(out), "--overwrite"]
    if not by_class:
        options.append("--no-adversary-by-class")
    status = subprocess.run([sys.executable, "-m", "phenolens", "images", "train", *options], check=False).returncode
    if status != 0:
        raise SystemExit(f"phenolens images train failed with exit status {status} (seed {seed})")
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/images-adversary")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--by-class", choices=("on", "off"), default="on", help="tell the adversary the class (the default of --adversary-column)")
    parser.add_argument("--weight", type=float, default=1.0, help="--adversary-weight")
    parser.add_argument("--small", action="store_true")
    add_check_option(parser)
    args = parser.parse_args()
    seeds = [0] if args.small else [int(s) for s in args.seeds.split(",")]
    runs = {seed: train(seed, Path(args.out) / f"seed-{seed}", args.small, args.by_class == "on", args.weight) for seed in seeds}
    print(f"\nbbbc021-cells, well adversary{' told the class' if args.by_class == 'on' else ''}, split and probe grouped by field")
    print("seed  macro-F1 with / without   well from embedding with / without (class alone)   well within class with / without")
    for seed, metrics in runs.items():
        adversary = metrics["adversary"]
        with_, without = adversary["with_adversary"], adversary["without_adversary"]
        print(
            f"{seed:>4}  {metrics['macro_f1']:.3f} / {adversary['macro_f1_without_adversary']:.3f}"
            f"{'':>14}{with_['balanced_accuracy']:.3f} / {without['balanced_accuracy']:.3f} ({with_['class_only_balanced_accuracy']:.3f})"
            f"{'':>21}{with_['within_class_balanced_accuracy']:.3f} / {without['within_class_balanced_accuracy']:.3f}"
        )
    print("folds that mix fields (the probe may also use what is particular to a field), with / without the adversary:")
    for seed, metrics in runs.items():
        with_, without = (metrics["adversary"][key]["ungrouped"] for key in ("with_adversary", "without_adversary"))
        print(
            f"{seed:>4}  well from embedding {with_['balanced_accuracy']:.3f} / {without['balanced_accuracy']:.3f}, "
            f"within class {with_['within_class_balanced_accuracy']:.3f} / {without['within_class_balanced_accuracy']:.3f}"
        )
    first = next(iter(runs.values()))["adversary"]["with_adversary"]
    print(f"chance: {first['chance']:.3f} over all crops, {first['within_class_chance']:.3f} within class ({first['within_class_images']} crops)")
    drop = float(np.mean([m["adversary"]["macro_f1_without_adversary"] - m["macro_f1"] for m in runs.values()]))
    within = float(np.mean([m["adversary"]["with_adversary"]["within_class_balanced_accuracy"] for m in runs.values()]))
    marginal = float(np.mean([m["adversary"]["with_adversary"]["balanced_accuracy"] for m in runs.values()]))
    class_only = float(np.mean([m["adversary"]["with_adversary"]["class_only_balanced_accuracy"] for m in runs.values()]))
    chance = first["chance"]
    print(f"mean over seeds: well from embedding {marginal:.3f} (class alone {class_only:.3f}, chance {chance:.3f}), within class {within:.3f}")
    print(f"macro-F1 drop from the adversary, mean over seeds: {drop:+.3f}")
    targets = Targets(f"images_adversary{' --small' if args.small else ''}")
    if args.small:  # the pipeline runs and measures what it should: the chance levels of 4 wells and of B03-B05
        targets.expect("|chance over all crops - 1/4| (small)", abs(first["chance"] - 1 / 4), "<=", 1e-9)
        targets.expect("|within-class chance - 1/3| (small)", abs(first["within_class_chance"] - 1 / 3), "<=", 1e-9)
    else:
        targets.expect("well within class from embedding, with the adversary, minus chance", within - first["within_class_chance"], "<=", 0.10)
        targets.expect("macro-F1 drop from the adversary (mean over seeds)", drop, "<=", 0.03)
    sys.exit(targets.finish(args.check))


if __name__ == "__main__":
    main()
