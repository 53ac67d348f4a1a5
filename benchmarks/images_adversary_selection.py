"""Choosing the image adversary's settings without the test fields: BBBC021 cells, a validation split of fields.

    python benchmarks/images_adversary_selection.py --seed 0 --variants "none;adversary_loss=reversal;adversary_loss=confusion,adversary_steps=5"

The fields `phenolens images train --group-by field` holds out for testing (seed S) are set aside and never
read. The other fields are split again by field (a quarter for validation); each variant (`none`: no
adversary; otherwise `ImageTrainingSettings` fields changed from their defaults, `adversary_column=well`
implied; with `adversary_unlabelled=evaluation` the adversary also reads the validation fields, unlabelled) trains on the
first part, and is judged by the macro-F1 on the validation fields and by a linear
probe of the well within the inhibitor class (folds mixing fields, balanced accuracy) on the embeddings of
every non-test crop, of the crops the network trained on, and of the others (validation fields, and the
network's own early-stopping fields). One JSON line per variant.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np

from phenolens.data.loaders import load
from phenolens.training.adversary import domain_codes, domain_probe
from phenolens.training.evaluation import without_labels
from phenolens.training.fitting import ImageClassifierEstimator
from phenolens.training.metrics import classification_metrics
from phenolens.training.settings import ImageTrainingSettings
from phenolens.training.splits import group_column, stratified_split

sys.path.insert(0, str(Path(__file__).parent))
from targets import Targets, add_check_option  # noqa: E402


def parse_variant(text: str, base: ImageTrainingSettings) -> ImageTrainingSettings:
    """`none`, or comma-separated FIELD=VALUE changes of `base` (the adversary on the well unless `adversary_column=none`)."""
    if text == "none":
        return base
    types = {field.name: field.type for field in fields(base)}
    changes = {}
    for pair in text.split(","):
        name, value = pair.split("=")
        kind = types[name]
        if value == "none":
            changes[name] = None
        elif "bool" in kind:
            changes[name] = value in ("1", "true", "on")
        elif "int" in kind:
            changes[name] = int(value)
        elif "float" in kind:
            changes[name] = float(value)
        else:
            changes[name] = value
    changes.setdefault("adversary_column", "well")
    return base.replace(**changes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--variants", default="none;adversary_loss=reversal,adversary_steps=1,adversary_reset=0,adversary_weight=1")
    add_check_option(parser)
    args = parser.parse_args()
    images = load("bbbc021-cells").labelled()
    rest, _ = stratified_split(images.labels, ImageTrainingSettings().test_fraction, args.seed, group_column(images, "field"))
    dev = images.subset(rest)  # the test fields of this seed are never read again
    fit_index, val_index = stratified_split(dev.labels, 0.25, args.seed, group_column(dev, "field"))
    domains, _ = domain_codes(dev, "well")
    base = ImageTrainingSettings(group_by="field", epochs=args.epochs, seed=args.seed)
    chances = []
    for text in args.variants.split(";"):
        settings = parse_variant(text, base)
        started = time.time()
        transductive = settings.adversary_column and settings.adversary_unlabelled == "evaluation"  # the validation fields, unlabelled
        estimator = ImageClassifierEstimator(settings, text).fit(
            dev.subset(fit_index), without_labels(dev.subset(val_index)) if transductive else None
        )
        classifier = estimator.classifier_
        f1 = classification_metrics(dev.labels[val_index], classifier.predict_proba(dev.subset(val_index)), dev.class_names)["macro_f1"]
        features = classifier.embed(dev)
        trained = fit_index[estimator.train_index_]
        unseen = np.setdiff1d(np.arange(len(dev)), trained)
        probes = {
            name: domain_probe(features[index], domains[index], None, dev.labels[index], seed=args.seed)
            for name, index in (("all", np.arange(len(dev))), ("trained", trained), ("unseen", unseen))
        }
        chances.append(probes["all"]["within_class_chance"])
        record = {"variant": text, "seed": args.seed, "epochs": args.epochs, "validation_macro_f1": round(f1, 3)}
        for name, probe in probes.items():
            record[f"well_within_class_{name}"] = round(probe["within_class_balanced_accuracy"], 3)
            record[f"chance_{name}"] = round(probe["within_class_chance"], 3)
        record.update(best_epoch=classifier.history.best_epoch, seconds=round(time.time() - started))
        print(json.dumps(record), flush=True)
    targets = Targets("images_adversary_selection")
    targets.expect("within-class chance over the non-test crops (1/3 or 1/2: B03-B05, or two of them)", max(chances), "<=", 0.5 + 1e-9)
    sys.exit(targets.finish(args.check))


if __name__ == "__main__":
    main()
