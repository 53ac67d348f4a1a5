"""Counterfactual figures, alpha-sweep animations (GIF) and report sections."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from phenolens.core.outputs import atomic_write_bytes
from phenolens.core.runs import RunWriter
from phenolens.explain.counterfactual.evaluate import ExplanationRun
from phenolens.report.explorer.counterfactual import counterfactual_view
from phenolens.report.figures import OKABE_ITO, bare, channel_limits, display_range, figure
from phenolens.report.html import Report, Section

DIVERGING = "PuOr_r"  # purple-orange: readable under the common colour-vision deficiencies


def counterfactual_panel(run: ExplanationRun, index: int):
    """One image: original, alpha_0 and alpha_1 counterfactuals (grey, shared contrast per channel)
    and the per-channel change x_hat(alpha_1) - x (diverging, symmetric, raw intensity units).

    Parameters
    ----------
    run : ExplanationRun
        An explain run.
    index : int
        The image.

    Returns
    -------
    matplotlib.figure.Figure
        The panel.
    """
    target = run.class_names[run.target]
    original, boundary, confident = run.originals[index], run.ecinn_raw["alpha0"][index], run.ecinn_raw["alpha1"][index]
    rows = [
        (f"original\np({target})={run.ecinn.probabilities[index, run.target]:.2f}", original),
        (f"alpha_0={run.ecinn.alphas['alpha0'][index]:.2f}\np={run.ecinn.probabilities_at['alpha0'][index, run.target]:.2f}", boundary),
        (f"alpha_1={run.ecinn.alphas['alpha1'][index]:.2f}\np={run.ecinn.probabilities_at['alpha1'][index, run.target]:.2f}", confident),
    ]
    title = f"{run.sources[index]}: {run.class_names[run.ecinn.predicted[index]]} -> {target}"
    return _image_grid(rows, confident - original, "change\nalpha_1 - original", run.channel_names, title)


def interpolation_panel(run: ExplanationRun, index: int):
    """The autoencoder alternative for one image: reconstruction, first flipped step, class mean.

    Parameters
    ----------
    run : ExplanationRun
        An explain run with the interpolation.
    index : int
        The image.

    Returns
    -------
    matplotlib.figure.Figure
        The panel.
    """
    target = run.class_names[run.target]
    result, raw = run.interpolation, run.interpolation_raw
    steps = result.probabilities.shape[1] - 1
    flip = int(result.first_flip[index])
    rows = [
        ("original", run.originals[index]),
        (f"reconstruction\np({target})={result.probabilities[index, 0, run.target]:.2f}", raw["reconstruction"][index]),
        (f"first flip i={flip}/{steps}" if flip >= 0 else "no flip", raw["boundary"][index]),
        (f"i={steps}/{steps}\np={result.probabilities[index, -1, run.target]:.2f}", raw["full"][index]),
    ]
    change = raw["full"][index] - raw["reconstruction"][index]
    title = f"{run.sources[index]}: autoencoder interpolation -> {target}"
    return _image_grid(rows, change, "change\ni=n - reconstruction", run.channel_names, title)


def _image_grid(rows: list[tuple[str, np.ndarray]], change: np.ndarray, change_label: str, channel_names: list[str], title: str):
    limits = channel_limits([image for _, image in rows], len(channel_names))
    fig, axes = figure(
        width=1.7 * len(channel_names) + 1.6, height=1.6 * (len(rows) + 1) + 0.4, nrows=len(rows) + 1, ncols=len(channel_names), squeeze=False
    )
    for r, (label, image) in enumerate(rows):
        for c in range(len(channel_names)):
            axes[r, c].imshow(display_range(image[c], limits[c]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    for c, name in enumerate(channel_names):
        bound = float(np.abs(change[c]).max()) or 1.0
        shown = axes[-1, c].imshow(change[c], cmap=DIVERGING, vmin=-bound, vmax=bound, interpolation="nearest")
        colorbar = fig.colorbar(shown, ax=axes[-1, c], fraction=0.046, pad=0.02)
        colorbar.set_label("change (intensity)", fontsize=7)
        colorbar.ax.tick_params(labelsize=6)
        axes[0, c].set_title(name, fontsize=9)
    axes[-1, 0].set_ylabel(change_label, rotation=0, ha="right", va="center", fontsize=8)
    for axis in axes.ravel():
        bare(axis)
    fig.suptitle(title, fontsize=9)
    return fig


def probability_figure(run: ExplanationRun):
    """p(target) of every explained image: original, alpha_0, alpha_1 (and the gradient baseline).

    Parameters
    ----------
    run : ExplanationRun
        An explain run.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    valid = run.ecinn.valid
    columns = {
        "original": run.ecinn.probabilities[valid, run.target],
        "alpha_0": run.ecinn.probabilities_at["alpha0"][valid, run.target],
        "alpha_1": run.ecinn.probabilities_at["alpha1"][valid, run.target],
    }
    if run.gradient is not None:
        columns["gradient"] = run.gradient.probabilities[:, run.target]
    fig, axis = figure(width=5.6, height=3.6)
    values = np.stack(list(columns.values()), 1)
    positions = np.arange(len(columns))
    axis.plot(positions[:3], values[:, :3].T, color=OKABE_ITO[1], alpha=0.35, linewidth=0.8)
    colors = [OKABE_ITO[i] for i in (0, 4, 2, 5)]  # skip the yellow, faint on white
    for p in range(len(columns)):
        jitter = np.linspace(-0.12, 0.12, len(values))
        axis.scatter(p + jitter, values[:, p], s=10, color=colors[p], zorder=3)
    axis.axhline(0.5, color="black", linewidth=0.8, linestyle="--")
    axis.set_xticks(positions, list(columns))
    axis.set_ylim(-0.02, 1.02)
    axis.set_ylabel(f"p({run.class_names[run.target]})")
    # the title reports what happened: the counterfactuals may fail to reach the target class
    reached = float(np.mean(columns["alpha_1"] > 0.5)) if len(columns["alpha_1"]) else float("nan")
    axis.set_title(f"alpha_1 reaches p({run.class_names[run.target]}) > 0.5 for {reached:.0%} of the images")
    return fig


def known_answer_figure(run: ExplanationRun):
    """Nuclear minus cytoplasmic signal before vs after each alpha_1 counterfactual.

    Parameters
    ----------
    run : ExplanationRun
        An explain run with the known answer.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    before, after = run.contrast["before"], run.contrast["after"]
    fig, axis = figure(width=4.6, height=4.2)
    basis = run.contrast["basis"]
    axis.scatter(before[basis], after[basis], s=14, color=OKABE_ITO[4], label=run.metrics["nuclear_gfp_basis"])
    if not basis.all():
        axis.scatter(before[~basis], after[~basis], s=14, color=OKABE_ITO[5], marker="x", label="misclassified (not counted)")
    axis.legend(frameon=False, fontsize="small")
    finite = np.isfinite(before) & np.isfinite(after)
    low, high = (float(np.min([before[finite], after[finite]])), float(np.max([before[finite], after[finite]]))) if finite.any() else (0.0, 1.0)
    axis.plot([low, high], [low, high], color="black", linewidth=0.8, linestyle="--")
    axis.set_xlabel("nucleus - rest of cell, original (intensity)")
    axis.set_ylabel("nucleus - rest of cell, alpha_1 (intensity)")
    axis.set_title(f"Signal moved {'into' if run.metrics['nuclear_gfp_increase_rate'] >= 0.5 else 'out of'} the nucleus")
    return fig


def sweep_gif(sweep: dict, channel_names: list[str], target_name: str, target: int, scale: int = 3, milliseconds: int = 180) -> bytes:
    """Animated GIF of an alpha sweep: channels side by side (shared contrast per channel), with alpha
    and p(target) written on each frame.

    Parameters
    ----------
    sweep : dict
        ``alphas``, ``images`` (raw) and ``probabilities`` of one sweep.
    channel_names : list of str
        The channels.
    target_name : str
        The target class.
    target : int
        Its index.
    scale : int
        Pixel magnification.
    milliseconds : int
        Frame duration.

    Returns
    -------
    bytes
        The GIF file.
    """
    from PIL import Image, ImageDraw

    images = sweep["images"]
    limits = channel_limits(list(images), len(channel_names))
    frames = []
    for image, alpha, probability in zip(images, sweep["alphas"], sweep["probabilities"][:, target]):
        tiles = [display_range(image[c], limits[c]) for c in range(len(channel_names))]
        strip = (np.concatenate(tiles, axis=1) * 255).astype(np.uint8)
        frame = Image.fromarray(strip).resize((strip.shape[1] * scale, strip.shape[0] * scale), Image.NEAREST)
        canvas = Image.new("L", (frame.width, frame.height + 14), 0)
        canvas.paste(frame, (0, 14))
        ImageDraw.Draw(canvas).text((2, 1), f"alpha={alpha:.2f} p({target_name})={probability:.2f}", fill=255)
        frames.append(canvas)
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=milliseconds, loop=0)
    return buffer.getvalue()


def sweep_strip(sweep: dict, channel_names: list[str], target_name: str, target: int, source: str, frames: int = 6):
    """A static film strip of the sweep (every few frames, one row per channel) for the HTML report.

    Parameters
    ----------
    sweep : dict
        One sweep (see `sweep_gif`).
    channel_names : list of str
        The channels.
    target_name : str
        The target class.
    target : int
        Its index.
    source : str
        The image's source, for the title.
    frames : int
        Frames shown.

    Returns
    -------
    matplotlib.figure.Figure
        The strip.
    """
    chosen = np.unique(np.linspace(0, len(sweep["alphas"]) - 1, frames).round().astype(int))
    limits = channel_limits(list(sweep["images"]), len(channel_names))
    fig, axes = figure(
        width=1.3 * len(chosen) + 1.2, height=1.3 * len(channel_names) + 0.8, nrows=len(channel_names), ncols=len(chosen), squeeze=False
    )
    for j, k in enumerate(chosen):
        for c, name in enumerate(channel_names):
            axes[c, j].imshow(display_range(sweep["images"][k][c], limits[c]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            axes[c, j].set_xticks([])
            axes[c, j].set_yticks([])
            axes[c, 0].set_ylabel(name, fontsize=8)
        axes[0, j].set_title(f"a={sweep['alphas'][k]:.2f}\np={sweep['probabilities'][k, target]:.2f}", fontsize=7)
    fig.suptitle(f"{source}: z + alpha Delta towards {target_name}", fontsize=9)
    return fig


def cost_table(metrics: dict) -> pd.DataFrame:
    """ECINN vs gradient baseline (vs autoencoder): flip rate, evaluations, seconds, L2 change, and how
    alike the changes of different images are (`evaluate.change_similarity`).

    Parameters
    ----------
    metrics : dict
        An explain run's metrics.

    Returns
    -------
    pandas.DataFrame
        One row per method.
    """
    rows = [
        (
            "ECINN alpha_1",
            metrics["flip_rate_alpha1"],
            metrics["evaluations_per_counterfactual"],
            metrics["seconds_per_counterfactual"],
            metrics["l2_proximity_alpha1"],
            metrics["change_similarity_alpha1"],
        )
    ]
    if "gradient_flip_rate" in metrics:
        rows.append(
            (
                "gradient (Wachter)",
                metrics["gradient_flip_rate"],
                metrics["gradient_evaluations_per_counterfactual"],
                metrics["gradient_seconds_per_counterfactual"],
                metrics["l2_proximity_gradient"],
                metrics["change_similarity_gradient"],
            )
        )
    if "autoencoder_flip_rate_full" in metrics:
        rows.append(
            (
                "autoencoder i=n",
                metrics["autoencoder_flip_rate_full"],
                metrics["autoencoder_evaluations_per_counterfactual"],
                metrics["autoencoder_seconds_per_counterfactual"],
                np.nan,
                metrics["autoencoder_change_similarity"],
            )
        )
    columns = ["method", "flip rate", "network evaluations", "seconds", "L2 change (standardised)", "same change in every image (median r)"]
    return pd.DataFrame(rows, columns=columns)


def counterfactual_sections(run: ExplanationRun, out: Path, panels: int = 4, prefix: str = "counterfactual") -> list[Section]:
    """Report sections for an explain run; writes the sweep GIFs to `out/gifs/`.

    Parameters
    ----------
    run : ExplanationRun
        An explain run.
    out : Path
        The folder the report is written to (a run writer's staging folder).
    panels : int
        Counterfactual panels shown.
    prefix : str
        Prefix of the figure and GIF file names.

    Returns
    -------
    list of Section
        The sections.
    """
    metrics, target = run.metrics, run.class_names[run.target]
    section = Section(f"Counterfactuals towards {target}")
    section.view(counterfactual_view(run))
    section.text(
        f"{metrics['n_counterfactuals']} of {metrics['n_images']} images are not predicted as {target} and get an ECINN counterfactual "
        f"x_hat = f^-1(z + alpha Delta) on the i-ResNet. alpha_1 flips {metrics['flip_rate_alpha1']:.0%} of them, alpha_0 (the hyperplane "
        f"between the class means) {metrics['flip_rate_alpha0']:.0%}. Test accuracy {metrics['test_accuracy']:.3f}; inverse reconstruction error "
        f"{metrics['reconstruction_mae']:.2e} of the data range after at most {metrics['inverse_fixed_point_iterations']} fixed-point "
        "iterations per block."
        + (f" Crops are centred on their nucleus ({metrics['crops_centred_on']} channel, Otsu)." if metrics.get("crops_centred_on") else "")
    )
    section.table(
        cost_table(metrics),
        "Cost per counterfactual, measured side by side in one run (shared 2-core machine). The last column is the median "
        "correlation between the change maps of two images: near 1, the method makes one change whatever the image.",
    )
    section.figure(
        probability_figure(run),
        f"Classifier probability of {target} for the originals and their counterfactuals.",
        filename=f"{prefix}_probabilities.png",
    )
    for index in np.flatnonzero(run.ecinn.valid)[:panels]:
        section.figure(
            counterfactual_panel(run, index),
            "Original, alpha_0 and alpha_1 counterfactuals and the per-channel change.",
            filename=f"{prefix}_panel_{index}.png",
        )
        if run.interpolation is not None:
            section.figure(
                interpolation_panel(run, index),
                "Autoencoder interpolation towards the class mean latent.",
                filename=f"{prefix}_autoencoder_{index}.png",
            )
    for sweep in run.sweeps:
        name = f"gifs/{prefix}_sweep_{sweep['index']}.gif"
        atomic_write_bytes(out / name, sweep_gif(sweep, run.channel_names, target, run.target))
        source = run.sources[sweep["index"]]
        section.figure(
            sweep_strip(sweep, run.channel_names, target, run.target, source),
            f"alpha sweep (animation: {name}).",
            filename=f"{prefix}_sweep_{sweep['index']}.png",
        )
    if run.contrast:
        section.text(
            f"Known answer: the nuclear minus rest-of-cell signal rose in {metrics['nuclear_gfp_increase_rate']:.0%} and fell in "
            f"{metrics['nuclear_gfp_decrease_rate']:.0%} of {metrics['nuclear_gfp_images']} counterfactuals of "
            f"{metrics['nuclear_gfp_basis']} (over every image predicted as another class: rose in "
            f"{metrics['nuclear_gfp_increase_rate_all_predicted']:.0%} of {metrics['nuclear_gfp_images_all_predicted']}). "
            f"Of the signal a counterfactual adds, a median {metrics['nuclear_gfp_added_in_nucleus_median']:.0%} lies in the nucleus "
            "(Otsu on the DNA channel of the original)."
        )
        section.figure(
            known_answer_figure(run), "Nuclear contrast of the signal channel before and after alpha_1.", filename=f"{prefix}_known_answer.png"
        )
    return [section]


def training_report(model, metrics: dict) -> Report:
    """The report of `phenolens counterfactual train`: architecture, held-out metrics, training curves.

    Parameters
    ----------
    model : CounterfactualModel
        The trained model.
    metrics : dict
        Its held-out metrics (`classification_metrics`).

    Returns
    -------
    Report
        Ready for `RunWriter.write_report`.
    """
    section = Section("i-ResNet training")
    settings = model.settings
    registration = "" if settings.centre_on is None else f"centred on their nucleus ({settings.centre_on} channel, Otsu) and "
    section.text(
        f"i-ResNet: {len(settings.blocks)} scales with {settings.blocks} blocks (hidden {settings.hidden}), {settings.pad_channels} zero-padded "
        f"channels, spectral bound {settings.coeff} per convolution; crops {registration}padded to {settings.size} px. "
        f"Classes: {', '.join(model.class_names)}. "
        f"Held-out test accuracy {metrics['test_accuracy']:.3f} on {metrics['n_labelled']} images; inverse reconstruction error "
        f"{metrics['reconstruction_mae']:.2e} of the data range."
    )
    for key, title in (("history", "i-ResNet"), ("autoencoder_history", "autoencoder")):
        history = model.info.get(key)
        if not history:
            continue
        fig, axis = figure(width=5.0, height=3.2)
        epochs = [record["epoch"] + 1 for record in history]
        axis.plot(epochs, [record["train_loss"] for record in history], label="training")
        axis.plot(epochs, [record.get("val_loss", np.nan) for record in history], label="validation")
        axis.set_xlabel("epoch")
        axis.set_ylabel("cross-entropy" if key == "history" else "mean squared error")
        axis.set_title(f"{title} loss by epoch")
        axis.legend()
        section.figure(fig, f"{title} training and validation loss.", filename=f"{key}.png")
    report = Report("phenolens counterfactual train", metrics=metrics)
    report.add(section)
    return report


def write_explanation(run: ExplanationRun, writer: RunWriter, panels: int = 4) -> None:
    """Write an explain run through the run writer.

    Parameters
    ----------
    run : ExplanationRun
        The result of `explain_counterfactuals`.
    writer : RunWriter
        An entered run writer: metrics.json, counterfactuals.npz (images, difference maps,
        probabilities, alphas), a per-image counterfactuals.csv, the sweep GIFs and report.html go
        into its staging folder.
    panels : int
        Counterfactual panels in the report.
    """
    ecinn = run.ecinn
    arrays = {
        "originals": run.originals,
        "alpha0": ecinn.alphas["alpha0"],
        "alpha1": ecinn.alphas["alpha1"],
        "counterfactual_alpha0": run.ecinn_raw["alpha0"],
        "counterfactual_alpha1": run.ecinn_raw["alpha1"],
        "difference_alpha0": run.ecinn_raw["alpha0"] - run.originals,
        "difference_alpha1": run.ecinn_raw["alpha1"] - run.originals,
        "probabilities": ecinn.probabilities,
        "probabilities_alpha0": ecinn.probabilities_at["alpha0"],
        "probabilities_alpha1": ecinn.probabilities_at["alpha1"],
        "valid": ecinn.valid,
        "predicted": ecinn.predicted,
        "labels": run.labels,
    }
    if run.interpolation is not None:
        arrays.update({f"autoencoder_{key}": value for key, value in run.interpolation_raw.items()})
        arrays["autoencoder_probabilities"] = run.interpolation.probabilities
    np.savez_compressed(writer.file("counterfactuals.npz"), **arrays)
    table = pd.DataFrame(
        {
            "source": run.sources,
            "label": [run.class_names[i] if i >= 0 else "" for i in run.labels],
            "predicted": [run.class_names[i] for i in ecinn.predicted],
            "has_counterfactual": ecinn.valid,
            "p_target": ecinn.probabilities[:, run.target],
            "alpha0": ecinn.alphas["alpha0"],
            "alpha1": ecinn.alphas["alpha1"],
            "p_target_alpha0": ecinn.probabilities_at["alpha0"][:, run.target],
            "p_target_alpha1": ecinn.probabilities_at["alpha1"][:, run.target],
            "flipped_alpha1": ecinn.flipped("alpha1") & ecinn.valid,
        }
    )
    if run.gradient is not None:
        table.loc[ecinn.valid, "gradient_steps"] = run.gradient.steps
        table.loc[ecinn.valid, "gradient_flipped"] = run.gradient.flipped
    if run.contrast:
        table.loc[ecinn.valid, "nuclear_contrast_before"] = run.contrast["before"]
        table.loc[ecinn.valid, "nuclear_contrast_alpha1"] = run.contrast["after"]
    writer.write_table("counterfactuals.csv", table)
    writer.write_metrics(run.metrics)
    report = Report(f"phenolens counterfactual explain: towards {run.class_names[run.target]}", metrics=run.metrics)
    for section in counterfactual_sections(run, writer.path, panels=panels):
        report.add(section)
    writer.write_report(report)
