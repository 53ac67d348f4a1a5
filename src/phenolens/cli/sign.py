"""`phenolens sign fit | graph | hmm | train-mlp | watermark-experiment`: SIGN inference graphs and paths."""

from __future__ import annotations

from pathlib import Path

import typer

from phenolens.cli.image_inputs import CHANNELS, DATASET, FOLDER, MANIFEST, UNLABELLED, read_images
from phenolens.cli.options import OVERWRITE, RESUME, settings_options
from phenolens.explain.sign.settings import MlpTrainingSettings, SignFitSettings, SignGraphSettings, SignHmmSettings, WatermarkSettings

app = typer.Typer(help="SIGN: visual-word dictionaries, class and image inference graphs, MLP inference paths.", no_args_is_help=True)


def _image_source(dataset: str | None, folder: Path | None, manifest: Path | None, channels: str, unlabelled: str = "") -> dict:
    """The image options as a JSON-able record that `_read_source` reads again (paths made absolute)."""
    return {"dataset": dataset, "folder": str(folder.resolve()) if folder else None, "manifest": str(manifest.resolve()) if manifest else None,
            "channels": channels, "unlabelled": unlabelled}  # fmt: skip


def _read_source(source: dict):
    return read_images(source.get("dataset"), source.get("folder") and Path(source["folder"]), source.get("manifest") and Path(source["manifest"]),
                       source.get("channels", ""), source.get("unlabelled", ""))  # fmt: skip


def _source_inputs(source: dict) -> dict:
    """RunWriter keywords for a source: the files it reads (a folder or manifest), or the registered dataset's name."""
    return {
        "inputs": [Path(source[key]) for key in ("folder", "manifest") if source.get(key)],
        "datasets": [source["dataset"]] if source.get("dataset") else [],
    }


@app.command("fit")
@settings_options()
def fit(
    checkpoint: Path = typer.Argument(..., help="A `phenolens train` output folder (model.safetensors + model.json)."),
    out: Path = typer.Option(..., "--out", help="Output folder: dictionaries, model, split, quality table, metrics.json, report.html, run.json."),
    dataset: str = DATASET,
    folder: Path = FOLDER,
    manifest: Path = MANIFEST,
    channels: str = CHANNELS,
    unlabelled: str = UNLABELLED,
    overwrite: bool = OVERWRITE,
    resume: bool = RESUME,
    settings: SignFitSettings = None,
) -> None:
    """Fit one visual-word dictionary per layer of a trained image classifier and measure their quality.

    \f
    Parameters
    ----------
    checkpoint : Path
        The classifier's folder (an input of the run).
    out : Path
        The run folder: dictionaries, model, split, quality table, source.json, metrics.json, report.html, run.json.
    dataset, folder, manifest, channels : str, Path, Path, str
        The image source (exactly one of dataset, folder, manifest; see `phenolens.cli.image_inputs`).
    unlabelled : str
        The manifest label of unlabelled images.
    overwrite : bool
        Replace an earlier phenolens run at `out`.
    resume : bool
        Continue the fit a kill interrupted at `out` (same options) from its last epoch or layer.
    settings : SignFitSettings
        Built from the options.
    """
    from phenolens.core.runs import RunWriter
    from phenolens.explain.sign.pipeline import fit_sign, save_sign
    from phenolens.report.html import Report
    from phenolens.report.sign import quality_section
    from phenolens.training.checkpoint import checkpointed
    from phenolens.training.classifier import ImageClassifier

    source = _image_source(dataset, folder, manifest, channels, unlabelled)
    reads = _source_inputs(source)
    inputs = [checkpoint, *reads["inputs"]]
    options = {"channels": channels, "unlabelled": unlabelled}  # how the images are read: a resumed fit must read them alike
    writer = RunWriter(out, "sign fit", settings, inputs=inputs, datasets=reads["datasets"], overwrite=overwrite, resume=resume, options=options)
    images = _read_source(source)
    with checkpointed(writer) as run:
        result = fit_sign(ImageClassifier.load(checkpoint), images, settings)
        metrics = result.metrics()
        save_sign(result, run.path, source)
        run.write_metrics(metrics)
        report = Report(f"SIGN dictionaries: {images.name}", metrics=metrics)
        report.add(quality_section(result))
        run.write_report(report)
    top = metrics["layers"][-1]
    print(
        f"{top['name']}: BoW error {top['bow_error']:.3f} (max channel {top['bow_error_max_channel']:.3f}), purity {top['purity']:.3f}; wrote {out}"
    )


@app.command("graph")
@settings_options()
def graph(
    run_folder: Path = typer.Argument(..., metavar="RUN", help="A `phenolens sign fit` output folder."),
    image: Path = typer.Option(None, "--image", help="An image file (tif/png/npy) for an image graph."),
    out: Path = typer.Option(None, "--out", help="Output folder (default: RUN/graph-CLASS or RUN/graph-IMAGE)."),
    overwrite: bool = OVERWRITE,
    settings: SignGraphSettings = None,
) -> None:
    """Draw a class inference graph (Omega = validation images predicted as the class) or an image graph.

    \f
    Parameters
    ----------
    run_folder : Path
        A `phenolens sign fit` run, read with `load_run`.
    image : Path, optional
        An image file for an image graph (instead of ``--class``).
    out : Path, optional
        The run folder (default: RUN/graph-CLASS or RUN/graph-IMAGE).
    overwrite : bool
        Replace an earlier phenolens run at `out`.
    settings : SignGraphSettings
        Built from the options.

    Raises
    ------
    PhenolensError
        Unless exactly one of ``--class`` and ``--image`` is given; for an unknown class.
    """
    from phenolens.core.errors import PhenolensError
    from phenolens.core.runs import RunWriter, load_run
    from phenolens.explain.sign.pipeline import load_sign
    from phenolens.report.html import Report
    from phenolens.report.sign import class_and_image_graphs, image_graph_section

    cls = settings.class_name
    if bool(cls) == bool(image):
        raise PhenolensError("give exactly one of --class NAME (or 'all') and --image PATH")
    fitted = load_run(run_folder)
    target = out or run_folder / f"graph-{(cls or image.stem).replace('/', '_').replace(' ', '_')}"
    # the files the graphs are computed from (not the whole fit folder, which may hold earlier graph runs)
    read = [run_folder / name for name in ("run.json", "model", "dictionary", "split.npz")]
    writer = RunWriter(target, "sign graph", settings, inputs=[*read, *([image] if image else [])], overwrite=overwrite)
    result = load_sign(fitted, _read_source, settings.nodes_per_layer or None)
    if cls and cls != "all":
        result.builder.class_index(cls)  # a clear error for an unknown class before any drawing
    with writer as run:
        if cls:
            section, summary = class_and_image_graphs(result, run.path, None if cls == "all" else [cls], image_graphs=cls == "all")
            metrics = {"kind": "class", "graphs": summary}
        else:
            from phenolens.data import read_image

            section, metrics = image_graph_section(result, read_image(image), image.name, run.path)
        run.write_metrics(metrics)
        report = Report(f"SIGN graphs: {result.images.name}", metrics=metrics)
        report.add(section)
        run.write_report(report)
    print(f"wrote {target} ({len(metrics['graphs']) if cls else 1} graph(s))")


def demo_step(out: Path) -> tuple[list, dict]:
    """Demo step: a small ResNet on MitoCheck (at most 90 nuclei per class, central 48 px), dictionaries over
    its stages, the class graph of its best-recognised class and one image graph.

    Parameters
    ----------
    out : Path
        The demo's staging folder; the graphs go to ``out/sign``.

    Returns
    -------
    tuple of (list of Section, dict)
        Report sections and metrics.
    """
    import numpy as np

    from phenolens.core.seeding import numpy_rng
    from phenolens.data import load
    from phenolens.explain.sign.layers import OUTPUT
    from phenolens.explain.sign.pipeline import fit_sign
    from phenolens.report.sign import class_and_image_graphs, quality_section
    from phenolens.training import fit_classifier

    mitocheck = load("mitocheck")
    rng = numpy_rng(0)
    chosen = np.concatenate([rng.permutation(np.flatnonzero(mitocheck.labels == c))[:90] for c in range(len(mitocheck.class_names))])
    images = mitocheck.subset(np.sort(chosen))
    classifier = fit_classifier(
        images, "resnet18", width=0.125, blocks=[1, 1, 1], stem_stride=2, size=48, epochs=5, batch_size=32, loss="softmax",
        augment=False, pseudo_labels=False, validation_fraction=0.15, seed=0, description="demo CNN",
    )  # fmt: skip
    settings = SignFitSettings(layers=("stage1", "stage2", "stage3"), words=(24,), epochs=3, validation_fraction=0.35, seed=0)
    result = fit_sign(classifier, images, settings)
    predicted = result.builder.maps_.words[OUTPUT].ravel()
    truth = result.images.labels[result.validation_index]
    best = int(np.bincount(predicted[predicted == truth], minlength=len(classifier.class_names)).argmax())
    folder = out / "sign"
    folder.mkdir(parents=True, exist_ok=True)
    section, summary = class_and_image_graphs(result, folder, [classifier.class_names[best]])
    fitted = result.metrics()
    metrics = {"images": len(images), "layers": fitted["layers"], "validation_accuracy": fitted["validation_accuracy"], "graphs": summary}
    return [quality_section(result), section], metrics


@app.command("train-mlp")
@settings_options()
def train_mlp(
    out: Path = typer.Option(..., "--out", help="Output folder: model.safetensors + model.json (architecture 'mlp'), training.npz, metrics.json."),
    dataset: str = DATASET,
    folder: Path = FOLDER,
    manifest: Path = MANIFEST,
    channels: str = CHANNELS,
    overwrite: bool = OVERWRITE,
    settings: MlpTrainingSettings = None,
) -> None:
    """Train a fully connected ReLU network (for `phenolens sign hmm`).

    \f
    Parameters
    ----------
    out : Path
        The run folder: model.safetensors + model.json, training.npz, metrics.json, run.json.
    dataset, folder, manifest, channels : str, Path, Path, str
        The image source (exactly one of dataset, folder, manifest; see `phenolens.cli.image_inputs`).
    overwrite : bool
        Replace an earlier phenolens run at `out`.
    settings : MlpTrainingSettings
        Built from the options.
    """
    from phenolens.core.runs import RunWriter
    from phenolens.explain.sign.mlp import train_mlp as train

    source = _image_source(dataset, folder, manifest, channels)
    writer = RunWriter(out, "sign train-mlp", settings, **_source_inputs(source), overwrite=overwrite)
    trained = train(_read_source(source), settings)
    metrics = trained.metrics()
    with writer as run:
        trained.save(run.path)
        run.write_metrics(metrics)
    print(f"training error {metrics['train_error']:.4f} on {metrics['images']} images; wrote {out}")


@app.command("hmm")
@settings_options()
def hmm(
    checkpoint: Path = typer.Argument(..., help="A `phenolens sign train-mlp` output folder."),
    out: Path = typer.Option(..., "--out", help="Output folder: paths, purity per layer, junction figures, metrics.json, report.html."),
    dataset: str = DATASET,
    folder: Path = FOLDER,
    manifest: Path = MANIFEST,
    channels: str = CHANNELS,
    overwrite: bool = OVERWRITE,
    settings: SignHmmSettings = None,
) -> None:
    """Model an MLP's hidden layers with a rectified-Gaussian HMM: Viterbi paths, purity, decision junctions.

    \f
    Parameters
    ----------
    checkpoint : Path
        A `phenolens sign train-mlp` folder (an input of the run).
    out : Path
        The run folder: paths.npz, metrics.json, report.html, run.json.
    dataset, folder, manifest, channels : str, Path, Path, str
        The image source (exactly one of dataset, folder, manifest; see `phenolens.cli.image_inputs`).
    overwrite : bool
        Replace an earlier phenolens run at `out`.
    settings : SignHmmSettings
        Built from the options.
    """
    import numpy as np

    from phenolens.core.runs import RunWriter
    from phenolens.explain.sign.mlp import TrainedMlp
    from phenolens.explain.sign.paths import model_paths
    from phenolens.report.html import Report
    from phenolens.report.sign import paths_section

    source = _image_source(dataset, folder, manifest, channels)
    reads = _source_inputs(source)
    writer = RunWriter(out, "sign hmm", settings, inputs=[checkpoint, *reads["inputs"]], datasets=reads["datasets"], overwrite=overwrite)
    result = model_paths(TrainedMlp.load(checkpoint), _read_source(source), settings)
    metrics = result.metrics()
    with writer as run:
        np.savez(run.file("paths.npz"), paths=result.paths, labels=result.labels)
        run.write_metrics(metrics)
        report = Report(f"SIGN MLP paths: {result.images.name}", metrics=metrics)
        report.add(paths_section(result))
        run.write_report(report)
    print("purity per layer: " + ", ".join(f"{p:.3f}" for p in result.purity) + f"; wrote {out}")


@app.command("watermark-experiment")
@settings_options()
def watermark_experiment(
    out: Path = typer.Option(..., "--out", help="Output folder: metrics.json (classes -> stamped, stamp_ratio), class graphs, report.html."),
    overwrite: bool = OVERWRITE,
    settings: WatermarkSettings = None,
) -> None:
    """Stamp a letter into two Fashion-MNIST classes, train a CNN, and check that their class graphs find it.

    \f
    Parameters
    ----------
    out : Path
        The run folder: metrics.json (classes -> stamped, stamp_ratio), class graphs, report.html, run.json.
    overwrite : bool
        Replace an earlier phenolens run at `out`.
    settings : WatermarkSettings
        Built from the options.
    """
    from phenolens.core.runs import RunWriter
    from phenolens.explain.sign.watermark import watermark_study
    from phenolens.report.html import Report
    from phenolens.report.sign import watermark_section

    writer = RunWriter(out, "sign watermark-experiment", settings, overwrite=overwrite, seed=settings.seeds[0], datasets=["fashion-mnist"])
    study = watermark_study(settings)
    metrics = study.metrics()
    with writer as run:
        report = Report("SIGN watermark experiment (Fashion-MNIST)", metrics=metrics)
        report.add(watermark_section(study, run.path))
        run.write_metrics(metrics)
        run.write_report(report)
    check = metrics["check"]
    print(
        f"stamped classes pass on every seed: {check['stamped_pass_every_seed']}; clean classes fail on every seed: {check['clean_fail_every_seed']}"
    )
