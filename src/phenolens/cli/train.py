"""`phenolens train`: train a multi-channel image classifier and evaluate it on held-out images."""

from __future__ import annotations

from pathlib import Path

import typer

from phenolens.cli.image_inputs import CHANNELS, DATASET, FOLDER, MANIFEST, UNLABELLED, read_images
from phenolens.cli.parsing import integer_list

FOLDS_FOLDER = "folds"  # under a `--cv` output: fold-1 ... fold-k, each a model with its own held-out list


def train(
    out: Path = typer.Option(..., "--out", help="Output folder: model weights, metrics.json, figures, report.html."),
    dataset: str = DATASET,
    folder: Path = FOLDER,
    manifest: Path = MANIFEST,
    channels: str = CHANNELS,
    unlabelled: str = UNLABELLED,
    arch: str = typer.Option("resnet18", help="Backbone: resnet18, vgg or densenet."),
    width: float = typer.Option(0.25, help="Width multiplier of every channel count."),
    stem_stride: int = typer.Option(2, help="Stride of the first convolution (1 keeps full resolution; 2 is 4x cheaper)."),
    blocks: str = typer.Option(
        "",
        help="Blocks per stage, comma-separated (default: 2,2,2,2 for resnet18; 1,2,2 for vgg (convs after the stem); 6,12,24,16 for densenet).",
    ),
    loss: str = typer.Option("composite", help="softmax, arcface (s=30, m=0.5) or composite (0.2 ArcFace + 0.8 softmax)."),
    size: int = typer.Option(0, help="Crop size after centre padding (0: the largest image; larger crops are centre-cropped)."),
    epochs: int = typer.Option(30, help="Maximum epochs (early stopping on a validation split ends sooner)."),
    batch_size: int = typer.Option(32, help="Labelled images per batch (as many pseudo-labelled ones join it)."),
    lr: float = typer.Option(2e-3, help="Adam learning rate."),
    schedule: str = typer.Option("plateau", help="Learning rate: plateau (halve when validation stalls) or cosine (anneal to 0 over --epochs)."),
    augment: bool = typer.Option(True, help="Flips, 90-degree turns, +-10 degree rotations and CutMix."),
    cutmix: float = typer.Option(0.5, help="Share of each batch given CutMix (with --augment); 0 turns CutMix off."),
    dimming: float = typer.Option(
        0.0,
        help="With --augment, scale each crop's brightness by one gain from U(1 - DIMMING, 1), so that the dimmed copies "
        "integrated gradients passes through on its way from a black baseline are images the model has seen; 0 turns it off.",
    ),
    pseudo_labels: bool = typer.Option(True, help="Use the unlabelled images as a pseudo-labelled pool."),
    balanced: bool = typer.Option(False, help="Weight the loss by inverse class frequency (for unbalanced classes)."),
    covariate: str = typer.Option("", help="Metadata column one-hot encoded and concatenated to the pooled features."),
    group_by: str = typer.Option("", help="Metadata column (well, site, field) whose groups never straddle a split."),
    test_fraction: float = typer.Option(0.2, help="Held-out share of the labelled images (without --cv)."),
    cv: int = typer.Option(
        0, "--cv", help="k-fold cross-validation (k >= 2); adds cv_macro_f1 to metrics.json and keeps every fold's model under folds/."
    ),
    seed: int = typer.Option(0, help="Seed of splits, initialisation, augmentation and batching."),
    members: int = typer.Option(
        1,
        help="Train a deep ensemble of this many networks (member m from seed SEED + m, same split) and predict with their mean logit; "
        "explanations average the members'. Training takes MEMBERS times as long, and every explanation runs each member.",
    ),
) -> None:
    """Train an image classifier; write weights, metrics.json, figures and report.html to OUT."""
    import time

    from phenolens.core.outputs import atomic_output_dir, write_json
    from phenolens.report.classifier import training_section
    from phenolens.report.html import Report
    from phenolens.training.evaluation import train_and_evaluate

    images = read_images(dataset, folder, manifest, channels, unlabelled)
    started = time.perf_counter()
    run = train_and_evaluate(
        images,
        cv=cv,
        test_fraction=test_fraction,
        group_by=group_by or None,
        seed=seed,
        arch=arch,
        width=width,
        stem_stride=stem_stride,
        blocks=integer_list(blocks, "--blocks") if blocks else None,
        loss=loss,
        size=size or None,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        schedule=schedule,
        augment=augment,
        cutmix_probability=cutmix,
        dimming=dimming,
        pseudo_labels=pseudo_labels,
        balanced=balanced,
        covariate=covariate or None,
        members=members,
    )
    seconds = time.perf_counter() - started
    labelled = images.labelled()
    metrics = {**run.metrics, "dataset": images.name, "training_seconds": round(seconds, 1)}
    with atomic_output_dir(out) as staging:
        save_with_held_out(run.classifier, labelled, run.test_index, staging)
        for number, fold in enumerate(run.folds, start=1):  # `phenolens explain --images out-of-fold` reads these
            save_with_held_out(fold.classifier, labelled, fold.test_index, staging / FOLDS_FOLDER / f"fold-{number}")
        write_json(staging / "metrics.json", metrics)
        report = Report(f"phenolens train: {images.name}", metrics=metrics)
        report.add(training_section(run, images))
        report.write(staging)
    summary = f"macro-F1 {metrics['macro_f1']:.3f}" + (f", cv macro-F1 {metrics['cv_macro_f1']:.3f}" if "cv_macro_f1" in metrics else "")
    print(f"{summary} ({seconds:.0f} s); wrote {out / 'report.html'}")


def save_with_held_out(classifier, labelled, test_index, folder: Path) -> None:
    """Save `classifier` into `folder` with the list of labelled images it never trained on
    (model.json's `held_out_sources`, and held_out.csv)."""
    held_out = labelled.meta.iloc[test_index].assign(label=labelled.label_names()[test_index])
    sources = held_out["source"].astype(str).tolist() if "source" in held_out else []
    classifier.save(folder, extra={"dataset": labelled.name, "held_out_sources": sources})
    held_out.to_csv(folder / "held_out.csv", index=False)
