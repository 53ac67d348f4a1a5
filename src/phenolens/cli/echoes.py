"""`phenolens echoes simulate | train | detect | evaluate`: overlapping ultrasonic echoes."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Overlapping ultrasonic echoes: simulator, US-CNN, OMP / ISTA / SMP baselines.", no_args_is_help=True)

METHOD_HELP = "Comma-separated methods among uscnn, omp, ista, smp."


@app.command()
def simulate(
    out: Path = typer.Option(..., "--out", help="Output folder: signals.npz, metrics.json, report.html."),
    n_signals: int = typer.Option(1000, help="Number of signals."),
    distribution: str = typer.Option("narrow", help="Pulse width/frequency distribution: none, narrow or wide."),
    mean_gap: float = typer.Option(3.0, help="Overlap lambda: mean time-of-flight gap in units of sigma_0."),
    snr: float = typer.Option(20.0, help="Signal-to-noise ratio (dB)."),
    sigma0: float = typer.Option(9.0, help="Reference pulse width sigma_0 (samples)."),
    freq: float = typer.Option(5.4, help="Reference centre frequency (MHz)."),
    fs: float = typer.Option(100.0, help="Sampling rate (MHz)."),
    seed: int = typer.Option(0, help="Seed; the same seed gives the same signals."),
) -> None:
    """Simulate overlapping-echo signals with their ground truth."""
    import numpy as np

    from phenolens.core.outputs import atomic_output_dir, atomic_write_bytes, write_json
    from phenolens.echoes.pipeline import training_pulse
    from phenolens.echoes.simulate import SimulationConfig, realised_snr_db, simulate
    from phenolens.report.echoes import simulation_section
    from phenolens.report.html import Report

    config = SimulationConfig(
        n_signals=n_signals, distribution=distribution, mean_gap=mean_gap, snr_db=snr, pulse=training_pulse("paper", sigma0, freq, fs), seed=seed
    )
    data = simulate(config)
    realised = realised_snr_db(data)
    gaps = np.diff(np.sort(data.tof, axis=1), axis=1)
    gaps = gaps[np.isfinite(gaps)] / config.pulse.sigma
    metrics = {
        "config": config.to_dict(),
        "echoes": int(np.isfinite(data.tof).sum()),
        "echoes_per_signal": dict(zip(*[v.tolist() for v in np.unique(data.counts, return_counts=True)])),
        "realised_snr_db": {"mean": float(realised.mean()), "std": float(realised.std())},
        "gap_sigma0": {
            "min": float(gaps.min()) if gaps.size else None,
            "mean": float(gaps.mean()) if gaps.size else None,
            "max": float(gaps.max()) if gaps.size else None,
        },
    }
    with atomic_output_dir(out) as staging:
        atomic_write_bytes(staging / "signals.npz", data.to_bytes())
        write_json(staging / "metrics.json", metrics)
        report = Report("phenolens echoes simulate", metrics=metrics)
        report.add(simulation_section(data))
        report.write(staging)
    print(f"wrote {out / 'signals.npz'} ({len(data)} signals) and {out / 'report.html'}")


@app.command()
def train(
    out: Path = typer.Option(..., "--out", help="Output folder: model.safetensors + model.json, metrics.json, report.html."),
    n_signals: int = typer.Option(10000, help="Simulated signals (80 % train, 20 % validation)."),
    distribution: str = typer.Option("narrow", help="Pulse distribution of the training signals: none, narrow or wide."),
    mean_gap: float = typer.Option(3.0, help="Overlap lambda of the training signals (sigma_0 units)."),
    snr: float = typer.Option(20.0, help="SNR of the training signals (dB)."),
    epochs: int = typer.Option(80, help="Maximum epochs (early stopping after 20 without improvement)."),
    batch_size: int = typer.Option(150, help="Batch size."),
    lr: float = typer.Option(0.01, help="Adam learning rate (halved after 12 epochs without improvement)."),
    pulse_from: str = typer.Option(
        "reference",
        "--pulse-from",
        help="Echo model of the training signals: 'reference' fits the built-in reference A-scan (the echo-pulses transducer), "
        "'paper' is the original sigma_0 = 9 samples at 5.4 MHz; --sigma0 / --freq override either.",
    ),
    sigma0: float = typer.Option(None, help="Pulse width sigma_0 (samples); the first kernel spans 6 sigma_0."),
    freq: float = typer.Option(None, help="Centre frequency (MHz)."),
    fs: float = typer.Option(None, help="Detector sampling rate (MHz); default 100, or for --pulse-from reference where sigma_0 is 9 samples."),
    seed: int = typer.Option(0, help="Seed of the simulation, the split and the initial weights."),
) -> None:
    """Train US-CNN on simulated signals (cached by their settings)."""
    from phenolens.core.outputs import atomic_output_dir, write_json
    from phenolens.echoes.detector import EchoDetector
    from phenolens.echoes.pipeline import save_uscnn, training_data, training_pulse
    from phenolens.echoes.training import TrainingSettings
    from phenolens.report.echoes import training_section
    from phenolens.report.html import Report

    pulse = training_pulse(pulse_from, sigma0, freq, fs)
    data = training_data(n_signals, distribution, pulse, seed, mean_gap, snr)
    settings = TrainingSettings(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    detector = EchoDetector("uscnn", distribution=distribution, pulse=pulse, training=settings).fit(data.signals, data.heatmaps)
    history = detector.history_
    n_val = int(round(settings.val_fraction * n_signals))
    metrics = {
        "n_signals": n_signals,
        "n_train": n_signals - n_val,
        "n_val": n_val,
        "training_seconds": detector.training_seconds_,
        "precision": detector.training_precision_,
        "epochs_run": len(history.epochs),
        "best_epoch": history.best_epoch,
        "stopped_early": history.stopped_early,
        "best_val_loss": min(history.column("val_loss")),
        "history": history.epochs,
        "simulation": data.config.to_dict(),
        "training": settings.to_dict(),
    }
    with atomic_output_dir(out) as staging:
        save_uscnn(detector, staging, {"simulation_key": data.config.key(), "training_seconds": detector.training_seconds_})
        write_json(staging / "metrics.json", metrics)
        report = Report("phenolens echoes train: US-CNN", metrics=metrics)
        report.add(training_section(history, detector.training_seconds_, metrics["n_train"], n_val))
        report.write(staging)
    print(f"trained US-CNN in {detector.training_seconds_:.0f} s ({len(history.epochs)} epochs); wrote {out}")


@app.command()
def detect(
    files: list[Path] = typer.Argument(None, help="Signal files (.npy or text, one sample per line); default: the echo-pulses A-scans."),
    out: Path = typer.Option(..., "--out", help="Output folder: detections.csv, metrics.json, report.html."),
    model: Path = typer.Option(None, "--model", help="Folder written by `phenolens echoes train` (needed for uscnn)."),
    methods: str = typer.Option("uscnn,omp,ista,smp", help=METHOD_HELP),
    distribution: str = typer.Option("narrow", help="Dictionary variant of the sparse methods: none, narrow or wide."),
    fs: float = typer.Option(100.0, help="Sampling rate (MHz) of the files."),
) -> None:
    """Detect echoes in real A-scans with real-data settings; report signal, envelope and detections per method."""
    import pandas as pd

    from phenolens.core.errors import PhenolensError
    from phenolens.core.outputs import atomic_output_dir, write_json
    from phenolens.data.readers import read_signal
    from phenolens.echoes.detector import EchoDetector
    from phenolens.echoes.pipeline import load_uscnn, real_signals_and_fit
    from phenolens.echoes.pulse import PulseShape
    from phenolens.echoes.real import detect_real
    from phenolens.report.echoes import real_section
    from phenolens.report.html import Report

    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    if "uscnn" in chosen and model is None:
        raise PhenolensError("--methods includes uscnn but no --model was given; train one with `phenolens echoes train --out T` and pass --model T")
    uscnn = load_uscnn(model) if "uscnn" in chosen else None
    pulse = uscnn.pulse if uscnn else PulseShape(fs_mhz=fs)
    detectors = {m: uscnn if m == "uscnn" else EchoDetector(m, distribution=distribution, pulse=pulse).fit() for m in chosen}
    if files:
        signals, fit = [read_signal(path) for path in files], None
    else:
        signals, fit = real_signals_and_fit()
    results = detect_real(detectors, signals, fs)
    rows = [
        {"signal": r.signal, "method": r.method, "rank": rank, "position_samples": p, "time_us": p / r.fs_mhz, "amplitude": a}
        for r in results
        for rank, (p, a) in enumerate(zip(r.positions, r.amplitudes), start=1)
    ]
    metrics = {"signals": {s.name: {r.method: r.summary() for r in results if r.signal == s.name} for s in signals}}
    if fit is not None:
        metrics["pulse_fit"] = fit.to_dict()
    with atomic_output_dir(out) as staging:
        pd.DataFrame(rows, columns=["signal", "method", "rank", "position_samples", "time_us", "amplitude"]).to_csv(
            staging / "detections.csv", index=False
        )
        write_json(staging / "metrics.json", metrics)
        report = Report("phenolens echoes detect", metrics=metrics)
        reference = next((s.values for s in signals if fit is not None and s.name == "reference_signal_ultem_water"), None)
        report.add(real_section(signals, results, fit, reference))
        report.write(staging)
    print(f"wrote {out / 'detections.csv'} ({len(rows)} echoes) and {out / 'report.html'}")


@app.command()
def evaluate(
    model: Path = typer.Option(..., "--model", help="Folder written by `phenolens echoes train`."),
    out: Path = typer.Option(..., "--out", help="Output folder: metrics.json, sweeps.csv, report.html."),
    n_test: int = typer.Option(300, help="Test signals per setting."),
    n_selection: int = typer.Option(60, help="Signals used to choose each baseline's dictionary variant."),
    small: bool = typer.Option(False, "--small", help="A quick check: 40 test signals, lambda 1 and 3 only, no variant selection."),
    seed: int = typer.Option(20220201, help="Seed of the test sets."),
) -> None:
    """Compare US-CNN with OMP, ISTA and SMP: AUC/F1 against lambda, epsilon and SNR, timing, thickness, real A-scans."""
    from phenolens.core.outputs import atomic_output_dir
    from phenolens.echoes.evaluation import EvaluationSettings
    from phenolens.echoes.pipeline import evaluate as run_evaluation
    from phenolens.echoes.pipeline import load_uscnn

    uscnn = load_uscnn(model)
    settings = EvaluationSettings(n_test=n_test, n_selection=n_selection, pulse=uscnn.pulse, seed=seed)
    if small:
        settings = small_settings(settings)
    result = run_evaluation(uscnn, settings, select=not small, on_step=lambda text: print(f"echoes evaluate: {text}", flush=True))
    with atomic_output_dir(out) as staging:
        write_evaluation(result, staging, "phenolens echoes evaluate")
    print(f"wrote {out / 'metrics.json'} and {out / 'report.html'}")


def small_settings(settings):
    """Settings of a quick evaluation (demo, --small)."""
    from dataclasses import replace

    return replace(settings, n_test=40, lambdas=(1.0, 3.0), epsilons=(0.05, 0.1, 0.2), snrs=(10.0, 20.0), n_timing=30, scan_shape=(4, 16))


def write_evaluation(result, folder: Path, title: str) -> dict:
    """metrics.json, sweeps.csv and report.html of an evaluation; returns the metrics."""
    import pandas as pd

    from phenolens.core.outputs import write_json
    from phenolens.report.html import Report

    metrics = result.metrics()
    rows = [
        {"sweep": sweep, "method": method, "value": float(value), **scores}
        for sweep, by_method in result.sweeps.items()
        for method, by_value in by_method.items()
        for value, scores in by_value.items()
    ]
    pd.DataFrame(rows).to_csv(folder / "sweeps.csv", index=False)
    write_json(folder / "metrics.json", metrics)
    report = Report(title, metrics=metrics)
    for section in evaluation_sections(result):
        report.add(section)
    report.write(folder)
    return metrics


def evaluation_sections(result) -> list:
    from phenolens.report.echoes import real_section, sweep_section, thickness_section, timing_section

    reference = next((s.values for s in result.real_signals if s.name == "reference_signal_ultem_water"), None)
    return [
        sweep_section(result.sweeps, result.variants, result.selection),
        timing_section({**result.timing, "omp-complex": result.reference["omp-complex"]["seconds_per_signal"]}),
        thickness_section(result.scan, result.thickness_maps, result.thickness),
        real_section(result.real_signals, result.real, result.pulse_fit, reference),
    ]


def demo_step(out: Path) -> tuple[list, dict]:
    """Demo: a small US-CNN (1,000 signals, 5 epochs) against OMP/ISTA/SMP on 20 test signals at lambda 1 and 3, plus the real A-scans."""
    from dataclasses import replace

    from phenolens.echoes.detector import EchoDetector
    from phenolens.echoes.evaluation import EvaluationSettings
    from phenolens.echoes.pipeline import evaluate as run_evaluation
    from phenolens.echoes.pipeline import save_uscnn, training_data, training_pulse
    from phenolens.echoes.training import TrainingSettings
    from phenolens.report.echoes import training_section
    from phenolens.report.html import Section

    folder = out / "echoes"
    pulse = training_pulse("reference", None, None, None)
    data = training_data(1000, "narrow", pulse, seed=0)
    detector = EchoDetector("uscnn", pulse=pulse, training=TrainingSettings(epochs=5)).fit(data.signals, data.heatmaps)
    save_uscnn(detector, folder / "model", {"note": "demo model: 1,000 signals, 5 epochs"})
    settings = replace(small_settings(EvaluationSettings(pulse=pulse)), n_test=20, snrs=(20.0,), n_timing=10, scan_shape=(3, 8))
    result = run_evaluation(detector, settings, select=False)
    folder.mkdir(parents=True, exist_ok=True)
    metrics = write_evaluation(result, folder, "phenolens demo: echoes")
    parent = Section("Echoes: US-CNN against sparse coding (demo scale)")
    parent.text(
        "A small US-CNN (1,000 simulated signals, 5 epochs, not the full 10,000 x 80 schedule) against OMP, ISTA and SMP "
        "with the narrow dictionary on 20 test signals per setting; the full comparison is `phenolens echoes evaluate`."
    )
    parent.add(training_section(detector.history_, detector.training_seconds_, len(data) - 200, 200))
    for section in evaluation_sections(result):
        parent.add(section)
    return [parent], {"methods": metrics["methods"], "real": metrics["real"], "targets": metrics["targets"], "pulse_fit": metrics["pulse_fit"]}
