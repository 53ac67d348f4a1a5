"""`phenolens explain`: attribution maps, channel importance, faithfulness and sanity checks for a trained classifier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from phenolens.cli.image_inputs import CHANNELS, DATASET, FOLDER, MANIFEST, UNLABELLED, read_images
from phenolens.core.errors import PhenolensError

SUBSETS = ("auto", "heldout", "out-of-fold", "labelled", "all")


def explain(
    model: Path = typer.Argument(..., help="A `phenolens train` output folder (model.safetensors + model.json)."),
    out: Path = typer.Option(..., "--out", help="Output folder: attributions.npz, metrics.json, per_image.csv, figures, report.html."),
    dataset: str = DATASET,
    folder: Path = FOLDER,
    manifest: Path = MANIFEST,
    channels: str = CHANNELS,
    unlabelled: str = UNLABELLED,
    methods: str = typer.Option("saliency,gradcam,occlusion,ig", help="Comma-separated: saliency, gradcam, occlusion, ig (integrated gradients)."),
    target: str = typer.Option("predicted", help="predicted, true, a class name or a class index."),
    layer: str = typer.Option("", help="Grad-CAM layer: a stage name or submodule path (default: the last stage)."),
    window: int = typer.Option(8, help="Occlusion window (px)."),
    stride: int = typer.Option(4, help="Occlusion stride (px)."),
    baseline: str = typer.Option("zero", help="Baseline of occlusion, integrated gradients and deletion/insertion: zero, mean or a raw value."),
    n_steps: int = typer.Option(50, help="Integrated-gradients steps."),
    output: str = typer.Option("logit", help="What the maps explain: logit, or log_probability (log-softmax of the target)."),
    nucleus_channel: str = typer.Option("", help="DNA channel: nucleus mask by Otsu threshold; reports nucleus_mass_fraction."),
    reporter_channel: str = typer.Option("", help="Channel whose positive attribution is measured inside the nucleus (default: the other one)."),
    subset: str = typer.Option(
        "auto",
        "--images",
        help="heldout (the images the model never trained on), out-of-fold (every labelled image, each explained by the "
        "cross-validation fold model that never trained on it; needs train --cv), labelled, all, or auto.",
    ),
    max_images: int = typer.Option(0, help="Explain at most this many images (a seeded random subset); 0 = all."),
    batch_size: int = typer.Option(64, help="Images per Captum call."),
    seed: int = typer.Option(0, help="Seed of the image subset and the randomised model."),
) -> None:
    """Explain MODEL's decisions on images; write maps, metrics.json and report.html to OUT."""
    from phenolens.core.outputs import atomic_output_dir, write_json
    from phenolens.explain.attribution import AttributionSettings
    from phenolens.explain.images import SANITY_IMAGES, Explanation, explain_images
    from phenolens.nn.weights import read_card
    from phenolens.report.attribution import explanation_section
    from phenolens.report.html import Report
    from phenolens.training.classifier import ImageClassifier

    if subset not in SUBSETS:
        raise PhenolensError(f"--images {subset!r}: choose one of {', '.join(SUBSETS)}")
    classifier = None if subset == "out-of-fold" else ImageClassifier.load(model)  # out of fold, each fold's model is loaded instead
    images = read_images(dataset, folder, manifest, channels, unlabelled)
    settings = AttributionSettings(
        layer=layer or None, window=window, stride=stride, baseline=baseline, n_steps=n_steps, batch_size=batch_size, output=output
    )

    def explained_by(explaining_classifier, chosen, sanity_images: int = SANITY_IMAGES):
        return explain_images(
            explaining_classifier,
            chosen,
            [m.strip() for m in methods.split(",") if m.strip()],
            target,
            settings,
            nucleus_channel or None,
            reporter_channel or None,
            sanity_images=sanity_images,
            seed=seed,
        )

    if subset == "out-of-fold":
        labelled = at_most(images.labelled(), max_images, seed)
        folds, indices = out_of_fold_parts(model, labelled)
        share = -(-SANITY_IMAGES // len(folds))  # the randomisation check tests the method, not each fold: the folds share its images
        parts = [explained_by(ImageClassifier.load(fold), labelled.subset(index), share) for fold, index in zip(folds, indices)]
        explanation, images = Explanation.concatenate(parts), labelled.subset(np.concatenate(indices))  # in the explanation's order
        explanation.settings["explained_by"] = f"out of fold: each image by the one of {len(folds)} fold models that never trained on it"
        explained = {"fold_images": {fold.name: len(index) for fold, index in zip(folds, indices)}}
    else:
        images = at_most(select_images(images, read_card(model).extra.get("held_out_sources", []), subset, model), max_images, seed)
        explanation = explained_by(classifier, images)
        explained = {}
    metrics = {**explanation.metrics(), **explained, "model": str(model), "dataset": images.name}
    with atomic_output_dir(out) as staging:
        arrays = {f"maps_{method}": maps.astype(np.float32) for method, maps in explanation.maps.items()}
        if explanation.nucleus_masks is not None:
            arrays["nucleus_masks"] = explanation.nucleus_masks
        np.savez_compressed(
            staging / "attributions.npz",
            images=explanation.raw.astype(np.float32),
            labels=explanation.labels,
            targets=explanation.targets,
            proba=explanation.proba,
            channel_occlusion=explanation.channel_occlusion,
            cam_concordance=explanation.cam_concordance,
            **arrays,
        )
        per_image_table(explanation, images).to_csv(staging / "per_image.csv", index=False)
        write_json(staging / "metrics.json", metrics)
        report = Report(f"phenolens explain: {images.name}", metrics=metrics)
        report.add(explanation_section(explanation))
        report.write(staging)
    print(f"explained {len(images)} images with {', '.join(explanation.maps)}; wrote {out / 'report.html'}")


def at_most(images, max_images: int, seed: int):
    """A seeded random subset of `max_images` images (all of them when 0 or fewer than that)."""
    from phenolens.core.seeding import numpy_rng

    if max_images and len(images) > max_images:
        return images.subset(np.sort(numpy_rng(seed).choice(len(images), max_images, replace=False)))
    return images


def out_of_fold_parts(model: Path, labelled) -> tuple[list[Path], list[np.ndarray]]:
    """The fold models under MODEL/folds and, for each, the indices of the images of `labelled` it never trained on."""
    from phenolens.cli.train import FOLDS_FOLDER
    from phenolens.nn.weights import read_card

    folds = sorted((model / FOLDS_FOLDER).glob("fold-*"), key=lambda path: int(path.name.partition("-")[2] or 0))
    if not folds:
        raise PhenolensError(f"{model / FOLDS_FOLDER}: no cross-validation fold models; train the model with --cv K to explain out of fold")
    if "source" not in labelled.meta or len(labelled) == 0:
        raise PhenolensError(f"{model}: out-of-fold explanation needs labelled images with known sources; use --images labelled")
    sources = labelled.meta["source"].astype(str)
    chosen = [np.flatnonzero(sources.isin(set(read_card(fold).extra.get("held_out_sources", [])))) for fold in folds]
    kept = [(fold, index) for fold, index in zip(folds, chosen) if len(index)]
    if not kept:
        raise PhenolensError(f"{model / FOLDS_FOLDER}: none of the folds' held-out images are among these images; pass the training images")
    return [fold for fold, _ in kept], [index for _, index in kept]


def select_images(images, held_out_sources: list[str], subset: str, model: Path):
    """The images to explain: the model's held-out images, the labelled ones, or all."""
    known = "source" in images.meta and held_out_sources
    if subset == "heldout" and not known:
        raise PhenolensError(f"{model / 'model.json'}: lists no held-out images for these images; use --images labelled or all")
    if subset in ("heldout", "auto") and known:
        chosen = images.meta["source"].astype(str).isin(set(held_out_sources)).to_numpy()
        if chosen.any():
            return images.subset(chosen)
        if subset == "heldout":
            raise PhenolensError(f"{model / 'model.json'}: none of its held-out images are among these images; use --images labelled or all")
    if subset in ("labelled", "auto") and (images.labels >= 0).any():
        return images.labelled()
    return images


def per_image_table(explanation, images):
    """One row per explained image: source, label, prediction, channel importance and nucleus fractions."""
    import pandas as pd

    names = np.asarray(explanation.class_names + [images.unlabelled_name], dtype=object)
    table = pd.DataFrame(
        {
            "source": images.meta["source"].astype(str) if "source" in images.meta else np.arange(len(images)),
            "label": names[np.where(explanation.labels < 0, len(explanation.class_names), explanation.labels)],
            "target": names[explanation.targets],
            "probability": explanation.proba[np.arange(len(images)), explanation.targets],
        }
    )
    for c, channel in enumerate(explanation.channel_names):
        table[f"occlusion_drop_{channel}"] = explanation.channel_occlusion[:, c]
        table[f"cam_concordance_{channel}"] = explanation.cam_concordance[:, c]
    for method, fraction in explanation.nucleus_fraction.items():
        table[f"nucleus_fraction_{method}"] = fraction
    return table
