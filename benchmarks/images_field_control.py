"""What issue 24's "unseen-field" well probe measures: fields of ONE well read by the same probe (a control, no target).

    python benchmarks/images_field_control.py --runs /tmp/img17/mixstyle --seeds 0-9   # round 3's saved networks (read-only)
    python benchmarks/images_field_control.py --small --out runs/bench-small/field-control   # one tiny network trained (seconds)

Declared (session 17, this docstring committed before any figure of this control was computed). Read-only: no network
is trained except the tiny one of `--small`; nothing is tuned.

Why. Round 3 of issue 24's image target (`benchmarks/images_adversary.py --style-mixing`, part (b)) reads the well within
the inhibitor class (B03 / B04 / B05) on the crops of fields the network never trained on. In `bbbc021-cells` every field
lies in one well (B02: 4 fields, all DMSO; B03: 4; B04: 4; B05: 1), and with a field-grouped split the unseen inhibitor
crops are three fields: on nine seeds of ten two of one well and one of another, so that reading is, in effect, "can an
unseen field of one well be told from an unseen field of another". The control asks the same probe to tell apart two
fields of the SAME well.

The probe. `phenolens.training.adversary.domain_probe`, the code behind `embedding_probes` and the benchmark's figures
(logistic regression on standardised features, balanced classes, 5 stratified folds mixing the crops of the fields, the
run's seed; balanced accuracy); no second probe is written. A "pair reading" is `domain_probe` on the crops of two
fields, its domain the field (the two fields labelled as if they were two wells), every crop of both fields (their
counts as they are: 34-59 crops per inhibitor field, 86-123 per B02 field), chance 0.5; the figure is its balanced
accuracy minus 0.5. Pairs:
  - different-well pairs (D): two inhibitor fields of two different wells (B03 x B04, B03 x B05, B04 x B05: 24 pairs);
  - same-well pairs (S): two fields of B03 or two of B04 (12 pairs): the same class and the same range of crop counts as D;
  - B02 pairs (reported beside, not in the reading): two fields of B02 (6 pairs; DMSO, larger fields).
Which crops. The run's split is recomputed as `images train` makes it (`training.splits.stratified_split`: the test split,
`--test-fraction` grouped by field and seeded by the run's seed, then the validation split, `--validation-fraction`,
within the rest) and checked against the run's held_out.csv (the same crops, else the script stops). Every field is
wholly trained on or wholly not. Per network and seed, the pairs are read on (i) all crops: every pair; (ii) the crops
trained on: pairs of two trained-on fields; (iii) the crops not trained on (validation and held-out fields): pairs of
two unseen fields. Each seed's figure for a group (D, S, B02) on a subset is the mean over its pairs there, undefined
when it has none (on (iii) S is defined on every seed and D on nine: seed 5's unseen inhibitor fields are all B04).
Beside them, on each subset: (W) the benchmark's within-class well probe (`domain_probe(features, well, None, class)`,
as `embedding_probes` reads "ungrouped" / "trained_images" / "unseen_images"; it must reproduce the run's metrics.json
to 1e-12 on (i), (ii) and (iii), a check of the path, and the script stops otherwise) and (F) the within-well field probe
(`domain_probe(features, field, None, well)`: within each well with two or more fields in the subset, the field, chance
1 / its fields there, averaged weighted by crops; B05 never counts, it has one field), each minus its chance.
Representations. Each saved network of round 3 (`--runs R`: `R/seed-S` with MixStyle and `R/baseline/seed-S` without;
`ImageClassifier.load`, eval mode, `ImageClassifier.embed` of all 800 labelled crops given at once: the run's own
per-field intensity normalisation and channel standardisation, as `images predict` applies them). And a network-free
reference, the same for every seed but for its fold seed and its subsets: per stain, the crop's mean, standard deviation
and sharpness (`images_field_look.crop_statistics`) after the run's intensity normalisation (`field`).
Per seed the paired difference D - S on each subset (the seeds where both are defined). Over seeds: mean, standard error
(ddof 1, over sqrt(n)) and one-sided 90 % bounds (mean -/+ t(0.90, n - 1) standard errors), `images_adversary.seed_spread`.
The reading (decisive on (iii), the subset of part (b); (i) and (ii) are read by the same rule and reported), for each
representation apart:
  - "the well beyond the field" when the lower bound of D - S is above 0: fields of different wells are told apart better
    than fields of one well; the well carries signal beyond the field on new fields, and part (b) is a fair target for the
    excess (S on (iii) is then the floor a method that removes only the well would leave; stated against part (b)'s 0.10);
  - "the field" when the lower bound of D - S is not above 0 AND the lower bound of S is above 0 (fields of one well are
    readable, settled, and fields of two wells are not read detectably more): the unseen-field reading measures the field
    (its look, focus, density), not the well. If in addition S's mean on (iii) is at least 0.10, part (b)'s line
    (chance + 0.10) is at or below what two fields of one well read, and no method that removes only the well can be
    expected to meet it; the upper bound of D - S is stated as the largest well excess the seeds leave room for;
  - "undecided" otherwise (neither S nor D - S settled above 0).
The verdict for part (b) is the reading of the two round-3 networks when they agree (MixStyle is the judged network, its
baseline the same training without it); when they disagree both are reported and no verdict is drawn. The pixel reference
says what the pixels alone give and changes no verdict.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from phenolens.core.errors import PhenolensError
from phenolens.core.runs import load_run
from phenolens.data.containers import ImageSet
from phenolens.data.loaders import load
from phenolens.training.adversary import domain_codes, domain_probe
from phenolens.training.classifier import ImageClassifier
from phenolens.training.evaluation import HELD_OUT_TABLE
from phenolens.training.preprocess import intensity_normalized
from phenolens.training.settings import ImageTrainingSettings
from phenolens.training.splits import group_column, stratified_split

sys.path.insert(0, str(Path(__file__).parent))
from images_adversary import PROBED, STYLE, parse_seeds, seed_spread, train  # noqa: E402
from images_field_look import crop_statistics  # noqa: E402

DIFFERENT, SAME, SINGLE = "different well", "same well", "one-well class"  # the kinds of field pair (docstring above)
SUBSETS = ("all", "trained", "unseen")  # (i), (ii), (iii): every pair, pairs of two trained-on fields, pairs of two unseen fields
METRICS_KEYS = {"all": "ungrouped", "trained": "trained_images", "unseen": "unseen_images"}  # the run's own probe of each subset
PIXEL_STATISTICS = ("mean", "std", "sharpness")  # the network-free reference, per stain
PATH_TOLERANCE = 1e-12
LABELS = {DIFFERENT: "D", SAME: "S", "D - S": "D-S", SINGLE: "B02", "W": "W", "F": "F"}  # the per-seed lines


def field_pairs(fields: pd.DataFrame) -> pd.DataFrame:
    """Every pair of fields of one class, and its kind: two wells, one well of a class with several, or the one well of its class.

    Parameters
    ----------
    fields : DataFrame
        One row per field: columns ``field``, ``well`` and ``label`` (its class).

    Returns
    -------
    DataFrame
        One row per pair (``first``, ``second``, in the order of `fields`) and its ``kind``: `DIFFERENT` (two wells of one class),
        `SAME` (two fields of one well, in a class spanning several wells) or `SINGLE` (two fields of the one well of its class).
    """
    rows = []
    wells_of_class = fields.groupby("label")["well"].nunique()
    for (_, first), (_, second) in itertools.combinations(fields.iterrows(), 2):
        if first["label"] != second["label"]:
            continue  # the class tells them apart: not a question about the well
        if first["well"] != second["well"]:
            kind = DIFFERENT
        else:
            kind = SAME if wells_of_class[first["label"]] > 1 else SINGLE
        rows.append({"first": first["field"], "second": second["field"], "kind": kind})
    return pd.DataFrame(rows, columns=["first", "second", "kind"])


def pairs_in(pairs: pd.DataFrame, trained_fields: set, subset: str) -> pd.DataFrame:
    """The pairs read on a subset of the crops: "all", "trained" (both fields trained on) or "unseen" (neither).

    Parameters
    ----------
    pairs : DataFrame
        `field_pairs`.
    trained_fields : set
        The fields the network trained on.
    subset : str
        One of `SUBSETS`.

    Returns
    -------
    DataFrame
        The rows of `pairs` whose two fields both lie in the subset.
    """
    if subset == "all":
        return pairs
    trained = pairs["first"].isin(trained_fields) & pairs["second"].isin(trained_fields)
    neither = ~pairs["first"].isin(trained_fields) & ~pairs["second"].isin(trained_fields)
    return pairs[trained if subset == "trained" else neither]


def pair_readings(features: np.ndarray, fields: np.ndarray, pairs: pd.DataFrame, seed: int) -> np.ndarray:
    """Each pair's `domain_probe` of the field on the crops of its two fields (folds mixing them), minus its chance (0.5).

    Parameters
    ----------
    features : ndarray
        (N, D) representation of every crop.
    fields : ndarray
        (N,) each crop's field.
    pairs : DataFrame
        Rows with ``first`` and ``second`` fields.
    seed : int
        The probe's fold seed (the run's).

    Returns
    -------
    ndarray
        One figure per pair, in the order of `pairs`.
    """
    figures = []
    for first, second in zip(pairs["first"], pairs["second"]):
        members = np.flatnonzero((fields == first) | (fields == second))
        probe = domain_probe(features[members], (fields[members] == second).astype(np.int64), seed=seed)
        figures.append(probe["balanced_accuracy"] - probe["chance"])
    return np.asarray(figures)


def run_split(labelled: ImageSet, settings: ImageTrainingSettings, run: Path) -> tuple[np.ndarray, np.ndarray]:
    """The crops a run's network trained on and those it was tested on, recomputed as `images train` splits them.

    Parameters
    ----------
    labelled : ImageSet
        The labelled crops of the run's dataset, in the order `images train` reads them.
    settings : ImageTrainingSettings
        The run's settings (seed, grouping, test and validation fractions).
    run : Path
        The run folder, whose held_out.csv must list the same test crops.

    Returns
    -------
    tuple of ndarray
        Sorted indices into `labelled`: trained on, and held out for the test.

    Raises
    ------
    PhenolensError
        When the recomputed test crops are not those of the run's held_out.csv, or the run had no single split.
    """
    if settings.cv or settings.validation_fraction <= 0 or settings.group_by is None:
        raise PhenolensError(f"{run}: the control reads runs with one field-grouped split and a validation share; this run has other settings")
    groups = group_column(labelled, settings.group_by)
    rest, test = stratified_split(labelled.labels, settings.test_fraction, settings.seed, groups)
    kept, _ = stratified_split(labelled.labels[rest], settings.validation_fraction, settings.seed, groups[rest])
    held_out = set(pd.read_csv(run / HELD_OUT_TABLE)["source"].astype(str))
    if held_out != set(labelled.meta["source"].astype(str).iloc[test]):
        raise PhenolensError(f"{run / HELD_OUT_TABLE}: not the held-out crops this split gives; the run was made on other data or code")
    return rest[kept], test


def seed_readings(features: np.ndarray, labelled: ImageSet, pairs: pd.DataFrame, trained: np.ndarray, seed: int) -> dict[str, dict[str, float]]:
    """Per subset: the mean pair reading of each kind (NaN without pairs), the benchmark's well probe (W) and the field probe (F).

    Parameters
    ----------
    features : ndarray
        (N, D) representation of every labelled crop.
    labelled : ImageSet
        The labelled crops (metadata ``well`` and ``field``).
    pairs : DataFrame
        `field_pairs` of the dataset.
    trained : ndarray
        Indices of the crops the network trained on.
    seed : int
        The probes' fold seed.

    Returns
    -------
    dict
        ``{subset: {DIFFERENT, SAME, SINGLE, "D - S", "W", "W chance", "F", "F chance"}}``, the pair kinds and W, F minus chance.
    """
    fields = labelled.meta["field"].astype(str).to_numpy()
    wells, _ = domain_codes(labelled, "well")
    field_codes, _ = domain_codes(labelled, "field")
    trained_fields = set(fields[trained])
    unseen = np.setdiff1d(np.arange(len(labelled)), trained)
    crops = {"all": np.arange(len(labelled)), "trained": trained, "unseen": unseen}
    result = {}
    for subset in SUBSETS:
        chosen = pairs_in(pairs, trained_fields, subset)
        readings = pair_readings(features, fields, chosen, seed)
        kinds = chosen["kind"].to_numpy()
        figures = {kind: float(readings[kinds == kind].mean()) if (kinds == kind).any() else math.nan for kind in (DIFFERENT, SAME, SINGLE)}
        figures["D - S"] = figures[DIFFERENT] - figures[SAME]
        index = crops[subset]
        well_probe = domain_probe(features[index], wells[index], None, labelled.labels[index], seed=seed)
        field_probe = domain_probe(features[index], field_codes[index], None, wells[index], seed=seed)
        for name, probe in (("W", well_probe), ("F", field_probe)):
            figures[name] = probe["within_class_balanced_accuracy"] - probe["within_class_chance"]
            figures[f"{name} chance"] = probe["within_class_chance"]
        figures["W raw"] = well_probe["within_class_balanced_accuracy"]
        result[subset] = figures
    return result


def reading(differences: Sequence[float], same: Sequence[float], line: float = 0.10) -> str:
    """The declared reading (docstring above) of one representation on one subset, from its per-seed figures.

    Parameters
    ----------
    differences : sequence of float
        D - S per seed (the seeds where both are defined).
    same : sequence of float
        S per seed (the seeds where it is defined).
    line : float
        Part (b)'s line above chance.

    Returns
    -------
    str
        "the well beyond the field", "the field" (with whether S's mean reaches `line`) or "undecided"; a single seed never settles.
    """
    differences, same = [v for v in differences if not math.isnan(v)], [v for v in same if not math.isnan(v)]
    if not differences or not same:
        return "undecided (no seeds)"
    _, _, difference_low, difference_high = seed_spread(differences)
    same_mean, _, same_low, _ = seed_spread(same)
    if difference_low > 0:
        return "the well beyond the field"
    if same_low > 0:
        where = "at or above" if same_mean >= line else "below"
        return f"the field (S {where} part (b)'s line; well excess at most {difference_high:+.3f})"
    return "undecided"


def embedded(folder: Path, labelled: ImageSet) -> tuple[np.ndarray, ImageTrainingSettings, dict]:
    """A saved network's embedding of every labelled crop (given at once, as `images predict` would), its settings and metrics."""
    run = load_run(folder)
    return ImageClassifier.load(folder).embed(labelled), run.setting(ImageTrainingSettings), run.metrics


def check_path(figures: dict[str, dict[str, float]], metrics: dict, folder: Path) -> None:
    """Stop unless the recomputed well probe (W) equals the run's own figures on each subset (a check of the path)."""
    saved = metrics["probe"]["embedding"]
    for subset, key in METRICS_KEYS.items():
        mine, theirs = figures[subset]["W raw"], saved[key]["within_class_balanced_accuracy"]
        theirs = math.nan if theirs is None else theirs  # metrics.json writes an undefined figure (NaN) as null
        same = (math.isnan(mine) and math.isnan(theirs)) or abs(mine - theirs) <= PATH_TOLERANCE
        if not same:
            raise SystemExit(f"{folder}: the well probe on {subset} crops reads {mine!r} here and {theirs!r} in metrics.json: the path differs")


def _value(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.3f}"


def summary(name: str, per_seed: dict[int, dict[str, dict[str, float]]]) -> None:
    """Print one representation's means over seeds (standard error; one-sided 90 % bounds) and its reading on each subset."""
    print(f"\n{name}: mean over seeds (standard error; one-sided 90 % bounds) [seeds]")
    for subset in SUBSETS:
        cells = []
        for key in (DIFFERENT, SAME, "D - S", SINGLE, "W", "F"):
            values = [figures[subset][key] for figures in per_seed.values() if not math.isnan(figures[subset][key])]
            if not values:
                cells.append(f"{key} n/a")
                continue
            mean, error, low, high = seed_spread(values)
            spread = f" ({error:.4f}; {low:+.3f} to {high:+.3f})" if len(values) > 1 else ""  # one seed: no spread
            cells.append(f"{key} {mean:+.4f}{spread} [{len(values)}]")
        print(f"  ({subset}) " + " | ".join(cells))
        differences = [figures[subset]["D - S"] for figures in per_seed.values()]
        print(f"  ({subset}) reading: {reading(differences, [figures[subset][SAME] for figures in per_seed.values()])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("/tmp/img17/mixstyle"), help="round 3's --out: R/seed-S (MixStyle) and R/baseline/seed-S")
    parser.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0-9"), help="seeds to read, e.g. 0-9")
    parser.add_argument("--small", action="store_true", help="train one tiny MixStyle network and its baseline (seed 0) into --out, then read them")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-small/field-control"), help="where --small trains")
    args = parser.parse_args()
    if args.small:
        args.runs, args.seeds = args.out, [0]
        for folder, setting in ((args.out / "seed-0", STYLE), (args.out / "baseline" / "seed-0", PROBED)):
            train(0, folder, True, True, None, [], setting=setting)
    labelled = load("bbbc021-cells").labelled()
    table = labelled.meta.assign(label=labelled.label_names())[["field", "well", "label"]].drop_duplicates("field").astype(str)
    pairs = field_pairs(table.reset_index(drop=True))
    counts = pairs["kind"].value_counts()
    print("field pairs: " + ", ".join(f"{kind} {counts.get(kind, 0)}" for kind in (DIFFERENT, SAME, SINGLE)))
    networks = {"MixStyle": lambda seed: args.runs / f"seed-{seed}", "baseline": lambda seed: args.runs / "baseline" / f"seed-{seed}"}
    results: dict[str, dict[int, dict]] = {name: {} for name in (*networks, "pixels")}
    pixels = None
    for seed in args.seeds:
        for name, folder_of in networks.items():
            features, settings, metrics = embedded(folder_of(seed), labelled)
            trained, _ = run_split(labelled, settings, folder_of(seed))
            results[name][seed] = seed_readings(features, labelled, pairs, trained, settings.seed)
            check_path(results[name][seed], metrics, folder_of(seed))
            if pixels is None:  # the run's intensity normalisation, then per stain the crop's mean, std and sharpness
                if settings.intensity_normalization == "field-quantile":
                    raise SystemExit("the pixel reference reads runs normalised by none, field or crop, not field-quantile")
                raw = labelled.padded(int(labelled.shapes().max()))
                statistics = crop_statistics(intensity_normalized(labelled, raw, settings.intensity_normalization, settings.intensity_column))
                pixels = np.concatenate([statistics[key] for key in PIXEL_STATISTICS], axis=1)
        results["pixels"][seed] = seed_readings(pixels, labelled, pairs, trained, settings.seed)
        for name in results:
            row = "  ".join(
                f"{subset}: " + " ".join(f"{LABELS[key]} {_value(f[key])}" for key in LABELS) for subset, f in results[name][seed].items()
            )
            print(f"seed {seed} {name:<9} {row}", flush=True)
    for name, per_seed in results.items():
        summary(name, per_seed)


if __name__ == "__main__":
    main()
