"""`phenolens counterfactual train | explain`: i-ResNet classifiers, ECINN and autoencoder counterfactuals."""

from __future__ import annotations

from pathlib import Path

import typer

from phenolens.cli.image_inputs import CHANNELS, DATASET, FOLDER, MANIFEST, read_images
from phenolens.cli.parsing import integer_list

app = typer.Typer(help="Counterfactual explanations: invertible ResNets with ECINN, and autoencoder interpolation.", no_args_is_help=True)


@app.command()
def train(
    out: Path = typer.Option(..., "--out", help="Output folder for the model, metrics.json and report.html."),
    dataset: str = DATASET,
    folder: Path = FOLDER,
    manifest: Path = MANIFEST,
    channels: str = CHANNELS,
    classes: str = typer.Option("", help="Classes to train on, comma-separated (default: all labelled classes)."),
    group_by: str = typer.Option(None, "--group-by", help="Metadata column that keeps groups on one side of the split (e.g. field)."),
    size: int = typer.Option(64, help="Crops are centre-padded (never stretched) to SIZE x SIZE; a multiple of 2**scales."),
    centre_on: str = typer.Option(
        None,
        "--centre-on",
        help="Channel (e.g. DNA) whose Otsu foreground each crop is centred on before padding. ECINN shifts every latent by one "
        "class-mean direction, which moves a signal into or out of the nucleus only when the nuclei share a place in the frame.",
    ),
    blocks: str = typer.Option("4,4", help="Residual blocks per scale, comma-separated."),
    hidden: str = typer.Option("16,32", help="Hidden channels of the residual branches per scale."),
    pad_channels: int = typer.Option(
        0,
        help="Zero channels appended to the input (Behrmann et al. use 5). With padding, f^-1 of a moved latent leaves the image space "
        "and dropping the padded part undoes some of the move, which lowers the counterfactual flip rate.",
    ),
    coeff: float = typer.Option(0.8, help="Spectral bound of every convolution (< 1)."),
    power_iterations: int = typer.Option(5, help="Power iterations per training step for each spectral bound."),
    inverse_iterations: int = typer.Option(100, help="Maximum fixed-point iterations (branch evaluations) per block when inverting."),
    epochs: int = typer.Option(80, help="Maximum epochs (early stopping on the validation loss)."),
    lr: float = typer.Option(2e-3, help="Adam learning rate."),
    test_fraction: float = typer.Option(0.25, help="Share of the images held out as the test set."),
    autoencoder: bool = typer.Option(True, "--autoencoder/--no-autoencoder", help="Also train the autoencoder alternative."),
    autoencoder_epochs: int = typer.Option(40, help="Maximum epochs of the autoencoder."),
    seed: int = typer.Option(0, help="Seed for the split, initialisation and augmentation."),
) -> None:
    """Train an i-ResNet classifier (and an autoencoder), fit the ECINN class means, report test metrics."""
    from phenolens.core.outputs import atomic_output_dir, write_json
    from phenolens.explain.counterfactual.evaluate import classification_metrics
    from phenolens.explain.counterfactual.model import TrainingSettings, train_counterfactual_model
    from phenolens.report.counterfactual import training_section
    from phenolens.report.html import Report

    data = read_images(dataset, folder, manifest, channels)
    settings = TrainingSettings(
        size=size,
        centre_on=centre_on,
        blocks=integer_list(blocks, "--blocks"),
        hidden=integer_list(hidden, "--hidden"),
        pad_channels=pad_channels,
        coeff=coeff,
        n_power_iterations=power_iterations,
        inverse_iterations=inverse_iterations,
        epochs=epochs,
        lr=lr,
        test_fraction=test_fraction,
        group_by=group_by,
        autoencoder=autoencoder,
        autoencoder_epochs=autoencoder_epochs,
        seed=seed,
    )
    model, split = train_counterfactual_model(data, [c for c in classes.split(",") if c] or None, settings)
    test = split["data"].subset(split["test_index"])
    metrics = classification_metrics(model, model.tensor(test), model.labels_for(test))
    source = {"dataset": dataset, "folder": str(folder) if folder else None, "manifest": str(manifest) if manifest else None, "channels": channels}
    model.info.update(source=source, test_metrics=metrics)
    with atomic_output_dir(out) as staging:
        model.save(staging)
        write_json(staging / "metrics.json", metrics)
        report = Report("phenolens counterfactual train", metrics=metrics)
        report.add(training_section(model, metrics))
        report.write(staging)
    print(f"test accuracy {metrics['test_accuracy']:.3f}, reconstruction MAE {metrics['reconstruction_mae']:.2e} of the data range; wrote {out}")


@app.command()
def explain(
    checkpoint: Path = typer.Argument(..., help="Folder written by `phenolens counterfactual train`."),
    target: str = typer.Option(..., "--target", help="Class the counterfactuals should be classified as."),
    out: Path = typer.Option(..., "--out", help="Output folder for counterfactuals.npz, metrics.json, GIFs and report.html."),
    dataset: str = typer.Option(None, "--dataset", help="Explain all images of this dataset (default: the checkpoint's held-out test images)."),
    folder: Path = FOLDER,
    manifest: Path = MANIFEST,
    channels: str = CHANNELS,
    nucleus_channel: str = typer.Option(None, "--nucleus-channel", help="DNA channel: measure the signal inside vs outside the nucleus (Otsu)."),
    signal_channel: str = typer.Option(
        None, "--signal-channel", help="Channel whose nuclear contrast is measured (default: the first other channel)."
    ),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Time the gradient (Wachter) baseline side by side."),
    baseline_steps: int = typer.Option(1000, help="Maximum optimisation steps of the gradient baseline."),
    baseline_lr: float = typer.Option(0.01, help="Adam step size of the gradient baseline (standardised units)."),
    proximity: float = typer.Option(1.0, help="Weight of the mean squared change in the gradient baseline."),
    autoencoder: bool = typer.Option(True, "--autoencoder/--no-autoencoder", help="Also run the autoencoder interpolation (when trained)."),
    panels: int = typer.Option(4, help="Counterfactual panels in the report."),
    sweeps: int = typer.Option(3, help="Images with an alpha-sweep animation (GIF)."),
    inverse_tolerance: float = typer.Option(
        None, "--inverse-tolerance", help="Relative residual at which each block's inverse stops (default: the checkpoint's, 1e-3)."
    ),
) -> None:
    """ECINN counterfactuals (alpha_0, alpha_1), difference maps, probabilities, sweeps and metrics."""
    from phenolens.core.errors import PhenolensError
    from phenolens.core.outputs import atomic_output_dir
    from phenolens.explain.counterfactual.evaluate import GradientSettings, check_request, explain_counterfactuals
    from phenolens.explain.counterfactual.model import CounterfactualModel
    from phenolens.report.counterfactual import write_explanation

    if inverse_tolerance is not None and not 0 < inverse_tolerance < 1:
        raise PhenolensError(f"--inverse-tolerance {inverse_tolerance} must lie in (0, 1); 1e-3 keeps counterfactuals far below 8-bit quantisation")
    model = CounterfactualModel.load(checkpoint)
    check_request(model, target, nucleus_channel, signal_channel)
    if inverse_tolerance is not None:
        model.classifier.inverse_tolerance = inverse_tolerance
    if dataset or folder or manifest:
        data = read_images(dataset, folder, manifest, channels)
    else:
        source = model.info.get("source", {})
        saved = {key: Path(source[key]) if source.get(key) else None for key in ("folder", "manifest")}
        data = model.test_subset(read_images(source.get("dataset"), saved["folder"], saved["manifest"], source.get("channels", "")))
    settings = GradientSettings(lr=baseline_lr, proximity=proximity, max_steps=baseline_steps) if baseline else None
    run = explain_counterfactuals(
        model, data, target, baseline=settings, autoencoder=autoencoder, nucleus_channel=nucleus_channel, signal_channel=signal_channel, sweeps=sweeps
    )
    with atomic_output_dir(out) as staging:
        write_explanation(run, staging, panels=panels)
    metrics = run.metrics
    speed = f", {metrics['speedup_vs_gradient']:.0f}x faster than the gradient baseline" if "speedup_vs_gradient" in metrics else ""
    print(f"alpha_1 flips {metrics['flip_rate_alpha1']:.0%} of {metrics['n_counterfactuals']} images{speed}; wrote {out}")
    if nucleus_channel is not None and model.settings.centre_on is None:
        print(
            f"note: these crops are not registered on their nucleus, and ECINN makes nearly one change to every image (median r "
            f"{metrics['change_similarity_alpha1']:.2f}); train with --centre-on {nucleus_channel} for it to meet each cell's nucleus"
        )


def counterfactual_demo(out: Path) -> tuple[list, dict]:
    """Demo step: a small i-ResNet on BBBC013 (CytoplasmicGFP vs NuclearGFP, crops centred on the nucleus)
    trained for 8 epochs, and one ECINN counterfactual panel towards NuclearGFP with the known-answer statistic."""
    import torch

    from phenolens.data.loaders import load
    from phenolens.explain.counterfactual.evaluate import GradientSettings, explain_counterfactuals
    from phenolens.explain.counterfactual.model import TrainingSettings, train_counterfactual_model
    from phenolens.report.counterfactual import counterfactual_sections

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: thread hand-offs cost more than they save, badly so on a busy machine
    try:
        settings = TrainingSettings(size=64, blocks=[1, 1], hidden=[8, 16], epochs=8, patience=8, autoencoder=False, centre_on="DNA")
        model, split = train_counterfactual_model(load("bbbc013"), ["CytoplasmicGFP", "NuclearGFP"], settings)
        test = split["data"].subset(split["test_index"])
        baseline = GradientSettings(max_steps=300, match_confidence=False)
        run = explain_counterfactuals(model, test, "NuclearGFP", baseline=baseline, nucleus_channel="DNA", sweeps=1)
    finally:
        torch.set_num_threads(threads)
    sections = counterfactual_sections(run, out / "counterfactual", panels=1, prefix="demo_counterfactual")
    sections[0].title = "Counterfactuals: ECINN on a small i-ResNet (BBBC013, 8 epochs for the demo), towards NuclearGFP"
    keys = ("test_accuracy", "reconstruction_mae", "flip_rate_alpha0", "flip_rate_alpha1", "speedup_vs_gradient", "nuclear_gfp_increase_rate")
    return sections, {key: run.metrics.get(key) for key in keys}
