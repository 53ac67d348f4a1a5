"""`phenolens echoes simulate | train | detect | evaluate`: overlapping ultrasonic echoes.

Each command builds its settings object from the options (`phenolens.echoes.settings`), calls the
pipeline (`phenolens.echoes.pipeline`) and writes one run folder through `RunWriter`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from phenolens.cli.options import OVERWRITE, RESUME, settings_options
from phenolens.echoes.settings import EchoDetectionSettings, EchoEvaluationSettings, EchoSimulationSettings, EchoTrainingSettings

app = typer.Typer(help="Overlapping ultrasonic echoes: simulator, US-CNN, OMP / ISTA / SMP baselines.", no_args_is_help=True)


@app.command()
@settings_options()
def simulate(
    out: Path = typer.Option(..., "--out", help="Output folder: signals.npz, metrics.json, report.html, run.json."),
    overwrite: bool = OVERWRITE,
    settings: EchoSimulationSettings = None,
) -> None:
    """Simulate overlapping-echo signals with their ground truth."""
    from phenolens.core.outputs import atomic_write_bytes
    from phenolens.core.runs import RunWriter
    from phenolens.echoes.pipeline import simulation_summary
    from phenolens.echoes.simulate import simulate as simulate_signals
    from phenolens.report.echoes import simulation_section
    from phenolens.report.html import Report

    run = RunWriter(out, command="echoes simulate", settings=settings, overwrite=overwrite)
    data = simulate_signals(settings)
    metrics = simulation_summary(data)
    with run:
        atomic_write_bytes(run.file("signals.npz"), data.to_bytes())
        run.write_metrics(metrics)
        report = Report("phenolens echoes simulate", metrics=metrics)
        report.add(simulation_section(data))
        run.write_report(report)
    print(f"wrote {out / 'signals.npz'} ({len(data)} signals) and {out / 'report.html'}")


@app.command()
@settings_options()
def train(
    out: Path = typer.Option(..., "--out", help="Output folder: model.safetensors + model.json, metrics.json, report.html, run.json."),
    overwrite: bool = OVERWRITE,
    resume: bool = RESUME,
    settings: EchoTrainingSettings = None,
) -> None:
    """Train US-CNN on simulated signals (cached by their settings)."""
    from phenolens.core.runs import RunWriter
    from phenolens.echoes.pipeline import save_uscnn, train_detector, training_facts
    from phenolens.echoes.simulate import simulation_key
    from phenolens.report.echoes import training_section
    from phenolens.report.html import Report
    from phenolens.training.checkpoint import checkpointed

    datasets = ["echo-pulses"] if settings.pulse_from == "reference" else []
    run = RunWriter(out, command="echoes train", settings=settings, overwrite=overwrite, datasets=datasets, resume=resume)
    with checkpointed(run):
        detector, data = train_detector(settings)
        metrics = {**training_facts(detector, settings), "simulation": data.settings.to_dict()}
        save_uscnn(detector, run.path, {"simulation_key": simulation_key(data.settings), "training_seconds": detector.training_seconds_})
        run.write_metrics(metrics)
        report = Report("phenolens echoes train: US-CNN", metrics=metrics)
        report.add(
            training_section(
                detector.history_, detector.training_seconds_, metrics["n_train"], metrics["n_val"], settings.lr_factor, settings.lr_patience
            )
        )
        run.write_report(report)
    print(f"trained US-CNN in {detector.training_seconds_:.0f} s ({metrics['epochs_run']} epochs); wrote {out}")


@app.command()
@settings_options()
def detect(
    files: list[Path] = typer.Argument(None, help="Signal files (.npy or text, one sample per line); default: the echo-pulses A-scans."),
    out: Path = typer.Option(..., "--out", help="Output folder: detections.csv, metrics.json, report.html, run.json."),
    model: Path = typer.Option(None, "--model", help="Folder written by `phenolens echoes train` (needed for uscnn)."),
    overwrite: bool = OVERWRITE,
    settings: EchoDetectionSettings = None,
) -> None:
    """Detect echoes in real A-scans with real-data settings; report signal, envelope and detections per method."""
    from phenolens.core.runs import RunWriter
    from phenolens.echoes.pipeline import REFERENCE_SIGNAL, detection_detectors, detection_metrics, detection_table, load_uscnn, real_signals_and_fit
    from phenolens.echoes.real import detect_real, read_scan
    from phenolens.report.echoes import real_section
    from phenolens.report.html import Report

    files = files or []
    inputs = [*files, *([model] if model is not None else [])]
    run = RunWriter(out, command="echoes detect", settings=settings, inputs=inputs, overwrite=overwrite, datasets=[] if files else ["echo-pulses"])
    uscnn = load_uscnn(model) if model is not None and "uscnn" in settings.methods else None
    detectors = detection_detectors(settings, uscnn)
    signals, fit = ([read_scan(path) for path in files], None) if files else real_signals_and_fit()
    results = detect_real(detectors, signals, settings.fs_mhz)
    table = detection_table(results)
    metrics = detection_metrics(signals, results, fit)
    with run:
        run.write_table("detections.csv", table)
        run.write_metrics(metrics)
        report = Report("phenolens echoes detect", metrics=metrics)
        reference = next((s.values for s in signals if fit is not None and s.name == REFERENCE_SIGNAL), None)
        report.add(real_section(signals, results, fit, reference))
        run.write_report(report)
    print(f"wrote {out / 'detections.csv'} ({len(table)} echoes) and {out / 'report.html'}")


@app.command()
@settings_options()
def evaluate(
    model: Path = typer.Option(..., "--model", help="Folder written by `phenolens echoes train`."),
    out: Path = typer.Option(..., "--out", help="Output folder: metrics.json, sweeps.csv, report.html, run.json."),
    small: bool = typer.Option(False, "--small", help="A quick check: 40 test signals, lambda 1 and 3 only, no variant selection."),
    overwrite: bool = OVERWRITE,
    settings: EchoEvaluationSettings = None,
) -> None:
    """Compare US-CNN with OMP, ISTA and SMP: AUC/F1 against lambda, epsilon and SNR, timing, thickness, real A-scans."""
    from phenolens.core.runs import RunWriter
    from phenolens.echoes.pipeline import evaluate as run_evaluation
    from phenolens.echoes.pipeline import load_uscnn
    from phenolens.report.echoes import write_evaluation

    settings = settings.quick() if small else settings
    run = RunWriter(out, command="echoes evaluate", settings=settings, inputs=[model], overwrite=overwrite, datasets=["echo-pulses"])
    uscnn = load_uscnn(model)
    result = run_evaluation(uscnn, settings, on_step=lambda text: print(f"echoes evaluate: {text}", flush=True))
    with run:
        write_evaluation(result, run, "phenolens echoes evaluate")
    print(f"wrote {out / 'metrics.json'} and {out / 'report.html'}")


def demo_step(out: Path) -> tuple[list, dict]:
    """Demo: a small US-CNN (1,000 signals, 5 epochs) against OMP/ISTA/SMP on 20 test signals at lambda 1 and 3, plus the real A-scans.

    Parameters
    ----------
    out : Path
        The demo's folder; the step writes the run folder ``out/echoes`` (model, metrics, report).

    Returns
    -------
    tuple
        (report sections, metrics) for the demo report.
    """
    from phenolens.core.runs import RunWriter
    from phenolens.echoes.pipeline import evaluate as run_evaluation
    from phenolens.echoes.pipeline import save_uscnn, train_detector
    from phenolens.report.echoes import evaluation_sections, training_section, write_evaluation
    from phenolens.report.html import Section

    training = EchoTrainingSettings(n_signals=1000, epochs=5)
    evaluation = EchoEvaluationSettings().quick().replace(n_test=20, snrs=(20.0,), n_timing=10, scan_shape=(3, 8))
    run = RunWriter(out / "echoes", command="demo echoes", settings=[training, evaluation], datasets=["echo-pulses"])
    detector, data = train_detector(training)
    result = run_evaluation(detector, evaluation)
    with run:
        save_uscnn(detector, run.file("model"), {"note": "demo model: 1,000 signals, 5 epochs"})
        metrics = write_evaluation(result, run, "phenolens demo: echoes")
    parent = Section("Echoes: US-CNN against sparse coding (demo scale)")
    parent.text(
        "A small US-CNN (1,000 simulated signals, 5 epochs, not the full 10,000 x 80 schedule) against OMP, ISTA and SMP "
        "with the narrow dictionary on 20 test signals per setting; the full comparison is `phenolens echoes evaluate`."
    )
    n_val = int(round(training.val_fraction * len(data)))
    parent.add(training_section(detector.history_, detector.training_seconds_, len(data) - n_val, n_val, training.lr_factor, training.lr_patience))
    for section in evaluation_sections(result):
        parent.add(section)
    return [parent], {"methods": metrics["methods"], "real": metrics["real"], "targets": metrics["targets"], "pulse_fit": metrics["pulse_fit"]}
