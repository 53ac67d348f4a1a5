"""`phenolens counterfactual train | explain`: i-ResNet classifiers, ECINN and autoencoder counterfactuals."""

from __future__ import annotations

from pathlib import Path

import typer

from phenolens.cli.image_inputs import CHANNELS, DATASET, FOLDER, MANIFEST, input_paths, read_images
from phenolens.cli.options import OVERWRITE, RESUME, settings_options
from phenolens.explain.counterfactual.settings import CounterfactualExplanationSettings, CounterfactualTrainingSettings

app = typer.Typer(help="Counterfactual explanations: invertible ResNets with ECINN, and autoencoder interpolation.", no_args_is_help=True)

TRAIN_COMMAND, EXPLAIN_COMMAND = "counterfactual train", "counterfactual explain"


@app.command(help="Train an i-ResNet classifier (and an autoencoder), fit the ECINN class means, report test metrics.")
@settings_options()
def train(
    out: Path = typer.Option(..., "--out", help="Output folder for the model, metrics.json, run.json and report.html."),
    dataset: str = DATASET,
    folder: Path = FOLDER,
    manifest: Path = MANIFEST,
    channels: str = CHANNELS,
    overwrite: bool = OVERWRITE,
    resume: bool = RESUME,
    settings: CounterfactualTrainingSettings = None,
) -> None:
    """Train an i-ResNet classifier (and an autoencoder), fit the ECINN class means, report test metrics.

    Parameters
    ----------
    out : Path
        The run folder to write.
    dataset, folder, manifest : optional
        Exactly one image source.
    channels : str
        Channel names of --folder/--manifest images.
    overwrite : bool
        Replace an earlier phenolens run at `out`.
    resume : bool
        Continue the training a kill interrupted at `out` (same options) from its last epoch.
    settings : CounterfactualTrainingSettings
        Built from the options.

    Raises
    ------
    PhenolensError
        On bad options or data (one line, exit status 2, nothing written).
    """
    from phenolens.core.runs import RunWriter
    from phenolens.explain.counterfactual.evaluate import classification_metrics
    from phenolens.explain.counterfactual.training import train_counterfactual_model
    from phenolens.report.counterfactual import training_report
    from phenolens.training.checkpoint import checkpointed

    datasets = [dataset] if dataset else []
    writer = RunWriter(
        out,
        TRAIN_COMMAND,
        settings,
        inputs=input_paths(folder, manifest),
        overwrite=overwrite,
        datasets=datasets,
        resume=resume,
        options={"channels": channels},
    )
    data = read_images(dataset, folder, manifest, channels)
    with checkpointed(writer) as run:
        model, split = train_counterfactual_model(data, settings)
        test = split["data"].subset(split["test_index"])
        metrics = classification_metrics(model, model.tensor(test), model.labels_for(test))
        paths = {"folder": str(folder) if folder else None, "manifest": str(manifest) if manifest else None}
        model.info.update(source={"dataset": dataset, **paths, "channels": channels}, test_metrics=metrics)
        model.save(run.path)
        run.write_metrics(metrics)
        run.write_report(training_report(model, metrics))
    print(f"test accuracy {metrics['test_accuracy']:.3f}, reconstruction MAE {metrics['reconstruction_mae']:.2e} of the data range; wrote {out}")


@app.command(help="ECINN counterfactuals (alpha_0, alpha_1), difference maps, probabilities, sweeps and metrics.")
@settings_options()
def explain(
    checkpoint: Path = typer.Argument(..., help="Folder written by `phenolens counterfactual train`."),
    out: Path = typer.Option(..., "--out", help="Output folder for counterfactuals.npz/.csv, metrics.json, GIFs, run.json and report.html."),
    dataset: str = typer.Option(None, "--dataset", help="Explain all images of this dataset (default: the checkpoint's held-out test images)."),
    folder: Path = FOLDER,
    manifest: Path = MANIFEST,
    channels: str = CHANNELS,
    overwrite: bool = OVERWRITE,
    settings: CounterfactualExplanationSettings = None,
) -> None:
    """ECINN counterfactuals (alpha_0, alpha_1), difference maps, probabilities, sweeps and metrics.

    Parameters
    ----------
    checkpoint : Path
        A finished ``counterfactual train`` run folder.
    out : Path
        The run folder to write.
    dataset, folder, manifest : optional
        At most one image source (default: the checkpoint's held-out test images).
    channels : str
        Channel names of --folder/--manifest images (matched to the model's by name).
    overwrite : bool
        Replace an earlier phenolens run at `out`.
    settings : CounterfactualExplanationSettings
        Built from the options.

    Raises
    ------
    PhenolensError
        On bad options or data (one line, exit status 2, nothing written).
    """
    from phenolens.core.errors import PhenolensError
    from phenolens.core.runs import RunWriter, load_run
    from phenolens.explain.counterfactual.evaluate import check_request, explain_counterfactuals
    from phenolens.explain.counterfactual.model import CounterfactualModel
    from phenolens.report.counterfactual import write_explanation

    trained = load_run(checkpoint)
    if trained.command != TRAIN_COMMAND:
        raise PhenolensError(f"{checkpoint}: a {trained.command!r} run, not a counterfactual model; pass the --out of `phenolens {TRAIN_COMMAND}`")
    model = CounterfactualModel.load(trained.path)
    check_request(model, settings.target, settings.nucleus_channel, settings.signal_channel)
    held_out = not (dataset or folder or manifest)
    if held_out:  # the checkpoint's test images, read from where it was trained
        source = model.info.get("source", {})
        dataset, channels = source.get("dataset"), source.get("channels", "")
        folder, manifest = (Path(source[key]) if source.get(key) else None for key in ("folder", "manifest"))
    inputs = [checkpoint, *input_paths(folder, manifest)]
    writer = RunWriter(out, EXPLAIN_COMMAND, settings, inputs=inputs, overwrite=overwrite, datasets=[dataset] if dataset else [])
    images = read_images(dataset, folder, manifest, channels)
    result = explain_counterfactuals(model, model.test_subset(images) if held_out else images, settings)
    with writer as run:
        write_explanation(result, run, panels=settings.panels)
    metrics = result.metrics
    speed = f", {metrics['speedup_vs_gradient']:.0f}x faster than the gradient baseline" if "speedup_vs_gradient" in metrics else ""
    print(f"alpha_1 flips {metrics['flip_rate_alpha1']:.0%} of {metrics['n_counterfactuals']} images{speed}; wrote {out}")
    if settings.nucleus_channel is not None and model.settings.centre_on is None:
        print(
            f"note: these crops are not registered on their nucleus, and ECINN makes nearly one change to every image (median r "
            f"{metrics['change_similarity_alpha1']:.2f}); train with --centre-on {settings.nucleus_channel} for it to meet each cell's nucleus"
        )


def counterfactual_demo(out: Path) -> tuple[list, dict]:
    """Demo step: a small i-ResNet on BBBC013 and one ECINN counterfactual panel with the known answer.

    The i-ResNet separates CytoplasmicGFP from NuclearGFP on crops centred on the nucleus, trained
    for 8 epochs; its counterfactuals go towards NuclearGFP.

    Parameters
    ----------
    out : Path
        The demo's staging folder (the sweep GIF goes to ``out/counterfactual/gifs``).

    Returns
    -------
    tuple of (list, dict)
        Report sections and the step's headline metrics.
    """
    import torch

    from phenolens.data.loaders import load
    from phenolens.explain.counterfactual.evaluate import explain_counterfactuals
    from phenolens.explain.counterfactual.training import train_counterfactual_model
    from phenolens.report.counterfactual import counterfactual_sections

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: thread hand-offs cost more than they save, badly so on a busy machine
    try:
        training = CounterfactualTrainingSettings(
            classes=("CytoplasmicGFP", "NuclearGFP"), size=64, blocks=(1, 1), hidden=(8, 16), epochs=8, patience=8, autoencoder=False, centre_on="DNA"
        )
        model, split = train_counterfactual_model(load("bbbc013"), training)
        test = split["data"].subset(split["test_index"])
        explanation = CounterfactualExplanationSettings(
            target="NuclearGFP", baseline_steps=300, match_confidence=False, nucleus_channel="DNA", sweeps=1, panels=1
        )
        run = explain_counterfactuals(model, test, explanation)
    finally:
        torch.set_num_threads(threads)
    sections = counterfactual_sections(run, out / "counterfactual", panels=explanation.panels, prefix="demo_counterfactual")
    sections[0].title = "Counterfactuals: ECINN on a small i-ResNet (BBBC013, 8 epochs for the demo), towards NuclearGFP"
    keys = ("test_accuracy", "reconstruction_mae", "flip_rate_alpha0", "flip_rate_alpha1", "speedup_vs_gradient", "nuclear_gfp_increase_rate")
    return sections, {key: run.metrics.get(key) for key in keys}
