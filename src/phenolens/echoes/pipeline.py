"""The echoes pipeline steps behind `phenolens echoes simulate | train | detect | evaluate`, and US-CNN weights I/O.

`evaluate(uscnn, settings)` runs, in one process: dictionary-variant selection for the baselines,
the lambda / epsilon / SNR sweeps, side-by-side timing (with the FFT-based complex-atom OMP of
`pursuit.py` as a reference beside scikit-learn's OMP), the layer-thickness scan and the real
A-scans, and returns everything needed for `metrics.json` and the report.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from phenolens.core.errors import PhenolensError
from phenolens.echoes.detection import Detections
from phenolens.echoes.detector import BASELINES, BaseEchoDetector, EchoDetector, USCNNDetector
from phenolens.echoes.evaluation import run_sweeps, score, select_variants, test_settings, time_methods
from phenolens.echoes.pulse import DEFAULT_FS_MHZ, DISTRIBUTIONS, PulseFit, PulseShape, fit_pulse
from phenolens.echoes.real import ECHO_PULSES_FS_MHZ, RealDetection, detect_real
from phenolens.echoes.settings import EchoDetectionSettings, EchoEvaluationSettings, EchoSimulationSettings, EchoTrainingSettings
from phenolens.echoes.simulate import EchoSet, cached_simulation, realised_snr_db
from phenolens.echoes.thickness import LayerScan, LayerScanConfig, estimate_thickness, simulate_layer_scan, thickness_errors

REFERENCE_SIGNAL = "reference_signal_ultem_water"
ARCHITECTURE = "us-cnn"


def save_uscnn(detector: USCNNDetector, folder: str | Path, extra: dict | None = None) -> Path:
    """Write a trained US-CNN detector's weights and config (pulse, training settings) to `folder`.

    Parameters
    ----------
    detector : USCNNDetector
        A fitted detector.
    folder : path
        Where ``model.safetensors`` and ``model.json`` go.
    extra : dict, optional
        More facts for ``model.json``.

    Returns
    -------
    Path
        The folder.
    """
    from phenolens.nn.weights import ModelCard, save_model

    card = ModelCard(
        ARCHITECTURE,
        hyperparameters={"kernel_size": detector.model_.kernel_size},
        channel_names=["amplitude"],
        extra={"pulse": detector.pulse.to_dict(), "distribution": detector.distribution, "training": detector.training.to_dict(), **(extra or {})},
    )
    return save_model(detector.model_, folder, card)


def load_uscnn(folder: str | Path, **params) -> USCNNDetector:
    """A fitted US-CNN detector from a folder written by `save_uscnn` (`phenolens echoes train`).

    Parameters
    ----------
    folder : path
        The model folder.
    **params
        Other `USCNNDetector` parameters (post-processing, window).

    Returns
    -------
    USCNNDetector
        Fitted.

    Raises
    ------
    PhenolensError
        When the folder holds no US-CNN or its recorded pulse or training settings are damaged.
    """
    from phenolens.nn.weights import load_model

    model, card = load_model(folder, expected_architecture=ARCHITECTURE)
    source = str(Path(folder) / "model.json")
    try:
        pulse = PulseShape(**card.extra.get("pulse", {}))
    except TypeError:
        raise PhenolensError(f"{source}: the recorded pulse has unknown fields; re-train with `phenolens echoes train`") from None
    values = [pulse.sigma, pulse.freq_mhz, pulse.phase, pulse.fs_mhz]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values) or min(values[:2] + values[3:]) <= 0:
        raise PhenolensError(
            f"{source}: the recorded pulse {pulse.to_dict()} needs finite numbers, sigma, freq_mhz and fs_mhz > 0; re-train the model"
        )
    distribution = card.extra.get("distribution", "narrow")
    if not isinstance(distribution, str) or distribution not in DISTRIBUTIONS:
        raise PhenolensError(f"{source}: the recorded distribution {distribution!r} is not one of {', '.join(DISTRIBUTIONS)}; re-train the model")
    training = EchoTrainingSettings.from_dict(card.extra.get("training", {}), source=source)
    return USCNNDetector(distribution=distribution, pulse=pulse, training=training, model=model, **params).fit()


@dataclass
class EvaluationResult:
    """Everything one evaluation measured (see `evaluate`); `metrics()` is its metrics.json."""

    settings: EchoEvaluationSettings
    pulse: PulseShape
    variants: dict[str, str]
    selection: dict[str, dict[str, float]]
    sweeps: dict
    timing: dict[str, float]
    reference: dict
    scan: LayerScan
    thickness_maps: dict[str, np.ndarray]
    thickness: dict[str, dict]
    real: list[RealDetection]
    pulse_fit: PulseFit | None
    real_signals: list = field(default_factory=list)
    scan_detections: dict[str, Detections] = field(default_factory=dict)

    def metrics(self) -> dict:
        """The metrics.json payload; `methods` and `real` follow the issue's schema.

        Returns
        -------
        dict
            JSON-ready apart from numpy scalars and arrays (the run writer converts them).
        """
        methods = {}
        for name, by_lambda in self.sweeps["lambda"].items():
            methods[name] = {
                "auc": {value: result["auc"] for value, result in by_lambda.items()},
                "f1": {value: result["f1"] for value, result in by_lambda.items()},
                "seconds_per_signal": self.timing[name],
            }
        auc_at = {name: m["auc"] for name, m in methods.items()}
        low = f"{min(self.settings.lambdas):g}"
        default = f"{self.settings.default_lambda:g}"
        best_low = max(auc_at[n][low] for n in auc_at if n != "uscnn")
        return {
            "methods": methods,
            "real": {d.signal: d.n_echoes for d in self.real if d.method == "uscnn"},
            "targets": {
                f"uscnn_auc_over_best_baseline_at_lambda_{low}": auc_at["uscnn"][low] / best_low if best_low > 0 else None,
                f"uscnn_auc_minus_best_baseline_at_lambda_{default}": auc_at["uscnn"][default]
                - max(auc_at[n][default] for n in auc_at if n != "uscnn"),
                "omp_time_over_uscnn_time": self.timing["omp"] / self.timing["uscnn"],
            },
            "variants": self.variants,
            "selection_auc": self.selection,
            "sweeps": self.sweeps,
            "timing_seconds_per_signal": self.timing,
            "reference": self.reference,
            "thickness": {"config": self.scan.config.to_dict(), "errors": self.thickness},
            "real_details": _real_details(self.real),
            "pulse_fit": self.pulse_fit.to_dict() if self.pulse_fit else None,
            "settings": self.settings.to_dict(),
            "pulse": self.pulse.to_dict(),
        }


def _real_details(real: list[RealDetection]) -> dict:
    details: dict[str, dict] = {}
    for d in real:
        details.setdefault(d.signal, {})[d.method] = d.summary()
    return details


def real_signals_and_fit() -> tuple[list, PulseFit | None]:
    """The echo-pulses A-scans and the echo model fitted to the reference pulse (at the files' sampling rate).

    Returns
    -------
    tuple
        (list of Signal, PulseFit or None when the reference A-scan is missing).
    """
    from phenolens.data.loaders import load

    signals = load("echo-pulses").signals
    reference = next((s for s in signals if s.name == REFERENCE_SIGNAL), None)
    return signals, fit_pulse(reference.values, ECHO_PULSES_FS_MHZ, reference.source) if reference is not None else None


def reference_pulse(fs_mhz: float | None = None) -> PulseShape:
    """The echo model fitted to the real reference A-scan (one echo from a flat reflector in water): the
    pulse of the transducer behind `echo-pulses`, so a detector trained on it suits those A-scans.

    It is expressed at the sampling rate `fs_mhz`; by default at the rate where its width is the paper's
    sigma_0 = 9 samples (about 70 MHz), so the network, the 500-sample record and the training cost stay
    those of the paper, and the 100 MHz A-scans are resampled to that rate before detection.

    Parameters
    ----------
    fs_mhz : float, optional
        Sampling rate of the returned pulse (MHz).

    Returns
    -------
    PulseShape

    Raises
    ------
    PhenolensError
        When the dataset has no reference A-scan.
    """
    _, fit = real_signals_and_fit()
    if fit is None:
        raise PhenolensError(f"the echo-pulses dataset has no {REFERENCE_SIGNAL} A-scan to fit; give --sigma0 and --freq instead")
    measured = fit.pulse
    rate = measured.fs_mhz * PulseShape().sigma / measured.sigma if fs_mhz is None else fs_mhz
    return replace(measured, sigma=measured.sigma * rate / measured.fs_mhz, fs_mhz=rate)


def training_pulse(pulse_from: str, sigma0: float | None = None, freq: float | None = None, fs: float | None = None) -> PulseShape:
    """The pulse named by --pulse-from ('reference' or 'paper'), with `sigma0` / `freq` overriding its fields.

    'reference' is expressed at `fs` if given, else at the rate where its width is 9 samples (see `reference_pulse`);
    'paper' is 9 samples at 5.4 MHz, sampled at `fs` (default 100 MHz).

    Parameters
    ----------
    pulse_from : str
        ``"reference"`` or ``"paper"``.
    sigma0, freq, fs : float, optional
        Width (samples), centre frequency and sampling rate (MHz) overriding the named pulse's.

    Returns
    -------
    PulseShape

    Raises
    ------
    PhenolensError
        For another `pulse_from`.
    """
    if pulse_from not in ("reference", "paper"):
        raise PhenolensError(f"unknown --pulse-from {pulse_from!r}; use reference (fitted to the reference A-scan) or paper (9 samples, 5.4 MHz)")
    pulse = reference_pulse(fs) if pulse_from == "reference" else PulseShape(fs_mhz=fs or DEFAULT_FS_MHZ)
    return replace(pulse, sigma=pulse.sigma if sigma0 is None else sigma0, freq_mhz=pulse.freq_mhz if freq is None else freq)


def evaluate(
    uscnn: USCNNDetector,
    settings: EchoEvaluationSettings = EchoEvaluationSettings(),
    real_signals: list | None = None,
    on_step: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Run every echoes experiment for a trained US-CNN and the three baselines (see module docstring).

    Test signals use the US-CNN's pulse. Without `settings.select_variants` the baselines use the
    test distribution's dictionary instead of the best variant.

    Parameters
    ----------
    uscnn : USCNNDetector
        A fitted US-CNN.
    settings : EchoEvaluationSettings
        Set sizes, sweeps, defaults.
    real_signals : list of Signal, optional
        Real A-scans (default: the echo-pulses dataset, whose reference pulse is also fitted).
    on_step : callable, optional
        Called with a short description of each step.

    Returns
    -------
    EvaluationResult
    """
    say = on_step or (lambda message: None)
    pulse = uscnn.pulse
    if settings.select_variants:
        say("selecting each baseline's dictionary variant")
        baselines, selection = select_variants(settings, pulse)
    else:
        baselines = {m: EchoDetector(m, distribution=settings.test_distribution, pulse=pulse).fit() for m in BASELINES}
        selection = {}
    detectors = {"uscnn": uscnn, **baselines}
    variants = {name: detector.distribution for name, detector in baselines.items()}
    sweeps = run_sweeps(detectors, settings, pulse, on_setting=lambda text: say(f"sweep: {text}"))

    say("timing every method side by side")
    default_set = cached_simulation(test_settings(settings, pulse))
    timing_signals = default_set.signals[: settings.n_timing]
    complex_omp = EchoDetector("omp-complex", distribution=baselines["omp"].distribution, pulse=pulse).fit()
    timing = time_methods({**detectors, "omp-complex": complex_omp}, timing_signals)
    reference_set = default_set.subset(slice(0, settings.n_timing))
    reference = {
        "omp-complex": {
            "variant": complex_omp.distribution,
            "n_signals": len(reference_set),
            "auc_default": score(complex_omp, reference_set, settings.default_epsilon)["auc"],
            "omp_auc_same_signals": score(baselines["omp"], reference_set, settings.default_epsilon)["auc"],
            "seconds_per_signal": timing.pop("omp-complex"),
        }
    }

    say("layer-thickness scan")
    rows, columns = settings.scan_shape
    scan = simulate_layer_scan(LayerScanConfig(rows=rows, columns=columns, pulse=pulse, distribution=settings.test_distribution))
    maps, errors, scan_detections = {}, {}, {}
    for name, detector in detectors.items():
        scan_detections[name] = detector.refitted(min_echoes=2).predict(scan.signals)
        maps[name] = estimate_thickness(scan_detections[name], scan)
        errors[name] = thickness_errors(maps[name], scan)

    say("real A-scans")
    if real_signals is None:
        real_signals, fit = real_signals_and_fit()
    else:
        fit = None
    real = detect_real(detectors, real_signals)
    return EvaluationResult(
        settings, pulse, variants, selection, sweeps, timing, reference, scan, maps, errors, real, fit, real_signals, scan_detections
    )


def training_simulation(settings: EchoTrainingSettings) -> EchoSimulationSettings:
    """The simulated training set of `settings`: its size, overlap, SNR, seed and the pulse it names.

    Parameters
    ----------
    settings : EchoTrainingSettings
        `pulse_from` with the `sigma0` / `freq_mhz` / `fs_mhz` overrides, and the set's description.

    Returns
    -------
    EchoSimulationSettings
    """
    pulse = training_pulse(settings.pulse_from, settings.sigma0, settings.freq_mhz, settings.fs_mhz)
    return EchoSimulationSettings.for_pulse(
        pulse,
        n_signals=settings.n_signals,
        distribution=settings.distribution,
        mean_gap=settings.mean_gap,
        snr_db=settings.snr_db,
        seed=settings.seed,
    )


def train_detector(settings: EchoTrainingSettings) -> tuple[USCNNDetector, EchoSet]:
    """Simulate (or read from the cache) the training set of `settings` and train a US-CNN on it.

    Parameters
    ----------
    settings : EchoTrainingSettings
        Training set and schedule.

    Returns
    -------
    tuple
        (fitted USCNNDetector, the training EchoSet).
    """
    pulse = training_pulse(settings.pulse_from, settings.sigma0, settings.freq_mhz, settings.fs_mhz)
    data = cached_simulation(training_simulation(settings))
    detector = USCNNDetector(pulse=pulse, distribution=settings.distribution, training=settings).fit(data.signals, data.heatmaps)
    return detector, data


def training_facts(detector: USCNNDetector, settings: EchoTrainingSettings) -> dict:
    """metrics.json of a training run: set sizes, time, precision, epochs and the loss history.

    Parameters
    ----------
    detector : USCNNDetector
        Trained by `fit` (not given a model).
    settings : EchoTrainingSettings
        Its settings.

    Returns
    -------
    dict
    """
    history = detector.history_
    n_val = int(round(settings.val_fraction * settings.n_signals))
    return {
        "n_signals": settings.n_signals,
        "n_train": settings.n_signals - n_val,
        "n_val": n_val,
        "training_seconds": detector.training_seconds_,
        "precision": detector.training_precision_,
        "epochs_run": len(history.epochs),
        "best_epoch": history.best_epoch,
        "stopped_early": history.stopped_early,
        "best_val_loss": min(history.column("val_loss")),
        "history": history.epochs,
    }


def simulation_summary(data: EchoSet) -> dict:
    """metrics.json of a simulation: echo counts, realised SNR and gaps (sigma_0 units).

    Parameters
    ----------
    data : EchoSet
        Simulated signals.

    Returns
    -------
    dict
    """
    realised = realised_snr_db(data)
    gaps = np.diff(np.sort(data.tof, axis=1), axis=1)
    gaps = gaps[np.isfinite(gaps)] / data.settings.sigma0
    return {
        "settings": data.settings.to_dict(),
        "echoes": int(np.isfinite(data.tof).sum()),
        "echoes_per_signal": dict(zip(*[v.tolist() for v in np.unique(data.counts, return_counts=True)])),
        "realised_snr_db": {"mean": float(realised.mean()), "std": float(realised.std())},
        "gap_sigma0": {
            "min": float(gaps.min()) if gaps.size else None,
            "mean": float(gaps.mean()) if gaps.size else None,
            "max": float(gaps.max()) if gaps.size else None,
        },
    }


def detection_detectors(settings: EchoDetectionSettings, uscnn: USCNNDetector | None = None) -> dict[str, BaseEchoDetector]:
    """The fitted detectors `phenolens echoes detect` runs.

    Parameters
    ----------
    settings : EchoDetectionSettings
        Methods, dictionary variant, window (the files' sampling rate is `detect_real`'s: it resamples them to the detectors').
    uscnn : USCNNDetector, optional
        A trained US-CNN (needed when `settings.methods` includes uscnn); its pulse is the baselines' too.

    Returns
    -------
    dict
        {method: fitted detector}.

    Raises
    ------
    PhenolensError
        When uscnn is asked for without a model.
    """
    if "uscnn" in settings.methods and uscnn is None:
        raise PhenolensError("--methods includes uscnn but no --model was given; train one with `phenolens echoes train --out T` and pass --model T")
    # The baselines' pulse is the simulated one at its own rate (`detect_real` resamples the files to it): a pulse
    # built at the files' rate would keep its width in samples and so be another pulse in time at another --fs.
    pulse = uscnn.pulse if uscnn is not None else PulseShape()
    window = {} if settings.window is None else {"window": settings.window}
    return {
        m: uscnn.refitted(**window) if m == "uscnn" else EchoDetector(m, distribution=settings.distribution, pulse=pulse, **window).fit()
        for m in settings.methods
    }


def detection_table(results: list[RealDetection]):
    """One row per detected echo: signal, method, rank, position (samples), time (us), amplitude.

    Parameters
    ----------
    results : list of RealDetection
        Output of `detect_real`.

    Returns
    -------
    pandas.DataFrame
    """
    import pandas as pd

    rows = [
        {"signal": r.signal, "method": r.method, "rank": rank, "position_samples": p, "time_us": p / r.fs_mhz, "amplitude": a}
        for r in results
        for rank, (p, a) in enumerate(zip(r.positions, r.amplitudes), start=1)
    ]
    return pd.DataFrame(rows, columns=["signal", "method", "rank", "position_samples", "time_us", "amplitude"])


def detection_metrics(signals: list, results: list[RealDetection], fit: PulseFit | None = None) -> dict:
    """metrics.json of `phenolens echoes detect`: per signal and method, the echoes and the layer TOFD.

    Parameters
    ----------
    signals : list of Signal
        The A-scans.
    results : list of RealDetection
        `detect_real` output.
    fit : PulseFit, optional
        The echo model fitted to the reference A-scan.

    Returns
    -------
    dict
    """
    metrics: dict = {"signals": {s.name: {r.method: r.summary() for r in results if r.signal == s.name} for s in signals}}
    if fit is not None:
        metrics["pulse_fit"] = fit.to_dict()
    return metrics
