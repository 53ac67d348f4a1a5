"""Report sections for the echoes pipeline: simulation, training, sweeps, timing, thickness maps, real A-scans."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from phenolens.core.runs import RunWriter
from phenolens.echoes.pipeline import REFERENCE_SIGNAL, EvaluationResult
from phenolens.echoes.pulse import PulseFit, envelope, gaussian_envelope
from phenolens.echoes.real import RealDetection, prepare_real_signal
from phenolens.echoes.simulate import EchoSet
from phenolens.echoes.thickness import LayerScan
from phenolens.report.explorer.echoes import SCAN_COLUMN_LABEL, SCAN_ROW_LABEL, method_colour, real_scans_view, scan_view
from phenolens.report.figures import OKABE_ITO, figure
from phenolens.report.html import Report, Section

SWEEP_LABELS = {
    "lambda": "overlap lambda (gaps Exp(lambda sigma_0) within the gap bounds)",
    "epsilon": "hit tolerance epsilon (relative envelope error)",
    "snr": "signal-to-noise ratio (dB)",
}


def simulation_section(data: EchoSet, examples: int = 3) -> Section:
    """Example signals with envelopes, true echoes and heat maps, plus echo-count and gap histograms.

    Parameters
    ----------
    data : EchoSet
        Simulated signals.
    examples : int
        Signals drawn.

    Returns
    -------
    Section
    """
    config = data.settings
    section = Section(f"Simulated signals ({len(data):,}, {config.distribution} pulses, lambda = {config.mean_gap:g}, SNR {config.snr_db:g} dB)")
    section.text(
        f"Echoes: unit-norm Gaussian pulses, sigma_0 = {config.sigma0:g} samples, f_0 = {config.freq_mhz:g} MHz at "
        f"{config.fs_mhz:g} MHz sampling; 1-{config.max_echoes} echoes per {config.length}-sample signal, amplitudes "
        f"U[{config.min_amplitude:g}, 1], phases U[0, 2 pi], gaps Exp(mean {config.mean_gap:g} sigma_0) restricted to "
        f"[{config.gap_bounds[0]:g}, {config.gap_bounds[1]:g}] sigma_0."
    )
    fig, axes = figure(9.0, 2.3 * examples, nrows=examples, sharex=True)
    t = np.arange(config.length) / config.fs_mhz
    for axis, index in zip(np.atleast_1d(axes), range(examples)):
        axis.plot(t, data.signals[index], color=OKABE_ITO[7], lw=0.8, label="signal")
        axis.plot(t, envelope(data.signals[index]), color=OKABE_ITO[1], lw=1.0, label="envelope")
        axis.plot(t, data.heatmaps[index], color=OKABE_ITO[5], lw=1.0, label="target heat map")
        present = np.isfinite(data.tof[index])
        axis.vlines(data.tof[index][present] / config.fs_mhz, 0, data.amplitude[index][present], color=OKABE_ITO[2], lw=2, label="true echoes")
        axis.set_ylabel("amplitude (a.u.)")
    np.atleast_1d(axes)[0].legend(ncol=4, fontsize=8, loc="upper right")
    np.atleast_1d(axes)[-1].set_xlabel("time (us)")
    section.figure(
        fig,
        "Simulated signals: noisy signal, its Hilbert envelope, the true echoes (times of flight, amplitudes) and the heat-map target.",
        "simulation_examples.png",
    )
    gaps = np.diff(np.sort(data.tof, axis=1), axis=1)
    fig, axes = figure(9.0, 3.0, ncols=2)
    axes[0].bar(*np.unique(data.counts, return_counts=True), color=OKABE_ITO[4])
    axes[0].set_xlabel("echoes per signal")
    axes[0].set_ylabel("signals (count)")
    axes[1].hist(gaps[np.isfinite(gaps)] / config.sigma0, bins=40, color=OKABE_ITO[0])
    axes[1].set_xlabel("time-of-flight gap (sigma_0)")
    axes[1].set_ylabel("gaps (count)")
    section.figure(fig, "Echo counts are uniform on 1..K; gaps follow the truncated exponential.", "simulation_histograms.png")
    return section


def training_section(history, seconds: float, n_train: int, n_val: int, lr_factor: float, lr_patience: int) -> Section:
    """Train/validation loss and learning rate per epoch.

    Parameters
    ----------
    history : phenolens.training.History
        The training record.
    seconds : float
        Training time.
    n_train, n_val : int
        Set sizes.
    lr_factor, lr_patience : float, int
        The plateau schedule the training used (`EchoTrainingSettings.lr_factor`, `.lr_patience`), for the caption.

    Returns
    -------
    Section
    """
    epochs = np.arange(1, len(history.epochs) + 1)
    section = Section("US-CNN training")
    section.text(
        f"{n_train:,} training and {n_val:,} validation signals; {len(epochs)} epochs in {seconds:.0f} s; best epoch "
        f"{(history.best_epoch or 0) + 1}{' (stopped early)' if history.stopped_early else ''}."
    )
    fig, axes = figure(9.0, 3.2, ncols=2)
    axes[0].semilogy(epochs, history.column("train_loss"), label="train", color=OKABE_ITO[4])
    axes[0].semilogy(epochs, history.column("val_loss"), label="validation", color=OKABE_ITO[5])
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("MSE loss (log)")
    axes[0].legend()
    axes[1].semilogy(epochs, history.column("lr"), color=OKABE_ITO[2])
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("learning rate (log)")
    section.figure(
        fig,
        f"Dense MSE loss per epoch; the learning rate is multiplied by {lr_factor:g} after {lr_patience} epochs without validation improvement.",
        "training_curves.png",
    )
    return section


def sweep_section(sweeps: dict, variants: Mapping[str, str], selection: Mapping[str, Mapping[str, float]]) -> Section:
    """AUC and max F1 against lambda, epsilon and SNR for every method, with the tables.

    Parameters
    ----------
    sweeps : dict
        `run_sweeps` output.
    variants : mapping
        Each baseline's dictionary variant.
    selection : mapping
        Selection AUC per baseline and variant (empty without selection).

    Returns
    -------
    Section
    """
    section = Section("Detection in simulation: AUC and F1 against overlap, tolerance and noise")
    chosen = ", ".join(f"{method}: {variant}" for method, variant in variants.items())
    section.text(f"Each baseline uses its best dictionary variant at the default setting ({chosen}); selection AUCs are in the table below.")
    if selection:
        section.table(
            pd.DataFrame(selection).T.rename_axis("method"), "Selection AUC of each dictionary variant (default setting, separate signals)."
        )
    for sweep, label in SWEEP_LABELS.items():
        if not sweeps.get(sweep):
            continue
        fig, axes = figure(10.0, 3.4, ncols=2)
        rows = []
        for method, by_value in sweeps[sweep].items():
            values = [float(v) for v in by_value]
            for axis, metric in zip(axes, ("auc", "f1")):
                axis.plot(values, [r[metric] for r in by_value.values()], marker="o", label=method, color=method_colour(method))
            rows += [{"method": method, sweep: float(v), "auc": r["auc"], "f1": r["f1"]} for v, r in by_value.items()]
        for axis, metric in zip(axes, ("AUC (precision-recall)", "max F1")):
            axis.set_xlabel(label)
            axis.set_ylabel(metric)
            axis.set_ylim(0, 1)
            if sweep == "epsilon":
                axis.set_xscale("log")
        axes[1].legend(fontsize=8)
        section.figure(fig, f"AUC and maximal F1 against {label}; other settings at their defaults.", f"sweep_{sweep}.png")
        table = pd.DataFrame(rows).pivot(index=sweep, columns="method", values="auc").rename_axis(label)
        section.table(table, f"AUC (precision-recall) of each method against {label}.")
    return section


def timing_section(timing: Mapping[str, float]) -> Section:
    """Seconds per signal of every method, as a bar chart and as multiples of US-CNN's time.

    Parameters
    ----------
    timing : mapping
        Seconds per signal by method.

    Returns
    -------
    Section
    """
    names = list(timing)
    section = Section("Time per signal (CPU, batched, measured side by side)")
    fig, axis = figure(6.0, 3.0)
    axis.bar(names, [timing[n] * 1e3 for n in names], color=[method_colour(n) for n in names])
    axis.set_yscale("log")
    axis.set_ylabel("milliseconds per signal (log)")
    section.figure(fig, "Per-signal detection time, each method on the same signals in one run.", "timing.png")
    reference = next((n for n in names if n.startswith("uscnn")), None)
    if reference:
        section.text("; ".join(f"{n}: {timing[n] / timing[reference]:.1f}x US-CNN's time" for n in names if n != reference) + ".")
    return section


def centre_pixel_ticks(axis) -> None:
    """Ticks of an `imshow` map only at whole indices, so each one sits on the centre of the pixel it names.

    Parameters
    ----------
    axis : matplotlib.axes.Axes
        An axis showing a map drawn with `imshow` (pixel i spans i - 0.5 .. i + 0.5).
    """
    from matplotlib.ticker import MaxNLocator

    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.yaxis.set_major_locator(MaxNLocator(integer=True))


def thickness_section(scan: LayerScan, estimates: Mapping[str, np.ndarray], errors: Mapping[str, dict]) -> Section:
    """True thickness map and, per method, the estimated map and its absolute error.

    Parameters
    ----------
    scan : LayerScan
        The simulated scan.
    estimates : mapping
        Thickness map (mm) per method.
    errors : mapping
        `thickness_errors` per method.

    Returns
    -------
    Section
    """
    section = Section("Layer thickness on a simulated scan")
    config = scan.config
    section.text(
        f"{config.rows} x {config.columns} A-scans of a layer whose time-of-flight difference steps through "
        f"{', '.join(f'{s:g}' for s in config.tofd_steps)} sigma_0 across the scan (velocity {config.velocity_mm_per_us} mm/us, "
        f"SNR {config.snr_db:g} dB). Thickness = velocity x TOFD / 2 from the two largest detected echoes; 0 where fewer than two."
    )
    vmax = scan.thickness_mm.max() * 1.3
    columns = len(estimates) + 1
    fig, axes = figure(2.6 * columns + 1.5, 5.2, nrows=2, ncols=columns, squeeze=False, constrained_layout=True, sharex=True, sharey=True)
    image = axes[0, 0].imshow(scan.thickness_mm, vmin=0, vmax=vmax, aspect="auto")
    axes[0, 0].set_title("true thickness")
    axes[1, 0].axis("off")
    for column, (method, estimate) in enumerate(estimates.items(), start=1):
        axes[0, column].imshow(estimate, vmin=0, vmax=vmax, aspect="auto")
        axes[0, column].set_title(method)
        error_image = axes[1, column].imshow(np.abs(estimate - scan.thickness_mm), vmin=0, vmax=vmax / 2, cmap="magma", aspect="auto")
        axes[1, column].set_title(f"|error| (thin MAE {errors[method]['mae_thinnest_mm']:.3f} mm)", fontsize=9)
    for axis in axes.ravel():
        centre_pixel_ticks(axis)
    for axis in (axes[0, 0], axes[1, 1]):
        axis.set_ylabel(SCAN_ROW_LABEL)
    for axis in axes[1]:
        axis.set_xlabel(SCAN_COLUMN_LABEL)
    axes[0, 0].set_xlabel(SCAN_COLUMN_LABEL)
    fig.colorbar(image, ax=axes[0].tolist(), label="thickness (mm)")
    fig.colorbar(error_image, ax=axes[1].tolist(), label="absolute error (mm)")
    section.figure(
        fig,
        "Thickness maps (top) and absolute-error maps (bottom); the thinnest layer is the left block. Axes count A-scans: "
        "the simulation has no scan pitch, so positions are indices, not millimetres.",
        "thickness_maps.png",
    )
    section.table(
        pd.DataFrame(errors).T.rename_axis("method"),
        "Mean absolute thickness error (mm) and fraction of positions resolved into two echoes.",
    )
    return section


def pulse_fit_figure(values: np.ndarray, fit: PulseFit):
    """The reference pulse with the fitted echo model.

    Parameters
    ----------
    values : numpy.ndarray
        The reference A-scan.
    fit : PulseFit
        The fitted model.

    Returns
    -------
    matplotlib.figure.Figure
    """
    values = np.asarray(values, dtype=np.float64) - np.mean(values)
    t = np.arange(len(values))
    model = fit.amplitude * gaussian_envelope(t, fit.tof, fit.pulse.sigma) * np.cos(fit.pulse.omega * (t - fit.tof) + fit.pulse.phase)
    fig, axis = figure(8.0, 3.0)
    axis.plot(t / fit.pulse.fs_mhz, values, color=OKABE_ITO[7], lw=0.9, label="reference pulse")
    axis.plot(t / fit.pulse.fs_mhz, model, color=OKABE_ITO[5], lw=1.2, ls="--", label="fitted echo model")
    axis.set_xlabel("time (us)")
    axis.set_ylabel("amplitude (a.u.)")
    axis.legend()
    return fig


def real_section(signals, detections: list[RealDetection], fit: PulseFit | None = None, reference_values: np.ndarray | None = None) -> Section:
    """Per real A-scan: signal, envelope and each method's detections; a table of counts and TOFDs.

    Parameters
    ----------
    signals : list of Signal
        The A-scans.
    detections : list of RealDetection
        `detect_real` output.
    fit : PulseFit, optional
        The echo model fitted to the reference pulse.
    reference_values : numpy.ndarray, optional
        The reference A-scan, drawn with the fit.

    Returns
    -------
    Section
    """
    section = Section("Real A-scans (echo-pulses)")
    if fit is not None:
        pulse = fit.pulse
        section.text(
            f"Echo model fitted to the reference pulse: sigma_0 = {pulse.sigma:.2f} samples ({pulse.sigma_us * 1e3:.0f} ns), "
            f"f_0 = {pulse.freq_mhz:.2f} MHz, phase {pulse.phase:.2f} rad at {pulse.fs_mhz:g} MHz sampling "
            f"(relative residual {fit.relative_residual:.3f})."
        )
        if reference_values is not None:
            section.figure(
                pulse_fit_figure(reference_values, fit),
                "Reference pulse (flat reflector in water) and the fitted Gaussian echo model.",
                "pulse_fit.png",
            )
    methods = list(dict.fromkeys(d.method for d in detections))
    for signal in signals:
        values = prepare_real_signal(signal.values)
        found = [d for d in detections if d.signal == signal.name]
        fs = found[0].fs_mhz if found else 100.0
        t = np.arange(len(values)) / fs
        fig, axes = figure(10.0, 1.7 * len(methods), nrows=len(methods), sharex=True, squeeze=False)
        for axis, method in zip(axes[:, 0], methods):
            result = next(d for d in found if d.method == method)
            axis.plot(t, values, color="#777777", lw=0.7)  # grey as the caption and the explorer's A-scan: black is a method's colour
            axis.plot(t, envelope(values), color=OKABE_ITO[1], lw=1.0)
            peak = envelope(values).max()
            axis.vlines(result.positions / fs, 0, result.amplitudes * peak, color=method_colour(method), lw=2.5)
            axis.set_ylabel(f"{method}\n(a.u.)", fontsize=9)
        axes[-1, 0].set_xlabel("time (us)")
        section.figure(
            fig,
            f"{signal.name}: signal (grey), envelope (blue) and detected echoes per method (bars, height = normalised amplitude).",
            f"real_{signal.name}.png",
        )
    rows = [
        {"signal": d.signal, "method": d.method, "echoes": d.n_echoes, "dominant": d.n_dominant, "TOFD two largest (us)": d.tofd_us}
        for d in detections
    ]
    section.table(
        pd.DataFrame(rows), "Echoes above the real-data threshold, dominant echoes (>= half the largest), and the TOFD of the two largest echoes."
    )
    return section.view(real_scans_view(signals, detections))


def evaluation_sections(result: EvaluationResult) -> list[Section]:
    """The report sections of an evaluation: sweeps, timing, thickness maps, real A-scans.

    Parameters
    ----------
    result : EvaluationResult
        `phenolens.echoes.pipeline.evaluate` output.

    Returns
    -------
    list of Section
    """
    reference = next((s.values for s in result.real_signals if s.name == REFERENCE_SIGNAL), None)
    return [
        sweep_section(result.sweeps, result.variants, result.selection),
        timing_section({**result.timing, "omp-complex": result.reference["omp-complex"]["seconds_per_signal"]}),
        thickness_section(result.scan, result.thickness_maps, result.thickness).view(
            scan_view(result.scan, result.scan_detections, result.thickness_maps)
        ),
        real_section(result.real_signals, result.real, result.pulse_fit, reference),
    ]


def write_evaluation(result: EvaluationResult, run: RunWriter, title: str) -> dict:
    """Write an evaluation's metrics.json, sweeps.csv and report.html into a run folder.

    Parameters
    ----------
    result : EvaluationResult
        `phenolens.echoes.pipeline.evaluate` output.
    run : RunWriter
        The entered run writer.
    title : str
        The report's title.

    Returns
    -------
    dict
        The metrics.
    """
    metrics = result.metrics()
    rows = [
        {"sweep": sweep, "method": method, "value": float(value), **scores}
        for sweep, by_method in result.sweeps.items()
        for method, by_value in by_method.items()
        for value, scores in by_value.items()
    ]
    run.write_table("sweeps.csv", pd.DataFrame(rows))
    run.write_metrics(metrics)
    report = Report(title, metrics=metrics)
    for section in evaluation_sections(result):
        report.add(section)
    run.write_report(report)
    return metrics
