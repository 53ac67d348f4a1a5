"""`phenolens images train | explain | predict`: image classifiers, their explanations, and their use on new images.

`phenolens train` and `phenolens explain` are the same commands as `images train` and `images explain`.
Each command builds its settings object from the options, calls the library, and writes one run
folder through `RunWriter` (run.json, metrics.json, report.html and the command's files).
"""

from __future__ import annotations

from pathlib import Path

import typer

from phenolens.cli.image_inputs import ALLOW_OUTSIDE, CHANNELS, DATASET, FOLDER, MANIFEST, UNLABELLED, ZARR, input_paths, open_images, read_images
from phenolens.cli.options import OVERWRITE, RESUME, SCHEDULER, settings_options
from phenolens.data.chunks import ImageChunkSettings
from phenolens.explain.attribution import AttributionSettings
from phenolens.explain.class_model import ClassModelSettings
from phenolens.training.settings import ImagePredictionSettings, ImageTrainingSettings

app = typer.Typer(help="Image classifiers: train, explain, predict, visualise.", no_args_is_help=True)

MODEL = typer.Argument(..., help="A `phenolens images train` output folder (model.safetensors + model.json).")


def _run_writer(
    out: Path,
    command: str,
    settings,
    overwrite: bool,
    dataset: str | None,
    folder: Path | None,
    manifest: Path | None,
    model=None,
    zarr: Path | None = None,
    resume: bool = False,
    channels: str | None = None,
    unlabelled: str | None = None,
):
    """The command's RunWriter, made before any work so that a bad --out (or one over an input) fails first."""
    from phenolens.core.runs import RunWriter

    inputs = [*([model] if model is not None else []), *input_paths(folder, manifest, zarr)]
    options = {"channels": channels, "unlabelled": unlabelled}  # how the images are read: a resumed run must read them alike
    return RunWriter(out, command, settings, inputs, overwrite, datasets=[dataset] if dataset else [], resume=resume, options=options)


def _model_and_screen(model: Path, dataset, folder, manifest, zarr, channels: str, unlabelled: str, allow_outside_paths: bool, skip_bad: bool):
    """The classifier and the scanned image source of a streaming command; names that do not fit the model are one line before any output."""
    from phenolens.training.classifier import ImageClassifier

    classifier = ImageClassifier.load(model)
    source = open_images(dataset, folder, manifest, zarr, channels, unlabelled, allow_outside_paths, skip_bad)
    classifier.conform(source.probe())
    return classifier, source


@app.command()
@settings_options()
def train(
    out: Path = typer.Option(..., "--out", help="Output folder: model weights, metrics.json, figures, report.html."),
    dataset: str = DATASET,
    folder: Path = FOLDER,
    manifest: Path = MANIFEST,
    channels: str = CHANNELS,
    unlabelled: str = UNLABELLED,
    allow_outside_paths: bool = ALLOW_OUTSIDE,
    overwrite: bool = OVERWRITE,
    resume: bool = RESUME,
    settings: ImageTrainingSettings = None,
) -> None:
    """Train an image classifier; write weights, metrics.json, figures and report.html to OUT."""
    import time

    from phenolens.report.classifier import training_section
    from phenolens.report.html import Report
    from phenolens.training.checkpoint import checkpointed
    from phenolens.training.evaluation import train_and_evaluate

    writer = _run_writer(out, "images train", settings, overwrite, dataset, folder, manifest, resume=resume, channels=channels, unlabelled=unlabelled)
    images = read_images(dataset, folder, manifest, channels, unlabelled, allow_outside_paths)
    with checkpointed(writer) as written:
        started = time.perf_counter()
        run = train_and_evaluate(images, settings)
        seconds = time.perf_counter() - started
        metrics = {**run.metrics, "dataset": images.name, "training_seconds": round(seconds, 1)}
        report = Report(f"phenolens images train: {images.name}", metrics=metrics)
        report.add(training_section(run, images))
        run.save(written.path, images.labelled())
        written.write_metrics(metrics)
        written.write_report(report)
    summary = f"macro-F1 {metrics['macro_f1']:.3f}" + (f", cv macro-F1 {metrics['cv_macro_f1']:.3f}" if "cv_macro_f1" in metrics else "")
    if "adversary" in metrics:
        adversary = metrics["adversary"]
        without = f" ({adversary['without_adversary']['balanced_accuracy']:.3f} without)" if "without_adversary" in adversary else ""
        probe = adversary["with_adversary"]
        summary += f", {adversary['column']} from the embedding {probe['balanced_accuracy']:.3f}{without}, chance {probe['chance']:.3f}"
    if "erasure" in metrics:
        erasure = metrics["erasure"]
        probe, before = erasure["with_erasure"], erasure["without_erasure"]
        read = f"{probe['balanced_accuracy']:.3f} ({before['balanced_accuracy']:.3f} before)"
        summary += f", {erasure['column']} from the erased embedding {read}, chance {probe['chance']:.3f}"
    if "probe" in metrics:
        probe = metrics["probe"]["embedding"]
        summary += f", {metrics['probe']['column']} from the embedding {probe['balanced_accuracy']:.3f}, chance {probe['chance']:.3f}"
    print(f"{summary} ({seconds:.0f} s); wrote {out / 'report.html'}")


@app.command()
@settings_options()
def explain(
    model: Path = MODEL,
    out: Path = typer.Option(
        ..., "--out", help="Output folder: maps.zarr, per_image.parquet, checks.parquet (+ skipped.csv), metrics.json, figures, report.html."
    ),
    dataset: str = DATASET,
    folder: Path = FOLDER,
    manifest: Path = MANIFEST,
    zarr: Path = ZARR,
    channels: str = CHANNELS,
    unlabelled: str = UNLABELLED,
    allow_outside_paths: bool = ALLOW_OUTSIDE,
    overwrite: bool = OVERWRITE,
    resume: bool = RESUME,
    scheduler: str = SCHEDULER,
    settings: AttributionSettings = None,
    chunks: ImageChunkSettings = None,
) -> None:
    """Explain MODEL's decisions on a screen's images chunk by chunk; write maps, per-image rows, metrics.json and report.html to OUT."""
    from phenolens.core.executor import Executor
    from phenolens.explain.screen import explain_screen
    from phenolens.report.attribution import explanation_section
    from phenolens.report.html import Report

    writer = _run_writer(
        out, "images explain", [settings, chunks], overwrite, dataset, folder, manifest, model, zarr, resume, channels=channels, unlabelled=unlabelled
    )
    _, source = _model_and_screen(model, dataset, folder, manifest, zarr, channels, unlabelled, allow_outside_paths, chunks.skip_bad)
    with Executor.from_option(scheduler) as executor, writer as written:
        written.extra["executor"] = executor.description
        explained = explain_screen(model, source, written, settings, chunks, executor)
        metrics = {**explained.metrics, "model": str(model), "dataset": source.name}
        report = Report(f"phenolens images explain: {source.name}", metrics=metrics)
        # the explorer maps the gallery's cells: a few per class, read back with their maps
        report.add(
            explanation_section(explained.gallery, features=explained.features, metrics=metrics, tables=explained.tables, curves=explained.curves)
        )
        written.write_metrics(metrics)
        written.write_report(report)
    print(f"explained {metrics['n_images']} images with {', '.join(settings.methods)}; wrote {out / 'report.html'}")


@app.command()
@settings_options()
def predict(
    model: Path = MODEL,
    out: Path = typer.Option(
        ..., "--out", help="Output folder: predictions.parquet (+ embeddings.parquet, groups.parquet, skipped.csv), metrics.json, report.html."
    ),
    dataset: str = DATASET,
    folder: Path = FOLDER,
    manifest: Path = MANIFEST,
    zarr: Path = ZARR,
    channels: str = CHANNELS,
    unlabelled: str = UNLABELLED,
    allow_outside_paths: bool = ALLOW_OUTSIDE,
    overwrite: bool = OVERWRITE,
    resume: bool = RESUME,
    scheduler: str = SCHEDULER,
    settings: ImagePredictionSettings = None,
    chunks: ImageChunkSettings = None,
) -> None:
    """Apply MODEL to a screen's images chunk by chunk: per-class probabilities and the predicted class of each image, written to OUT."""
    from phenolens.core.executor import Executor
    from phenolens.report.classifier import prediction_section
    from phenolens.report.explorer.images import MAX_CELLS
    from phenolens.report.html import Report
    from phenolens.training.prediction import predict_screen, predicted_sample

    writer = _run_writer(
        out, "images predict", [settings, chunks], overwrite, dataset, folder, manifest, model, zarr, resume, channels=channels, unlabelled=unlabelled
    )
    classifier, source = _model_and_screen(model, dataset, folder, manifest, zarr, channels, unlabelled, allow_outside_paths, chunks.skip_bad)
    with Executor.from_option(scheduler) as executor, writer as written:
        written.extra["executor"] = executor.description
        predictions = predict_screen(model, source, written, settings, chunks, executor)
        metrics = {**predictions.metrics, "model": str(model), "dataset": source.name}
        if predictions.groups is not None:
            written.write_table("groups.parquet", predictions.groups)
        report = Report(f"phenolens images predict: {source.name}", metrics=metrics)
        shown, proba, features = predicted_sample(classifier, source, MAX_CELLS, skip_bad=chunks.skip_bad, brightness=predictions.field_brightness)
        note = None
        if len(shown) < metrics["n_images"]:
            note = f"The cell map shows {len(shown):,} of {metrics['n_images']:,} images, a random sample (seed 0)."
        section = prediction_section(predictions, classifier.class_names, settings.group_by, images=shown, proba=proba, features=features, note=note)
        report.add(section)
        written.write_metrics(metrics)
        written.write_report(report)
    skipped = f", skipped {metrics['n_skipped']} (skipped.csv)" if metrics["n_skipped"] else ""
    print(f"predicted {metrics['n_images']} images{skipped}; wrote {out / 'predictions.parquet'}")


@app.command()
@settings_options()
def visualise(
    model: Path = MODEL,
    out: Path = typer.Option(..., "--out", help="Output folder: class_models.npz, metrics.json, figures, report.html."),
    dataset: str = DATASET,
    folder: Path = FOLDER,
    manifest: Path = MANIFEST,
    channels: str = CHANNELS,
    allow_outside_paths: bool = ALLOW_OUTSIDE,
    overwrite: bool = OVERWRITE,
    settings: ClassModelSettings = None,
) -> None:
    """Class-model images of MODEL: the image it scores highest for each class, per channel, with its first-layer filters."""
    import numpy as np

    from phenolens.explain.class_model import class_model_probabilities, first_layer_filters, visualise_classes
    from phenolens.report.class_model import class_model_section
    from phenolens.report.html import Report
    from phenolens.training.classifier import ImageClassifier

    writer = _run_writer(out, "images visualise", settings, overwrite, dataset, folder, manifest, model)
    classifier = ImageClassifier.load(model)
    images = read_images(dataset, folder, manifest, channels, "", allow_outside_paths) if (dataset or folder or manifest) else None
    pictures = visualise_classes(classifier, settings, images)
    names = list(settings.classes) or list(classifier.class_names)
    filters = first_layer_filters(classifier.model)
    own = class_model_probabilities(classifier, pictures)[np.arange(len(names)), [classifier.class_index(name) for name in names]]
    metrics = {
        "classes": names,
        "channels": classifier.channel_names,
        "held_channels": list(settings.hold),
        "mean_intensity": {name: dict(zip(classifier.channel_names, pictures[k].mean(axis=(1, 2)).tolist())) for k, name in enumerate(names)},
        "own_class_probability": dict(zip(names, own.tolist())),
    }
    report = Report(f"phenolens images visualise: {Path(model).name}", metrics=metrics)
    report.add(class_model_section(pictures, names, classifier.channel_names, filters, settings.hold, classifier.normalization.intensity))
    with writer as written:
        np.savez_compressed(written.file("class_models.npz"), images=pictures, classes=np.array(names), channels=np.array(classifier.channel_names))
        written.write_metrics(metrics)
        written.write_report(report)
    print(f"class models of {len(names)} classes; wrote {out / 'report.html'}")
